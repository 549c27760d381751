package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/ops"
)

// fakeOpsSource answers grant checks from live and counts them.
type fakeOpsSource struct {
	opsSourceStub
	live   map[string]bool
	checks int
}

type opsSourceStub struct{}

func (opsSourceStub) OpsHostCert(context.Context, string, apitype.OpsHostCertRequest) (apitype.OpsHostCert, error) {
	return apitype.OpsHostCert{}, nil
}
func (opsSourceStub) OpsEvents(context.Context, string, apitype.OpsEvents) error { return nil }
func (opsSourceStub) OpsRecording(context.Context, string, apitype.OpsRecordingUpload) error {
	return nil
}

func (f *fakeOpsSource) OpsGrantLive(_ context.Context, _, grant, _ string) (bool, error) {
	f.checks++
	return f.live[grant], nil
}

func newTestEndpoint(src OpsSource) *opsEndpoint {
	m := &opsEndpoints{a: newAgent(Config{Host: "h1"}, platform{}), src: src, eps: map[string]*opsEndpoint{},
		events: make(chan apitype.OpsEvent, 1), recs: make(chan apitype.OpsRecordingUpload, 1)}
	return &opsEndpoint{m: m, node: "node-a", kick: make(chan struct{}, 1),
		grants: map[string]bool{}, ended: map[string]bool{}, revoked: map[uint64]bool{}}
}

// TestOpsEndpointGrants: the desired state's grants are live; a grant
// newer than it is asked of the control plane; one that left it is dead
// for good without asking; revoked serials stay revoked.
func TestOpsEndpointGrants(t *testing.T) {
	src := &fakeOpsSource{live: map[string]bool{"grant-new": true, "grant-a": true}}
	ep := newTestEndpoint(src)
	ctx := context.Background()
	ep.update(apitype.NodeDesired{NodeID: "node-a", Ops: &apitype.NodeOps{Grants: []string{"grant-a"}, RevokedSerials: []uint64{7}}})
	if !ep.granted(ctx, "grant-a") || src.checks != 0 {
		t.Errorf("grant in the desired state: granted=%v after %d checks, want true without asking", ep.granted(ctx, "grant-a"), src.checks)
	}
	if !ep.granted(ctx, "grant-new") || ep.granted(ctx, "grant-x") || src.checks != 2 {
		t.Errorf("newer grants: want grant-new live and grant-x not, by asking (%d checks)", src.checks)
	}
	ep.update(apitype.NodeDesired{NodeID: "node-a", Ops: &apitype.NodeOps{}})
	before := src.checks
	if ep.granted(ctx, "grant-a") || src.checks != before {
		t.Errorf("a grant that left the desired state is granted or asked about (%d checks)", src.checks-before)
	}
	if !ep.isRevoked(7) || ep.isRevoked(8) {
		t.Errorf("revoked serials: 7=%v 8=%v, want only 7", ep.isRevoked(7), ep.isRevoked(8))
	}
}

// TestPsqlNeedsSupport: moat-psql runs nothing without an active support
// role (none, or past its expiry), and says why.
func TestPsqlNeedsSupport(t *testing.T) {
	ep := newTestEndpoint(&fakeOpsSource{})
	r := &nsRunner{ep: ep, ns: "moat-test-none"}
	for name, sup := range map[string]*apitype.NodeSupport{
		"none":    nil,
		"expired": {GrantID: "sgr-x", Role: "moat_support_x", ExpiresAt: time.Now().Add(-time.Second)},
	} {
		ep.update(apitype.NodeDesired{NodeID: "node-a", Ops: &apitype.NodeOps{Support: sup}})
		var stderr bytes.Buffer
		code, err := r.Run(context.Background(), &ops.Command{Line: domain.OpsPsqlCommand, Stdin: strings.NewReader(""), Stdout: &stderr, Stderr: &stderr})
		if err != nil || code != 1 || !strings.Contains(stderr.String(), "no active support grant") {
			t.Errorf("%s: moat-psql = %d, %v, %q; want 1 and the reason", name, code, err, stderr.String())
		}
	}
}

