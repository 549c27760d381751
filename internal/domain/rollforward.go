package domain

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"
)

// Roll-forward: planned changes of a service's nodes (a resize, an
// upgrade, a host's drain) never change a node in place. New nodes are
// added, catch up, take the primary role if the primary leaves (a
// switchover), and the old nodes are wiped. No node is ever reused.

// Operation types of planned changes.
const (
	OpServiceResize  = "service.resize"
	OpServiceUpgrade = "service.upgrade"
	// OpServiceReplace replaces one node (a host's drain, a lost replica).
	OpServiceReplace = "service.replace"
)

// Steps of a roll-forward, in this order when present (StepCatchUp is
// the failover's too).
const (
	// StepAddNodes: the plan's new nodes are created on their slots.
	StepAddNodes = "add-nodes"
	// StepSwitchover: the old primary stops taking writes, the new one
	// has received all its WAL and is promoted, the DNS name moves.
	StepSwitchover = "switchover"
	// StepRelease: the primary applies a synchronous_standby_names
	// without the retiring nodes (so their going blocks no commit).
	StepRelease = "release"
	// StepWipe: the retiring nodes are deleted (their agents wipe them).
	StepWipe = "wipe"
)

// MaxSwitchoverPause is the longest the service may refuse writes during
// a switchover; a switchover that cannot promote within it re-opens the
// old primary and retries later.
const MaxSwitchoverPause = time.Second

// RollPlan is a checked planned change of a service's nodes.
type RollPlan struct {
	Type string `json:"type"`
	// Target is the service's node count at the end.
	Target int `json:"target"`
	// Add are the new nodes' slots; SwitchTo indexes the one that becomes
	// primary when Switchover is set.
	Add        []Slot `json:"add,omitempty"`
	Switchover bool   `json:"switchover,omitempty"`
	SwitchTo   int    `json:"switch_to,omitempty"`
	// Retire are the nodes wiped at the end.
	Retire []string `json:"retire,omitempty"`
	Steps  []string `json:"steps"`
	// Settings, for an upgrade, are the tenant settings that need a
	// restart its new nodes start with (the service's, pending ones
	// included); they become the service's NodeSettings when it ends.
	Settings map[string]string `json:"settings,omitempty"`
}

// Next returns the step after step ("" for the first), or "" after the
// last.
func (p *RollPlan) Next(step string) string {
	if step == "" {
		return p.Steps[0]
	}
	i := slices.Index(p.Steps, step)
	if i < 0 || i+1 == len(p.Steps) {
		return ""
	}
	return p.Steps[i+1]
}

// steps lists the plan's steps from what it does.
func (p *RollPlan) steps() {
	p.Steps = nil
	if len(p.Add) > 0 {
		p.Steps = append(p.Steps, StepAddNodes, StepCatchUp)
	}
	if p.Switchover {
		p.Steps = append(p.Steps, StepSwitchover)
	}
	if len(p.Retire) > 0 {
		p.Steps = append(p.Steps, StepRelease, StepWipe)
	}
}

// checkPlanned refuses a planned change of svc while another operation
// runs (409) or the service is not running.
func checkPlanned(svc *Service) error {
	if svc.OperationID != "" || svc.State == StateMigrating {
		return Conflictf(CodeOperationInProgress, "", "wait for operation "+svc.OperationID+" to finish", "service %s has an operation in progress", svc.ID)
	}
	if svc.State != StateRunning {
		return Conflictf(CodeInvalidState, "", "wait until the service is running", "service %s is %s", svc.ID, svc.State)
	}
	return nil
}

// liveMembers splits members into the primary and the replicas that are
// not being deleted; every survivor must be healthy (a lost node is
// replaced first).
func liveMembers(svc *Service, members []Member, leaving func(Member) bool) (primary *Member, replicas []Member, err error) {
	for i, m := range members {
		if Going(m.Node.State) {
			continue
		}
		if !m.HostHealthy && !leaving(m) {
			return nil, nil, degraded(svc, m.Node)
		}
		if m.Primary {
			primary = &members[i]
		} else {
			replicas = append(replicas, m)
		}
	}
	if primary == nil {
		return nil, nil, Conflictf(CodeInvalidState, "", "wait until the service has a primary", "service %s has no primary", svc.ID)
	}
	return primary, replicas, nil
}

// PlanResize plans `moat service update SVC --nodes target`: up, new
// replicas on slots Place finds (a region that cannot place them fails
// the request); down, the retiring replicas (those on unhealthy hosts
// first, then the newest index) are released and wiped. The primary
// stays.
func PlanResize(svc *Service, members []Member, target int, r Region, f Fleet) (*RollPlan, error) {
	if err := checkPlanned(svc); err != nil {
		return nil, err
	}
	if err := ValidateNodeCount(target); err != nil {
		return nil, err
	}
	if target == svc.NodeCount {
		return nil, Invalidf(CodeInvalidNodes, "nodes", "give another node count: 1, 2 or 3", "service %s has %d nodes already", svc.ID, target)
	}
	shrink := target < svc.NodeCount
	primary, replicas, err := liveMembers(svc, members, func(m Member) bool { return shrink && !m.Primary })
	if err != nil {
		return nil, err
	}
	p := &RollPlan{Type: OpServiceResize, Target: target}
	have := 1 + len(replicas)
	switch {
	case target > have:
		keep := []*Node{primary.Node}
		for _, m := range replicas {
			keep = append(keep, m.Node)
		}
		if p.Add, err = Place(PlacementRequest{Region: r, Count: target - have, Keep: keep}, f); err != nil {
			return nil, err
		}
	case target < have:
		slices.SortFunc(replicas, func(a, b Member) int {
			if a.HostHealthy != b.HostHealthy {
				if !a.HostHealthy {
					return -1
				}
				return 1
			}
			return cmp.Or(cmp.Compare(b.Node.Index, a.Node.Index), strings.Compare(a.Node.ID, b.Node.ID))
		})
		for _, m := range replicas[:have-target] {
			p.Retire = append(p.Retire, m.Node.ID)
		}
		for _, m := range replicas[have-target:] {
			if !m.HostHealthy {
				return nil, degraded(svc, m.Node)
			}
		}
	}
	p.steps()
	return p, nil
}

