package objstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// testStore is the conformance suite every Store passes. s must be empty.
func testStore(t *testing.T, s Store) {
	ctx := t.Context()
	put := func(key, val string) {
		t.Helper()
		if err := s.Put(ctx, key, strings.NewReader(val)); err != nil {
			t.Fatalf("Put(%q): %v", key, err)
		}
	}
	get := func(key string) (string, error) {
		t.Helper()
		rc, err := s.Get(ctx, key)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), err
	}
	keys := func(prefix string) []string {
		t.Helper()
		l, err := s.List(ctx, prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		var out []string
		for _, oi := range l {
			out = append(out, oi.Key)
		}
		return out
	}

	if _, err := s.Get(ctx, "eu/svc/missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, "eu/svc/missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(missing) = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "eu/svc/missing"); err != nil {
		t.Errorf("Delete(missing) = %v, want nil", err)
	}
	if got := keys(""); len(got) != 0 {
		t.Errorf("List(\"\") on empty store = %q, want none", got)
	}

	put("eu/svc1/00000001/wal/000000010000000000000001", "wal1")
	put("eu/svc1/00000001/wal/000000010000000000000002", "wal2")
	put("eu/svc1/00000001/base/b1", "")
	put("eu/svc10/00000001/wal/x", "other service")
	put("us/svc1/00000001/wal/x", "other region")
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := s.Put(ctx, "eu/svc1/big", iotest.HalfReader(bytes.NewReader(big))); err != nil {
		t.Fatalf("Put(big): %v", err)
	}

	for key, want := range map[string]string{
		"eu/svc1/00000001/wal/000000010000000000000001": "wal1",
		"eu/svc1/00000001/base/b1":                      "",
		"eu/svc1/big":                                   string(big),
	} {
		got, err := get(key)
		if err != nil || got != want {
			t.Errorf("Get(%q) = %d bytes, %v; want %d bytes", key, len(got), err, len(want))
		}
		oi, err := s.Stat(ctx, key)
		if err != nil || oi.Key != key || oi.Size != int64(len(want)) || oi.ModTime.IsZero() {
			t.Errorf("Stat(%q) = %+v, %v; want size %d", key, oi, err, len(want))
		}
	}

	tests := []struct {
		prefix string
		want   []string
	}{
		{"eu/svc1/", []string{
			"eu/svc1/00000001/base/b1",
			"eu/svc1/00000001/wal/000000010000000000000001",
			"eu/svc1/00000001/wal/000000010000000000000002",
			"eu/svc1/big",
		}},
		{"eu/svc1", []string{
			"eu/svc1/00000001/base/b1",
			"eu/svc1/00000001/wal/000000010000000000000001",
			"eu/svc1/00000001/wal/000000010000000000000002",
			"eu/svc1/big",
			"eu/svc10/00000001/wal/x",
		}},
		{"eu/svc1/00000001/wal/0000000100000000000000", []string{
			"eu/svc1/00000001/wal/000000010000000000000001",
			"eu/svc1/00000001/wal/000000010000000000000002",
		}},
		{"us/", []string{"us/svc1/00000001/wal/x"}},
		{"nowhere/", nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, keys(tt.prefix)); diff != "" {
			t.Errorf("List(%q) mismatch (-want +got):\n%s", tt.prefix, diff)
		}
	}

	// Replace is whole; a failed Put leaves the old object.
	put("eu/svc1/00000001/wal/000000010000000000000001", "replaced")
	if got, _ := get("eu/svc1/00000001/wal/000000010000000000000001"); got != "replaced" {
		t.Errorf("Get after replace = %q, want %q", got, "replaced")
	}
	failing := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(errors.New("boom")))
	if err := s.Put(ctx, "eu/svc1/00000001/wal/000000010000000000000001", failing); err == nil {
		t.Errorf("Put(failing reader) = nil, want error")
	}
	if got, _ := get("eu/svc1/00000001/wal/000000010000000000000001"); got != "replaced" {
		t.Errorf("Get after failed Put = %q, want the old %q", got, "replaced")
	}
	if err := s.Put(ctx, "eu/svc1/new", failing); err == nil {
		t.Errorf("Put(new key, failing reader) = nil, want error")
	}
	if _, err := s.Stat(ctx, "eu/svc1/new"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after failed Put of a new key = %v, want ErrNotFound", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Put(cctx, "eu/svc1/cancelled", strings.NewReader("x")); err == nil {
		t.Errorf("Put(cancelled context) = nil, want error")
	}

	if err := s.Delete(ctx, "eu/svc1/big"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(ctx, "eu/svc1/big"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}

	for _, bad := range []string{"", "/abs", "a//b", "a/../b", "a/./b", "../x", "a/.tmp-1", "a\\b", "a/b/", "a\x00b"} {
		if err := s.Put(ctx, bad, strings.NewReader("x")); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", bad, err)
		}
		if _, err := s.Get(ctx, bad); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Get(%q) = %v, want ErrInvalidKey", bad, err)
		}
	}
}

