#!/usr/bin/env bash
# A throwaway local PostgreSQL cluster for pg_tenancy, with its data under target/ (or where
# scripts/state-dir.sh says, when the postgres OS user cannot reach the checkout).
#
#   scripts/cluster.sh start|restart|stop|destroy|crash|status|url|admin-url|pg-config|psql [NAME]
#
# NAME is `demo` (port 28815, the default), `test` (port 28816), `bench` (port 28817) or
# `plain` (port 28818, without pg_tenancy preloaded, for one test). The cluster listens only on a
# unix socket, runs as the `postgres` OS user when invoked as root (initdb refuses root), preloads
# pg_tenancy and has two login roles: `postgres` (superuser, the DBA) and `app_user` (the
# application role: LOGIN, owns nothing, no BYPASSRLS) and `app_readonly`.
set -euo pipefail

cmd="${1:-status}"
name="${2:-demo}"
case "$name" in
    demo) port=28815 ;;
    test) port=28816 ;;
    bench) port=28817 ;;
    plain) port=28818 ;;  # for tests: pg_tenancy NOT preloaded
    *) echo "unknown cluster name '$name' (use demo, test, bench or plain)" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
PG_MAJOR="${PG_MAJOR:-15}"
# The demo and the benchmarks run the system's PostgreSQL, with what `make install` put there;
# the test clusters run a private copy of it that the tests install their builds into
# (scripts/pg-tree.sh), so that `make test` never touches the system's installation.
case "$name" in
    test|plain) pg_config="$("$root/scripts/pg-tree.sh" test)" ;;
    *) pg_config="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config" ;;
esac
bindir="$("$pg_config" --bindir 2>/dev/null || true)"
[ -n "$bindir" ] || { echo "PostgreSQL ${PG_MAJOR} is not installed: run scripts/setup.sh" >&2; exit 1; }
base="$("$root/scripts/state-dir.sh")/cluster-$name"
data="$base/data"
# unix socket paths must stay under 103 bytes; fall back to /tmp for deep checkouts
sock="$base"
if [ "${#sock}" -gt 80 ]; then sock="/tmp/pg_tenancy-$name-$(id -u)"; fi
db="tenancy_$name"

as_pg() {  # from /, which the postgres user can always enter
    if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

url() {  # url ROLE
    echo "postgresql://$1@/$db?host=$sock&port=$port"
}

running() { [ -f "$data/postmaster.pid" ] && as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; }

start() {
    mkdir -p "$base" "$sock"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$base" "$sock"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
        as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
        cat >> "$data/postgresql.conf" <<CONF
# pg_tenancy local cluster
listen_addresses = ''
port = $port
unix_socket_directories = '$sock'
shared_preload_libraries = '$([ "$name" = plain ] || echo pg_tenancy)'
max_connections = 100
fsync = on
log_min_messages = warning
CONF
        # The test cluster sets a pg_tenancy setting in postgresql.conf, as a DBA would.
        if [ "$name" = test ]; then echo "tenancy.max_counters = 70000" >> "$data/postgresql.conf"; fi
    fi
    if running; then
        echo "cluster '$name' already running on port $port"
    else
        # Test servers run with RUST_BACKTRACE set, as many developer machines do, so that the
        # tests see a Rust backtrace if one ever reached an error's DETAIL.
        as_pg env $([ "$name" = test ] && echo RUST_BACKTRACE=1) "$bindir/pg_ctl" -D "$data" -l "$base/postgres.log" -w -t 60 start >/dev/null \
            || { echo "cluster '$name' failed to start; log: $base/postgres.log" >&2; tail -20 "$base/postgres.log" >&2; exit 1; }
    fi
    psql_admin postgres -qAt -c "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
        || psql_admin postgres -q -c "CREATE DATABASE $db"
    psql_admin "$db" -q <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_user') THEN
    CREATE ROLE app_user LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_readonly') THEN
    CREATE ROLE app_readonly LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END \$\$;
SQL
}

psql_admin() {  # psql_admin DB [psql args...]
    local d="$1"; shift
    "$bindir/psql" -X -v ON_ERROR_STOP=1 "postgresql://postgres@/$d?host=$sock&port=$port" "$@"
}

case "$cmd" in
    start) start; echo "cluster '$name' running: $(url postgres)" ;;
    restart)  # picks up a newly installed pg_tenancy (a preloaded library is read at server start)
        if running; then as_pg "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null; fi
        start; echo "cluster '$name' running: $(url postgres)" ;;
    stop)
        if running; then as_pg "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null; echo "cluster '$name' stopped"
        else echo "cluster '$name' is not running"; fi ;;
    destroy)
        if running; then as_pg "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null || true; fi
        rm -rf "$base"; echo "cluster '$name' removed" ;;
    crash)  # for tests: an immediate stop (no checkpoint, like a power cut), then start again
        as_pg "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null
        start >/dev/null; echo "cluster '$name' crashed and restarted" ;;
    pg-config) echo "$pg_config" ;;
    status) if running; then echo "cluster '$name' running on port $port ($data)"; else echo "cluster '$name' not running"; exit 3; fi ;;
    url) url app_user ;;
    admin-url) url postgres ;;
    psql) shift 2 || true; exec "$bindir/psql" -X "$(url "${PSQL_ROLE:-app_user}")" "$@" ;;
    *) echo "usage: $0 start|restart|stop|destroy|crash|status|url|admin-url|pg-config|psql [demo|test|bench|plain]" >&2; exit 2 ;;
esac
