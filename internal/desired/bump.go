package desired

import (
	"context"
	"slices"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Affected names what a change wrote that hosts' desired states read (see
// Load): the one place that maps a change to the hosts it wakes.
type Affected struct {
	// Services changed themselves, their nodes or their operations: every
	// host with one of their live nodes reads them.
	Services []string
	// VPCs changed themselves or their peerings: the hosts of their
	// services' nodes read them.
	VPCs []string
	// Hosts are named outright: a node leaving its host (deleted, or
	// placed elsewhere) is no longer among its service's live nodes, but
	// its old host must drop it.
	Hosts []string
}

// Hosts returns the hosts whose desired state reads what a names, sorted.
func Hosts(ctx context.Context, tx store.Tx, a Affected) ([]string, error) {
	set := map[string]bool{}
	for _, h := range a.Hosts {
		if h != "" {
			set[h] = true
		}
	}
	svcs := slices.Clone(a.Services)
	for _, v := range a.VPCs {
		if v == "" {
			continue
		}
		in, err := store.List[domain.Service](ctx, tx, store.Query{Parent: v})
		if err != nil {
			return nil, err
		}
		for _, s := range in {
			svcs = append(svcs, s.ID)
		}
	}
	slices.Sort(svcs)
	for _, id := range slices.Compact(svcs) {
		if id == "" {
			continue
		}
		nodes, err := store.List[domain.Node](ctx, tx, store.Query{Parent: id})
		if err != nil {
			return nil, err
		}
		for _, n := range nodes {
			if n.Host != "" {
				set[n.Host] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for h := range set {
		out = append(out, h)
	}
	slices.Sort(out)
	return out, nil
}

// Bump bumps the desired-state revision of the hosts a change affects (and
// so the global revision, which DNS and the reconcilers follow), and
// returns it. A change that affects no host moves only the global
// revision.
func Bump(ctx context.Context, tx store.Tx, a Affected) (int64, error) {
	hosts, err := Hosts(ctx, tx, a)
	if err != nil {
		return 0, err
	}
	return tx.BumpHosts(ctx, hosts...)
}
