// Package backupbench holds the throughput benchmarks of package
// internal/backup, measured against HMAC-SHA256 alone over the same bytes
// (the format's unavoidable cost). It has no non-test code; nothing
// imports it. Results and the command to rerun are in README.md.
package backupbench
