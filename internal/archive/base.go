package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/objstore"
)

// Backup describes a stored base backup: the manifest stored beside it.
type Backup struct {
	// Label names the backup: its start time, UTC, as 20060102T150405Z.
	Label string `json:"label"`
	// Timeline is the timeline it was taken on.
	Timeline uint32 `json:"timeline"`
	// StartLSN and StartWAL are where recovery from it starts: the
	// earliest WAL it needs.
	StartLSN string `json:"start_lsn"`
	StartWAL string `json:"start_wal"`
	// EndLSN is where it is consistent: recovery must replay at least
	// this far. Empty if pg_basebackup did not report it.
	EndLSN string `json:"end_lsn,omitempty"`
	// StartTime and EndTime bracket the backup. A point in time after
	// EndTime can be recovered from it.
	StartTime time.Time `json:"start_time"`
	EndTime   time.Time `json:"end_time"`
	// Size is the size of the tar; StoredSize of the encrypted object.
	Size       int64 `json:"size"`
	StoredSize int64 `json:"stored_size"`
	// Object is the key of the encrypted tar in the store.
	Object string `json:"object"`
	// KeyFingerprint is the fingerprint of the public key it is
	// encrypted to.
	KeyFingerprint string `json:"key_fingerprint"`
	// HeaderSHA256 is the digest of the stored object's moat1 header
	// (hex), which pins its content: see backup.HeaderDigest.
	HeaderSHA256 string `json:"header_sha256"`
}

// labelFormat is the layout of a backup's label.
const labelFormat = "20060102T150405Z"