// TestHostSignerSwap: a renewed host certificate is what the endpoint
// presents from then on, signing with the same key.
func TestHostSignerSwap(t *testing.T) {
	ca, err := ops.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	key, err := ops.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	signerFor := func(ttl time.Duration) *hostSigner {
		c, err := ca.IssueHost(key.PublicKey(), "node-abcdefghijklmnop", nil, time.Now(), ttl)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ssh.NewCertSigner(c, key)
		if err != nil {
			t.Fatal(err)
		}
		hs := &hostSigner{cert: c}
		hs.cur.Store(&s)
		return hs
	}
	hs, fresh := signerFor(time.Hour), signerFor(48*time.Hour)
	hs.swap(fresh)
	got := hs.PublicKey().(*ssh.Certificate)
	if got.Serial != fresh.certificate().Serial || hs.certificate() != fresh.certificate() {
		t.Errorf("after the swap the endpoint presents serial %d, want the renewed %d", got.Serial, fresh.certificate().Serial)
	}
	sig, err := hs.Sign(rand.Reader, []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify([]byte("data"), sig); err != nil {
		t.Errorf("signature does not verify against the presented certificate: %v", err)
	}
}

// recordingSource records the event batches it takes and refuses those
// naming a node it does not know, as the control plane does.
type recordingSource struct {
	opsSourceStub
	refusedBatch chan struct{}
	got          chan []apitype.OpsEvent
}

func (*recordingSource) OpsGrantLive(context.Context, string, string, string) (bool, error) {
	return false, nil
}

func (r *recordingSource) OpsEvents(_ context.Context, _ string, e apitype.OpsEvents) error {
	for _, ev := range e.Events {
		if ev.NodeID != "node-a" {
			r.refusedBatch <- struct{}{}
			return &client.Error{Problem: apitype.Problem{Status: 400, Code: "not_found"}}
		}
	}
	r.got <- e.Events
	return nil
}

// TestRefusedBatchKeepsGoodEvents: a batch refused for one bad event is
// sent again event by event: only the bad one is dropped.
func TestRefusedBatchKeepsGoodEvents(t *testing.T) {
	src := &recordingSource{refusedBatch: make(chan struct{}, 4), got: make(chan []apitype.OpsEvent, 4)}
	ep := newTestEndpoint(src)
	b := apitype.OpsEvents{Events: []apitype.OpsEvent{
		{NodeID: "node-a", Action: ops.ActionExec, Command: "uptime"},
		{NodeID: "node-gone", Action: ops.ActionExec, Command: "ls"},
		{NodeID: "node-a", Action: ops.ActionExec, Command: "df"},
	}}
	if !ep.m.post(context.Background(), b) {
		t.Fatal("post of a batch with a refused event is not done with")
	}
	var got []string
	for len(src.got) > 0 {
		for _, e := range <-src.got {
			got = append(got, e.Command)
		}
	}
	if strings.Join(got, ",") != "uptime,df" || len(src.refusedBatch) != 2 {
		t.Errorf("taken %q after %d refusals, want uptime and df after 2 (the batch, then ls alone)", got, len(src.refusedBatch))
	}
}

// TestRefusedEventsDoNotBlock: a batch the control plane refuses for good
// is dropped, and the events after it still go out.
func TestRefusedEventsDoNotBlock(t *testing.T) {
	src := &recordingSource{refusedBatch: make(chan struct{}, 4), got: make(chan []apitype.OpsEvent, 4)}
	ep := newTestEndpoint(src)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		ep.m.send(ctx)
	}()
	ep.m.events <- apitype.OpsEvent{NodeID: "node-gone", Action: ops.ActionExec}
	<-src.refusedBatch
	ep.m.events <- apitype.OpsEvent{NodeID: "node-a", Action: ops.ActionExec, Command: "uptime"}
	select {
	case evs := <-src.got:
		if len(evs) != 1 || evs[0].Command != "uptime" {
			t.Errorf("sent %+v, want the later event alone", evs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event after a refused batch was never sent")
	}
	cancel()
	<-done
}

// spoolSource is a control plane for the spool test: it keeps every batch
// and recording it is sent and, while down, answers with a network error
// (after keeping the batch: the answer is what is lost).
type spoolSource struct {
	opsSourceStub
	mu      sync.Mutex
	down    bool
	batches []apitype.OpsEvents
	recs    []apitype.OpsRecordingUpload
	changed chan struct{}
}

func (*spoolSource) OpsGrantLive(context.Context, string, string, string) (bool, error) {
	return false, nil
}

func (s *spoolSource) OpsEvents(_ context.Context, _ string, e apitype.OpsEvents) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, e)
	s.notify()
	if s.down {
		return errors.New("read: connection reset by peer")
	}
	return nil
}

func (s *spoolSource) OpsRecording(_ context.Context, _ string, r apitype.OpsRecordingUpload) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, r)
	s.notify()
	if s.down {
		return errors.New("read: connection reset by peer")
	}
	return nil
}

func (s *spoolSource) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// await waits until ok holds of what the source was sent.
func (s *spoolSource) await(t *testing.T, what string, ok func([]apitype.OpsEvents, []apitype.OpsRecordingUpload) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		done := ok(s.batches, s.recs)
		s.mu.Unlock()
		if done {
			return
		}
		select {
		case <-s.changed:
		case <-deadline:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("%s: sent %+v and %d recordings", what, s.batches, len(s.recs))
		}
	}
}

// runSender runs m's sender until the returned stop is called.
func runSender(m *opsEndpoints) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.send(ctx)
	}()
	return func() { cancel(); <-done }
}

