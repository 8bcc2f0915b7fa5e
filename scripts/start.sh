#!/usr/bin/env bash
# The first Quick start command: install what is missing, then start the whole system with a
# simulated fleet and a live rollout whose progress it prints until you press Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
cd "$root"
export PATH="$root/.tools/bin:$root/node_modules/.bin:$PATH"
export MOLT_NATS_SERVER="${MOLT_NATS_SERVER:-$root/.tools/bin/nats-server}"
exec node --import tsx scripts/demo.ts "$@"
