package up

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstall runs Install against a stand-in apt-get that records its
// arguments: apt-get update first, then one install and one progress
// line per package.
func TestInstall(t *testing.T) {
	bin := t.TempDir()
	log := filepath.Join(bin, "log")
	script := "#!/bin/sh\necho \"$@\" >>" + log + "\n[ \"$5\" = broken ] && { echo 'E: Unable to locate package broken'; exit 100; }\nexit 0\n"
	if err := os.WriteFile(filepath.Join(bin, "apt-get"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	var out bytes.Buffer
	err := Install(context.Background(), &out, []Package{{Name: "nftables", Provides: "nft"}, {Name: "socat", Provides: "socat"}})
	if os.Geteuid() != 0 {
		if !errors.Is(err, ErrCannotInstall) {
			t.Fatalf("Install as non-root = %v, want ErrCannotInstall", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	want := "installing 2 missing package(s): nftables socat\n  apt-get update\n  [1/2] nftables (for nft)\n  [2/2] socat (for socat)\n"
	if out.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", out.String(), want)
	}
	calls, _ := os.ReadFile(log)
	if want := "update -qq\ninstall -y -qq --no-install-recommends nftables\ninstall -y -qq --no-install-recommends socat\n"; string(calls) != want {
		t.Errorf("apt-get calls:\n%s\nwant:\n%s", calls, want)
	}
	err = Install(context.Background(), &out, []Package{{Name: "broken", Provides: "x"}})
	if err == nil || !strings.Contains(err.Error(), "install broken") || !strings.Contains(err.Error(), "Unable to locate package broken") {
		t.Errorf("Install of a package apt-get cannot find = %v, want its output in the error", err)
	}
}