// BaseBackup takes a base backup of the server at connString (a libpq
// connection string for a role with the REPLICATION attribute) with
// `pg_basebackup -D - -Ft -X none --checkpoint=fast
// --compress=client-zstd:level=3` (PostgreSQL 15 or later, built with
// zstd) and streams the compressed tar, encrypted (moat1, compressed),
// into the store; nothing is written locally. The manifest is stored after
// the tar, so a backup that fails part way is never listed; its partial
// object, if any, is not visible (objstore.Put is atomic). The cluster must
// have a single tablespace, and the backup is usable only with the WAL
// archived from its start on (-X none).
func BaseBackup(ctx context.Context, cfg *Config, connString string) (Backup, error) {
	pub, err := cfg.publicKey()
	if err != nil {
		return Backup{}, fmt.Errorf("base backup: %w", err)
	}
	fp, err := backup.KeyFingerprint(pub)
	if err != nil {
		return Backup{}, fmt.Errorf("base backup: %w", err)
	}
	ak, err := cfg.authKey()
	if err != nil {
		return Backup{}, fmt.Errorf("base backup: %w", err)
	}
	st, err := cfg.store()
	if err != nil {
		return Backup{}, fmt.Errorf("base backup: %w", err)
	}
	bin, err := pgBin(cfg, "pg_basebackup")
	if err != nil {
		return Backup{}, fmt.Errorf("base backup: %w", err)
	}
	start := cfg.now().UTC()
	b := Backup{Label: start.Format(labelFormat), StartTime: start, Timeline: cfg.Timeline, KeyFingerprint: fp.String()}
	b.Object, err = objstore.Key(cfg.Region, cfg.Service, cfg.Timeline, objstore.KindBase, b.Label+".tar")
	if err != nil {
		return Backup{}, fmt.Errorf("base backup: %w", err)
	}
	mkey := strings.TrimSuffix(b.Object, ".tar") + ".json"
	if _, err := st.Stat(ctx, mkey); err == nil {
		return Backup{}, fmt.Errorf("base backup %s: %w", b.Label, ErrExists)
	}

	// pg_basebackup compresses, in C and on its own core: the pipe then
	// carries a twentieth of the tar (for pgbench data), and this process
	// only encrypts what it stores. Level 3 without long mode keeps the
	// window at 2 MiB, well within what backup.NewReader accepts.
	cmd := exec.CommandContext(ctx, bin, "-d", connString, "-D", "-", "-Ft", "-X", "none",
		"--checkpoint=fast", "--compress=client-zstd:level=3", "-l", "moat "+b.Label, "-v")
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr tailBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Backup{}, fmt.Errorf("base backup: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return Backup{}, fmt.Errorf("base backup: start pg_basebackup: %w", err)
	}
	growPipe(stdout)
	wait := sync.OnceValue(func() error {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("pg_basebackup: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
		return nil
	})
	// Beside the upload, the stream is decompressed to find backup_label
	// at the head of the tar and the manifest's End-LSN at its tail, to
	// measure the tar, and to check that what is stored decompresses
	// within the reader's limits. A decompression error closes zr, which
	// fails the tee and so the upload.
	label := &headBuffer{max: 1 << 20}
	tail := &tailBuffer{}
	zr, zw := io.Pipe()
	type inspection struct {
		size int64
		err  error
	}
	inspected := make(chan inspection, 1)
	go func() {
		n, err := decompress(io.MultiWriter(label, tail), zr)
		zr.CloseWithError(err)
		inspected <- inspection{n, err}
	}()
	src := &exitReader{r: io.TeeReader(stdout, zw), wait: wait}
	pr, pw := io.Pipe()
	encrypted := make(chan struct{})
	go func() {
		defer close(encrypted)
		err := encryptCompressed(pw, src, pub)
		zw.CloseWithError(err) // nil: the end of the stream for decompress
		pw.CloseWithError(err)
	}()
	head := &headBuffer{max: backup.HeaderSize}
	stored := &countReader{r: io.TeeReader(pr, head)}
	err = st.Put(ctx, b.Object, stored)
	pr.CloseWithError(errors.New("upload ended"))
	if err != nil {
		cmd.Process.Kill() // an error if it has exited already
		<-encrypted
		<-inspected
		wait()
		return Backup{}, fmt.Errorf("base backup %s: %w", b.Label, err)
	}
	<-encrypted
	ins := <-inspected
	if err := wait(); err != nil { // already nil, or Put would have failed
		return Backup{}, fmt.Errorf("base backup %s: %w", b.Label, err)
	}
	if ins.err != nil { // a stream cut short fails only at its end, after the upload
		st.Delete(ctx, b.Object)
		return Backup{}, fmt.Errorf("base backup %s: decompress pg_basebackup's output: %w", b.Label, ins.err)
	}
	b.EndTime = cfg.now().UTC()
	b.Size, b.StoredSize = ins.size, stored.n
	if err := parseBackupLabel(label.Bytes(), &b); err != nil {
		st.Delete(ctx, b.Object)
		return Backup{}, fmt.Errorf("base backup %s: %w", b.Label, err)
	}
	// The backup manifest pg_basebackup appends to the tar holds the end
	// of the WAL range the backup needs.
	if m := endLSN.FindAllSubmatch(tail.Bytes(), -1); m != nil {
		b.EndLSN = string(m[len(m)-1][1])
	}
	hd, err := headerOf(head.Bytes())
	if err != nil {
		st.Delete(ctx, b.Object)
		return Backup{}, fmt.Errorf("base backup %s: %w", b.Label, err)
	}
	b.HeaderSHA256 = hex.EncodeToString(hd[:])
	if err := writeManifest(ctx, st, ak, mkey, b); err != nil {
		return Backup{}, fmt.Errorf("base backup %s: %w", b.Label, err)
	}
	return b, nil
}

// StoreManifest stores b's manifest beside b.Object (which must be a tar
// under cfg's service prefix), authenticated by cfg's authentication key.
// BaseBackup stores its own; this is for backups stored otherwise (an
// import, a test).
func StoreManifest(ctx context.Context, cfg *Config, b Backup) error {
	ak, err := cfg.authKey()
	if err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	st, err := cfg.store()
	if err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	prefix, err := objstore.ServicePrefix(cfg.Region, cfg.Service)
	if err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	if !strings.HasPrefix(b.Object, prefix) || !strings.HasSuffix(b.Object, ".tar") {
		return fmt.Errorf("store manifest: object %q: want a .tar under %s", b.Object, prefix)
	}
	return writeManifest(ctx, st, ak, strings.TrimSuffix(b.Object, ".tar")+".json", b)
}

func writeManifest(ctx context.Context, st objstore.Store, ak []byte, mkey string, b Backup) error {
	mj, err := sealManifest(ak, mkey, b)
	if err != nil {
		return err
	}
	if err := st.Put(ctx, mkey, bytes.NewReader(mj)); err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	return nil
}

var (
	endLSN     = regexp.MustCompile(`"End-LSN": "([0-9A-F]+/[0-9A-F]+)"`)
	startWAL   = regexp.MustCompile(`(?m)^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)$`)
	startTLine = regexp.MustCompile(`(?m)^START TIMELINE: ([0-9]+)$`)
)

// parseBackupLabel finds backup_label, the first member of pg_basebackup's
// base.tar, in the head of the stream.
func parseBackupLabel(head []byte, b *Backup) error {
	tr := tar.NewReader(bytes.NewReader(head))
	for {
		h, err := tr.Next()
		if err != nil {
			return fmt.Errorf("no backup_label at the start of pg_basebackup's tar: %w", err)
		}
		if h.Name != "backup_label" {
			continue
		}
		lbl, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("read backup_label: %w", err)
		}
		m := startWAL.FindSubmatch(lbl)
		if m == nil {
			return fmt.Errorf("backup_label has no START WAL LOCATION: %q", lbl)
		}
		b.StartLSN, b.StartWAL = string(m[1]), string(m[2])
		if m := startTLine.FindSubmatch(lbl); m != nil {
			if tl, err := strconv.ParseUint(string(m[1]), 10, 32); err == nil {
				b.Timeline = uint32(tl)
			}
		}
		return nil
	}
}

