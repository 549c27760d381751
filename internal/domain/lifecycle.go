package domain

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Lifecycle: every change of an object's State goes through a method
// below, checked against the object's Machine (state.go). Adapters (the
// API, the reconcilers) call them and store the result; a repository
// meta-test refuses a State written anywhere else.

// transition moves m to state to along mc and stamps UpdatedAt.
func (m *Meta) transition(mc Machine, to string, now time.Time) error {
	if err := mc.Move(m.State, to); err != nil {
		return err
	}
	m.State, m.UpdatedAt = to, now
	return nil
}

// Going reports whether an object in state s is being deleted or is gone.
func Going(s string) bool { return s == StateDeleting || s == StateDeleted }

// TokenMachine: a token is active until it is revoked (deleted).
var TokenMachine = Machine{Name: "token", Initial: StateActive, Next: map[string][]string{
	StateActive: {StateDeleted},
}}

// NewProject returns a new active project named name with the default
// quota (the name is validated by the caller, see ValidateName).
func NewProject(name string, now time.Time) *Project {
	id := NewID(PrefixProject)
	return &Project{Meta: Meta{ID: id, ProjectID: id, Name: name, State: StateActive, CreatedAt: now, UpdatedAt: now},
		VPCQuota: DefaultVPCQuota}
}

// NewToken returns a new active token; hash is the SHA-256 of its secret.
// projectID is "" for operator and agent tokens, host binds an agent token
// to one host.
func NewToken(projectID, name string, role Role, hash, host string, now time.Time) *Token {
	return &Token{Meta: Meta{ID: NewID(PrefixToken), ProjectID: projectID, Name: name, State: TokenMachine.Initial, CreatedAt: now, UpdatedAt: now},
		Role: role, Hash: hash, Host: host}
}

// Revoke ends a token.
func (t *Token) Revoke(now time.Time) error { return t.transition(TokenMachine, StateDeleted, now) }

// NewNode returns node index of svc, in availability zone az, waiting to
// be placed; it starts with the restart settings the service's nodes run
// with (Service.NodeSettings).
func NewNode(svc *Service, index int, az string, now time.Time) *Node {
	return &Node{Meta: Meta{ID: NewID(PrefixNode), ProjectID: svc.ProjectID, State: NodeMachine.Initial, CreatedAt: now, UpdatedAt: now},
		ServiceID: svc.ID, Index: index, AZ: az, Settings: maps.Clone(svc.NodeSettings)}
}

// NewOperation returns a pending operation of type typ on targetID. The
// caller fills the fields of its type (VPCID, SourceID, ...).
func NewOperation(projectID, typ, targetID string, now time.Time) *Operation {
	return &Operation{Meta: Meta{ID: NewID(PrefixOperation), ProjectID: projectID, State: OperationMachine.Initial, CreatedAt: now, UpdatedAt: now},
		Type: typ, TargetID: targetID}
}

// ---- operations ----

// Live reports whether the operation is still under way.
func (o *Operation) Live() bool { return !OperationMachine.Terminal(o.State) }

// Start moves a pending operation to running, at step (may be "").
func (o *Operation) Start(step string, now time.Time) error {
	if err := o.transition(OperationMachine, StateRunning, now); err != nil {
		return err
	}
	o.Step = step
	return nil
}

// Succeed ends a running operation successfully.
func (o *Operation) Succeed(now time.Time) error {
	if err := o.transition(OperationMachine, StateSucceeded, now); err != nil {
		return err
	}
	o.Error = nil
	return nil
}

// Fail ends an operation with a failure: why.Code and why.Message are
// what the tenant reads, why.Cause the internal cause only operators see.
func (o *Operation) Fail(why Info, now time.Time) error {
	if err := o.transition(OperationMachine, StateFailed, now); err != nil {
		return err
	}
	o.Error = &why
	return nil
}

// Finish ends an operation: failed with why, or succeeded when why is nil.
func (o *Operation) Finish(why *Info, now time.Time) error {
	if why != nil {
		return o.Fail(*why, now)
	}
	return o.Succeed(now)
}

// NextBackup returns the backup operation of svc to report to a backup
// request: the live one among live (backups of a service do not queue
// up), or a new one (created true) the caller stores.
func NextBackup(svc *Service, live []*Operation, now time.Time) (op *Operation, created bool) {
	for _, o := range live {
		if o.Type == OpServiceBackup && o.TargetID == svc.ID && o.Live() {
			return o, false
		}
	}
	return NewOperation(svc.ProjectID, OpServiceBackup, svc.ID, now), true
}

// ---- services ----

// BeginMigration marks a service migrating under operation opID (an
// attach or a detach).
func (s *Service) BeginMigration(opID string, now time.Time) error {
	if err := s.transition(ServiceMachine, StateMigrating, now); err != nil {
		return err
	}
	s.OperationID = opID
	return nil
}

