package reconcile

// The network controllers: VPCs (creating → active, deleting → deleted)
// and peering connections (provisioning → pending-acceptance → active, the
// cloud's verdicts rejected, expired and failed, deleting → deleted). Each
// reads the store, calls the provider outside any transaction, and records
// the move with domain.PeeringMachine/VPCMachine in a transaction that
// checks the object is still in the state it was read in. A peering's cloud
// ID is reserved and recorded before the request is sent, so a crash between
// the two repeats the same request instead of sending a second one.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/provider"
	"github.com/moatdb/moat/internal/store"
)

// Pending peerings are polled every pendingPoll between passes, so an
// acceptance in the tenant's cloud is noticed within that; only for
// pendingFastFor after the request was sent (later acceptances wait for
// the next Resync), so requests left pending for days cost nothing.
const (
	pendingPoll    = 200 * time.Millisecond
	pendingFastFor = 15 * time.Minute
)

// Codes of the state_info the network controllers write themselves (the
// provider's codes are passed through: see provider.PeeringStatus).
const (
	codeVPCRefused     = "vpc_refused"
	codePeeringRefused = "peering_refused"
	codePeeringLost    = "peering_lost"
	codeInvalidRecord  = "invalid_record"
)

// networks makes one pass over the VPCs and peerings that need work.
func (r *Reconciler) networks(ctx context.Context) error {
	var vpcs []*domain.VPC
	var pcxs []*domain.Peering
	err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		if vpcs, err = store.List[domain.VPC](ctx, tx, store.Query{}); err != nil {
			return err
		}
		pcxs, err = store.List[domain.Peering](ctx, tx, store.Query{})
		return err
	})
	if err != nil {
		return err
	}
	var errs []error
	keep := func(err error) { errs = append(errs, err) }
	byID := make(map[string]*domain.VPC, len(vpcs))
	for _, v := range vpcs {
		byID[v.ID] = v
		switch v.State {
		case domain.StateCreating:
			keep(r.createVPC(ctx, v))
		case domain.StateDeleting:
			keep(r.removeVPC(ctx, v))
		}
	}
	for _, p := range pcxs {
		keep(r.peering(ctx, p, byID[p.VPCID]))
	}
	return errors.Join(errs...)
}

// createVPC builds a creating VPC's network and makes it active.
func (r *Reconciler) createVPC(ctx context.Context, v *domain.VPC) error {
	cidr, err := netip.ParsePrefix(v.CIDR)
	if err != nil {
		return r.moveVPC(ctx, v, domain.StateFailed, &domain.Info{Code: codeInvalidRecord, Message: "the VPC's CIDR cannot be read"}, nil)
	}
	pl, err := r.cfg.Provider.EnsureVPC(ctx, provider.VPCRequest{ID: v.ID, CIDR: cidr, Region: v.Region})
	if errors.Is(err, provider.ErrRefused) {
		r.log.Error("vpc refused by the provider", "vpc_id", v.ID, "err", err)
		return r.moveVPC(ctx, v, domain.StateFailed, &domain.Info{Code: codeVPCRefused,
			Message: "the provider refused to create the VPC's network; delete the VPC and create it again"}, nil)
	}
	if err != nil {
		return fmt.Errorf("create vpc %s: %w", v.ID, err)
	}
	return r.moveVPC(ctx, v, domain.StateActive, nil, func(cur *domain.VPC) { cur.CloudVPCID = pl.CloudVPCID })
}

// removeVPC destroys a deleting VPC's network and marks it deleted. The
// API refuses to delete a VPC with services or live peerings, so the
// network has no users left (or the provider says so and it is retried).
func (r *Reconciler) removeVPC(ctx context.Context, v *domain.VPC) error {
	if err := r.cfg.Provider.RemoveVPC(ctx, v.ID); err != nil {
		return fmt.Errorf("remove vpc %s: %w", v.ID, err)
	}
	return r.moveVPC(ctx, v, domain.StateDeleted, nil, nil)
}

