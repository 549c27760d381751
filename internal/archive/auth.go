package archive

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/moatdb/moat/internal/backup"
)

// ErrUnauthenticated is returned (wrapped) for a stored WAL record or
// base backup manifest that the service's authentication key does not
// authenticate, or whose object is not the one its key names: something
// other than the agent wrote it. Listing, fetching and retention refuse
// it rather than act on it.
var ErrUnauthenticated = errors.New("archive: not authenticated by the service's backup key")

// Authentication of what the store holds. The agent MACs, with the
// service's authentication key (backup.AuthKey), a record of every object
// it stores, bound to the object's key:
//
//   - beside each WAL file, <name>.digest:
//     "moat-wal-v2 <plaintext digest> <moat1 header digest> <mac>";
//   - each base backup's manifest, <label>.json:
//     {"version": 2, "manifest": {...}, "mac": "..."}, the manifest naming
//     the moat1 header digest of its tar.
//
// A moat1 file's header digest pins its content (backup.HeaderDigest), so
// a reader checks the record, then reads the object with
// backup.NewPinnedReader. A node, or anyone holding the public key, can
// encrypt a file but not produce a record the key authenticates.

// authMAC is HMAC-SHA256 under key of label and parts, each part length
// prefixed, so no two lists of parts MAC alike.
func authMAC(key []byte, label string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write([]byte{0})
	for _, p := range parts {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

const walRecordMagic = "moat-wal-v2"

// walRecord returns the record stored beside the WAL object at objKey.
func walRecord(key []byte, objKey string, plain []byte, header [32]byte) string {
	tag := authMAC(key, "moat backup wal v2", []byte(objKey), plain, header[:])
	return fmt.Sprintf("%s %x %x %x\n", walRecordMagic, plain, header[:], tag)
}

// openWALRecord checks the record raw of the WAL object at objKey and
// returns the plaintext digest and the header digest it holds.
func openWALRecord(key []byte, objKey string, raw []byte) (plain []byte, header [32]byte, err error) {
	f := strings.Fields(string(raw))
	if len(f) != 4 || f[0] != walRecordMagic || !strings.HasSuffix(string(raw), "\n") {
		return nil, header, fmt.Errorf("%s%s: not a %s record: %w", objKey, digestSuffix, walRecordMagic, ErrUnauthenticated)
	}
	var parts [3][]byte
	for i, h := range f[1:] {
		if parts[i], err = hex.DecodeString(h); err != nil || len(parts[i]) != sha256.Size {
			return nil, header, fmt.Errorf("%s%s: malformed: %w", objKey, digestSuffix, ErrUnauthenticated)
		}
	}
	if !hmac.Equal(parts[2], authMAC(key, "moat backup wal v2", []byte(objKey), parts[0], parts[1])) {
		return nil, header, fmt.Errorf("%s%s: %w", objKey, digestSuffix, ErrUnauthenticated)
	}
	copy(header[:], parts[1])
	return parts[0], header, nil
}

const manifestVersion = 2

// manifestFile is a stored manifest: the Backup's JSON exactly as MACed.
type manifestFile struct {
	Version  int             `json:"version"`
	Manifest json.RawMessage `json:"manifest"`
	MAC      string          `json:"mac"`
}

// sealManifest returns the stored form of b's manifest, at mkey.
func sealManifest(key []byte, mkey string, b Backup) ([]byte, error) {
	raw, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	// Compact: indenting would re-indent the MACed bytes too.
	out, err := json.Marshal(manifestFile{Version: manifestVersion, Manifest: raw,
		MAC: hex.EncodeToString(authMAC(key, "moat backup manifest v2", []byte(mkey), raw))})
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// openManifest checks the stored manifest raw at mkey and returns the
// backup it describes, whose object must be the tar beside it.
func openManifest(key []byte, mkey string, raw []byte) (Backup, error) {
	var f manifestFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil || f.Version != manifestVersion {
		return Backup{}, fmt.Errorf("manifest %s: not a version %d manifest: %w", mkey, manifestVersion, ErrUnauthenticated)
	}
	tag, err := hex.DecodeString(f.MAC)
	if err != nil || !hmac.Equal(tag, authMAC(key, "moat backup manifest v2", []byte(mkey), f.Manifest)) {
		return Backup{}, fmt.Errorf("manifest %s: %w", mkey, ErrUnauthenticated)
	}
	var b Backup
	dec = json.NewDecoder(bytes.NewReader(f.Manifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return Backup{}, fmt.Errorf("manifest %s: %w", mkey, err)
	}
	if b.Object != strings.TrimSuffix(mkey, ".json")+".tar" {
		return Backup{}, fmt.Errorf("manifest %s names object %q, not the tar beside it: %w", mkey, b.Object, ErrUnauthenticated)
	}
	return b, nil
}

// headerDigest parses the hex header digest of a manifest.
func headerDigest(s string) ([32]byte, error) {
	var h [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("header digest %q: %w", s, ErrUnauthenticated)
	}
	copy(h[:], b)
	return h, nil
}

// headerOf returns the header digest of the moat1 file whose first bytes
// are head.
func headerOf(head []byte) ([32]byte, error) {
	h, err := backup.HeaderDigest(bytes.NewReader(head))
	if err != nil {
		return h, fmt.Errorf("read back the stored header: %w", err)
	}
	return h, nil
}