// EndOperation releases the service from operation opID when it is the
// service's (a migrating service runs again) and reports whether the
// service changed.
func (s *Service) EndOperation(opID string, now time.Time) bool {
	if s.OperationID != opID || opID == "" {
		return false
	}
	s.OperationID, s.UpdatedAt = "", now
	if s.State == StateMigrating {
		_ = s.transition(ServiceMachine, StateRunning, now) // migrating → running is always legal
	}
	return true
}

// BeginDelete starts a service's deletion; it reports false (and does
// nothing) when the service is being deleted or gone already.
func (s *Service) BeginDelete(now time.Time) (bool, error) {
	if Going(s.State) {
		return false, nil
	}
	return true, s.transition(ServiceMachine, StateDeleting, now)
}

// MarkDeleted ends a deleting service: its admin verifier and its backup
// key are destroyed with it.
func (s *Service) MarkDeleted(now time.Time) error {
	if err := s.transition(ServiceMachine, StateDeleted, now); err != nil {
		return err
	}
	s.AdminVerifier, s.BackupKeySealed = "", nil
	return nil
}

// Fail marks the service failed with why (a failed restore).
func (s *Service) Fail(why Info, now time.Time) error {
	if err := s.transition(ServiceMachine, StateFailed, now); err != nil {
		return err
	}
	s.StateInfo = &why
	return nil
}

// RecordBackup notes a base backup that ended at end; it reports whether
// it is the newest (the schedule counts from it).
func (s *Service) RecordBackup(end, now time.Time) bool {
	if !end.After(s.LastBackupAt) {
		return false
	}
	s.LastBackupAt, s.UpdatedAt = end.UTC(), now
	return true
}

// Rollup derives the service's applied allowlist revision (the lowest
// its live nodes enforce) and its running state (a creating service runs
// once all its nodes do; a running one with a failed node is degraded,
// naming the node, until all run again) from its nodes. changed says the
// service must be stored; published that its state changed in a way DNS
// follows (the revision is bumped).
func (s *Service) Rollup(nodes []*Node, now time.Time) (changed, published bool) {
	applied := int64(-1)
	running := 0
	var failed *Node
	for _, n := range nodes {
		if n.ServiceID != s.ID || Going(n.State) {
			continue
		}
		switch n.State {
		case StateRunning:
			running++
		case StateFailed:
			if failed == nil {
				failed = n
			}
		}
		if applied < 0 || n.AppliedAllowlistRevision < applied {
			applied = n.AppliedAllowlistRevision
		}
	}
	if applied >= 0 && applied != s.AppliedAllowlistRevision {
		s.AppliedAllowlistRevision, changed = applied, true
	}
	switch {
	case s.State == StateCreating && running == s.NodeCount:
		if s.transition(ServiceMachine, StateRunning, now) == nil {
			changed, published = true, true
		}
	case s.State == StateRunning && failed != nil:
		if s.transition(ServiceMachine, StateDegraded, now) == nil {
			s.StateInfo = degradedInfo(failed)
			changed, published = true, true
		}
	case s.State == StateDegraded && failed == nil && running == s.NodeCount && s.healthy() && s.OperationID == "":
		if s.transition(ServiceMachine, StateRunning, now) == nil {
			s.StateInfo = nil
			changed, published = true, true
		}
	}
	if changed {
		s.UpdatedAt = now
	}
	return changed, published
}

// CodeNodeDegraded is the state info code of a degraded service.
const CodeNodeDegraded = "node_failed"

// degradedInfo says which node failed and why (its public message; the
// agent's text stays the internal cause).
func degradedInfo(n *Node) *Info {
	msg, cause := "the node failed", ""
	if n.StateInfo != nil {
		msg, cause = n.StateInfo.Message, n.StateInfo.Cause
	}
	return &Info{Code: CodeNodeDegraded, Message: fmt.Sprintf("node %s failed: %s", n.ID, msg), Cause: cause}
}

// ---- nodes ----

// BeginDelete starts a node's deletion (its agent stops and wipes it); it
// reports false when the node is being deleted or gone already.
func (n *Node) BeginDelete(now time.Time) (bool, error) {
	if Going(n.State) {
		return false, nil
	}
	return true, n.transition(NodeMachine, StateDeleting, now)
}

// Wiped reports whether the node's agent reported it stopped and its data
// wiped (so its machine may go).
func (n *Node) Wiped() bool { return n.StateInfo != nil && n.StateInfo.Code == CodeWiped }

// MarkDeleted ends a deleting node; its sealed keys are destroyed.
func (n *Node) MarkDeleted(now time.Time) error {
	if err := n.transition(NodeMachine, StateDeleted, now); err != nil {
		return err
	}
	n.KeySealed, n.ReplKeySealed = nil, nil
	return nil
}

// ---- VPCs and peerings ----

// Transition moves a VPC to state to with info (nil clears it).
func (v *VPC) Transition(to string, info *Info, now time.Time) error {
	if err := v.transition(VPCMachine, to, now); err != nil {
		return err
	}
	v.StateInfo = info
	return nil
}

