//go:build linux

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/fleettest"
	"github.com/moatdb/moat/internal/store"
)

// TestMain lets the scripts run "moat" as a real command: the test binary
// re-executes itself as cli.Main.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"moat": func() {
			a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, pollInterval: 20 * time.Millisecond}
			os.Exit(a.run(context.Background(), os.Args[1:]))
		},
	})
}

type (
	cpKey         struct{}
	reconcilerKey struct{}
)

// TestScripts runs testdata/script/*.txtar. Each script gets its own
// control plane (the one `moat server` runs: SQLite store, HTTPS with its
// own CA, operator token) on a free localhost port, and the environment
// to reach it: MOAT_URL, MOAT_CA (the server's api-ca.pem), OPERATOR_TOKEN,
// MOAT_CONFIG (in the script's work directory), DATA_DIR.
func TestScripts(t *testing.T) {
	t.Parallel()
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join("testdata", "script"),
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			dataDir := filepath.Join(env.WorkDir, ".moat-data")
			ctx, cancel := context.WithCancel(context.Background())
			cp, err := controlplane.New(ctx, controlplane.Config{DataDir: dataDir, Listen: "127.0.0.1:0", CheckpointInterval: 50 * time.Millisecond})
			if err != nil {
				cancel()
				return fmt.Errorf("start control plane: %w", err)
			}
			if err := fleettest.Register(ctx, cp.Store, domain.Catalog{}, 0, time.Now()); err != nil {
				cancel()
				return err
			}
			if err := cp.Listen(); err != nil {
				cancel()
				return err
			}
			done := make(chan error, 1)
			go func() { done <- cp.Run(ctx) }()
			env.Defer(func() {
				cancel()
				if err := <-done; err != nil {
					env.T().Fatal(fmt.Errorf("control plane: %w", err))
				}
			})
			tok, err := os.ReadFile(filepath.Join(dataDir, controlplane.AdminTokenFile))
			if err != nil {
				return err
			}
			env.Values[cpKey{}] = cp
			env.Values[reconcilerKey{}] = &reconciler{}
			env.Setenv("MOAT_URL", cp.URL())
			env.Setenv("MOAT_CA", filepath.Join(dataDir, controlplane.APICAFile))
			env.Setenv("OPERATOR_TOKEN", strings.TrimSpace(string(tok)))
			env.Setenv("MOAT_CONFIG", filepath.Join(env.WorkDir, ".config", "moat", "config.json"))
			env.Setenv("DATA_DIR", dataDir)
			env.Setenv("HOME", env.WorkDir)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"jsonenv":   cmdJSONEnv,
			"reconcile": cmdReconcile,
		},
	})
}

// cmdJSONEnv sets an environment variable from a field of the JSON object
// in the last command's stdout: jsonenv VAR field.
func cmdJSONEnv(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: jsonenv VAR field")
	}
	var obj map[string]any
	ts.Check(json.Unmarshal([]byte(ts.ReadFile("stdout")), &obj))
	v, ok := obj[args[1]]
	if !ok {
		ts.Fatalf("stdout has no field %q", args[1])
	}
	ts.Setenv(args[0], fmt.Sprint(v))
}

// reconciler is a script's background reconcile loop.
type reconciler struct {
	mu   sync.Mutex
	stop func()
}

// cmdReconcile stands in for the controllers later issues add:
//
//	reconcile [fail]         one pass
//	reconcile start [fail]   a pass every 20ms until "reconcile stop"
//	reconcile stop
//
// A pass moves every object of the store to where a healthy platform would
// take it (VPCs active, services and nodes running, allowlists applied,
// peerings pending acceptance, operations succeeded), so --wait has
// something to wait for. With "fail", operations fail instead.
func cmdReconcile(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("reconcile does not fail")
	}
	cp := ts.Value(cpKey{}).(*controlplane.ControlPlane)
	r := ts.Value(reconcilerKey{}).(*reconciler)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop != nil {
		r.stop()
		r.stop = nil
	}
	mode := ""
	if len(args) > 0 {
		mode, args = args[0], args[1:]
	}
	switch mode {
	case "stop":
		return
	case "start":
		fail := len(args) == 1 && args[0] == "fail"
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				if err := reconcileOnce(ctx, cp, fail); err != nil && ctx.Err() == nil {
					ts.Logf("reconcile: %v", err)
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
		r.stop = func() { cancel(); <-done }
		ts.Defer(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.stop != nil {
				r.stop()
				r.stop = nil
			}
		})
	default:
		ts.Check(reconcileOnce(context.Background(), cp, mode == "fail"))
	}
}

func reconcileOnce(ctx context.Context, cp *controlplane.ControlPlane, failOps bool) error {
	now := time.Now().UTC()
	return cp.Store.Update(ctx, func(tx store.Tx) error {
		vpcs, err := store.List[domain.VPC](ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		for _, v := range vpcs {
			if v.State == domain.StateCreating {
				v.State, v.CloudVPCID, v.UpdatedAt = domain.StateActive, "vpc-0"+strings.TrimPrefix(v.ID, "vpc-")[:7]+"fake", now
				if err := store.Put(ctx, tx, v); err != nil {
					return err
				}
			}
		}
		pcs, err := store.List[domain.Peering](ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		for _, p := range pcs {
			if p.State == domain.StateProvisioning {
				p.State, p.UpdatedAt = domain.StatePendingAcceptance, now
				if err := store.Put(ctx, tx, p); err != nil {
					return err
				}
			}
		}
		nodes, err := store.List[domain.Node](ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.State == domain.StateCreating {
				n.State, n.UpdatedAt = domain.StateRunning, now
				if err := store.Put(ctx, tx, n); err != nil {
					return err
				}
			}
		}
		ops, err := store.List[domain.Operation](ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		svcs, err := store.List[domain.Service](ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		for _, s := range svcs {
			changed := false
			if s.State == domain.StateCreating {
				s.State, changed = domain.StateRunning, true
			}
			if s.AppliedAllowlistRevision < s.AllowlistRevision {
				s.AppliedAllowlistRevision, changed = s.AllowlistRevision, true
			}
			for _, o := range ops {
				if o.ID != s.OperationID || o.State != domain.StatePending {
					continue
				}
				o.State, o.UpdatedAt = domain.StateSucceeded, now
				if failOps {
					o.State, o.Error = domain.StateFailed, &domain.Info{Code: "simulated_failure", Message: "the test made it fail"}
				} else if o.Type == domain.OpServiceAttach {
					s.VPCID = o.VPCID
				} else {
					s.VPCID = ""
				}
				if err := store.Put(ctx, tx, o); err != nil {
					return err
				}
				s.State, s.OperationID, changed = domain.StateRunning, "", true
			}
			if changed {
				s.UpdatedAt = now
				if err := store.Put(ctx, tx, s); err != nil {
					return err
				}
			}
		}
		_, err = tx.BumpRevision(ctx)
		return err
	})
}
