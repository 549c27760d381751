package apiserver

import (
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
		OperationID: svc.OperationID, CreatedAt: svc.CreatedAt}
	if !domain.Gone(svc.State) {
		out.Connection = &apitype.Connection{Host: domain.ServiceName(svc, s.cfg.Domain), Port: domain.PostgresPort,
			Database: domain.Database, User: domain.AdminUser, SSLMode: "verify-full"}
	}
	for _, n := range nodes {
		node := apitype.Node{ID: n.ID, Index: n.Index, AZ: n.AZ, State: n.State, Address: n.Address, StateInfo: c.infoFor(n.StateInfo)}
		if v := n.Volume; v != nil && !domain.Gone(n.State) {
			node.Volume = &apitype.NodeVolume{Format: v.Format, Cipher: v.Cipher, Engine: v.Engine, Size: v.Size, Used: v.Used, Full: v.Full, Lost: v.Lost}
		}
		if a := n.Archive; a != nil && !domain.Gone(n.State) {
			node.Archive = &apitype.ArchiveStatus{LastArchivedWAL: a.LastArchivedWAL, LastArchivedAt: a.LastArchivedAt,
				LastFailedWAL: a.LastFailedWAL, LastFailedAt: a.LastFailedAt, Failing: a.Failing}
		}
		out.NodeList = append(out.NodeList, node)
		if n.Index == 0 && out.Connection != nil {
			out.Connection.Address = n.Address
		}
	}
	return out
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
		SourceID: o.SourceID, BackupLabel: o.BackupLabel, State: o.State, Error: c.infoFor(o.Error), CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}

func auditOut(e domain.AuditEntry) apitype.AuditEntry {
	return apitype.AuditEntry{Seq: e.Seq, Time: e.Time, Actor: e.Actor, ProjectID: e.ProjectID, Action: e.Action,
		Target: e.Target, RequestID: e.RequestID, Source: e.Source, Outcome: e.Outcome, Detail: e.Detail, Hash: e.Hash}
}

// nodeReportIn is the domain's view of an agent's node report.
func nodeReportIn(r apitype.NodeReport) domain.NodeReport {
	out := domain.NodeReport{Revision: r.Revision, AllowlistRevision: r.AllowlistRevision, State: r.State, Message: r.Message}
	if v := r.Volume; v != nil {
		out.Volume = &domain.NodeVolume{Format: v.Format, Cipher: v.Cipher, Engine: v.Engine, Size: v.Size, Used: v.Used, Full: v.Full, Lost: v.Lost}
	}
	if a := r.Archive; a != nil {
		out.Archive = &domain.ArchiveStatus{LastArchivedWAL: a.LastArchivedWAL, LastArchivedAt: a.LastArchivedAt,
			LastFailedWAL: a.LastFailedWAL, LastFailedAt: a.LastFailedAt, Failing: a.Failing}
	}
	return out
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
