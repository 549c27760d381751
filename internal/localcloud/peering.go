package localcloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/atomicfile"
)

// The peering registry: what the cloud itself knows about peering requests
// and cannot keep in the kernel (who asked whom, when, what was declared,
// the outcome), as AWS does for the provider's account and the tenant's.
// The requester (the local provider) writes requests; the accepter (the
// simulator) accepts or rejects them; either may delete. It lives in one
// JSON file next to the lock file, written atomically under the lock, with
// the cloud clock's offset and the owners of accepter VPCs.

// Errors of the peering registry callers branch on.
var (
	// ErrState: the peering is not in a state that allows the change
	// (accepting a rejected one, say). The error names the state.
	ErrState = errors.New("wrong state")
)

// PeeringState is a peering connection's state, with AWS's names.
type PeeringState string

// Peering states. Rejected, Expired, Deleted and Failed are terminal.
const (
	PeeringPendingAcceptance PeeringState = "pending-acceptance"
	PeeringActive            PeeringState = "active"
	PeeringRejected          PeeringState = "rejected"
	PeeringExpired           PeeringState = "expired"
	PeeringDeleted           PeeringState = "deleted"
	PeeringFailed            PeeringState = "failed"
)

// Terminal reports whether s is a final state: the link is gone for good.
func (s PeeringState) Terminal() bool {
	return s != PeeringPendingAcceptance && s != PeeringActive
}

// PeeringExpiry is how long a request waits for acceptance (AWS: 7 days),
// measured with the cloud's clock.
const PeeringExpiry = 7 * 24 * time.Hour

// PeeringRequest is what the requester sends.
type PeeringRequest struct {
	// ID is the connection's ID, "pcx-" and 17 lower-case hex digits
	// (NewPeeringID makes one).
	ID string
	// RequesterVPC is the requester's VPC: its router (RouterNS) is one
	// end of the link. Its CIDR is read from the kernel.
	RequesterVPC string
	// AccepterAccount, AccepterVPC and AccepterRegion name the peer VPC,
	// as the tenant gave them. They are checked against the VPC's owner
	// (SetVPCOwner); a mismatch fails the request.
	AccepterAccount string
	AccepterVPC     string
	AccepterRegion  string
	// DeclaredCIDRs are the peer ranges the requester believes in (and
	// will open its firewalls to). Acceptance fails the request unless
	// each lies inside the accepter VPC's real CIDR.
	DeclaredCIDRs []netip.Prefix
	// CreatedAt is when it was made, the cloud's Now when zero; ExpiresAt
	// is CreatedAt + PeeringExpiry when zero.
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Peering is a peering request and what became of it.
type Peering struct {
	PeeringRequest
	// State is the connection's state; Reason explains a failed,
	// rejected, expired or deleted one.
	State  PeeringState
	Reason string
	// UpdatedAt is when State last changed.
	UpdatedAt time.Time
	// RequesterCIDR and AccepterCIDR are the two VPCs' real CIDRs
	// (AccepterCIDR is invalid when the accepter VPC was not found).
	RequesterCIDR netip.Prefix
	AccepterCIDR  netip.Prefix
	// RequesterNS and AccepterNS are the routers' namespaces.
	RequesterNS, AccepterNS string
	// RequesterAddr and AccepterAddr are the link's ends while it exists:
	// the requester routes the peer's range via AccepterAddr, the
	// accepter routes the requester's via RequesterAddr.
	RequesterAddr, AccepterAddr netip.Addr
}

// VPCOwner says which account and region a VPC belongs to, for the
// checks on peering requests to it.
type VPCOwner struct {
	VPC     string
	Account string
	Region  string
}

var pcxRE = regexp.MustCompile(`^pcx-[0-9a-f]{17}$`)

// NewPeeringID returns a fresh random peering ID of AWS's form.
func NewPeeringID() string { return "pcx-" + randHex(9)[:17] }

// registry is the registry file's content. Unknown fields are rejected.
type registry struct {
	Version     int                      `json:"version"`
	ClockOffset time.Duration            `json:"clock_offset_ns"`
	Owners      map[string]ownerRecord   `json:"vpc_owners"`
	Peerings    map[string]peeringRecord `json:"peerings"`
}

type ownerRecord struct {
	Account string `json:"account"`
	Region  string `json:"region"`
}

type peeringRecord struct {
	RequesterVPC    string         `json:"requester_vpc"`
	RequesterCIDR   netip.Prefix   `json:"requester_cidr"`
	AccepterAccount string         `json:"accepter_account"`
	AccepterVPC     string         `json:"accepter_vpc"`
	AccepterRegion  string         `json:"accepter_region"`
	AccepterCIDR    netip.Prefix   `json:"accepter_cidr,omitzero"`
	DeclaredCIDRs   []netip.Prefix `json:"declared_cidrs"`
	CreatedAt       time.Time      `json:"created_at"`
	ExpiresAt       time.Time      `json:"expires_at"`
	State           PeeringState   `json:"state"`
	Reason          string         `json:"reason,omitempty"`
	UpdatedAt       time.Time      `json:"updated_at"`
}

const registryVersion = 1

// loadRegistry reads the registry; a missing file is an empty one. Call it
// under the lock to update, or without it to read (writes are atomic).
func (c *Cloud) loadRegistry() (*registry, error) {
	r := &registry{Version: registryVersion}
	f, err := os.Open(c.statePath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read registry: %w", err)
	}
	if err == nil {
		defer f.Close()
		dec := json.NewDecoder(f)
		dec.DisallowUnknownFields()
		if err := dec.Decode(r); err != nil {
			return nil, fmt.Errorf("read registry %s: %w", c.statePath, err)
		}
		if r.Version != registryVersion {
			return nil, fmt.Errorf("registry %s: version %d, want %d", c.statePath, r.Version, registryVersion)
		}
	}
	if r.Owners == nil {
		r.Owners = map[string]ownerRecord{}
	}
	if r.Peerings == nil {
		r.Peerings = map[string]peeringRecord{}
	}
	return r, nil
}

func (c *Cloud) saveRegistry(r *registry) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(c.statePath, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save registry: %w", err)
	}
	return nil
}

