// Package desired compiles the desired state of an agent host from the
// control plane's objects: for every node placed on the host, its
// PostgreSQL identity, certificates, the access policy its firewall and
// pg_hba enforce, and its operator endpoint's grants and support role
// (ops.go). Compile is a pure function of its Input; Load reads that
// Input from a store transaction, by host; Bump is its inverse, the hosts
// whose desired state a change reads, so that a change wakes only those.
// Imported by the API server (the agents' long poll, and its changes) and
// the reconcilers. The labels of the sealed keys it opens are domain's.
package desired

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Input is everything Compile reads.
type Input struct {
	Host     string
	Revision int64
	Zone     string
	// Nodes are all live nodes of the services with a node on Host.
	Nodes         []*domain.Node
	Services      map[string]*domain.Service
	Projects      map[string]*domain.Project
	VPCs          map[string]*domain.VPC
	Peerings      []*domain.Peering
	InternalCAPEM string
	// Open unseals a node key (deterministic; no I/O).
	Open func(sealed, ad []byte) ([]byte, error)
	// ArchiveDir is the backup store on the agents' hosts; "" turns
	// archiving off.
	ArchiveDir string
	// Ops are the unfinished operations targeting each service.
	Ops map[string][]*domain.Operation
	// Sources are the services restored services come from.
	Sources map[string]*domain.Service
	// Now is the clock grants are judged by; OpsUserCA the operators' SSH
	// CA (none: no operator endpoint), OpsGrants the live and revoked
	// operator grants, SupportGrants the active support grants by project
	// (see ops.go).
	Now           time.Time
	OpsUserCA     string
	OpsGrants     []*domain.OpsGrant
	SupportGrants map[string][]*domain.SupportGrant
	// Lease is how long an agent keeps a replicated service's primary
	// writable without reaching the control plane (0: no lease).
	Lease time.Duration
	// Heartbeat is how often the host's agent is to report (0: its
	// default).
	Heartbeat time.Duration
}

