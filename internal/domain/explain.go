package domain

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Reasons an Explain verdict gives, stable codes a script may branch on.
// Each names the first thing on the packet's path that stops it.
const (
	// ReasonAllowed: the source can open a connection.
	ReasonAllowed = "allowed"
	// ReasonAllowlist: the packet reaches the node, whose allowlist (within
	// the VPC's and the active peerings' CIDRs, when attached) refuses it.
	ReasonAllowlist = "allowlist"
	// ReasonPublicAccessDisabled: the service is attached to a VPC and the
	// source is on the internet.
	ReasonPublicAccessDisabled = "public-access-disabled"
	// ReasonNotPeered: no peering of the service's VPC covers the source.
	ReasonNotPeered = "not-peered"
	// ReasonPeeringNotActive: the peering covering the source is not active
	// (pending acceptance, rejected, expired, failed, deleting).
	ReasonPeeringNotActive = "peering-not-active"
	// ReasonCustomerRouteMissing: the source's VPC has no active route to
	// the service's address through the peering.
	ReasonCustomerRouteMissing = "customer-route-missing"
	// ReasonSecurityGroup: the source's security group allows no TCP 5432
	// egress to the service's address.
	ReasonSecurityGroup = "security-group"
	// ReasonNoPath: there is nothing to connect to, or no way there (the
	// service has no address, the source's VPC has no NAT uplink, ...).
	ReasonNoPath = "no-path"
)

// ServicePort is the port clients connect to.
const ServicePort = 5432

// ExplainInput is what Explain decides from: the model's view of a service
// and of one source.
type ExplainInput struct {
	Service *Service
	// VPC is the service's VPC; nil for a public service.
	VPC *VPC
	// Peerings are the VPC's peering connections, in any state.
	Peerings []*Peering
	// NodeAddrs are the addresses of the service's nodes; the first valid
	// one (the primary's) is the one the source connects to.
	NodeAddrs []netip.Addr
	// Source is the source in question.
	Source Source
}

// Source is a client source as far as the model knows its network.
type Source struct {
	// Addr is the source's own address.
	Addr netip.Addr
	// Internet marks a public source: a host on the internet, or a
	// customer VPC's NAT address.
	Internet bool
	// CustomerVPC is the customer network the source is a host of; nil
	// when unknown. A source with neither Internet nor CustomerVPC is
	// taken as on the internet unless its address is private (and then
	// its route table and security group are not checked).
	CustomerVPC *CustomerVPC
}

// CustomerVPC is the tenant's side of a source in a customer VPC.
type CustomerVPC struct {
	// ID is the customer's VPC ID (vpc-…); when set, only a peering to
	// that VPC carries the source's packets.
	ID   string
	CIDR netip.Prefix
	// NAT is the VPC's NAT address: the source a public service sees.
	NAT netip.Addr
	// Routes are the VPC's routes besides the local one and the default
	// route to the NAT.
	Routes []CustomerRoute
	// Egress are the source host's security group egress rules. Egress to
	// private ranges outside the VPC needs a rule; to the internet it is
	// open.
	Egress []EgressRule
}

// CustomerRoute is a route in a customer VPC's route table.
type CustomerRoute struct {
	Destination netip.Prefix
	// PeeringCloudID is the target peering connection (pcx-…).
	PeeringCloudID string
	// Active is false for a blackhole route.
	Active bool
}

// EgressRule is a security group egress rule: Proto "tcp", "udp" or "all"
// (any port) to Port in CIDR.
type EgressRule struct {
	Proto string
	Port  int
	CIDR  netip.Prefix
}

// Verdict is Explain's answer.
type Verdict struct {
	Allowed bool `json:"allowed"`
	// Reason is one of the Reason* codes.
	Reason string `json:"reason"`
	// Detail says why in a sentence naming the objects.
	Detail string `json:"detail"`
	// Source is the address the service sees (a customer VPC's NAT address
	// for one of its hosts toward a public service); Target is the node
	// address connected to. Either is invalid when there is none.
	Source netip.Addr `json:"source,omitzero"`
	Target netip.Addr `json:"target,omitzero"`
	// Note says what the model did not know and so did not check.
	Note string `json:"note,omitempty"`
	// Health, when the service is not healthy, says what happened to it
	// and what Moat is doing about it (a lost node, a failover's step).
	Health string `json:"health,omitempty"`
}

