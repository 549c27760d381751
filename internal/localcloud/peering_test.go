package localcloud_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/localcloud"
)

func TestPeeringRegistry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, dir := newCloudDir(t)
	prov, err := c.EnsureVPC(ctx, "vpc-prov", netip.MustParsePrefix("10.0.0.0/17"))
	if err != nil {
		t.Fatal(err)
	}
	cidr := netip.MustParsePrefix("172.31.0.0/16")
	for _, id := range []string{"vpc-cust", "vpc-lap"} {
		if _, err := c.EnsureVPC(ctx, id, cidr); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.EnsureVPC(ctx, "vpc-over", netip.MustParsePrefix("10.0.0.0/16")); err != nil {
		t.Fatal(err)
	}
	for _, o := range []localcloud.VPCOwner{
		{VPC: "vpc-cust", Account: "111111111111", Region: "us-east-1"},
		{VPC: "vpc-over", Account: "111111111111", Region: "us-east-1"},
	} {
		if err := c.SetVPCOwner(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	req := func(vpc, account, region string, declared ...string) localcloud.Peering {
		t.Helper()
		r := localcloud.PeeringRequest{ID: localcloud.NewPeeringID(), RequesterVPC: prov.ID,
			AccepterAccount: account, AccepterVPC: vpc, AccepterRegion: region}
		if len(declared) == 0 {
			declared = []string{"172.31.0.0/16"}
		}
		for _, d := range declared {
			r.DeclaredCIDRs = append(r.DeclaredCIDRs, netip.MustParsePrefix(d))
		}
		p, err := c.RequestPeering(ctx, r)
		if err != nil {
			t.Fatalf("RequestPeering(%+v): %v", r, err)
		}
		again, err := c.RequestPeering(ctx, r)
		if err != nil || again.State != p.State || again.CreatedAt != p.CreatedAt {
			t.Errorf("RequestPeering again = %+v, %v; want %+v", again, err, p)
		}
		return p
	}

	// Failures decided at request time.
	for _, tc := range []struct {
		vpc, account, region, reason string
	}{
		{"vpc-nope", "111111111111", "us-east-1", "does not exist"},
		{"vpc-lap", "111111111111", "us-east-1", "does not exist"}, // no owner
		{"vpc-cust", "222222222222", "us-east-1", "does not exist"},
		{"vpc-cust", "111111111111", "eu-west-1", "region"},
		{"vpc-over", "111111111111", "us-east-1", "overlapping"},
	} {
		p := req(tc.vpc, tc.account, tc.region)
		if p.State != localcloud.PeeringFailed || !strings.Contains(p.Reason, tc.reason) {
			t.Errorf("request to %s/%s/%s = %s %q, want failed naming %q", tc.account, tc.vpc, tc.region, p.State, p.Reason, tc.reason)
		}
	}

	// Pending, then accepted: a link with both ends.
	p := req("vpc-cust", "111111111111", "us-east-1")
	if p.State != localcloud.PeeringPendingAcceptance || !p.RequesterAddr.IsValid() || !p.AccepterAddr.IsValid() ||
		p.RequesterCIDR != prov.CIDR || p.AccepterCIDR != cidr || p.ExpiresAt.Sub(p.CreatedAt) != localcloud.PeeringExpiry {
		t.Errorf("pending request = %+v", p)
	}
	a, err := c.AcceptPeering(ctx, p.ID)
	if err != nil || a.State != localcloud.PeeringActive || a.AccepterAddr != p.AccepterAddr {
		t.Errorf("AcceptPeering = %+v, %v; want active", a, err)
	}
	if _, err := c.RejectPeering(ctx, p.ID); !errors.Is(err, localcloud.ErrState) {
		t.Errorf("RejectPeering(active) = %v, want ErrState", err)
	}
	d, err := c.DeletePeering(ctx, p.ID)
	if err != nil || d.State != localcloud.PeeringDeleted || d.AccepterAddr.IsValid() {
		t.Errorf("DeletePeering = %+v, %v; want deleted without a link", d, err)
	}

	// A declared range outside the real one fails at acceptance.
	m := req("vpc-cust", "111111111111", "us-east-1", "172.31.0.0/16", "192.168.0.0/16")
	f, err := c.AcceptPeering(ctx, m.ID)
	if err != nil || f.State != localcloud.PeeringFailed || !strings.Contains(f.Reason, "192.168.0.0/16") || f.AccepterAddr.IsValid() {
		t.Errorf("AcceptPeering(mismatch) = %+v, %v; want failed naming 192.168.0.0/16", f, err)
	}

	// Reject; expiry by the cloud's clock, seen by another Cloud value.
	rj := req("vpc-cust", "111111111111", "us-east-1")
	if r, err := c.RejectPeering(ctx, rj.ID); err != nil || r.State != localcloud.PeeringRejected {
		t.Errorf("RejectPeering = %+v, %v; want rejected", r, err)
	}
	ex := req("vpc-cust", "111111111111", "us-east-1")
	before, _ := c.Now(ctx)
	after, err := c.AdvanceClock(ctx, 8*24*time.Hour)
	if err != nil || after.Sub(before) < 8*24*time.Hour {
		t.Fatalf("AdvanceClock = %v, %v; want 8 days after %v", after, err, before)
	}
	c2, err := localcloud.New(localcloud.Config{Prefix: c.Prefix(), LockDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c2.PeeringStatus(ctx, ex.ID); err != nil || s.State != localcloud.PeeringExpired {
		t.Errorf("PeeringStatus after 8 days = %+v, %v; want expired", s, err)
	}
	if _, err := c.AcceptPeering(ctx, ex.ID); !errors.Is(err, localcloud.ErrState) {
		t.Errorf("AcceptPeering(expired) = %v, want ErrState", err)
	}
	if _, err := c.PeeringStatus(ctx, "pcx-00000000000000000"); !errors.Is(err, localcloud.ErrNotFound) {
		t.Errorf("PeeringStatus(unknown) = %v, want ErrNotFound", err)
	}
	all, err := c.Peerings(ctx)
	if err != nil || len(all) != 9 {
		t.Errorf("Peerings() = %d, %v; want 9", len(all), err)
	}
}
