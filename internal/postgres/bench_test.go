package postgres

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BenchmarkColdStart measures a new node from nothing to its first query
// over verified TLS, in production settings (fsync on): initdb, start,
// bootstrap (roles, database, password, pg_hba, reload) and the first
// verify-full connection and query. It reports the median of each phase
// over b.N runs; run it with -benchtime=5x. The data directory is on disk
// ($MOAT_BENCH_DIR, default /var/tmp), as a node's would be.
func BenchmarkColdStart(b *testing.B) {
	requirePostgres(b)
	base := os.Getenv("MOAT_BENCH_DIR")
	if base == "" {
		base = "/var/tmp"
	}
	f := certs(b)
	ctx := context.Background()
	var initT, startT, bootT, queryT, totalT []time.Duration
	for b.Loop() {
		dir, err := os.MkdirTemp(base, "moat-postgres-bench-")
		if err != nil {
			b.Fatal(err)
		}
		os.Chmod(dir, 0o755)
		t0 := time.Now()
		in, err := New(Config{
			Name:            "bench",
			DataDir:         filepath.Join(dir, "data"),
			SocketDir:       filepath.Join(dir, "run"),
			ListenAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
			Port:            freePort(b),
			ServerCertPEM:   f.serverCert,
			ServerKeyPEM:    f.serverKey,
			CAPEM:           caPEM(f.internal),
		})
		if err != nil {
			b.Fatal(err)
		}
		func() {
			defer func() {
				in.Stop(ctx)
				os.RemoveAll(dir)
			}()
			if err := in.Init(ctx); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := in.Start(ctx); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			const password = "bench-password"
			if err := in.Bootstrap(ctx); err != nil {
				b.Fatal(err)
			}
			if err := in.SetPassword(ctx, AdminUser, password); err != nil {
				b.Fatal(err)
			}
			if err := in.WriteHBA(Policy{Allow: prefixes("127.0.0.1/32")}); err != nil {
				b.Fatal(err)
			}
			if err := in.Reload(ctx); err != nil {
				b.Fatal(err)
			}
			t3 := time.Now()
			conn, err := pgx.Connect(ctx, clientDSN(b, in, "127.0.0.1", AdminUser, password, f.project, "verify-full"))
			if err != nil {
				b.Fatal(err)
			}
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Close(ctx)
			if err != nil {
				b.Fatal(err)
			}
			t4 := time.Now()
			initT = append(initT, t1.Sub(t0))
			startT = append(startT, t2.Sub(t1))
			bootT = append(bootT, t3.Sub(t2))
			queryT = append(queryT, t4.Sub(t3))
			totalT = append(totalT, t4.Sub(t0))
		}()
	}
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"init-ms", initT}, {"start-ms", startT}, {"bootstrap-ms", bootT}, {"first-query-ms", queryT}, {"total-ms", totalT}} {
		b.ReportMetric(float64(median(m.d))/float64(time.Millisecond), m.name)
	}
	b.ReportMetric(0, "ns/op")
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
