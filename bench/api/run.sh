#!/usr/bin/env bash
# API latency on SQLite and PostgreSQL, 16 concurrent clients; see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench . -benchtime=1x -count=1 ./bench/api
