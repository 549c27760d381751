package sim

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/moatdb/moat/internal/domain"
)

// EgressRule is one outbound rule of a customer host's security group:
// connections to CIDR with Protocol ("tcp", "udp", or "all" with Port 0)
// to Port are allowed.
type EgressRule struct {
	Protocol string       `json:"protocol"`
	Port     int          `json:"port,omitempty"`
	CIDR     netip.Prefix `json:"cidr"`
}

func (r EgressRule) String() string {
	if r.Protocol == "all" {
		return "all to " + r.CIDR.String()
	}
	return fmt.Sprintf("%s/%d to %v", r.Protocol, r.Port, r.CIDR)
}

// privateRanges is where, in this simulator, egress needs a rule: the
// private ranges peered networks live in. Egress to the host's own VPC
// and to the internet (through the NAT) is open, as the default security
// group's egress rule would allow.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
}

func parseEgress(proto string, port int, cidr string) (EgressRule, error) {
	p, err := domain.ParsePrefix("cidr", cidr, false)
	if err != nil {
		return EgressRule{}, err
	}
	if !p.Addr().Is4() {
		return EgressRule{}, domain.Invalidf(domain.CodeCIDRFamily, "cidr", "use an IPv4 range such as 10.0.0.0/17", "%s is not IPv4", p)
	}
	r := EgressRule{Protocol: proto, Port: port, CIDR: p}
	switch proto {
	case "tcp", "udp":
		if port < 1 || port > 65535 {
			return EgressRule{}, fmt.Errorf("port %d: want 1 to 65535", port)
		}
	case "all":
		if port != 0 {
			return EgressRule{}, fmt.Errorf("protocol all takes no port, got %d", port)
		}
	default:
		return EgressRule{}, fmt.Errorf("protocol %q: want tcp, udp or all", proto)
	}
	return r, nil
}

// AddEgress allows host (a customer VPC host) to open connections with
// protocol ("tcp", "udp", or "all" with port 0) to port in cidr (canonical
// IPv4). Without a rule, a customer host reaches its own VPC and the
// internet only: nothing in the other private ranges (10.0.0.0/8,
// 100.64.0.0/10, 172.16.0.0/12, 192.168.0.0/16), where peered networks
// are. The rules are enforced by nftables in the host's namespace (output
// chain). A duplicate rule is an ErrExists error.
func (s *Sim) AddEgress(ctx context.Context, host, proto string, port int, cidr string) (EgressRule, error) {
	r, err := parseEgress(proto, port, cidr)
	if err != nil {
		return EgressRule{}, fmt.Errorf("add egress to host %s: %w", host, err)
	}
	err = s.changeEgress(ctx, host, func(rules []EgressRule) ([]EgressRule, error) {
		if slices.Contains(rules, r) {
			return nil, fmt.Errorf("rule %v: %w", r, ErrExists)
		}
		return append(rules, r), nil
	})
	if err != nil {
		return EgressRule{}, fmt.Errorf("add egress to host %s: %w", host, err)
	}
	return r, nil
}

// DeleteEgress removes host's egress rule (protocol, port, cidr); new
// connections it allowed are dropped from then on.
func (s *Sim) DeleteEgress(ctx context.Context, host, proto string, port int, cidr string) error {
	r, err := parseEgress(proto, port, cidr)
	if err != nil {
		return fmt.Errorf("delete egress of host %s: %w", host, err)
	}
	err = s.changeEgress(ctx, host, func(rules []EgressRule) ([]EgressRule, error) {
		i := slices.Index(rules, r)
		if i < 0 {
			return nil, fmt.Errorf("rule %v: %w", r, ErrNotFound)
		}
		return slices.Delete(rules, i, i+1), nil
	})
	if err != nil {
		return fmt.Errorf("delete egress of host %s: %w", host, err)
	}
	return nil
}

// ListEgress lists host's egress rules in the order they were added.
func (s *Sim) ListEgress(ctx context.Context, host string) ([]EgressRule, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	hs, ok := st.Hosts[host]
	if !ok {
		return nil, fmt.Errorf("egress of host %s: %w", host, ErrNotFound)
	}
	return slices.Clone(hs.Egress), nil
}

// changeEgress applies f to host's rules, enforces the result, and saves
// it.
func (s *Sim) changeEgress(ctx context.Context, host string, f func([]EgressRule) ([]EgressRule, error)) error {
	return s.update(ctx, func(st *state) error {
		hs, ok := st.Hosts[host]
		if !ok {
			return fmt.Errorf("host %s: %w", host, ErrNotFound)
		}
		vs, ok := st.VPCs[hs.Network]
		if !ok {
			return fmt.Errorf("host %s is on the %s, which has no security groups", host, hs.Network)
		}
		rules, err := f(slices.Clone(hs.Egress))
		if err != nil {
			return err
		}
		if err := s.nft(ctx, s.cloud.HostNS(hostPrefix+host), renderSG(vs.CIDR, rules)); err != nil {
			return fmt.Errorf("security group: %w", err)
		}
		hs.Egress = rules
		st.Hosts[host] = hs
		return nil
	})
}

// renderSG is a customer host's egress table: open to its own VPC and to
// the internet; to the private ranges, only what a rule allows.
func renderSG(vpc netip.Prefix, rules []EgressRule) string {
	var b strings.Builder
	b.WriteString("add table ip moat_sim_sg\ndelete table ip moat_sim_sg\ntable ip moat_sim_sg {\n")
	b.WriteString("\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n")
	b.WriteString("\t\tct state established,related accept\n")
	b.WriteString("\t\toifname \"lo\" accept\n")
	fmt.Fprintf(&b, "\t\tip daddr %v accept\n", vpc)
	for _, r := range rules {
		if r.Protocol == "all" {
			fmt.Fprintf(&b, "\t\tip daddr %v accept\n", r.CIDR)
		} else {
			fmt.Fprintf(&b, "\t\tip daddr %v %s dport %d accept\n", r.CIDR, r.Protocol, r.Port)
		}
	}
	var priv []string
	for _, p := range privateRanges {
		priv = append(priv, p.String())
	}
	fmt.Fprintf(&b, "\t\tip daddr { %s } drop\n", strings.Join(priv, ", "))
	b.WriteString("\t}\n}\n")
	return b.String()
}
