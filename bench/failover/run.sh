#!/usr/bin/env bash
# Failover unavailability as a writer sees it (root); see README.md.
# MOAT_BENCH picks the benchmark (default HostFailover: the primary's host
# failed; FailoverUnavailability: its PostgreSQL killed, and requested
# failovers; Switchover: planned switchovers by draining the primary's
# host); MOAT_BENCH_ROUNDS the rounds (default 10).
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench "${MOAT_BENCH:-HostFailover}" -benchtime=1x -count=1 -timeout 30m ./internal/e2e
