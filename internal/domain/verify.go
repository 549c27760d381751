package domain

import "net/netip"

// ProbeNoTarget is a Probe's error when the service has no address to
// connect to, so nothing was sent.
const ProbeNoTarget = "the service has no address"

// Probe is what a real TCP connection from a source to the service's
// primary on ServicePort found. An answer is Reachable, a reset too (the
// path is open, nothing listens): every filter on the way drops, none
// rejects. Err says why a probe that got no answer failed.
type Probe struct {
	Reachable bool
	Err       string
}

// Check is one source's verdict from the model beside its probe: a row of
// moat verify. Agree is false when the two differ, which is a bug in the
// model or in the enforcement (or a change not applied yet).
type Check struct {
	// Host names the source (a simulated host).
	Host    string     `json:"host"`
	Address netip.Addr `json:"address"`
	Explain Verdict    `json:"explain"`
	// Reachable is the probe's outcome; ProbeError why it failed.
	Reachable  bool   `json:"reachable"`
	ProbeError string `json:"probe_error,omitempty"`
	Agree      bool   `json:"agree"`
}

// Compare sets c's probe and whether it agrees with c's verdict: a probe
// agrees when it connected exactly when Explain allowed.
func (c Check) Compare(p Probe) Check {
	c.Reachable, c.ProbeError = p.Reachable, p.Err
	c.Agree = p.Reachable == c.Explain.Allowed
	return c
}

// Target returns the address a source connects to for in's service (the
// first valid node address, the primary's), as Explain takes it; invalid
// when there is none, and then nothing can be probed.
func (in ExplainInput) Target() netip.Addr {
	for _, a := range in.NodeAddrs {
		if a.IsValid() {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// Disagreements returns the checks whose verdict and probe differ, in
// order; none when the model and the network agree.
func Disagreements(checks []Check) []Check {
	var bad []Check
	for _, c := range checks {
		if !c.Agree {
			bad = append(bad, c)
		}
	}
	return bad
}
