package domain

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Placement: where new nodes of a service go. The nodes of one service
// stand on distinct hosts in distinct AZs, within each host's capacity;
// when that is impossible the create, resize or replacement fails with
// an error that says why, never with two nodes sharing a host or an AZ.

// Error codes of placement.
const (
	// CodeNotEnoughAZs: the region has fewer healthy AZs than the service
	// has nodes.
	CodeNotEnoughAZs = "not_enough_azs"
	// CodeNoCapacity: enough healthy AZs, but too few with a host with room.
	CodeNoCapacity = "no_capacity"
)

// Fleet is what placement knows of the platform at one moment: the hosts,
// the live nodes each runs (Load, by host name: every node not gone,
// whatever its service), the time and the heartbeat timeout that makes a
// host unhealthy.
type Fleet struct {
	Hosts            []*Host
	Load             map[string]int
	Now              time.Time
	HeartbeatTimeout time.Duration
}

// LoadOf counts the live nodes on each host (by Node.Host).
func LoadOf(nodes []*Node) map[string]int {
	out := map[string]int{}
	for _, n := range nodes {
		if n.Host != "" && !Gone(n.State) {
			out[n.Host]++
		}
	}
	return out
}

// PlacementRequest asks for Count new nodes of one service in Region.
type PlacementRequest struct {
	Region Region
	Count  int
	// Keep are the service's nodes that stay: their hosts and AZs are
	// taken.
	Keep []*Node
	// Leaving are nodes being replaced (a drain, an upgrade, a lost
	// node): their AZs are free for the new nodes, their hosts are used
	// only when no other host fits.
	Leaving []*Node
	// PreferAZ is tried first (a replacement goes to the lost node's AZ
	// when a healthy host there has room).
	PreferAZ string
}

// Slot is where one new node goes.
type Slot struct {
	Host string `json:"host"`
	AZ   string `json:"az"`
}

// Place chooses a slot for each of req.Count new nodes: schedulable hosts
// (active, healthy) of the region with room, on hosts and in AZs no kept
// node uses, one per AZ. Among the free AZs, PreferAZ comes first, then
// the AZ whose best host is least loaded, then by AZ name; within an AZ a
// host no leaving node uses comes first, then the least loaded, then by
// name. The result is deterministic. When no placement exists the error
// says how many AZs the region has room in and what the service needs.
func Place(req PlacementRequest, f Fleet) ([]Slot, error) {
	if req.Count <= 0 {
		return nil, nil
	}
	r := req.Region
	total := len(req.Keep) + req.Count
	takenAZ, takenHost := map[string]bool{}, map[string]bool{}
	for _, n := range req.Keep {
		takenAZ[n.AZ], takenHost[n.Host] = true, true
	}
	leavingHost := map[string]bool{}
	for _, n := range req.Leaving {
		leavingHost[n.Host] = true
	}
	healthyAZ := map[string]bool{} // AZs of the region with a schedulable host
	best := map[string]*Host{}     // per free AZ, its best host with room
	for _, h := range f.Hosts {
		if h.Region != r.Code || !slices.Contains(r.AZs, h.AZ) || !h.Schedulable(f.Now, f.HeartbeatTimeout) {
			continue
		}
		healthyAZ[h.AZ] = true
		if takenAZ[h.AZ] || takenHost[h.Name] || f.Load[h.Name] >= h.Capacity {
			continue
		}
		if b := best[h.AZ]; b == nil || compareHosts(h, b, f.Load, leavingHost) < 0 {
			best[h.AZ] = h
		}
	}
	free := 0 // healthy AZs no kept node uses
	for az := range healthyAZ {
		if !takenAZ[az] {
			free++
		}
	}
	if free < req.Count {
		return nil, Conflictf(CodeNotEnoughAZs, "nodes",
			fmt.Sprintf("add hosts in other AZs of %s (moat host add NAME --region %s --az AZ), or ask for fewer nodes", r.Code, r.Code),
			"%s has %s; a %d-node service needs %d", r.Code, plural(len(healthyAZ), "healthy AZ"), total, total)
	}
	azs := make([]string, 0, len(best))
	for az := range best {
		azs = append(azs, az)
	}
	if len(azs) < req.Count {
		var full []string
		for _, az := range r.AZs {
			if healthyAZ[az] && !takenAZ[az] && best[az] == nil {
				full = append(full, az)
			}
		}
		return nil, Conflictf(CodeNoCapacity, "nodes",
			fmt.Sprintf("raise a host's capacity (moat host update NAME --capacity N) or add a host in %s", strings.Join(full, ", ")),
			"%s has room for this service in %s (full: %s); a %d-node service needs %d", r.Code, plural(len(azs)+len(takenAZ), "AZ"), strings.Join(full, ", "), total, total)
	}
	slices.SortFunc(azs, func(a, b string) int {
		if pa, pb := a == req.PreferAZ, b == req.PreferAZ; pa != pb {
			if pa {
				return -1
			}
			return 1
		}
		if c := compareHosts(best[a], best[b], f.Load, leavingHost); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	out := make([]Slot, req.Count)
	for i := range out {
		out[i] = Slot{Host: best[azs[i]].Name, AZ: azs[i]}
	}
	return out, nil
}

// compareHosts orders candidate hosts: not running a leaving node first,
// then least loaded, then by name.
func compareHosts(a, b *Host, load map[string]int, leaving map[string]bool) int {
	if la, lb := leaving[a.Name], leaving[b.Name]; la != lb {
		if lb {
			return -1
		}
		return 1
	}
	return cmp.Or(cmp.Compare(load[a.Name], load[b.Name]), strings.Compare(a.Name, b.Name))
}

// plural is "1 AZ", "2 AZs".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
