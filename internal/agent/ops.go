package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/vishvananda/netns"
	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/ops"
	scram "github.com/moatdb/moat/internal/password"
	"github.com/moatdb/moat/internal/postgres"
)

// Operator access on the nodes (design 0012). With Config.OpsListen the
// agent runs an ops.Server per node: it listens on the operator path (an
// address of the agent's host, loopback for moat up, never in the node's
// namespace, whose nftables admit nothing but PostgreSQL from its allowed
// sources), presents a host certificate the control plane signed for a key
// made in memory, accepts the certificates of the node's live grants, and
// runs the operators' shells inside the node's network namespace as the
// dedicated operator account. Its audit events and recordings go to the
// control plane through a spool on disk (Config.DataDir/ops-spool), so
// that a crash of the agent loses none; a grant that leaves the desired
// state (revoked, expired) ends its sessions at once. While the node's project has an active support
// grant, the agent keeps its temporary PostgreSQL role (a member of
// postgres.SupportGroup with the grant's privileges) on the primary, and
// drops it and ends its sessions when the grant ends; `moat-psql` sessions
// log in as it.

// OpsSource is the control plane's side of the nodes' operator endpoints;
// APISource is one.
type OpsSource interface {
	OpsHostCert(ctx context.Context, host string, r apitype.OpsHostCertRequest) (apitype.OpsHostCert, error)
	OpsGrantLive(ctx context.Context, host, grant, node string) (bool, error)
	OpsEvents(ctx context.Context, host string, e apitype.OpsEvents) error
	OpsRecording(ctx context.Context, host string, r apitype.OpsRecordingUpload) error
}

// OpsHostCert posts to /v1/hosts/{host}/ops/host-cert.
func (s APISource) OpsHostCert(ctx context.Context, host string, r apitype.OpsHostCertRequest) (apitype.OpsHostCert, error) {
	return s.Client.OpsHostCert(ctx, host, r)
}

// OpsGrantLive asks GET /v1/hosts/{host}/ops/grants/{id}.
func (s APISource) OpsGrantLive(ctx context.Context, host, grant, node string) (bool, error) {
	return s.Client.OpsGrantLive(ctx, host, grant, node)
}

// OpsEvents posts to /v1/hosts/{host}/ops/events.
func (s APISource) OpsEvents(ctx context.Context, host string, e apitype.OpsEvents) error {
	return s.Client.OpsEvents(ctx, host, e)
}

// OpsRecording posts to /v1/hosts/{host}/ops/recordings.
func (s APISource) OpsRecording(ctx context.Context, host string, r apitype.OpsRecordingUpload) error {
	return s.Client.OpsRecording(ctx, host, r)
}

// DefaultOpsUser is the operator account when Config.OpsUser is "".
const DefaultOpsUser = domain.OpsPrincipal

// Limits of the operator endpoints' queues and recordings.
const (
	opsEventQueue   = 4096
	opsRecordQueue  = 64
	opsMaxRecording = 4 << 20
	opsGrantCheck   = 5 * time.Second
)

// opsSpoolDir is the endpoints' spool (ops.Spool), under Config.DataDir.
const opsSpoolDir = "ops-spool"

// opsEndpoints are the agent's nodes' operator endpoints.
type opsEndpoints struct {
	a   *Agent
	src OpsSource

	// spool holds the events and recordings until the control plane
	// has them (nil without a data directory: events and recordings
	// wait in memory, in events and recs).
	spool  *ops.Spool
	kick   chan struct{}
	events chan apitype.OpsEvent
	recs   chan apitype.OpsRecordingUpload

	mu      sync.Mutex
	eps     map[string]*opsEndpoint
	started bool
	epWG    sync.WaitGroup
	cred    *syscall.Credential
	bin     string // the PostgreSQL binaries
}

