package domain

import (
	"fmt"
	"slices"
	"strings"
)

// CodeNodeReplacing is the health condition of a service one of whose
// nodes replaces a node that left it (lost, or moved off a draining host)
// and does not stream from the primary yet (Replacements).
const CodeNodeReplacing = "node_replacing"

// Replacements are the health conditions of the members that replace a
// node which left the service and do not stream from the primary yet:
// what happened (the node that left, its host, and whether its host was
// lost) and what Moat is doing (the replacement, its host, being created,
// starting, or catching up before it streams, with its lag in bytes as
// service get shows it). Streaming ends the condition, not a lag bound:
// positions are reported every few seconds, so a primary's newer report
// (a segment switch forced by another node's base backup) can put a
// streaming replica's last one more than CatchUpLag behind, and the
// service would turn degraded and back. A replacement takes the index of the node it
// replaces (ReplaceNode), so the node it replaces is the member being
// deleted with its index (the latest one if several); once that one is
// wiped only a replacement still being created is said, without it. A
// roll-forward's nodes (joining, retiring, new indices) have their own
// conditions and get none here, nor does anything while no primary is
// assigned (a failover says what happens then).
func Replacements(members []Member) []Info {
	var out []Info
	for _, r := range replacing(members) {
		out = append(out, r.why)
	}
	return out
}

// replacement is a Replacements condition and the node that left ("" once
// wiped).
type replacement struct {
	why  Info
	left string
}

// replacing is Replacements with the node each replacement replaces.
func replacing(members []Member) []replacement {
	var primary *Member
	for i, m := range members {
		if m.Primary && !Going(m.Node.State) {
			primary = &members[i]
		}
	}
	if primary == nil {
		return nil
	}
	var out []replacement
	for _, m := range members {
		if m.Primary || m.Joining || m.Retiring || Going(m.Node.State) {
			continue
		}
		if m.Node.State != StateCreating && streamsFrom(m, primary.Node.ID) {
			continue
		}
		var left *Member
		for i, o := range members {
			if Going(o.Node.State) && o.Node.Index == m.Node.Index && o.Node.ID != m.Node.ID &&
				(left == nil || o.Node.CreatedAt.After(left.Node.CreatedAt)) {
				left = &members[i]
			}
		}
		if left == nil && m.Node.State != StateCreating {
			// An ordinary replica reconnecting, or a replacement whose
			// predecessor is wiped: the replication columns say it.
			continue
		}
		doing := replacementProgress(m, *primary)
		r := replacement{why: Info{Code: CodeNodeReplacing, Message: "node " + m.Node.ID + onHost(m.Node) + " replaces a node that left the service; it " + doing}}
		if left != nil {
			what := "left the service"
			if !left.HostHealthy {
				what = "was lost (its host stopped sending heartbeats)"
			}
			r.left = left.Node.ID
			r.why.Message = "node " + left.Node.ID + onHost(left.Node) + " " + what + "; its replacement " + m.Node.ID + onHost(m.Node) + " " + doing
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b replacement) int { return strings.Compare(a.why.Message, b.why.Message) })
	return out
}

// replacementProgress says where replacement m stands toward streaming
// from primary.
func replacementProgress(m, primary Member) string {
	r := m.Report
	switch {
	case m.Node.State == StateCreating:
		return "is being created (cloned from the primary)"
	case r == nil || !r.Up:
		return "is starting"
	}
	if primary.Report == nil {
		return "is catching up, not streaming yet"
	}
	return fmt.Sprintf("is catching up (lag %d bytes), not streaming yet", Lag(primary.Report.ReceivedLSN, r.ReplayedLSN))
}

// onHost is " on host H" for a placed node, "" before its placement.
func onHost(n *Node) string {
	if n.Host == "" {
		return ""
	}
	return " on host " + n.Host
}
