#!/usr/bin/env bash
# Quota and usage-metering benchmark (run by `make bench`): pgbench, prepared statements, each
# path measured against the same transaction without the feature, interleaved (A B A B ...)
# after a warm-up, reporting the median ratio and its spread.
#
#   BENCH_SECONDS (default 5) per pgbench run, BENCH_RUNS (default 5) measured runs per path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
SECONDS_PER_RUN="${BENCH_SECONDS:-5}"
RUNS="${BENCH_RUNS:-5}"
bin=/usr/lib/postgresql/${PG_MAJOR:-15}/bin
ADMIN_URL="$(scripts/cluster.sh admin-url bench)"
work="$root/target/bench"
mkdir -p "$work"

psql_admin() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$ADMIN_URL" "$@"; }

echo "setting up: 1,000 organizations, a quota'd and a plain table" >&2
psql_admin <<'SQL'
DROP SCHEMA IF EXISTS bench CASCADE;
DROP EXTENSION IF EXISTS pg_tenancy CASCADE;
CREATE EXTENSION pg_tenancy;
CREATE SCHEMA bench;
INSERT INTO tenancy.plans (name) VALUES ('bench');
INSERT INTO tenancy.resources (name, kind, label) VALUES ('bench_items', 'count', 'Item');
INSERT INTO tenancy.plan_limits (plan, resource, quota)
    SELECT 'bench', name, 1000000000 FROM tenancy.resources;
INSERT INTO tenancy.organizations (id, slug, name, plan)
    SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'org-' || g, 'Org ' || g, 'bench'
      FROM generate_series(1, 1000) g;
INSERT INTO tenancy.members (org_id, user_id, role) SELECT id, 'u1', 'owner' FROM tenancy.organizations;
CREATE TABLE bench.items_plain (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON bench.items_plain (org_id);
CREATE TABLE bench.items_quota (LIKE bench.items_plain INCLUDING ALL);
SELECT tenancy.enable_quota('bench_items', 'bench.items_quota');
-- usage recorded by the inserting statement itself (the policy files' [usage] section)
CREATE TABLE bench.items_metered (LIKE bench.items_plain INCLUDING ALL);
SELECT tenancy.enable_usage('api_calls', 'bench.items_metered');
-- the naive peer for usage: one counter row per organization and metric
CREATE TABLE bench.usage_counter (org_id uuid, metric text, value bigint NOT NULL DEFAULT 0,
                                  PRIMARY KEY (org_id, metric));
INSERT INTO bench.usage_counter SELECT id, 'api_calls', 0 FROM tenancy.organizations;
SQL

org="('00000000-0000-0000-0000-' || lpad(:o::text, 12, '0'))::uuid"
script() {  # script NAME BODY
    printf '%s\n' "$2" > "$work/$1.sql"
}
script spread_plain "\\set o random(1, 1000)
INSERT INTO bench.items_plain (org_id, name) VALUES ($org, 'x');"
script spread_quota "\\set o random(1, 1000)
INSERT INTO bench.items_quota (org_id, name) VALUES ($org, 'x');"
script hot_plain "\\set o 1
INSERT INTO bench.items_plain (org_id, name) VALUES ($org, 'x');"
script hot_quota "\\set o 1
INSERT INTO bench.items_quota (org_id, name) VALUES ($org, 'x');"
script usage_none "\\set o 1
BEGIN;
SELECT tenancy.set_context($org, 'u1');
INSERT INTO bench.items_plain (org_id, name) VALUES ($org, 'x');
COMMIT;"
script usage_record "\\set o 1
BEGIN;
SELECT tenancy.set_context($org, 'u1');
INSERT INTO bench.items_plain (org_id, name) VALUES ($org, 'x');
SELECT tenancy.record_usage('api_calls');
COMMIT;"
script usage_trigger "\\set o 1
BEGIN;
SELECT tenancy.set_context($org, 'u1');
INSERT INTO bench.items_metered (org_id, name) VALUES ($org, 'x');
COMMIT;"
script usage_naive "\\set o 1
BEGIN;
SELECT tenancy.set_context($org, 'u1');
INSERT INTO bench.items_plain (org_id, name) VALUES ($org, 'x');
UPDATE bench.usage_counter SET value = value + 1 WHERE org_id = $org AND metric = 'api_calls';
COMMIT;"

tps() {  # tps SCRIPT CLIENTS
    "$bin/pgbench" -n -M prepared -T "$SECONDS_PER_RUN" -c "$2" -j "$2" -f "$work/$1.sql" "$ADMIN_URL" 2>/dev/null \
        | awk '/^tps = / {print $3}'
}

# compare LABEL CLIENTS BASELINE PATH...: interleaved runs, one line per PATH.
compare() {
    local label="$1" clients="$2" base="$3"; shift 3
    local paths=("$base" "$@")
    declare -A results
    for p in "${paths[@]}"; do tps "$p" "$clients" >/dev/null; done  # warm-up
    for ((i = 0; i < RUNS; i++)); do
        for p in "${paths[@]}"; do results[$p]+="$(tps "$p" "$clients") "; done
    done
    for p in "$@"; do
        python3 - "$label" "$clients" "$p" "$base" "${results[$base]}" "${results[$p]}" <<'PY'
import statistics, sys
label, clients, path, base, b, f = sys.argv[1:]
b = [float(x) for x in b.split()]; f = [float(x) for x in f.split()]
ratios = [x / y for x, y in zip(f, b)]
print(f"| {label} | {clients} | {path} vs {base} | {statistics.median(f):,.0f} vs {statistics.median(b):,.0f} "
      f"| **{statistics.median(ratios):.2f}** | {min(ratios):.2f}–{max(ratios):.2f} |")
PY
    done
}

echo "running: ${RUNS} interleaved runs of ${SECONDS_PER_RUN}s per path, after a warm-up" >&2
echo "| workload | clients | paths | median tps | median ratio | spread (min–max) |"
echo "|---|---|---|---|---|---|"
compare "insert, 1,000 orgs" 1 spread_plain spread_quota
compare "insert, 1,000 orgs" 4 spread_plain spread_quota
compare "insert, one hot org" 4 hot_plain hot_quota
compare "insert + 1 unit of usage, one hot org" 8 usage_none usage_trigger usage_record usage_naive
echo
echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; PostgreSQL $("$bin/postgres" --version | awk '{print $3}'), default settings (fsync on, synchronous_commit on, shared_buffers 128MB); pgbench -M prepared, ${SECONDS_PER_RUN}s x ${RUNS} runs per path."