// pgBin finds a PostgreSQL client program.
func pgBin(cfg *Config, name string) (string, error) {
	dir := cfg.PGBinDir
	if dir == "" {
		dir = os.Getenv("MOAT_PG_BINDIR")
	}
	if dir == "" {
		if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
			dir = strings.TrimSpace(string(out))
		}
	}
	if dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("find %s: %w (set pg_bin_dir or MOAT_PG_BINDIR)", name, err)
	}
	return p, nil
}

// ListBackups returns the service's completed base backups, on every
// timeline, oldest first. Every manifest must be authenticated by the
// service's authentication key and name the tar beside it: one that is
// not fails the listing with an error wrapping [ErrUnauthenticated]
// (something other than the agent wrote into the service's prefix; no
// caller may act on a listing that ignores it).
func ListBackups(ctx context.Context, cfg *Config) ([]Backup, error) {
	ak, err := cfg.authKey()
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	st, err := cfg.store()
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	prefix, err := objstore.ServicePrefix(cfg.Region, cfg.Service)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	objs, err := st.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	var out []Backup
	for _, o := range objs {
		if !strings.Contains(o.Key, "/"+string(objstore.KindBase)+"/") || !strings.HasSuffix(o.Key, ".json") {
			continue
		}
		raw, err := readSmall(ctx, st, o.Key)
		if err != nil {
			return nil, fmt.Errorf("list backups: %w", err)
		}
		b, err := openManifest(ak, o.Key, raw)
		if err != nil {
			return nil, fmt.Errorf("list backups: %w", err)
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b Backup) int { return a.StartTime.Compare(b.StartTime) })
	return out, nil
}

// FetchBaseBackup writes the plaintext tar of b, as ListBackups returned
// it, to w. The object must be in the service's prefix and its header the
// one the manifest pins. Only verified bytes reach w, but a backup that
// fails part way leaves w with a prefix: a restore must treat any error as
// a failed restore.
func FetchBaseBackup(ctx context.Context, cfg *Config, b Backup, w io.Writer) error {
	priv, err := cfg.privateKey()
	if err != nil {
		return fmt.Errorf("fetch base backup %s: %w", b.Label, err)
	}
	prefix, err := objstore.ServicePrefix(cfg.Region, cfg.Service)
	if err != nil {
		return fmt.Errorf("fetch base backup %s: %w", b.Label, err)
	}
	if !strings.HasPrefix(b.Object, prefix) || !strings.Contains(b.Object, "/"+string(objstore.KindBase)+"/") {
		return fmt.Errorf("fetch base backup %s: object %q is not in %s: %w", b.Label, b.Object, prefix, ErrUnauthenticated)
	}
	header, err := headerDigest(b.HeaderSHA256)
	if err != nil {
		return fmt.Errorf("fetch base backup %s: %w", b.Label, err)
	}
	st, err := cfg.store()
	if err != nil {
		return fmt.Errorf("fetch base backup %s: %w", b.Label, err)
	}
	rc, err := st.Get(ctx, b.Object)
	if err != nil {
		return fmt.Errorf("fetch base backup %s: %w", b.Label, err)
	}
	defer rc.Close()
	if err := decryptPinned(w, rc, priv, header); err != nil {
		return fmt.Errorf("fetch base backup %s: %w", b.Label, err)
	}
	return nil
}