func TestDir(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, d)
	// No temporary file is left behind, even by failed Puts.
	filepath.WalkDir(root, func(p string, de os.DirEntry, err error) error {
		if strings.HasPrefix(de.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
	if _, err := NewDir(filepath.Join(root, "missing")); err == nil {
		t.Errorf("NewDir(missing) = nil error")
	}
}

func TestS3(t *testing.T) {
	t.Parallel()
	backend := s3mem.New()
	if err := backend.CreateBucket("backups"); err != nil {
		t.Fatal(err)
	}
	// TLS, as in production; over plain HTTP minio-go signs uploads with
	// aws-chunked streaming, which gofakes3 stores undecoded.
	srv := httptest.NewTLSServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewS3(S3Config{
		Endpoint:        u.Host,
		Transport:       srv.Client().Transport,
		Region:          "us-east-1",
		Bucket:          "backups",
		AccessKeyID:     "test",
		SecretAccessKey: "test-secret",
		PathStyle:       true,
		PartSize:        5 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, s)

	// Larger than a part: a streamed multipart upload.
	big := bytes.Repeat([]byte("moat"), (11<<20)/4)
	if err := s.Put(t.Context(), "eu/svc/multipart", bytes.NewBuffer(big)); err != nil {
		t.Fatalf("Put(11 MiB): %v", err)
	}
	rc, err := s.Get(t.Context(), "eu/svc/multipart")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, big) {
		t.Errorf("Get(multipart) = %d bytes, %v; want %d bytes", len(got), err, len(big))
	}
}

func TestKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		region, service string
		timeline        uint32
		kind            Kind
		name            string
		want            string
		wantErr         bool
	}{
		{"eu-west", "svc-123", 1, KindWAL, "000000010000000000000003", "eu-west/svc-123/00000001/wal/000000010000000000000003", false},
		{"eu-west", "svc-123", 0x1A, KindBase, "2026-11-23T10:00:00Z", "eu-west/svc-123/0000001A/base/2026-11-23T10:00:00Z", false},
		{"eu-west", "svc/123", 1, KindWAL, "x", "", true},
		{"", "svc", 1, KindWAL, "x", "", true},
		{"eu", "svc", 1, KindWAL, "..", "", true},
	}
	for _, tt := range tests {
		got, err := Key(tt.region, tt.service, tt.timeline, tt.kind, tt.name)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("Key(%q, %q, %d, %q, %q) = %q, %v; want %q (error: %v)",
				tt.region, tt.service, tt.timeline, tt.kind, tt.name, got, err, tt.want, tt.wantErr)
		}
		if err == nil {
			if verr := ValidKey(got); verr != nil {
				t.Errorf("ValidKey(Key(...)) = %v", verr)
			}
		}
	}
	if got, err := ServicePrefix("eu", "svc"); got != "eu/svc/" || err != nil {
		t.Errorf("ServicePrefix(eu, svc) = %q, %v; want %q", got, err, "eu/svc/")
	}
}

// TestDirSymlinks plants links in the store (to a file and to a directory
// outside it, and one within it): no operation follows one, Delete removes
// nothing outside, List lists nothing through one.
func TestDirSymlinks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, "r/s/00000001/wal/real", strings.NewReader("real")); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"r/s/00000001/wal/file-link": victim,                                       // a file outside
		"r/s/00000001/base":          outside,                                      // a directory outside
		"r/s/00000001/wal/in-link":   filepath.Join(root, "r/s/00000001/wal/real"), // within the store
		"r/t":                        outside,                                      // a whole service
	}
	for k, target := range links {
		if err := os.Symlink(target, filepath.Join(root, filepath.FromSlash(k))); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"r/s/00000001/wal/file-link", "r/s/00000001/base/victim", "r/s/00000001/wal/in-link", "r/t/victim"} {
		if err := d.Delete(ctx, k); !errors.Is(err, ErrSymlink) {
			t.Errorf("Delete(%q) = %v, want ErrSymlink", k, err)
		}
		if rc, err := d.Get(ctx, k); err == nil {
			rc.Close()
			t.Errorf("Get(%q) followed a link", k)
		}
		if _, err := d.Stat(ctx, k); err == nil {
			t.Errorf("Stat(%q) followed a link", k)
		}
	}
	if err := d.Put(ctx, "r/s/00000001/base/planted", strings.NewReader("x")); !errors.Is(err, ErrSymlink) {
		t.Errorf("Put through a linked directory = %v, want ErrSymlink", err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
		t.Fatalf("the file outside the store is %q, %v: a link was followed", b, err)
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Errorf("Put wrote outside the store")
	}
	for _, prefix := range []string{"", "r/", "r/s/", "r/t/"} {
		objs, err := d.List(ctx, prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		for _, o := range objs {
			if o.Key != "r/s/00000001/wal/real" {
				t.Errorf("List(%q) lists %q, through or at a link", prefix, o.Key)
			}
		}
	}
}

// TestDirDeleteRemovesEmptyDirs: deleting a prefix's last object removes
// the directories it leaves empty, not the root, not a directory in use.
func TestDirDeleteRemovesEmptyDirs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := t.TempDir()
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"r/s/1/wal/a", "r/s/1/wal/b", "r/t/1/base/c"} {
		if err := d.Put(ctx, k, strings.NewReader(k)); err != nil {
			t.Fatal(err)
		}
	}
	d.Delete(ctx, "r/s/1/wal/a")
	if _, err := os.Stat(filepath.Join(root, "r/s/1/wal")); err != nil {
		t.Errorf("a directory still holding b was removed: %v", err)
	}
	d.Delete(ctx, "r/s/1/wal/b")
	if _, err := os.Stat(filepath.Join(root, "r/s")); !os.IsNotExist(err) {
		t.Errorf("r/s left behind empty: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "r/t/1/base/c")); err != nil {
		t.Errorf("another prefix lost: %v", err)
	}
	d.Delete(ctx, "r/t/1/base/c")
	if _, err := os.Stat(root); err != nil {
		t.Errorf("the root was removed: %v", err)
	}
	if err := d.Put(ctx, "r/s/1/wal/a", strings.NewReader("again")); err != nil {
		t.Errorf("put after the directories went: %v", err)
	}
}