func newOpsEndpoints(a *Agent) (*opsEndpoints, error) {
	src, ok := a.cfg.Source.(OpsSource)
	if !ok {
		return nil, fmt.Errorf("agent config: OpsListen is set but the source (%T) does not serve operator endpoints", a.cfg.Source)
	}
	if net.ParseIP(a.cfg.OpsListen) == nil {
		return nil, fmt.Errorf("agent config: OpsListen %q is not an IP address", a.cfg.OpsListen)
	}
	m := &opsEndpoints{a: a, src: src, eps: map[string]*opsEndpoint{}, kick: make(chan struct{}, 1),
		events: make(chan apitype.OpsEvent, opsEventQueue), recs: make(chan apitype.OpsRecordingUpload, opsRecordQueue)}
	if a.cfg.DataDir != "" {
		if err := mkdir0711(a.cfg.DataDir); err != nil {
			return nil, fmt.Errorf("agent config: %w", err)
		}
		sp, err := ops.OpenSpool(filepath.Join(a.cfg.DataDir, opsSpoolDir))
		if err != nil {
			return nil, err
		}
		if err := m.useSpool(sp, time.Now()); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// opsEndpoint is one node's endpoint.
type opsEndpoint struct {
	m    *opsEndpoints
	node string
	stop context.CancelFunc
	kick chan struct{}

	mu      sync.Mutex
	want    apitype.NodeDesired
	grants  map[string]bool
	ended   map[string]bool // grants that left the desired state
	revoked map[uint64]bool
	srv     *ops.Server
}

// sync starts, updates and stops the endpoints for desired state d.
func (m *opsEndpoints) sync(ctx context.Context, d apitype.HostDesired) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		m.started = true
		m.a.wg.Add(1)
		go func() {
			defer m.a.wg.Done()
			m.send(ctx)
		}()
	}
	seen := map[string]bool{}
	for _, nd := range d.Nodes {
		if nd.Ops == nil || nd.State == stateDeleting || nd.Namespace == "" {
			continue
		}
		seen[nd.NodeID] = true
		ep := m.eps[nd.NodeID]
		if ep == nil {
			epCtx, cancel := context.WithCancel(ctx)
			ep = &opsEndpoint{m: m, node: nd.NodeID, stop: cancel, kick: make(chan struct{}, 1),
				grants: map[string]bool{}, ended: map[string]bool{}, revoked: map[uint64]bool{}}
			m.eps[nd.NodeID] = ep
			m.epWG.Add(1)
			m.a.wg.Add(1)
			go func() {
				defer m.a.wg.Done()
				defer m.epWG.Done()
				ep.run(epCtx, nd)
			}()
		}
		ep.update(nd)
	}
	for id, ep := range m.eps {
		if !seen[id] {
			ep.stop()
			delete(m.eps, id)
		}
	}
}

// update gives the endpoint its node's desired state: grants that left it
// end their sessions at once, newly revoked serials too.
func (ep *opsEndpoint) update(nd apitype.NodeDesired) {
	ep.mu.Lock()
	grants := map[string]bool{}
	for _, g := range nd.Ops.Grants {
		grants[g] = true
	}
	var endGrants []string
	for g := range ep.grants {
		if !grants[g] {
			endGrants = append(endGrants, g)
			ep.ended[g] = true
		}
	}
	var endSerials []uint64
	for _, s := range nd.Ops.RevokedSerials {
		if !ep.revoked[s] {
			ep.revoked[s] = true
			endSerials = append(endSerials, s)
		}
	}
	ep.want, ep.grants = nd, grants
	srv := ep.srv
	ep.mu.Unlock()
	if srv != nil {
		for _, g := range endGrants {
			if n := srv.Revoke(g); n > 0 {
				ep.m.a.log.Info("operator sessions ended: grant ended", "node", ep.node, "grant", g, "sessions", n)
			}
		}
		for _, s := range endSerials {
			srv.RevokeSerial(s)
		}
	}
	select {
	case ep.kick <- struct{}{}:
	default:
	}
}

// granted reports whether grant is live for the node: in its desired
// state, or (a grant newer than it) by the control plane's answer.
func (ep *opsEndpoint) granted(ctx context.Context, grant string) bool {
	ep.mu.Lock()
	live, ended := ep.grants[grant], ep.ended[grant]
	ep.mu.Unlock()
	if live || ended {
		return live
	}
	ctx, cancel := context.WithTimeout(ctx, opsGrantCheck)
	defer cancel()
	live, err := ep.m.src.OpsGrantLive(ctx, ep.m.a.cfg.Host, grant, ep.node)
	if err != nil {
		ep.m.a.log.Warn("check operator grant", "node", ep.node, "grant", grant, "err", err)
		return false
	}
	return live
}