// Explain decides, from the model alone, whether in.Source can open a TCP
// connection to the service's primary on port 5432, and names the first
// thing on the packet's path that stops it: for an attached service, the
// internet (public access disabled), the peering (none, or not active),
// the customer's route, the customer's security group, then the node's
// allowlist; for a public service, the allowlist, seen from the source's
// public address (a customer VPC's NAT address for its hosts).
func Explain(in ExplainInput) Verdict {
	src := in.Source
	v := Verdict{Source: src.Addr.Unmap()}
	svc := in.Service
	if svc == nil {
		return v.refuse(ReasonNoPath, "the service is unknown")
	}
	if h := svc.Health; h != nil && h.Status != HealthHealthy {
		var msgs []string
		for _, c := range h.Conditions {
			msgs = append(msgs, c.Message)
		}
		v.Health = "service " + svc.ID + " is " + h.Status + ": " + strings.Join(msgs, "; ")
	}
	for _, a := range in.NodeAddrs {
		if a.IsValid() {
			v.Target = a.Unmap()
			break
		}
	}
	if !v.Target.IsValid() {
		return v.refuse(ReasonNoPath, fmt.Sprintf("service %s has no node address (it is %s)", svc.ID, svc.State))
	}
	if svc.VPCID == "" {
		return explainPublic(in, v)
	}
	return explainAttached(in, v)
}

func explainPublic(in ExplainInput, v Verdict) Verdict {
	src, svc := in.Source, in.Service
	via := "from the internet"
	if cv := src.CustomerVPC; cv != nil && !src.Internet {
		if r, ok := cv.route(v.Target); ok {
			return v.refuse(ReasonNoPath, fmt.Sprintf("the route to %v in %s sends %v to peering %s, not to the internet", r.Destination, cv.name(), v.Target, r.PeeringCloudID))
		}
		if !cv.NAT.IsValid() {
			return v.refuse(ReasonNoPath, fmt.Sprintf("%s has no NAT uplink to the internet", cv.name()))
		}
		v.Source = cv.NAT.Unmap()
		via = fmt.Sprintf("through the NAT of %s", cv.name())
	} else if !src.Internet && v.Source.IsPrivate() {
		v.Note = fmt.Sprintf("%v is private and its network is unknown: taken as seen from the internet unchanged", v.Source)
	}
	if !CompileAccess(svc, nil, nil, nil).Admits(v.Source) {
		return v.refuse(ReasonAllowlist, fmt.Sprintf("%v is not in the allowlist of service %s (%s)", v.Source, svc.ID, allowSummary(svc)))
	}
	v.Allowed, v.Reason = true, ReasonAllowed
	v.Detail = fmt.Sprintf("%v reaches public service %s at %v:%d %s, and its allowlist admits %v", src.Addr.Unmap(), svc.ID, v.Target, ServicePort, via, v.Source)
	return v
}

func explainAttached(in ExplainInput, v Verdict) Verdict {
	src, svc, vpc := in.Source, in.Service, in.VPC
	if vpc == nil || vpc.ID != svc.VPCID {
		return v.refuse(ReasonNoPath, fmt.Sprintf("VPC %s of service %s is unknown", svc.VPCID, svc.ID))
	}
	cidr, err := netip.ParsePrefix(vpc.CIDR)
	if err != nil {
		return v.refuse(ReasonNoPath, fmt.Sprintf("VPC %s has no valid CIDR (%q)", vpc.ID, vpc.CIDR))
	}
	cv := src.CustomerVPC
	if src.Internet || (cv == nil && !v.Source.IsPrivate()) {
		return v.refuse(ReasonPublicAccessDisabled, fmt.Sprintf("service %s is attached to VPC %s (%v): it has no public access, so %v on the internet cannot reach it", svc.ID, vpc.ID, cidr, v.Source))
	}
	via := "inside VPC " + vpc.ID
	if !(cv == nil && cidr.Contains(v.Source)) {
		p, why := coveringPeering(in.Peerings, vpc, cv, v.Source)
		if p == nil {
			return v.refuse(ReasonNotPeered, why)
		}
		pcx := p.CloudPeeringID
		if pcx == "" {
			pcx = p.ID
		}
		if p.State != StateActive {
			return v.refuse(ReasonPeeringNotActive, fmt.Sprintf("peering %s (%s) of VPC %s is %s", pcx, p.ID, vpc.ID, p.State))
		}
		via = "over peering " + pcx
		if cv == nil {
			v.Note = fmt.Sprintf("the network of %v is unknown: its route table and security group were not checked", v.Source)
		} else {
			r, ok := cv.route(v.Target)
			switch {
			case !ok:
				return v.refuse(ReasonCustomerRouteMissing, fmt.Sprintf("%s has no route to %v (VPC %s) via %s", cv.name(), cidr, vpc.ID, pcx))
			case r.PeeringCloudID != pcx:
				return v.refuse(ReasonCustomerRouteMissing, fmt.Sprintf("the route to %v in %s goes to %s, not to %s", r.Destination, cv.name(), r.PeeringCloudID, pcx))
			case !r.Active:
				return v.refuse(ReasonCustomerRouteMissing, fmt.Sprintf("the route to %v via %s in %s is a blackhole", r.Destination, pcx, cv.name()))
			}
			if !slices.ContainsFunc(cv.Egress, func(e EgressRule) bool { return e.allows("tcp", ServicePort, v.Target) }) {
				return v.refuse(ReasonSecurityGroup, fmt.Sprintf("no egress rule of the source's security group allows tcp/%d to %v (add one for %v)", ServicePort, v.Target, cidr))
			}
		}
	}
	if !CompileAccess(svc, vpc, in.Peerings, nil).Admits(v.Source) {
		return v.refuse(ReasonAllowlist, fmt.Sprintf("%v is not admitted by service %s: its allowlist (%s) within VPC %s and its active peerings does not contain it", v.Source, svc.ID, allowSummary(svc), vpc.ID))
	}
	v.Allowed, v.Reason = true, ReasonAllowed
	v.Detail = fmt.Sprintf("%v reaches service %s at %v:%d %s, and its allowlist admits it", v.Source, svc.ID, v.Target, ServicePort, via)
	return v
}