// BeginDelete starts a VPC's deletion; false when it is going already.
func (v *VPC) BeginDelete(now time.Time) (bool, error) {
	if Going(v.State) {
		return false, nil
	}
	return true, v.transition(VPCMachine, StateDeleting, now)
}

// Transition moves a peering to state to with info (nil clears it).
func (p *Peering) Transition(to string, info *Info, now time.Time) error {
	if err := p.transition(PeeringMachine, to, now); err != nil {
		return err
	}
	p.StateInfo = info
	return nil
}

// BeginDelete starts a peering's deletion; false when it is going already.
func (p *Peering) BeginDelete(now time.Time) (bool, error) {
	if Going(p.State) {
		return false, nil
	}
	return true, p.transition(PeeringMachine, StateDeleting, now)
}

// DesiredState is the state a host is asked to bring node n to: a node of
// a service being deleted is wiped with it, whatever its own state.
func (n *Node) DesiredState(svc *Service) string {
	if svc.State == StateDeleting {
		return StateDeleting
	}
	return n.State
}

// ---- primary role and replication ----

// IsPrimary reports whether n holds s's primary role: PrimaryID, or on a
// service that never moved it, the index-0 node.
func (s *Service) IsPrimary(n *Node) bool {
	if s.PrimaryID != "" {
		return n.ID == s.PrimaryID
	}
	return n.Index == 0
}

// PrimaryNode returns the node of nodes holding s's primary role that is
// not being deleted, nil if none.
func (s *Service) PrimaryNode(nodes []*Node) *Node {
	for _, n := range nodes {
		if n.ServiceID == s.ID && !Going(n.State) && s.IsPrimary(n) {
			return n
		}
	}
	return nil
}

// MovePrimary gives s's primary role (and its DNS name) to node id, a
// failover's repoint step; it reports whether it changed.
func (s *Service) MovePrimary(id string, now time.Time) bool {
	if s.PrimaryID == id {
		return false
	}
	s.PrimaryID, s.UpdatedAt = id, now
	return true
}

// BeginFailover records the failover operation opID as s's operation
// (planned changes are refused meanwhile) and marks a running service
// degraded with why. A service under another operation refuses (409).
func (s *Service) BeginFailover(opID string, why Info, now time.Time) error {
	if s.OperationID != "" && s.OperationID != opID {
		return Conflictf(CodeOperationInProgress, "", "wait for operation "+s.OperationID+" to finish", "service %s has an operation in progress", s.ID)
	}
	s.OperationID, s.UpdatedAt = opID, now
	if s.State == StateRunning {
		if err := s.transition(ServiceMachine, StateDegraded, now); err != nil {
			return err
		}
		s.StateInfo = &why
	}
	return nil
}

// ApplyReplication records the replication setting and the health the
// reconciler derived for s from its nodes (SyncStandbyNames, Health),
// and rolls the service's state up again: a running service whose health
// is not healthy (a lost node, a failover, replication weaker than its
// node count promises because a replica is lost) is degraded with the
// first condition as its reason; it runs again once healthy with every
// node running. changed: s must be stored; bump: its primary's desired
// state or its DNS changed (the revision is bumped).
func (s *Service) ApplyReplication(sync SyncSetting, h ServiceHealth, nodes []*Node, now time.Time) (changed, bump bool) {
	if s.Replication == nil || s.Replication.StandbyNames != sync.StandbyNames {
		bump = true
	}
	if s.Replication == nil || !sameSync(*s.Replication, sync) {
		c := sync
		s.Replication, changed = &c, true
	}
	if s.Health == nil || s.Health.Status != h.Status || !slices.Equal(s.Health.Conditions, h.Conditions) {
		c := h
		c.Conditions = slices.Clone(h.Conditions)
		s.Health, changed = &c, true
	}
	if why := degrading(h); s.State == StateRunning && why != nil {
		if s.transition(ServiceMachine, StateDegraded, now) == nil {
			s.StateInfo = why
			changed, bump = true, true
		}
	}
	if c, p := s.Rollup(nodes, now); c {
		changed, bump = true, bump || p
	}
	if changed {
		s.UpdatedAt = now
	}
	return changed, bump
}

// sameSync compares two settings, their conditions by value.
func sameSync(a, b SyncSetting) bool {
	if a.StandbyNames != b.StandbyNames || a.Mode != b.Mode || (a.Condition == nil) != (b.Condition == nil) {
		return false
	}
	return a.Condition == nil || *a.Condition == *b.Condition
}

// degrading is the first condition of h that degrades a running
// service: any but a replica still catching up (shown, not degrading).
func degrading(h ServiceHealth) *Info {
	for _, c := range h.Conditions {
		if c.Code != CodeReplicaCatchingUp {
			return &c
		}
	}
	return nil
}

// healthy reports whether s's last derived health has no degrading
// condition (or was never derived).
func (s *Service) healthy() bool { return s.Health == nil || degrading(*s.Health) == nil }
