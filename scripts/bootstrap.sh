#!/usr/bin/env bash
# Installs what Molt needs into the project (never globally): pnpm, a pinned nats-server,
# and the workspace's node modules. Safe to run again; it only does what is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
NATS_VERSION="v2.12.15"
PNPM_VERSION="10.34.9"
mkdir -p "$tools/bin"

node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  echo "bootstrap: Node >= 20 is required (found $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

# pnpm, pinned, in the tools folder (corepack is unreliable here; a global install would hide a missing step).
if [ ! -x "$tools/pnpm/node_modules/.bin/pnpm" ]; then
  echo "bootstrap: installing pnpm@$PNPM_VERSION into .tools/pnpm"
  npm install --silent --no-fund --no-audit --prefix "$tools/pnpm" "pnpm@$PNPM_VERSION" >/dev/null
fi
# Relative, so the link holds wherever the tools folder is reached from (a symlink, a moved checkout).
ln -sfn ../pnpm/node_modules/.bin/pnpm "$tools/bin/pnpm"

# nats-server: the pinned release built with Go; else one on PATH; else Debian's package.
nats="$tools/bin/nats-server"
want="${NATS_VERSION#v}"
have_version() { "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p'; }
if [ ! -x "$nats" ] || [ "$(have_version "$nats")" != "$want" ]; then
  if command -v go >/dev/null 2>&1; then
    echo "bootstrap: building nats-server $NATS_VERSION with go install (first time only)"
    GOBIN="$tools/bin" GOFLAGS=-mod=mod go install "github.com/nats-io/nats-server/v2@$NATS_VERSION"
  elif command -v nats-server >/dev/null 2>&1; then
    ln -sf "$(command -v nats-server)" "$nats"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: no Go and no nats-server; installing Debian's nats-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
    ln -sf "$(command -v nats-server)" "$nats"
  else
    echo "bootstrap: need Go (to build nats-server $NATS_VERSION) or a nats-server on PATH" >&2
    exit 1
  fi
fi
got="$(have_version "$nats")"
echo "bootstrap: nats-server $got ($nats)"
if [ "$got" != "$want" ]; then
  older="$(printf '%s\n%s\n' "$got" "$want" | sort -V | head -n1)"
  if [ "$older" = "$got" ] && [ "${CI:-}" = "true" ] && [ "${MOLT_ALLOW_OLD_NATS:-}" != "1" ]; then
    echo "bootstrap: CI needs nats-server >= $want (found $got); set MOLT_ALLOW_OLD_NATS=1 to accept it" >&2
    exit 1
  fi
fi

# strace: the upgrade client's durability test reads the order of fsync and rename from it.
if ! command -v strace >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's strace"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null) || echo "bootstrap: strace could not be installed; its test is skipped" >&2
fi

# Debian's chromium: the dashboard's browser tests drive it with playwright-core (`--tests` only:
# the demo does not need it).
if [ "${1:-}" = "--tests" ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's chromium (for the dashboard's browser tests)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "bootstrap: chromium could not be installed; the browser tests will fail" >&2
fi

# Debian's tmux: the CLI's terminal test runs `molt watch` in it and reads the bars with capture-pane.
if [ "${1:-}" = "--tests" ] && ! command -v tmux >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's tmux (for the CLI's terminal test)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null) || echo "bootstrap: tmux could not be installed; the CLI's terminal test will fail" >&2
fi

# Debian's prometheus: its promtool checks every service's /metrics in the observability test (`--tests` only).
if [ "${1:-}" = "--tests" ] && ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's prometheus (for promtool)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) || echo "bootstrap: prometheus could not be installed; the metrics test will fail" >&2
fi

cd "$root"
export PATH="$tools/bin:$PATH"
if [ ! -d node_modules/.pnpm ] || [ pnpm-lock.yaml -nt node_modules/.modules.yaml ]; then
  echo "bootstrap: pnpm install"
  if [ "${CI:-}" = "true" ]; then pnpm install --frozen-lockfile --reporter=silent; else pnpm install --reporter=silent; fi
fi

# The dashboard the gateway serves: built from packages/dashboard/ui when its sources are newer.
dash="packages/dashboard"
if [ ! -f "$dash/dist/app.js" ] || [ -n "$(find "$dash/ui" "$dash/src" contracts/src/views.ts -newer "$dash/dist/app.js" -print -quit)" ]; then
  echo "bootstrap: building the dashboard"
  pnpm -s --filter @molt/dashboard build >/dev/null
fi
