package controlplane_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/cli"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/controlplane"
)

// runCP runs a control plane in dir until the returned stop is called.
func runCP(t *testing.T, dir string) (*client.Client, string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cp, err := controlplane.New(ctx, controlplane.Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	tok, _ := os.ReadFile(filepath.Join(dir, controlplane.AdminTokenFile))
	c, err := client.New(client.Config{URL: cp.URL(), Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, controlplane.APICAFile)})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	}
	t.Cleanup(stop)
	return c, cp.URL(), stop
}

// TestAuditVerifyDetectsTampering edits the SQLite audit table behind the
// server's back, one way per case, and checks that `moat audit verify`
// exits non-zero naming the first bad entry.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		sql   []string
		first int64
	}{
		{"intact", nil, 0},
		{"edited", []string{"UPDATE audit SET actor = 'operator:someone-else' WHERE seq = 5"}, 5},
		{"deleted", []string{"DELETE FROM audit WHERE seq = 4"}, 4},
		{"reordered", []string{
			"UPDATE audit SET seq = -6 WHERE seq = 6",
			"UPDATE audit SET seq = 6 WHERE seq = 7",
			"UPDATE audit SET seq = 7 WHERE seq = -6",
		}, 6},
		{"tail deleted", []string{"DELETE FROM audit WHERE seq > 8"}, 9},
		// Without the checkpoint file outside the database this rollback
		// would verify: the remaining checkpoints all match.
		{"tail and its checkpoints deleted", []string{"DELETE FROM audit WHERE seq > 8", "DELETE FROM checkpoints WHERE seq > 8"}, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			c, _, stop := runCP(t, dir)
			ctx := context.Background()
			p, err := c.CreateProject(ctx, apitype.ProjectCreate{Name: "tamper"})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 8 {
				if _, err := c.CreateVPC(ctx, p.ID, apitype.VPCCreate{Name: fmt.Sprintf("v%d", i), Region: "us-east-1", CIDR: fmt.Sprintf("10.%d.0.0/16", i)}); err != nil && i < 3 {
					t.Fatal(err)
				}
			}
			stop() // signs a final checkpoint over the head

			db, err := sql.Open("sqlite", filepath.Join(dir, controlplane.SQLiteFile))
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range tc.sql {
				if _, err := db.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			db.Close()

			c2, url, _ := runCP(t, dir)
			v, err := c2.VerifyAudit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK != (tc.first == 0) || v.FirstBad != tc.first {
				t.Errorf("verify = %+v, want ok=%v first_bad=%d", v, tc.first == 0, tc.first)
			}
			var out, errb bytes.Buffer
			tok, _ := os.ReadFile(filepath.Join(dir, controlplane.AdminTokenFile))
			code := cli.Main(ctx, []string{"audit", "verify", "--url", url, "--token", strings.TrimSpace(string(tok)), "--ca", filepath.Join(dir, controlplane.APICAFile)}, strings.NewReader(""), &out, &errb)
			if tc.first == 0 {
				if code != 0 || strings.TrimSpace(out.String()) != "ok" {
					t.Errorf("moat audit verify = %d %q %q, want 0 and ok", code, out.String(), errb.String())
				}
				return
			}
			if code == 0 || !strings.Contains(out.String()+errb.String(), fmt.Sprintf("entry %d", tc.first)) {
				t.Errorf("moat audit verify = %d stdout %q stderr %q, want non-zero naming entry %d", code, out.String(), errb.String(), tc.first)
			}
		})
	}
}
