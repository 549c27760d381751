package apitype

import "time"

// HostCreate registers a host (operator): where it is and how many nodes
// it may run (0: the default).
type HostCreate struct {
	Name     string `json:"name"`
	Region   string `json:"region"`
	AZ       string `json:"az"`
	Capacity int    `json:"capacity,omitempty"`
}

// HostUpdate changes a host (operator): its capacity, in nodes.
type HostUpdate struct {
	Capacity int `json:"capacity"`
}

// Host is an agent host as operators see it.
type Host struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Region    string     `json:"region"`
	AZ        string     `json:"az"`
	Capacity  int        `json:"capacity"`
	State     string     `json:"state"`
	StateInfo *StateInfo `json:"state_info,omitempty"`
	// Cordoned: drained by an operator (it takes no new node, even when it
	// comes back from down).
	Cordoned        bool      `json:"cordoned,omitempty"`
	LastHeartbeatAt time.Time `json:"last_heartbeat_at,omitzero"`
	AgentVersion    string    `json:"agent_version,omitempty"`
	// Load is the number of live nodes on the host.
	Load int `json:"load"`
	// Nodes are the live nodes on the host (on get; not on list).
	Nodes     []HostNode `json:"nodes,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
}

// HostCreated answers a host's registration: the host and the agent token
// bound to it, its secret shown once.
type HostCreated struct {
	Host       Host  `json:"host"`
	AgentToken Token `json:"agent_token"`
}

// HostNode is a node as its host's listing shows it.
type HostNode struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	ServiceID string `json:"service_id"`
	Role      string `json:"role"`
	State     string `json:"state"`
	// Volume is the node's encrypted volume on this host.
	Volume *NodeVolume `json:"volume,omitempty"`
}
