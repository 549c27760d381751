// Package fanout benchmarks how a change reaches the agents at fleet
// scale: N simulated hosts (long-polling clients with host-bound agent
// tokens, no PostgreSQL, in this process) carrying 3 nodes each (one per
// service: a service's 3 nodes on 3 hosts), on the SQLite store and on
// PostgreSQL. One allowlist change at a time, through the API: the time
// until every affected host has it (its long poll answered with the new
// allowlist revision), how many hosts' polls a change answers, and the
// store records read per change (the change itself, the affected hosts'
// desired states, the polls' token checks). The reference in the same run
// is the same with 10 hosts: the work per change must not grow with the
// hosts a change does not affect.
//
// Run: bench/fanout/run.sh, or go test -run '^$' -bench . -benchtime=1x ./bench/fanout
package fanout

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
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
	nodesPerService = 3
	changes         = 205 // per configuration; the first few warm up
	warmup          = 5
	// broadcastChanges is the count of the row where every change wakes
	// every host (what one global revision did), which is slow.
	broadcastChanges = 25
)

// counted is a store whose records read can be counted (both stores'
// shared SQL layer counts them).
type counted interface {
	store.Store
	RecordsRead() int64
}

type result struct {
	hosts, nodes int
	p50, p99     time.Duration // until every affected host has the change
	put, put99   time.Duration // p50 and p99 of the PUT alone (its commit)
	fan          time.Duration // p99 from the PUT's answer to the last host's
	woken        float64       // hosts whose poll a change answered, mean
	reads        float64       // store records read per change, mean
}

func BenchmarkFanout(b *testing.B) {
	ctx := context.Background()
	stores := []struct {
		name string
		open func() (counted, error)
	}{
		{"sqlite", func() (counted, error) {
			return sqlitestore.Open(ctx, filepath.Join(b.TempDir(), "moat.db"), sqlitestore.Options{})
		}},
		{"postgres", func() (counted, error) {
			return pgstore.Open(ctx, pgtest.Shared(b).NewDatabase(b))
		}},
	}
	fmt.Fprintf(os.Stderr, "\n%-9s %6s %6s %9s %9s %9s %9s %9s %13s %13s\n", "store", "hosts", "nodes", "p50", "p99", "put p50", "put p99", "fan p99", "woken/change", "reads/change")
	for _, s := range stores {
		var ref result
		for _, c := range []struct {
			hosts, changes int
			broadcast      bool
		}{{10, changes, false}, {1000, changes, false}, {1000, broadcastChanges, true}} {
			st, err := s.open()
			if err != nil {
				b.Fatal(err)
			}
			r, err := run(st, c.hosts, c.changes, c.broadcast)
			st.Close()
			if err != nil {
				b.Fatal(err)
			}
			ms := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
			fmt.Fprintf(os.Stderr, "%-9s %6d %6d %9s %9s %9s %9s %9s %13.1f %13.1f", s.name, r.hosts, r.nodes,
				ms(r.p50), ms(r.p99), ms(r.put), ms(r.put99), ms(r.fan), r.woken, r.reads)
			name := fmt.Sprintf("%s-%dhosts", s.name, c.hosts)
			switch {
			case c.hosts == 10:
				ref = r
				fmt.Fprintln(os.Stderr, "  (reference)")
			case c.broadcast:
				name += "-broadcast"
				fmt.Fprintf(os.Stderr, "  every host woken (one global revision, as before): p99 %.2fx, reads %.0fx the reference\n", float64(r.p99)/float64(ref.p99), r.reads/ref.reads)
			default:
				fmt.Fprintf(os.Stderr, "  p99 %.2fx, reads %.2fx the reference\n", float64(r.p99)/float64(ref.p99), r.reads/ref.reads)
			}
			b.ReportMetric(float64(r.p99.Microseconds())/1000, name+"-p99-ms")
			b.ReportMetric(r.reads, name+"-reads/change")
		}
	}
}

// fleet is the platform of one run: a project with one 3-node service per
// host, service i's nodes on hosts i, i+1, i+2.
type fleet struct {
	project  string
	services []string
	hosts    []string
	tokens   []string // by host
}

