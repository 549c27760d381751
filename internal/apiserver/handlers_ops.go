package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/audit"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/ops"
	"github.com/moatdb/moat/internal/store"
)

// Operator access (design 0012). Operators' routes issue grants and their
// certificates, revoke them, list sessions and fetch recordings; agents'
// routes register a node's endpoint (its host certificate), check a grant
// newer than their desired state, and send the endpoints' audit events and
// recordings, which land in the node's project so that the tenant sees
// them. Tenants' routes are the support grants: their consent to data
// access.

// OpsConfig is the control plane's operator-access configuration.
type OpsConfig struct {
	// UserCA signs the operators' session certificates; HostCA the
	// nodes' host certificates.
	UserCA, HostCA *ops.CA
	// Sources are the operator path's addresses, the certificates'
	// source-address.
	Sources []string
	// SupportMinTTL is the shortest support grant a tenant may ask for
	// (0: domain.MinSupportTTL).
	SupportMinTTL time.Duration
}

// metaOpsSerial is the store key of the last operator certificate serial.
const metaOpsSerial = "ops_serial"

// recordingKey is the store key (and sealing label) of a recording.
func recordingKey(session string, channel int) string {
	return "ops_recording_" + session + "_" + strconv.Itoa(channel)
}

func (s *Server) opsConfig() (*OpsConfig, error) {
	if s.cfg.Ops == nil || s.cfg.Ops.UserCA == nil || s.cfg.Ops.HostCA == nil {
		return nil, &apiError{status: http.StatusServiceUnavailable, code: "ops_unavailable", msg: "operator access is not configured on this control plane"}
	}
	return s.cfg.Ops, nil
}

func parseTTL(field, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, domain.Invalidf(domain.CodeInvalidTTL, field, `give a duration such as "15m" or "2h"`, "%q is not a duration", v)
	}
	return d, nil
}

func parsePublicKey(field, v string) (ssh.PublicKey, error) {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(v))
	if err != nil {
		return nil, domain.Invalidf(domain.CodeRequired, field, "send the session's public key in authorized_keys form (ssh-ed25519 AAAA…)", "public_key is not an SSH public key")
	}
	if _, ok := k.(*ssh.Certificate); ok {
		return nil, domain.Invalidf(domain.CodeRequired, field, "send a plain public key, not a certificate", "public_key is a certificate")
	}
	return k, nil
}

