package apiserver

import (
	"fmt"
	"strings"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/domain"
)

// info is the public part of a state's explanation: its code and the
// message written for the tenant, never the internal cause.
func info(i *domain.Info) *apitype.StateInfo {
	if i == nil {
		return nil
	}
	return &apitype.StateInfo{Code: i.Code, Message: i.Message}
}

// infoFor is info as the caller may read it: with the internal cause for
// an operator token only.
func (c *call) infoFor(i *domain.Info) *apitype.StateInfo {
	out := info(i)
	if out != nil && c.who.Role == domain.RoleOperator {
		out.InternalCause = i.Cause
	}
	return out
}

func projectOut(p *domain.Project) apitype.Project {
	return apitype.Project{ID: p.ID, Name: p.Name, State: p.State, VPCQuota: p.VPCQuota, CreatedAt: p.CreatedAt}
}

// projectOut converts a project with its effective quotas.
func (s *Server) projectOut(p *domain.Project) apitype.Project {
	out := projectOut(p)
	q := p.Limits(s.cfg.Quotas)
	out.ServiceQuota, out.NodeQuota = q.Services, q.Nodes
	return out
}

func tokenOut(t *domain.Token) apitype.Token {
	return apitype.Token{ID: t.ID, ProjectID: t.ProjectID, Name: t.Name, Role: string(t.Role), Host: t.Host, CreatedAt: t.CreatedAt}
}

func vpcOut(v *domain.VPC) apitype.VPC {
	return apitype.VPC{ID: v.ID, ProjectID: v.ProjectID, Name: v.Name, Region: v.Region, CIDR: v.CIDR,
		CloudVPCID: v.CloudVPCID, State: v.State, StateInfo: info(v.StateInfo), CreatedAt: v.CreatedAt}
}

func peeringOut(p *domain.Peering) apitype.Peering {
	return apitype.Peering{ID: p.ID, ProjectID: p.ProjectID, VPCID: p.VPCID, PeerAccountID: p.PeerAccountID,
		PeerVPCID: p.PeerVPCID, PeerRegion: p.PeerRegion, PeerCIDRs: p.PeerCIDRs, CloudPeeringID: p.CloudPeeringID,
		State: p.State, StateInfo: info(p.StateInfo), ExpiresAt: p.ExpiresAt, CreatedAt: p.CreatedAt}
}

func allowOut(in []domain.AllowEntry) []apitype.AllowEntry {
	out := make([]apitype.AllowEntry, len(in))
	for i, e := range in {
		out[i] = apitype.AllowEntry{CIDR: e.CIDR, Description: e.Description}
	}
	return out
}

func allowIn(in []apitype.AllowEntry) []domain.AllowEntry {
	if in == nil {
		return nil
	}
	out := make([]domain.AllowEntry, len(in))
	for i, e := range in {
		out[i] = domain.AllowEntry{CIDR: e.CIDR, Description: e.Description}
	}
	return out
}

