package dns

import (
	"context"
	"fmt"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// BuildFunc reads the zone from a store transaction; rev is the
// desired-state revision the transaction was opened after (the serial).
type BuildFunc func(ctx context.Context, tx store.Tx, rev int64) (*Zone, error)

// Load reads every service and node from tx and builds the zone (see
// Build). It is the only part of the package that reads the store.
func Load(ctx context.Context, tx store.Tx, origin string, rev int64, nameservers ...Nameserver) (*Zone, error) {
	svcs, err := store.List[domain.Service](ctx, tx, store.Query{})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	nodes, err := store.List[domain.Node](ctx, tx, store.Query{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return Build(origin, rev, svcs, nodes, nameservers...)
}

// Watch keeps the server's zone current: it builds the zone now and again
// after every change of st's desired-state revision, and swaps it in (and
// writes it to the configured ZoneFile). A
// nil build is Load with the server's domain and nameservers. Errors are
// logged and retried with backoff while the last good zone keeps being
// served. It returns nil when ctx is done.
func (s *Server) Watch(ctx context.Context, st store.Store, build BuildFunc) error {
	if build == nil {
		build = func(ctx context.Context, tx store.Tx, rev int64) (*Zone, error) {
			return Load(ctx, tx, s.origin, rev, s.nameservers...)
		}
	}
	const minBackoff, maxBackoff = 100 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	retry := func(what string, err error) bool {
		if ctx.Err() != nil {
			return false
		}
		s.log.Error("dns zone not updated", "step", what, "retry_in", backoff.String(), "err", err)
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}

	var rev int64
	for {
		r, err := st.Revision(ctx)
		if err == nil {
			rev = r
			break
		}
		if !retry("read revision", err) {
			return nil
		}
	}
	for {
		var z *Zone
		err := st.View(ctx, func(tx store.Tx) error {
			var err error
			z, err = build(ctx, tx, rev)
			return err
		})
		if err == nil && s.zoneFile != "" {
			if err = WriteZoneFile(s.zoneFile, z); err == nil && s.zoneWritten != nil {
				s.zoneWritten()
			}
		}
		if err == nil {
			err = s.SetZone(z)
		}
		if err != nil {
			if !retry("build", err) {
				return nil
			}
			continue
		}
		backoff = minBackoff
		s.log.Debug("dns zone updated", "serial", z.Serial(), "records", len(z.hosts))
		for {
			next, err := st.WaitRevision(ctx, rev)
			if err == nil {
				rev = next
				break
			}
			if !retry("wait revision", err) {
				return nil
			}
		}
	}
}
