#!/usr/bin/env bash
# Attach/detach unavailability as a client sees it (root); see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench AttachUnavailability -benchtime=1x -count=1 -timeout 10m ./internal/e2e
