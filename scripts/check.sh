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
}
trap summary EXIT

stage bootstrap bash scripts/bootstrap.sh
stage typecheck pnpm -s typecheck --output-logs=errors-only
stage lint pnpm -s lint
stage unit pnpm -s vitest run --project unit
stage scenario pnpm -s vitest run --project scenario