// coveringPeering returns the peering of vpc whose peer CIDRs hold addr,
// the active one if there is one; deleted peerings are gone. When cv names
// the source's VPC, the peering must be to it. Without one, why says so.
func coveringPeering(peerings []*Peering, vpc *VPC, cv *CustomerVPC, addr netip.Addr) (p *Peering, why string) {
	var other *Peering
	for _, pc := range peerings {
		if pc == nil || pc.VPCID != vpc.ID || pc.State == StateDeleted || !coversAddr(pc.PeerCIDRs, addr) {
			continue
		}
		if cv != nil && cv.ID != "" && pc.PeerVPCID != cv.ID {
			other = pc
			continue
		}
		if p == nil || (p.State != StateActive && pc.State == StateActive) {
			p = pc
		}
	}
	switch {
	case p != nil:
		return p, ""
	case other != nil:
		return nil, fmt.Sprintf("peering %s of VPC %s covers %v but is to %s, not to the source's %s", other.CloudPeeringID, vpc.ID, addr, other.PeerVPCID, cv.ID)
	case cv != nil:
		return nil, fmt.Sprintf("%s (%v) is not peered with VPC %s (%s)", cv.name(), cv.CIDR, vpc.ID, vpc.CIDR)
	}
	return nil, fmt.Sprintf("no peering of VPC %s (%s) covers %v", vpc.ID, vpc.CIDR, addr)
}

func coversAddr(cidrs []string, addr netip.Addr) bool {
	for _, s := range cidrs {
		if p, err := netip.ParsePrefix(s); err == nil && p.Contains(addr) {
			return true
		}
	}
	return false
}

// route is the most specific route of cv that holds addr.
func (cv *CustomerVPC) route(addr netip.Addr) (CustomerRoute, bool) {
	best, ok := CustomerRoute{}, false
	for _, r := range cv.Routes {
		if r.Destination.Contains(addr) && (!ok || r.Destination.Bits() > best.Destination.Bits()) {
			best, ok = r, true
		}
	}
	return best, ok
}

func (cv *CustomerVPC) name() string {
	if cv.ID != "" {
		return "customer VPC " + cv.ID
	}
	return "the source's VPC"
}

// allows reports whether the rule lets proto traffic to port at addr out.
func (e EgressRule) allows(proto string, port int, addr netip.Addr) bool {
	if !e.CIDR.Contains(addr) {
		return false
	}
	return e.Proto == "all" || (e.Proto == proto && e.Port == port)
}

func (v Verdict) refuse(reason, detail string) Verdict {
	v.Allowed, v.Reason, v.Detail = false, reason, detail
	return v
}

// allowSummary lists a few of svc's allowlist entries.
func allowSummary(svc *Service) string {
	if len(svc.AllowedIPs) == 0 {
		return "empty"
	}
	var s []string
	for i, e := range svc.AllowedIPs {
		if i == 3 {
			s = append(s, fmt.Sprintf("and %d more", len(svc.AllowedIPs)-3))
			break
		}
		s = append(s, e.CIDR)
	}
	return strings.Join(s, ", ")
}
