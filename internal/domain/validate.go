package domain

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

var (
	accountRE = regexp.MustCompile(`^[0-9]{12}$`)
	peerVPCRE = regexp.MustCompile(`^vpc-([0-9a-f]{8}|[0-9a-f]{17})$`)
)

// ValidateAccountID checks an AWS account ID: exactly 12 digits.
func ValidateAccountID(s string) error {
	const field = "peer_account_id"
	if s == "" {
		return Invalidf(CodeRequired, field, "give the 12-digit AWS account ID of the peer VPC's owner", "an account ID is required")
	}
	if !accountRE.MatchString(s) {
		return Invalidf(CodeInvalidAccountID, field, "an AWS account ID is exactly 12 digits, e.g. 123456789012", "%q is not an AWS account ID", s)
	}
	return nil
}

// ValidatePeerVPCID checks an AWS VPC ID: vpc- and 8 or 17 lower-case hex digits.
func ValidatePeerVPCID(s string) error {
	const field = "peer_vpc_id"
	if s == "" {
		return Invalidf(CodeRequired, field, "give the ID of the VPC to peer with, e.g. vpc-0a1b2c3d4e5f67890", "a peer VPC ID is required")
	}
	if !peerVPCRE.MatchString(s) {
		return Invalidf(CodeInvalidPeerVPCID, field, "an AWS VPC ID is vpc- followed by 8 or 17 lower-case hex digits, e.g. vpc-0a1b2c3d4e5f67890", "%q is not an AWS VPC ID", s)
	}
	return nil
}

// NewVPC validates a VPC creation against the project's live VPCs and quota.
// others are the project's VPCs (any state; deleted ones are ignored).
func NewVPC(catalog Catalog, p *Project, name, region, cidr string, others []*VPC) (*VPC, error) {
	if err := ValidateName("name", name); err != nil {
		return nil, err
	}
	if _, err := catalog.Lookup("region", region); err != nil {
		return nil, err
	}
	prefix, err := ParseVPCCIDR(cidr)
	if err != nil {
		return nil, err
	}
	live := 0
	for _, o := range others {
		if Gone(o.State) {
			continue
		}
		live++
		if o.Name == name {
			return nil, Conflictf(CodeDuplicateEntry, "name", "choose another name", "the project already has a VPC named %q (%s)", name, o.ID)
		}
		if op, err := netip.ParsePrefix(o.CIDR); err == nil && op.Overlaps(prefix) {
			return nil, Conflictf(CodeCIDROverlap, "cidr", "choose a range that overlaps none of the project's VPCs",
				"%s overlaps %s of VPC %s (%s)", prefix, op, o.Name, o.ID)
		}
	}
	if live >= p.VPCQuota {
		return nil, Conflictf(CodeQuotaExceeded, "", "delete a VPC, or ask an operator for more: moat support request --vpcs N (or the console's Support page)",
			"the project already has %d of its %d VPCs", live, p.VPCQuota)
	}
	return &VPC{Meta: Meta{Name: name, ProjectID: p.ID, State: VPCMachine.Initial}, Region: region, CIDR: prefix.String()}, nil
}

// PeeringRequest is the input of a peering creation.
type PeeringRequest struct {
	PeerAccountID string
	PeerVPCID     string
	PeerRegion    string
	PeerCIDRs     []string
}

