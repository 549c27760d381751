#!/usr/bin/env bash
# Base backup and restore of a ~1 GiB pgbench database: Moat against
# pg_basebackup -Ft and pgBackRest (aes-256-cbc); see README.md.
# Run as root. Pass -scale N for a quicker, smaller run (default 70 ≈ 1 GiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
	echo "run.sh: run as root (PostgreSQL and pgBackRest run as the postgres user)" >&2
	exit 1
fi
go run ./bench/basebackup "$@"