func (s *Server) serviceOut(c *call, svc *domain.Service, nodes []*domain.Node) apitype.Service {
	out := apitype.Service{ID: svc.ID, ProjectID: svc.ProjectID, Name: svc.Name, Region: svc.Region,
		Nodes: svc.NodeCount, VPCID: svc.VPCID, Public: svc.VPCID == "", AllowedIPs: allowOut(svc.AllowedIPs),
		WideOpen: domain.IsWideOpen(svc.AllowedIPs), State: svc.State, StateInfo: c.infoFor(svc.StateInfo),
		OperationID: svc.OperationID, CreatedAt: svc.CreatedAt, Settings: svc.Settings, PendingRestart: svc.PendingRestart(),
		SettingsApplying: svc.SettingsApplying(nodes)}
	if !domain.Gone(svc.State) {
		out.Connection = &apitype.Connection{Host: domain.ServiceName(svc, s.cfg.Domain), Port: domain.PostgresPort,
			Database: domain.Database, User: domain.AdminUser, SSLMode: "verify-full"}
	}
	if r := svc.Replication; r != nil && !domain.Gone(svc.State) {
		out.Replication = &apitype.Replication{Mode: r.Mode, Condition: c.infoFor(r.Condition)}
	}
	if h := svc.Health; h != nil && !domain.Gone(svc.State) {
		out.Health = &apitype.ServiceHealth{Status: h.Status}
		for _, i := range h.Conditions {
			out.Health.Conditions = append(out.Health.Conditions, *c.infoFor(&i))
		}
	}
	members := domain.Members(svc, nodes, func(string) bool { return true })
	repl := map[string]domain.ReplicaState{}
	for _, r := range domain.ReplicaStates(members) {
		repl[r.NodeID] = r
	}
	var hosts, addrs []string
	for _, n := range nodes {
		node := apitype.Node{ID: n.ID, Index: n.Index, AZ: n.AZ, State: n.State, Address: n.Address, Host: n.Host, StateInfo: c.infoFor(n.StateInfo)}
		node.Volume = volumeOut(n)
		if a := n.Archive; a != nil && !domain.Gone(n.State) {
			node.Archive = &apitype.ArchiveStatus{LastArchivedWAL: a.LastArchivedWAL, LastArchivedAt: a.LastArchivedAt,
				LastFailedWAL: a.LastFailedWAL, LastFailedAt: a.LastFailedAt, Failing: a.Failing}
		}
		if !domain.Going(n.State) {
			node.Role = nodeRole(svc, n)
			r := repl[n.ID]
			node.Streaming, node.SyncState, node.LagBytes = r.Streaming, r.SyncState, r.LagBytes
			if n.Address != "" && out.Connection != nil {
				// The primary first: a client tries it before the others.
				if svc.IsPrimary(n) {
					hosts, addrs = append([]string{out.Connection.Host}, hosts...), append([]string{n.Address}, addrs...)
				} else {
					hosts, addrs = append(hosts, out.Connection.Host), append(addrs, n.Address)
				}
			}
		}
		out.NodeList = append(out.NodeList, node)
		if svc.IsPrimary(n) && !domain.Going(n.State) && out.Connection != nil {
			out.Connection.Address = n.Address
		}
	}
	if out.Connection != nil && svc.NodeCount > 1 {
		out.Connection.ReadOnlyHost = domain.ReadOnlyName(svc, s.cfg.Domain)
	}
	// Also while a 1-node service has two nodes (its upgrade): a client
	// then lands on whichever is the primary.
	if out.Connection != nil && (svc.NodeCount > 1 || len(addrs) > 1) {
		if len(addrs) > 0 {
			out.Connection.MultiHost = fmt.Sprintf("host=%s hostaddr=%s port=%d dbname=%s user=%s sslmode=verify-full target_session_attrs=read-write",
				strings.Join(hosts, ","), strings.Join(addrs, ","), domain.PostgresPort, domain.Database, domain.AdminUser)
		}
	}
	return out
}

// nodeRole is the role service get shows for n: primary, fenced (its
// agent reports it kept from acknowledging anything) or replica.
// volumeOut is n's encrypted volume as its agent last reported it (nil
// when it has none or is gone).
func volumeOut(n *domain.Node) *apitype.NodeVolume {
	v := n.Volume
	if v == nil || domain.Gone(n.State) {
		return nil
	}
	return &apitype.NodeVolume{Format: v.Format, Cipher: v.Cipher, Engine: v.Engine, Size: v.Size, Used: v.Used, Full: v.Full, Lost: v.Lost}
}

func nodeRole(svc *domain.Service, n *domain.Node) string {
	switch {
	case svc.IsPrimary(n):
		return apitype.RolePrimary
	case n.Replication != nil && n.Replication.Fenced:
		return apitype.RoleFenced
	}
	return apitype.RoleReplica
}

func allowlistOut(svc *domain.Service) apitype.Allowlist {
	return apitype.Allowlist{ServiceID: svc.ID, AllowedIPs: allowOut(svc.AllowedIPs), Revision: svc.AllowlistRevision,
		AppliedRevision: svc.AppliedAllowlistRevision, Applied: svc.AppliedAllowlistRevision >= svc.AllowlistRevision,
		WideOpen: domain.IsWideOpen(svc.AllowedIPs)}
}

// allowlistFailures lists the live nodes that failed before enforcing the
// service's allowlist revision, with the reason each reports (its cause
// for operators only).
func (c *call) allowlistFailures(svc *domain.Service, nodes []*domain.Node) []apitype.NodeFailure {
	var out []apitype.NodeFailure
	for _, n := range nodes {
		if n.State == domain.StateFailed && n.AppliedAllowlistRevision < svc.AllowlistRevision {
			out = append(out, apitype.NodeFailure{NodeID: n.ID, Reason: c.infoFor(n.StateInfo)})
		}
	}
	return out
}

