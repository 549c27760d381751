#!/usr/bin/env bash
# Backup format throughput against HMAC-SHA256 alone; see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench 'Ratio|Unwrap' -benchtime 1x -count=1 ./bench/backup/