// PlanUpgrade plans `moat service upgrade SVC`: as many new nodes as the
// service has, on slots away from the old nodes' hosts where possible,
// then a switchover to the first and the old nodes wiped. The new nodes
// start with the service's settings, those pending a restart included.
func PlanUpgrade(svc *Service, members []Member, r Region, f Fleet) (*RollPlan, error) {
	if err := checkPlanned(svc); err != nil {
		return nil, err
	}
	primary, replicas, err := liveMembers(svc, members, func(Member) bool { return false })
	if err != nil {
		return nil, err
	}
	old := []*Node{primary.Node}
	for _, m := range replicas {
		old = append(old, m.Node)
	}
	p := &RollPlan{Type: OpServiceUpgrade, Target: svc.NodeCount, Switchover: true, Settings: svc.restartSettings()}
	if p.Add, err = Place(PlacementRequest{Region: r, Count: svc.NodeCount, Leaving: old, PreferAZ: primary.Node.AZ}, f); err != nil {
		return nil, err
	}
	for _, n := range old {
		p.Retire = append(p.Retire, n.ID)
	}
	p.steps()
	return p, nil
}

// PlanReplace plans the replacement of one node of svc (a node on a
// draining host, or a lost replica): a new node in its AZ if a host there
// has room, else in another free AZ; a switchover if it is the primary
// (a lost primary is failed over instead: DecideFailover).
func PlanReplace(svc *Service, members []Member, nodeID string, r Region, f Fleet) (*RollPlan, error) {
	if err := checkPlanned(svc); err != nil {
		return nil, err
	}
	var target *Node
	for _, m := range members {
		if m.Node.ID == nodeID && !Going(m.Node.State) {
			target = m.Node
			if m.Primary && !m.HostHealthy {
				return nil, Conflictf(CodePrimaryLost, "", "the failover replaces it", "node %s is the service's lost primary", nodeID)
			}
		}
	}
	if target == nil {
		return nil, &Error{Kind: NotFound, Code: CodeNotFound, Field: "node_id", Msg: "service " + svc.ID + " has no live node " + nodeID}
	}
	primary, replicas, err := liveMembers(svc, members, func(m Member) bool { return m.Node.ID == nodeID })
	if err != nil {
		return nil, err
	}
	var keep []*Node
	for _, m := range append([]Member{*primary}, replicas...) {
		if m.Node.ID != nodeID {
			keep = append(keep, m.Node)
		}
	}
	p := &RollPlan{Type: OpServiceReplace, Target: svc.NodeCount, Switchover: primary.Node.ID == nodeID, Retire: []string{nodeID}}
	if p.Add, err = Place(PlacementRequest{Region: r, Count: 1, Keep: keep, Leaving: []*Node{target}, PreferAZ: target.AZ}, f); err != nil {
		return nil, err
	}
	p.steps()
	return p, nil
}

// SwitchoverReady reports whether the switchover may promote the new
// primary: the old one reports itself demoted (stopped by a clean
// shutdown, it refuses writes; its ReceivedLSN is then the location of
// its shutdown checkpoint, the last record it wrote) and the new one has
// received WAL past it.
func SwitchoverReady(old, next Member) bool {
	o, n := old.Report, next.Report
	return o != nil && n != nil && o.Fenced && !o.Up && o.ReceivedLSN != 0 && n.Up && n.InRecovery && n.ReceivedLSN > o.ReceivedLSN
}

// degraded is the 409 of a planned change on a service with a lost node.
func degraded(svc *Service, n *Node) error {
	return Conflictf(CodeNodeLost, "", "wait for the lost node's replacement, then try again",
		"service %s is degraded: node %s is lost", svc.ID, n.ID)
}

// NewRollNode returns a new node of roll r on svc (NewNode): an
// upgrade's starts with the plan's settings, which may differ from the
// old nodes' (pending a restart).
func NewRollNode(svc *Service, r *Roll, index int, az string, now time.Time) *Node {
	n := NewNode(svc, index, az, now)
	if r.Plan.Type == OpServiceUpgrade {
		n.Settings = maps.Clone(r.Plan.Settings)
	}
	return n
}

// FinishRoll ends svc's roll op successfully (Roll.Advance said Done):
// after an upgrade, the settings its new nodes started with are the
// service's nodes' (nothing is pending that the upgrade applied).
func FinishRoll(svc *Service, op *Operation, now time.Time) error {
	if err := op.Succeed(now); err != nil {
		return err
	}
	if op.Roll != nil && op.Roll.Plan.Type == OpServiceUpgrade {
		svc.NodeSettings = maps.Clone(op.Roll.Plan.Settings)
	}
	svc.EndOperation(op.ID, now)
	return nil
}
