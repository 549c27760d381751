package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/objstore"
)

// twoServices returns configurations of services A and B (each with its
// own authentication key) sharing one directory store, and the store's
// path.
func twoServices(t *testing.T) (a, b *Config, root string) {
	t.Helper()
	a, _, st := testConfig(t)
	bc := *a
	bc.Service = "svc-b"
	bc.AuthKey = bytes.Repeat([]byte{7}, backup.AuthKeySize)
	return a, &bc, st.Root()
}

// putBackup stores a manifest (authenticated by cfg's key) and a tar for
// a backup of cfg's service started at start.
func putBackup(t *testing.T, cfg *Config, start time.Time, startWAL string) Backup {
	t.Helper()
	b := Backup{Label: start.Format(labelFormat), Timeline: 1, StartTime: start, EndTime: start.Add(time.Minute), StartWAL: startWAL}
	b.Object, _ = objstore.Key(cfg.Region, cfg.Service, 1, objstore.KindBase, b.Label+".tar")
	putManifest(t, cfg.ObjectStore, cfg.AuthKey, b)
	return b
}

// TestPruneRefusesForgedManifest: a manifest in service A's folder that
// points at service B's backup (unauthenticated, or MACed with another
// key, or authenticated but naming an object not beside it) makes A's
// retention refuse; B's backup stays.
func TestPruneRefusesForgedManifest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	for _, forge := range []struct {
		name string
		make func(a *Config, mkey string, victim Backup) []byte
	}{
		{"plain json", func(a *Config, mkey string, v Backup) []byte {
			return []byte(`{"label":"x","object":"` + v.Object + `","start_time":"2025-01-01T00:00:00Z","end_time":"2025-01-01T00:00:00Z"}`)
		}},
		{"wrong key", func(a *Config, mkey string, v Backup) []byte {
			raw, _ := sealManifest(bytes.Repeat([]byte{1}, 32), mkey, v)
			return raw
		}},
		{"authenticated, another object", func(a *Config, mkey string, v Backup) []byte {
			raw, _ := sealManifest(a.AuthKey, mkey, v) // as if the key leaked: still refused
			return raw
		}},
	} {
		t.Run(forge.name, func(t *testing.T) {
			t.Parallel()
			a, b, _ := twoServices(t)
			victim := putBackup(t, b, t0, "000000010000000000000002")
			for i := range 3 {
				putBackup(t, a, t0.Add(time.Duration(i+1)*time.Hour), "000000010000000000000004")
			}
			forged := victim
			forged.Label, forged.StartTime, forged.EndTime = "20200101T000000Z", t0.Add(-48*time.Hour), t0.Add(-47*time.Hour)
			mkey, _ := objstore.Key(a.Region, a.Service, 1, objstore.KindBase, forged.Label+".json")
			if err := a.ObjectStore.Put(ctx, mkey, bytes.NewReader(forge.make(a, mkey, forged))); err != nil {
				t.Fatal(err)
			}
			a.Now = func() time.Time { return t0.Add(72 * time.Hour) }
			if del, err := Prune(ctx, a, 1, 0); !errors.Is(err, ErrUnauthenticated) || len(del) != 0 {
				t.Errorf("Prune(A) = %d deleted, %v; want ErrUnauthenticated, nothing deleted", len(del), err)
			}
			if _, err := ListBackups(ctx, a); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("ListBackups(A) = %v, want ErrUnauthenticated", err)
			}
			if _, err := a.ObjectStore.Stat(ctx, victim.Object); err != nil {
				t.Errorf("B's backup was deleted through A's forged manifest: %v", err)
			}
			if bs, err := ListBackups(ctx, b); err != nil || len(bs) != 1 {
				t.Errorf("ListBackups(B) = %v, %v; want its backup", bs, err)
			}
		})
	}
}

// TestPruneSymlinks: links planted in a service's prefix (a WAL file, a
// base directory, a whole timeline, pointing outside the store) make
// retention delete nothing outside the store.
func TestPruneSymlinks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, _, root := twoServices(t)
	outside := t.TempDir()
	victims := map[string]string{}
	for _, name := range []string{"000000010000000000000001", "000000010000000000000001.digest", "20250301T000000Z.tar", "x"} {
		p := filepath.Join(outside, name)
		os.WriteFile(p, []byte("keep"), 0o600)
		victims[name] = p
	}
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		putBackup(t, a, t0.Add(time.Duration(i+1)*time.Hour), "000000010000000000000005")
	}
	svc := filepath.Join(root, a.Region, a.Service)
	os.MkdirAll(filepath.Join(svc, "00000001", "wal"), 0o700)
	for link, target := range map[string]string{
		"00000001/wal/000000010000000000000001":        victims["000000010000000000000001"],
		"00000001/wal/000000010000000000000001.digest": victims["000000010000000000000001.digest"],
		"00000002": outside, // a timeline directory
	} {
		if err := os.Symlink(target, filepath.Join(svc, filepath.FromSlash(link))); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(outside, "000000020000000000000001"), []byte("keep"), 0o600)
	a.Now = func() time.Time { return t0.Add(72 * time.Hour) }
	if _, err := Prune(ctx, a, 1, 0); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != len(victims)+1 {
		t.Errorf("outside the store %d files are left, want %d: a link was followed", len(ents), len(victims)+1)
	}
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(outside, e.Name())); err != nil || string(b) != "keep" {
			t.Errorf("%s outside the store: %q, %v", e.Name(), b, err)
		}
	}
}

