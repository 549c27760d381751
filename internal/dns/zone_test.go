package dns_test

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/dns"
	"github.com/moatdb/moat/internal/domain"
)

const (
	proj  = "proj-aaaaaaaaaaaaaaaa"
	proj2 = "proj-bbbbbbbbbbbbbbbb"
	vpc   = "vpc-cccccccccccccccc"
)

func svc(id, project, state, vpcID string) *domain.Service {
	return &domain.Service{Meta: domain.Meta{ID: id, ProjectID: project, State: state}, VPCID: vpcID}
}

func node(id, svcID string, index int, state, addr string) *domain.Node {
	return &domain.Node{Meta: domain.Meta{ID: id, ProjectID: proj, State: state}, ServiceID: svcID, Index: index, Address: addr}
}

func rec(name, addr string) dns.Record {
	return dns.Record{Name: name, Addr: netip.MustParseAddr(addr)}
}

func TestBuild(t *testing.T) {
	run := domain.StateRunning
	tests := []struct {
		name     string
		services []*domain.Service
		nodes    []*domain.Node
		ns       []dns.Nameserver
		want     []dns.Record
	}{
		{name: "empty"},
		{
			name:     "public service: public name to the primary",
			services: []*domain.Service{svc("svc-pub", proj, run, "")},
			nodes: []*domain.Node{
				node("node-b", "svc-pub", 1, run, "198.18.1.11"),
				node("node-a", "svc-pub", 0, run, "198.18.1.10"),
			},
			want: []dns.Record{
				rec("ro.svc-pub.proj-aaaaaaaaaaaaaaaa.moat.test.", "198.18.1.11"),
				rec("svc-pub.proj-aaaaaaaaaaaaaaaa.moat.test.", "198.18.1.10"),
			},
		},
		{
			name: "after a failover the name follows the moved primary; the read-only name holds the running replicas",
			services: []*domain.Service{func() *domain.Service {
				s := svc("svc-fo", proj, domain.StateDegraded, "")
				s.PrimaryID = "node-b"
				return s
			}()},
			nodes: []*domain.Node{
				node("node-a", "svc-fo", 0, domain.StateDeleting, "198.18.1.10"),
				node("node-b", "svc-fo", 1, run, "198.18.1.11"),
				node("node-c", "svc-fo", 2, run, "198.18.1.12"),
				node("node-d", "svc-fo", 0, domain.StateCreating, "198.18.1.13"),
			},
			want: []dns.Record{
				rec("ro.svc-fo.proj-aaaaaaaaaaaaaaaa.moat.test.", "198.18.1.12"),
				rec("svc-fo.proj-aaaaaaaaaaaaaaaa.moat.test.", "198.18.1.11"),
			},
		},
		{
			name:     "attached service: private name only",
			services: []*domain.Service{svc("svc-priv", proj, run, vpc)},
			nodes:    []*domain.Node{node("node-a", "svc-priv", 0, run, "10.0.0.5")},
			want:     []dns.Record{rec("svc-priv.proj-aaaaaaaaaaaaaaaa.vpc.moat.test.", "10.0.0.5")},
		},
		{
			name:     "a degraded service keeps its name (a replica failed, the primary serves)",
			services: []*domain.Service{svc("svc-deg", proj, domain.StateDegraded, "")},
			nodes:    []*domain.Node{node("node-a", "svc-deg", 0, run, "198.18.1.10")},
			want:     []dns.Record{rec("svc-deg.proj-aaaaaaaaaaaaaaaa.moat.test.", "198.18.1.10")},
		},
		{
			name: "only running and migrating services",
			services: []*domain.Service{
				svc("svc-creating", proj, domain.StateCreating, ""),
				svc("svc-migrating", proj, domain.StateMigrating, vpc),
				svc("svc-deleting", proj, domain.StateDeleting, ""),
				svc("svc-failed", proj, domain.StateFailed, ""),
				svc("svc-deleted", proj, domain.StateDeleted, ""),
			},
			nodes: []*domain.Node{
				node("node-1", "svc-creating", 0, domain.StateCreating, "198.18.1.1"),
				node("node-2", "svc-migrating", 0, run, "10.0.0.2"),
				node("node-3", "svc-deleting", 0, run, "198.18.1.3"),
				node("node-4", "svc-failed", 0, run, "198.18.1.4"),
				node("node-5", "svc-deleted", 0, domain.StateDeleted, "198.18.1.5"),
			},
			want: []dns.Record{rec("svc-migrating.proj-aaaaaaaaaaaaaaaa.vpc.moat.test.", "10.0.0.2")},
		},
		{
			name: "no usable primary: nothing",
			services: []*domain.Service{
				svc("svc-noaddr", proj, run, ""),
				svc("svc-v6", proj, run, ""),
				svc("svc-gone", proj, run, ""),
				svc("svc-nonodes", proj, run, ""),
				svc("svc-replicaonly", proj, run, ""),
			},
			nodes: []*domain.Node{
				node("node-1", "svc-noaddr", 0, run, ""),
				node("node-2", "svc-v6", 0, run, "2001:db8::1"),
				node("node-3", "svc-gone", 0, domain.StateDeleting, "198.18.1.3"),
				node("node-4", "svc-replicaonly", 1, run, "198.18.1.4"),
			},
		},
		{
			name:     "a running primary wins over a creating one, whatever the order",
			services: []*domain.Service{svc("svc-x", proj, run, "")},
			nodes: []*domain.Node{
				node("node-a", "svc-x", 0, domain.StateCreating, "198.18.1.1"),
				node("node-z", "svc-x", 0, run, "198.18.1.2"),
				node("node-old", "svc-x", 0, domain.StateDeleted, "198.18.1.3"),
			},
			want: []dns.Record{rec("svc-x.proj-aaaaaaaaaaaaaaaa.moat.test.", "198.18.1.2")},
		},
		{
			name: "IPv4-mapped address, upper-case IDs, malformed IDs",
			services: []*domain.Service{
				svc("svc-Mapped", proj, run, ""),
				svc("svc-a.evil", proj, run, ""),
				svc("svc-b", "", run, ""),
			},
			nodes: []*domain.Node{
				node("node-1", "svc-Mapped", 0, run, "::ffff:198.18.1.1"),
				node("node-2", "svc-a.evil", 0, run, "198.18.1.2"),
				node("node-3", "svc-b", 0, run, "198.18.1.3"),
			},
			want: []dns.Record{rec("svc-mapped.proj-aaaaaaaaaaaaaaaa.moat.test.", "198.18.1.1")},
		},
		{
			name:     "in-zone nameserver gets glue, out-of-zone does not",
			services: []*domain.Service{svc("svc-pub", proj2, run, "")},
			nodes:    []*domain.Node{node("node-a", "svc-pub", 0, run, "198.18.1.10")},
			ns: []dns.Nameserver{
				{Name: "NS1.moat.test", Addr: netip.MustParseAddr("198.18.0.53")},
				{Name: "ns.example.org.", Addr: netip.MustParseAddr("192.0.2.1")},
			},
			want: []dns.Record{
				rec("ns1.moat.test.", "198.18.0.53"),
				rec("svc-pub.proj-bbbbbbbbbbbbbbbb.moat.test.", "198.18.1.10"),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z, err := dns.Build("Moat.Test", 42, tc.services, tc.nodes, tc.ns...)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if diff := cmp.Diff(tc.want, z.Records(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Build records (-want +got):\n%s", diff)
			}
			if z.Origin() != "moat.test." || z.Serial() != 42 {
				t.Errorf("Build = origin %q serial %d, want moat.test. 42", z.Origin(), z.Serial())
			}
		})
	}
}

func TestBuildDefaultNameserver(t *testing.T) {
	z, err := dns.Build("moat.test", 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := z.Nameservers(), []string{"ns.moat.test."}; !cmp.Equal(got, want) {
		t.Errorf("Nameservers() = %v, want %v", got, want)
	}
}

func TestBuildInvalid(t *testing.T) {
	for _, tc := range []struct {
		origin string
		ns     []dns.Nameserver
	}{
		{origin: ""},
		{origin: "."},
		{origin: "a..b"},
		{origin: "a\\.b"},
		{origin: "moat.test", ns: []dns.Nameserver{{Name: "a..b"}}},
		{origin: "moat.test", ns: []dns.Nameserver{{Name: "ns.moat.test", Addr: netip.MustParseAddr("2001:db8::1")}}},
	} {
		if _, err := dns.Build(tc.origin, 1, nil, nil, tc.ns...); err == nil {
			t.Errorf("Build(%q, %v) = nil error, want one", tc.origin, tc.ns)
		}
	}
}