func (c *call) operationOut(o *domain.Operation) apitype.Operation {
	return apitype.Operation{ID: o.ID, ProjectID: o.ProjectID, Type: o.Type, TargetID: o.TargetID, VPCID: o.VPCID,
		SourceID: o.SourceID, BackupLabel: o.BackupLabel, State: o.State, Step: o.Step, Error: c.infoFor(o.Error), CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}

func auditOut(e domain.AuditEntry) apitype.AuditEntry {
	return apitype.AuditEntry{Seq: e.Seq, Time: e.Time, Actor: e.Actor, ProjectID: e.ProjectID, Action: e.Action,
		Target: e.Target, RequestID: e.RequestID, Source: e.Source, Outcome: e.Outcome, Detail: e.Detail, Hash: e.Hash}
}

// nodeReportIn is the domain's view of an agent's node report.
func nodeReportIn(r apitype.NodeReport) (domain.NodeReport, error) {
	out := domain.NodeReport{Revision: r.Revision, AllowlistRevision: r.AllowlistRevision, State: r.State, Message: r.Message}
	if v := r.Volume; v != nil {
		out.Volume = &domain.NodeVolume{Format: v.Format, Cipher: v.Cipher, Engine: v.Engine, Size: v.Size, Used: v.Used, Full: v.Full, Lost: v.Lost}
	}
	repl, err := replicationIn(r.Replication)
	if err != nil {
		return out, err
	}
	out.Replication = repl
	if a := r.Archive; a != nil {
		out.Archive = &domain.ArchiveStatus{LastArchivedWAL: a.LastArchivedWAL, LastArchivedAt: a.LastArchivedAt,
			LastFailedWAL: a.LastFailedWAL, LastFailedAt: a.LastFailedAt, Failing: a.Failing}
	}
	return out, nil
}

// replicationIn is the domain's view of a node's replication report; a
// malformed LSN is an error about its field.
func replicationIn(r *apitype.NodeReplication) (*domain.ReplicationReport, error) {
	if r == nil {
		return nil, nil
	}
	out := &domain.ReplicationReport{Up: r.Up, InRecovery: r.InRecovery, Timeline: r.Timeline, Upstream: r.Upstream, Streaming: r.Streaming, Fenced: r.Fenced, Switching: r.Switching}
	if r.DownSince != nil {
		out.DownSince = *r.DownSince
	}
	if r.NotStreamingSince != nil {
		out.NotStreamingSince = *r.NotStreamingSince
	}
	lsn := func(field, v string) (domain.LSN, error) {
		if v == "" {
			return 0, nil
		}
		l, err := domain.ParseLSN(v)
		return l, inField(field, err)
	}
	var err error
	if out.ReceivedLSN, err = lsn("replication", r.ReceivedLSN); err != nil {
		return nil, err
	}
	if out.ReplayedLSN, err = lsn("replication", r.ReplayedLSN); err != nil {
		return nil, err
	}
	for i, sb := range r.Standbys {
		st := domain.StandbyStatus{Name: sb.Name, SyncState: sb.SyncState}
		field := fmt.Sprintf("replication.standbys[%d]", i)
		if st.FlushLSN, err = lsn(field, sb.FlushLSN); err != nil {
			return nil, err
		}
		if st.ReplayLSN, err = lsn(field, sb.ReplayLSN); err != nil {
			return nil, err
		}
		out.Standbys = append(out.Standbys, st)
	}
	return out, nil
}

// taskReportIn is the domain's view of an agent's task report.
func taskReportIn(t apitype.TaskReport) domain.TaskReport {
	out := domain.TaskReport{State: t.State, Message: t.Message}
	if b := t.Backup; b != nil {
		out.Backup = &domain.BaseBackup{Label: b.Label, EndTime: b.EndTime}
	}
	return out
}

// backupOut is a base backup as the API describes it (the object key and
// start WAL file name stay internal).
func backupOut(b archive.Backup) apitype.Backup {
	return apitype.Backup{Label: b.Label, Timeline: b.Timeline, StartLSN: b.StartLSN, EndLSN: b.EndLSN,
		StartTime: b.StartTime, EndTime: b.EndTime, Size: b.Size, StoredSize: b.StoredSize, KeyFingerprint: b.KeyFingerprint}
}

func supportOut(r *domain.SupportRequest) apitype.SupportRequest {
	return apitype.SupportRequest{ID: r.ID, ProjectID: r.ProjectID, Type: r.Type, Resource: r.Resource, Requested: r.Requested,
		Current: r.Current, Message: r.Message, Requester: r.Requester, State: r.State, Reply: r.Reply, DecidedBy: r.DecidedBy,
		DecidedAt: r.DecidedAt, CreatedAt: r.CreatedAt}
}
