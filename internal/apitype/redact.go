package apitype

import (
	"fmt"
	"log/slog"
)

// Key material on the agent wire (NodeTLS's private keys, NodeRestore's
// backup private key) marshals to JSON as is, since the agent needs it,
// but prints and logs as Redacted: every type that holds some, and every
// type that holds one of those, formats (fmt, every verb) and logs (slog,
// any handler) as a copy with the keys replaced. Its fields stay plain
// strings so the wire format and the agent's code do not change.

// Redacted replaces key material in what is printed or logged.
const Redacted = "REDACTED"

func redact(s string) string {
	if s == "" {
		return ""
	}
	return Redacted
}

// Redacted returns t with its private keys replaced.
func (t NodeTLS) Redacted() NodeTLS {
	t.KeyPEM, t.ReplKeyPEM = redact(t.KeyPEM), redact(t.ReplKeyPEM)
	return t
}

// Redacted returns a copy of r with its private key replaced.
func (r *NodeRestore) Redacted() *NodeRestore {
	if r == nil {
		return nil
	}
	c := *r
	c.PrivateKeyPEM = redact(c.PrivateKeyPEM)
	return &c
}

// Redacted returns n with its key material replaced.
func (n NodeDesired) Redacted() NodeDesired {
	n.TLS = n.TLS.Redacted()
	n.Restore = n.Restore.Redacted()
	if n.Ops != nil && n.Ops.Support != nil {
		o, sup := *n.Ops, *n.Ops.Support
		sup.Password = redact(sup.Password)
		o.Support = &sup
		n.Ops = &o
	}
	return n
}

// Redacted returns a copy of d with every node's key material replaced.
func (d HostDesired) Redacted() HostDesired {
	if d.Nodes != nil {
		nodes := make([]NodeDesired, len(d.Nodes))
		for i, n := range d.Nodes {
			nodes[i] = n.Redacted()
		}
		d.Nodes = nodes
	}
	return d
}

// Method-free copies of the types, for printing their redacted values
// without recursing into the methods below. Their fields are the same, so
// nested values still print (and redact) through their own types.
type (
	plainNodeTLS     NodeTLS
	plainNodeRestore NodeRestore
	plainNodeDesired NodeDesired
	plainHostDesired HostDesired
)

// Format prints t with its private keys redacted, for every verb.
func (t NodeTLS) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), plainNodeTLS(t.Redacted()))
}

// String prints t redacted.
func (t NodeTLS) String() string { return fmt.Sprint(t) }

// LogValue logs t redacted.
func (t NodeTLS) LogValue() slog.Value { return slog.AnyValue(plainNodeTLS(t.Redacted())) }

// Format prints r with its private key redacted, for every verb.
func (r NodeRestore) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), plainNodeRestore(*r.Redacted()))
}

// String prints r redacted.
func (r NodeRestore) String() string { return fmt.Sprint(r) }

// LogValue logs r redacted.
func (r NodeRestore) LogValue() slog.Value { return slog.AnyValue(plainNodeRestore(*r.Redacted())) }

// Format prints n with its key material redacted, for every verb.
func (n NodeDesired) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), plainNodeDesired(n.Redacted()))
}

// String prints n redacted.
func (n NodeDesired) String() string { return fmt.Sprint(n) }

// LogValue logs n redacted.
func (n NodeDesired) LogValue() slog.Value { return slog.AnyValue(plainNodeDesired(n.Redacted())) }

// Format prints d with its key material redacted, for every verb.
func (d HostDesired) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), plainHostDesired(d.Redacted()))
}

// String prints d redacted.
func (d HostDesired) String() string { return fmt.Sprint(d) }

// LogValue logs d redacted.
func (d HostDesired) LogValue() slog.Value { return slog.AnyValue(plainHostDesired(d.Redacted())) }