func (ep *opsEndpoint) isRevoked(serial uint64) bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return ep.revoked[serial]
}

// support returns the node's support role while its grant lasts at now.
func (ep *opsEndpoint) support(now time.Time) (*apitype.NodeSupport, apitype.NodeDesired) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	s := ep.want.Ops.Support
	if s == nil || !now.Before(s.ExpiresAt) {
		return nil, ep.want
	}
	return s, ep.want
}

// run serves the endpoint until ctx ends: a host key made in memory, a
// listener on the operator path, the host certificate, then the server;
// beside it the support role's upkeep.
func (ep *opsEndpoint) run(ctx context.Context, nd apitype.NodeDesired) {
	log := ep.m.a.log.With("node", ep.node)
	cred, err := ep.m.account()
	if err != nil {
		log.Error("operator endpoint not started: no operator account", "err", err)
		return
	}
	key, err := ops.NewKey()
	if err != nil {
		log.Error("operator endpoint not started", "err", err)
		return
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ep.m.a.cfg.OpsListen, "0"))
	if err != nil {
		log.Error("operator endpoint not started", "err", err)
		return
	}
	defer ln.Close()
	req := apitype.OpsHostCertRequest{NodeID: ep.node, PublicKey: key.AuthorizedKey(), Endpoint: ln.Addr().String()}
	hs, userCA, err := ep.register(ctx, key, req)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("operator endpoint not started", "err", err)
		}
		return
	}
	srv, err := ops.New(ops.Config{
		HostSigner: hs,
		UserCA:     userCA,
		Granted:    func(g string) bool { return ep.granted(ctx, g) },
		Revoked:    ep.isRevoked,
		Audit:      ep.audit,
		Runner:     &nsRunner{ep: ep, ns: nd.Namespace, cred: cred},
		Record:     ep.record,
		Logger:     log.With("component", "ops"),
	})
	if err != nil {
		log.Error("operator endpoint not started", "err", err)
		return
	}
	ep.mu.Lock()
	ep.srv = srv
	ep.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		ep.keepSupport(ctx)
	}()
	go func() {
		defer wg.Done()
		ep.renew(ctx, key, req, hs)
	}()
	log.Info("operator endpoint listening", "address", ln.Addr().String())
	if err := srv.Serve(ctx, ln); err != nil {
		log.Error("operator endpoint", "err", err)
	}
	wg.Wait()
}

// register registers the endpoint with the control plane, retrying until
// it answers or ctx ends, and returns the host key with its certificate
// and the operators' CA.
func (ep *opsEndpoint) register(ctx context.Context, key *ops.Key, req apitype.OpsHostCertRequest) (*hostSigner, ssh.PublicKey, error) {
	var hc apitype.OpsHostCert
	var err error
	for backoff := pollBackoffMin; ; backoff = min(backoff*2, retryMax) {
		if hc, err = ep.m.src.OpsHostCert(ctx, ep.m.a.cfg.Host, req); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		ep.m.a.log.Warn("register operator endpoint", "node", ep.node, "err", err)
		sleep(ctx, backoff)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hc.Certificate))
	if err != nil {
		return nil, nil, fmt.Errorf("host certificate: %w", err)
	}
	cert, ok := pk.(*ssh.Certificate)
	if !ok {
		return nil, nil, errors.New("host certificate: not a certificate")
	}
	signer, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		return nil, nil, fmt.Errorf("host certificate: %w", err)
	}
	userCA, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hc.UserCA))
	if err != nil {
		return nil, nil, fmt.Errorf("operators' CA: %w", err)
	}
	hs := &hostSigner{cert: cert}
	hs.cur.Store(&signer)
	return hs, userCA, nil
}

