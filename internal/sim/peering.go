package sim

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/localcloud"
)

// Route states, as AWS shows them.
const (
	// RouteActive: the target peering is active and the route forwards.
	RouteActive = "active"
	// RouteBlackhole: the target peering is not active (pending,
	// rejected, deleted, …): packets to the destination go nowhere.
	RouteBlackhole = "blackhole"
)

// Route is a route in a customer VPC's route table (besides the implicit
// local route to the VPC's own CIDR and the default route to the NAT).
type Route struct {
	Destination netip.Prefix
	// Target is the peering connection's ID (pcx-…).
	Target string
	// State is RouteActive or RouteBlackhole.
	State string
}

// Peerings lists the peering requests made to account's VPCs, in any
// state, by ID (the inbox).
func (s *Sim) Peerings(ctx context.Context, account string) ([]localcloud.Peering, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	if _, ok := st.Accounts[account]; !ok {
		return nil, fmt.Errorf("peerings of %s: account %w", account, ErrNotFound)
	}
	all, err := s.cloud.Peerings(ctx)
	if err != nil {
		return nil, err
	}
	var out []localcloud.Peering
	for _, p := range all {
		if p.AccepterAccount == account {
			out = append(out, p)
		}
	}
	return out, nil
}

// mine returns peering id if it was made to one of the sim's VPCs in the
// VPC's account; ErrNotFound otherwise (as AWS hides other accounts'
// connections).
func (s *Sim) mine(ctx context.Context, id string) (localcloud.Peering, error) {
	st, err := s.load()
	if err != nil {
		return localcloud.Peering{}, err
	}
	p, err := s.cloud.PeeringStatus(ctx, id)
	if err != nil {
		return localcloud.Peering{}, err
	}
	if vs, ok := st.VPCs[p.AccepterVPC]; !ok || vs.Account != p.AccepterAccount {
		return localcloud.Peering{}, fmt.Errorf("peering %s: %w", id, ErrNotFound)
	}
	return p, nil
}

// Accept accepts peering request id in its accepter account: it becomes
// active and its link forwards; or, when a CIDR the requester declared is
// not inside the VPC's real CIDR, it fails with the reason (the returned
// Peering's State and Reason say which; see localcloud.Cloud.AcceptPeering).
// Routes on neither side are added.
func (s *Sim) Accept(ctx context.Context, id string) (localcloud.Peering, error) {
	if _, err := s.mine(ctx, id); err != nil {
		return localcloud.Peering{}, fmt.Errorf("accept: %w", err)
	}
	return s.cloud.AcceptPeering(ctx, id)
}

// Reject rejects pending peering request id; its link is removed.
func (s *Sim) Reject(ctx context.Context, id string) (localcloud.Peering, error) {
	if _, err := s.mine(ctx, id); err != nil {
		return localcloud.Peering{}, fmt.Errorf("reject: %w", err)
	}
	return s.cloud.RejectPeering(ctx, id)
}

// DeletePeering deletes peering id from the customer's side; the path is
// cut at once, and routes to it become blackholes.
func (s *Sim) DeletePeering(ctx context.Context, id string) (localcloud.Peering, error) {
	if _, err := s.mine(ctx, id); err != nil {
		return localcloud.Peering{}, fmt.Errorf("delete peering: %w", err)
	}
	return s.cloud.DeletePeering(ctx, id)
}

