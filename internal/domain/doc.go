// Package domain is Moat's pure object model: the types of the API's domain
// (projects, tokens, regions, VPCs, peering connections, services, nodes,
// operations), their validation, state machines and quotas, and the CIDR
// rules that relate them.
//
// It performs no I/O (no files, sockets, databases or clocks it reads by
// itself; callers pass the time in) and may be imported by every other
// package. A test enforces its import list.
package domain
