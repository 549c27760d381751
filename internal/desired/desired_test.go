package desired

import (
	"bytes"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/domain"
)

func open(sealed, ad []byte) ([]byte, error) {
	if string(sealed) == "" {
		return nil, errors.New("nothing sealed")
	}
	if strings.HasPrefix(string(ad), "service-backup-key:") { // a PEM, as backup.AuthKey needs
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ad}), nil
	}
	return []byte("key-of:" + string(ad)), nil
}

func TestCompile(t *testing.T) {
	proj := &domain.Project{Meta: domain.Meta{ID: "proj-a"}, CACertPEM: "PROJECT-CA"}
	pub := &domain.Service{Meta: domain.Meta{ID: "svc-pub", ProjectID: "proj-a", State: domain.StateRunning},
		AllowedIPs: []domain.AllowEntry{{CIDR: "198.19.0.5/32"}, {CIDR: "2001:db8::/32"}}, AllowlistRevision: 7, AdminVerifier: "SCRAM",
		// max_connections 300 is pending a restart: node-p0 runs 200.
		Settings: map[string]string{"statement_timeout": "5s", "max_connections": "300"}, NodeSettings: map[string]string{"max_connections": "200"}}
	priv := &domain.Service{Meta: domain.Meta{ID: "svc-priv", ProjectID: "proj-a", State: domain.StateRunning}, VPCID: "vpc-a",
		AllowedIPs: domain.DefaultAllowlist(), AllowlistRevision: 2}
	vpc := &domain.VPC{Meta: domain.Meta{ID: "vpc-a", State: domain.StateActive}, CIDR: "10.0.0.0/17"}
	pcx := []*domain.Peering{
		{Meta: domain.Meta{State: domain.StateActive}, VPCID: "vpc-a", PeerCIDRs: []string{"172.31.0.0/16"}},
		{Meta: domain.Meta{State: domain.StatePendingAcceptance}, VPCID: "vpc-a", PeerCIDRs: []string{"192.168.0.0/16"}},
	}
	node := func(id, svc string, idx int, host, addr string) *domain.Node {
		return &domain.Node{Meta: domain.Meta{ID: id, ProjectID: "proj-a", State: domain.StateRunning}, ServiceID: svc, Index: idx,
			Host: host, Namespace: "moat-h-" + id, Address: addr, CertPEM: "CERT-" + id, KeySealed: []byte("s"), ReplCertPEM: "RCERT", ReplKeySealed: []byte("r")}
	}
	deleted := func(n *domain.Node) *domain.Node {
		n.State = domain.StateDeleted
		return n
	}
	p0 := node("node-p0", "svc-pub", 0, "h1", "198.18.1.1")
	p0.Settings = map[string]string{"max_connections": "200"}
	in := Input{
		Host: "h1", Revision: 42, Zone: "moat.test",
		Nodes: []*domain.Node{
			p0,
			node("node-p1", "svc-pub", 1, "h2", "198.18.1.2"),
			node("node-v0", "svc-priv", 0, "h1", "10.0.0.5"),
			node("node-unplaced", "svc-pub", 2, "h1", ""),
			deleted(node("node-gone", "svc-pub", 3, "h1", "198.18.1.9")),
			deleted(node("node-gone-h2", "svc-pub", 4, "h2", "198.18.1.10")),
		},
		Services:      map[string]*domain.Service{"svc-pub": pub, "svc-priv": priv},
		Projects:      map[string]*domain.Project{"proj-a": proj},
		VPCs:          map[string]*domain.VPC{"vpc-a": vpc},
		Peerings:      pcx,
		InternalCAPEM: "INTERNAL-CA",
		Open:          open,
	}
	got, err := Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	want := apitype.HostDesired{Host: "h1", Revision: 42, Nodes: []apitype.NodeDesired{
		{NodeID: "node-p0", ServiceID: "svc-pub", ProjectID: "proj-a", Index: 0, Role: "primary", State: "running",
			Namespace: "moat-h-node-p0", Address: "198.18.1.1", Port: 5432, Database: "defaultdb", AdminUser: "moatadmin",
			AdminVerifier: "SCRAM", ReplicationUser: "moat_replication",
			TLS: apitype.NodeTLS{CertPEM: "CERT-node-p0", KeyPEM: "key-of:node-key:node-p0", ProjectCAPEM: "PROJECT-CA",
				InternalCAPEM: "INTERNAL-CA", ReplCertPEM: "RCERT", ReplKeyPEM: "key-of:node-repl-key:node-p0"},
			AllowV4: []string{"198.19.0.5/32"}, AllowV6: []string{"2001:db8::/32"}, Peers: []string{"198.18.1.2/32"}, AllowlistRevision: 7,
			PeerNodes: []apitype.PeerNode{{NodeID: "node-p1", Address: "198.18.1.2"}},
			Settings:  map[string]string{"statement_timeout": "5s", "max_connections": "200"}},
		{NodeID: "node-v0", ServiceID: "svc-priv", ProjectID: "proj-a", Index: 0, Role: "primary", State: "running",
			Namespace: "moat-h-node-v0", Address: "10.0.0.5", Port: 5432, Database: "defaultdb", AdminUser: "moatadmin",
			ReplicationUser: "moat_replication",
			TLS: apitype.NodeTLS{CertPEM: "CERT-node-v0", KeyPEM: "key-of:node-key:node-v0", ProjectCAPEM: "PROJECT-CA",
				InternalCAPEM: "INTERNAL-CA", ReplCertPEM: "RCERT", ReplKeyPEM: "key-of:node-repl-key:node-v0"},
			AllowV4: []string{"10.0.0.0/17", "172.31.0.0/16"}, AllowV6: []string{}, Peers: []string{}, AllowlistRevision: 2},
	}, Deleted: []string{"node-gone"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Compile mismatch (-want +got):\n%s", diff)
	}
	// The replica on the other host follows the primary.
	in.Host = "h2"
	got, err = Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Nodes) != 1 || got.Nodes[0].Role != "replica" || got.Nodes[0].PrimaryAddress != "198.18.1.1" ||
		got.Nodes[0].PrimaryName != "node-p0.svc-pub.proj-a.moat.test" {
		t.Errorf("replica desired = %+v", got.Nodes)
	}
}

