package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/apitype"
)

// The Wait methods given no interval poll first after MinPoll and then
// back off, doubling, to MaxPoll: a change enforced in 50 ms is seen in
// about that time, and a long wait costs one request a second. The server
// offers no blocking wait, so the client polls.
const (
	MinPoll = 25 * time.Millisecond
	MaxPoll = time.Second
)

// OperationFailedError is returned by WaitOperation when the operation
// ended in state failed.
type OperationFailedError struct {
	Op apitype.Operation
}

func (e *OperationFailedError) Error() string {
	if e.Op.Error != nil {
		return fmt.Sprintf("operation %s failed: %s (%s)", e.Op.ID, e.Op.Error.Message, e.Op.Error.Code)
	}
	return fmt.Sprintf("operation %s failed", e.Op.ID)
}

// ServiceFailedError is returned by WaitService when the service turned
// failed.
type ServiceFailedError struct {
	Service apitype.Service
}

func (e *ServiceFailedError) Error() string {
	if e.Service.StateInfo != nil {
		return fmt.Sprintf("service %s is %s: %s (%s)", e.Service.ID, e.Service.State, e.Service.StateInfo.Message, e.Service.StateInfo.Code)
	}
	return fmt.Sprintf("service %s is %s", e.Service.ID, e.Service.State)
}

// AllowlistFailedError is returned by WaitAllowlist when nodes failed
// before enforcing the revision: the change is not in force there, and
// will not be until they run again.
type AllowlistFailedError struct {
	Allowlist apitype.Allowlist
}

func (e *AllowlistFailedError) Error() string {
	parts := make([]string, 0, len(e.Allowlist.Failed))
	for _, f := range e.Allowlist.Failed {
		why := "failed"
		if f.Reason != nil {
			why = f.Reason.Message + " (" + f.Reason.Code + ")"
		}
		parts = append(parts, f.NodeID+": "+why)
	}
	return fmt.Sprintf("allowlist revision %d is not enforced on every node: %s", e.Allowlist.Revision, strings.Join(parts, "; "))
}

// poll calls check until it reports done, fails, or ctx ends, waiting
// interval between calls (when interval is 0: MinPoll, doubling up to
// MaxPoll); the last value is returned in every case.
func poll[T any](ctx context.Context, interval time.Duration, check func() (T, bool, error)) (T, error) {
	next := func(d time.Duration) time.Duration { return interval }
	wait := interval
	if interval <= 0 {
		wait = MinPoll
		next = func(d time.Duration) time.Duration { return min(2*d, MaxPoll) }
	}
	for {
		v, done, err := check()
		if done || err != nil {
			return v, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, ctx.Err()
		case <-t.C:
		}
		wait = next(wait)
	}
}

// WaitOperation polls operation op of project p until it has succeeded or
// failed; a failed operation returns *OperationFailedError. The caller
// bounds the wait with ctx (context.DeadlineExceeded then).
func (c *Client) WaitOperation(ctx context.Context, p, op string, interval time.Duration) (apitype.Operation, error) {
	return poll(ctx, interval, func() (apitype.Operation, bool, error) {
		o, err := c.GetOperation(ctx, p, op)
		if err != nil {
			return o, false, err
		}
		switch o.State {
		case "succeeded":
			return o, true, nil
		case "failed":
			return o, true, &OperationFailedError{Op: o}
		}
		return o, false, nil
	})
}

// WaitService polls service svc of project p until it is running; a failed
// or degraded service (a node failed: changes are not enforced on it)
// returns *ServiceFailedError.
func (c *Client) WaitService(ctx context.Context, p, svc string, interval time.Duration) (apitype.Service, error) {
	return poll(ctx, interval, func() (apitype.Service, bool, error) {
		s, err := c.GetService(ctx, p, svc)
		if err != nil {
			return s, false, err
		}
		switch s.State {
		case "running":
			return s, true, nil
		case "failed", "degraded":
			return s, true, &ServiceFailedError{Service: s}
		}
		return s, false, nil
	})
}

// WaitSettings polls service svc of project p until every running node
// has reloaded its last settings change.
func (c *Client) WaitSettings(ctx context.Context, p, svc string, interval time.Duration) (apitype.Service, error) {
	return poll(ctx, interval, func() (apitype.Service, bool, error) {
		s, err := c.GetService(ctx, p, svc)
		return s, err == nil && !s.SettingsApplying, err
	})
}

