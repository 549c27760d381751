package up

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/controlplane"
)

func TestRecord(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadRecord(dir); !errors.Is(err, ErrNoStack) {
		t.Fatalf("ReadRecord of an empty directory = %v, want ErrNoStack", err)
	}
	// Namespaces of the prefix exist, and this directory never ran a
	// stack: they are another directory's, and the claim is refused.
	if err := writeRecord(dir, "moat-", []string{"moat-inet"}); err == nil || !strings.Contains(err.Error(), "belong to no stack of data directory") {
		t.Fatalf("claiming another stack's namespaces = %v, want refused", err)
	}
	if err := writeRecord(dir, "moat-a1-", nil); err != nil {
		t.Fatal(err)
	}
	r, err := ReadRecord(dir)
	if err != nil || r.Prefix != "moat-a1-" {
		t.Fatalf("ReadRecord = %+v, %v", r, err)
	}
	// The same stack again (a restart, its namespaces still there) is fine.
	if err := writeRecord(dir, "moat-a1-", []string{"moat-a1-inet"}); err != nil {
		t.Errorf("restart of the recorded stack: %v", err)
	}
	if err := writeRecord(dir, "moat-b2-", nil); err == nil || !strings.Contains(err.Error(), `belongs to the stack with namespace prefix "moat-a1-"`) {
		t.Errorf("another prefix in a claimed directory = %v, want refused", err)
	}
	// A directory that ran a stack before records were kept adopts its
	// namespaces.
	old := t.TempDir()
	os.WriteFile(filepath.Join(old, controlplane.AdminTokenFile), []byte("tok\n"), 0o600)
	if err := writeRecord(old, "moat-", []string{"moat-inet"}); err != nil {
		t.Errorf("adopting a pre-record stack: %v", err)
	}
}

// TestDownWithoutRecord checks that Down of a data directory that records
// no stack removes nothing and says so.
func TestDownWithoutRecord(t *testing.T) {
	n, err := Down(context.Background(), t.TempDir(), "", time.Second)
	if n != 0 || !errors.Is(err, ErrNoStack) {
		t.Errorf("Down of an empty directory = %d, %v; want 0, ErrNoStack", n, err)
	}
}

func TestPackages(t *testing.T) {
	pkgs := Packages()
	run := map[string]bool{}
	for _, p := range pkgs {
		if p.Name == "" || p.Provides == "" {
			t.Errorf("package %+v has an empty field", p)
		}
		if !p.Test {
			run[p.Name] = true
		}
	}
	for _, want := range []string{"postgresql-15", "postgresql-client-15", "iproute2", "nftables", "openssl", "socat", "cryptsetup-bin", "e2fsprogs"} {
		if !run[want] {
			t.Errorf("moat up does not install %s", want)
		}
	}
	for _, p := range pkgs {
		if p.Name == "chromium" && !p.Test {
			t.Errorf("chromium is for the tests only")
		}
	}
	// scripts/deps.sh reads the same list.
	sh, err := os.ReadFile(filepath.Join("..", "..", "scripts", "deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(sh), "internal/up/packages.txt") {
		t.Error("scripts/deps.sh does not read internal/up/packages.txt")
	}
}
