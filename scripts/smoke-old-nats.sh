#!/usr/bin/env bash
# The floor of NATS features Molt uses: the spine scenario, and the bus's confinement of hosts (a
# host's permissions come from a scoped key's template, which 2.9 fills in differently), on Debian's nats-server 2.9.10
# (MOLT_ALLOW_OLD_NATS=1). The package is downloaded with apt and unpacked into .tools/nats-debian/
# (never installed system-wide, so no service starts); check.sh runs this as its own stage.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
status=0
bin="$(bash scripts/debian-unpack.sh nats-server nats-debian usr/sbin/nats-server)" || status=$?
if [ "$status" -eq 3 ]; then
  echo "smoke-old-nats: no apt-get here, so no Debian nats-server to try; skipped" >&2
  exit 0
fi
[ "$status" -eq 0 ] || exit "$status"
echo "smoke-old-nats: $("$bin" --version)"
export MOLT_NATS_SERVER="$bin" MOLT_ALLOW_OLD_NATS=1
exec pnpm -s vitest run --project scenario test/spine test/security/bus.test.ts test/security/host-signing-key.test.ts "$@"