func seed(ctx context.Context, st store.Store, keys *secret.Keyring, project string, hosts int) (fleet, error) {
	f := fleet{project: project}
	now := time.Now().UTC()
	err := st.Update(ctx, func(tx store.Tx) error {
		for h := range hosts {
			name := fmt.Sprintf("host-%04d", h)
			f.hosts = append(f.hosts, name)
			sec := apiserver.NewSecret()
			tok := &domain.Token{Meta: domain.Meta{ID: domain.NewID(domain.PrefixToken), State: domain.StateActive, CreatedAt: now},
				Role: domain.RoleAgent, Hash: apiserver.HashSecret(sec), Host: name}
			if err := store.Put(ctx, tx, tok); err != nil {
				return err
			}
			f.tokens = append(f.tokens, apiserver.FormatToken(tok.ID, sec))
		}
		for i := range hosts {
			svc := &domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: project, Name: fmt.Sprintf("db%d", i),
				State: domain.StateRunning, CreatedAt: now, UpdatedAt: now}, Region: "us-east-1", NodeCount: nodesPerService,
				AllowedIPs: domain.DefaultAllowlist(), AllowlistRevision: 1, AdminVerifier: "SCRAM-SHA-256$4096:c2FsdA==$a:b"}
			if err := store.Put(ctx, tx, svc); err != nil {
				return err
			}
			f.services = append(f.services, svc.ID)
			for j := range nodesPerService {
				n := domain.NewNode(svc, j, fmt.Sprintf("us-east-1%c", 'a'+j), now)
				n.Host = f.hosts[(i+j)%hosts]
				n.Namespace = "moat-h-n-" + n.ID
				k := i*nodesPerService + j
				n.Address = fmt.Sprintf("198.18.%d.%d", 1+k/250, 1+k%250)
				n.CertPEM, n.ReplCertPEM = "CERT "+n.ID, "REPL CERT "+n.ID
				n.KeySealed = keys.Seal([]byte("KEY "+n.ID), domain.NodeKeyAD(n.ID))
				n.ReplKeySealed = keys.Seal([]byte("REPL KEY "+n.ID), domain.ReplKeyAD(n.ID))
				if _, err := n.ApplyReport(domain.NodeReport{State: domain.NodeReportRunning, Revision: 1}, now); err != nil {
					return err
				}
				if err := store.Put(ctx, tx, n); err != nil {
					return err
				}
			}
		}
		_, err := tx.BumpRevision(ctx) // every host's first state
		return err
	})
	return f, err
}

