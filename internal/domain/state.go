package domain

import (
	"slices"
	"strings"
)

// Object states. Each kind's legal moves are its Machine below.
const (
	StateCreating          = "creating"
	StateActive            = "active"
	StateDeleting          = "deleting"
	StateDeleted           = "deleted"
	StateFailed            = "failed"
	StateProvisioning      = "provisioning"
	StatePendingAcceptance = "pending-acceptance"
	StateRejected          = "rejected"
	StateExpired           = "expired"
	StateRunning           = "running"
	StateMigrating         = "migrating"
	// StateDegraded is a service one of whose nodes failed: it serves
	// from the others, and its allowlist is not enforced everywhere.
	StateDegraded  = "degraded"
	StatePending   = "pending"
	StateSucceeded = "succeeded"
)

// Machine is a state machine as an explicit transition table: the states
// each state may move to. A state absent from the table is terminal.
type Machine struct {
	Name    string
	Initial string
	Next    map[string][]string
}

// Can reports whether from → to is a legal transition.
func (m Machine) Can(from, to string) bool { return slices.Contains(m.Next[from], to) }

// Terminal reports whether s has no way out.
func (m Machine) Terminal(s string) bool { return len(m.Next[s]) == 0 }

// Move checks from → to and returns a Conflict error naming the legal
// moves when it is not allowed.
func (m Machine) Move(from, to string) error {
	if m.Can(from, to) {
		return nil
	}
	hint := "the " + m.Name + " is " + from + " and cannot change"
	if next := m.Next[from]; len(next) > 0 {
		hint = "from " + from + " a " + m.Name + " may become " + strings.Join(next, ", ")
	}
	return Conflictf(CodeInvalidState, "state", hint, "a %s cannot go from %s to %s", m.Name, from, to)
}

// VPCMachine: creating → active → deleting → deleted; failed.
var VPCMachine = Machine{Name: "vpc", Initial: StateCreating, Next: map[string][]string{
	StateCreating: {StateActive, StateFailed, StateDeleting},
	StateActive:   {StateDeleting, StateFailed},
	StateFailed:   {StateDeleting},
	StateDeleting: {StateDeleted, StateFailed},
}}

// PeeringMachine follows AWS's VPC peering lifecycle.
var PeeringMachine = Machine{Name: "peering", Initial: StateProvisioning, Next: map[string][]string{
	StateProvisioning:      {StatePendingAcceptance, StateFailed, StateDeleting},
	StatePendingAcceptance: {StateActive, StateRejected, StateExpired, StateFailed, StateDeleting},
	StateActive:            {StateDeleting, StateFailed},
	StateFailed:            {StateDeleting},
	StateRejected:          {StateDeleting},
	StateExpired:           {StateDeleting},
	StateDeleting:          {StateDeleted},
}}

// ServiceMachine: creating → running ⇄ migrating, running ⇄ degraded (a
// node failed); → deleting → deleted.
var ServiceMachine = Machine{Name: "service", Initial: StateCreating, Next: map[string][]string{
	StateCreating:  {StateRunning, StateFailed, StateDeleting},
	StateRunning:   {StateMigrating, StateDeleting, StateFailed, StateDegraded},
	StateMigrating: {StateRunning, StateFailed, StateDeleting},
	StateDegraded:  {StateRunning, StateDeleting, StateFailed},
	StateFailed:    {StateRunning, StateDeleting},
	StateDeleting:  {StateDeleted},
}}

// Serving reports whether a service in state s serves connections (from
// all its nodes, or, degraded, from those that run).
func Serving(s string) bool {
	return s == StateRunning || s == StateMigrating || s == StateDegraded
}

// NodeMachine: creating → running → deleting → deleted.
var NodeMachine = Machine{Name: "node", Initial: StateCreating, Next: map[string][]string{
	StateCreating: {StateRunning, StateFailed, StateDeleting},
	StateRunning:  {StateFailed, StateDeleting},
	StateFailed:   {StateRunning, StateDeleting},
	StateDeleting: {StateDeleted},
}}

// LiveOperationStates are the states of an operation still under way (a
// store query for them skips the finished history).
var LiveOperationStates = []string{StatePending, StateRunning}

// OperationMachine: pending → running → succeeded | failed.
var OperationMachine = Machine{Name: "operation", Initial: StatePending, Next: map[string][]string{
	StatePending: {StateRunning, StateFailed},
	StateRunning: {StateSucceeded, StateFailed},
}}

// LivePeering reports whether a peering in state s still claims its CIDRs
// and blocks its VPC's deletion.
func LivePeering(s string) bool {
	switch s {
	case StateProvisioning, StatePendingAcceptance, StateActive, StateDeleting:
		return true
	}
	return false
}

// Gone reports whether an object in state s is deleted.
func Gone(s string) bool { return s == StateDeleted }
