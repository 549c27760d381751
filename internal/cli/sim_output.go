//go:build linux

package cli

import (
	"io"
	"strconv"
	"strings"

	"github.com/moatdb/moat/internal/localcloud"
)

// simTable writes v, one of moat sim's objects, as table rows to tw, and
// reports whether v is one.
func simTable(tw io.Writer, v any) bool {
	switch v := v.(type) {
	case simFault:
		simFaultRows(tw, v)
	case simHost:
		simHostRows(tw, v)
	case []simHost:
		simHostRows(tw, v...)
	case simAccount:
		simAccountRows(tw, v)
	case []simAccount:
		simAccountRows(tw, v...)
	case simVPC:
		simVPCRows(tw, v)
	case []simVPC:
		simVPCRows(tw, v...)
	case simPeering:
		simPeeringRows(tw, v)
	case []simPeering:
		simPeeringRows(tw, v...)
	case simRoute:
		simRouteRows(tw, v)
	case []simRoute:
		simRouteRows(tw, v...)
	case simEgress:
		simEgressRows(tw, v)
	case []simEgress:
		simEgressRows(tw, v...)
	case simClock:
		row(tw, "NOW")
		row(tw, ts(v.Now))
	default:
		return false
	}
	return true
}

func simHostRows(w io.Writer, hs ...simHost) {
	row(w, "NAME", "NETWORK", "ADDRESS", "NAMESPACE", "CREATED")
	for _, h := range hs {
		addr := h.Address
		if addr == "" {
			addr = "- (namespace gone)"
		}
		row(w, h.Name, h.Network, addr, h.Namespace, ts(h.Created))
	}
}

func simAccountRows(w io.Writer, as ...simAccount) {
	row(w, "ID", "CREATED")
	for _, a := range as {
		row(w, a.ID, ts(a.Created))
	}
}

func simVPCRows(w io.Writer, vs ...simVPC) {
	row(w, "ID", "ACCOUNT", "REGION", "CIDR", "NAT_ADDRESS", "CREATED")
	for _, v := range vs {
		nat := v.NATAddress
		if nat == "" {
			nat = "- (router gone)"
		}
		row(w, v.ID, v.Account, v.Region, v.CIDR, nat, ts(v.Created))
	}
}

// simPeeringRows shows the inbox; the expiry only matters, and is only
// shown, while a request is pending.
func simPeeringRows(w io.Writer, ps ...simPeering) {
	row(w, "ID", "REQUESTER_VPC", "ACCEPTER_VPC", "DECLARED_CIDRS", "STATE", "REASON", "EXPIRES")
	for _, p := range ps {
		expires := "-"
		if p.State == string(localcloud.PeeringPendingAcceptance) {
			expires = ts(p.Expires)
		}
		row(w, p.ID, p.RequesterVPC, p.AccepterVPC, dash(strings.Join(p.DeclaredCIDRs, ",")), p.State, dash(p.Reason), expires)
	}
}

func simRouteRows(w io.Writer, rs ...simRoute) {
	row(w, "DESTINATION", "TARGET", "STATE")
	for _, r := range rs {
		row(w, r.Destination, r.Target, r.State)
	}
}

func simEgressRows(w io.Writer, rs ...simEgress) {
	row(w, "HOST", "PROTOCOL", "PORT", "CIDR")
	for _, r := range rs {
		port := "all"
		if r.Port != 0 {
			port = strconv.Itoa(r.Port)
		}
		row(w, r.Host, r.Protocol, port, r.CIDR)
	}
}
