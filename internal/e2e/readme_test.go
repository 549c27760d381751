package e2e

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readmeCommand is a command of the README's walkthrough.
type readmeCommand struct {
	line  int
	text  string
	fails bool // marked "# fails"
	// want are the output lines the README shows under the command but
	// those abridged with "...": each must be a line of its output.
	want []string
}

// readmeCommands extracts the walkthrough's commands from README.md: the
// lines starting with "# " in ```console blocks above the marker comment
// (a line ending in \ continues), with the output lines shown under them,
// without the build and moat up, which the test does itself.
func readmeCommands(t *testing.T) []readmeCommand {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out     []readmeCommand
		inBlock bool
		cont    *readmeCommand
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "<!-- The README test runs"):
			return out
		case strings.HasPrefix(l, "```"):
			inBlock = l == "```console"
			continue
		}
		if !inBlock {
			continue
		}
		if cont != nil {
			cont.text += "\n" + l
			if !strings.HasSuffix(l, `\`) {
				out, cont = append(out, *cont), nil
			}
			continue
		}
		cmd, ok := strings.CutPrefix(l, "# ")
		if !ok {
			if last := len(out) - 1; last >= 0 && out[last].line > 0 && !strings.Contains(l, "...") && strings.TrimSpace(l) != "" {
				out[last].want = append(out[last].want, strings.TrimSpace(l))
			}
			continue
		}
		if strings.HasPrefix(cmd, "go build") || strings.HasPrefix(cmd, "moat up") {
			// Not run; nor is the output shown under it checked.
			out = append(out, readmeCommand{})
			continue
		}
		c := readmeCommand{line: n, text: cmd, fails: strings.Contains(cmd, "# fails")}
		if strings.HasSuffix(cmd, `\`) {
			cont = &c
			continue
		}
		out = append(out, c)
	}
	t.Fatal("README.md has no end marker for the walkthrough")
	return nil
}

// hasLine reports whether a trimmed line of out is want.
func hasLine(out, want string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}

// TestREADMEWalkthrough runs the README's walkthrough, as written, with
// bash against a fresh stack: /var/lib/moat and the API URL are the only
// things replaced (by the stack's data directory and URL). Every command
// must succeed, but those marked "# fails", which must fail.
func TestREADMEWalkthrough(t *testing.T) {
	t.Parallel()
	e := startWith(t, "", "", fullFleet) // the fleet of moat up
	var cmds []readmeCommand
	for _, c := range readmeCommands(t) {
		if c.line > 0 {
			cmds = append(cmds, c)
		}
	}
	if len(cmds) < 20 {
		t.Fatalf("only %d commands extracted from README.md", len(cmds))
	}
	bin := t.TempDir()
	if err := os.Symlink(moatBinary(t), filepath.Join(bin, "moat")); err != nil {
		t.Fatal(err)
	}
	home, err := os.MkdirTemp("/tmp", "moat-readme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	logs := filepath.Join(home, "logs")
	os.Mkdir(logs, 0o755)
	repl := strings.NewReplacer("/var/lib/moat", e.dir, "https://127.0.0.1:8443", e.stack.CP.URL())
	var script strings.Builder
	script.WriteString("cd " + home + "\nexport PATH=" + bin + ":$PATH\n")
	for i, c := range cmds {
		fmt.Fprintf(&script, "__t0=$EPOCHREALTIME; { %s\n} >%s/%d.out 2>&1 </dev/null; echo \"%d $? $__t0 $EPOCHREALTIME\" >>%s/rc\n", repl.Replace(c.text), logs, i, i, logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Env = append(os.Environ(), "HOME="+home, "MOAT_DATA_DIR="+e.dir, "MOAT_CONFIG="+filepath.Join(home, "config.json"))
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	t.Logf("%d README commands in %s", len(cmds), time.Since(start).Round(time.Millisecond))
	rc, err := os.ReadFile(filepath.Join(logs, "rc"))
	if err != nil {
		t.Fatal(err)
	}
	codes := map[int]int{}
	took := map[int]time.Duration{}
	for _, l := range strings.Split(strings.TrimSpace(string(rc)), "\n") {
		f := strings.Fields(l)
		i, _ := strconv.Atoi(f[0])
		codes[i], _ = strconv.Atoi(f[1])
		if len(f) == 4 {
			t0, _ := strconv.ParseFloat(f[2], 64)
			t1, _ := strconv.ParseFloat(f[3], 64)
			took[i] = time.Duration((t1 - t0) * float64(time.Second))
		}
	}
	// Where the time goes (the suite's wall time is watched; design 0020).
	slow := slices.SortedFunc(maps.Keys(took), func(a, b int) int { return cmp.Compare(took[b], took[a]) })
	for _, i := range slow[:min(5, len(slow))] {
		t.Logf("%v README.md:%d %s", took[i].Round(time.Millisecond), cmds[i].line, cmds[i].text)
	}
	for i, c := range cmds {
		code, ran := codes[i]
		out, _ := os.ReadFile(filepath.Join(logs, strconv.Itoa(i)+".out"))
		switch {
		case !ran:
			t.Errorf("README.md:%d did not run: %s", c.line, c.text)
		case c.fails && code == 0:
			t.Errorf("README.md:%d is marked to fail but succeeded: %s\n%s", c.line, c.text, out)
		case !c.fails && code != 0:
			t.Errorf("README.md:%d exited %d: %s\n%s", c.line, code, c.text, out)
		}
		for _, w := range c.want {
			if ran && !hasLine(string(out), w) {
				t.Errorf("README.md:%d: the output has no line %q: %s\n%s", c.line, w, c.text, out)
			}
		}
	}
	// The refused psql says why, in seconds: explain's verdict follows.
	for i, c := range cmds {
		if c.fails && strings.Contains(c.text, "service psql") {
			out, _ := os.ReadFile(filepath.Join(logs, strconv.Itoa(i)+".out"))
			if !strings.Contains(string(out), "refused: allowlist") {
				t.Errorf("README.md:%d: the refused psql does not give explain's verdict:\n%s", c.line, out)
			}
		}
	}
}
