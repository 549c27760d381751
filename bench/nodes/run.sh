#!/usr/bin/env bash
# Service-node benchmarks on a whole local stack (root); see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench . -benchtime=1x -count=1 -timeout 10m ./bench/nodes
