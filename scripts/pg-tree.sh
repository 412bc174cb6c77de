#!/usr/bin/env bash
# Prints the pg_config of a private copy of the system's PostgreSQL installation, made (or
# refreshed, when the system's packages changed) under the state directory:
#
#   scripts/pg-tree.sh NAME      # NAME: pgrx (cargo pgrx test) or test (the end-to-end cluster)
#
# Tests install their builds of pg_tenancy into such a copy, never into the system's
# directories: the release build that `make install` put there stays, and a server running from
# the system's installation (the demo) never has its library replaced under it. PostgreSQL finds
# its libraries and extension files relative to its own binaries, so a copied tree is a complete,
# separate installation. Headers are not copied: pgrx reads them through the system's pg_config.
set -euo pipefail

name="${1:?usage: scripts/pg-tree.sh pgrx|test}"
PG_MAJOR="${PG_MAJOR:-15}"
root="$(cd "$(dirname "$0")/.." && pwd)"
system_bindir="/usr/lib/postgresql/${PG_MAJOR}/bin"
[ -x "$system_bindir/pg_config" ] || { echo "PostgreSQL ${PG_MAJOR} is not installed: run scripts/setup.sh" >&2; exit 1; }
libdir="$("$system_bindir/pg_config" --pkglibdir)"
sharedir="$("$system_bindir/pg_config" --sharedir)"
tree="$("$root/scripts/state-dir.sh")/pg${PG_MAJOR}-$name"

# What the copy is a copy of: the server's version and the installed extensions and libraries
# (pg_tenancy's own files excepted: the copy gets its own).
stamp="$({ "$system_bindir/postgres" --version; ls "$libdir" "$sharedir/extension"; } | grep -v pg_tenancy | md5sum | cut -c1-32)"
if [ "$(cat "$tree/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$tree.new"
    mkdir -p "$tree.new/lib/postgresql" "$tree.new/share/postgresql"
    cp -a "$(dirname "$system_bindir")" "$tree.new/lib/postgresql/"
    cp -a "$sharedir" "$tree.new/share/postgresql/"
    mkdir -p "$tree.new/include/postgresql/${PG_MAJOR}"
    ln -s "$("$system_bindir/pg_config" --includedir-server)" "$tree.new/include/postgresql/${PG_MAJOR}/server"
    rm -f "$tree.new/lib/postgresql/${PG_MAJOR}/lib/"pg_tenancy* "$tree.new/share/postgresql/${PG_MAJOR}/extension/"pg_tenancy*
    echo "$stamp" > "$tree.new/.stamp"
    # The old tree's files may be mapped by a running test server: unlinking them is safe.
    rm -rf "$tree"
    mv "$tree.new" "$tree"
fi
chmod -R a+rX "$tree"
echo "$tree/lib/postgresql/${PG_MAJOR}/bin/pg_config"