// renew registers the endpoint again when two thirds of its host
// certificate's remaining validity have passed, and swaps the new one in.
func (ep *opsEndpoint) renew(ctx context.Context, key *ops.Key, req apitype.OpsHostCertRequest, hs *hostSigner) {
	for {
		// Two thirds of what is left, and not more often than a minute.
		left := time.Until(time.Unix(int64(hs.certificate().ValidBefore), 0))
		sleep(ctx, max(left*2/3, time.Minute))
		if ctx.Err() != nil {
			return
		}
		fresh, _, err := ep.register(ctx, key, req)
		if err != nil {
			if ctx.Err() == nil {
				ep.m.a.log.Error("renew the operator endpoint's host certificate", "node", ep.node, "err", err)
			}
			return
		}
		hs.swap(fresh)
		ep.m.a.log.Info("operator endpoint's host certificate renewed", "node", ep.node)
	}
}

// hostSigner is the endpoint's host key with its current host
// certificate, swapped when renewed (the server reads it per connection).
type hostSigner struct {
	mu   sync.Mutex
	cert *ssh.Certificate
	cur  atomic.Pointer[ssh.Signer]
}

func (h *hostSigner) PublicKey() ssh.PublicKey { return (*h.cur.Load()).PublicKey() }

func (h *hostSigner) Sign(r io.Reader, data []byte) (*ssh.Signature, error) {
	return (*h.cur.Load()).Sign(r, data)
}

func (h *hostSigner) certificate() *ssh.Certificate {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cert
}

func (h *hostSigner) swap(fresh *hostSigner) {
	h.mu.Lock()
	h.cert = fresh.certificate()
	h.mu.Unlock()
	h.cur.Store(fresh.cur.Load())
}

// audit writes an endpoint event to the spool (memory when there is none,
// or when writing fails) and wakes the sender.
func (ep *opsEndpoint) audit(e ops.Event) {
	ev := apitype.OpsEvent{NodeID: ep.node, Time: e.Time, Action: e.Action, Reason: e.Reason, Detail: e.Detail, Session: e.Session,
		Remote: e.Remote, User: e.User, GrantID: e.GrantID, Serial: e.Serial, Command: e.Command,
		DurationMS: e.Duration.Milliseconds(), BytesIn: e.BytesIn, BytesOut: e.BytesOut}
	m := ep.m
	if m.spool != nil {
		b, err := json.Marshal(ev)
		if err == nil {
			_, err = m.spool.Append(b)
		}
		if err == nil {
			// A session's mark lives from its opening to its close event,
			// which a crash would leave unsent: the next start closes it.
			switch e.Action {
			case ops.ActionSessionOpened:
				err = m.spool.MarkOpen(e.Session, b)
			case ops.ActionSessionClosed:
				err = m.spool.MarkClosed(e.Session)
			}
			if err != nil {
				m.a.log.Error("operator session mark", "node", ep.node, "session", e.Session, "err", err)
			}
			m.wake()
			return
		}
		m.a.log.Error("operator audit event not spooled; kept in memory", "node", ep.node, "action", e.Action, "err", err)
	}
	select {
	case m.events <- ev:
	default:
		m.a.log.Error("operator audit event dropped: queue full", "node", ep.node, "action", e.Action, "session", e.Session)
	}
}

// useSpool makes sp the endpoints' spool. The sessions a crash left open
// in it (no close event) are closed at now, as lost: the time until now is
// an upper bound of their duration, their bytes are unknown.
func (m *opsEndpoints) useSpool(sp *ops.Spool, now time.Time) error {
	marks, err := sp.OpenMarks()
	if err != nil {
		return err
	}
	for session, b := range marks {
		var open apitype.OpsEvent
		if err := json.Unmarshal(b, &open); err != nil {
			m.a.log.Error("operator spool: unreadable session mark dropped", "session", session, "err", err)
		} else {
			lost := apitype.OpsEvent{NodeID: open.NodeID, Time: now.UTC(), Action: ops.ActionSessionClosed, Reason: ops.CloseLost,
				Session: session, Remote: open.Remote, User: open.User, GrantID: open.GrantID, Serial: open.Serial,
				DurationMS: now.Sub(open.Time).Milliseconds(),
				Detail:     "the endpoint stopped without closing the session (agent crash): duration until the agent restarted, bytes unknown"}
			cb, err := json.Marshal(lost)
			if err != nil {
				return err
			}
			if _, err := sp.Append(cb); err != nil {
				return err
			}
			m.a.log.Warn("operator session closed as lost after a restart", "node", open.NodeID, "session", session, "grant", open.GrantID)
		}
		if err := sp.MarkClosed(session); err != nil {
			return err
		}
	}
	m.spool = sp
	return nil
}

