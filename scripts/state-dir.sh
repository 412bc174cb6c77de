#!/usr/bin/env bash
# Prints the directory for what the `postgres` OS user must reach (cluster data, sockets, pgrx
# test data): the checkout's target/, or, when running as root in a checkout that user cannot
# traverse (e.g. below a private `mktemp -d`), a per-checkout directory under /tmp.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/target"
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$root" 2>/dev/null; then
    dir="/tmp/pg_tenancy-$(printf '%s' "$root" | md5sum | cut -c1-12)"
fi
mkdir -p "$dir"
chmod 755 "$dir" 2>/dev/null || true
echo "$dir"