func authorizedKey(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// nextSerial returns a new certificate serial, unique in the store.
func (c *call) nextSerial(tx store.Tx) (uint64, error) {
	var n uint64
	b, err := tx.GetMeta(c.ctx, metaOpsSerial)
	switch {
	case err == nil:
		if n, err = strconv.ParseUint(string(b), 10, 64); err != nil {
			return 0, fmt.Errorf("operator serial: %w", err)
		}
	case !errors.Is(err, store.ErrNotFound):
		return 0, err
	}
	n++
	return n, tx.PutMeta(c.ctx, metaOpsSerial, []byte(strconv.FormatUint(n, 10)))
}

func opsGrantOut(g *domain.OpsGrant, now time.Time) apitype.OpsGrant {
	return apitype.OpsGrant{ID: g.ID, Operator: g.Operator, NodeID: g.NodeID, ProjectID: g.ProjectID, Reason: g.Reason,
		SourceCIDRs: g.SourceCIDRs, Serial: g.Serial, State: g.StateAt(now), CreatedAt: g.CreatedAt, ExpiresAt: g.ExpiresAt, RevokedAt: g.RevokedAt}
}

func opsSessionOut(x *domain.OpsSession) apitype.OpsSession {
	return apitype.OpsSession{ID: x.ID, GrantID: x.GrantID, NodeID: x.NodeID, ProjectID: x.ProjectID, Operator: x.Operator, Remote: x.Remote,
		State: x.State, OpenedAt: x.OpenedAt, ClosedAt: x.ClosedAt, CloseReason: x.CloseReason, DurationMS: x.DurationMS,
		BytesIn: x.BytesIn, BytesOut: x.BytesOut, Commands: x.Commands, Recordings: x.Recordings}
}

func supportGrantOut(g *domain.SupportGrant, now time.Time) apitype.SupportGrant {
	return apitype.SupportGrant{ID: g.ID, ProjectID: g.ProjectID, GrantedBy: g.GrantedBy, Reason: g.Reason, State: g.StateAt(now),
		CreatedAt: g.CreatedAt, ExpiresAt: g.ExpiresAt, RevokedAt: g.RevokedAt, Privileges: domain.SupportPrivileges}
}

// createOpsGrant records an operator's grant to a node and signs the
// certificate of the session key. The audit entry is in the node's
// project; so is a refusal for want of the tenant's support grant.
func (s *Server) createOpsGrant(c *call) error {
	oc, err := s.opsConfig()
	if err != nil {
		return err
	}
	var in apitype.OpsGrantCreate
	if err := c.decode(&in); err != nil {
		return err
	}
	ttl, err := parseTTL("ttl", in.TTL)
	if err != nil {
		return err
	}
	key, err := parsePublicKey("public_key", in.PublicKey)
	if err != nil {
		return err
	}
	now := s.now()
	g, err := domain.NewOpsGrant(domain.OpsGrantRequest{Operator: c.who.actor(), NodeID: in.NodeID, Reason: in.Reason, TTL: ttl, SourceCIDRs: oc.Sources}, now)
	if err != nil {
		return err
	}
	c.target = in.NodeID
	var out apitype.OpsGrantIssued
	err = c.mutate(func(tx store.Tx) error {
		n, err := store.Get[domain.Node](c.ctx, tx, in.NodeID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && domain.Gone(n.State)) {
			return errNotFound("node", in.NodeID)
		}
		if err != nil {
			return err
		}
		c.project = n.ProjectID
		ep, err := store.Get[domain.OpsEndpoint](c.ctx, tx, domain.OpsEndpointID(n.ID))
		if errors.Is(err, store.ErrNotFound) {
			return domain.Conflictf(domain.CodeInvalidState, "node_id", "wait until the node's agent has started its endpoint (the node is running), then retry", "node %s has no operator endpoint yet", n.ID)
		}
		if err != nil {
			return err
		}
		g.ProjectID = n.ProjectID
		detail := fmt.Sprintf("operator=%q node=%s reason=%q expires=%s", g.Operator, n.ID, g.Reason, g.ExpiresAt.Format(time.RFC3339))
		if in.Psql {
			sgs, err := store.List[domain.SupportGrant](c.ctx, tx, store.Query{ProjectID: n.ProjectID, States: []string{domain.StateActive}})
			if err != nil {
				return err
			}
			sg := domain.ActiveSupportGrant(sgs, now)
			if sg == nil {
				c.detail = detail + " psql=refused"
				return &apiError{status: http.StatusForbidden, code: "no_support_grant", field: "psql",
					msg:  "project " + n.ProjectID + " has no active support grant: operators may not access its data",
					hint: "ask the tenant's admin to run moat support grant --ttl 2h --reason ... (they can revoke it at any time)"}
			}
			detail += " psql=true support_grant=" + sg.ID
		}
		if g.Serial, err = c.nextSerial(tx); err != nil {
			return err
		}
		cert, err := oc.UserCA.IssueUser(g, key, now)
		if err != nil {
			return err
		}
		if err := store.Put(c.ctx, tx, g); err != nil {
			return err
		}
		if _, err := desired.Bump(c.ctx, tx, desired.Affected{Hosts: []string{n.Host}}); err != nil {
			return err
		}
		c.target, c.detail = g.ID, detail+fmt.Sprintf(" serial=%d", g.Serial)
		out = apitype.OpsGrantIssued{Grant: opsGrantOut(g, now), Certificate: authorizedKey(cert),
			HostCA: authorizedKey(oc.HostCA.PublicKey()), Endpoint: ep.Address}
		return nil
	})
	if err != nil {
		return err
	}
	return c.reply(http.StatusCreated, out)
}

func (s *Server) listOpsGrants(c *call) error {
	gs, next, err := listIn[domain.OpsGrant](c, c.r.URL.Query().Get("node"))
	if err != nil {
		return err
	}
	now := s.now()
	return c.reply(0, apitype.List[apitype.OpsGrant]{Items: mapList(gs, func(g *domain.OpsGrant) apitype.OpsGrant { return opsGrantOut(g, now) }), NextPageToken: next})
}

// revokeOpsGrant revokes a grant: the node's agent ends its sessions when
// the new desired state reaches it.
func (s *Server) revokeOpsGrant(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	now := s.now()
	var g *domain.OpsGrant
	err := c.mutate(func(tx store.Tx) (err error) {
		g, err = store.Get[domain.OpsGrant](c.ctx, tx, id)
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("grant", id)
		}
		if err != nil {
			return err
		}
		c.project = g.ProjectID
		c.detail = fmt.Sprintf("node=%s serial=%d", g.NodeID, g.Serial)
		if err := g.Revoke(now); err != nil {
			return err
		}
		if err := store.Put(c.ctx, tx, g); err != nil {
			return err
		}
		return bumpNodeHost(c, tx, g.NodeID)
	})
	if err != nil {
		return err
	}
	return c.reply(0, opsGrantOut(g, now))
}