// wake tells the sender that the spool has more.
func (m *opsEndpoints) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// record returns the destination of a terminal session's recording: a
// file in the spool (a bounded buffer without one), sent to the control
// plane when the channel ends.
func (ep *opsEndpoint) record(r ops.Recording) (io.WriteCloser, error) {
	w := &recording{ep: ep, r: r}
	if ep.m.spool != nil {
		f, err := ep.m.spool.CreateRecording(ep.node, r.Session, r.Channel)
		if err != nil {
			return nil, err
		}
		w.file = f
	}
	return w, nil
}

type recording struct {
	ep   *opsEndpoint
	r    ops.Recording
	file *ops.SpoolRecording // nil: buf
	buf  bytes.Buffer
	n    int
}

var errRecordingFull = fmt.Errorf("recording larger than %d bytes", opsMaxRecording)

func (w *recording) Write(p []byte) (int, error) {
	if w.n+len(p) > opsMaxRecording {
		return 0, errRecordingFull
	}
	w.n += len(p)
	if w.file != nil {
		return w.file.Write(p)
	}
	return w.buf.Write(p)
}

func (w *recording) Close() error {
	if w.file != nil {
		if err := w.file.Close(); err != nil {
			return err
		}
		w.ep.m.wake()
		return nil
	}
	up := apitype.OpsRecordingUpload{NodeID: w.ep.node, SessionID: w.r.Session, Channel: w.r.Channel, Cast: w.buf.String()}
	select {
	case w.ep.m.recs <- up:
		return nil
	default:
		return errors.New("recording queue full")
	}
}

// opsBatch bounds the events of one request (the control plane takes
// up to 1000).
const opsBatch = 500

// send posts the events, then the recordings (whose sessions the events
// create): those in memory, then the spool's, retrying until they are
// taken; when ctx ends it waits for the endpoints to stop and flushes what
// they left. What it cannot send stays in the spool for the next start.
func (m *opsEndpoints) send(ctx context.Context) {
	var evs []apitype.OpsEvent
	var recs []apitype.OpsRecordingUpload
	backoff := pollBackoffMin
	flush := func(ctx context.Context) bool {
		for len(evs) > 0 {
			n := min(len(evs), opsBatch)
			if !m.post(ctx, apitype.OpsEvents{Events: evs[:n]}) {
				return false
			}
			evs = evs[n:]
		}
		if !m.flushSpool(ctx) {
			return false
		}
		for len(recs) > 0 {
			if !m.upload(ctx, recs[0]) {
				return false
			}
			recs = recs[1:]
		}
		return m.flushRecordings(ctx)
	}
	drain := func() {
		for {
			select {
			case e := <-m.events:
				evs = append(evs, e)
			case r := <-m.recs:
				recs = append(recs, r)
			default:
				return
			}
		}
	}
	// What a previous run left in the spool goes first.
	var retry <-chan time.Time
	if m.spool != nil {
		m.wake()
	}
	for {
		select {
		case <-ctx.Done():
			m.epWG.Wait()
			drain()
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if !flush(fctx) {
				m.a.log.Error("operator audit events not sent at shutdown", "events", len(evs), "recordings", len(recs), "spooled", m.spool != nil)
			}
			cancel()
			return
		case e := <-m.events:
			evs = append(evs, e)
		case r := <-m.recs:
			recs = append(recs, r)
		case <-m.kick:
		case <-retry:
		}
		drain()
		if flush(ctx) {
			backoff, retry = pollBackoffMin, nil
			continue
		}
		retry = time.After(backoff)
		backoff = min(backoff*2, pollBackoffMax)
	}
}