// peering drives one peering connection; vpc is its VPC (nil if missing).
func (r *Reconciler) peering(ctx context.Context, p *domain.Peering, vpc *domain.VPC) error {
	switch p.State {
	case domain.StateProvisioning:
		return r.requestPeering(ctx, p, vpc)
	case domain.StatePendingAcceptance:
		return r.followPeering(ctx, p)
	case domain.StateActive:
		return r.checkPeering(ctx, p)
	case domain.StateDeleting:
		return r.deletePeering(ctx, p)
	}
	return nil
}

// requestPeering reserves and records the cloud's connection ID, then
// sends the request under that ID: pending-acceptance, or failed with the
// cloud's reason.
func (r *Reconciler) requestPeering(ctx context.Context, p *domain.Peering, vpc *domain.VPC) error {
	if vpc == nil {
		return fmt.Errorf("request peering %s: vpc %s not found", p.ID, p.VPCID)
	}
	if p.CloudPeeringID == "" {
		id := r.cfg.Provider.NewPeeringID()
		cur, err := record(ctx, r, p.ID, nil, func(cur *domain.Peering) error {
			if cur.State != domain.StateProvisioning || cur.CloudPeeringID != "" {
				return errSkip
			}
			cur.CloudPeeringID = id
			return nil
		})
		if err != nil || cur == nil {
			return err // moved on meanwhile: the next pass sees it
		}
		p = cur
	}
	req, err := peeringRequest(p, vpc)
	if err != nil {
		return r.movePeering(ctx, p, domain.StateFailed, &domain.Info{Code: codeInvalidRecord, Message: err.Error()}, nil)
	}
	st, err := r.cfg.Provider.RequestPeering(ctx, req)
	if errors.Is(err, provider.ErrRefused) {
		r.log.Error("peering refused by the provider", "peering_id", p.ID, "cloud_peering_id", p.CloudPeeringID, "err", err)
		return r.movePeering(ctx, p, domain.StateFailed, &domain.Info{Code: codePeeringRefused,
			Message: "the provider refused the peering request; delete the peering and create it again"}, nil)
	}
	if err != nil {
		return fmt.Errorf("request peering %s: %w", p.ID, err)
	}
	if st.State == provider.PeeringFailed {
		return r.movePeering(ctx, p, domain.StateFailed, cloudInfo(st), nil)
	}
	// Whatever else the cloud says (the tenant may already have accepted
	// a request repeated after a crash), the next poll follows it.
	return r.movePeering(ctx, p, domain.StatePendingAcceptance, nil, func(cur *domain.Peering) {
		if !st.ExpiresAt.IsZero() {
			cur.ExpiresAt = st.ExpiresAt.UTC()
		}
	})
}

// peeringRequest is p's request to the provider.
func peeringRequest(p *domain.Peering, vpc *domain.VPC) (provider.PeeringRequest, error) {
	cidr, err := netip.ParsePrefix(vpc.CIDR)
	if err != nil {
		return provider.PeeringRequest{}, fmt.Errorf("the VPC's CIDR %q cannot be read", vpc.CIDR)
	}
	peers, err := peerCIDRs(p)
	if err != nil {
		return provider.PeeringRequest{}, err
	}
	return provider.PeeringRequest{ID: p.ID, CloudID: p.CloudPeeringID, VPCID: p.VPCID, VPCCIDR: cidr,
		PeerAccountID: p.PeerAccountID, PeerVPCID: p.PeerVPCID, PeerRegion: p.PeerRegion, PeerCIDRs: peers}, nil
}

func peerCIDRs(p *domain.Peering) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(p.PeerCIDRs))
	for _, s := range p.PeerCIDRs {
		c, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("the peer CIDR %q cannot be read", s)
		}
		out = append(out, c)
	}
	return out, nil
}

