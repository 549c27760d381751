package domain

import (
	"errors"
	"fmt"
	"strings"
)

// Kind classifies an Error for the caller (the API maps it to an HTTP status).
type Kind int

const (
	// Invalid is bad input: the request cannot succeed as written (400).
	Invalid Kind = iota + 1
	// Conflict is input that is well-formed but clashes with current state
	// (409): an overlap, a duplicate, a quota, a state that forbids the change.
	Conflict
	// NotFound names an object that does not exist or is not visible (404).
	NotFound
	// Precondition is a stale revision in If-Match (412).
	Precondition
	// Forbidden is an authenticated caller whose role may not do this (403).
	Forbidden
)

// Error is a domain error with a stable machine-readable Code, the Field it
// is about (JSON name, dotted for nesting, empty when it concerns the whole
// object), a human message and a hint saying how to fix it.
type Error struct {
	Kind  Kind
	Code  string
	Field string
	Msg   string
	Hint  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Hint != "" {
		b.WriteString(" (hint: ")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// Invalidf returns an Invalid error about field.
func Invalidf(code, field, hint, format string, args ...any) *Error {
	return &Error{Kind: Invalid, Code: code, Field: field, Hint: hint, Msg: fmt.Sprintf(format, args...)}
}

// Conflictf returns a Conflict error.
func Conflictf(code, field, hint, format string, args ...any) *Error {
	return &Error{Kind: Conflict, Code: code, Field: field, Hint: hint, Msg: fmt.Sprintf(format, args...)}
}

// AsError returns the *Error in err's chain, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// Stable error codes. Clients branch on these; never rename one.
const (
	CodeInvalidCIDR         = "invalid_cidr"
	CodeNonCanonicalCIDR    = "non_canonical_cidr"
	CodeCIDRNotPrivate      = "cidr_not_private"
	CodeCIDRPrefixLength    = "cidr_prefix_length"
	CodeCIDRFamily          = "cidr_family"
	CodeCIDROverlap         = "cidr_overlap"
	CodeInvalidName         = "invalid_name"
	CodeInvalidRegion       = "invalid_region"
	CodeUnsupportedRegion   = "unsupported_region"
	CodeInvalidAccountID    = "invalid_account_id"
	CodeInvalidPeerVPCID    = "invalid_peer_vpc_id"
	CodeInvalidNodes        = "invalid_nodes"
	CodeInvalidRole         = "invalid_role"
	CodeInvalidDescription  = "invalid_description"
	CodeTooManyEntries      = "too_many_entries"
	CodeDuplicateEntry      = "duplicate_entry"
	CodeEmptyAllowlist      = "empty_allowlist_unconfirmed"
	CodeRequired            = "required"
	CodeInvalidQuota        = "invalid_quota"
	CodeQuotaExceeded       = "quota_exceeded"
	CodeDuplicatePeering    = "duplicate_peering"
	CodeInUse               = "in_use"
	CodeInvalidState        = "invalid_state"
	CodeRegionMismatch      = "region_mismatch"
	CodeNotFound            = "not_found"
	CodeStaleRevision       = "stale_revision"
	CodeInvalidID           = "invalid_id"
	CodeLimitExceeded       = "limit_exceeded"
	CodeAlreadyAttached     = "already_attached"
	CodeNotAttached         = "not_attached"
	CodeOperationInProgress = "operation_in_progress"
)