// TestCompileBackups: the archive goes to every node, tasks of running
// backup and WAL-switch operations to the primary only, a node of a
// service without its backup key waits, and a restored primary gets the
// source's private key only at the restore step.
func TestCompileBackups(t *testing.T) {
	proj := &domain.Project{Meta: domain.Meta{ID: "proj-a"}, CACertPEM: "PROJECT-CA"}
	src := &domain.Service{Meta: domain.Meta{ID: "svc-src", ProjectID: "proj-a", State: domain.StateRunning}, Region: "us-east-1",
		BackupPublicKeyPEM: "SRC-PUB", BackupKeySealed: []byte("sealed")}
	to := mustTime(t, "2026-11-23T10:00:00Z")
	dst := &domain.Service{Meta: domain.Meta{ID: "svc-dst", ProjectID: "proj-a", State: domain.StateCreating}, Region: "us-east-1",
		BackupPublicKeyPEM: "DST-PUB", BackupKeySealed: []byte("sealed"), RestoreFrom: "svc-src", RestoreToTime: to, RestoreBackup: "20261123T090000Z", OperationID: "op-restore"}
	nokey := &domain.Service{Meta: domain.Meta{ID: "svc-nokey", ProjectID: "proj-a", State: domain.StateCreating}, Region: "us-east-1"}
	node := func(id, svc string, idx int, state string) *domain.Node {
		return &domain.Node{Meta: domain.Meta{ID: id, ProjectID: "proj-a", State: state}, ServiceID: svc, Index: idx,
			Host: "h1", Namespace: "ns-" + id, Address: "198.18.1." + id[len(id)-1:], KeySealed: []byte("s"), ReplKeySealed: []byte("r")}
	}
	op := func(id, typ, target, state, step string) *domain.Operation {
		return &domain.Operation{Meta: domain.Meta{ID: id, ProjectID: "proj-a", State: state}, Type: typ, TargetID: target, Step: step}
	}
	restoreOp := op("op-restore", domain.OpServiceRestore, "svc-dst", domain.StateRunning, domain.StepSwitchWAL)
	in := Input{
		Host: "h1", Zone: "moat.test", ArchiveDir: "/var/lib/moat/backups",
		Nodes: []*domain.Node{
			node("node-s0", "svc-src", 0, domain.StateRunning), node("node-s1", "svc-src", 1, domain.StateRunning),
			node("node-d0", "svc-dst", 0, domain.StateCreating), node("node-n0", "svc-nokey", 0, domain.StateCreating),
		},
		Services: map[string]*domain.Service{"svc-src": src, "svc-dst": dst, "svc-nokey": nokey},
		Projects: map[string]*domain.Project{"proj-a": proj},
		Ops: map[string][]*domain.Operation{
			"svc-src": {op("op-b", domain.OpServiceBackup, "svc-src", domain.StateRunning, ""), op("op-w", domain.OpServiceSwitchWAL, "svc-src", domain.StateRunning, ""),
				op("op-pending", domain.OpServiceBackup, "svc-src", domain.StatePending, "")},
			"svc-dst": {restoreOp},
		},
		Sources: map[string]*domain.Service{"svc-src": src},
		Open:    open,
	}
	byID := func(d apitype.HostDesired) map[string]apitype.NodeDesired {
		m := map[string]apitype.NodeDesired{}
		for _, n := range d.Nodes {
			m[n.NodeID] = n
		}
		return m
	}
	got, err := Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	nodes := byID(got)
	if _, ok := nodes["node-n0"]; ok {
		t.Errorf("a node of a service without its backup key is in the desired state")
	}
	for _, id := range []string{"node-s0", "node-s1", "node-d0"} {
		if a := nodes[id].Archive; a == nil || a.StoreDir != in.ArchiveDir || a.Region != "us-east-1" {
			t.Errorf("%s archive = %+v", id, a)
		}
		svcKey, _ := open([]byte("sealed"), domain.BackupKeyAD(nodes[id].ServiceID))
		if want, _ := backup.AuthKey(svcKey); len(want) == 0 || !bytes.Equal(nodes[id].BackupAuthKey, want) {
			t.Errorf("%s backup auth key = %x, want %x (its service's)", id, nodes[id].BackupAuthKey, want)
		}
	}
	if bytes.Equal(nodes["node-s0"].BackupAuthKey, nodes["node-d0"].BackupAuthKey) {
		t.Errorf("two services have the same backup auth key")
	}
	wantTasks := []apitype.NodeTask{{ID: "op-b", Type: apitype.TaskBaseBackup}, {ID: "op-w", Type: apitype.TaskSwitchWAL}}
	if diff := cmp.Diff(wantTasks, nodes["node-s0"].Tasks); diff != "" {
		t.Errorf("primary tasks (-want +got):\n%s", diff)
	}
	if len(nodes["node-s1"].Tasks) != 0 || nodes["node-s1"].Restore != nil {
		t.Errorf("replica got tasks %v or a restore", nodes["node-s1"].Tasks)
	}
	wantRestore := &apitype.NodeRestore{SourceServiceID: "svc-src", SourcePublicKeyPEM: "SRC-PUB", BackupLabel: "20261123T090000Z", ToTime: &to}
	if diff := cmp.Diff(wantRestore, nodes["node-d0"].Restore); diff != "" {
		t.Errorf("restore while the source switches WAL (-want +got):\n%s", diff)
	}

	restoreOp.Step = domain.StepRestore
	got, err = Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	srcKey, _ := open([]byte("sealed"), domain.BackupKeyAD("svc-src"))
	wantRestore.PrivateKeyPEM = string(srcKey)
	if diff := cmp.Diff(wantRestore, byID(got)["node-d0"].Restore); diff != "" {
		t.Errorf("restore at its restore step (-want +got):\n%s", diff)
	}

	restoreOp.State = domain.StateFailed // a failed restore: the node waits, keyless
	got, err = Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	wantRestore.PrivateKeyPEM = ""
	if diff := cmp.Diff(wantRestore, byID(got)["node-d0"].Restore); diff != "" {
		t.Errorf("restore after the operation failed (-want +got):\n%s", diff)
	}

	in.Nodes[2].State = domain.StateRunning // restored and running
	got, err = Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	if r := byID(got)["node-d0"].Restore; r != nil {
		t.Errorf("restore of a running node = %+v", r)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestCompileFailover: the roles follow a live failover's step: the lost
// primary fenced, the replicas detached, then the chosen one primary (with
// the synchronous standby names and the lease) and the other following it.
func TestCompileFailover(t *testing.T) {
	proj := &domain.Project{Meta: domain.Meta{ID: "proj-a"}, CACertPEM: "PROJECT-CA"}
	svc := &domain.Service{Meta: domain.Meta{ID: "svc-ha", ProjectID: "proj-a", State: domain.StateDegraded}, NodeCount: 3,
		AllowedIPs: domain.DefaultAllowlist(), Replication: &domain.SyncSetting{StandbyNames: `ANY 1 ("node-b", "node-c")`, Mode: domain.ReplQuorum}}
	node := func(id string, idx int, addr string) *domain.Node {
		return &domain.Node{Meta: domain.Meta{ID: id, ProjectID: "proj-a", State: domain.StateRunning}, ServiceID: "svc-ha", Index: idx,
			Host: "h1", Namespace: "moat-h-" + id, Address: addr, CertPEM: "CERT", KeySealed: []byte("s"), ReplCertPEM: "RCERT", ReplKeySealed: []byte("r")}
	}
	f := &domain.Failover{Step: domain.StepDetach, Lost: "node-a", Promote: "node-b"}
	op := &domain.Operation{Meta: domain.Meta{ID: "op-1", State: domain.StateRunning}, Type: domain.OpServiceFailover, TargetID: "svc-ha", Failover: f}
	in := Input{Host: "h1", Revision: 9, Zone: "moat.test", Lease: 3500 * time.Millisecond, Heartbeat: time.Second,
		Nodes:    []*domain.Node{node("node-a", 0, "198.18.1.1"), node("node-b", 1, "198.18.1.2"), node("node-c", 2, "198.18.1.3")},
		Services: map[string]*domain.Service{"svc-ha": svc}, Projects: map[string]*domain.Project{"proj-a": proj},
		Ops: map[string][]*domain.Operation{"svc-ha": {op}}, Open: open}
	roles := func() map[string]string {
		got, err := Compile(in)
		if err != nil {
			t.Fatal(err)
		}
		if got.HeartbeatMillis != 1000 {
			t.Errorf("heartbeat_ms = %d, want 1000", got.HeartbeatMillis)
		}
		out := map[string]string{}
		for _, n := range got.Nodes {
			out[n.NodeID] = n.Role + ">" + n.Upstream + "@" + n.PrimaryAddress + " " + n.SyncStandbyNames
			primary := n.Role == apitype.RolePrimary
			if (n.LeaseMillis != 0 || n.LeaseSeconds != 0) != primary || (primary && (n.LeaseMillis != 3500 || n.LeaseSeconds != 3)) {
				t.Errorf("lease of %s (%s) = %d ms, %d s; want 3500 ms and 3 s (rounded down) on the primary alone", n.NodeID, n.Role, n.LeaseMillis, n.LeaseSeconds)
			}
		}
		return out
	}
	want := map[string]string{"node-a": "fenced>@ ", "node-b": "replica>@ ", "node-c": "replica>@ "}
	if diff := cmp.Diff(want, roles()); diff != "" {
		t.Errorf("detach step (-want +got):\n%s", diff)
	}
	f.Step = domain.StepRepoint
	want = map[string]string{"node-a": "fenced>@ ", "node-b": `primary>@ ANY 1 ("node-b", "node-c")`, "node-c": "replica>node-b@198.18.1.2 "}
	if diff := cmp.Diff(want, roles()); diff != "" {
		t.Errorf("repoint step (-want +got):\n%s", diff)
	}
	op.State, svc.PrimaryID = domain.StateSucceeded, "node-b"
	in.Nodes[0].State = domain.StateDeleting
	want = map[string]string{"node-a": "fenced>@ ", "node-b": `primary>@ ANY 1 ("node-b", "node-c")`, "node-c": "replica>node-b@198.18.1.2 "}
	got := roles()
	if got["node-b"] != want["node-b"] || got["node-c"] != want["node-c"] {
		t.Errorf("after the failover: %v", got)
	}
}
