#!/usr/bin/env bash
# The floor of NATS features Molt uses: the spine scenario on Debian's nats-server 2.9.10
# (MOLT_ALLOW_OLD_NATS=1). The package is downloaded with apt and unpacked into .tools/nats-debian/
# (never installed system-wide, so no service starts); check.sh runs this as its own stage.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dir="$root/.tools/nats-debian"
bin="$dir/usr/sbin/nats-server"
if [ ! -x "$bin" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "smoke-old-nats: no apt-get here, so no Debian nats-server to try; skipped" >&2
    exit 0
  fi
  tmp="$(mktemp -d)"
  chmod 777 "$tmp" # apt's download user writes here
  (cd "$tmp" && { apt-get download -qq nats-server 2>/dev/null || { apt-get update -qq && apt-get download -qq nats-server; }; })
  mkdir -p "$dir"
  dpkg-deb -x "$tmp"/nats-server_*.deb "$dir"
  rm -rf "$tmp"
fi
echo "smoke-old-nats: $("$bin" --version)"
export MOLT_NATS_SERVER="$bin" MOLT_ALLOW_OLD_NATS=1
exec pnpm -s vitest run --project scenario test/spine "$@"