// NewPeering validates a peering creation in vpc against the VPC's other
// peerings (any state). max caps live peerings per VPC; 0 means no cap.
func NewPeering(vpc *VPC, req PeeringRequest, others []*Peering, max int) (*Peering, error) {
	if vpc.State != StateActive && vpc.State != StateCreating {
		return nil, Conflictf(CodeInvalidState, "vpc_id", "create peerings in an active VPC", "VPC %s is %s", vpc.ID, vpc.State)
	}
	if err := ValidateAccountID(req.PeerAccountID); err != nil {
		return nil, err
	}
	if err := ValidatePeerVPCID(req.PeerVPCID); err != nil {
		return nil, err
	}
	if err := ValidatePeerRegion(req.PeerRegion); err != nil {
		return nil, err
	}
	if len(req.PeerCIDRs) == 0 {
		return nil, Invalidf(CodeRequired, "peer_cidrs", "give the peer VPC's CIDR, e.g. 172.31.0.0/16", "at least one peer CIDR is required")
	}
	vpcPrefix := netip.MustParsePrefix(vpc.CIDR)
	var mine []netip.Prefix
	for i, s := range req.PeerCIDRs {
		field := fmt.Sprintf("peer_cidrs[%d]", i)
		p, err := ParsePeerCIDR(field, s)
		if err != nil {
			return nil, err
		}
		if p.Overlaps(vpcPrefix) {
			return nil, Conflictf(CodeCIDROverlap, field, "peer ranges must not overlap the VPC's "+vpc.CIDR+"; renumber one side", "%s overlaps the VPC's range %s", p, vpcPrefix)
		}
		for j, q := range mine {
			if p.Overlaps(q) {
				return nil, Invalidf(CodeCIDROverlap, field, fmt.Sprintf("merge it with peer_cidrs[%d] or drop one", j), "%s overlaps %s in the same request", p, q)
			}
		}
		mine = append(mine, p)
	}
	live := 0
	for _, o := range others {
		if !LivePeering(o.State) {
			continue
		}
		live++
		if o.PeerAccountID == req.PeerAccountID && o.PeerVPCID == req.PeerVPCID {
			return nil, Conflictf(CodeDuplicatePeering, "peer_vpc_id", "use the existing peering, or delete it first",
				"VPC %s already has peering %s with %s in account %s", vpc.ID, o.ID, o.PeerVPCID, o.PeerAccountID)
		}
		for _, s := range o.PeerCIDRs {
			q, err := netip.ParsePrefix(s)
			if err != nil {
				continue
			}
			for i, p := range mine {
				if p.Overlaps(q) {
					return nil, Conflictf(CodeCIDROverlap, fmt.Sprintf("peer_cidrs[%d]", i), "each peering of a VPC needs its own ranges; delete the other peering or use another range",
						"%s overlaps %s of peering %s", p, q, o.ID)
				}
			}
		}
	}
	if max > 0 && live >= max {
		return nil, Conflictf(CodeLimitExceeded, "", fmt.Sprintf("a VPC may hold %d live peerings on this platform; delete one first", max), "VPC %s already has %d peerings", vpc.ID, live)
	}
	cidrs := make([]string, len(mine))
	for i, p := range mine {
		cidrs[i] = p.String()
	}
	return &Peering{
		Meta:          Meta{ProjectID: vpc.ProjectID, State: PeeringMachine.Initial},
		VPCID:         vpc.ID,
		PeerAccountID: req.PeerAccountID,
		PeerVPCID:     req.PeerVPCID,
		PeerRegion:    req.PeerRegion,
		PeerCIDRs:     cidrs,
	}, nil
}

// ValidateNodeCount checks a service's node count: 1 to 3.
func ValidateNodeCount(n int) error {
	if n < 1 || n > 3 {
		return Invalidf(CodeInvalidNodes, "nodes", "a service has 1, 2 or 3 nodes", "%d nodes is out of range", n)
	}
	return nil
}

// NewService validates a service creation. others are the project's services.
func NewService(catalog Catalog, projectID, name, region string, nodes int, allow []AllowEntry, opt AllowlistOptions, others []*Service) (*Service, error) {
	if err := ValidateName("name", name); err != nil {
		return nil, err
	}
	if _, err := catalog.Lookup("region", region); err != nil {
		return nil, err
	}
	if err := ValidateNodeCount(nodes); err != nil {
		return nil, err
	}
	if allow == nil {
		allow = DefaultAllowlist()
	}
	allow, err := NormalizeAllowlist(allow, opt)
	if err != nil {
		return nil, err
	}
	for _, o := range others {
		if !Gone(o.State) && o.Name == name {
			return nil, Conflictf(CodeDuplicateEntry, "name", "choose another name", "the project already has a service named %q (%s)", name, o.ID)
		}
	}
	return &Service{
		Meta:              Meta{ProjectID: projectID, Name: name, State: ServiceMachine.Initial},
		Region:            region,
		NodeCount:         nodes,
		AllowedIPs:        allow,
		AllowlistRevision: 1,
	}, nil
}

