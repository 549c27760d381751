#!/usr/bin/env bash
# deps.sh: check for, and as root install, what Moat's tests and `moat up`
# need on a Debian machine: Go, PostgreSQL 15 server binaries, iproute2,
# nftables, openssl and socat. It prints what it installs and exits non-zero
# with a clear message when something is missing and cannot be installed.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }

if ! have go; then
  if [ -x /usr/local/go/bin/go ]; then
    echo "deps: go is at /usr/local/go/bin/go but not on PATH; add it: export PATH=\$PATH:/usr/local/go/bin" >&2
  else
    echo "deps: Go 1.26 or newer is required (https://go.dev/dl/)" >&2
  fi
  exit 1
fi

pg_bindir=""
if have pg_config; then pg_bindir=$(pg_config --bindir); fi
if [ -z "$pg_bindir" ] || [ ! -x "$pg_bindir/initdb" ]; then
  # Debian's pg_config may belong to the client; look for the server too.
  if [ -x /usr/lib/postgresql/15/bin/initdb ]; then pg_bindir=/usr/lib/postgresql/15/bin; else need_pkgs+=(postgresql-15); fi
fi
have ip || need_pkgs+=(iproute2)
have nft || need_pkgs+=(nftables)
have openssl || need_pkgs+=(openssl)
have socat || need_pkgs+=(socat)
have psql || need_pkgs+=(postgresql-client-15)
have pgbench || need_pkgs+=(postgresql-contrib)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! have apt-get; then
    echo "deps: missing Debian packages: ${need_pkgs[*]}" >&2
    echo "deps: install them as root: apt-get install -y ${need_pkgs[*]}" >&2
    exit 1
  fi
  echo "deps: installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
if ! id postgres >/dev/null 2>&1; then
  echo "deps: the postgres system user is missing (the postgresql-15 package creates it)" >&2
  exit 1
fi
echo "deps: ok (PostgreSQL binaries in ${pg_bindir:-/usr/lib/postgresql/15/bin})"
