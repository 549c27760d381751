package desired

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/store/sqlitestore"
)

// platform is a store holding one project and its services' nodes on
// hosts: svc-a on h1 and h2, svc-b (in vpc-1, with a peering) on h2 and
// h3, svc-c on h3.
func platform(t *testing.T) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "moat.db"), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	objs := []domain.Object{
		&domain.Project{Meta: domain.Meta{ID: "proj-1", State: domain.StateActive}},
		&domain.VPC{Meta: domain.Meta{ID: "vpc-1", ProjectID: "proj-1", State: domain.StateActive}},
		&domain.Peering{Meta: domain.Meta{ID: "pcx-1", ProjectID: "proj-1", State: domain.StateActive}, VPCID: "vpc-1"},
		&domain.Service{Meta: domain.Meta{ID: "svc-a", ProjectID: "proj-1", State: domain.StateRunning}},
		&domain.Service{Meta: domain.Meta{ID: "svc-b", ProjectID: "proj-1", State: domain.StateRunning}, VPCID: "vpc-1"},
		&domain.Service{Meta: domain.Meta{ID: "svc-c", ProjectID: "proj-1", State: domain.StateRunning}},
	}
	for i, nh := range [][2]string{{"svc-a", "h1"}, {"svc-a", "h2"}, {"svc-b", "h2"}, {"svc-b", "h3"}, {"svc-c", "h3"}} {
		objs = append(objs, &domain.Node{Meta: domain.Meta{ID: fmt.Sprintf("node-%d", i), ProjectID: "proj-1", State: domain.StateRunning},
			ServiceID: nh[0], Host: nh[1]})
	}
	put(t, s, objs...)
	return s
}

func put(t *testing.T, s store.Store, objs ...domain.Object) {
	t.Helper()
	err := s.Update(t.Context(), func(tx store.Tx) error {
		for _, o := range objs {
			if err := store.Put(t.Context(), tx, o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func load(t *testing.T, s store.Store, host string) Input {
	t.Helper()
	var in Input
	err := s.View(t.Context(), func(tx store.Tx) (err error) {
		in, err = Load(t.Context(), tx, host, "moat.test")
		return err
	})
	if err != nil {
		t.Fatalf("Load(%s): %v", host, err)
	}
	return in
}

func TestLoadReadsByHost(t *testing.T) {
	s := platform(t)
	nodeIDs := func(in Input) []string {
		var out []string
		for _, n := range in.Nodes {
			out = append(out, n.ID)
		}
		slices.Sort(out)
		return out
	}
	for _, tt := range []struct {
		host      string
		nodes     []string
		peerings  int
		servicesN int
	}{
		{"h1", []string{"node-0", "node-1"}, 0, 1},
		{"h2", []string{"node-0", "node-1", "node-2", "node-3"}, 1, 2},
		{"h3", []string{"node-2", "node-3", "node-4"}, 1, 2},
		{"h-none", nil, 0, 0},
	} {
		in := load(t, s, tt.host)
		if diff := cmp.Diff(tt.nodes, nodeIDs(in)); diff != "" {
			t.Errorf("Load(%s) nodes (-want +got):\n%s", tt.host, diff)
		}
		if len(in.Services) != tt.servicesN || len(in.Peerings) != tt.peerings {
			t.Errorf("Load(%s) = %d services, %d peerings; want %d, %d", tt.host, len(in.Services), len(in.Peerings), tt.servicesN, tt.peerings)
		}
	}

	// What a host's load reads does not grow with the rest of the
	// platform.
	before := s.RecordsRead()
	load(t, s, "h1")
	reads := s.RecordsRead() - before
	var more []domain.Object
	for i := range 200 {
		svc := fmt.Sprintf("svc-x%d", i)
		more = append(more, &domain.Service{Meta: domain.Meta{ID: svc, ProjectID: "proj-1", State: domain.StateRunning}})
		for j := range 3 {
			more = append(more, &domain.Node{Meta: domain.Meta{ID: fmt.Sprintf("node-x%d-%d", i, j), ProjectID: "proj-1", State: domain.StateRunning},
				ServiceID: svc, Host: fmt.Sprintf("hx%d", (i+j)%50)})
		}
	}
	put(t, s, more...)
	before = s.RecordsRead()
	load(t, s, "h1")
	if got := s.RecordsRead() - before; got != reads {
		t.Errorf("Load(h1) read %d records with 800 more on other hosts, %d before", got, reads)
	}
}

func TestHostsAndBump(t *testing.T) {
	s := platform(t)
	ctx := t.Context()
	for _, tt := range []struct {
		a    Affected
		want []string
	}{
		{Affected{Services: []string{"svc-a"}}, []string{"h1", "h2"}},
		{Affected{Services: []string{"svc-b", "svc-a", "svc-b"}}, []string{"h1", "h2", "h3"}},
		{Affected{VPCs: []string{"vpc-1"}}, []string{"h2", "h3"}},
		{Affected{Hosts: []string{"h9", ""}, Services: []string{"svc-missing", ""}}, []string{"h9"}},
		{Affected{}, []string{}},
	} {
		var got []string
		err := s.View(ctx, func(tx store.Tx) (err error) { got, err = Hosts(ctx, tx, tt.a); return err })
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Hosts(%+v) (-want +got):\n%s", tt.a, diff)
		}
	}

	var rev int64
	err := s.Update(ctx, func(tx store.Tx) (err error) {
		rev, err = Bump(ctx, tx, Affected{Services: []string{"svc-c"}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, h := range []string{"h1", "h2", "h3"} {
		if got[h], err = s.HostRevision(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(map[string]int64{"h1": 0, "h2": 0, "h3": rev}, got); diff != "" {
		t.Errorf("host revisions after Bump(svc-c) (-want +got):\n%s", diff)
	}
	if r, err := s.WaitHostRevision(context.Background(), "h3", 0); err != nil || r != rev {
		t.Errorf("WaitHostRevision(h3, 0) = %d, %v; want %d", r, err, rev)
	}
}
