package secret

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// Redacted is what a Value prints as.
const Redacted = "REDACTED"

// Value is a secret string: a password, a token, a private key in PEM. It
// prints, logs and marshals to JSON or text as REDACTED; only Reveal returns
// the secret. The zero Value is the empty secret.
//
// The string is held behind a pointer so that even fmt's reflection over a
// struct with an unexported Value field (which cannot call its methods)
// prints an address, not the secret.
type Value struct {
	p *string
}

// New returns a Value holding s.
func New(s string) Value { return Value{p: &s} }

// Reveal returns the secret. Call it only where the secret is used (to
// authenticate, or in a response to a role entitled to it).
func (v Value) Reveal() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

// IsZero reports whether the secret is empty.
func (v Value) IsZero() bool { return v.Reveal() == "" }

// Equal reports whether v and w hold the same secret, in time independent of
// the contents (it does depend on the lengths).
func (v Value) Equal(w Value) bool {
	return subtle.ConstantTimeCompare([]byte(v.Reveal()), []byte(w.Reveal())) == 1
}

// String returns REDACTED.
func (v Value) String() string { return Redacted }

// GoString returns REDACTED.
func (v Value) GoString() string { return Redacted }

// Format prints REDACTED for every verb (%v, %+v, %#v, %s, %q, %x, …).
func (v Value) Format(f fmt.State, verb rune) { fmt.Fprint(f, Redacted) }

// LogValue logs REDACTED.
func (v Value) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalText returns REDACTED, so that encoders (JSON, YAML, slog's
// handlers) never emit the secret by accident.
func (v Value) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
