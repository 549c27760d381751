package domain

import "time"

// Audit outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeDenied  = "denied"  // refused by authentication or authorization
	OutcomeInvalid = "invalid" // refused as bad input or conflicting state
	OutcomeError   = "error"   // failed inside the platform
)

// AuditEntry is one row of the append-only audit log. Seq, PrevHash and
// Hash are assigned when it is appended (see package audit).
type AuditEntry struct {
	Seq       int64     `json:"seq"`
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor"`
	ProjectID string    `json:"project_id,omitempty"`
	Action    string    `json:"action"`
	Target    string    `json:"target,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	Source    string    `json:"source,omitempty"`
	Outcome   string    `json:"outcome"`
	Detail    string    `json:"detail,omitempty"`
	PrevHash  string    `json:"prev_hash"`
	Hash      string    `json:"hash"`
}

// AuditCheckpoint is a signature over the chain head at Seq.
type AuditCheckpoint struct {
	Seq       int64     `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	KeyID     string    `json:"key_id"`
	Signature string    `json:"signature"`
}
