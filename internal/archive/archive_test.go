package archive

import (
	"bytes"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/objstore"
)

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := backup.GenerateKey()
	if err != nil {
		panic(err)
	}
	return k
})

// testConfig returns a push config and a restore config on a fresh
// objstore.Dir.
func testConfig(t *testing.T) (push, restore *Config, st *objstore.Dir) {
	t.Helper()
	k := testKey()
	pub, _ := backup.MarshalPublicKeyPEM(&k.PublicKey)
	priv, _ := backup.MarshalPrivateKeyPEM(k)
	dir := t.TempDir()
	pf := filepath.Join(dir, "priv.pem")
	if err := os.WriteFile(pf, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "store"), 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := objstore.NewDir(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	ak, err := backup.AuthKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	push = &Config{Version: ConfigVersion, Region: "eu-west-1", Service: "svc-a", Timeline: 1, PublicKey: string(pub), ObjectStore: st, AuthKey: ak}
	r := *push
	r.PrivateKeyFile = pf
	return push, &r, st
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	k := testKey()
	pub, _ := backup.MarshalPublicKeyPEM(&k.PublicKey)
	pubJSON := strings.ReplaceAll(string(pub), "\n", `\n`)
	good := `{"version":1,"store":{"dir":"/x"},"region":"r","service":"s","timeline":1,"public_key":"` + pubJSON + `"}`
	if _, err := ParseConfig([]byte(good)); err != nil {
		t.Fatalf("ParseConfig(good) = %v", err)
	}
	for _, bad := range []string{
		strings.Replace(good, `"version":1`, `"version":2`, 1),
		strings.Replace(good, `"region":"r"`, `"region":"r","extra":1`, 1),
		strings.Replace(good, `{"dir":"/x"}`, `{}`, 1),
		strings.Replace(good, `{"dir":"/x"}`, `{"dir":"/x","s3":{"endpoint":"e","bucket":"b"}}`, 1),
		strings.Replace(good, `"timeline":1`, `"timeline":0`, 1),
		strings.Replace(good, `"service":"s"`, `"service":".s"`, 1),
		strings.Replace(good, pubJSON, "nope", 1),
		good + "{}",
	} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("ParseConfig(%.80q...) = nil error, want an error", bad)
		}
	}
}

