package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Meta keys under which the checkpoint key is stored.
const (
	// MetaSigningKey holds the Ed25519 seed, sealed.
	MetaSigningKey = "audit.signing_key"
	// MetaPublicKey holds the public key in PEM (as MarshalPublicKey).
	MetaPublicKey = "audit.public_key"
)

// checkpointTag separates checkpoint signatures from any other use of the
// key and versions the signed encoding.
const checkpointTag = "moat audit checkpoint v1"

// ErrEmpty is returned by Checkpoint when the log has no entries.
var ErrEmpty = errors.New("audit: log is empty")

// Sealer encrypts the signing key at rest; *secret.Keyring is one.
type Sealer interface {
	Seal(plaintext, associatedData []byte) []byte
	Open(sealed, associatedData []byte) ([]byte, error)
}

// Signer signs checkpoints of the chain head. It formats and logs as its
// key ID only.
type Signer struct {
	priv  ed25519.PrivateKey
	keyID string
}

// LoadOrCreateSigner returns the checkpoint signer whose key is stored in
// tx, generating and storing one on first use (so tx must be read-write
// then). The private key is stored sealed by s; the public key in plain PEM.
// It refuses to replace a missing signing key while a public key is stored,
// and to use a signing key that does not match the stored public key, since
// either means the stored keys were tampered with.
func LoadOrCreateSigner(ctx context.Context, tx store.Tx, s Sealer) (*Signer, error) {
	ad := []byte("moat meta " + MetaSigningKey)
	sealed, err := tx.GetMeta(ctx, MetaSigningKey)
	if errors.Is(err, store.ErrNotFound) {
		return createSigner(ctx, tx, s, ad)
	}
	if err != nil {
		return nil, fmt.Errorf("load audit signing key: %w", err)
	}
	seed, err := s.Open(sealed, ad)
	if err != nil {
		return nil, fmt.Errorf("load audit signing key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("load audit signing key: seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	sg := newSigner(ed25519.NewKeyFromSeed(seed))

	pubPEM, err := tx.GetMeta(ctx, MetaPublicKey)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if err := tx.PutMeta(ctx, MetaPublicKey, MarshalPublicKey(sg.PublicKey())); err != nil {
			return nil, fmt.Errorf("store audit public key: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("load audit public key: %w", err)
	default:
		pub, err := ParsePublicKey(pubPEM)
		if err != nil {
			return nil, fmt.Errorf("load audit public key: %w", err)
		}
		if !pub.Equal(sg.PublicKey()) {
			return nil, fmt.Errorf("stored audit public key %s does not match the signing key %s", KeyID(pub), sg.keyID)
		}
	}
	return sg, nil
}

func createSigner(ctx context.Context, tx store.Tx, s Sealer, ad []byte) (*Signer, error) {
	if _, err := tx.GetMeta(ctx, MetaPublicKey); err == nil {
		return nil, errors.New("audit public key is stored but its signing key is missing; refusing to replace it")
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("load audit public key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate audit signing key: %w", err)
	}
	sg := newSigner(priv)
	if err := tx.PutMeta(ctx, MetaSigningKey, s.Seal(priv.Seed(), ad)); err != nil {
		return nil, fmt.Errorf("store audit signing key: %w", err)
	}
	if err := tx.PutMeta(ctx, MetaPublicKey, MarshalPublicKey(sg.PublicKey())); err != nil {
		return nil, fmt.Errorf("store audit public key: %w", err)
	}
	return sg, nil
}

func newSigner(priv ed25519.PrivateKey) *Signer {
	pub := priv.Public().(ed25519.PublicKey)
	return &Signer{priv: priv, keyID: KeyID(pub)}
}

// PublicKey returns the key that verifies this signer's checkpoints. Export
// it (MarshalPublicKey, e.g. to audit.pub in the data directory) so a
// verifier can pin it rather than trust the copy in the store.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.priv.Public().(ed25519.PublicKey) }

// KeyID returns the signer's key ID (see KeyID).
func (s *Signer) KeyID() string { return s.keyID }

// Checkpoint signs the current head of the log in tx (its Seq and Hash, and
// now) and stores the checkpoint. It returns ErrEmpty if the log has no
// entries. It signs even if the head is already checkpointed; callers call
// it after new entries (every N entries or every few seconds).
func (s *Signer) Checkpoint(ctx context.Context, tx store.Tx, now time.Time) (domain.AuditCheckpoint, error) {
	head, err := tx.LastAudit(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return domain.AuditCheckpoint{}, ErrEmpty
	}
	if err != nil {
		return domain.AuditCheckpoint{}, fmt.Errorf("audit checkpoint: read head: %w", err)
	}
	cp := domain.AuditCheckpoint{
		Seq:   head.Seq,
		Hash:  head.Hash,
		Time:  now.UTC().Truncate(TimePrecision),
		KeyID: s.keyID,
	}
	cp.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(s.priv, checkpointMessage(cp)))
	if err := tx.PutCheckpoint(ctx, cp); err != nil {
		return domain.AuditCheckpoint{}, fmt.Errorf("audit checkpoint at %d: %w", cp.Seq, err)
	}
	return cp, nil
}

// VerifyCheckpoint checks cp's key ID and signature against pub.
func VerifyCheckpoint(pub ed25519.PublicKey, cp domain.AuditCheckpoint) error {
	if want := KeyID(pub); cp.KeyID != want {
		return fmt.Errorf("signed by key %q, not the trusted key %s", cp.KeyID, want)
	}
	sig, err := base64.StdEncoding.DecodeString(cp.Signature)
	if err != nil || !ed25519.Verify(pub, checkpointMessage(cp), sig) {
		return errors.New("bad signature (forged or altered)")
	}
	return nil
}

// checkpointMessage is the signed encoding of cp: everything but the
// signature, length-prefixed.
func checkpointMessage(cp domain.AuditCheckpoint) []byte {
	h := sha256.New()
	writeFields(h,
		checkpointTag,
		strconv.FormatInt(cp.Seq, 10),
		cp.Hash,
		cp.Time.UTC().Format(time.RFC3339Nano),
		cp.KeyID,
	)
	return h.Sum(nil)
}

// KeyID names a public key: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// StoredPublicKey returns the public key stored in tx. A verifier that
// distrusts the store should pin the key exported from PublicKey instead:
// whoever can rewrite the log can also replace this copy.
func StoredPublicKey(ctx context.Context, tx store.Tx) (ed25519.PublicKey, error) {
	data, err := tx.GetMeta(ctx, MetaPublicKey)
	if err != nil {
		return nil, fmt.Errorf("load audit public key: %w", err)
	}
	pub, err := ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("load audit public key: %w", err)
	}
	return pub, nil
}

// MarshalPublicKey returns pub as a PKIX "PUBLIC KEY" PEM block.
func MarshalPublicKey(pub ed25519.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(fmt.Sprintf("audit: marshal ed25519 public key: %v", err)) // cannot fail for a valid key
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParsePublicKey parses an Ed25519 public key in PEM, as MarshalPublicKey
// writes it.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, errors.New("no PUBLIC KEY PEM block")
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, want Ed25519", k)
	}
	return pub, nil
}

// String names the signer by its key ID.
func (s *Signer) String() string { return "audit.Signer(" + s.keyID + ")" }

// Format prints the signer as String does, for every verb, never its key.
func (s *Signer) Format(f fmt.State, verb rune) { fmt.Fprint(f, s.String()) }

// LogValue logs the key ID only.
func (s *Signer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key_id", s.keyID))
}
