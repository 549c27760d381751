package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moatdb/moat/internal/apitype"
)

// DefaultPoll is the polling interval of the Wait methods when given 0.
const DefaultPoll = time.Second

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
		return fmt.Sprintf("service %s failed: %s (%s)", e.Service.ID, e.Service.StateInfo.Message, e.Service.StateInfo.Code)
	}
	return fmt.Sprintf("service %s failed", e.Service.ID)
}

// poll calls check every interval until it reports done, fails, or ctx
// ends; the last value is returned in every case.
func poll[T any](ctx context.Context, interval time.Duration, check func() (T, bool, error)) (T, error) {
	if interval <= 0 {
		interval = DefaultPoll
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		v, done, err := check()
		if done || err != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-t.C:
		}
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
// service returns *ServiceFailedError.
func (c *Client) WaitService(ctx context.Context, p, svc string, interval time.Duration) (apitype.Service, error) {
	return poll(ctx, interval, func() (apitype.Service, bool, error) {
		s, err := c.GetService(ctx, p, svc)
		if err != nil {
			return s, false, err
		}
		switch s.State {
		case "running":
			return s, true, nil
		case "failed":
			return s, true, &ServiceFailedError{Service: s}
		}
		return s, false, nil
	})
}

// WaitAllowlist polls service svc's allowlist until every node enforces
// revision rev (applied_revision >= rev).
func (c *Client) WaitAllowlist(ctx context.Context, p, svc string, rev int64, interval time.Duration) (apitype.Allowlist, error) {
	return poll(ctx, interval, func() (apitype.Allowlist, bool, error) {
		a, _, err := c.GetAllowlist(ctx, p, svc)
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
