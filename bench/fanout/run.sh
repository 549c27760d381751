#!/usr/bin/env bash
# Fan-out of one allowlist change to 1,000 long-polling hosts against 10,
# on SQLite and PostgreSQL; see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench . -benchtime=1x -count=1 -timeout 20m ./bench/fanout
