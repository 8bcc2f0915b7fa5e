#!/usr/bin/env bash
# Debian's nginx, for bench/download's baseline and as a package mirror: the package is downloaded
# with apt and unpacked into .tools/nginx-debian/ (never installed system-wide, so no service
# starts). Prints the binary's path; the bench writes its own config and starts it on a free port.
set -euo pipefail
status=0
bash "$(dirname "${BASH_SOURCE[0]}")/debian-unpack.sh" nginx nginx-debian usr/sbin/nginx || status=$?
if [ "$status" -eq 3 ]; then
  echo "nginx.sh: no apt-get here, so no Debian nginx" >&2
  exit 1
fi
exit "$status"