func TestPushFetch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	push, restore, st := testConfig(t)
	dir := t.TempDir()
	wal := filepath.Join(dir, "000000010000000000000003")
	content := bytes.Repeat([]byte("wal record "), 100000)
	if err := os.WriteFile(wal, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Push(ctx, push, wal); err != nil {
		t.Fatalf("Push: %v", err)
	}
	// Again, identical: success without storing again.
	key := "eu-west-1/svc-a/00000001/wal/000000010000000000000003"
	before, _ := st.Stat(ctx, key)
	if err := Push(ctx, push, wal); err != nil {
		t.Fatalf("Push again: %v", err)
	}
	if after, _ := st.Stat(ctx, key); !after.ModTime.Equal(before.ModTime) || after.Size != before.Size {
		t.Errorf("identical Push stored the file again")
	}
	// Different content under the same name: refused.
	if err := os.WriteFile(wal, append(content, 'x'), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Push(ctx, push, wal); !errors.Is(err, ErrConflict) {
		t.Errorf("Push(different content) = %v, want ErrConflict", err)
	}
	// Stored encrypted.
	rc, err := st.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var stored bytes.Buffer
	stored.ReadFrom(rc)
	rc.Close()
	if bytes.Contains(stored.Bytes(), []byte("wal record")) || !bytes.HasPrefix(stored.Bytes(), []byte("moat1")) {
		t.Errorf("stored object is not a moat1 ciphertext")
	}

	dest := filepath.Join(dir, "RECOVERYXLOG")
	if err := Fetch(ctx, restore, "000000010000000000000003", dest); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, content) {
		t.Errorf("Fetch wrote %d bytes, want the %d pushed", len(got), len(content))
	}
	if err := Fetch(ctx, restore, "00000002.history", filepath.Join(dir, "h")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Fetch(missing) = %v, want ErrNotFound", err)
	}
	if err := Fetch(ctx, push, "000000010000000000000003", filepath.Join(dir, "nokey")); err == nil {
		t.Errorf("Fetch without a private key = nil error")
	}
	for _, bad := range []string{"", "../x", "a/b", "000000010000000000000003.digest"} {
		if err := Fetch(ctx, restore, bad, filepath.Join(dir, "bad")); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Fetch(%q) = %v, want an invalid-name error", bad, err)
		}
	}

	// Tampered: an error naming ErrAuth, and no file at dest.
	stored.Bytes()[stored.Len()-5] ^= 1
	if err := st.Put(ctx, key, bytes.NewReader(stored.Bytes())); err != nil {
		t.Fatal(err)
	}
	dest2 := filepath.Join(dir, "tampered")
	if err := Fetch(ctx, restore, "000000010000000000000003", dest2); !errors.Is(err, backup.ErrAuth) {
		t.Errorf("Fetch(tampered) = %v, want ErrAuth", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 { // the WAL file and RECOVERYXLOG
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("after a failed Fetch the directory holds %v, want no new file", names)
	}
}

func TestPushTimelineFromName(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	push, _, st := testConfig(t)
	f := filepath.Join(t.TempDir(), "00000002.history")
	os.WriteFile(f, []byte("1\t0/3000000\tno recovery target specified\n"), 0o600)
	if err := Push(ctx, push, f); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stat(ctx, "eu-west-1/svc-a/00000002/wal/00000002.history"); err != nil {
		t.Errorf("history file not under its timeline: %v", err)
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	push, _, st := testConfig(t)
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	// Four daily backups, each starting in its own segment, and the WAL.
	for i := range 4 {
		start := t0.Add(time.Duration(i) * 24 * time.Hour)
		b := Backup{Label: start.Format(labelFormat), Timeline: 1, StartTime: start, EndTime: start.Add(time.Minute),
			StartWAL: fmt.Sprintf("00000001%016X", 2+2*i)}
		b.Object, _ = objstore.Key("eu-west-1", "svc-a", 1, objstore.KindBase, b.Label+".tar")
		putManifest(t, st, push.AuthKey, b)
	}
	for _, n := range []string{"000000010000000000000001", "000000010000000000000004", "000000010000000000000006",
		"000000010000000000000007", "000000010000000000000009", "00000002.history"} {
		k, _ := objstore.Key("eu-west-1", "svc-a", walTimeline(n, 1), objstore.KindWAL, n)
		st.Put(ctx, k, strings.NewReader("x"))
		st.Put(ctx, k+digestSuffix, strings.NewReader("x"))
	}
	push.Now = func() time.Time { return t0.Add(4 * 24 * time.Hour) }

	if _, err := Prune(ctx, push, 0, 0); err == nil {
		t.Errorf("Prune(keep 0) = nil error")
	}
	// Keep 1 by count, but everything younger than 2.5 days: the last two.
	del, err := Prune(ctx, push, 1, 60*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(del) != 2 {
		t.Fatalf("Prune deleted %d backups, want 2", len(del))
	}
	left, _ := ListBackups(ctx, push)
	if len(left) != 2 || left[0].StartWAL != "000000010000000000000006" {
		t.Fatalf("after Prune: %+v", left)
	}
	objs, _ := st.List(ctx, "eu-west-1/svc-a/")
	var wal []string
	for _, o := range objs {
		if strings.Contains(o.Key, "/wal/") && !strings.HasSuffix(o.Key, digestSuffix) {
			wal = append(wal, filepath.Base(o.Key))
		}
	}
	want := "000000010000000000000006 000000010000000000000007 000000010000000000000009 00000002.history"
	if got := strings.Join(wal, " "); got != want {
		t.Errorf("WAL after Prune = %s, want %s", got, want)
	}
	// By count alone.
	if del, err := Prune(ctx, push, 1, 0); err != nil || len(del) != 1 {
		t.Errorf("Prune(1, 0) = %d deleted, %v; want 1", len(del), err)
	}
}

// putManifest stores b's manifest, authenticated with key, and a
// placeholder tar.
func putManifest(t *testing.T, st objstore.Store, key []byte, b Backup) {
	t.Helper()
	mkey := strings.TrimSuffix(b.Object, ".tar") + ".json"
	if err := writeManifest(context.Background(), st, key, mkey, b); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(context.Background(), b.Object, strings.NewReader("tar")); err != nil {
		t.Fatal(err)
	}
}

// TestTailBuffer: the tail buffer keeps exactly the last tailSize bytes,
// whatever the sizes of the writes, as a naive version does.
func TestTailBuffer(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var tb tailBuffer
	var all []byte
	for i := range 2000 {
		n := rng.IntN(3 * tailSize / 2)
		if i%3 == 0 {
			n = rng.IntN(100)
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		if got, _ := tb.Write(p); got != n {
			t.Fatalf("Write returned %d, want %d", got, n)
		}
		all = append(all, p...)
		if len(all) > 4*tailSize {
			all = all[len(all)-tailSize:]
		}
		want := all[max(len(all)-tailSize, 0):]
		if !bytes.Equal(tb.Bytes(), want) {
			t.Fatalf("after write %d (%d bytes): tail of %d bytes differs from the last %d written", i, n, len(tb.Bytes()), len(want))
		}
	}
}
