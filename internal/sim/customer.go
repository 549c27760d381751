package sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/localcloud"
)

// ErrInUse: the object still has dependents (a VPC with hosts or live
// peerings).
var ErrInUse = errors.New("in use")

// Account is a simulated customer (AWS) account.
type Account struct {
	// ID is 12 decimal digits.
	ID      string
	Created time.Time
}

// VPC is a customer VPC.
type VPC struct {
	// ID is "vpc-" and 17 lower-case hex digits, as AWS makes them.
	ID      string
	Account string
	Region  string
	CIDR    netip.Prefix
	// RouterNS is the VPC router's namespace.
	RouterNS string
	// NATAddr is the NAT uplink's public address (in
	// localcloud.SimPool): what a public service sees when a host of the
	// VPC connects to it. Invalid when the router is gone.
	NATAddr netip.Addr
	Created time.Time
}

// CreateAccount creates a customer account with a random 12-digit ID.
func (s *Sim) CreateAccount(ctx context.Context) (Account, error) {
	var out Account
	err := s.update(ctx, func(st *state) error {
		for {
			id := randDigits(12)
			if _, ok := st.Accounts[id]; ok {
				continue
			}
			out = Account{ID: id, Created: s.stamp(ctx)}
			st.Accounts[id] = accountState{Created: out.Created}
			return nil
		}
	})
	if err != nil {
		return Account{}, fmt.Errorf("create account: %w", err)
	}
	return out, nil
}

