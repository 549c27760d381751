package terraform

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"

	"github.com/moatdb/moat/internal/client"
)

// Poll intervals: the first check comes soon (a local stack answers in
// well under a second), later ones back off to the cap.
const (
	pollFirst = 100 * time.Millisecond
	pollMax   = 2 * time.Second
)

// waitFor calls get until done says it is finished (or fails), or ctx
// ends: the operation's timeout from its timeouts block. It returns the
// last value read in every case.
func waitFor[T any](ctx context.Context, what string, get func(context.Context) (T, error), done func(T) (bool, error)) (T, error) {
	interval := pollFirst
	timedOut := func() error {
		return fmt.Errorf("wait for %s: %w (raise the timeouts block's value if it is still under way)", what, ctx.Err())
	}
	var last T // the last value read: a failed read returns it
	for {
		v, err := get(ctx)
		if err != nil {
			if ctx.Err() != nil {
				// The timeout ended a read in flight.
				return last, timedOut()
			}
			return last, err
		}
		last = v
		ok, err := done(v)
		if ok || err != nil {
			return v, err
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, timedOut()
		case <-t.C:
		}
		interval = min(interval*2, pollMax)
	}
}

// gone reports whether an object read with err (or in state) no longer
// exists: a 404, or the deleted state.
func gone(state string, err error) bool {
	return client.IsNotFound(err) || (err == nil && state == "deleted")
}

// waitGone waits until get answers 404 or the deleted state.
func waitGone(ctx context.Context, what string, get func(context.Context) (string, error)) error {
	_, err := waitFor(ctx, what+" deleted", func(ctx context.Context) (string, error) {
		s, err := get(ctx)
		if client.IsNotFound(err) {
			return "deleted", nil
		}
		return s, err
	}, func(s string) (bool, error) { return s == "deleted", nil })
	return err
}

// deleteAndWait asks the API to delete object id (what: "the VPC") and
// waits, within the resource's delete timeout, until it is gone; an
// object already gone counts as deleted. Problems go to diags.
func deleteAndWait(ctx context.Context, diags *diag.Diagnostics, to timeouts.Value, what, id string,
	del func(context.Context) error, state func(context.Context) (string, error)) {
	d, ds := to.Delete(ctx, defaultTimeout)
	diags.Append(ds...)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := del(ctx); err != nil && !gone("", err) {
		addError(diags, path.Empty(), "Cannot delete "+what, err)
		return
	}
	if err := waitGone(ctx, what+" "+id, state); err != nil {
		addError(diags, path.Empty(), strings.ToUpper(what[:1])+what[1:]+" was not deleted", err)
	}
}