// TestSpoolSurvivesAgentCrash: events and a recording of an agent that
// crashes while the control plane does not answer are sent by the next
// agent on the same data directory, the events with the spool's ID and
// their sequence numbers (the control plane's deduplication key), and
// leave the spool once taken.
func TestSpoolSurvivesAgentCrash(t *testing.T) {
	dir := t.TempDir()
	spooled := func(src OpsSource) *opsEndpoint {
		ep := newTestEndpoint(src)
		sp, err := ops.OpenSpool(dir)
		if err != nil {
			t.Fatal(err)
		}
		ep.m.kick = make(chan struct{}, 1)
		if err := ep.m.useSpool(sp, time.Now()); err != nil {
			t.Fatal(err)
		}
		return ep
	}
	down := &spoolSource{down: true, changed: make(chan struct{}, 1)}
	first := spooled(down)
	stop := runSender(first.m)
	opened := time.Now().Add(-time.Minute)
	first.audit(ops.Event{Time: opened, Action: ops.ActionSessionOpened, Session: "ses-0123456789abcdef", GrantID: "grant-a", Serial: 7})
	// A session that closed before the crash is not closed again.
	first.audit(ops.Event{Action: ops.ActionSessionOpened, Session: "ses-aaaaaaaaaaaaaaaa", GrantID: "grant-a"})
	first.audit(ops.Event{Action: ops.ActionSessionClosed, Session: "ses-aaaaaaaaaaaaaaaa", GrantID: "grant-a", Reason: ops.CloseClient})
	first.audit(ops.Event{Action: ops.ActionExec, Session: "ses-0123456789abcdef", GrantID: "grant-a", Command: "uptime"})
	w, err := first.record(ops.Recording{Session: "ses-0123456789abcdef", Channel: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, "{\"version\":2}\n[0.5,\"o\",\"typed before the crash\"]\n"); err != nil {
		t.Fatal(err)
	}
	// The control plane got the batch, but its answer was lost.
	down.await(t, "the first agent's batch", func(bs []apitype.OpsEvents, _ []apitype.OpsRecordingUpload) bool {
		return len(bs) > 0 && len(bs[len(bs)-1].Events) == 4
	})
	stop() // the shutdown flush fails too; then the process is gone (w never closed)

	up := &spoolSource{changed: make(chan struct{}, 1)}
	second := spooled(up)
	if second.m.spool.ID() != first.m.spool.ID() {
		t.Fatalf("spool ID changed across the restart: %s, %s", first.m.spool.ID(), second.m.spool.ID())
	}
	stop = runSender(second.m)
	up.await(t, "the spooled events and recording", func(bs []apitype.OpsEvents, rs []apitype.OpsRecordingUpload) bool {
		return len(bs) > 0 && len(rs) > 0
	})
	up.mu.Lock()
	b, r := up.batches[0], up.recs[0]
	up.mu.Unlock()
	var got []string
	for _, e := range b.Events {
		got = append(got, fmt.Sprintf("%d:%s:%s:%s:%s%s", e.Seq, e.NodeID, e.Session, e.Action, e.Reason, e.Command))
	}
	want := []string{
		"1:node-a:ses-0123456789abcdef:" + ops.ActionSessionOpened + ":",
		"2:node-a:ses-aaaaaaaaaaaaaaaa:" + ops.ActionSessionOpened + ":",
		"3:node-a:ses-aaaaaaaaaaaaaaaa:" + ops.ActionSessionClosed + ":" + ops.CloseClient,
		"4:node-a:ses-0123456789abcdef:" + ops.ActionExec + ":uptime",
		// The session the crash cut is closed by the next agent, as lost.
		"5:node-a:ses-0123456789abcdef:" + ops.ActionSessionClosed + ":" + ops.CloseLost,
	}
	if b.Spool != first.m.spool.ID() || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("after the crash sent spool %q events\n%s\nwant spool %q events\n%s", b.Spool, strings.Join(got, "\n"), first.m.spool.ID(), strings.Join(want, "\n"))
	}
	if lost := b.Events[len(b.Events)-1]; lost.GrantID != "grant-a" || lost.Serial != 7 || lost.DurationMS < time.Minute.Milliseconds() {
		t.Errorf("lost session's close = %+v, want its grant, serial and the time since it opened", lost)
	}
	if r.NodeID != "node-a" || r.SessionID != "ses-0123456789abcdef" || r.Channel != 1 || !strings.Contains(r.Cast, "typed before the crash") {
		t.Errorf("after the crash sent recording %+v", r)
	}
	// Taken: nothing is left to send once the sender has stopped.
	stop()
	es, err := second.m.spool.Pending(10)
	rs, rerr := second.m.spool.Recordings()
	if err != nil || rerr != nil || len(es) != 0 || len(rs) != 0 {
		t.Errorf("spool after sending: %d events, %d recordings (%v, %v); want none", len(es), len(rs), err, rerr)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.batches) != 1 || len(up.recs) != 1 {
		t.Errorf("sent %d batches and %d recordings, want each once", len(up.batches), len(up.recs))
	}
}