func (s *Server) listOpsSessions(c *call) error {
	xs, next, err := listIn[domain.OpsSession](c, c.r.URL.Query().Get("node"))
	if err != nil {
		return err
	}
	return c.reply(0, apitype.List[apitype.OpsSession]{Items: mapList(xs, opsSessionOut), NextPageToken: next})
}

func (s *Server) getOpsRecording(c *call) error {
	id := c.r.PathValue("id")
	ch, err := strconv.Atoi(c.r.PathValue("n"))
	if err != nil || ch < 1 {
		return domain.Invalidf(domain.CodeInvalidID, "n", "give a channel number from 1 (moat ops sessions shows how many)", "%q is not a channel number", c.r.PathValue("n"))
	}
	var sealed []byte
	err = c.view(func(tx store.Tx) (err error) {
		sealed, err = tx.GetMeta(c.ctx, recordingKey(id, ch))
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("recording", fmt.Sprintf("%s/%d", id, ch))
		}
		return err
	})
	if err != nil {
		return err
	}
	cast, err := s.cfg.Keys.Open(sealed, []byte(recordingKey(id, ch)))
	if err != nil {
		return fmt.Errorf("unseal recording %s/%d: %w", id, ch, err)
	}
	return c.reply(0, apitype.OpsRecording{SessionID: id, Channel: ch, Cast: string(cast)})
}

// nodeOnHost reads node id and checks that the call's host runs it.
func (c *call) nodeOnHost(tx store.Tx, field, id string) (*domain.Node, error) {
	host := c.r.PathValue("host")
	n, err := store.Get[domain.Node](c.ctx, tx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && n.Host != host) {
		return nil, domain.Invalidf(domain.CodeNotFound, field, "name a node of this host's desired state", "node %s is not placed on host %s", id, host)
	}
	return n, err
}