// post sends one batch of events and reports whether it is done with
// (taken, or refused for good and dropped). The control plane refuses a
// whole batch for one bad event (a node no longer on this host, say): the
// events of a refused batch are sent one by one, so that only the bad ones
// are dropped.
func (m *opsEndpoints) post(ctx context.Context, b apitype.OpsEvents) bool {
	err := m.src.OpsEvents(ctx, m.a.cfg.Host, b)
	if refused(err) && len(b.Events) > 1 {
		for i := range b.Events {
			if !m.post(ctx, apitype.OpsEvents{Spool: b.Spool, Events: b.Events[i : i+1]}) {
				return false
			}
		}
		return true
	}
	if refused(err) {
		// Retrying cannot help: the event would block every later one.
		m.a.log.Error("operator audit event refused by the control plane; dropped", "err", err,
			"node", b.Events[0].NodeID, "action", b.Events[0].Action, "session", b.Events[0].Session)
		return true
	}
	if err != nil {
		if ctx.Err() == nil {
			m.a.log.Warn("send operator audit events", "err", err, "events", len(b.Events))
		}
		return false
	}
	return true
}

// upload sends one recording and reports whether it is done with.
func (m *opsEndpoints) upload(ctx context.Context, r apitype.OpsRecordingUpload) bool {
	err := m.src.OpsRecording(ctx, m.a.cfg.Host, r)
	if refused(err) {
		m.a.log.Error("operator session recording refused by the control plane; dropped", "err", err, "session", r.SessionID)
		return true
	}
	if err != nil {
		if ctx.Err() == nil {
			m.a.log.Warn("send operator session recording", "err", err, "session", r.SessionID)
		}
		return false
	}
	return true
}

// flushSpool sends the spool's events in batches, removing each batch
// once the control plane has it.
func (m *opsEndpoints) flushSpool(ctx context.Context) bool {
	if m.spool == nil {
		return true
	}
	for {
		es, err := m.spool.Pending(opsBatch)
		if err != nil {
			m.a.log.Error("read the operator spool", "err", err)
			return false
		}
		if len(es) == 0 {
			return true
		}
		b := apitype.OpsEvents{Spool: m.spool.ID()}
		for _, e := range es {
			var ev apitype.OpsEvent
			if err := json.Unmarshal(e.Data, &ev); err != nil {
				m.a.log.Error("operator spool: unreadable event dropped", "seq", e.Seq, "err", err)
				continue
			}
			ev.Seq = e.Seq
			b.Events = append(b.Events, ev)
		}
		if len(b.Events) > 0 && !m.post(ctx, b) {
			return false
		}
		if err := m.spool.Ack(es[len(es)-1].Seq); err != nil {
			m.a.log.Error("acknowledge operator spool", "err", err)
			return false
		}
	}
}

// flushRecordings sends the spool's finished recordings.
func (m *opsEndpoints) flushRecordings(ctx context.Context) bool {
	if m.spool == nil {
		return true
	}
	rs, err := m.spool.Recordings()
	if err != nil {
		m.a.log.Error("read the operator spool", "err", err)
		return false
	}
	for _, r := range rs {
		cast, err := r.Data()
		if err != nil {
			m.a.log.Error("read a spooled recording", "session", r.Session, "err", err)
			return false
		}
		if !m.upload(ctx, apitype.OpsRecordingUpload{NodeID: r.Node, SessionID: r.Session, Channel: r.Channel, Cast: string(cast)}) {
			return false
		}
		if err := r.Remove(); err != nil {
			m.a.log.Error("remove a sent recording", "session", r.Session, "err", err)
			return false
		}
	}
	return true
}

// refused reports whether err is the control plane refusing a request
// for good (4xx but 429), not a failure to reach it.
func refused(err error) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Status >= 400 && ce.Status < 500 && ce.Status != 429
}

