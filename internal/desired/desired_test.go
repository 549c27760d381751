package desired

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

func open(sealed, ad []byte) ([]byte, error) {
	if string(sealed) == "" {
		return nil, errors.New("nothing sealed")
	}
	return []byte("key-of:" + string(ad)), nil
}

func TestCompile(t *testing.T) {
	proj := &domain.Project{Meta: domain.Meta{ID: "proj-a"}, CACertPEM: "PROJECT-CA"}
	pub := &domain.Service{Meta: domain.Meta{ID: "svc-pub", ProjectID: "proj-a", State: domain.StateRunning},
		AllowedIPs: []domain.AllowEntry{{CIDR: "198.19.0.5/32"}, {CIDR: "2001:db8::/32"}}, AllowlistRevision: 7, AdminVerifier: "SCRAM"}
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
	in := Input{
		Host: "h1", Revision: 42, Zone: "moat.test",
		Nodes: []*domain.Node{
			node("node-p0", "svc-pub", 0, "h1", "198.18.1.1"),
			node("node-p1", "svc-pub", 1, "h2", "198.18.1.2"),
			node("node-v0", "svc-priv", 0, "h1", "10.0.0.5"),
			node("node-unplaced", "svc-pub", 2, "h1", ""),
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
			AllowV4: []string{"198.19.0.5/32"}, AllowV6: []string{"2001:db8::/32"}, Peers: []string{"198.18.1.2/32"}, AllowlistRevision: 7},
		{NodeID: "node-v0", ServiceID: "svc-priv", ProjectID: "proj-a", Index: 0, Role: "primary", State: "running",
			Namespace: "moat-h-node-v0", Address: "10.0.0.5", Port: 5432, Database: "defaultdb", AdminUser: "moatadmin",
			ReplicationUser: "moat_replication",
			TLS: apitype.NodeTLS{CertPEM: "CERT-node-v0", KeyPEM: "key-of:node-key:node-v0", ProjectCAPEM: "PROJECT-CA",
				InternalCAPEM: "INTERNAL-CA", ReplCertPEM: "RCERT", ReplKeyPEM: "key-of:node-repl-key:node-v0"},
			AllowV4: []string{"10.0.0.0/17", "172.31.0.0/16"}, AllowV6: []string{}, Peers: []string{}, AllowlistRevision: 2},
	}}
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