// AddRoute adds a route to destination (a canonical IPv4 CIDR: as AWS,
// "10.0.0.7/17" is refused with a hint naming 10.0.0.0/17) via peering
// target to VPC vpcID's route table. The peering must be one of this VPC's
// and pending or active; while pending the route is a blackhole (it is in
// the kernel, but the link forwards nothing). A destination inside the
// VPC's own CIDR, or one already in the table, is refused.
func (s *Sim) AddRoute(ctx context.Context, vpcID, destination, target string) (Route, error) {
	dst, err := domain.ParsePrefix("destination", destination, false)
	if err == nil && !dst.Addr().Is4() {
		err = domain.Invalidf(domain.CodeCIDRFamily, "destination", "use an IPv4 range such as 10.0.0.0/16", "%s is not IPv4", dst)
	}
	if err != nil {
		return Route{}, fmt.Errorf("add route: %w", err)
	}
	var out Route
	err = s.update(ctx, func(st *state) error {
		vs, ok := st.VPCs[vpcID]
		if !ok {
			return fmt.Errorf("vpc %s: %w", vpcID, ErrNotFound)
		}
		if domain.Contains(vs.CIDR, dst) {
			return fmt.Errorf("%v is inside the VPC's own %v (the local route)", dst, vs.CIDR)
		}
		if slices.ContainsFunc(vs.Routes, func(r routeState) bool { return r.Destination == dst }) {
			return fmt.Errorf("a route to %v: %w", dst, ErrExists)
		}
		p, err := s.cloud.PeeringStatus(ctx, target)
		if err != nil || p.AccepterVPC != vpcID {
			return fmt.Errorf("target %s: no such peering of %s: %w", target, vpcID, ErrNotFound)
		}
		if p.State.Terminal() {
			return fmt.Errorf("target %s is %s", target, p.State)
		}
		if err := s.cloud.AddRoute(ctx, s.cloud.RouterNS(vpcID), dst, p.RequesterAddr); err != nil {
			return err
		}
		vs.Routes = append(vs.Routes, routeState{Destination: dst, Target: target})
		st.VPCs[vpcID] = vs
		out = Route{Destination: dst, Target: target, State: RouteBlackhole}
		if p.State == localcloud.PeeringActive {
			out.State = RouteActive
		}
		return nil
	})
	if err != nil {
		return Route{}, fmt.Errorf("add route to %s in %s: %w", destination, vpcID, err)
	}
	return out, nil
}

// ListRoutes lists VPC vpcID's routes, by destination, with their state:
// active when the target peering is active and the route is in the
// kernel.
func (s *Sim) ListRoutes(ctx context.Context, vpcID string) ([]Route, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	vs, ok := st.VPCs[vpcID]
	if !ok {
		return nil, fmt.Errorf("routes of %s: vpc %w", vpcID, ErrNotFound)
	}
	kernel, err := s.cloud.Routes(ctx, s.cloud.RouterNS(vpcID))
	if err != nil {
		return nil, err
	}
	var out []Route
	for _, r := range vs.Routes {
		rt := Route{Destination: r.Destination, Target: r.Target, State: RouteBlackhole}
		p, err := s.cloud.PeeringStatus(ctx, r.Target)
		if err == nil && p.State == localcloud.PeeringActive &&
			slices.Contains(kernel, localcloud.Route{Dst: r.Destination, Via: p.RequesterAddr}) {
			rt.State = RouteActive
		}
		out = append(out, rt)
	}
	slices.SortFunc(out, func(a, b Route) int { return strings.Compare(a.Destination.String(), b.Destination.String()) })
	return out, nil
}

// DeleteRoute removes the route to destination from VPC vpcID's route
// table.
func (s *Sim) DeleteRoute(ctx context.Context, vpcID, destination string) error {
	dst, err := domain.ParsePrefix("destination", destination, false)
	if err != nil {
		return fmt.Errorf("delete route: %w", err)
	}
	err = s.update(ctx, func(st *state) error {
		vs, ok := st.VPCs[vpcID]
		if !ok {
			return fmt.Errorf("vpc %s: %w", vpcID, ErrNotFound)
		}
		i := slices.IndexFunc(vs.Routes, func(r routeState) bool { return r.Destination == dst })
		if i < 0 {
			return fmt.Errorf("no route to %v: %w", dst, ErrNotFound)
		}
		if err := s.cloud.DeleteRoute(ctx, s.cloud.RouterNS(vpcID), dst); err != nil {
			return err
		}
		vs.Routes = slices.Delete(vs.Routes, i, i+1)
		st.VPCs[vpcID] = vs
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete route to %s in %s: %w", destination, vpcID, err)
	}
	return nil
}