// followPeering polls a pending request. On acceptance the provider-side
// routes to the peer CIDRs are added first, then the peering is recorded
// active with a new desired-state revision, so the nodes' firewalls widen
// to the peer CIDRs (within each service's allowlist) once the path exists.
func (r *Reconciler) followPeering(ctx context.Context, p *domain.Peering) error {
	st, err := r.cfg.Provider.PeeringStatus(ctx, p.CloudPeeringID)
	if errors.Is(err, provider.ErrNotFound) {
		return r.movePeering(ctx, p, domain.StateFailed, lostInfo(), nil)
	}
	if err != nil {
		return fmt.Errorf("poll peering %s: %w", p.ID, err)
	}
	switch st.State {
	case provider.PeeringPendingAcceptance:
		return nil
	case provider.PeeringActive:
		peers, err := peerCIDRs(p)
		if err != nil {
			return r.movePeering(ctx, p, domain.StateFailed, &domain.Info{Code: codeInvalidRecord, Message: err.Error()}, nil)
		}
		if err := r.cfg.Provider.AddPeeringRoutes(ctx, p.VPCID, p.CloudPeeringID, peers); err != nil {
			return fmt.Errorf("activate peering %s: %w", p.ID, err)
		}
		return r.movePeering(ctx, p, domain.StateActive, nil, nil)
	case provider.PeeringRejected:
		return r.movePeering(ctx, p, domain.StateRejected, cloudInfo(st), nil)
	case provider.PeeringExpired:
		return r.movePeering(ctx, p, domain.StateExpired, cloudInfo(st), nil)
	default: // failed, or deleted by the peer
		return r.movePeering(ctx, p, domain.StateFailed, cloudInfo(st), nil)
	}
}

// checkPeering fails an active peering whose connection the cloud no
// longer has active (the tenant deleted it on their side, say): its link
// and routes are already gone, and the new revision narrows the firewalls.
func (r *Reconciler) checkPeering(ctx context.Context, p *domain.Peering) error {
	st, err := r.cfg.Provider.PeeringStatus(ctx, p.CloudPeeringID)
	if errors.Is(err, provider.ErrNotFound) {
		return r.movePeering(ctx, p, domain.StateFailed, lostInfo(), nil)
	}
	if err != nil {
		return fmt.Errorf("check peering %s: %w", p.ID, err)
	}
	if st.State == provider.PeeringActive {
		return nil
	}
	return r.movePeering(ctx, p, domain.StateFailed, cloudInfo(st), nil)
}

// deletePeering deletes the connection in the cloud (its link and routes
// go at once) and records the peering deleted with a new revision, which
// narrows the firewalls.
func (r *Reconciler) deletePeering(ctx context.Context, p *domain.Peering) error {
	if p.CloudPeeringID != "" {
		if err := r.cfg.Provider.DeletePeering(ctx, p.CloudPeeringID); err != nil {
			return fmt.Errorf("delete peering %s: %w", p.ID, err)
		}
	}
	return r.movePeering(ctx, p, domain.StateDeleted, nil, nil)
}

// cloudInfo is the state_info of a connection the cloud finished.
func cloudInfo(st provider.PeeringStatus) *domain.Info {
	code, msg := st.Code, st.Reason
	if code == "" {
		code = "peering_" + st.State
	}
	if msg == "" {
		msg = "the peering connection is " + st.State
	}
	return &domain.Info{Code: code, Message: msg}
}

func lostInfo() *domain.Info {
	return &domain.Info{Code: codePeeringLost, Message: "the cloud has no record of the peering connection; delete the peering and create it again"}
}

// movePeering moves peering seen to state to, with info as its state_info
// and edit applied, if it is still in the state it was read in; the move
// bumps the desired-state revision.
func (r *Reconciler) movePeering(ctx context.Context, seen *domain.Peering, to string, info *domain.Info, edit func(*domain.Peering)) error {
	bump := func(cur *domain.Peering) desired.Affected { return desired.Affected{VPCs: []string{cur.VPCID}} }
	_, err := record(ctx, r, seen.ID, bump, func(cur *domain.Peering) error {
		if cur.State != seen.State {
			return errSkip
		}
		if err := cur.Transition(to, info, r.cfg.Now().UTC()); err != nil {
			return err
		}
		if edit != nil {
			edit(cur)
		}
		return nil
	})
	if err == nil {
		r.log.Info("peering", "peering_id", seen.ID, "cloud_peering_id", seen.CloudPeeringID, "from", seen.State, "to", to)
	}
	return err
}

