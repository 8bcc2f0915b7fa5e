#!/usr/bin/env bash
# Usage: debian-unpack.sh <package> <dir under .tools> <path of a file inside the package>
# Downloads Debian's <package> with apt and unpacks it into .tools/<dir>/ (never installed
# system-wide, so no service starts), unless <path> is there already; prints the path of that file.
# Exits 3 when there is no apt-get here (each caller decides whether that is an error).
set -euo pipefail
pkg="$1" dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools/$2" file="$3"
if [ ! -x "$dir/$file" ]; then
  command -v apt-get >/dev/null 2>&1 || exit 3
  tmp="$(mktemp -d)"
  chmod 777 "$tmp" # apt's download user writes here
  (cd "$tmp" && { apt-get download -qq "$pkg" 2>/dev/null || { apt-get update -qq && apt-get download -qq "$pkg"; }; })
  mkdir -p "$dir"
  dpkg-deb -x "$tmp/${pkg}"_*.deb "$dir"
  rm -rf "$tmp"
fi
echo "$dir/$file"