// Compile returns Host's desired state.
func Compile(in Input) (apitype.HostDesired, error) {
	out := apitype.HostDesired{Host: in.Host, Revision: in.Revision, Nodes: []apitype.NodeDesired{}, HeartbeatMillis: in.Heartbeat.Milliseconds()}
	bySvc := map[string][]*domain.Node{}
	for _, n := range in.Nodes {
		bySvc[n.ServiceID] = append(bySvc[n.ServiceID], n)
	}
	for _, n := range in.Nodes {
		if n.Host == in.Host && domain.Gone(n.State) {
			out.Deleted = append(out.Deleted, n.ID)
		}
		if n.Host != in.Host || n.Address == "" || domain.Gone(n.State) {
			continue
		}
		svc := in.Services[n.ServiceID]
		proj := in.Projects[n.ProjectID]
		if svc == nil || proj == nil {
			return out, fmt.Errorf("node %s: service or project missing", n.ID)
		}
		key, err := in.Open(n.KeySealed, domain.NodeKeyAD(n.ID))
		if err != nil {
			return out, fmt.Errorf("node %s: unseal key: %w", n.ID, err)
		}
		replKey, err := in.Open(n.ReplKeySealed, domain.ReplKeyAD(n.ID))
		if err != nil {
			return out, fmt.Errorf("node %s: unseal replication key: %w", n.ID, err)
		}
		var peers []netip.Addr
		var peerNodes []apitype.PeerNode
		byID := map[string]*domain.Node{}
		for _, o := range bySvc[n.ServiceID] {
			byID[o.ID] = o
			if o.ID == n.ID || o.Address == "" || domain.Going(o.State) {
				continue
			}
			if a, err := netip.ParseAddr(o.Address); err == nil {
				peers = append(peers, a)
				peerNodes = append(peerNodes, apitype.PeerNode{NodeID: domain.ReplCertName(o), Address: a.String()})
			}
		}
		slices.SortFunc(peerNodes, func(a, b apitype.PeerNode) int { return strings.Compare(a.NodeID, b.NodeID) })
		if in.ArchiveDir != "" && svc.BackupPublicKeyPEM == "" && n.State == domain.StateCreating {
			continue // it starts archiving from the first WAL file: wait for its key
		}
		acc := domain.CompileAccess(svc, in.VPCs[svc.VPCID], in.Peerings, peers)
		nd := apitype.NodeDesired{
			NodeID: n.ID, ServiceID: svc.ID, ProjectID: svc.ProjectID, Index: n.Index,
			Role: apitype.RolePrimary, State: n.DesiredState(svc), Namespace: n.Namespace, Address: n.Address, Port: domain.PostgresPort,
			Database: domain.Database, AdminUser: domain.AdminUser, AdminVerifier: svc.AdminVerifier, ReplicationUser: domain.ReplicationUser,
			TLS: apitype.NodeTLS{CertPEM: n.CertPEM, KeyPEM: string(key), ProjectCAPEM: proj.CACertPEM,
				InternalCAPEM: in.InternalCAPEM, ReplCertPEM: n.ReplCertPEM, ReplKeyPEM: string(replKey)},
			AllowV4: strs(acc.V4), AllowV6: strs(acc.V6), Peers: strs(acc.Peers),
			AllowlistRevision:  svc.AllowlistRevision,
			PeerNodes:          peerNodes,
			BackupPublicKeyPEM: svc.BackupPublicKeyPEM,
			Settings:           domain.NodeSettings(svc, n),
		}
		role := domain.ServiceRoles(svc, domain.Members(svc, bySvc[n.ServiceID], func(string) bool { return true }), in.Ops[svc.ID])[n.ID]
		if _, rl := domain.LiveRoll(svc, in.Ops[svc.ID]); rl != nil {
			nd.Switchover = rl.Switching()
		}
		switch role.Role {
		case domain.NodeRoleFenced:
			nd.Role = apitype.RoleFenced
		case domain.NodeRoleDemoted:
			nd.Role = apitype.RoleDemoted
		case domain.NodeRoleReplica:
			nd.Role, nd.Upstream = apitype.RoleReplica, role.Upstream
			if up := byID[role.Upstream]; up != nil {
				nd.PrimaryAddress = up.Address
				nd.PrimaryName = domain.NodeName(up, svc, in.Zone)
			}
		default:
			if r := svc.Replication; r != nil {
				nd.SyncStandbyNames = r.StandbyNames
			}
			if svc.NodeCount > 1 && in.Lease > 0 {
				nd.LeaseMillis, nd.LeaseSeconds = in.Lease.Milliseconds(), int(in.Lease/time.Second)
			}
		}
		if in.ArchiveDir != "" {
			nd.Archive = &apitype.NodeArchive{Region: svc.Region, StoreDir: in.ArchiveDir}
			if nd.BackupAuthKey, err = authKey(in, svc); err != nil {
				return out, fmt.Errorf("node %s: %w", n.ID, err)
			}
		}
		if nd.Role == apitype.RolePrimary && nd.State != domain.StateDeleting {
			nd.Tasks = tasks(in.Ops[svc.ID])
			if nd.Restore, err = restore(in, svc, n); err != nil {
				return out, fmt.Errorf("node %s: %w", n.ID, err)
			}
		}
		if nd.Ops, err = compileOps(in, n); err != nil {
			return out, fmt.Errorf("node %s: %w", n.ID, err)
		}
		out.Nodes = append(out.Nodes, nd)
	}
	slices.Sort(out.Deleted)
	slices.SortFunc(out.Nodes, func(a, b apitype.NodeDesired) int {
		if a.NodeID < b.NodeID {
			return -1
		}
		if a.NodeID > b.NodeID {
			return 1
		}
		return 0
	})
	return out, nil
}

// tasks are the node tasks of a service's running backup and WAL-switch
// operations, for its primary.
func tasks(ops []*domain.Operation) []apitype.NodeTask {
	var out []apitype.NodeTask
	for _, op := range ops {
		if op.State != domain.StateRunning {
			continue
		}
		switch op.Type {
		case domain.OpServiceBackup:
			out = append(out, apitype.NodeTask{ID: op.ID, Type: apitype.TaskBaseBackup})
		case domain.OpServiceSwitchWAL:
			out = append(out, apitype.NodeTask{ID: op.ID, Type: apitype.TaskSwitchWAL})
		}
	}
	return out
}