// account returns the operator account's credential, creating the account
// (a system user with no home and no password) when it is missing.
func (m *opsEndpoints) account() (*syscall.Credential, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cred != nil {
		return m.cred, nil
	}
	name := m.a.cfg.OpsUser
	if name == "" {
		name = DefaultOpsUser
	}
	if name == m.a.cfg.PGUser || name == "root" || strings.HasPrefix(name, domain.NodeUserPrefix) {
		return nil, fmt.Errorf("the operator account %q must not be root, the PostgreSQL user or a node's user", name)
	}
	u, err := user.Lookup(name)
	if err != nil {
		out, aerr := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", "--user-group", name).CombinedOutput()
		if aerr != nil {
			return nil, fmt.Errorf("create operator account %s: %w: %s", name, aerr, strings.TrimSpace(string(out)))
		}
		if u, err = user.Lookup(name); err != nil {
			return nil, fmt.Errorf("operator account %s: %w", name, err)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		return nil, fmt.Errorf("operator account %s has uid %q gid %q", name, u.Uid, u.Gid)
	}
	if _, pgUID, pgGID, err := lookupUser(m.a.cfg.PGUser); err == nil && (uint32(uid) == pgUID || uint32(gid) == pgGID) {
		return nil, fmt.Errorf("operator account %s shares an id with the PostgreSQL user %s", name, m.a.cfg.PGUser)
	}
	bin := m.a.cfg.PGBinDir
	if bin == "" {
		if bin, err = postgres.BinDir(); err != nil {
			return nil, err
		}
	}
	m.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	m.bin = bin
	return m.cred, nil
}

// nsRunner runs a session's commands inside the node's network namespace
// as the operator account. Two fixed commands are the agent's: moat-psql
// runs psql as the node's support role while the project's support grant
// lasts, and nothing otherwise; moat-pg-status runs pg_ctl status as the
// PostgreSQL user.
type nsRunner struct {
	ep   *opsEndpoint
	ns   string
	cred *syscall.Credential
}

// opsEnv is a session's environment (nothing of the agent's).
func opsEnv(user string) []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "USER=" + user, "LOGNAME=" + user,
		"SHELL=/bin/sh", "LANG=C.UTF-8", "PSQL_HISTORY=/dev/null"}
}

func (r *nsRunner) Run(ctx context.Context, c *ops.Command) (int, error) {
	sr := ops.ShellRunner{Credential: r.cred, Dir: "/", Env: opsEnv(domain.OpsPrincipal)}
	if strings.TrimSpace(c.Line) == domain.OpsPsqlCommand {
		sup, nd := r.ep.support(time.Now())
		if sup == nil {
			fmt.Fprintln(c.Stderr, "moat-psql: the tenant has granted no data access to this node (no active support grant); its project's admin can give it with moat support grant")
			return 1, nil
		}
		conninfo := fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslmode=require application_name=moat-support connect_timeout=5",
			nd.Address, nd.Port, nd.Database, sup.Role)
		cmd := *c
		cmd.Line = "exec " + shellQuote(filepath.Join(r.ep.m.bin, "psql")) + " -X " + shellQuote(conninfo)
		sr.Env = append(sr.Env, "PGPASSWORD="+sup.Password)
		c = &cmd
	}
	if strings.TrimSpace(c.Line) == domain.OpsPgStatusCommand {
		// pg_ctl needs the data directory, closed to the operator
		// account: this fixed command runs as the node's user and reads
		// nothing from the session.
		_, uid, gid, err := lookupUser(domain.NodeUser(r.ep.node))
		if err != nil {
			return 0, err
		}
		cmd := *c
		cmd.Line = "exec " + shellQuote(filepath.Join(r.ep.m.bin, "pg_ctl")) + " status -D " + shellQuote(r.ep.m.a.nodeDataDir(r.ep.node))
		cmd.Stdin = strings.NewReader("")
		sr.Credential = &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
		c = &cmd
	}
	h, err := netns.GetFromName(r.ns)
	if err != nil {
		return 0, fmt.Errorf("open network namespace %s: %w", r.ns, err)
	}
	defer h.Close()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// The shell is forked from this thread, which is in the node's
		// namespace; the thread dies with the goroutine.
		runtime.LockOSThread()
		if err := netns.Set(h); err != nil {
			done <- result{0, fmt.Errorf("enter network namespace %s: %w", r.ns, err)}
			return
		}
		code, err := sr.Run(ctx, c)
		done <- result{code, err}
	}()
	res := <-done
	return res.code, res.err
}