// updateRegistry runs f on the registry under the lock, after expiring
// overdue requests, and saves it.
func (c *Cloud) updateRegistry(ctx context.Context, f func(r *registry, now time.Time) error) error {
	unlock, err := c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := c.loadRegistry()
	if err != nil {
		return err
	}
	now := c.now().Add(r.ClockOffset).UTC()
	c.expire(r, now)
	ferr := f(r, now)
	if err := c.saveRegistry(r); err != nil {
		return errors.Join(ferr, err)
	}
	return ferr
}

// expire moves the pending requests whose time is up to expired and
// removes their links.
func (c *Cloud) expire(r *registry, now time.Time) {
	for id, p := range r.Peerings {
		if p.State == PeeringPendingAcceptance && now.After(p.ExpiresAt) {
			c.finish(id, &p, PeeringExpired, "not accepted by "+p.ExpiresAt.Format(time.RFC3339), p.ExpiresAt)
			r.Peerings[id] = p
		}
	}
}

// finish puts p in a terminal state and removes its link; a link that
// cannot be removed now is left for DeletePeering or the VPC's removal
// (the kernel drops it with either router).
func (c *Cloud) finish(id string, p *peeringRecord, st PeeringState, reason string, at time.Time) {
	p.State, p.Reason, p.UpdatedAt = st, reason, at
	l := &Link{Name: id, A: c.RouterNS(p.RequesterVPC), B: c.RouterNS(p.AccepterVPC), IfName: linkIfName(id), c: c}
	_ = l.remove()
}

// Now returns the cloud's clock: Config.Now plus the offset AdvanceClock
// moved. Every process sharing the registry sees the same clock.
func (c *Cloud) Now(ctx context.Context) (time.Time, error) {
	r, err := c.loadRegistry()
	if err != nil {
		return time.Time{}, err
	}
	return c.now().Add(r.ClockOffset).UTC(), nil
}

