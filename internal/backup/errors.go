package backup

import "errors"

// Sentinel errors returned (wrapped) by readers. Callers branch on them with
// errors.Is.
var (
	// ErrFormat means the input is not a backup file this package knows, or
	// its header is malformed.
	ErrFormat = errors.New("backup: unknown or malformed format")
	// ErrWrongKey means the file was encrypted to a different key than the
	// one supplied, or its wrapped key cannot be unwrapped with it.
	ErrWrongKey = errors.New("backup: wrong key")
	// ErrAuth means a MAC did not verify: the file was modified, or data
	// from elsewhere was spliced into it.
	ErrAuth = errors.New("backup: authentication failed")
	// ErrTruncated means the input ended before the format says it may.
	ErrTruncated = errors.New("backup: truncated")
)
