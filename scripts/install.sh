#!/usr/bin/env bash
# Builds pg_tenancy and installs it into the PostgreSQL installation of a pg_config:
#
#   scripts/install.sh [--profile release|dev|NAME] [--pg-config PATH] [--no-build]
#
# --no-build installs what the last build of that profile packaged (target/package-PROFILE).
#
# Every file is written next to its destination under a temporary name and then renamed over
# it. A running server that has the old library mapped keeps its copy (the old inode) and is
# never crashed by an overwrite in place; new backends load the new file after a restart.
# Also installs the install scripts of earlier versions kept in extension/sql/, so that
# `CREATE EXTENSION pg_tenancy VERSION '0.1.0'` followed by `ALTER EXTENSION ... UPDATE` works.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
PG_MAJOR="${PG_MAJOR:-15}"
profile=release
pg_config="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"
build=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --pg-config) pg_config="$2"; shift 2 ;;
        --no-build) build=no; shift ;;
        *) echo "usage: $0 [--profile release|dev|NAME] [--pg-config PATH] [--no-build]" >&2; exit 2 ;;
    esac
done
[ -x "$pg_config" ] || { echo "no pg_config at $pg_config: run scripts/setup.sh" >&2; exit 1; }

case "$profile" in
    release) flag=() ;;
    dev|debug) flag=(--debug) ;;
    *) flag=(--profile "$profile") ;;
esac
out="$root/target/package-$profile"
if [ "$build" = yes ]; then
    rm -rf "$out"
    (cd "$root/extension" && cargo pgrx package "${flag[@]}" --pg-config "$pg_config" --out-dir "$out" >/dev/null)
fi

libdir="$("$pg_config" --pkglibdir)"
extdir="$("$pg_config" --sharedir)/extension"
# The system's directories belong to root: a user who is not root installs through sudo.
sudo=()
if [ "$(id -u)" -ne 0 ] && ! [ -w "$libdir" ]; then sudo=(sudo); fi
place() {  # place FILE DIR: copy under a temporary name in DIR, then rename over DIR/FILE's name
    local tmp="$2/.$(basename "$1").tmp.$$"
    "${sudo[@]}" install -m 644 "$1" "$tmp"
    "${sudo[@]}" mv -f "$tmp" "$2/$(basename "$1")"
}
so="$(find "$out" -name 'pg_tenancy.so' -print -quit)"
[ -n "$so" ] || { echo "cargo pgrx package produced no pg_tenancy.so under $out" >&2; exit 1; }
place "$so" "$libdir"
find "$out" \( -name 'pg_tenancy.control' -o -name 'pg_tenancy--*.sql' \) -print0 \
    | while IFS= read -r -d '' f; do place "$f" "$extdir"; done
# Install scripts of earlier versions (upgrade scripts, `--A--B.sql`, came with the package).
for f in "$root"/extension/sql/pg_tenancy--*.sql; do
    case "$(basename "$f")" in pg_tenancy--*--*) ;; *) place "$f" "$extdir" ;; esac
done
echo "installed pg_tenancy ($profile build) into $libdir and $extdir"