// keepSupport keeps the node's support role as its desired state says:
// on the primary, the role of an active grant exists (a member of the
// support group with the grant's privileges, read-only, valid until the
// grant's end) and no other support role does; on every node, sessions of
// a role that is not the active one are ended. It runs on every change,
// at the grant's end, and retries while PostgreSQL is not reachable.
func (ep *opsEndpoint) keepSupport(ctx context.Context) {
	applied := "-"
	var retry, expiry <-chan time.Time
	for {
		sup, nd := ep.support(time.Now())
		want := ""
		if sup != nil {
			want = sup.GrantID + "|" + sup.ExpiresAt.String() + "|" + nd.Role
			expiry = time.After(time.Until(sup.ExpiresAt))
		}
		if want != applied {
			if err := ep.applySupport(ctx, sup, nd); err != nil {
				if ctx.Err() != nil {
					return
				}
				ep.m.a.log.Warn("support role", "node", ep.node, "err", err)
				retry = time.After(time.Second)
			} else {
				applied, retry = want, nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ep.kick:
		case <-retry:
		case <-expiry:
			expiry = nil
		}
	}
}

// applySupport makes the node's support roles match sup (nil: none).
func (ep *opsEndpoint) applySupport(ctx context.Context, sup *apitype.NodeSupport, nd apitype.NodeDesired) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := connectSocket(ctx, filepath.Join(ep.m.a.nodesDir, ep.node, "run"), nd.Port)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	keep := ""
	if sup != nil {
		keep = sup.Role
	}
	if nd.Role == apitype.RolePrimary {
		if err := createSupportRole(ctx, conn, sup); err != nil {
			return err
		}
	}
	rows, err := conn.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE 'moat\_support\_%' AND rolname <> $1`, keep)
	if err != nil {
		return fmt.Errorf("list support roles: %w", err)
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list support roles: %w", err)
	}
	// Sessions of an ended grant end on every node, replicas included.
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename LIKE 'moat\_support\_%' AND usename <> $1`, keep); err != nil {
		return fmt.Errorf("end support sessions: %w", err)
	}
	if nd.Role != apitype.RolePrimary {
		return nil
	}
	for _, r := range old {
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{r}.Sanitize()); err != nil {
			return fmt.Errorf("drop support role %s: %w", r, err)
		}
		ep.m.a.log.Info("support role dropped", "node", ep.node, "role", r)
	}
	return nil
}

// createSupportRole creates (or renews) the role of sup on a primary.
func createSupportRole(ctx context.Context, conn *pgx.Conn, sup *apitype.NodeSupport) error {
	group := pgx.Identifier{postgres.SupportGroup}.Sanitize()
	if _, err := conn.Exec(ctx, `DO $$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '`+postgres.SupportGroup+`') THEN
			CREATE ROLE `+group+` NOLOGIN;
		END IF; END $$`); err != nil {
		return fmt.Errorf("create the support group: %w", err)
	}
	if sup == nil {
		return nil
	}
	if !strings.HasPrefix(sup.Role, "moat_support_") || len(sup.Role) > 63 {
		return fmt.Errorf("support role %q is not a support role name", sup.Role)
	}
	role := pgx.Identifier{sup.Role}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", sup.Role).Scan(&exists); err != nil {
		return fmt.Errorf("support role: %w", err)
	}
	if !exists {
		members := []string{group}
		for _, p := range sup.Privileges {
			members = append(members, pgx.Identifier{p}.Sanitize())
		}
		if _, err := conn.Exec(ctx, "CREATE ROLE "+role+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 4 IN ROLE "+strings.Join(members, ", ")); err != nil {
			return fmt.Errorf("create support role: %w", err)
		}
	}
	// The verifier, not the password, goes to the server: nothing it
	// logs holds the password.
	v, err := scram.Verifier(sup.Password)
	if err != nil {
		return err
	}
	pw, err := conn.PgConn().EscapeString(v)
	if err != nil {
		return err
	}
	until, err := conn.PgConn().EscapeString(sup.ExpiresAt.UTC().Format(time.RFC3339))
	if err != nil {
		return err
	}
	for _, q := range []string{
		"ALTER ROLE " + role + " PASSWORD '" + pw + "' VALID UNTIL '" + until + "'",
		"ALTER ROLE " + role + " SET default_transaction_read_only = on",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("support role: %w", err)
		}
	}
	return nil
}

// nodeDataDir is node id's data directory, as its worker has it.
func (a *Agent) nodeDataDir(id string) string {
	return (&node{a: a, id: id, dir: filepath.Join(a.nodesDir, id)}).dataDir()
}
