package controlplane_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/audit"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/fleettest"
	"github.com/moatdb/moat/internal/store"
)

// lockedBuffer collects a control plane's log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startCP runs a control plane in dir with its log in logs.
func startCP(t *testing.T, dir string, logs *lockedBuffer) (*controlplane.ControlPlane, *client.Client, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cp, err := controlplane.New(ctx, controlplane.Config{DataDir: dir, Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := fleettest.Register(ctx, cp.Store, domain.Catalog{}, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := cp.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	tok, err := os.ReadFile(filepath.Join(dir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: cp.URL(), Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, controlplane.APICAFile), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("control plane: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return cp, c, stop
}

// TestNoSecretAtRest: after a token and a service are created (with
// Idempotency-Keys, as the client sends them), a password reset, an
// operator token, a host (with its agent token), another agent token and
// a console link, no file in the data directory — the SQLite database and
// its WAL included — and no log line holds any of their secrets; every
// file is 0600 and no directory is readable by others. (TestNoSecretOnDisk
// in internal/e2e does the same for a whole stack: agents, nodes, the
// support role's password and the backup authentication key.)
func TestNoSecretAtRest(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	var logs lockedBuffer
	cp, c, stop := startCP(t, dir, &logs)
	ctx := context.Background()
	p, err := c.CreateProject(ctx, apitype.ProjectCreate{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	key := client.NewIdempotencyKey()
	tok, err := c.CreateToken(ctx, p.ID, apitype.TokenCreate{Role: "admin", Name: "ci"}, client.WithIdempotencyKey(key))
	if err != nil {
		t.Fatal(err)
	}
	replay, err := c.CreateToken(ctx, p.ID, apitype.TokenCreate{Role: "admin", Name: "ci"}, client.WithIdempotencyKey(key))
	if err != nil || replay.ID != tok.ID || replay.Secret != "" || replay.SecretShownOnce == "" {
		t.Errorf("replayed token create = %+v, %v; want %s without its secret", replay, err, tok.ID)
	}
	svc, err := c.CreateService(ctx, p.ID, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	pw, err := c.ResetPassword(ctx, p.ID, svc.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, tokSecret, _ := strings.Cut(strings.TrimPrefix(tok.Secret, apiserver.TokenPrefix), "_")
	secrets := map[string]string{"token secret": tokSecret, "admin password": svc.AdminPassword, "reset password": pw.Password}
	// The operator's credentials: an operator token, a host's agent token
	// (at registration and another one), a console sign-in link.
	opTok, err := c.CreateOperatorToken(ctx, "ci-operator")
	if err != nil {
		t.Fatal(err)
	}
	host, err := c.CreateHost(ctx, apitype.HostCreate{Name: "h9", Region: "us-east-1", AZ: "us-east-1a"})
	if err != nil {
		t.Fatal(err)
	}
	agentTok, err := c.CreateAgentToken(ctx, "h9", "spare")
	if err != nil {
		t.Fatal(err)
	}
	link, err := c.CreateConsoleLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, full := range map[string]string{"operator token": opTok.Secret, "registration agent token": host.AgentToken.Secret, "agent token": agentTok.Secret} {
		_, sec, _ := strings.Cut(strings.TrimPrefix(full, apiserver.TokenPrefix), "_")
		secrets[name] = sec
	}
	if u, err := url.Parse(link.URL); err == nil {
		secrets["console link"] = u.Query().Get("code")
	}
	// The operators' SSH CA keys, sealed in the store: neither their
	// OpenSSH form nor the raw key is anywhere in the clear.
	for _, name := range []string{"ops_user_ca_key", "ops_host_ca_key"} {
		var key []byte
		err := cp.Store.View(ctx, func(tx store.Tx) error {
			sealed, err := tx.GetMeta(ctx, name)
			if err != nil {
				return err
			}
			key, err = cp.Keys.Open(sealed, []byte(name))
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		raw, err := ssh.ParseRawPrivateKey(key)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		secrets[name+" (OpenSSH)"] = strings.Split(string(key), "\n")[2]
		secrets[name+" (raw)"] = string(raw.(*ed25519.PrivateKey).Seed())
	}
	// The master key is in its own file only.
	master, err := os.ReadFile(filepath.Join(dir, controlplane.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	secrets["master key"] = strings.TrimSpace(string(master))
	for name, s := range secrets {
		if len(s) < 16 {
			t.Fatalf("%s %q is too short to search for", name, s)
		}
	}
	check := func(when string) {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, path)
			switch {
			case d.IsDir() && rel == controlplane.BackupDirName:
				return fs.SkipDir // the backup store: the agent's postgres user's
			case d.IsDir() && fi.Mode().Perm()&0o066 != 0:
				t.Errorf("%s: directory %s is mode %v, want no read or write for group and others", when, rel, fi.Mode().Perm())
			case fi.Mode().IsRegular() && fi.Mode().Perm() != 0o600:
				t.Errorf("%s: file %s is mode %v, want 0600", when, rel, fi.Mode().Perm())
			}
			if !fi.Mode().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for name, s := range secrets {
				if bytes.Contains(b, []byte(s)) && !(name == "master key" && rel == controlplane.MasterKeyFile) {
					t.Errorf("%s: %s holds the %s", when, rel, name)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check("running")
	if _, err := os.Stat(filepath.Join(dir, controlplane.SQLiteFile+"-wal")); err != nil {
		t.Errorf("no WAL to check: %v", err)
	}
	stop()
	check("stopped")
	for name, s := range secrets {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log holds the %s", name)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, controlplane.AgentTokenFile)); err == nil {
		t.Errorf("moat server wrote %s: an agent token for every host", controlplane.AgentTokenFile)
	}
}

// TestAgentTokenForUp: with AgentHost (moat up) the agent token written on
// first start is bound to that host.
func TestAgentTokenForUp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cp, err := controlplane.New(context.Background(), controlplane.Config{DataDir: dir, Listen: "127.0.0.1:0", AgentHost: "local"})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Store.Close()
	raw, err := os.ReadFile(filepath.Join(dir, controlplane.AgentTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(raw)), apiserver.TokenPrefix), "_")
	var tok *domain.Token
	if err := cp.Store.View(context.Background(), func(tx store.Tx) (err error) {
		tok, err = store.Get[domain.Token](context.Background(), tx, id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if tok.Role != domain.RoleAgent || tok.Host != "local" {
		t.Errorf("agent token = role %s host %q, want agent bound to local", tok.Role, tok.Host)
	}
}

// TestAPITLS: TLS 1.2 offers ECDHE with AEAD suites only (CBC, RSA key
// exchange and the rest refused); X25519 is negotiated;
// answers carry HSTS.
func TestAPITLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var logs lockedBuffer
	cp, _, _ := startCP(t, dir, &logs)
	caPEM, err := os.ReadFile(filepath.Join(dir, controlplane.APICAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	addr := strings.TrimPrefix(cp.URL(), "https://")
	cbc := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}}
	if conn, err := tls.Dial("tcp", addr, cbc); err == nil {
		conn.Close()
		t.Errorf("a TLS 1.2 CBC handshake succeeded with %s", tls.CipherSuiteName(conn.ConnectionState().CipherSuite))
	}
	// Every TLS 1.2 suite Go knows, one at a time: the server accepts only
	// ECDHE with an AEAD (GCM or ChaCha20-Poly1305).
	var accepted []string
	for _, cs := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if !slices.Contains(cs.SupportedVersions, tls.VersionTLS12) {
			continue
		}
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{cs.ID}})
		if err != nil {
			continue
		}
		conn.Close()
		accepted = append(accepted, cs.Name)
		if !strings.HasPrefix(cs.Name, "TLS_ECDHE_") || !(strings.Contains(cs.Name, "_GCM_") || strings.Contains(cs.Name, "CHACHA20_POLY1305")) {
			t.Errorf("TLS 1.2 suite %s accepted, want ECDHE with an AEAD only", cs.Name)
		}
	}
	if len(accepted) == 0 {
		t.Errorf("no TLS 1.2 suite accepted")
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: v})
		if err != nil {
			t.Fatalf("TLS %x handshake: %v", v, err)
		}
		st := conn.ConnectionState()
		conn.Close()
		if st.CurveID != tls.X25519 {
			t.Errorf("TLS %x: key exchange %v, want X25519", v, st.CurveID)
		}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	res, err := hc.Get(cp.URL() + "/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if hsts := res.Header.Get("Strict-Transport-Security"); !strings.Contains(hsts, "max-age=") {
		t.Errorf("Strict-Transport-Security = %q, want max-age", hsts)
	}
}

// TestAuditRewriteDetected: a whole chain rewritten in the database, with
// consistent hashes and its checkpoints deleted, disagrees with the
// checkpoint file.
func TestAuditRewriteDetected(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, _, stop := runCP(t, dir)
	ctx := context.Background()
	if _, err := c.CreateProject(ctx, apitype.ProjectCreate{Name: "rewrite"}); err != nil {
		t.Fatal(err)
	}
	stop()
	db, err := sql.Open("sqlite", filepath.Join(dir, controlplane.SQLiteFile))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query("SELECT seq, time, actor, project_id, action, target, request_id, source, outcome, detail FROM audit ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	var es []domain.AuditEntry
	for rows.Next() {
		var e domain.AuditEntry
		var ts string
		if err := rows.Scan(&e.Seq, &ts, &e.Actor, &e.ProjectID, &e.Action, &e.Target, &e.RequestID, &e.Source, &e.Outcome, &e.Detail); err != nil {
			t.Fatal(err)
		}
		if e.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	rows.Close()
	prev := audit.GenesisHash
	for i := range es {
		if es[i].Action == "project.create" {
			es[i].Actor = "operator:someone-else"
		}
		es[i].PrevHash = prev
		es[i].Hash = audit.Hash(es[i])
		prev = es[i].Hash
		if _, err := db.Exec("UPDATE audit SET actor = ?, prev_hash = ?, hash = ? WHERE seq = ?", es[i].Actor, es[i].PrevHash, es[i].Hash, es[i].Seq); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec("DELETE FROM checkpoints"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	c2, _, _ := runCP(t, dir)
	v, err := c2.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.OK || !strings.Contains(v.Problem, "checkpoint file") || !strings.Contains(v.Message, "signed through entry") {
		t.Errorf("verify after a rewrite = %+v, want a problem naming the checkpoint file", v)
	}
}

// TestPlatformTokensThroughClient: an operator makes a host's agent token
// with the Go client, lists it and revokes it.
func TestPlatformTokensThroughClient(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	dir := t.TempDir()
	cp, c, _ := startCP(t, dir, &logs)
	ctx := context.Background()
	tok, err := c.CreateAgentToken(ctx, "h9", "")
	if err != nil || tok.Host != "h9" || tok.Name != "agent-h9" || tok.Secret == "" {
		t.Fatalf("CreateAgentToken = %+v, %v", tok, err)
	}
	ops, err := c.CreateOperatorToken(ctx, "alice")
	if err != nil || ops.Role != "operator" {
		t.Fatalf("CreateOperatorToken = %+v, %v", ops, err)
	}
	list, err := c.ListPlatformTokens(ctx, "h9")
	if err != nil || len(list) != 1 || list[0].ID != tok.ID {
		t.Errorf("ListPlatformTokens(h9) = %+v, %v; want %s", list, err, tok.ID)
	}
	agent, err := client.New(client.Config{URL: cp.URL(), Token: tok.Secret, CAFile: filepath.Join(dir, controlplane.APICAFile)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.ListProjects(ctx); err == nil {
		t.Errorf("an agent token listed the projects")
	}
	if _, err := c.DeletePlatformToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if list, err := c.ListPlatformTokens(ctx, "h9"); err != nil || len(list) != 0 {
		t.Errorf("ListPlatformTokens(h9) after revoking = %+v, %v; want none", list, err)
	}
}

// TestConsoleServed: the console answers on the API's own listener under
// /console/, with its CSP and HSTS, while /v1 stays the API.
func TestConsoleServed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var logs lockedBuffer
	cp, _, _ := startCP(t, dir, &logs)
	caPEM, err := os.ReadFile(filepath.Join(dir, controlplane.APICAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer hc.CloseIdleConnections()
	for _, path := range []string{"/console/", "/console/signin"} {
		res, err := hc.Get(cp.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode >= 500 || res.StatusCode == http.StatusNotFound {
			t.Errorf("GET %s = %d, want the console", path, res.StatusCode)
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy = %q, want script-src 'self'", path, csp)
		}
		if hsts := res.Header.Get("Strict-Transport-Security"); !strings.Contains(hsts, "max-age=") {
			t.Errorf("GET %s: Strict-Transport-Security = %q, want max-age", path, hsts)
		}
	}
	res, err := hc.Get(cp.URL() + "/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/health = %d beside the console, want 200", res.StatusCode)
	}
}
