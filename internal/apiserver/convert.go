package apiserver

import (
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
)

func info(i *domain.Info) *apitype.StateInfo {
	if i == nil {
		return nil
	}
	return &apitype.StateInfo{Code: i.Code, Message: i.Message}
}

func projectOut(p *domain.Project) apitype.Project {
	return apitype.Project{ID: p.ID, Name: p.Name, State: p.State, VPCQuota: p.VPCQuota, CreatedAt: p.CreatedAt}
}

func tokenOut(t *domain.Token) apitype.Token {
	return apitype.Token{ID: t.ID, ProjectID: t.ProjectID, Name: t.Name, Role: string(t.Role), CreatedAt: t.CreatedAt}
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

func (s *Server) serviceOut(svc *domain.Service, nodes []*domain.Node) apitype.Service {
	out := apitype.Service{ID: svc.ID, ProjectID: svc.ProjectID, Name: svc.Name, Region: svc.Region,
		Nodes: svc.NodeCount, VPCID: svc.VPCID, Public: svc.VPCID == "", AllowedIPs: allowOut(svc.AllowedIPs),
		WideOpen: domain.IsWideOpen(svc.AllowedIPs), State: svc.State, StateInfo: info(svc.StateInfo),
		OperationID: svc.OperationID, CreatedAt: svc.CreatedAt}
	if !domain.Gone(svc.State) {
		out.Connection = &apitype.Connection{Host: desired.ServiceName(svc, s.cfg.Domain), Port: desired.Port,
			Database: desired.Database, User: desired.AdminUser, SSLMode: "verify-full"}
	}
	for _, n := range nodes {
		node := apitype.Node{ID: n.ID, Index: n.Index, AZ: n.AZ, State: n.State, Address: n.Address}
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

func operationOut(o *domain.Operation) apitype.Operation {
	return apitype.Operation{ID: o.ID, ProjectID: o.ProjectID, Type: o.Type, TargetID: o.TargetID, VPCID: o.VPCID,
		SourceID: o.SourceID, BackupLabel: o.BackupLabel, State: o.State, Error: info(o.Error), CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}

func auditOut(e domain.AuditEntry) apitype.AuditEntry {
	return apitype.AuditEntry{Seq: e.Seq, Time: e.Time, Actor: e.Actor, ProjectID: e.ProjectID, Action: e.Action,
		Target: e.Target, RequestID: e.RequestID, Source: e.Source, Outcome: e.Outcome, Detail: e.Detail, Hash: e.Hash}
}
