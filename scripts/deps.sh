#!/usr/bin/env bash
# deps.sh: check for, and as root install, what Moat's tests and `moat up`
# need on a Debian machine: Go, and the Debian packages listed in
# internal/up/packages.txt (the list `moat up` installs its own subset of).
# It installs one package at a time with a line for each, does nothing but
# check when all are present, and exits non-zero with a clear message when
# something is missing and cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

if ! have go; then
  if [ -x /usr/local/go/bin/go ]; then
    echo "deps: go is at /usr/local/go/bin/go but not on PATH; add it: export PATH=\$PATH:/usr/local/go/bin" >&2
  else
    echo "deps: Go 1.26 or newer is required (https://go.dev/dl/)" >&2
  fi
  exit 1
fi

pg_bindir() {
  local d=""
  if [ -n "${MOAT_PG_BINDIR:-}" ]; then echo "$MOAT_PG_BINDIR"; return; fi
  if have pg_config; then d=$(pg_config --bindir); fi
  # Debian's pg_config may belong to the client; look for the server too.
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; else echo /usr/lib/postgresql/15/bin; fi
}

need_pkgs=()
while read -r pkg provides _; do
  case "$pkg" in ''|'#'*) continue ;; esac
  if [ "$provides" = initdb ]; then
    [ -x "$(pg_bindir)/initdb" ] || need_pkgs+=("$pkg")
  else
    have "$provides" || need_pkgs+=("$pkg")
  fi
done < internal/up/packages.txt

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! have apt-get; then
    echo "deps: missing Debian packages: ${need_pkgs[*]}" >&2
    echo "deps: install them as root: apt-get install -y ${need_pkgs[*]}" >&2
    exit 1
  fi
  echo "deps: installing ${#need_pkgs[@]} package(s): ${need_pkgs[*]}"
  # apt runs quietly; its output is shown only when it fails.
  apt() {
    local out
    if ! out=$(DEBIAN_FRONTEND=noninteractive apt-get "$@" 2>&1); then
      echo "$out" | tail -20 >&2
      echo "deps: apt-get $* failed" >&2
      exit 1
    fi
  }
  echo "deps:   apt-get update"
  apt update -qq
  i=0
  for p in "${need_pkgs[@]}"; do
    i=$((i + 1))
    echo "deps:   [$i/${#need_pkgs[@]}] $p"
    apt install -y -qq --no-install-recommends "$p"
  done
fi
if ! id postgres >/dev/null 2>&1; then
  echo "deps: the postgres system user is missing (the postgresql-15 package creates it)" >&2
  exit 1
fi
# terraform is no Debian package: say how to get it. Without it the
# Terraform provider's acceptance tests skip locally and fail under CI=true.
if ! have terraform; then
  echo "deps: note: terraform is not on PATH; internal/terraform's acceptance tests need it (and fail without it when CI=true):" >&2
  echo "deps:   install it from https://developer.hashicorp.com/terraform/install (a single binary on PATH)" >&2
fi
echo "deps: ok (PostgreSQL binaries in $(pg_bindir))"
