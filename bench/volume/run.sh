#!/usr/bin/env bash
# The encrypted volume against its references, pgbench included (root); see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
go run ./bench/volume -runs 3 -pgruns 5
