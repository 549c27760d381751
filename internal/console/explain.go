package console

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

type explainData struct {
	Service apitype.Service
	From    string
	Verdict *domain.Verdict
	Errs    *errs
}

// explain is "Why can't I connect?": the domain's Explain over the API's
// view of the service (its allowlist, VPC and peerings), for a source
// address. The customer cloud's routes and security groups are not known
// to the API, so the verdict's note says what was not checked.
func (c *Console) explain(q *req) error {
	p, id := q.project(), q.r.PathValue("id")
	s, err := q.api.GetService(q.ctx, p, id)
	if err != nil {
		return err
	}
	d := explainData{Service: s, From: strings.TrimSpace(q.r.URL.Query().Get("from")), Errs: &errs{}}
	status := http.StatusOK
	if d.From != "" {
		addr, err := netip.ParseAddr(d.From)
		if err != nil {
			d.Errs.add(&problem{Field: "from", Code: "invalid_address", Msg: fmt.Sprintf("%q is not an IP address", d.From), Hint: "give the address the client connects from, e.g. 198.51.100.7"})
			status = http.StatusUnprocessableEntity
		} else {
			in, err := explainInput(q, s)
			if err != nil {
				return err
			}
			in.Source = domain.Source{Addr: addr}
			v := domain.Explain(in)
			d.Verdict = &v
		}
	}
	c.renderOn(q, status, "explain", "services", "Why can't I connect to "+s.Name+"?", d)
	return nil
}

// explainInput is the API's view of service s as domain.Explain wants it.
func explainInput(q *req, s apitype.Service) (domain.ExplainInput, error) {
	svc := &domain.Service{Meta: domain.Meta{ID: s.ID, Name: s.Name, State: s.State}, VPCID: s.VPCID}
	for _, e := range s.AllowedIPs {
		svc.AllowedIPs = append(svc.AllowedIPs, domain.AllowEntry{CIDR: e.CIDR, Description: e.Description})
	}
	in := domain.ExplainInput{Service: svc}
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
	v, err := q.api.GetVPC(q.ctx, q.project(), s.VPCID)
	if err != nil {
		return in, err
	}
	in.VPC = &domain.VPC{Meta: domain.Meta{ID: v.ID, Name: v.Name, State: v.State}, Region: v.Region, CIDR: v.CIDR, CloudVPCID: v.CloudVPCID}
	pcs, err := q.api.ListPeerings(q.ctx, q.project(), v.ID)
	if err != nil {
		return in, err
	}
	for _, pc := range pcs {
		in.Peerings = append(in.Peerings, &domain.Peering{Meta: domain.Meta{ID: pc.ID, State: pc.State}, VPCID: pc.VPCID,
			PeerAccountID: pc.PeerAccountID, PeerVPCID: pc.PeerVPCID, PeerRegion: pc.PeerRegion, PeerCIDRs: pc.PeerCIDRs, CloudPeeringID: pc.CloudPeeringID})
	}
	return in, nil
}
