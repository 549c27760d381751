package ops

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/ops/asciicast"
	"github.com/moatdb/moat/internal/testenv"
)

// harness is one node endpoint on 127.0.0.1 with its CAs, the grants it
// knows, its revocation list, and what it audited and recorded.
type harness struct {
	ca, hostCA *CA
	nodeID     string
	srv        *Server
	addr       string
	stop       func() // stops Serve and waits for it

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every event
	events     []Event
	granted    map[string]bool
	revoked    map[uint64]bool
	recordings []*recordingBuffer
	// recordFault makes recordings fail: "open" or "write".
	recordFault string
}

type recordingBuffer struct {
	bytes.Buffer
	info   Recording
	closed bool
}

type lockedRecording struct {
	h *harness
	r *recordingBuffer
}

func (l lockedRecording) Write(p []byte) (int, error) {
	l.h.mu.Lock()
	defer l.h.mu.Unlock()
	if l.h.recordFault == "write" && l.r.Len() > 0 { // after the header
		return 0, errors.New("disk full")
	}
	return l.r.Write(p)
}

func (l lockedRecording) Close() error {
	l.h.mu.Lock()
	defer l.h.mu.Unlock()
	l.r.closed = true
	return nil
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{nodeID: domain.NewID(domain.PrefixNode), changed: make(chan struct{}), granted: map[string]bool{}, revoked: map[uint64]bool{}}
	var err error
	if h.ca, err = NewCA(); err != nil {
		t.Fatal(err)
	}
	if h.hostCA, err = NewCA(); err != nil {
		t.Fatal(err)
	}
	hostKey, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	hostCert, err := h.hostCA.IssueHost(hostKey.PublicKey(), h.nodeID, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewCertSigner(hostCert, hostKey)
	if err != nil {
		t.Fatal(err)
	}
	h.srv, err = New(Config{
		HostSigner: hostSigner,
		UserCA:     h.ca.PublicKey(),
		Granted:    func(id string) bool { h.mu.Lock(); defer h.mu.Unlock(); return h.granted[id] },
		Revoked:    func(s uint64) bool { h.mu.Lock(); defer h.mu.Unlock(); return h.revoked[s] },
		Audit: func(e Event) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.events = append(h.events, e)
			close(h.changed)
			h.changed = make(chan struct{})
		},
		Runner: ShellRunner{},
		Record: func(info Recording) (io.WriteCloser, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.recordFault == "open" {
				return nil, errors.New("no space for recordings")
			}
			r := &recordingBuffer{info: info}
			h.recordings = append(h.recordings, r)
			return lockedRecording{h, r}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(ctx, ln) }()
	h.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Cleanup(h.stop)
	return h
}

// grant makes a live grant from 127.0.0.1 for the node, edited by edit.
func (h *harness) grant(t *testing.T, edit func(*domain.OpsGrant)) *domain.OpsGrant {
	t.Helper()
	g, err := domain.NewOpsGrant(domain.OpsGrantRequest{Operator: "tok-operator", NodeID: h.nodeID, Reason: "INC-13: test access", SourceCIDRs: []string{"127.0.0.1/32"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if g.Serial, err = NewSerial(); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(g)
	}
	h.mu.Lock()
	h.granted[g.ID] = true
	h.mu.Unlock()
	return g
}

// client issues g's certificate at now for a new session key.
func (h *harness) client(t *testing.T, g *domain.OpsGrant, now time.Time) *Client {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := h.ca.IssueUser(g, key.PublicKey(), now)
	if err != nil {
		t.Fatal(err)
	}
	return h.newClient(t, key, cert)
}

func (h *harness) newClient(t *testing.T, key *Key, cert *ssh.Certificate) *Client {
	t.Helper()
	c, err := NewClient(key, cert, h.hostCA.PublicKey(), h.nodeID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ssh returns Debian's ssh with the client's session files; opts come
// first, so they win over the defaults of OpenSSH.Args.
func (h *harness) ssh(t *testing.T, ctx context.Context, c *Client, opts []string, command ...string) (*exec.Cmd, *OpenSSH) {
	t.Helper()
	bin := testenv.MustHaveCommand(t, "ssh")
	o, err := c.WriteOpenSSH(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	args, err := o.Args(h.addr, command...)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, append(append(opts, "-o", "BatchMode=yes"), args...)...)
	cmd.Env = []string{"HOME=" + o.Dir, "PATH=/usr/bin:/bin"}
	return cmd, o
}

// wait returns the first event that matches, waiting up to 10 s.
func (h *harness) wait(t *testing.T, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		h.mu.Lock()
		for _, e := range h.events {
			if match(e) {
				h.mu.Unlock()
				return e
			}
		}
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("no %s event; events:\n%s", what, formatEvents(h.events))
		}
	}
}

func formatEvents(evs []Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s reason=%s grant=%s serial=%d detail=%q command=%q\n", e.Action, e.Reason, e.GrantID, e.Serial, e.Detail, e.Command)
	}
	return b.String()
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestOpenSSHRunsCommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	g := h.grant(t, nil)
	cmd, _ := h.ssh(t, testContext(t), h.client(t, g, time.Now()), nil, "echo", "hi")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("ssh echo hi = %q, %v; stderr:\n%s", out, err, stderr.String())
	}
	exec := h.wait(t, "exec", func(e Event) bool { return e.Action == ActionExec })
	if exec.Command != "echo hi" || exec.GrantID != g.ID || exec.Serial != g.Serial || exec.User != domain.OpsPrincipal {
		t.Errorf("exec event = %+v", exec)
	}
	h.wait(t, "open", func(e Event) bool { return e.Action == ActionSessionOpened && e.GrantID == g.ID })
	closed := h.wait(t, "close", func(e Event) bool { return e.Action == ActionSessionClosed })
	if closed.Reason != CloseClient || closed.BytesOut != 3 || closed.Duration <= 0 || closed.Session != exec.Session {
		t.Errorf("close event = %+v", closed)
	}
}

// signRaw signs a certificate for key that IssueUser would issue for g,
// after edit changes it: certificates the CA refuses to make.
func signRaw(t *testing.T, ca *CA, key ssh.PublicKey, g *domain.OpsGrant, edit func(*ssh.Certificate)) *ssh.Certificate {
	t.Helper()
	now := time.Now()
	c := &ssh.Certificate{
		Key: key, Serial: g.Serial, CertType: ssh.UserCert, KeyId: g.ID,
		ValidPrincipals: []string{domain.OpsPrincipal},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(10 * time.Minute).Unix()),
		Permissions: ssh.Permissions{
			CriticalOptions: map[string]string{"source-address": "127.0.0.1/32"},
			Extensions:      map[string]string{"permit-pty": ""},
		},
	}
	edit(c)
	if err := c.SignCert(rand.Reader, ca.Signer); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOpenSSHRefusesBadCredentials(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	askpass := filepath.Join(t.TempDir(), "askpass")
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho hunter2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	withPassword := func(cmd *exec.Cmd) {
		cmd.Env = append(cmd.Env, "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	}
	raw := func(edit func(*ssh.Certificate)) func(t *testing.T, g *domain.OpsGrant) *Client {
		return func(t *testing.T, g *domain.OpsGrant) *Client {
			key, err := NewKey()
			if err != nil {
				t.Fatal(err)
			}
			return h.newClient(t, key, signRaw(t, h.ca, key.PublicKey(), g, edit))
		}
	}
	other, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		reason string
		grant  func(*domain.OpsGrant)
		client func(t *testing.T, g *domain.OpsGrant) *Client // nil: IssueUser now
		opts   []string
		env    func(*exec.Cmd)
		files  func(*OpenSSH) // edits the session's files
		after  func(g *domain.OpsGrant)
	}{
		{name: "password", reason: ReasonPassword, opts: []string{"-o", "BatchMode=no", "-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1"}, env: withPassword},
		{name: "keyboard-interactive", reason: ReasonKeyboardInteractive, opts: []string{"-o", "BatchMode=no", "-o", "PreferredAuthentications=keyboard-interactive", "-o", "NumberOfPasswordPrompts=1"}, env: withPassword},
		{name: "plain key", reason: ReasonPlainKey, files: func(o *OpenSSH) { os.Remove(o.CertFile) }},
		{name: "self-signed", reason: ReasonUnknownCA, client: func(t *testing.T, g *domain.OpsGrant) *Client {
			key, err := NewKey()
			if err != nil {
				t.Fatal(err)
			}
			cert, err := other.IssueUser(g, key.PublicKey(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return h.newClient(t, key, cert)
		}},
		{name: "expired one second ago", reason: ReasonExpired, grant: func(g *domain.OpsGrant) { g.ExpiresAt = time.Now().Add(-time.Second) },
			client: func(t *testing.T, g *domain.OpsGrant) *Client { return h.client(t, g, time.Now().Add(-time.Minute)) }},
		{name: "not yet valid", reason: ReasonNotYetValid, grant: func(g *domain.OpsGrant) { g.ExpiresAt = time.Now().Add(20 * time.Minute) },
			client: func(t *testing.T, g *domain.OpsGrant) *Client { return h.client(t, g, time.Now().Add(10*time.Minute)) }},
		{name: "wrong principal", reason: ReasonWrongPrincipal, client: raw(func(c *ssh.Certificate) { c.ValidPrincipals = []string{"root"} })},
		{name: "wrong login", reason: ReasonWrongPrincipal, opts: []string{"-l", "root"}},
		{name: "no principal", reason: ReasonWrongPrincipal, client: raw(func(c *ssh.Certificate) { c.ValidPrincipals = nil })},
		{name: "too long", reason: ReasonValidityTooLong, client: raw(func(c *ssh.Certificate) { c.ValidBefore = uint64(time.Now().Add(2 * time.Hour).Unix()) })},
		{name: "forwarding extension", reason: ReasonUnsupportedOption, client: raw(func(c *ssh.Certificate) { c.Extensions["permit-port-forwarding"] = "" })},
		{name: "force-command", reason: ReasonUnsupportedOption, client: raw(func(c *ssh.Certificate) { c.CriticalOptions["force-command"] = "true" })},
		{name: "no source address", reason: ReasonSourceAddress, client: raw(func(c *ssh.Certificate) { delete(c.CriticalOptions, "source-address") })},
		{name: "source address not allowed", reason: ReasonSourceAddress, grant: func(g *domain.OpsGrant) { g.SourceCIDRs = []string{"10.9.9.9/32", "192.0.2.0/24"} }},
		{name: "revoked", reason: ReasonRevoked, after: func(g *domain.OpsGrant) { h.mu.Lock(); h.revoked[g.Serial] = true; h.mu.Unlock() }},
		{name: "revoked on the node", reason: ReasonRevoked, after: func(g *domain.OpsGrant) { h.srv.Revoke(g.ID) }},
		{name: "grant for another node", reason: ReasonUnknownGrant, after: func(g *domain.OpsGrant) { h.mu.Lock(); delete(h.granted, g.ID); h.mu.Unlock() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := h.grant(t, tc.grant)
			var c *Client
			if tc.client != nil {
				c = tc.client(t, g)
			} else {
				c = h.client(t, g, time.Now())
			}
			if tc.after != nil {
				tc.after(g)
			}
			cmd, o := h.ssh(t, testContext(t), c, tc.opts, "echo", "hi")
			if tc.env != nil {
				tc.env(cmd)
			}
			if tc.files != nil {
				tc.files(o)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err == nil || len(out) > 0 {
				t.Fatalf("ssh with a bad credential = %q, %v; stderr:\n%s", out, err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "Permission denied") {
				t.Errorf("ssh stderr = %q, want Permission denied", stderr.String())
			}
			e := h.wait(t, tc.reason+" refusal", func(e Event) bool {
				if e.Action != ActionRefused || e.Reason != tc.reason {
					return false
				}
				// Events of certificates our CA signed name their grant.
				return e.GrantID == "" || e.GrantID == g.ID
			})
			if e.Remote == "" || e.Detail == "" {
				t.Errorf("refusal = %+v, want the remote address and a detail", e)
			}
		})
	}
}

func TestHostCertificateIsPinned(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	g := h.grant(t, nil)
	c := h.client(t, g, time.Now())

	wrongCA, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(o *OpenSSH) []string
		refer string
	}{
		{"another host CA", func(o *OpenSSH) []string {
			line := "@cert-authority " + h.nodeID + " " + wrongCA.AuthorizedKey() + "\n"
			if err := os.WriteFile(o.KnownHosts, []byte(line), 0o600); err != nil {
				t.Fatal(err)
			}
			return nil
		}, "Host key verification failed"},
		{"another node's name", func(o *OpenSSH) []string {
			other := domain.NewID(domain.PrefixNode)
			line := "@cert-authority " + other + " " + h.hostCA.AuthorizedKey() + "\n"
			if err := os.WriteFile(o.KnownHosts, []byte(line), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{"-o", "HostKeyAlias=" + other}
		}, "Host key verification failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Args is built before the edit, so the edit's options go first.
			cmd, o := h.ssh(t, testContext(t), c, nil, "echo", "hi")
			if opts := tc.edit(o); opts != nil {
				cmd.Args = append(append([]string{cmd.Args[0]}, opts...), cmd.Args[1:]...)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if out, err := cmd.Output(); err == nil || len(out) > 0 {
				t.Fatalf("ssh to an unpinned host = %q, %v", out, err)
			}
			if !strings.Contains(stderr.String(), tc.refer) {
				t.Errorf("ssh stderr = %q, want %q", stderr.String(), tc.refer)
			}
		})
	}

	// Go's client pins the same way.
	if _, err := c.Dial(testContext(t), h.addr); err != nil {
		t.Fatalf("Dial with the right host CA: %v", err)
	}
	bad, err := NewClient(c.key, c.cert, wrongCA.PublicKey(), h.nodeID)
	if err != nil {
		t.Fatal(err)
	}
	if cl, err := bad.Dial(testContext(t), h.addr); err == nil {
		cl.Close()
		t.Fatal("Dial with another host CA succeeded")
	}
}

func TestGoClientRunsCommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	g := h.grant(t, nil)
	cl, err := h.client(t, g, time.Now()).Dial(testContext(t), h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sess, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	out, err := sess.Output("echo hi; echo err >&2; exit 3")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 3 || string(out) != "hi\n" || stderr.String() != "err\n" {
		t.Errorf("Output = %q, %q, %v; want hi, err and exit status 3", out, stderr.String(), err)
	}
}

func TestNoForwarding(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	g := h.grant(t, nil)
	c := h.client(t, g, time.Now())

	// OpenSSH: local (-W opens a direct-tcpip channel at once) and remote
	// forwarding.
	for _, opts := range [][]string{
		{"-W", "127.0.0.1:1"},
		// OpenSSH.Args clears forwardings: this option, first, wins.
		{"-o", "ClearAllForwardings=no", "-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:1"},
	} {
		cmd, _ := h.ssh(t, testContext(t), c, opts)
		// Args ends with the host: the forwarding options must be before it.
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err == nil {
			t.Errorf("ssh %v succeeded", opts)
		}
	}
	for _, kind := range []string{"direct-tcpip", "tcpip-forward"} {
		h.wait(t, kind+" refusal", func(e Event) bool {
			return e.Action == ActionRefused && e.Reason == ReasonPortForwarding && e.Detail == kind && e.GrantID == g.ID
		})
	}

	// Go's client: agent, X11, env, a subsystem, a raw channel.
	cl, err := c.Dial(testContext(t), h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sess, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, req := range []struct {
		name    string
		payload []byte
	}{
		{"auth-agent-req@openssh.com", nil},
		{"x11-req", ssh.Marshal(struct {
			Single        bool
			Proto, Cookie string
			Screen        uint32
		}{false, "MIT-MAGIC-COOKIE-1", "00", 0})},
		{"env", ssh.Marshal(struct{ Name, Value string }{"LD_PRELOAD", "/tmp/x.so"})},
		{"subsystem", ssh.Marshal(struct{ Name string }{"sftp"})},
	} {
		ok, err := sess.SendRequest(req.name, true, req.payload)
		if ok || err != nil {
			t.Errorf("request %s = %v, %v; want refused", req.name, ok, err)
		}
	}
	if _, _, err := cl.OpenChannel("direct-streamlocal@openssh.com", nil); err == nil {
		t.Error("a direct-streamlocal channel opened")
	}
	for _, reason := range []string{ReasonAgentForwarding, ReasonX11Forwarding, ReasonSubsystem} {
		h.wait(t, reason, func(e Event) bool { return e.Action == ActionRefused && e.Reason == reason })
	}
	// The session still works after the refusals.
	if out, err := sess.Output("echo still"); err != nil || string(out) != "still\n" {
		t.Errorf("Output after refusals = %q, %v", out, err)
	}
}

func TestRecordsTerminalSessions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	g := h.grant(t, nil)
	cmd, _ := h.ssh(t, testContext(t), h.client(t, g, time.Now()), []string{"-tt"})
	cmd.Stdin = strings.NewReader("echo rec-$((40+2))\nexit 0\n")
	cmd.Env = append(cmd.Env, "TERM=xterm-256color")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "rec-42") {
		t.Fatalf("ssh -tt = %q, %v; stderr:\n%s", out, err, stderr.String())
	}
	h.wait(t, "shell", func(e Event) bool { return e.Action == ActionShell && e.GrantID == g.ID })
	h.wait(t, "close", func(e Event) bool { return e.Action == ActionSessionClosed })

	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.recordings) != 1 {
		t.Fatalf("%d recordings, want 1", len(h.recordings))
	}
	r := h.recordings[0]
	if !r.closed || r.info.GrantID != g.ID || r.info.Serial != g.Serial || r.info.Channel != 1 {
		t.Errorf("recording %+v closed=%v", r.info, r.closed)
	}
	rd, err := asciicast.NewReader(bytes.NewReader(r.Bytes()))
	if err != nil {
		t.Fatalf("recording is not asciicast v2: %v\n%s", err, r.String())
	}
	if rd.Header.Version != 2 || rd.Header.Env["TERM"] != "xterm-256color" || rd.Header.Width != 80 || rd.Header.Height != 24 {
		t.Errorf("header = %+v", rd.Header)
	}
	var played strings.Builder
	var last time.Duration
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Time < last {
			t.Errorf("event at %v after one at %v", ev.Time, last)
		}
		last = ev.Time
		if ev.Type == asciicast.Output {
			played.WriteString(ev.Data)
		}
	}
	if !strings.Contains(played.String(), "rec-42") {
		t.Errorf("recording output %q lacks rec-42", played.String())
	}
}

// startSleeper runs, over OpenSSH, a command that prints its PID and
// sleeps, and returns the running ssh and the PID on the node.
func startSleeper(t *testing.T, h *harness, c *Client) (*exec.Cmd, int) {
	t.Helper()
	cmd, _ := h.ssh(t, testContext(t), c, nil, "echo $$; exec sleep 30")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("reading the pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	return cmd, pid
}

// waitGone waits up to a second for pid to exit.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// Gone, or a zombie of a process this test does not own.
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs: %s", pid, b)
		}
	}
}

// TestRevokeCutsLiveSession is not parallel: it checks that nothing leaks.
func TestRevokeCutsLiveSession(t *testing.T) {
	testenv.CheckGoroutines(t)
	h := newHarness(t)
	g := h.grant(t, nil)
	c := h.client(t, g, time.Now())
	cmd, pid := startSleeper(t, h, c)

	start := time.Now()
	if n := h.srv.Revoke(g.ID); n != 1 {
		t.Errorf("Revoke ended %d sessions, want 1", n)
	}
	err := cmd.Wait()
	if d := time.Since(start); d > time.Second {
		t.Errorf("ssh ended %v after the revocation, want within 1s", d)
	}
	if err == nil {
		t.Error("ssh exited 0 after the revocation")
	}
	waitGone(t, pid)
	closed := h.wait(t, "close", func(e Event) bool { return e.Action == ActionSessionClosed })
	if closed.Reason != CloseRevoked || closed.GrantID != g.ID {
		t.Errorf("close event = %+v", closed)
	}
	if got := h.srv.Sessions(); len(got) != 0 {
		t.Errorf("Sessions after revocation = %+v", got)
	}

	// The same certificate is refused from now on.
	cmd, _ = h.ssh(t, testContext(t), c, nil, "true")
	if err := cmd.Run(); err == nil {
		t.Error("the revoked certificate logged in again")
	}
	h.wait(t, "revoked refusal", func(e Event) bool { return e.Action == ActionRefused && e.Reason == ReasonRevoked })
}

func TestSessionEndsWithCertificate(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// Certificate times are whole seconds: the grant ends 2 to 3 s from now.
	expires := time.Now().Truncate(time.Second).Add(3 * time.Second)
	g := h.grant(t, func(g *domain.OpsGrant) { g.ExpiresAt = expires })
	cmd, pid := startSleeper(t, h, h.client(t, g, time.Now()))
	if s := h.srv.Sessions(); len(s) != 1 || s[0].GrantID != g.ID {
		t.Errorf("Sessions = %+v", s)
	}
	_ = cmd.Wait()
	if late := time.Since(expires); late < 0 || late > time.Second {
		t.Errorf("session ended %v after the certificate's ValidBefore, want within [0, 1s]", late)
	}
	waitGone(t, pid)
	closed := h.wait(t, "close", func(e Event) bool { return e.Action == ActionSessionClosed })
	if closed.Reason != CloseExpired {
		t.Errorf("close reason = %q, want %q", closed.Reason, CloseExpired)
	}
}

func TestShutdownEndsSessions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	g := h.grant(t, nil)
	cmd, pid := startSleeper(t, h, h.client(t, g, time.Now()))
	h.stop()
	if err := cmd.Wait(); err == nil {
		t.Error("ssh exited 0 after the server stopped")
	}
	waitGone(t, pid)
	closed := h.wait(t, "close", func(e Event) bool { return e.Action == ActionSessionClosed })
	if closed.Reason != CloseShutdown {
		t.Errorf("close reason = %q, want %q", closed.Reason, CloseShutdown)
	}
}

// A connection that never authenticates is audited too.
func TestHandshakeRefusalIsAudited(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, c) // the server closes it
	c.Close()
	e := h.wait(t, "handshake refusal", func(e Event) bool { return e.Action == ActionRefused && e.Reason == ReasonHandshake })
	if e.Remote == "" || e.Detail == "" {
		t.Errorf("refusal = %+v", e)
	}
}

// A terminal session runs only while it is recorded.
func TestRecordingFailureEndsSession(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"open", "write"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.mu.Lock()
			h.recordFault = fault
			h.mu.Unlock()
			g := h.grant(t, nil)
			cl, err := h.client(t, g, time.Now()).Dial(testContext(t), h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			sess, err := cl.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
				t.Fatal(err)
			}
			stdin, err := sess.StdinPipe() // held open: only the server can end the shell
			if err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			err = sess.Start("echo started; exec sleep 30")
			if fault == "open" {
				if err == nil {
					t.Fatal("an unrecordable shell started")
				}
				h.wait(t, "recording refusal", func(e Event) bool { return e.Action == ActionRefused && e.Reason == ReasonRecording })
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() { waited <- sess.Wait() }()
			select {
			case err := <-waited:
				if err == nil {
					t.Error("the session ended with status 0")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the session still runs with its recording failing")
			}
		})
	}
}
