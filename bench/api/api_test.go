// Package api benchmarks the control plane's API latency: GET service and an
// allowlist PUT under 16 concurrent clients, on SQLite and on PostgreSQL, in
// one run. Each row prints its ratio to a reference measured in the same
// run: the same read or write as a bare store transaction (no HTTP, TLS,
// JSON, authentication or audit), the floor the API could reach.
//
// Run: make bench, or go test -run '^$' -bench . -benchtime=1x ./bench/api
package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/audit"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/pgtest"
	"github.com/moatdb/moat/internal/secret"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/store/pgstore"
	"github.com/moatdb/moat/internal/store/sqlitestore"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	clients   = 16
	perClient = 50
)

type stats struct{ p50, p99 time.Duration }

func measure(n int, op func(worker, i int) error) (stats, error) {
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				t0 := time.Now()
				if err := op(w, i); err != nil {
					errs <- err
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return stats{}, err
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	return stats{p50: all[len(all)/2], p99: all[len(all)*99/100]}, nil
}

func BenchmarkAPI(b *testing.B) {
	ctx := context.Background()
	stores := []struct {
		name string
		open func() (store.Store, error)
	}{
		{"sqlite", func() (store.Store, error) {
			return sqlitestore.Open(ctx, filepath.Join(b.TempDir(), "moat.db"), sqlitestore.Options{})
		}},
		{"postgres", func() (store.Store, error) {
			return pgstore.Open(ctx, pgtest.Shared(b).NewDatabase(b))
		}},
	}
	fmt.Fprintf(os.Stderr, "\n%-9s %-15s %9s %9s %12s %9s\n", "store", "operation", "p50", "p99", "ref p50", "ratio")
	for _, s := range stores {
		st, err := s.open()
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		rows := run(b, st)
		for _, r := range rows {
			fmt.Fprintf(os.Stderr, "%-9s %-15s %9s %9s %12s %8.1fx\n", s.name, r.name, r.api.p50.Round(10*time.Microsecond), r.api.p99.Round(10*time.Microsecond), r.ref.p50.Round(10*time.Microsecond), float64(r.api.p50)/float64(r.ref.p50))
			b.ReportMetric(float64(r.api.p99.Microseconds())/1000, s.name+"-"+strings.ReplaceAll(r.name, " ", "-")+"-p99-ms")
		}
	}
}

type row struct {
	name     string
	api, ref stats
}

func run(b *testing.B, st store.Store) []row {
	ctx := context.Background()
	keys, err := secret.LoadOrCreateKey(filepath.Join(b.TempDir(), "master.key"))
	if err != nil {
		b.Fatal(err)
	}
	var signer *audit.Signer
	if err := st.Update(ctx, func(tx store.Tx) (err error) {
		signer, err = audit.LoadOrCreateSigner(ctx, tx, keys)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	srv, err := apiserver.New(apiserver.Config{Store: st, Keys: keys, AuditKey: signer.PublicKey()})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewTLSServer(srv)
	defer hs.Close()
	secretStr := apiserver.NewSecret()
	tok := &domain.Token{Meta: domain.Meta{ID: domain.NewID(domain.PrefixToken), State: domain.StateActive, CreatedAt: time.Now()}, Role: domain.RoleOperator, Hash: apiserver.HashSecret(secretStr)}
	if err := st.Update(ctx, func(tx store.Tx) error { return store.Put(ctx, tx, tok) }); err != nil {
		b.Fatal(err)
	}
	tr := hs.Client().Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = clients
	tr.TLSClientConfig = &tls.Config{RootCAs: hs.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	c, err := client.New(client.Config{URL: hs.URL, Token: apiserver.FormatToken(tok.ID, secretStr), HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		b.Fatal(err)
	}
	p, err := c.CreateProject(ctx, apitype.ProjectCreate{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	svcs := make([]string, clients)
	for i := range svcs {
		s, err := c.CreateService(ctx, p.ID, apitype.ServiceCreate{Name: fmt.Sprintf("db%d", i), Region: "us-east-1", Nodes: 3})
		if err != nil {
			b.Fatal(err)
		}
		svcs[i] = s.ID
	}
	entries := func(w, i int) []apitype.AllowEntry {
		return []apitype.AllowEntry{{CIDR: fmt.Sprintf("10.%d.%d.0/24", w, i%256), Description: "office"}, {CIDR: "2001:db8::/32"}}
	}
	var rows []row
	get, err := measure(perClient, func(w, _ int) error { _, err := c.GetService(ctx, p.ID, svcs[w]); return err })
	if err != nil {
		b.Fatal(err)
	}
	getRef, err := measure(perClient, func(w, _ int) error {
		return st.View(ctx, func(tx store.Tx) error { _, err := store.Get[domain.Service](ctx, tx, svcs[w]); return err })
	})
	if err != nil {
		b.Fatal(err)
	}
	rows = append(rows, row{"GET service", get, getRef})
	put, err := measure(perClient, func(w, i int) error {
		_, _, err := c.PutAllowlist(ctx, p.ID, svcs[w], apitype.AllowlistUpdate{AllowedIPs: entries(w, i)}, "")
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	putRef, err := measure(perClient, func(w, i int) error {
		return st.Update(ctx, func(tx store.Tx) error {
			s, err := store.Get[domain.Service](ctx, tx, svcs[w])
			if err != nil {
				return err
			}
			s.AllowlistRevision++
			return store.Put(ctx, tx, s)
		})
	})
	if err != nil {
		b.Fatal(err)
	}
	rows = append(rows, row{"PUT allowlist", put, putRef})
	return rows
}