// restore is what a restored service's primary n starts from, until it
// has run: the source's private key only while the restore operation is at
// its restore step. After a failed restore the node keeps waiting for a
// key (it never starts an empty database in the restored service's name).
func restore(in Input, svc *domain.Service, n *domain.Node) (*apitype.NodeRestore, error) {
	if svc.RestoreFrom == "" || n.State == domain.StateRunning {
		return nil, nil
	}
	src := in.Sources[svc.RestoreFrom]
	if src == nil {
		return nil, fmt.Errorf("restore source %s missing", svc.RestoreFrom)
	}
	r := &apitype.NodeRestore{SourceServiceID: src.ID, SourcePublicKeyPEM: src.BackupPublicKeyPEM, BackupLabel: svc.RestoreBackup}
	if !svc.RestoreToTime.IsZero() {
		t := svc.RestoreToTime
		r.ToTime = &t
	}
	for _, op := range in.Ops[svc.ID] {
		if op.ID == svc.OperationID && op.Type == domain.OpServiceRestore && op.State == domain.StateRunning && op.Step == domain.StepRestore &&
			len(src.BackupKeySealed) > 0 { // none: the source was deleted, its key destroyed
			key, err := in.Open(src.BackupKeySealed, domain.BackupKeyAD(src.ID))
			if err != nil {
				return nil, fmt.Errorf("unseal the backup key of %s: %w", src.ID, err)
			}
			r.PrivateKeyPEM = string(key)
		}
	}
	return r, nil
}

// authKey is the authentication key of svc's backups, for the agent of
// its nodes (nil while the service has no key pair).
func authKey(in Input, svc *domain.Service) ([]byte, error) {
	if len(svc.BackupKeySealed) == 0 {
		return nil, nil
	}
	priv, err := in.Open(svc.BackupKeySealed, domain.BackupKeyAD(svc.ID))
	if err != nil {
		return nil, fmt.Errorf("unseal the backup key of %s: %w", svc.ID, err)
	}
	return backup.AuthKey(priv)
}

func strs(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// Load reads Compile's input for host from tx at the store's current
// revision. It reads by host (the store's host index): the host's nodes,
// then their services and what those read, never the rest of the
// platform.
func Load(ctx context.Context, tx store.Tx, host, zone string) (Input, error) {
	in := Input{Host: host, Zone: zone, Services: map[string]*domain.Service{}, Projects: map[string]*domain.Project{}, VPCs: map[string]*domain.VPC{},
		Ops: map[string][]*domain.Operation{}, Sources: map[string]*domain.Service{}}
	mine, err := store.List[domain.Node](ctx, tx, store.Query{Host: host})
	if err != nil {
		return in, err
	}
	for _, m := range mine {
		if in.Services[m.ServiceID] != nil {
			continue
		}
		svc, err := store.Get[domain.Service](ctx, tx, m.ServiceID)
		if err != nil {
			return in, fmt.Errorf("node %s: %w", m.ID, err)
		}
		in.Services[svc.ID] = svc
		nodes, err := store.List[domain.Node](ctx, tx, store.Query{Parent: svc.ID})
		if err != nil {
			return in, err
		}
		in.Nodes = append(in.Nodes, nodes...)
		ops, err := store.List[domain.Operation](ctx, tx, store.Query{ProjectID: svc.ProjectID, Parent: svc.ID, States: domain.LiveOperationStates})
		if err != nil {
			return in, err
		}
		in.Ops[svc.ID] = ops
		if svc.RestoreFrom != "" {
			src, err := store.Get[domain.Service](ctx, tx, svc.RestoreFrom)
			if err != nil {
				return in, fmt.Errorf("service %s: restore source: %w", svc.ID, err)
			}
			in.Sources[src.ID] = src
		}
		if in.Projects[svc.ProjectID] == nil {
			p, err := store.Get[domain.Project](ctx, tx, svc.ProjectID)
			if err != nil {
				return in, err
			}
			in.Projects[p.ID] = p
		}
		if svc.VPCID != "" && in.VPCs[svc.VPCID] == nil {
			v, err := store.Get[domain.VPC](ctx, tx, svc.VPCID)
			if err != nil {
				return in, err
			}
			in.VPCs[v.ID] = v
			ps, err := store.List[domain.Peering](ctx, tx, store.Query{ProjectID: v.ProjectID, Parent: v.ID})
			if err != nil {
				return in, err
			}
			in.Peerings = append(in.Peerings, ps...)
		}
	}
	return in, loadOps(ctx, tx, &in)
}