// opsHostCert registers a node's endpoint and signs its host key.
func (s *Server) opsHostCert(c *call) error {
	oc, err := s.opsConfig()
	if err != nil {
		return err
	}
	var in apitype.OpsHostCertRequest
	if err := c.decode(&in); err != nil {
		return err
	}
	key, err := parsePublicKey("public_key", in.PublicKey)
	if err != nil {
		return err
	}
	if in.Endpoint == "" {
		return domain.Invalidf(domain.CodeRequired, "endpoint", "send the endpoint's host:port on the operator path", "endpoint is required")
	}
	c.target = in.NodeID
	now := s.now()
	var out apitype.OpsHostCert
	err = c.mutate(func(tx store.Tx) error {
		n, err := c.nodeOnHost(tx, "node_id", in.NodeID)
		if err != nil {
			return err
		}
		c.project = n.ProjectID
		cert, err := oc.HostCA.IssueHost(key, n.ID, nil, now, 0)
		if err != nil {
			return err
		}
		ep := domain.NewOpsEndpoint(n, in.Endpoint, authorizedKey(key), authorizedKey(cert), now)
		if old, err := store.Get[domain.OpsEndpoint](c.ctx, tx, domain.OpsEndpointID(n.ID)); err == nil {
			ep.Revision, ep.CreatedAt = old.Revision, old.CreatedAt
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		c.detail = "endpoint=" + in.Endpoint + fmt.Sprintf(" host_cert_serial=%d", cert.Serial)
		out = apitype.OpsHostCert{Certificate: ep.HostCert, UserCA: authorizedKey(oc.UserCA.PublicKey())}
		return store.Put(c.ctx, tx, ep)
	})
	if err != nil {
		return err
	}
	return c.reply(0, out)
}

// opsGrantLive tells an agent whether a grant newer than its desired state
// is live for one of its nodes.
func (s *Server) opsGrantLive(c *call) error {
	id, node := c.r.PathValue("id"), c.r.URL.Query().Get("node")
	live := false
	err := c.view(func(tx store.Tx) error {
		if _, err := c.nodeOnHost(tx, "node", node); err != nil {
			return err
		}
		g, err := store.Get[domain.OpsGrant](c.ctx, tx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		live = g.NodeID == node && g.Active(s.now())
		return nil
	})
	if err != nil {
		return err
	}
	return c.reply(0, apitype.OpsGrantCheck{Live: live})
}

// maxOpsEvents bounds one batch of endpoint events.
const maxOpsEvents = 1000

// opsSpoolKey is the store key of the last spooled event of host's agent
// that the control plane took: "<spool ID> <seq>".
func opsSpoolKey(host string) string { return "ops_events_spool_" + host }

// spoolMark is where a host's spool stands: its ID and the last sequence
// number taken.
type spoolMark struct {
	id  string
	seq uint64
}

func (c *call) spoolMark(tx store.Tx, host string) (spoolMark, error) {
	b, err := tx.GetMeta(c.ctx, opsSpoolKey(host))
	if errors.Is(err, store.ErrNotFound) {
		return spoolMark{}, nil
	}
	if err != nil {
		return spoolMark{}, err
	}
	id, n, _ := strings.Cut(string(b), " ")
	seq, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return spoolMark{}, fmt.Errorf("operator spool mark of %s: %w", host, err)
	}
	return spoolMark{id, seq}, nil
}

// opsEvents appends a host's endpoint events to the audit log, in each
// node's project, and keeps the sessions they describe. Spooled events the
// control plane already took (same spool, a sequence number not above the
// last taken) are skipped: an agent sends a batch again when the answer
// was lost.
func (s *Server) opsEvents(c *call) error {
	var in apitype.OpsEvents
	if err := c.decode(&in); err != nil {
		return err
	}
	if len(in.Events) > maxOpsEvents {
		return domain.Invalidf(domain.CodeTooManyEntries, "events", fmt.Sprintf("send at most %d events at a time", maxOpsEvents), "%d events", len(in.Events))
	}
	host := c.r.PathValue("host")
	c.target = host
	c.detail = fmt.Sprintf("events=%d", len(in.Events))
	err := c.mutate(func(tx store.Tx) error {
		mark, err := c.spoolMark(tx, host)
		if err != nil {
			return err
		}
		if in.Spool != mark.id {
			mark = spoolMark{id: in.Spool}
		}
		taken, skipped := mark.seq, 0
		for i, e := range in.Events {
			if in.Spool != "" && e.Seq != 0 {
				if e.Seq <= mark.seq {
					skipped++
					continue
				}
				taken = max(taken, e.Seq)
			}
			n, err := c.nodeOnHost(tx, fmt.Sprintf("events[%d].node_id", i), e.NodeID)
			if err != nil {
				return err
			}
			var g *domain.OpsGrant
			if e.GrantID != "" {
				if g, err = store.Get[domain.OpsGrant](c.ctx, tx, e.GrantID); errors.Is(err, store.ErrNotFound) || (err == nil && g.NodeID != n.ID) {
					g = nil
				} else if err != nil {
					return err
				}
			}
			if e.Time.IsZero() {
				e.Time = s.now()
			}
			ev := ops.Event{Time: e.Time, Action: e.Action, Reason: e.Reason, Detail: e.Detail, Session: e.Session, Remote: e.Remote,
				User: e.User, GrantID: e.GrantID, Serial: e.Serial, Command: e.Command,
				Duration: time.Duration(e.DurationMS) * time.Millisecond, BytesIn: e.BytesIn, BytesOut: e.BytesOut}
			entry := ev.AuditEntry(n.ProjectID, n.ID)
			if g != nil {
				entry.Actor += " (" + g.Operator + ")"
			}
			if _, err := audit.Append(c.ctx, tx, entry); err != nil {
				return err
			}
			if g != nil && e.Session != "" {
				if err := c.recordSession(tx, g, e); err != nil {
					return err
				}
			}
		}
		if skipped > 0 {
			c.detail += fmt.Sprintf(" already_taken=%d", skipped)
		}
		if in.Spool != "" && taken > mark.seq {
			return tx.PutMeta(c.ctx, opsSpoolKey(host), []byte(in.Spool+" "+strconv.FormatUint(taken, 10)))
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// recordSession keeps the session an event describes.
func (c *call) recordSession(tx store.Tx, g *domain.OpsGrant, e apitype.OpsEvent) error {
	x, err := store.Get[domain.OpsSession](c.ctx, tx, e.Session)
	switch {
	case errors.Is(err, store.ErrNotFound):
		x = domain.NewOpsSession(e.Session, g, g.ProjectID, e.Remote, e.Time)
	case err != nil:
		return err
	case x.GrantID != g.ID:
		return nil // another grant's session ID: never merged
	}
	switch e.Action {
	case ops.ActionExec:
		x.Commands++
	case ops.ActionSessionClosed:
		x.Close(e.Reason, time.Duration(e.DurationMS)*time.Millisecond, e.BytesIn, e.BytesOut, e.Time)
	case ops.ActionSessionOpened, ops.ActionShell:
	default:
		if x.Revision != 0 {
			return nil
		}
	}
	return store.Put(c.ctx, tx, x)
}

// maxRecording bounds a stored recording.
const maxRecording = 4 << 20

// opsRecording seals and stores a finished terminal recording.
func (s *Server) opsRecording(c *call) error {
	var in apitype.OpsRecordingUpload
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.Channel < 1 || len(in.Cast) > maxRecording {
		return domain.Invalidf(domain.CodeInvalidID, "channel", "number channels from 1; recordings are at most 4 MiB", "recording %d of %d bytes", in.Channel, len(in.Cast))
	}
	c.target = in.SessionID
	c.detail = fmt.Sprintf("channel=%d bytes=%d", in.Channel, len(in.Cast))
	err := c.mutate(func(tx store.Tx) error {
		n, err := c.nodeOnHost(tx, "node_id", in.NodeID)
		if err != nil {
			return err
		}
		c.project = n.ProjectID
		x, err := store.Get[domain.OpsSession](c.ctx, tx, in.SessionID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && x.NodeID != n.ID) {
			return domain.Invalidf(domain.CodeNotFound, "session_id", "send the recording after the session's events", "session %s of node %s is unknown", in.SessionID, n.ID)
		}
		if err != nil {
			return err
		}
		k := recordingKey(x.ID, in.Channel)
		if err := tx.PutMeta(c.ctx, k, s.cfg.Keys.Seal([]byte(in.Cast), []byte(k))); err != nil {
			return err
		}
		x.Recordings = max(x.Recordings, in.Channel)
		return store.Put(c.ctx, tx, x)
	})
	if err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// createSupportGrant records a project admin's consent to data access.
func (s *Server) createSupportGrant(c *call) error {
	var in apitype.SupportGrantCreate
	if err := c.decode(&in); err != nil {
		return err
	}
	ttl, err := parseTTL("ttl", in.TTL)
	if err != nil {
		return err
	}
	now := s.now()
	var minTTL time.Duration
	if s.cfg.Ops != nil {
		minTTL = s.cfg.Ops.SupportMinTTL
	}
	g, err := domain.NewSupportGrant(c.project, c.who.actor(), in.Reason, ttl, minTTL, now)
	if err != nil {
		return err
	}
	g.PasswordSealed = s.cfg.Keys.Seal([]byte(NewSecret()), domain.SupportPasswordAD(g.ID))
	return c.create(func(tx store.Tx) (any, error) {
		c.target = g.ID
		c.detail = fmt.Sprintf("reason=%q expires=%s privileges=%s", g.Reason, g.ExpiresAt.Format(time.RFC3339), strings.Join(domain.SupportPrivileges, ","))
		if err := store.Put(c.ctx, tx, g); err != nil {
			return nil, err
		}
		if err := bumpProjectHosts(c, tx, g.ProjectID); err != nil {
			return nil, err
		}
		return supportGrantOut(g, now), nil
	})
}

func (s *Server) listSupportGrants(c *call) error {
	gs, next, err := listIn[domain.SupportGrant](c, c.project)
	if err != nil {
		return err
	}
	now := s.now()
	return c.reply(0, apitype.List[apitype.SupportGrant]{Items: mapList(gs, func(g *domain.SupportGrant) apitype.SupportGrant { return supportGrantOut(g, now) }), NextPageToken: next})
}

// revokeSupportGrant ends a support grant: the nodes' agents drop its
// role and end its sessions.
func (s *Server) revokeSupportGrant(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	now := s.now()
	var g *domain.SupportGrant
	err := c.mutate(func(tx store.Tx) (err error) {
		if g, err = getIn[domain.SupportGrant](c, tx, "support grant", id); err != nil {
			return err
		}
		if err := g.Revoke(now); err != nil {
			return err
		}
		if err := store.Put(c.ctx, tx, g); err != nil {
			return err
		}
		return bumpProjectHosts(c, tx, g.ProjectID)
	})
	if err != nil {
		return err
	}
	return c.reply(0, supportGrantOut(g, now))
}

// bumpNodeHost wakes the host of node id (its grants changed); a node that
// is gone has no host to wake.
func bumpNodeHost(c *call, tx store.Tx, id string) error {
	n, err := store.Get[domain.Node](c.ctx, tx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = desired.Bump(c.ctx, tx, desired.Affected{Hosts: []string{n.Host}})
	return err
}

// bumpProjectHosts wakes the hosts of every node of project (its support
// grants changed: each primary makes or drops the support role).
func bumpProjectHosts(c *call, tx store.Tx, project string) error {
	svcs, err := store.List[domain.Service](c.ctx, tx, store.Query{ProjectID: project})
	if err != nil {
		return err
	}
	ids := make([]string, len(svcs))
	for i, svc := range svcs {
		ids[i] = svc.ID
	}
	_, err = desired.Bump(c.ctx, tx, desired.Affected{Services: ids})
	return err
}
