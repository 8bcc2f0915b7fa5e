#!/usr/bin/env bash
# Installs Node 22 and 24 (the other supported LTS lines) into .tools/node/<major>/ from the npm
# registry's `node-linux-<arch>` packages, which carry the official binaries, and prints each bin dir.
# check.sh runs the unit tests once more under each. Safe to run again: it installs only what is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
majors=("${@:-22 24}")
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) echo "node-matrix: no node-linux package for $(uname -m)" >&2; exit 1 ;;
esac
for major in ${majors[*]}; do
  dir="$root/.tools/node/$major"
  if [ ! -x "$dir/bin/node" ]; then
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "node-linux-$arch@$major" >/dev/null)
    mkdir -p "$dir"
    tar xzf "$tmp"/node-linux-*.tgz -C "$dir" --strip-components=1 package/bin
    rm -rf "$tmp"
  fi
  echo "$dir/bin"
done
