package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// rule is one rule of the input chain, as nft text and as expressions.
// Set lookups name the set; the expressions are completed with the set's
// batch ID by Apply.
type rule struct {
	text  string
	exprs func(sets map[string]*nftables.Set) []expr.Any
}

// The rules of the input chain, in order. Everything they do not accept is
// dropped by the chain's policy.
func (c *compiled) rules() []rule {
	port := binary.BigEndian.AppendUint16(nil, c.port)
	rules := []rule{
		{`iifname "lo" accept`, func(map[string]*nftables.Set) []expr.Any {
			return []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")},
				accept(),
			}
		}},
		// Inbound packets in the reply direction answer a connection the
		// node opened (replication, object storage, DNS). Clients'
		// packets are always in the original direction, so they never
		// match here and are checked against the sets below.
		{`ct direction reply accept`, func(map[string]*nftables.Set) []expr.Any {
			return []expr.Any{
				&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}}, // IP_CT_DIR_REPLY
				accept(),
			}
		}},
		// ICMP errors about the node's connections (path MTU discovery).
		// They carry no data into a connection.
		{`meta l4proto icmp ct state related accept`, func(map[string]*nftables.Set) []expr.Any {
			return append(append(l4proto(unix.IPPROTO_ICMP), ctRelated()...), accept())
		}},
		{`meta l4proto ipv6-icmp ct state related accept`, func(map[string]*nftables.Set) []expr.Any {
			return append(append(l4proto(unix.IPPROTO_ICMPV6), ctRelated()...), accept())
		}},
	}
	// Neighbour discovery, only from on-link senders (hop limit 255).
	for _, t := range []struct {
		name string
		typ  byte
	}{{"nd-neighbor-solicit", 135}, {"nd-neighbor-advert", 136}} {
		rules = append(rules, rule{
			fmt.Sprintf("icmpv6 type %s ip6 hoplimit 255 accept", t.name),
			func(map[string]*nftables.Set) []expr.Any {
				e := nfproto(unix.NFPROTO_IPV6)
				e = append(e, l4proto(unix.IPPROTO_ICMPV6)...)
				e = append(e, transport(0, []byte{t.typ})...)
				return append(e,
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 7, Len: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{255}},
					accept())
			},
		})
	}
	// Clients: the source's shard is looked up in the family's verdict
	// map, whose chain accepts the port (and echo requests) from the
	// shard's set; a source in no set comes back here and is dropped.
	for _, f := range []struct {
		set string
		v4  bool
	}{{setAllow4, true}, {setAllow6, false}} {
		rules = append(rules, rule{
			fmt.Sprintf("%s saddr vmap @%s", ipName(f.v4), c.name(f.set)),
			func(sets map[string]*nftables.Set) []expr.Any {
				e := saddr(f.v4)
				set := sets[c.name(f.set)]
				return append(e, &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: set.Name, SetID: set.ID})
			},
		})
	}
	for _, s := range []struct {
		set string
		v4  bool
	}{{setPeer4, true}, {setPeer6, false}} {
		rules = append(rules, portRule(c.name(s.set), s.v4, port))
	}
	if c.refuse {
		// A fenced node: connections to the port get a reset, so that
		// clients move to their next host at once (Policy.Refuse).
		rules = append(rules, rule{
			fmt.Sprintf("tcp dport %d reject with tcp reset", c.port),
			func(map[string]*nftables.Set) []expr.Any {
				e := append(l4proto(unix.IPPROTO_TCP), transport(2, port)...)
				return append(e, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
			},
		})
	}
	return rules
}

// shardRules are the rules of a shard's chain.
func (c *compiled) shardRules(v4 bool, set string) []rule {
	port := binary.BigEndian.AppendUint16(nil, c.port)
	echo := rule{fmt.Sprintf("ip saddr @%s icmp type echo-request accept", set),
		func(sets map[string]*nftables.Set) []expr.Any {
			e := saddrIn(sets[set], true)
			e = append(e, l4proto(unix.IPPROTO_ICMP)...)
			e = append(e, transport(0, []byte{8})...)
			return append(e, accept())
		}}
	if !v4 {
		echo = rule{fmt.Sprintf("ip6 saddr @%s icmpv6 type echo-request accept", set),
			func(sets map[string]*nftables.Set) []expr.Any {
				e := saddrIn(sets[set], false)
				e = append(e, l4proto(unix.IPPROTO_ICMPV6)...)
				e = append(e, transport(0, []byte{128})...)
				return append(e, accept())
			}}
	}
	// Echo requests from allowed clients, to help them debug reachability.
	return []rule{portRule(set, v4, port), echo}
}

// portRule accepts TCP to port from the sources in set.
func portRule(set string, v4 bool, port []byte) rule {
	return rule{
		fmt.Sprintf("%s saddr @%s tcp dport %d accept", ipName(v4), set, binary.BigEndian.Uint16(port)),
		func(sets map[string]*nftables.Set) []expr.Any {
			e := saddrIn(sets[set], v4)
			e = append(e, l4proto(unix.IPPROTO_TCP)...)
			e = append(e, transport(2, port)...)
			return append(e, accept())
		},
	}
}

func ipName(v4 bool) string {
	if v4 {
		return "ip"
	}
	return "ip6"
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func transport(offset uint32, want []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: uint32(len(want))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want},
	}
}

func ctRelated() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitRELATED),
			Xor:  make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// saddr loads the source address into register 1.
func saddr(v4 bool) []expr.Any {
	e := nfproto(unix.NFPROTO_IPV6)
	off, n := uint32(8), uint32(16)
	if v4 {
		e = nfproto(unix.NFPROTO_IPV4)
		off, n = 12, 4
	}
	return append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
}

func saddrIn(set *nftables.Set, v4 bool) []expr.Any {
	return append(saddr(v4), &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID})
}