// moveVPC is movePeering for VPCs.
func (r *Reconciler) moveVPC(ctx context.Context, seen *domain.VPC, to string, info *domain.Info, edit func(*domain.VPC)) error {
	bump := func(cur *domain.VPC) desired.Affected { return desired.Affected{VPCs: []string{cur.ID}} }
	_, err := record(ctx, r, seen.ID, bump, func(cur *domain.VPC) error {
		if cur.State != seen.State {
			return errSkip
		}
		if err := cur.Transition(to, info, r.cfg.Now().UTC()); err != nil {
			return err
		}
		if edit != nil {
			edit(cur)
		}
		return nil
	})
	if err == nil {
		r.log.Info("vpc", "vpc_id", seen.ID, "from", seen.State, "to", to)
	}
	return err
}

// record applies fn to the current object id in one transaction and
// writes it (the store checks its revision), bumping the desired-state
// revision of the hosts bump names when it is set. It returns the written
// object, or nil when fn returned errSkip and nothing was written.
func record[T any, P store.Ptr[T]](ctx context.Context, r *Reconciler, id string, bump func(P) desired.Affected, fn func(P) error) (P, error) {
	var out P
	err := r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := store.Get[T, P](ctx, tx, id)
		if err != nil {
			return err
		}
		if err := fn(cur); err != nil {
			return err
		}
		cur.Base().UpdatedAt = r.cfg.Now().UTC()
		if err := store.Put(ctx, tx, cur); err != nil {
			return err
		}
		if bump != nil {
			if _, err := desired.Bump(ctx, tx, bump(cur)); err != nil {
				return err
			}
		}
		out = cur
		return nil
	})
	if errors.Is(err, errSkip) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// wait blocks until the desired-state revision passes rev, a pass asked
// for by wakeBy is due, or Resync has
// gone by. Meanwhile, while peerings requested less than pendingFastFor
// ago await acceptance, it polls them every pendingPoll; a poll that moves
// one bumps the revision and so ends the wait.
func (r *Reconciler) wait(ctx context.Context, rev int64) (int64, error) {
	wait := r.cfg.Resync
	if w := r.takeWake(); !w.IsZero() {
		// Requested on r.cfg.Now's clock (the wall clock in the daemon).
		wait = min(wait, max(w.Sub(r.cfg.Now()), 0))
	}
	deadline := time.Now().Add(wait)
	for {
		fresh, err := r.freshPending(ctx)
		if err != nil && ctx.Err() == nil {
			r.log.Error("list pending peerings", "err", err)
		}
		d := time.Until(deadline)
		if len(fresh) > 0 && d > pendingPoll {
			d = pendingPoll
		}
		wctx, cancel := context.WithTimeout(ctx, d)
		n, err := r.cfg.Store.WaitRevision(wctx, rev)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) || !time.Now().Before(deadline) {
			return n, err
		}
		for _, p := range fresh {
			if err := r.followPeering(ctx, p); err != nil && ctx.Err() == nil {
				r.log.Error("poll peering", "peering_id", p.ID, "err", err)
			}
		}
	}
}

// freshPending lists the peerings pending acceptance for less than
// pendingFastFor.
func (r *Reconciler) freshPending(ctx context.Context) ([]*domain.Peering, error) {
	var pcxs []*domain.Peering
	err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		pcxs, err = store.List[domain.Peering](ctx, tx, store.Query{})
		return err
	})
	if err != nil {
		return nil, err
	}
	now := r.cfg.Now()
	var out []*domain.Peering
	for _, p := range pcxs {
		if p.State == domain.StatePendingAcceptance && now.Sub(p.UpdatedAt) < pendingFastFor {
			out = append(out, p)
		}
	}
	return out, nil
}