// WaitAllowlist polls service svc's allowlist until every node enforces
// revision rev (applied_revision >= rev).
func (c *Client) WaitAllowlist(ctx context.Context, p, svc string, rev int64, interval time.Duration) (apitype.Allowlist, error) {
	return poll(ctx, interval, func() (apitype.Allowlist, bool, error) {
		a, _, err := c.GetAllowlist(ctx, p, svc)
		if err == nil && a.AppliedRevision < rev && len(a.Failed) > 0 {
			return a, true, &AllowlistFailedError{Allowlist: a}
		}
		return a, err == nil && a.AppliedRevision >= rev, err
	})
}

// EditAllowlist applies edit to service svc's current allowlist and writes
// the result with If-Match, so a concurrent edit is never overwritten: on
// a stale ETag (412) it reads the list again and reapplies edit, up to
// attempts times (0: 5). An empty result is written with confirmEmpty.
func (c *Client) EditAllowlist(ctx context.Context, p, svc string, confirmEmpty bool, attempts int, edit func([]apitype.AllowEntry) ([]apitype.AllowEntry, error)) (apitype.Allowlist, error) {
	if attempts <= 0 {
		attempts = 5
	}
	var err error
	for i := 0; i < attempts; i++ {
		cur, tag, gerr := c.GetAllowlist(ctx, p, svc)
		if gerr != nil {
			return cur, gerr
		}
		next, eerr := edit(append([]apitype.AllowEntry(nil), cur.AllowedIPs...))
		if eerr != nil {
			return cur, eerr
		}
		if next == nil {
			next = []apitype.AllowEntry{}
		}
		var out apitype.Allowlist
		out, _, err = c.PutAllowlist(ctx, p, svc, apitype.AllowlistUpdate{AllowedIPs: next, ConfirmEmpty: confirmEmpty}, tag)
		if err == nil {
			return out, nil
		}
		if !HasCode(err, "stale_revision") {
			return out, err
		}
	}
	return apitype.Allowlist{}, fmt.Errorf("the allowlist kept changing under %d attempts: %w", attempts, err)
}

// IsNotFound reports whether err is a 404 from the API.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == 404
}

// VPCFailedError is returned by WaitVPC when the VPC turned failed.
type VPCFailedError struct {
	VPC apitype.VPC
}

func (e *VPCFailedError) Error() string {
	if e.VPC.StateInfo != nil {
		return fmt.Sprintf("vpc %s failed: %s (%s)", e.VPC.ID, e.VPC.StateInfo.Message, e.VPC.StateInfo.Code)
	}
	return fmt.Sprintf("vpc %s failed", e.VPC.ID)
}

// WaitVPC polls VPC id of project p until it is active; a failed VPC
// returns *VPCFailedError.
func (c *Client) WaitVPC(ctx context.Context, p, id string, interval time.Duration) (apitype.VPC, error) {
	return poll(ctx, interval, func() (apitype.VPC, bool, error) {
		v, err := c.GetVPC(ctx, p, id)
		if err != nil {
			return v, false, err
		}
		switch v.State {
		case "active":
			return v, true, nil
		case "failed":
			return v, true, &VPCFailedError{VPC: v}
		}
		return v, false, nil
	})
}

// PeeringFailedError is returned by WaitPeering when the peering ended
// without being requested in the peer's cloud.
type PeeringFailedError struct {
	Peering apitype.Peering
}

func (e *PeeringFailedError) Error() string {
	if e.Peering.StateInfo != nil {
		return fmt.Sprintf("peering %s is %s: %s (%s)", e.Peering.ID, e.Peering.State, e.Peering.StateInfo.Message, e.Peering.StateInfo.Code)
	}
	return fmt.Sprintf("peering %s is %s", e.Peering.ID, e.Peering.State)
}

// WaitPeering polls peering id of project p until the request has reached
// the peer's cloud (it has a cloud_peering_id and is pending acceptance or
// active); a peering that failed or ended returns *PeeringFailedError.
func (c *Client) WaitPeering(ctx context.Context, p, id string, interval time.Duration) (apitype.Peering, error) {
	return poll(ctx, interval, func() (apitype.Peering, bool, error) {
		pc, err := c.GetPeering(ctx, p, id)
		if err != nil {
			return pc, false, err
		}
		switch pc.State {
		case "pending-acceptance", "active":
			return pc, pc.CloudPeeringID != "", nil
		case "provisioning":
			return pc, false, nil
		}
		return pc, true, &PeeringFailedError{Peering: pc}
	})
}
