package up

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed packages.txt
var packagesTxt string

// Package is a Debian package a Moat machine needs.
type Package struct {
	// Name is the Debian package's name.
	Name string
	// Provides is the command that shows it is installed.
	Provides string
	// Test marks a package only the tests need (not `moat up`).
	Test bool
}

// Packages returns the packages of packages.txt, the list scripts/deps.sh
// reads too.
func Packages() []Package {
	var out []Package
	sc := bufio.NewScanner(strings.NewReader(packagesTxt))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		out = append(out, Package{Name: f[0], Provides: f[1], Test: f[2] == "test"})
	}
	return out
}

// Missing returns the packages `moat up` needs (with test, also those only
// the tests need) whose command is not on this machine.
func Missing(test bool) []Package {
	var out []Package
	for _, p := range Packages() {
		if (!p.Test || test) && !installed(p) {
			out = append(out, p)
		}
	}
	return out
}

func installed(p Package) bool {
	if p.Provides == "initdb" {
		_, err := os.Stat(filepath.Join(pgBindir(), "initdb"))
		return err == nil
	}
	if _, err := exec.LookPath(p.Provides); err == nil {
		return true
	}
	// Some commands (mkfs.ext4, cryptsetup) live in /sbin, which a user's
	// PATH may lack.
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, p.Provides)); err == nil {
			return true
		}
	}
	return false
}

// pgBindir is PostgreSQL's server bindir: MOAT_PG_BINDIR, pg_config's, or
// Debian's for version 15.
func pgBindir() string {
	if d := os.Getenv("MOAT_PG_BINDIR"); d != "" {
		return d
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return "/usr/lib/postgresql/15/bin"
}

// Names returns the packages' names.
func Names(pkgs []Package) []string {
	out := make([]string, len(pkgs))
	for i, p := range pkgs {
		out[i] = p.Name
	}
	return out
}

// ErrCannotInstall is returned by Install on a machine where it cannot
// install packages (not root, or no apt-get).
var ErrCannotInstall = errors.New("cannot install packages here")

// Install installs pkgs with apt-get (after apt-get update), writing one
// progress line per package to w. It needs root and apt-get
// (ErrCannotInstall otherwise); a failed package's error carries the end
// of apt-get's output.
func Install(ctx context.Context, w io.Writer, pkgs []Package) error {
	if len(pkgs) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: installing needs root", ErrCannotInstall)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("%w: no apt-get (not Debian?)", ErrCannotInstall)
	}
	fmt.Fprintf(w, "installing %d missing package(s): %s\n", len(pkgs), strings.Join(Names(pkgs), " "))
	fmt.Fprintln(w, "  apt-get update")
	if err := apt(ctx, "update", "-qq"); err != nil {
		return err
	}
	for i, p := range pkgs {
		fmt.Fprintf(w, "  [%d/%d] %s (for %s)\n", i+1, len(pkgs), p.Name, p.Provides)
		if err := apt(ctx, "install", "-y", "-qq", "--no-install-recommends", p.Name); err != nil {
			return fmt.Errorf("install %s: %w", p.Name, err)
		}
	}
	return nil
}

func apt(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tail := strings.TrimSpace(out.String())
		if len(tail) > 600 {
			tail = "..." + tail[len(tail)-600:]
		}
		return fmt.Errorf("apt-get %s: %w: %s", args[0], err, tail)
	}
	return nil
}
