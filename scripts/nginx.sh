#!/usr/bin/env bash
# Debian's nginx, for bench/download's baseline and as a package mirror: the package is downloaded
# with apt and unpacked into .tools/nginx-debian/ (never installed system-wide, so no service
# starts). Prints the binary's path; the bench writes its own config and starts it on a free port.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.tools/nginx-debian"
bin="$dir/usr/sbin/nginx"
if [ ! -x "$bin" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "nginx.sh: no apt-get here, so no Debian nginx" >&2
    exit 1
  fi
  tmp="$(mktemp -d)"
  chmod 777 "$tmp" # apt's download user writes here
  (cd "$tmp" && { apt-get download -qq nginx 2>/dev/null || { apt-get update -qq && apt-get download -qq nginx; }; })
  mkdir -p "$dir"
  dpkg-deb -x "$tmp"/nginx_*.deb "$dir"
  rm -rf "$tmp"
fi
echo "$bin"
