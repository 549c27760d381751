package domain

import (
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Hosts (issue 11, docs/design/0014): the machines whose agents run
// nodes. Only the platform operator manages them. The control plane
// never reaches into a host: it decides where a node goes (Place) and the
// host's agent realises it, heartbeating to the control plane. A node
// names its host by the host's Name (Node.Host, the name an agent token
// is bound to).

// PrefixHost is the ID prefix of hosts.
const PrefixHost = "host-"

// Host states besides active and deleted.
const (
	// StateDraining: the host takes no new node; drain replaces its nodes.
	StateDraining = "draining"
	// StateDown: the host's heartbeats stopped.
	StateDown = "down"
)

// HostMachine: active ⇄ draining, either ⇄ down (heartbeats stop and
// resume), any → deleted (Remove, when empty).
var HostMachine = Machine{Name: "host", Initial: StateActive, Next: map[string][]string{
	StateActive:   {StateDraining, StateDown, StateDeleted},
	StateDraining: {StateActive, StateDown, StateDeleted},
	StateDown:     {StateActive, StateDraining, StateDeleted},
}}

// Host capacity limits, in nodes.
const (
	DefaultHostCapacity = 8
	MaxHostCapacity     = 1000
	// MaxAgentVersionLen bounds the agent version a heartbeat reports.
	MaxAgentVersionLen = 64
)

// Heartbeats: an agent reports at least every FailoverPolicy's
// HeartbeatInterval (a report with no node is a heartbeat); a host whose
// last heartbeat is older than its HostTimeout is down (HeartbeatLate)
// and unhealthy. The timeout is longer than an agent's lease and its
// margin (FailoverPolicy.Check), so a host marked down has fenced its
// nodes already.

// Error and state-info codes of hosts.
const (
	CodeInvalidAZ       = "invalid_az"
	CodeInvalidCapacity = "invalid_capacity"
	CodeInvalidVersion  = "invalid_version"
	// CodeHeartbeatLost is the state info of a host marked down.
	CodeHeartbeatLost = "heartbeat_lost"
)

// Host is an agent host: where it is (Region, AZ), how many nodes it may
// run (Capacity), and what its agent last said (LastHeartbeatAt,
// AgentVersion). Meta.Name is its name, unique among live hosts.
type Host struct {
	Meta
	Region   string `json:"region"`
	AZ       string `json:"az"`
	Capacity int    `json:"capacity"`
	// Cordoned is set by Drain and cleared by Activate: a down host whose
	// heartbeats resume goes back to draining rather than active.
	Cordoned        bool      `json:"cordoned,omitempty"`
	LastHeartbeatAt time.Time `json:"last_heartbeat_at,omitzero"`
	AgentVersion    string    `json:"agent_version,omitempty"`
}

func (*Host) Kind() string   { return "host" }
func (*Host) Parent() string { return "" }

// NewHost validates a host's registration: its name (and that no live host
// among others has it), its region and AZ (configured in catalog), its
// capacity (0: DefaultHostCapacity). The host starts active, with no
// heartbeat yet (so not healthy until its agent calls).
func NewHost(catalog Catalog, name, region, az string, capacity int, others []*Host, now time.Time) (*Host, error) {
	if err := ValidateName("name", name); err != nil {
		return nil, err
	}
	r, err := catalog.Lookup("region", region)
	if err != nil {
		return nil, err
	}
	if err := r.checkAZ("az", az); err != nil {
		return nil, err
	}
	if capacity == 0 {
		capacity = DefaultHostCapacity
	}
	if err := ValidateHostCapacity(capacity); err != nil {
		return nil, err
	}
	for _, o := range others {
		if !Gone(o.State) && o.Name == name {
			return nil, Conflictf(CodeDuplicateEntry, "name", "choose another name, or remove host "+name+" first",
				"a host named %q exists already (%s)", name, o.ID)
		}
	}
	return &Host{Meta: Meta{ID: NewID(PrefixHost), Name: name, State: HostMachine.Initial, CreatedAt: now, UpdatedAt: now},
		Region: region, AZ: az, Capacity: capacity}, nil
}

// checkAZ reports an error for field unless az is one of r's AZs.
func (r Region) checkAZ(field, az string) error {
	hint := "AZs of " + r.Code + ": " + strings.Join(r.AZs, ", ")
	if az == "" {
		return Invalidf(CodeRequired, field, hint, "an availability zone is required")
	}
	for _, a := range r.AZs {
		if a == az {
			return nil
		}
	}
	return Invalidf(CodeInvalidAZ, field, hint, "%q is not an availability zone of %s", az, r.Code)
}

// ValidateHostCapacity checks a host's capacity: 1 to MaxHostCapacity nodes.
func ValidateHostCapacity(n int) error {
	if n < 1 || n > MaxHostCapacity {
		return Invalidf(CodeInvalidCapacity, "capacity", fmt.Sprintf("a host runs 1 to %d nodes", MaxHostCapacity), "a capacity of %d nodes is out of range", n)
	}
	return nil
}

// SetCapacity changes the host's capacity. Lowering it below the nodes it
// runs is allowed (it takes no new node until it is under); the caller
// may warn.
func (h *Host) SetCapacity(n int, now time.Time) error {
	if Gone(h.State) {
		return Conflictf(CodeInvalidState, "", "", "host %s is removed", h.Name)
	}
	if err := ValidateHostCapacity(n); err != nil {
		return err
	}
	h.Capacity, h.UpdatedAt = n, now
	return nil
}

// HostHealthy reports whether h's agent is alive at now: the host is not
// down or removed and its last heartbeat is at most timeout old. A host
// that never heartbeat is not healthy.
func HostHealthy(h *Host, now time.Time, timeout time.Duration) bool {
	if h.State == StateDown || Gone(h.State) || h.LastHeartbeatAt.IsZero() {
		return false
	}
	return now.Sub(h.LastHeartbeatAt) <= timeout
}

// Schedulable reports whether Place may put a new node on h at now: healthy
// and active (not draining).
func (h *Host) Schedulable(now time.Time, timeout time.Duration) bool {
	return h.State == StateActive && HostHealthy(h, now, timeout)
}

// HeartbeatLate reports whether an active or draining host must be marked
// down at now: no heartbeat for longer than timeout (counted from its
// registration if it never heartbeat).
func (h *Host) HeartbeatLate(now time.Time, timeout time.Duration) bool {
	return h.HeartbeatLateSince(now, timeout, time.Time{})
}

// HeartbeatLateSince is HeartbeatLate for an observer that has listened
// for heartbeats only since listening (a control plane that just started:
// while it was down no heartbeat could arrive, so a host is not blamed
// for the silence before).
func (h *Host) HeartbeatLateSince(now time.Time, timeout time.Duration, listening time.Time) bool {
	if h.State != StateActive && h.State != StateDraining {
		return false
	}
	last := h.LastHeartbeatAt
	if last.IsZero() {
		last = h.CreatedAt
	}
	if listening.After(last) {
		last = listening
	}
	return now.Sub(last) > timeout
}

// Listening returns from when the control plane counts hosts' silences
// at now, given since, from when it counted them so far (its start). While
// it hears no live host at all — no active or draining host heartbeat in
// the last two heartbeat intervals, with two or more of them — the
// silence is more likely its own (a stalled process, a store that
// blocked its writes, its own network) than every host's: it is then
// deaf, and counts from now, so that no host is marked down for the
// heartbeats it could not take; once they arrive again each host has a
// whole host timeout from the end of the deafness. With a single host
// there is nothing to compare: since is kept.
func Listening(hosts []*Host, since, now time.Time, p FailoverPolicy) time.Time {
	var newest time.Time
	live := 0
	for _, h := range hosts {
		if h.State != StateActive && h.State != StateDraining {
			continue
		}
		live++
		if h.LastHeartbeatAt.After(newest) {
			newest = h.LastHeartbeatAt
		}
	}
	if live < 2 || !now.After(newest.Add(2*p.HeartbeatInterval)) || !now.After(since) {
		return since
	}
	return now
}

// Heartbeat records an agent's heartbeat at now with its version. A down
// host comes back: to draining when it was cordoned, else active. It
// reports whether the state changed (the caller records an audit entry).
func (h *Host) Heartbeat(version string, now time.Time) (bool, error) {
	if Gone(h.State) {
		return false, Conflictf(CodeInvalidState, "", "register the host again (moat host add)", "host %s is removed", h.Name)
	}
	if len(version) > MaxAgentVersionLen || strings.IndexFunc(version, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0 {
		return false, Invalidf(CodeInvalidVersion, "agent_version", fmt.Sprintf("report a version of at most %d printable characters without spaces", MaxAgentVersionLen), "%q is not an agent version", version)
	}
	h.LastHeartbeatAt, h.AgentVersion, h.UpdatedAt = now, version, now
	if h.State != StateDown {
		return false, nil
	}
	to := StateActive
	if h.Cordoned {
		to = StateDraining
	}
	if err := h.transition(HostMachine, to, now); err != nil {
		return false, err
	}
	h.StateInfo = nil
	return true, nil
}

// MarkDown records that the host's heartbeats stopped (see HeartbeatLate).
func (h *Host) MarkDown(now time.Time) error {
	if err := h.transition(HostMachine, StateDown, now); err != nil {
		return err
	}
	h.StateInfo = &Info{Code: CodeHeartbeatLost, Message: "the host's agent stopped sending heartbeats"}
	return nil
}

// Drain cordons the host: it takes no new node, and the fleet reconciler
// replaces each of its nodes (PlanDrain). Draining a draining host is a
// no-op; a down host stays down but is cordoned.
func (h *Host) Drain(now time.Time) error {
	if Gone(h.State) {
		return Conflictf(CodeInvalidState, "", "", "host %s is removed", h.Name)
	}
	h.Cordoned, h.UpdatedAt = true, now
	if h.State == StateActive {
		return h.transition(HostMachine, StateDraining, now)
	}
	return nil
}

// Activate uncordons a draining host (it takes new nodes again).
func (h *Host) Activate(now time.Time) error {
	if h.State == StateDown || Gone(h.State) {
		return Conflictf(CodeInvalidState, "state", "wait for the host's agent to heartbeat", "host %s is %s", h.Name, h.State)
	}
	h.Cordoned, h.UpdatedAt = false, now
	if h.State == StateDraining {
		return h.transition(HostMachine, StateActive, now)
	}
	return nil
}

// OnHost returns the nodes among nodes that h runs and that are not gone.
func (h *Host) OnHost(nodes []*Node) []*Node {
	var out []*Node
	for _, n := range nodes {
		if n.Host == h.Name && !Gone(n.State) {
			out = append(out, n)
		}
	}
	return out
}

// Remove deletes the host; nodes are every node the caller knows on it.
// Only an empty host goes: every node on it is gone, or the host is down
// and its nodes are being deleted (replaced already; their keys are
// destroyed when they are marked deleted, so whatever the dead host still
// holds cannot be opened). The caller revokes the host's agent token.
func (h *Host) Remove(nodes []*Node, now time.Time) error {
	var blocking []string
	for _, n := range h.OnHost(nodes) {
		if h.State == StateDown && n.State == StateDeleting {
			continue
		}
		blocking = append(blocking, n.ID)
	}
	if len(blocking) > 0 {
		return Conflictf(CodeInUse, "", "drain it first (moat host drain "+h.Name+") and remove it once its nodes are replaced",
			"host %s still runs %d node(s): %s", h.Name, len(blocking), strings.Join(blocking, ", "))
	}
	return h.transition(HostMachine, StateDeleted, now)
}

// AbandonedNodes are the deleting nodes of a removed down host: the
// caller marks them deleted (their agent will never report them wiped).
func (h *Host) AbandonedNodes(nodes []*Node) []*Node {
	if !Gone(h.State) {
		return nil
	}
	var out []*Node
	for _, n := range nodes {
		if n.Host == h.Name && n.State == StateDeleting {
			out = append(out, n)
		}
	}
	return out
}
