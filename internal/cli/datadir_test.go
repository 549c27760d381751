//go:build linux

package cli

import (
	"bytes"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/up"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestResolveDataDir checks the order the commands that read the simulator
// find moat up's data directory in: --data-dir, MOAT_DATA_DIR, the last
// moat up's, the default.
func TestResolveDataDir(t *testing.T) {
	last := filepath.Join(t.TempDir(), "up-data-dir")
	env := map[string]string{}
	a := &app{getenv: func(k string) string { return env[k] }, lastUpPath: last}
	if got := a.resolveDataDir(""); got != DefaultDataDir {
		t.Errorf("nothing set: %q, want %q", got, DefaultDataDir)
	}
	os.WriteFile(last, []byte("/srv/moat-last\n"), 0o644)
	if got := a.resolveDataDir(""); got != "/srv/moat-last" {
		t.Errorf("after a moat up: %q, want its data directory", got)
	}
	env["MOAT_DATA_DIR"] = "/srv/moat-env"
	if got := a.resolveDataDir(""); got != "/srv/moat-env" {
		t.Errorf("MOAT_DATA_DIR: %q", got)
	}
	if got := a.resolveDataDir("/srv/flag"); got != "/srv/flag" {
		t.Errorf("--data-dir: %q", got)
	}
}

func TestPrefixWriter(t *testing.T) {
	var b bytes.Buffer
	w := &prefixWriter{w: &b, prefix: "moat up: "}
	w.Write([]byte("installing 2 package(s)\n  [1/2] a\n"))
	w.Write([]byte("  [2/2] b\n"))
	if want := "moat up: installing 2 package(s)\nmoat up:   [1/2] a\nmoat up:   [2/2] b\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

// TestPrintUp checks that moat up names the console and how to capture
// the IDs the walkthrough needs.
func TestPrintUp(t *testing.T) {
	var b bytes.Buffer
	printUp(&b, "https://127.0.0.1:8443", "https://127.0.0.1:8443/console/signin/link?code=C0DE", "/var/lib/moat", "198.19.0.1", "127.0.0.1:8053", up.Fleet(domain.DefaultCatalog(), 1), nil)
	for _, want := range []string{
		"  hosts:           6 agents (us-east-1a-1 ... eu-west-1c-1; moat host list), logs in /var/lib/moat/agents\n",
		"  console:         https://127.0.0.1:8443/console/\n",
		"  sign in:         https://127.0.0.1:8443/console/signin/link?code=C0DE\n                   (as the operator, once, within 15 minutes; then with the operator token, or a new link: moat console link)\n",
		"  API:             https://127.0.0.1:8443\n",
		"export MOAT_PROJECT=$(moat project create demo -o id)",
		"open to the internet until its allowlist is set",
		"moat down --data-dir /var/lib/moat",
	} {
		if !bytes.Contains(b.Bytes(), []byte(want)) {
			t.Errorf("moat up's banner lacks %q:\n%s", want, b.String())
		}
	}
}

// TestREADMEShowsWhatMoatUpPrints: the output the README's walkthrough
// shows under `moat up` (its lines but those abridged with "...") is what
// printUp prints, so the two cannot drift apart (the README test runs the
// walkthrough's other commands, not moat up).
func TestREADMEShowsWhatMoatUpPrints(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, shown, ok := strings.Cut(string(readme), "\n# moat up --data-dir /var/lib/moat\n")
	if !ok {
		t.Fatal("README.md has no `# moat up --data-dir /var/lib/moat` line")
	}
	shown, _, _ = strings.Cut(shown, "\n```")
	var b bytes.Buffer
	printUp(&b, "https://127.0.0.1:8443", "https://127.0.0.1:8443/console/signin/link?code=C0DE", "/var/lib/moat", "198.19.0.1", "127.0.0.1:8053", up.Fleet(domain.DefaultCatalog(), 1), nil)
	printed := strings.Split(b.String(), "\n")
	n := 0
	for _, l := range strings.Split(shown, "\n") {
		if strings.Contains(l, "...") || strings.TrimSpace(l) == "" {
			continue
		}
		n++
		if !slices.Contains(printed, l) {
			t.Errorf("README.md shows %q under moat up; moat up prints no such line:\n%s", l, b.String())
		}
	}
	if n < 4 {
		t.Errorf("compared %d lines of README.md's moat up output, want its banner", n)
	}
}