// ListAccounts lists the accounts, sorted by ID.
func (s *Sim) ListAccounts(ctx context.Context) ([]Account, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	var out []Account
	for id, a := range st.Accounts {
		out = append(out, Account{ID: id, Created: a.Created})
	}
	slices.SortFunc(out, func(a, b Account) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// CreateVPC creates a VPC in account, in region (any AWS region code),
// holding cidr: an IPv4 RFC 1918 range from /16 to /28 written canonically
// ("10.0.0.7/17" is refused with a hint naming 10.0.0.0/17, as AWS does).
// It builds the VPC's router namespace with a NAT uplink to the internet
// (created if needed), and registers the VPC's owner with the cloud so
// peering requests to it can be checked. VPCs may overlap, as in AWS.
func (s *Sim) CreateVPC(ctx context.Context, account, region, cidr string) (VPC, error) {
	if !domain.IsAWSRegion(region) {
		return VPC{}, fmt.Errorf("create vpc: %w", domain.Invalidf(domain.CodeInvalidRegion, "region",
			"use an AWS region code such as us-east-1 or eu-west-1", "%q is not an AWS region code", region))
	}
	p, err := domain.ParsePeerCIDR("cidr", cidr)
	if err != nil {
		return VPC{}, fmt.Errorf("create vpc: %w", err)
	}
	if !domain.IsPrivate4(p) {
		return VPC{}, fmt.Errorf("create vpc: %w", domain.Invalidf(domain.CodeCIDRNotPrivate, "cidr",
			"use RFC 1918 space: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16", "%s is not a private (RFC 1918) range", p))
	}
	var out VPC
	err = s.update(ctx, func(st *state) error {
		if _, ok := st.Accounts[account]; !ok {
			return fmt.Errorf("account %s: %w", account, ErrNotFound)
		}
		id := "vpc-" + randHex(17)
		vs := vpcState{Account: account, Region: region, CIDR: p, Created: s.stamp(ctx)}
		if err := s.buildVPC(ctx, id, vs); err != nil {
			if rerr := s.cloud.RemoveVPC(context.WithoutCancel(ctx), id); rerr != nil {
				err = errors.Join(err, rerr)
			}
			_ = s.cloud.RemoveVPCOwner(context.WithoutCancel(ctx), id)
			return err
		}
		st.VPCs[id] = vs
		out = s.vpc(ctx, id, vs)
		return nil
	})
	if err != nil {
		return VPC{}, fmt.Errorf("create vpc: %w", err)
	}
	return out, nil
}

// buildVPC makes VPC id's router with its NAT uplink and registers its
// owner. It is idempotent.
func (s *Sim) buildVPC(ctx context.Context, id string, vs vpcState) error {
	if err := s.cloud.EnsureInternet(ctx); err != nil {
		return err
	}
	v, err := s.cloud.EnsureVPC(ctx, id, vs.CIDR)
	if err != nil {
		return err
	}
	up, err := s.cloud.AttachInterface(ctx, v.NS, localcloud.Internet(localcloud.SimPool))
	if err != nil {
		return fmt.Errorf("nat uplink: %w", err)
	}
	if err := s.nft(ctx, v.NS, renderNAT(up.Name)); err != nil {
		return fmt.Errorf("nat uplink: %w", err)
	}
	return s.cloud.SetVPCOwner(ctx, localcloud.VPCOwner{VPC: id, Account: vs.Account, Region: vs.Region})
}

func (s *Sim) vpc(ctx context.Context, id string, vs vpcState) VPC {
	v := VPC{ID: id, Account: vs.Account, Region: vs.Region, CIDR: vs.CIDR, RouterNS: s.cloud.RouterNS(id), Created: vs.Created}
	if ifs, err := s.cloud.Interfaces(ctx, v.RouterNS); err == nil {
		for _, i := range ifs {
			if i.Net.VPC == "" {
				v.NATAddr = i.Addr.Addr()
			}
		}
	}
	return v
}

// ListVPCs lists the customer VPCs of every account, sorted by ID.
func (s *Sim) ListVPCs(ctx context.Context) ([]VPC, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	var out []VPC
	for id, vs := range st.VPCs {
		out = append(out, s.vpc(ctx, id, vs))
	}
	slices.SortFunc(out, func(a, b VPC) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// VPC returns customer VPC id.
func (s *Sim) VPC(ctx context.Context, id string) (VPC, error) {
	st, err := s.load()
	if err != nil {
		return VPC{}, err
	}
	vs, ok := st.VPCs[id]
	if !ok {
		return VPC{}, fmt.Errorf("vpc %s: %w", id, ErrNotFound)
	}
	return s.vpc(ctx, id, vs), nil
}

// DeleteVPC deletes customer VPC id, its router and NAT uplink. It is
// refused with ErrInUse, naming them, while the VPC has hosts or
// pending or active peerings.
func (s *Sim) DeleteVPC(ctx context.Context, id string) error {
	err := s.update(ctx, func(st *state) error {
		if _, ok := st.VPCs[id]; !ok {
			return fmt.Errorf("vpc %s: %w", id, ErrNotFound)
		}
		var users []string
		for name, hs := range st.Hosts {
			if hs.Network == id {
				users = append(users, "host "+name)
			}
		}
		ps, err := s.cloud.Peerings(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.AccepterVPC == id && !p.State.Terminal() {
				users = append(users, fmt.Sprintf("peering %s (%s)", p.ID, p.State))
			}
		}
		if len(users) > 0 {
			slices.Sort(users)
			return fmt.Errorf("vpc %s has %s: %w", id, strings.Join(users, ", "), ErrInUse)
		}
		if err := s.cloud.RemoveVPCOwner(ctx, id); err != nil {
			return err
		}
		if err := s.cloud.RemoveVPC(ctx, id); err != nil {
			return err
		}
		delete(st.VPCs, id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete vpc %s: %w", id, err)
	}
	return nil
}

// CreateHost creates host name inside customer VPC vpcID: a namespace
// with an address in the VPC's CIDR, its default route via the VPC router
// (so the internet is reached through the NAT), and the egress security
// group applied (see AddEgress). Creating a host that exists in that VPC
// returns it unchanged; one of that name elsewhere is an ErrExists error.
func (s *Sim) CreateHost(ctx context.Context, name, vpcID string) (Host, error) {
	if err := checkHostName(name); err != nil {
		return Host{}, err
	}
	var out Host
	err := s.update(ctx, func(st *state) error {
		vs, ok := st.VPCs[vpcID]
		if !ok {
			return fmt.Errorf("vpc %s: %w", vpcID, ErrNotFound)
		}
		hs, ok := st.Hosts[name]
		if ok && hs.Network != vpcID {
			return fmt.Errorf("host %s is in %s: %w", name, hs.Network, ErrExists)
		}
		if !ok {
			hs = hostState{Network: vpcID, Created: s.stamp(ctx)}
		}
		lh, err := s.cloud.AddHost(ctx, hostPrefix+name, localcloud.InVPC(vpcID))
		if errors.Is(err, localcloud.ErrExists) {
			return fmt.Errorf("host %s: %w", name, ErrExists)
		}
		if err != nil {
			return err
		}
		if err := s.nft(ctx, lh.NS, renderSG(vs.CIDR, hs.Egress)); err != nil {
			return fmt.Errorf("security group: %w", err)
		}
		if err := s.cloud.SetResolver(lh.NS, PlatformDNS); err != nil {
			return err
		}
		st.Hosts[name] = hs
		out = s.host(name, hs, lh)
		return nil
	})
	if err != nil {
		return Host{}, fmt.Errorf("create host %s: %w", name, err)
	}
	return out, nil
}

// Now returns the cloud's clock (see localcloud.Cloud.Now).
func (s *Sim) Now(ctx context.Context) (time.Time, error) { return s.cloud.Now(ctx) }

// Advance moves the cloud's clock forward by d, for the 7-day expiry of
// peering requests, and returns the new time. The clock is the cloud's,
// kept in its registry: every process on this cloud, the provider's
// included, sees the move at once, and overdue requests are expired
// right away.
func (s *Sim) Advance(ctx context.Context, d time.Duration) (time.Time, error) {
	return s.cloud.AdvanceClock(ctx, d)
}

// nft applies an nftables script inside namespace ns, atomically.
func (s *Sim) nft(ctx context.Context, ns, script string) error {
	var stderr bytes.Buffer
	code, err := s.cloud.Exec(ctx, ns, []string{"nft", "-f", "-"}, strings.NewReader(script), nil, &stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("nft in %s: exit %d: %s", ns, code, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// renderNAT is the router's NAT table: what leaves through the uplink
// takes the uplink's address.
func renderNAT(uplink string) string {
	return fmt.Sprintf(`add table ip moat_sim_nat
delete table ip moat_sim_nat
table ip moat_sim_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %q masquerade
	}
}
`, uplink)
}

func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

func randDigits(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = '0' + b[i]%10 // a slight bias is fine for a simulator
	}
	return string(b)
}

// PlatformDNS is the resolver every sim host uses: the platform's DNS
// server on the simulated internet (moat up serves it at the internet
// bridge's address; customer hosts reach it through their NAT).
var PlatformDNS = localcloud.InternetGateway