// TestFetchRefusesPlanted: WAL files planted in the store by someone who
// holds the public key (every node does) but not the service's
// authentication key are refused, and so are an authenticated record
// moved to another name or service and an object swapped under a valid
// record. Base backups likewise.
func TestFetchRefusesPlanted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	push, restore, st := testConfig(t)
	dir := t.TempDir()
	good := bytes.Repeat([]byte("good wal "), 5000)
	if err := PushData(ctx, push, "000000010000000000000001", good); err != nil {
		t.Fatal(err)
	}
	// A planted file: encrypted to the public key, with a record
	// MACed under a key of the attacker's.
	evil := *push
	evil.AuthKey = bytes.Repeat([]byte{9}, backup.AuthKeySize)
	if err := PushData(ctx, &evil, "000000010000000000000002", []byte("evil wal")); err != nil {
		t.Fatal(err)
	}
	// The same, with the pre-v2 record (a bare digest), as an older
	// wal-push would store.
	k3, _ := walKey(push, "000000010000000000000003")
	pub, _ := push.publicKey()
	if _, err := putEncrypted(ctx, st, k3, strings.NewReader("evil wal"), pub); err != nil {
		t.Fatal(err)
	}
	st.Put(ctx, k3+digestSuffix, strings.NewReader(strings.Repeat("ab", 32)+"\n"))
	// A good file's object swapped for a planted one under its valid record.
	if err := PushData(ctx, push, "000000010000000000000004", good); err != nil {
		t.Fatal(err)
	}
	k4, _ := walKey(push, "000000010000000000000004")
	if _, err := putEncrypted(ctx, st, k4, strings.NewReader("evil wal"), pub); err != nil {
		t.Fatal(err)
	}
	// A good file's object and record copied under another name.
	k1, _ := walKey(push, "000000010000000000000001")
	k5, _ := walKey(push, "000000010000000000000005")
	for _, sfx := range []string{"", digestSuffix} {
		raw, _ := readSmallAll(ctx, st, k1+sfx)
		st.Put(ctx, k5+sfx, bytes.NewReader(raw))
	}

	if err := FetchTo(ctx, restore, "000000010000000000000001", io.Discard); err != nil {
		t.Fatalf("FetchTo(good) = %v", err)
	}
	for name, want := range map[string]error{
		"000000010000000000000002": ErrUnauthenticated,
		"000000010000000000000003": ErrUnauthenticated,
		"000000010000000000000004": backup.ErrAuth,
		"000000010000000000000005": ErrUnauthenticated,
	} {
		var out bytes.Buffer
		err := Fetch(ctx, restore, name, filepath.Join(dir, name))
		if !errors.Is(err, want) {
			t.Errorf("Fetch(%s) = %v, want %v", name, err, want)
		}
		if err := FetchTo(ctx, restore, name, &out); err == nil || out.Len() != 0 {
			t.Errorf("FetchTo(%s) released %d bytes, %v", name, out.Len(), err)
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("Fetch(%s) left a file", name)
		}
	}
	// Push over a planted record: the agent's file replaces it (a forged
	// record is no "identical" or "conflicting" archive).
	if err := PushData(ctx, push, "000000010000000000000002", good); err != nil {
		t.Errorf("PushData over a planted record: %v", err)
	}

	// Base backups: a manifest pinning another header, and one naming an
	// object outside the service.
	var tar bytes.Buffer
	Encrypt(&tar, strings.NewReader("tar"), pub, EncryptOptions{})
	hd, _ := backup.HeaderDigest(bytes.NewReader(tar.Bytes()))
	b := Backup{Label: "20250301T000000Z", Timeline: 1}
	b.Object, _ = objstore.Key(push.Region, push.Service, 1, objstore.KindBase, b.Label+".tar")
	st.Put(ctx, b.Object, bytes.NewReader(tar.Bytes()))
	b.HeaderSHA256 = strings.Repeat("00", 32)
	if err := FetchBaseBackup(ctx, restore, b, io.Discard); !errors.Is(err, backup.ErrAuth) {
		t.Errorf("FetchBaseBackup(another header) = %v, want ErrAuth", err)
	}
	b.HeaderSHA256 = hexOf(hd)
	if err := FetchBaseBackup(ctx, restore, b, io.Discard); err != nil {
		t.Errorf("FetchBaseBackup(pinned header) = %v", err)
	}
	b.Object = "eu-west-1/svc-b/00000001/base/" + b.Label + ".tar"
	if err := FetchBaseBackup(ctx, restore, b, io.Discard); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("FetchBaseBackup(another service's object) = %v, want ErrUnauthenticated", err)
	}
}

func readSmallAll(ctx context.Context, st objstore.Store, key string) ([]byte, error) {
	return readSmall(ctx, st, key)
}

func hexOf(h [32]byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 64)
	for _, c := range h {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
