package client

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// ExplainInput reads what domain.Explain decides from about service svc
// of project p: the service with its allowlist and node addresses (the
// primary's first), its VPC and the VPC's peerings. The source is the
// caller's to fill in.
func (c *Client) ExplainInput(ctx context.Context, p, svc string) (domain.ExplainInput, error) {
	s, err := c.GetService(ctx, p, svc)
	if err != nil {
		return domain.ExplainInput{}, err
	}
	in := domain.ExplainInput{Service: &domain.Service{Meta: domain.Meta{ID: s.ID, Name: s.Name, State: s.State}, VPCID: s.VPCID}}
	if h := s.Health; h != nil {
		in.Service.Health = &domain.ServiceHealth{Status: h.Status}
		for _, c := range h.Conditions {
			in.Service.Health.Conditions = append(in.Service.Health.Conditions, domain.Info{Code: c.Code, Message: c.Message})
		}
	}
	for _, e := range s.AllowedIPs {
		in.Service.AllowedIPs = append(in.Service.AllowedIPs, domain.AllowEntry{CIDR: e.CIDR, Description: e.Description})
	}
	var primary netip.Addr
	if s.Connection != nil {
		primary, _ = netip.ParseAddr(s.Connection.Address)
	}
	in.NodeAddrs = append(in.NodeAddrs, primary)
	for _, n := range s.NodeList {
		if a, err := netip.ParseAddr(n.Address); err == nil && a != primary {
			in.NodeAddrs = append(in.NodeAddrs, a)
		}
	}
	if s.VPCID == "" {
		return in, nil
	}
	v, err := c.GetVPC(ctx, p, s.VPCID)
	if err != nil {
		return domain.ExplainInput{}, fmt.Errorf("vpc %s of service %s: %w", s.VPCID, s.ID, err)
	}
	in.VPC = &domain.VPC{Meta: domain.Meta{ID: v.ID, Name: v.Name, State: v.State}, Region: v.Region, CIDR: v.CIDR, CloudVPCID: v.CloudVPCID}
	ps, err := c.ListPeerings(ctx, p, v.ID)
	if err != nil {
		return domain.ExplainInput{}, fmt.Errorf("peerings of %s: %w", v.ID, err)
	}
	for _, pc := range ps {
		in.Peerings = append(in.Peerings, domainPeering(pc))
	}
	return in, nil
}

func domainPeering(pc apitype.Peering) *domain.Peering {
	return &domain.Peering{Meta: domain.Meta{ID: pc.ID, State: pc.State}, VPCID: pc.VPCID, PeerAccountID: pc.PeerAccountID,
		PeerVPCID: pc.PeerVPCID, PeerRegion: pc.PeerRegion, PeerCIDRs: pc.PeerCIDRs, CloudPeeringID: pc.CloudPeeringID}
}
