#!/usr/bin/env bash
# Firewall apply against nft -f of the same ruleset (root); see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
go run ./bench/nft -runs 5
