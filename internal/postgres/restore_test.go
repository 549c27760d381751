package postgres

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

type member struct {
	name, body, link string
	typ              byte
}

func tarOf(t *testing.T, ms ...member) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range ms {
		h := &tar.Header{Name: m.name, Typeflag: m.typ, Mode: 0o600, Size: int64(len(m.body)), Linkname: m.link}
		if m.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, m.body)
	}
	tw.Close()
	return b.Bytes()
}

// TestRestoreFromTar: Init builds a restored cluster from a base backup's
// tar (owned by the postgres user, in recovery), and refuses a tar that
// escapes the data directory, holds links or devices, is no base backup,
// or fails part way, leaving no data directory behind.
func TestRestoreFromTar(t *testing.T) {
	requirePostgres(t)
	ctx := context.Background()
	base := []member{
		{name: "PG_VERSION", body: "15\n"},
		{name: "backup_label", body: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"},
		{name: "postgresql.conf", body: "# restored\n"},
		{name: "global/", typ: tar.TypeDir},
		{name: "global/pg_control", body: "control"},
		{name: "base/1/", typ: tar.TypeDir},
		{name: "base/1/1259", body: "rel"},
		{name: "pg_wal/archive_status/x", body: ""}, // parents without their own entries
	}
	for _, tc := range []struct {
		name    string
		members []member
		fetch   error
		want    string
	}{
		{"escape", append(base[:3:3], member{name: "../evil", body: "x"}), nil, "outside the data directory"},
		{"absolute", append(base[:3:3], member{name: "/etc/evil", body: "x"}), nil, "outside the data directory"},
		{"symlink", append(base[:3:3], member{name: "pg_tblspc/16384", typ: tar.TypeSymlink, link: "/tmp"}), nil, "only directories and regular files"},
		{"hardlink", append(base[:3:3], member{name: "x", typ: tar.TypeLink, link: "PG_VERSION"}), nil, "only directories and regular files"},
		{"not a base backup", []member{{name: "hello", body: "x"}}, nil, "no PG_VERSION or backup_label"},
		{"fetch fails", base, errors.New("the store went away"), "the store went away"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInstance(t, "restore", func(c *Config) {
				body := tarOf(t, tc.members...)
				c.Restore = &Restore{Tar: func(ctx context.Context, w io.Writer) error {
					if _, err := w.Write(body); err != nil {
						return err
					}
					return tc.fetch
				}}
			})
			err := in.Init(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Init = %v, want an error with %q", err, tc.want)
			}
			if _, err := os.Stat(in.Config().DataDir); !os.IsNotExist(err) {
				t.Errorf("data directory after a failed restore: %v", err)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(in.Config().DataDir), "evil")); !os.IsNotExist(err) {
				t.Errorf("a member escaped the data directory")
			}
		})
	}

	in := newInstance(t, "restore", func(c *Config) {
		body := tarOf(t, base...)
		c.Restore = &Restore{Tar: func(ctx context.Context, w io.Writer) error {
			_, err := w.Write(body)
			return err
		}}
	})
	if err := in.Init(ctx); err != nil {
		t.Fatal(err)
	}
	dd := in.Config().DataDir
	for _, f := range []string{"recovery.signal", "base/1/1259", "pg_wal/archive_status/x", confFile} {
		if _, err := os.Stat(filepath.Join(dd, f)); err != nil {
			t.Errorf("restored data directory: %v", err)
		}
	}
	if in.cred != nil {
		for _, d := range []string{"pg_wal", "pg_wal/archive_status", "base/1/1259"} {
			var st = statOwner(t, filepath.Join(dd, d))
			if st != in.cred.Uid {
				t.Errorf("%s owned by %d, want the postgres user %d", d, st, in.cred.Uid)
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dd, "postgresql.conf")); !strings.Contains(string(b), includeLine) {
		t.Errorf("postgresql.conf does not include moat.conf:\n%s", b)
	}
	// Only the support group's fixed line (from the node itself) may name
	// a password method before WriteHBA.
	if b, _ := os.ReadFile(filepath.Join(dd, "pg_hba.conf")); strings.Count(string(b), "scram") != strings.Count(string(b), "+"+SupportGroup) {
		t.Errorf("a restored cluster admits clients before WriteHBA:\n%s", b)
	}
}

func statOwner(t *testing.T, p string) uint32 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}
