package domain

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var useast = DefaultCatalog().Regions[0]

// host is an active host of us-east-1 that heartbeat at t0.
func host(name, az string, capacity int) *Host {
	return &Host{Meta: Meta{ID: "host-" + name, Name: name, State: StateActive, CreatedAt: t0}, Region: "us-east-1", AZ: az, Capacity: capacity, LastHeartbeatAt: t0}
}

func placed(id, host, az string) *Node {
	return &Node{Meta: Meta{ID: id, State: StateRunning}, Host: host, AZ: az}
}

func TestPlace(t *testing.T) {
	a1, a2 := host("a1", "us-east-1a", 2), host("a2", "us-east-1a", 2)
	b1, c1 := host("b1", "us-east-1b", 2), host("c1", "us-east-1c", 2)
	down := host("b2", "us-east-1b", 9)
	down.State = StateDown
	stale := host("c2", "us-east-1c", 9)
	stale.LastHeartbeatAt = t0.Add(-time.Hour)
	draining := host("c3", "us-east-1c", 9)
	draining.State = StateDraining
	other := &Host{Meta: Meta{Name: "e1", State: StateActive}, Region: "eu-west-1", AZ: "eu-west-1a", Capacity: 9, LastHeartbeatAt: t0}
	all := []*Host{c1, b1, a2, a1, down, stale, draining, other}
	for _, tc := range []struct {
		name    string
		req     PlacementRequest
		hosts   []*Host
		load    map[string]int
		want    []Slot
		wantErr *errSummary
		wantMsg string
	}{
		{"three nodes, one per AZ, least loaded then name", PlacementRequest{Region: useast, Count: 3}, all, map[string]int{"a1": 1},
			[]Slot{{"a2", "us-east-1a"}, {"b1", "us-east-1b"}, {"c1", "us-east-1c"}}, nil, ""},
		{"least loaded AZ first", PlacementRequest{Region: useast, Count: 1}, all, map[string]int{"a1": 1, "a2": 1, "c1": 1},
			[]Slot{{"b1", "us-east-1b"}}, nil, ""},
		{"full hosts skipped", PlacementRequest{Region: useast, Count: 1}, []*Host{a1, a2}, map[string]int{"a1": 2},
			[]Slot{{"a2", "us-east-1a"}}, nil, ""},
		{"kept nodes take their host and AZ", PlacementRequest{Region: useast, Count: 1, Keep: []*Node{placed("node-p", "a1", "us-east-1a"), placed("node-r", "b1", "us-east-1b")}}, all, nil,
			[]Slot{{"c1", "us-east-1c"}}, nil, ""},
		{"replacement prefers the lost node's AZ", PlacementRequest{Region: useast, Count: 1, Keep: []*Node{placed("node-p", "b1", "us-east-1b")},
			Leaving: []*Node{placed("node-l", "a1", "us-east-1a")}, PreferAZ: "us-east-1a"}, all, map[string]int{"a2": 1},
			[]Slot{{"a2", "us-east-1a"}}, nil, ""},
		{"replacement elsewhere when its AZ is full", PlacementRequest{Region: useast, Count: 1, Keep: []*Node{placed("node-p", "b1", "us-east-1b")},
			Leaving: []*Node{placed("node-l", "a1", "us-east-1a")}, PreferAZ: "us-east-1a"}, all, map[string]int{"a1": 2, "a2": 2},
			[]Slot{{"c1", "us-east-1c"}}, nil, ""},
		{"a leaving node's host only as a last resort", PlacementRequest{Region: useast, Count: 1, Leaving: []*Node{placed("node-l", "a2", "us-east-1a")}, PreferAZ: "us-east-1a"},
			[]*Host{a1, a2}, map[string]int{"a1": 1, "a2": 1}, []Slot{{"a1", "us-east-1a"}}, nil, ""},
		{"two healthy AZs for three nodes", PlacementRequest{Region: useast, Count: 3}, []*Host{a1, a2, b1, down, stale, draining}, nil, nil,
			&errSummary{CodeNotEnoughAZs, "nodes", "add hosts in other AZs of us-east-1 (moat host add NAME --region us-east-1 --az AZ), or ask for fewer nodes"},
			"us-east-1 has 2 healthy AZs; a 3-node service needs 3"},
		{"replacement with the only free AZ down", PlacementRequest{Region: useast, Count: 1, Keep: []*Node{placed("node-p", "a1", "us-east-1a"), placed("node-r", "c1", "us-east-1c")}},
			[]*Host{a1, c1, down}, nil, nil,
			&errSummary{CodeNotEnoughAZs, "nodes", "add hosts in other AZs of us-east-1 (moat host add NAME --region us-east-1 --az AZ), or ask for fewer nodes"},
			"us-east-1 has 2 healthy AZs; a 3-node service needs 3"},
		{"no room", PlacementRequest{Region: useast, Count: 2}, []*Host{a1, b1}, map[string]int{"b1": 2}, nil,
			&errSummary{CodeNoCapacity, "nodes", "raise a host's capacity (moat host update NAME --capacity N) or add a host in us-east-1b"},
			"us-east-1 has room for this service in 1 AZ (full: us-east-1b); a 2-node service needs 2"},
		{"nothing to place", PlacementRequest{Region: useast}, nil, nil, nil, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Place(tc.req, Fleet{Hosts: tc.hosts, Load: tc.load, Now: t0.Add(time.Second), HeartbeatTimeout: hbTimeout})
			if diff := cmp.Diff(tc.wantErr, summarize(err)); diff != "" {
				t.Fatalf("Place error (-want +got):\n%s", diff)
			}
			if err != nil && AsError(err).Msg != tc.wantMsg {
				t.Errorf("Place message = %q, want %q", AsError(err).Msg, tc.wantMsg)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Place (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadOf(t *testing.T) {
	got := LoadOf([]*Node{placed("n1", "a", "x"), placed("n2", "a", "x"), {Meta: Meta{State: StateDeleted}, Host: "a"}, {Meta: Meta{State: StateCreating}}})
	if diff := cmp.Diff(map[string]int{"a": 2}, got); diff != "" {
		t.Errorf("LoadOf (-want +got):\n%s", diff)
	}
}

// FuzzPlace: whatever the fleet, Place never puts two nodes of a service
// on one host or in one AZ (kept nodes included), never over a host's
// capacity nor on a host that is not schedulable, and fails only when no
// placement exists (checked by brute force).
func FuzzPlace(f *testing.F) {
	f.Add(uint64(0x0123456789abcdef), uint8(3), uint8(0))
	f.Add(uint64(0xfedcba9876543210), uint8(1), uint8(2))
	f.Add(uint64(42), uint8(2), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, count, keep uint8) {
		rnd := seed
		next := func(n int) int { // xorshift, deterministic per seed
			rnd ^= rnd << 13
			rnd ^= rnd >> 7
			rnd ^= rnd << 17
			return int(rnd % uint64(n))
		}
		var hosts []*Host
		load := map[string]int{}
		states := []string{StateActive, StateActive, StateActive, StateDraining, StateDown}
		for i := range 1 + next(7) {
			h := host(fmt.Sprintf("h%d", i), useast.AZs[next(3)], 1+next(3))
			h.State = states[next(len(states))]
			if next(5) == 0 {
				h.LastHeartbeatAt = t0.Add(-time.Hour)
			}
			load[h.Name] = next(4)
			hosts = append(hosts, h)
		}
		req := PlacementRequest{Region: useast, Count: 1 + int(count%3), PreferAZ: useast.AZs[next(3)]}
		for i := range int(keep % 3) {
			h := hosts[next(len(hosts))]
			req.Keep = append(req.Keep, placed(fmt.Sprintf("node-k%d", i), h.Name, h.AZ))
		}
		fl := Fleet{Hosts: hosts, Load: load, Now: t0, HeartbeatTimeout: hbTimeout}
		slots, err := Place(req, fl)
		possible := placeable(req, fl, map[string]bool{}, map[string]bool{}, 0)
		keepOK := distinctNodes(req.Keep)
		if err != nil {
			if AsError(err) == nil {
				t.Fatalf("Place returned a non-domain error %v", err)
			}
			if possible && keepOK {
				t.Fatalf("Place(%+v) = %v, but a placement exists", req, err)
			}
			return
		}
		if len(slots) != req.Count {
			t.Fatalf("Place returned %d slots for %d nodes", len(slots), req.Count)
		}
		usedHost, usedAZ := map[string]bool{}, map[string]bool{}
		for _, n := range req.Keep {
			usedHost[n.Host], usedAZ[n.AZ] = true, true
		}
		byName := map[string]*Host{}
		for _, h := range hosts {
			byName[h.Name] = h
		}
		for _, s := range slots {
			h := byName[s.Host]
			if usedHost[s.Host] || usedAZ[s.AZ] {
				t.Fatalf("Place(%+v) = %v: host %s or AZ %s used twice", req, slots, s.Host, s.AZ)
			}
			usedHost[s.Host], usedAZ[s.AZ] = true, true
			if h == nil || h.AZ != s.AZ || !h.Schedulable(t0, hbTimeout) || load[h.Name] >= h.Capacity {
				t.Fatalf("Place(%+v) = %v: slot %v is not a schedulable host with room", req, slots, s)
			}
		}
	})
}

// distinctNodes reports whether the nodes stand on distinct hosts and AZs.
func distinctNodes(nodes []*Node) bool {
	h, a := map[string]bool{}, map[string]bool{}
	for _, n := range nodes {
		if h[n.Host] || a[n.AZ] {
			return false
		}
		h[n.Host], a[n.AZ] = true, true
	}
	return true
}

// placeable is the brute-force answer: can req.Count-i more nodes be
// placed on distinct free hosts and AZs?
func placeable(req PlacementRequest, f Fleet, host, az map[string]bool, i int) bool {
	if i == 0 {
		for _, n := range req.Keep {
			host[n.Host], az[n.AZ] = true, true
		}
	}
	if i == req.Count {
		return true
	}
	for _, h := range f.Hosts {
		if host[h.Name] || az[h.AZ] || !h.Schedulable(f.Now, f.HeartbeatTimeout) || f.Load[h.Name] >= h.Capacity {
			continue
		}
		host[h.Name], az[h.AZ] = true, true
		ok := placeable(req, f, host, az, i+1)
		host[h.Name], az[h.AZ] = false, false
		if ok {
			return true
		}
	}
	return false
}
