package dns_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	miekg "github.com/miekg/dns"

	"github.com/moatdb/moat/internal/dns"
)

func TestZoneFileRoundTrip(t *testing.T) {
	t.Parallel()
	z := testZone(t, 7)
	path := filepath.Join(t.TempDir(), "zone.json")
	if err := dns.WriteZoneFile(path, z); err != nil {
		t.Fatal(err)
	}
	got, err := dns.ReadZoneFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Origin() != z.Origin() || got.Serial() != z.Serial() {
		t.Errorf("ReadZoneFile = %s serial %d, want %s serial %d", got.Origin(), got.Serial(), z.Origin(), z.Serial())
	}
	if diff := cmp.Diff(z.Nameservers(), got.Nameservers()); diff != "" {
		t.Errorf("nameservers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(z.Records(), got.Records(), cmp.Comparer(func(a, b dns.Record) bool { return a == b })); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	// A server given the read zone answers as one given the built zone,
	// empty non-terminals included.
	built, read := start(t, newServer(t, dns.Config{})), start(t, newServer(t, dns.Config{}))
	_ = built
	for _, name := range []string{pubName, privName, pubPrivName, "proj-aaaaaaaaaaaaaaaa.moat.test.", "vpc.moat.test.", "nope.moat.test."} {
		a := newServerWith(t, z)
		b := newServerWith(t, got)
		if diff := cmp.Diff(summarize(query(t, "udp", a, name, miekg.TypeA)), summarize(query(t, "udp", b, name, miekg.TypeA))); diff != "" {
			t.Errorf("%s: answers differ (-built +read):\n%s", name, diff)
		}
	}
	_ = read
}

// newServerWith serves z on a fresh port and returns the address.
func newServerWith(t *testing.T, z *dns.Zone) string {
	t.Helper()
	s := newServer(t, dns.Config{})
	if err := s.SetZone(z); err != nil {
		t.Fatal(err)
	}
	return start(t, s)
}

func TestZoneFileRefused(t *testing.T) {
	t.Parallel()
	good, err := dns.MarshalZone(testZone(t, 7))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, old, new string }{
		{"version", `"version": 1`, `"version": 2`},
		{"unknown field", `"version": 1`, `"version": 1, "extra": true`},
		{"origin", `"origin": "moat.test."`, `"origin": "Moat.test"`},
		{"name outside the zone", `"svc-pub.proj-aaaaaaaaaaaaaaaa.moat.test."`, `"svc-pub.example.com."`},
		{"IPv6 address", `"198.18.1.10"`, `"2001:db8::1"`},
		{"not JSON", `{`, `[`},
	} {
		b := strings.Replace(string(good), tt.old, tt.new, 1)
		if b == string(good) {
			t.Fatalf("%s: %q is not in the zone file:\n%s", tt.name, tt.old, good)
		}
		if _, err := dns.UnmarshalZone([]byte(b)); err == nil {
			t.Errorf("%s: UnmarshalZone accepted\n%s", tt.name, b)
		}
	}
}

// TestFollowZoneFile: a server in another process follows the file the
// control plane's Watch writes: SERVFAIL before the first zone, each new
// zone once written, and the last good zone after a bad write or the
// file's removal.
func TestFollowZoneFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "zone.json")
	s := newServer(t, dns.Config{})
	addr := start(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.FollowZoneFile(ctx, path, 10*time.Millisecond, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("FollowZoneFile: %v", err)
		}
	}()
	answer := func() string {
		return miekg.RcodeToString[query(t, "udp", addr, pubName, miekg.TypeA).Rcode]
	}
	waitSerial := func(want uint32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if z := s.Zone(); z != nil && z.Serial() == want {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("the followed zone never reached serial %d (at %v)", want, s.Zone())
	}
	if got := answer(); got != "SERVFAIL" {
		t.Errorf("before the zone file: %s, want SERVFAIL", got)
	}
	for _, serial := range []int64{7, 8} {
		if err := dns.WriteZoneFile(path, testZone(t, serial)); err != nil {
			t.Fatal(err)
		}
		waitSerial(uint32(serial))
		if got := answer(); got != "NOERROR" {
			t.Errorf("serial %d: %s, want NOERROR", serial, got)
		}
	}
	if err := os.WriteFile(path, []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // several polls
	if z := s.Zone(); z == nil || z.Serial() != 8 || answer() != "NOERROR" {
		t.Errorf("after a bad write and the file's removal: zone %v, want the last good one (serial 8)", z)
	}
	if err := dns.WriteZoneFile(path, testZone(t, 9)); err != nil {
		t.Fatal(err)
	}
	waitSerial(9)
}

// TestFollowZoneFileReload: a reload rereads the file at once, long before
// the next poll.
func TestFollowZoneFileReload(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "zone.json")
	s := newServer(t, dns.Config{})
	reload := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.FollowZoneFile(ctx, path, time.Hour, reload) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("FollowZoneFile: %v", err)
		}
	}()
	if err := dns.WriteZoneFile(path, testZone(t, 3)); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	reload <- struct{}{} // the first reread is done once the second is received
	if z := s.Zone(); z == nil || z.Serial() != 3 {
		t.Errorf("after a reload: zone %v, want serial 3", z)
	}
}
