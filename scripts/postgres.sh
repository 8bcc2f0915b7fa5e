#!/usr/bin/env bash
# Makes a local PostgreSQL 15 available for the tests that run against a real server (besides
# PGlite): starts Debian's cluster with pg_ctlcluster (installing the package if there is none),
# creates a role and database for the tests, and prints the URL. Prints nothing and exits 1 when
# that cannot be done here (not root, no apt); callers then run the PGlite tests only.
set -euo pipefail
command -v pg_lsclusters >/dev/null 2>&1 || {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "postgres: installing Debian's postgresql" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
  else
    exit 1
  fi
}
cluster="$(pg_lsclusters --no-header 2>/dev/null | head -n1)"
if [ -z "$cluster" ]; then
  [ "$(id -u)" = 0 ] || exit 1
  pg_createcluster 15 main >&2
  cluster="$(pg_lsclusters --no-header | head -n1)"
fi
read -r ver name port status _ <<<"$cluster"
if [ "$status" != "online" ]; then pg_ctlcluster "$ver" "$name" start >&2; fi
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else eval "$1"; fi; }
as_pg "psql -p $port -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='molt_test'\"" | grep -q 1 ||
  as_pg "psql -p $port -qc \"CREATE ROLE molt_test LOGIN SUPERUSER PASSWORD 'molt_test'\"" >&2
as_pg "psql -p $port -qtAc \"SELECT 1 FROM pg_database WHERE datname='molt_test'\"" | grep -q 1 ||
  as_pg "psql -p $port -qc \"CREATE DATABASE molt_test OWNER molt_test\"" >&2
echo "postgres://molt_test:molt_test@127.0.0.1:$port/molt_test"