// AdvanceClock moves the cloud's clock forward by d (for tests and demos
// of the 7-day expiry), expires the requests whose time is up, and returns
// the new time.
func (c *Cloud) AdvanceClock(ctx context.Context, d time.Duration) (time.Time, error) {
	if d < 0 {
		return time.Time{}, fmt.Errorf("advance clock by %v: the clock only moves forward", d)
	}
	var now time.Time
	err := c.updateRegistry(ctx, func(r *registry, _ time.Time) error {
		r.ClockOffset += d
		now = c.now().Add(r.ClockOffset).UTC()
		c.expire(r, now)
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("advance clock: %w", err)
	}
	return now, nil
}

// SetVPCOwner records which account and region VPC o.VPC belongs to (the
// simulator does it for its customer VPCs), so that peering requests
// naming it can be checked.
func (c *Cloud) SetVPCOwner(ctx context.Context, o VPCOwner) error {
	if err := checkName("vpc", o.VPC); err != nil {
		return err
	}
	err := c.updateRegistry(ctx, func(r *registry, _ time.Time) error {
		r.Owners[o.VPC] = ownerRecord{Account: o.Account, Region: o.Region}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set owner of %s: %w", o.VPC, err)
	}
	return nil
}

// RemoveVPCOwner forgets VPC id's owner; requests naming it fail from then
// on. Forgetting an unknown VPC is not an error.
func (c *Cloud) RemoveVPCOwner(ctx context.Context, id string) error {
	err := c.updateRegistry(ctx, func(r *registry, _ time.Time) error {
		delete(r.Owners, id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove owner of %s: %w", id, err)
	}
	return nil
}

// RequestPeering records req and, when the accepter VPC exists in the
// named account and region and the two VPCs' CIDRs do not overlap, links
// the two routers (the link forwards nothing) and leaves the request
// pending-acceptance. Otherwise the request is recorded as failed with the
// reason (as AWS does: the caller learns it from the returned state, not
// from an error). An error means the request is malformed, the requester
// VPC is missing, or the kernel refused.
//
// It is idempotent: repeating a request with the same ID, VPCs and
// declared CIDRs returns the recorded one (after a crash, say); the same ID
// with other contents is an ErrExists error.
func (c *Cloud) RequestPeering(ctx context.Context, req PeeringRequest) (Peering, error) {
	if !pcxRE.MatchString(req.ID) {
		return Peering{}, fmt.Errorf("request peering: id %q: want pcx- and 17 lower-case hex digits", req.ID)
	}
	if err := checkName("vpc", req.RequesterVPC); err != nil {
		return Peering{}, fmt.Errorf("request peering %s: %w", req.ID, err)
	}
	if err := checkName("vpc", req.AccepterVPC); err != nil {
		return Peering{}, fmt.Errorf("request peering %s: %w", req.ID, err)
	}
	if req.RequesterVPC == req.AccepterVPC {
		return Peering{}, fmt.Errorf("request peering %s: a VPC cannot peer with itself", req.ID)
	}
	if len(req.DeclaredCIDRs) == 0 {
		return Peering{}, fmt.Errorf("request peering %s: no declared peer CIDRs", req.ID)
	}
	for _, p := range req.DeclaredCIDRs {
		if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p {
			return Peering{}, fmt.Errorf("request peering %s: declared cidr %v: want a canonical IPv4 prefix", req.ID, p)
		}
	}
	var out Peering
	err := c.updateRegistry(ctx, func(r *registry, now time.Time) error {
		if old, ok := r.Peerings[req.ID]; ok {
			if old.RequesterVPC != req.RequesterVPC || old.AccepterVPC != req.AccepterVPC ||
				old.AccepterAccount != req.AccepterAccount || !slices.Equal(old.DeclaredCIDRs, req.DeclaredCIDRs) {
				return fmt.Errorf("%s exists with other contents: %w", req.ID, ErrExists)
			}
			out = c.peering(req.ID, old)
			return nil
		}
		reqNet, err := c.network(InVPC(req.RequesterVPC))
		if err != nil {
			return fmt.Errorf("requester vpc: %w", err)
		}
		p := peeringRecord{
			RequesterVPC:    req.RequesterVPC,
			RequesterCIDR:   reqNet.subnet,
			AccepterAccount: req.AccepterAccount,
			AccepterVPC:     req.AccepterVPC,
			AccepterRegion:  req.AccepterRegion,
			DeclaredCIDRs:   slices.Clone(req.DeclaredCIDRs),
			CreatedAt:       req.CreatedAt.UTC(),
			ExpiresAt:       req.ExpiresAt.UTC(),
			State:           PeeringPendingAcceptance,
			UpdatedAt:       now,
		}
		if p.CreatedAt.IsZero() {
			p.CreatedAt = now
		}
		if p.ExpiresAt.IsZero() {
			p.ExpiresAt = p.CreatedAt.Add(PeeringExpiry)
		}
		owner, owned := r.Owners[req.AccepterVPC]
		accNet, err := c.network(InVPC(req.AccepterVPC))
		switch {
		case !owned || errors.Is(err, ErrNotFound) || owner.Account != req.AccepterAccount:
			p.State, p.Reason = PeeringFailed, fmt.Sprintf("VPC %s does not exist in account %s", req.AccepterVPC, req.AccepterAccount)
		case err != nil:
			return fmt.Errorf("accepter vpc: %w", err)
		case owner.Region != req.AccepterRegion:
			p.AccepterCIDR = accNet.subnet
			p.State, p.Reason = PeeringFailed, fmt.Sprintf("VPC %s is in region %s, not %s", req.AccepterVPC, owner.Region, req.AccepterRegion)
		case reqNet.subnet.Overlaps(accNet.subnet):
			p.AccepterCIDR = accNet.subnet
			p.State, p.Reason = PeeringFailed, fmt.Sprintf("overlapping CIDRs: %v and %v", reqNet.subnet, accNet.subnet)
		default:
			p.AccepterCIDR = accNet.subnet
		}
		if p.State == PeeringPendingAcceptance {
			if _, err := c.link(req.ID, c.RouterNS(req.RequesterVPC), c.RouterNS(req.AccepterVPC)); err != nil {
				return err
			}
		}
		r.Peerings[req.ID] = p
		out = c.peering(req.ID, p)
		return nil
	})
	if err != nil {
		return Peering{}, fmt.Errorf("request peering %s: %w", req.ID, err)
	}
	return out, nil
}

// peering builds the caller's view of record p, with the link's ends when
// it exists.
func (c *Cloud) peering(id string, p peeringRecord) Peering {
	out := Peering{
		PeeringRequest: PeeringRequest{
			ID:              id,
			RequesterVPC:    p.RequesterVPC,
			AccepterAccount: p.AccepterAccount,
			AccepterVPC:     p.AccepterVPC,
			AccepterRegion:  p.AccepterRegion,
			DeclaredCIDRs:   slices.Clone(p.DeclaredCIDRs),
			CreatedAt:       p.CreatedAt,
			ExpiresAt:       p.ExpiresAt,
		},
		State:         p.State,
		Reason:        p.Reason,
		UpdatedAt:     p.UpdatedAt,
		RequesterCIDR: p.RequesterCIDR,
		AccepterCIDR:  p.AccepterCIDR,
		RequesterNS:   c.RouterNS(p.RequesterVPC),
		AccepterNS:    c.RouterNS(p.AccepterVPC),
	}
	if !p.State.Terminal() {
		l := &Link{Name: id, A: out.RequesterNS, B: out.AccepterNS, IfName: linkIfName(id), c: c}
		if found, err := l.read(); err == nil && found {
			out.RequesterAddr, out.AccepterAddr = l.AAddr, l.BAddr
		}
	}
	return out
}

// PeeringStatus returns peering id as it is now by the cloud's clock (a
// pending request past ExpiresAt is expired, and its link removed);
// ErrNotFound if no such request was ever made.
func (c *Cloud) PeeringStatus(ctx context.Context, id string) (Peering, error) {
	var out Peering
	err := c.updateRegistry(ctx, func(r *registry, _ time.Time) error {
		p, ok := r.Peerings[id]
		if !ok {
			return ErrNotFound
		}
		out = c.peering(id, p)
		return nil
	})
	if err != nil {
		return Peering{}, fmt.Errorf("peering %s: %w", id, err)
	}
	return out, nil
}

// Peerings lists every peering request, by ID, as PeeringStatus sees
// them.
func (c *Cloud) Peerings(ctx context.Context) ([]Peering, error) {
	var out []Peering
	err := c.updateRegistry(ctx, func(r *registry, _ time.Time) error {
		for id, p := range r.Peerings {
			out = append(out, c.peering(id, p))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list peerings: %w", err)
	}
	slices.SortFunc(out, func(a, b Peering) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// AcceptPeering accepts pending request id for its accepter: unless a
// declared CIDR lies outside the accepter VPC's real CIDR (then the request
// fails with the reason, and its link is removed), the link starts
// forwarding and the peering is active. No route is added on either side.
// Accepting an active peering is a no-op; any other state is an ErrState
// error. The returned Peering has the resulting state.
func (c *Cloud) AcceptPeering(ctx context.Context, id string) (Peering, error) {
	var out Peering
	err := c.updateRegistry(ctx, func(r *registry, now time.Time) error {
		p, ok := r.Peerings[id]
		if !ok {
			return ErrNotFound
		}
		switch p.State {
		case PeeringActive:
			out = c.peering(id, p)
			return nil
		case PeeringPendingAcceptance:
		default:
			return fmt.Errorf("it is %s: %w", p.State, ErrState)
		}
		var bad []string
		for _, d := range p.DeclaredCIDRs {
			if !p.AccepterCIDR.Contains(d.Addr()) || d.Bits() < p.AccepterCIDR.Bits() {
				bad = append(bad, d.String())
			}
		}
		if len(bad) > 0 {
			c.finish(id, &p, PeeringFailed, fmt.Sprintf("declared peer CIDRs %s are not inside VPC %s's CIDR %v",
				strings.Join(bad, ", "), p.AccepterVPC, p.AccepterCIDR), now)
		} else {
			l, err := c.link(id, c.RouterNS(p.RequesterVPC), c.RouterNS(p.AccepterVPC))
			if err != nil {
				return err
			}
			if err := l.setForwarding(true); err != nil {
				return err
			}
			p.State, p.UpdatedAt = PeeringActive, now
		}
		r.Peerings[id] = p
		out = c.peering(id, p)
		return nil
	})
	if err != nil {
		return Peering{}, fmt.Errorf("accept peering %s: %w", id, err)
	}
	return out, nil
}

// RejectPeering rejects pending request id: its link is removed. Rejecting
// a rejected one is a no-op; any other state is an ErrState error.
func (c *Cloud) RejectPeering(ctx context.Context, id string) (Peering, error) {
	var out Peering
	err := c.updateRegistry(ctx, func(r *registry, now time.Time) error {
		p, ok := r.Peerings[id]
		if !ok {
			return ErrNotFound
		}
		switch p.State {
		case PeeringRejected:
		case PeeringPendingAcceptance:
			c.finish(id, &p, PeeringRejected, "rejected by account "+p.AccepterAccount, now)
			r.Peerings[id] = p
		default:
			return fmt.Errorf("it is %s: %w", p.State, ErrState)
		}
		out = c.peering(id, p)
		return nil
	})
	if err != nil {
		return Peering{}, fmt.Errorf("reject peering %s: %w", id, err)
	}
	return out, nil
}

// DeletePeering deletes peering id from either side: its link goes at
// once, and with it every route through it in both routers. A pending or
// active peering becomes deleted; a terminal one keeps its state (its link
// is already gone). ErrNotFound if no such request was ever made.
func (c *Cloud) DeletePeering(ctx context.Context, id string) (Peering, error) {
	var out Peering
	err := c.updateRegistry(ctx, func(r *registry, now time.Time) error {
		p, ok := r.Peerings[id]
		if !ok {
			return ErrNotFound
		}
		l := &Link{Name: id, A: c.RouterNS(p.RequesterVPC), B: c.RouterNS(p.AccepterVPC), IfName: linkIfName(id), c: c}
		if err := l.remove(); err != nil {
			return err
		}
		if !p.State.Terminal() {
			p.State, p.Reason, p.UpdatedAt = PeeringDeleted, "", now
			r.Peerings[id] = p
		}
		out = c.peering(id, p)
		return nil
	})
	if err != nil {
		return Peering{}, fmt.Errorf("delete peering %s: %w", id, err)
	}
	return out, nil
}

// Interfaces reads namespace ns's interfaces on networks (a host's, or a
// VPC router's uplink), sorted by name. Peering links and bridges are not
// among them.
func (c *Cloud) Interfaces(ctx context.Context, ns string) ([]Interface, error) {
	ifs, err := c.interfaces(ns, false)
	if err != nil {
		return nil, fmt.Errorf("interfaces of %s: %w", ns, err)
	}
	return ifs, nil
}
