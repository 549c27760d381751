#!/usr/bin/env bash
# Failover unavailability as a writer sees it (root); see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench FailoverUnavailability -benchtime=1x -count=1 -timeout 30m ./internal/e2e
