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

stage bootstrap bash scripts/bootstrap.sh --tests
stage postgres pg_stage
stage typecheck pnpm -s typecheck --output-logs=errors-only
stage lint pnpm -s lint
stage unit pnpm -s vitest run --project unit --reporter=default --reporter=json --outputFile.json="$reports/unit.json"
# The other supported Node lines (22 and 24 LTS) run the unit tests too when MOLT_NODE_MATRIX is set:
# `1` splits the files between them (vitest --shard), `full` runs all of them on each. Off by default:
# with it CI went over its 20 minutes (each leg ~110-220 s on 2 cores).
node_matrix() {
  local bins; mapfile -t bins < <(bash scripts/node-matrix.sh)
  local i=0 bin major shard
  for bin in "${bins[@]}"; do
    i=$((i + 1)); major="$(basename "$(dirname "$bin")")"
    shard=(); [ "${MOLT_NODE_MATRIX:-1}" = "full" ] || shard=(--shard="$i/${#bins[@]}")
    stage "unit-node$major" env PATH="$bin:$PATH" pnpm -s vitest run --project unit "${shard[@]}" --reporter=default --reporter=json --outputFile.json="$reports/unit-node$major.json"
  done
}
if [ "${MOLT_NODE_MATRIX:-0}" != "0" ]; then node_matrix; fi
stage scenario pnpm -s vitest run --project scenario --reporter=default --reporter=json --outputFile.json="$reports/scenario.json"
# The spine once more on Debian's nats-server 2.9.10: the oldest server whose features Molt may use.
stage old-nats bash scripts/smoke-old-nats.sh --reporter=default --reporter=json --outputFile.json="$reports/old-nats.json"