// SpreadAZs places n nodes evenly over the region's AZs, in order.
func SpreadAZs(r Region, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = r.AZs[i%len(r.AZs)]
	}
	return out
}

// CheckAttach validates attaching svc to vpc.
func CheckAttach(svc *Service, vpc *VPC) error {
	if svc.OperationID != "" {
		return Conflictf(CodeOperationInProgress, "", "wait for operation "+svc.OperationID+" to finish", "service %s has an operation in progress", svc.ID)
	}
	if svc.State != StateRunning {
		return Conflictf(CodeInvalidState, "", "wait until the service is running", "service %s is %s", svc.ID, svc.State)
	}
	if vpc.State != StateActive {
		return Conflictf(CodeInvalidState, "vpc_id", "attach to an active VPC", "VPC %s is %s", vpc.ID, vpc.State)
	}
	if vpc.Region != svc.Region {
		return Conflictf(CodeRegionMismatch, "vpc_id", "attach to a VPC in "+svc.Region, "VPC %s is in %s but the service is in %s", vpc.ID, vpc.Region, svc.Region)
	}
	if svc.VPCID == vpc.ID {
		return Conflictf(CodeAlreadyAttached, "vpc_id", "nothing to do", "service %s is already attached to %s", svc.ID, vpc.ID)
	}
	return nil
}

// CheckDetach validates detaching svc from its VPC.
func CheckDetach(svc *Service) error {
	if svc.VPCID == "" {
		return Conflictf(CodeNotAttached, "", "the service is already public", "service %s is not attached to a VPC", svc.ID)
	}
	if svc.OperationID != "" {
		return Conflictf(CodeOperationInProgress, "", "wait for operation "+svc.OperationID+" to finish", "service %s has an operation in progress", svc.ID)
	}
	if svc.State != StateRunning {
		return Conflictf(CodeInvalidState, "", "wait until the service is running", "service %s is %s", svc.ID, svc.State)
	}
	return nil
}

// CheckVPCDelete refuses deleting a VPC with attached services or live
// peerings, naming them.
func CheckVPCDelete(vpc *VPC, services []*Service, peerings []*Peering) error {
	var users []string
	for _, s := range services {
		if !Gone(s.State) && s.VPCID == vpc.ID {
			users = append(users, "service "+s.ID)
		}
	}
	for _, p := range peerings {
		if LivePeering(p.State) && p.VPCID == vpc.ID {
			users = append(users, "peering "+p.ID)
		}
	}
	if len(users) > 0 {
		return Conflictf(CodeInUse, "", "detach the services and delete the peerings first",
			"VPC %s is in use by %s", vpc.ID, strings.Join(users, ", "))
	}
	return nil
}

// MaxQuota bounds the service and node quotas an operator may set, to
// catch typos.
const MaxQuota = 10000

// ValidateQuotaOf checks an operator's service or node quota (field
// "services" or "nodes").
func ValidateQuotaOf(field string, n int) error {
	if n < 0 || n > MaxQuota {
		return Invalidf(CodeInvalidQuota, field, fmt.Sprintf("use a number from 0 to %d", MaxQuota), "%d is not a valid quota", n)
	}
	return nil
}

// ValidateQuota checks an operator's VPC quota value.
func ValidateQuota(n int) error {
	if n < 0 || n > MaxVPCQuota {
		return Invalidf(CodeInvalidQuota, "vpcs", fmt.Sprintf("use a number from 0 to %d", MaxVPCQuota), "%d is not a valid quota", n)
	}
	return nil
}
