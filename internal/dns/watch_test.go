package dns_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/dns"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/store/sqlitestore"
)

// TestWatch: a store change shows in the served zone, with the revision as
// serial.
func TestWatch(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "moat.db"), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	zoneFile := filepath.Join(t.TempDir(), "zone.json")
	s := newServer(t, dns.Config{Nameservers: []dns.Nameserver{ns1}, ZoneFile: zoneFile})
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Watch(wctx, st, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()

	wait := func(what string, ok func(z *dns.Zone) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if z := s.Zone(); z != nil && ok(z) {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("zone never showed %s; last: %v", what, s.Zone())
	}
	wait("an empty zone", func(z *dns.Zone) bool { return len(z.Records()) == 1 })

	sv := svc("svc-pub", proj, domain.StateRunning, "")
	nd := node("node-a", "svc-pub", 0, domain.StateRunning, "198.18.1.10")
	var rev int64
	write := func() {
		t.Helper()
		err := st.Update(ctx, func(tx store.Tx) error {
			for _, o := range []domain.Object{sv, nd} {
				if err := store.Put(ctx, tx, o); err != nil {
					return err
				}
			}
			var err error
			rev, err = tx.BumpRevision(ctx)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	write()
	wait("the public name", func(z *dns.Zone) bool {
		return slices.Equal(z.Lookup(pubName), []netip.Addr{netip.MustParseAddr("198.18.1.10")}) && z.Serial() == uint32(rev)
	})

	sv.VPCID, nd.Address = vpc, "10.0.0.7"
	write()
	wait("the private name only", func(z *dns.Zone) bool {
		return len(z.Lookup(pubName)) == 0 &&
			slices.Equal(z.Lookup(pubPrivName), []netip.Addr{netip.MustParseAddr("10.0.0.7")}) && z.Serial() == uint32(rev)
	})
	// The zone file holds what is served (written before the next wait).
	f, err := dns.ReadZoneFile(zoneFile)
	if err != nil {
		t.Fatal(err)
	}
	if f.Serial() != uint32(rev) || !slices.Equal(f.Lookup(pubPrivName), []netip.Addr{netip.MustParseAddr("10.0.0.7")}) {
		t.Errorf("zone file: serial %d, %s = %v; want serial %d, 10.0.0.7", f.Serial(), pubPrivName, f.Lookup(pubPrivName), rev)
	}
}