// Prune applies retention: it deletes every base backup that is neither
// among the keepCount newest nor younger than keepAge (keepAge 0: by count
// alone), then every archived WAL file from before the start of the oldest
// backup kept. Timeline history files are kept. keepCount must be at least
// 1: Prune never deletes the newest backup. It returns the backups it
// deleted. It acts only on authenticated manifests (see ListBackups: one
// that is not fails Prune before it deletes anything) and deletes only
// objects under the service's prefix; the store refuses links.
func Prune(ctx context.Context, cfg *Config, keepCount int, keepAge time.Duration) ([]Backup, error) {
	if keepCount < 1 {
		return nil, fmt.Errorf("prune: keep count %d: must be at least 1", keepCount)
	}
	if keepAge < 0 {
		return nil, fmt.Errorf("prune: keep age %v: must not be negative", keepAge)
	}
	all, err := ListBackups(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	if len(all) == 0 {
		return nil, nil
	}
	st, err := cfg.store()
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	cutoff := cfg.now().Add(-keepAge)
	var deleted []Backup
	kept := all
	prefix, err := objstore.ServicePrefix(cfg.Region, cfg.Service)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	for i, b := range all[:max(len(all)-keepCount, 0)] {
		if keepAge > 0 && !b.EndTime.Before(cutoff) {
			break // this and every newer one are young enough
		}
		if !strings.HasPrefix(b.Object, prefix) { // ListBackups checked it; never delete outside
			return deleted, fmt.Errorf("prune: object %q is not in %s: %w", b.Object, prefix, ErrUnauthenticated)
		}
		// The manifest first: a half-deleted backup is not listed.
		if err := st.Delete(ctx, strings.TrimSuffix(b.Object, ".tar")+".json"); err != nil {
			return deleted, fmt.Errorf("prune: %w", err)
		}
		if err := st.Delete(ctx, b.Object); err != nil {
			return deleted, fmt.Errorf("prune: %w", err)
		}
		deleted = append(deleted, b)
		kept = all[i+1:]
	}
	oldest := kept[0].StartWAL
	if len(oldest) != 24 {
		return deleted, nil
	}
	objs, err := st.List(ctx, prefix)
	if err != nil {
		return deleted, fmt.Errorf("prune wal: %w", err)
	}
	for _, o := range objs {
		i := strings.Index(o.Key, "/"+string(objstore.KindWAL)+"/")
		if i < 0 {
			continue
		}
		name := o.Key[i+len(objstore.KindWAL)+2:]
		if len(name) < 24 || !isHex(name[:24]) || strings.HasSuffix(name, ".history") || strings.HasSuffix(name, ".history"+digestSuffix) {
			continue
		}
		// Positions compare as the last 16 hex digits (log and segment
		// number), whatever the timeline: recovery from the oldest kept
		// backup starts at its start position.
		if name[8:24] < oldest[8:24] {
			if err := st.Delete(ctx, o.Key); err != nil {
				return deleted, fmt.Errorf("prune wal: %w", err)
			}
		}
	}
	return deleted, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// encryptCompressed encrypts src, a zstd stream, to pub in the moat1
// format, as a compressed body, and writes the result to dst.
func encryptCompressed(dst io.Writer, src io.Reader, pub *rsa.PublicKey) error {
	w, err := backup.NewWriter(dst, pub, backup.WriterOptions{Compressed: true})
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	return nil
}

// decompress writes the decompressed zstd stream src to dst and returns
// its size. Its limits are those of backup.NewReader.
func decompress(dst io.Writer, src io.Reader) (int64, error) {
	dec, err := zstd.NewReader(src,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return 0, err
	}
	defer dec.Close()
	return io.Copy(dst, dec)
}

// exitReader returns wait's error at the end of r, so that a process that
// fails is never taken for a complete stream.
type exitReader struct {
	r    io.Reader
	wait func() error
	err  error
}

func (e *exitReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.r.Read(p)
	if errors.Is(err, io.EOF) {
		if werr := e.wait(); werr != nil {
			err = werr
		}
		e.err = err
	}
	return n, err
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// headBuffer keeps the first max bytes written to it.
type headBuffer struct {
	bytes.Buffer
	max int
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - h.Len(); room > 0 {
		h.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// tailSize is how much of its input a tailBuffer keeps.
const tailSize = 64 << 10

// tailBuffer keeps the last tailSize bytes written to it. It sees every
// byte of a base backup, so it writes into a fixed buffer of twice that
// size and slides the tail back only when the buffer is full: each byte is
// copied at most twice, and nothing is allocated after the first write.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > tailSize {
		p = p[len(p)-tailSize:]
	}
	if t.b == nil {
		t.b = make([]byte, 0, 2*tailSize)
	}
	if len(t.b)+len(p) > cap(t.b) {
		keep := t.b[len(t.b)-(tailSize-len(p)):]
		t.b = t.b[:copy(t.b[:cap(t.b)], keep)]
	}
	t.b = append(t.b, p...)
	return n, nil
}

// Bytes returns the last tailSize bytes written (all of them if fewer).
func (t *tailBuffer) Bytes() []byte { return t.b[max(len(t.b)-tailSize, 0):] }
