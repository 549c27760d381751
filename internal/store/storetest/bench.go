package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// BenchAllowlistPut measures the store's part of an allowlist PUT under 16
// concurrent writers on s, an empty store: read the service, replace its
// 100-entry allowlist, bump the revision and append an audit entry, in one
// transaction. It reports latency percentiles (p50-ms, p99-ms, max-ms).
func BenchAllowlistPut(b *testing.B, s store.Store) {
	const writers, services = 16, 16
	ctx := context.Background()
	var err error
	allow := make([]domain.AllowEntry, 100)
	for i := range allow {
		allow[i] = domain.AllowEntry{CIDR: fmt.Sprintf("198.51.%d.0/24", i), Description: "office"}
	}
	err = s.Update(ctx, func(tx store.Tx) error {
		for i := range services {
			svc := &domain.Service{Meta: domain.Meta{ID: fmt.Sprintf("svc-%d", i), ProjectID: "proj-1", State: domain.StateRunning}, AllowedIPs: allow}
			if err := store.Put(ctx, tx, svc); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	var wg sync.WaitGroup
	ops := make(chan int)
	for range writers {
		wg.Go(func() {
			for i := range ops {
				start := time.Now()
				err := s.Update(ctx, func(tx store.Tx) error {
					svc, err := store.Get[domain.Service](ctx, tx, fmt.Sprintf("svc-%d", i%services))
					if err != nil {
						return err
					}
					svc.AllowedIPs[0].Description = fmt.Sprint(i)
					svc.AllowlistRevision++
					if err := store.Put(ctx, tx, svc); err != nil {
						return err
					}
					if _, err := tx.BumpRevision(ctx); err != nil {
						return err
					}
					last, err := tx.LastAudit(ctx)
					if err != nil && !errors.Is(err, store.ErrNotFound) {
						return err
					}
					detail, _ := json.Marshal(map[string]int{"entries": len(svc.AllowedIPs)})
					return tx.AppendAudit(ctx, domain.AuditEntry{Seq: last.Seq + 1, Time: time.Now(), Actor: "tok-1",
						Action: "service.allowlist.put", Target: svc.ID, Outcome: domain.OutcomeSuccess, Detail: string(detail)})
				})
				if err != nil {
					b.Error(err)
				}
				d := time.Since(start)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	for i := range b.N {
		ops <- i
	}
	close(ops)
	wg.Wait()
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
}