// run measures changes allowlist changes on a fleet of hosts; with
// broadcast, each change also bumps every host's revision (BumpRevision),
// as the single global revision did, which the targeted rows compare with.
func run(st counted, hosts, changes int, broadcast bool) (result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "moat-fanout-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	keys, err := secret.LoadOrCreateKey(filepath.Join(dir, "master.key"))
	if err != nil {
		return result{}, err
	}
	var signer *audit.Signer
	if err := st.Update(ctx, func(tx store.Tx) (err error) {
		signer, err = audit.LoadOrCreateSigner(ctx, tx, keys)
		return err
	}); err != nil {
		return result{}, err
	}
	srv, err := apiserver.New(apiserver.Config{Store: st, Keys: keys, AuditKey: signer.PublicKey(), Domain: "moat.test"})
	if err != nil {
		return result{}, err
	}
	hs := httptest.NewTLSServer(srv)
	defer hs.Close()
	tr := hs.Client().Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = hosts + 16
	tr.TLSClientConfig = &tls.Config{RootCAs: hs.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	opSecret := apiserver.NewSecret()
	opTok := &domain.Token{Meta: domain.Meta{ID: domain.NewID(domain.PrefixToken), State: domain.StateActive, CreatedAt: time.Now()}, Role: domain.RoleOperator, Hash: apiserver.HashSecret(opSecret)}
	if err := st.Update(ctx, func(tx store.Tx) error { return store.Put(ctx, tx, opTok) }); err != nil {
		return result{}, err
	}
	op, err := client.New(client.Config{URL: hs.URL, Token: apiserver.FormatToken(opTok.ID, opSecret), HTTPClient: hc})
	if err != nil {
		return result{}, err
	}
	p, err := op.CreateProject(ctx, apitype.ProjectCreate{Name: "fanout"})
	if err != nil {
		return result{}, err
	}
	f, err := seed(ctx, st, keys, p.ID, hosts)
	if err != nil {
		return result{}, err
	}

	// The simulated hosts: each long-polls its desired state and, when an
	// answer carries the awaited allowlist revision of the changed
	// service, says so.
	type awaited struct {
		service string
		rev     int64
	}
	var target atomic.Pointer[awaited]
	got := make(chan time.Time, hosts)
	var answered atomic.Int64 // answers with a new revision
	ready := make(chan struct{}, hosts)
	var wg sync.WaitGroup
	errs := make(chan error, hosts)
	for h := range hosts {
		c, err := client.New(client.Config{URL: hs.URL, Token: f.tokens[h], HTTPClient: hc})
		if err != nil {
			return result{}, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var after int64
			var seen *awaited
			for first := true; ; first = false {
				d, err := c.HostDesired(ctx, f.hosts[h], after)
				if err != nil {
					if ctx.Err() == nil {
						errs <- fmt.Errorf("host %s: %w", f.hosts[h], err)
					}
					return
				}
				at := time.Now()
				if d.Revision != after {
					answered.Add(1)
				}
				after = d.Revision
				if first {
					ready <- struct{}{}
				}
				if t := target.Load(); t != nil && t != seen {
					for _, n := range d.Nodes {
						if n.ServiceID == t.service && n.AllowlistRevision >= t.rev {
							seen = t
							got <- at
							break
						}
					}
				}
			}
		}()
	}
	defer wg.Wait()
	defer cancel()
	for range hosts {
		select {
		case <-ready:
		case err := <-errs:
			return result{}, err
		}
	}

	var lat, puts, fans []time.Duration
	var woken, reads int64
	allowRev := map[string]int64{} // by service, beyond the seeded 1
	for _, id := range f.services {
		allowRev[id] = 1
	}
	for i := range changes {
		svc := f.services[(i*7919)%hosts] // spread over the fleet
		allowRev[svc]++
		target.Store(&awaited{service: svc, rev: allowRev[svc]})
		a0, r0 := answered.Load(), st.RecordsRead()
		t0 := time.Now()
		al, _, err := op.PutAllowlist(ctx, f.project, svc, apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)}}}, "")
		if err != nil {
			return result{}, err
		}
		putDone := time.Now()
		if al.Revision != allowRev[svc] {
			return result{}, fmt.Errorf("allowlist revision %d, want %d", al.Revision, allowRev[svc])
		}
		if broadcast {
			if err := st.Update(ctx, func(tx store.Tx) error { _, err := tx.BumpRevision(ctx); return err }); err != nil {
				return result{}, err
			}
		}
		var last time.Time
		for range nodesPerService {
			select {
			case at := <-got:
				last = at
			case err := <-errs:
				return result{}, err
			case <-time.After(20 * time.Second):
				return result{}, errors.New("an affected host did not get the change within 20s")
			}
		}
		if broadcast {
			// Every host answers (the affected ones twice, perhaps).
			for deadline := time.Now().Add(time.Minute); answered.Load()-a0 < int64(hosts); {
				if time.Now().After(deadline) {
					return result{}, errors.New("not every host answered a broadcast change within a minute")
				}
				time.Sleep(10 * time.Millisecond)
			}
		} else {
			// The answers to other hosts, if any, come with those of the
			// affected ones: let them arrive before counting.
			time.Sleep(20 * time.Millisecond)
		}
		if i < warmup {
			continue
		}
		lat = append(lat, last.Sub(t0))
		puts = append(puts, putDone.Sub(t0))
		fans = append(fans, max(0, last.Sub(putDone)))
		woken += answered.Load() - a0
		reads += st.RecordsRead() - r0
	}
	for _, l := range [][]time.Duration{lat, puts, fans} {
		slices.Sort(l)
	}
	n := len(lat)
	return result{hosts: hosts, nodes: hosts * nodesPerService, p50: lat[n/2], p99: lat[n*99/100], put: puts[n/2], put99: puts[n*99/100], fan: fans[n*99/100],
		woken: float64(woken) / float64(n), reads: float64(reads) / float64(n)}, nil
}
