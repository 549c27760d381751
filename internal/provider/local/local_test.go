package local_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"

	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/provider"
	"github.com/moatdb/moat/internal/provider/local"
)

func newProvider(t *testing.T) (*local.Provider, *localcloud.Cloud) {
	t.Helper()
	netnstest.RequireRoot(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	c, err := localcloud.New(localcloud.Config{Prefix: "moat-pl" + hex.EncodeToString(b[:]) + "-", LockDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return local.New(c), c
}

// TestPeeringVerdicts runs requests the local cloud refuses or fails
// through the provider: each comes back as a state with a stable code.
func TestPeeringVerdicts(t *testing.T) {
	t.Parallel()
	p, c := newProvider(t)
	ctx := t.Context()
	v, err := p.EnsureVPC(ctx, provider.VPCRequest{ID: "vpc-aaaaaaaaaaaaaaaa", CIDR: netip.MustParsePrefix("10.0.0.0/17"), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := c.RouterNS("vpc-aaaaaaaaaaaaaaaa"); v.CloudVPCID != want {
		t.Errorf("CloudVPCID = %q, want %q", v.CloudVPCID, want)
	}
	if _, err := p.EnsureVPC(ctx, provider.VPCRequest{ID: "vpc-aaaaaaaaaaaaaaaa", CIDR: netip.MustParsePrefix("10.9.0.0/16")}); !errors.Is(err, provider.ErrRefused) {
		t.Errorf("EnsureVPC with another CIDR: %v, want ErrRefused", err)
	}
	customer := func(id, cidr, region string) {
		t.Helper()
		if _, err := c.EnsureVPC(ctx, id, netip.MustParsePrefix(cidr)); err != nil {
			t.Fatal(err)
		}
		if err := c.SetVPCOwner(ctx, localcloud.VPCOwner{VPC: id, Account: "111122223333", Region: region}); err != nil {
			t.Fatal(err)
		}
	}
	customer("vpc-00000000000000001", "10.0.64.0/18", "eu-west-1")
	customer("vpc-00000000000000002", "172.31.0.0/16", "eu-west-1")
	tests := []struct {
		name            string
		account, peerID string
		region          string
		wantState       string
		wantCode        string
	}{
		{"overlap", "111122223333", "vpc-00000000000000001", "eu-west-1", provider.PeeringFailed, "overlapping_cidrs"},
		{"region", "111122223333", "vpc-00000000000000002", "us-west-2", provider.PeeringFailed, "peer_region_mismatch"},
		{"account", "999988887777", "vpc-00000000000000002", "eu-west-1", provider.PeeringFailed, "peer_vpc_not_found"},
		{"vpc", "111122223333", "vpc-0000000000000000f", "eu-west-1", provider.PeeringFailed, "peer_vpc_not_found"},
		{"ok", "111122223333", "vpc-00000000000000002", "eu-west-1", provider.PeeringPendingAcceptance, ""},
	}
	for _, tt := range tests {
		req := provider.PeeringRequest{ID: "pcx-" + tt.name, CloudID: p.NewPeeringID(), VPCID: "vpc-aaaaaaaaaaaaaaaa",
			PeerAccountID: tt.account, PeerVPCID: tt.peerID, PeerRegion: tt.region, PeerCIDRs: []netip.Prefix{netip.MustParsePrefix("172.31.0.0/16")}}
		st, err := p.RequestPeering(ctx, req)
		if err != nil {
			t.Errorf("%s: RequestPeering: %v", tt.name, err)
			continue
		}
		if st.State != tt.wantState || st.Code != tt.wantCode || st.CloudID != req.CloudID {
			t.Errorf("%s: RequestPeering = %+v, want %s with code %q", tt.name, st, tt.wantState, tt.wantCode)
		}
		// Idempotent by cloud ID: asking again returns the same request.
		if again, err := p.RequestPeering(ctx, req); err != nil || again.State != st.State {
			t.Errorf("%s: repeated RequestPeering = %+v, %v", tt.name, again, err)
		}
	}
	if _, err := p.PeeringStatus(ctx, "pcx-00000000000000000"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("PeeringStatus of an unknown request: %v, want ErrNotFound", err)
	}
	if err := p.DeletePeering(ctx, "pcx-00000000000000000"); err != nil {
		t.Errorf("DeletePeering of an unknown request: %v", err)
	}
	if err := p.RemoveVPC(ctx, "vpc-aaaaaaaaaaaaaaaa"); err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveVPC(ctx, "vpc-aaaaaaaaaaaaaaaa"); err != nil {
		t.Errorf("RemoveVPC of a removed VPC: %v", err)
	}
}
