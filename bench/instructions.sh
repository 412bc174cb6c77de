#!/usr/bin/env bash
# Instruction counts (run by `make bench`): what the tenant context and the policies cost inside
# the server, in CPU instructions, which repeat exactly from run to run where timings on these
# machines wander by 30%. A single-user backend (`postgres --single`) runs a fixed loop under
# `valgrind --tool=callgrind`, once with N and once with 2N iterations; the difference divided by
# N is the cost of one iteration, startup and setup excluded.
#
#   BENCH_N (default 2000): iterations of the shorter loop.
#   BENCH_FIRST_N (default 500): the same for a connection's first context per organization.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
N="${BENCH_N:-2000}"
FIRST_N="${BENCH_FIRST_N:-500}"
bin=/usr/lib/postgresql/${PG_MAJOR:-15}/bin
command -v valgrind >/dev/null || { echo "valgrind is missing: scripts/setup.sh installs it" >&2; exit 1; }
state="$(scripts/state-dir.sh)"
work="$state/instructions"
data="$work/data"
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)

[ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"
mkdir -p "$data"
[ "$(id -u)" = 0 ] && chown -R postgres: "$work"
"${as_pg[@]}" "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null
echo "shared_preload_libraries = 'pg_tenancy'" >>"$data/postgresql.conf"

ORG=00000000-0000-0000-0000-000000000001
KORG=00000000-0000-0000-0002-000000000001
SECRET=an-instruction-count-secret-of-32-bytes
single() {  # single FILE: runs FILE's statements in a single-user backend, prints instructions
    local out="$work/callgrind.out"
    "${as_pg[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$bin/postgres" --single -j -D "$data" -c log_min_messages=warning postgres <"$1" >/dev/null 2>"$out.log" \
        || { cat "$out.log" >&2; exit 1; }
    sed -n 's/^summary: //p' "$out"
    rm -f "$out" "$out.log"
}

setup="$work/setup.sql"
cat >"$setup" <<SQL
CREATE EXTENSION pg_tenancy;

CREATE EXTENSION pgcrypto;

INSERT INTO tenancy.organizations (id, slug, name) VALUES ('$ORG', 'one', 'One');

INSERT INTO tenancy.members (org_id, user_id, role) VALUES ('$ORG', 'u1', 'member');

-- For a connection's first context per organization: 2 x FIRST_N more, one member each.
INSERT INTO tenancy.organizations (id, slug, name)
    SELECT ('00000000-0000-0000-0001-' || lpad(g::text, 12, '0'))::uuid, 'many-' || g, 'Many ' || g
      FROM generate_series(1, 2 * $FIRST_N) g;

INSERT INTO tenancy.members (org_id, user_id, role)
    SELECT id, 'u1', 'member' FROM tenancy.organizations WHERE slug LIKE 'many-%';

INSERT INTO tenancy.token_keys (kid, algorithm, key) VALUES ('cg', 'HS256', '$SECRET');

CREATE ROLE app_user;

CREATE ROLE bench_hand BYPASSRLS;

CREATE SCHEMA app;

GRANT USAGE ON SCHEMA app TO app_user, bench_hand;

CREATE TABLE app.items (org_id uuid NOT NULL, id int NOT NULL, name text, PRIMARY KEY (org_id, id));

INSERT INTO app.items SELECT CASE WHEN i % 2 = 0 THEN '$ORG'::uuid ELSE gen_random_uuid() END, i, 'item ' || i FROM generate_series(1, 10000) i;

ANALYZE app.items;

ALTER TABLE app.items ENABLE ROW LEVEL SECURITY;

ALTER TABLE app.items FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant ON app.items USING (org_id = tenancy.current_org());

GRANT SELECT ON app.items TO app_user, bench_hand;

-- Tenant keys (#14): one table per key type, 100 organizations of 100 rows each, with the
-- policies tenancy compiles for such columns. The context's organization is the first one:
-- '$KORG' (uuid), 'org_1' (text) and 1 (bigint).
INSERT INTO tenancy.organizations (id, key, slug, name) VALUES
    ('$KORG', NULL, 'uuid-one', 'Uuid one'),
    (tenancy.org_key_id('org_1'), 'org_1', 'text-one', 'Text one'), (tenancy.org_key_id('1'), '1', 'big-one', 'Big one');

INSERT INTO tenancy.members (org_id, user_id, role) VALUES
    ('$KORG', 'u1', 'member'), (tenancy.org_key_id('org_1'), 'u1', 'member'), (tenancy.org_key_id('1'), 'u1', 'member');

CREATE TABLE app.keyed_uuid (org_id uuid NOT NULL, id int NOT NULL, name text, PRIMARY KEY (org_id, id));

CREATE TABLE app.keyed_text (org_id text NOT NULL, id int NOT NULL, name text, PRIMARY KEY (org_id, id));

CREATE TABLE app.keyed_big (org_id bigint NOT NULL, id int NOT NULL, name text, PRIMARY KEY (org_id, id));

INSERT INTO app.keyed_uuid SELECT ('00000000-0000-0000-0002-' || lpad((1 + i % 100)::text, 12, '0'))::uuid, i, 'item ' || i FROM generate_series(0, 9999) i;

INSERT INTO app.keyed_text SELECT 'org_' || (1 + i % 100), i, 'item ' || i FROM generate_series(0, 9999) i;

INSERT INTO app.keyed_big SELECT 1 + i % 100, i, 'item ' || i FROM generate_series(0, 9999) i;

DO \$\$
DECLARE t text; reader text;
BEGIN
    FOR t, reader IN VALUES ('keyed_uuid', 'current_org'), ('keyed_text', 'current_org_key'), ('keyed_big', 'current_org_bigint') LOOP
        EXECUTE format('ANALYZE app.%I', t);
        EXECUTE format('ALTER TABLE app.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE app.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON app.%I USING (org_id = tenancy.%I())', t, reader);
        EXECUTE format('GRANT SELECT ON app.%I TO app_user, bench_hand', t);
    END LOOP;
END
\$\$;

-- Two levels (#14): 100 projects of organization 'org_1' with 100 rows each, keyed by text
-- (project_id) like app.keyed_text is by organization; the context is the project 'prj_1'.
INSERT INTO tenancy.organizations (id, key, slug, name, parent_id)
SELECT tenancy.org_key_id('prj_' || p), 'prj_' || p, 'prj-' || p, 'Project ' || p, tenancy.org_key_id('org_1')
  FROM generate_series(1, 100) p;

CREATE TABLE app.project_text (project_id text NOT NULL, id int NOT NULL, name text, PRIMARY KEY (project_id, id));

INSERT INTO app.project_text SELECT 'prj_' || (1 + i % 100), i, 'item ' || i FROM generate_series(0, 9999) i;

ANALYZE app.project_text;

ALTER TABLE app.project_text ENABLE ROW LEVEL SECURITY;

ALTER TABLE app.project_text FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant ON app.project_text USING (project_id = tenancy.current_project_key());

GRANT SELECT ON app.project_text TO app_user, bench_hand;

CREATE TABLE app.items_open (LIKE app.items INCLUDING ALL);

INSERT INTO app.items_open SELECT * FROM app.items;

ANALYZE app.items_open;

GRANT SELECT ON app.items_open TO app_user;

\set secret '$SECRET'

\set kid cg

\set org '$ORG'


SQL
cat bench/jwt.sql >>"$setup"
# The setup runs on a normal server: objects a single-user backend creates right after initdb get
# oids below FirstNormalObjectId, and PostgreSQL treats those as built in (no row-level security).
"${as_pg[@]}" "$bin/pg_ctl" -D "$data" -w -l "$work/server.log" -o "-k $work -c listen_addresses='' -p 28818" start >/dev/null
"${as_pg[@]}" "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p 28818 -U postgres -d postgres -f "$setup" \
    || { "${as_pg[@]}" "$bin/pg_ctl" -D "$data" -m fast stop >/dev/null; exit 1; }
"${as_pg[@]}" "$bin/pg_ctl" -D "$data" -w -m fast stop >/dev/null

# measure LABEL ROLE BODY: the instructions of one iteration of BODY (PL/pgSQL, loop variable i)
# run by ROLE inside a procedure that commits after each iteration (a whole transaction).
declare -A cost
measure() {
    local label="$1" role="$2" body="$3" iterations="${4:-$N}" file="$work/loop.sql" n counts=()
    for n in "$iterations" "$((2 * iterations))"; do
        cat >"$file" <<SQL
SET tenancy.session_context = on;

CREATE OR REPLACE PROCEDURE pg_temp_loop() LANGUAGE plpgsql AS \$\$
DECLARE tok text := mint(0); r record; o uuid := '$ORG'; ko uuid := '$KORG'; kt text := 'org_1'; kb bigint := 1;
BEGIN
    FOR i IN 1..$n LOOP
        $body
        COMMIT;
    END LOOP;
END \$\$;

GRANT EXECUTE ON PROCEDURE pg_temp_loop() TO PUBLIC;

SET ROLE $role;

CALL pg_temp_loop();

SQL
        counts+=("$(single "$file")")
    done
    cost[$label]=$(( (counts[1] - counts[0]) / iterations ))
}

echo "measuring (each case: two single-user runs under callgrind)" >&2
measure empty app_user "NULL;"
measure set_config app_user "PERFORM set_config('app.org_id', '$ORG', true);"
measure set_context app_user "PERFORM tenancy.set_context('$ORG', 'u1');"
measure token_cached app_user "PERFORM tenancy.set_context_token(tok);"
measure mint app_user "PERFORM mint(i);"
measure token_fresh app_user "PERFORM tenancy.set_context_token(mint(i));"
measure hand bench_hand "PERFORM set_config('app.org_id', '$ORG', true); SELECT * INTO r FROM app.items WHERE org_id = current_setting('app.org_id')::uuid AND id = 2 * (i % 5000) + 2;"
measure policy app_user "PERFORM tenancy.set_context('$ORG', 'u1'); SELECT * INTO r FROM app.items WHERE id = 2 * (i % 5000) + 2;"
measure hand_lookup bench_hand "SELECT * INTO r FROM app.items WHERE org_id = o AND id = 2 * (i % 5000) + 2;"
measure context_only app_user "PERFORM tenancy.set_context('$ORG', 'u1');"
# Tenant keys (#14): the point lookup and a listing (the first 20 rows by id, of the
# organization's 100) with a uuid, a text and a bigint tenant column: under the policy, after
# the context, and written by hand (BYPASSRLS, the key a parameter: what the column's type costs
# without pg_tenancy).
for k in uuid text big; do
    case $k in
        uuid) ctx="set_context('$KORG', 'u1')" var=ko ;;
        text) ctx="set_context_key('org_1', 'u1')" var=kt ;;
        big) ctx="set_context_key('1', 'u1')" var=kb ;;
    esac
    measure "key_${k}_context" app_user "PERFORM tenancy.$ctx;"
    measure "key_${k}_lookup" app_user "PERFORM tenancy.$ctx; SELECT * INTO r FROM app.keyed_$k WHERE id = 100 * (i % 100);"
    measure "key_${k}_lookup_hand" bench_hand "SELECT * INTO r FROM app.keyed_$k WHERE org_id = $var AND id = 100 * (i % 100);"
    measure "key_${k}_listing" app_user "PERFORM tenancy.$ctx; FOR r IN SELECT * FROM app.keyed_$k ORDER BY id LIMIT 20 LOOP END LOOP;"
    measure "key_${k}_listing_hand" bench_hand "FOR r IN SELECT * FROM app.keyed_$k WHERE org_id = $var ORDER BY id LIMIT 20 LOOP END LOOP;"
done

# Two levels (#14): the same lookup and listing in a project context over a project-level table,
# against the single-level text-keyed ones above.
measure "project_context" app_user "PERFORM tenancy.set_project_context_key('prj_1', 'u1');"
measure "project_lookup" app_user "PERFORM tenancy.set_project_context_key('prj_1', 'u1'); SELECT * INTO r FROM app.project_text WHERE id = 100 * (i % 100);"
measure "project_listing" app_user "PERFORM tenancy.set_project_context_key('prj_1', 'u1'); FOR r IN SELECT * FROM app.project_text ORDER BY id LIMIT 20 LOOP END LOOP;"

# A server under callgrind on port 28819, which writes one file per process when it exits.
port=28819
start_under_callgrind() {
    rm -f "$work"/cg.*
    "${as_pg[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" \
        "$bin/postgres" -D "$data" -k "$work" -p "$port" -c listen_addresses='' -c autovacuum=off \
        >"$work/wire.log" 2>&1 &
    for _ in $(seq 120); do "${as_pg[@]}" "$bin/pg_isready" -q -h "$work" -p "$port" && break; sleep 0.5; done
}
stop_server() {
    "${as_pg[@]}" "$bin/pg_ctl" -D "$data" -w -m fast stop >/dev/null
    wait
}

# wire LABEL ROLE SCRIPT: the instructions one whole transaction costs the backend that serves
# it, over the wire (pgbench -M prepared, one client): the server runs under callgrind, which
# writes one file per process; the pgbench backend is the one that ran the most instructions.
wire() {
    local label="$1" role="$2" script="$work/$1.pgbench" n counts=()
    printf '%s\n' "$3" >"$script"
    for n in "$N" "$((2 * N))"; do
        start_under_callgrind
        "${as_pg[@]}" "$bin/pgbench" -n -M prepared -D org="$ORG" -h "$work" -p "$port" -U "$role" -f "$script" -t "$n" postgres >/dev/null \
            || { cat "$work/wire.log" >&2; exit 1; }
        stop_server
        counts+=("$(for f in "$work"/cg.*; do sed -n 's/^summary: //p' "$f"; done | sort -n | tail -1)")
    done
    cost[$label]=$(( (counts[1] - counts[0]) / N ))
}
echo "ALTER ROLE app_user LOGIN; ALTER ROLE bench_hand LOGIN; ALTER ROLE app_user SET tenancy.session_context = on;" >"$work/login.sql"
single "$work/login.sql" >/dev/null
# Every wire case runs as the application role; the hand-written ones read app.items_open, a
# copy of app.items without row-level security.
wire wire_hand app_user "\set id random(1, 5000)
BEGIN;
SELECT set_config('app.org_id', '$ORG', true);
SELECT * FROM app.items_open WHERE org_id = current_setting('app.org_id')::uuid AND id = 2 * :id;
COMMIT;"
wire wire_policy app_user "\set id random(1, 5000)
BEGIN;
SELECT tenancy.set_context('$ORG', 'u1');
SELECT * FROM app.items WHERE id = 2 * :id;
COMMIT;"
wire wire_param app_user "\set id random(1, 5000)
BEGIN;
SELECT tenancy.set_context('$ORG', 'u1');
SELECT * FROM app.items_open WHERE org_id = :org AND id = 2 * :id;
COMMIT;"

# first LABEL ORG: the instructions of one transaction `set_context(ORG, 'u1'); COMMIT` (ORG an
# expression of the loop variable i) on a connection of its own, after another connection set a
# context once in every organization (as a pool's other connections, or the last pgbench run's,
# did): what a new connection's first context in an organization costs, and a later one.
first() {
    local label="$1" org="$2" n counts=() f
    loop() {
        printf '%s\n' "SET ROLE app_user;" "DO \$\$ BEGIN FOR i IN 1..$1 LOOP" \
            "PERFORM tenancy.set_context(('00000000-0000-0000-0001-' || lpad(($2)::text, 12, '0'))::uuid, 'u1'); COMMIT;" \
            "END LOOP; END \$\$;"
    }
    for n in "$FIRST_N" "$((2 * FIRST_N))"; do
        start_under_callgrind
        loop "$((2 * FIRST_N))" i | "${as_pg[@]}" "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres postgres
        # callgrind writes a backend's file when it exits.
        sleep 1
        ls "$work"/cg.* >"$work/before"
        loop "$n" "$org" | "${as_pg[@]}" "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres postgres
        sleep 1
        f=$(ls "$work"/cg.* | grep -vxFf "$work/before" | head -1)
        counts+=("$(sed -n 's/^summary: //p' "$f")")
        stop_server
    done
    cost[$label]=$(( (counts[1] - counts[0]) / FIRST_N ))
}
first first_context i
first later_context 1

e=${cost[empty]}
per() { echo $(( cost[$1] - e )); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "| instructions per call (callgrind, loops of $N and $((2 * N)), one transaction each) | instructions | ratio |"
echo "|---|---|---|"
echo "| \`set_config('app.org_id', ...)\` (the hand-rolled pattern) | $(per set_config) | 1.00 |"
echo "| \`tenancy.set_context(org, user)\` | $(per set_context) | $(ratio "$(per set_context)" "$(per set_config)")x |"
echo "| \`tenancy.set_context_token()\`, a token verified before | $(per token_cached) | $(ratio "$(per token_cached)" "$(per set_config)")x |"
echo "| \`tenancy.set_context_token()\`, a fresh HS256 token | $(( cost[token_fresh] - cost[mint] )) | $(ratio "$(( cost[token_fresh] - cost[mint] ))" "$(per set_config)")x |"
echo
echo "| a connection's contexts, each in its own transaction (callgrind, loops of $FIRST_N and $((2 * FIRST_N)); another connection set a context in every organization before) | instructions |"
echo "|---|---|"
echo "| \`set_context\` in an organization this connection meets for the first time (its first context there: the membership from shared memory, the active user from its index) | ${cost[first_context]} |"
echo "| \`set_context\` in the organization of its previous context (the membership from the connection's own memory) | ${cost[later_context]} |"
echo "| a first context costs more by | $(( cost[first_context] - cost[later_context] )) |"
echo
echo "| a whole transaction (callgrind) | instructions | vs hand-written |"
echo "|---|---|---|"
echo "| hand-written: \`set_config\`, point lookup with \`WHERE org_id = ...\`, COMMIT | ${cost[hand]} | 1.00 |"
echo "| pg_tenancy: \`set_context\`, the same lookup under the policy, COMMIT | ${cost[policy]} | $(ratio "${cost[hand]}" "${cost[policy]}")x as fast |"
echo "| the policy alone (policy lookup minus its set_context, against the hand-written lookup with the org id as a parameter) | $(( cost[policy] - cost[context_only] - cost[hand_lookup] + e )) more | $(ratio "$(( cost[policy] - cost[context_only] - cost[hand_lookup] + e ))" "${cost[hand]}") of a transaction |"
echo
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", 100 * (a - b) / b }'; }
echo "| tenant keys: instructions per transaction (callgrind; 100 organizations of 100 rows) | uuid | text key | vs uuid | bigint key | vs uuid |"
echo "|---|---|---|---|---|---|"
row() {  # row TEXT EXPRESSION-OF-k
    local u t b
    u=$(k=uuid; eval "echo \$(( $2 ))") t=$(k=text; eval "echo \$(( $2 ))") b=$(k=big; eval "echo \$(( $2 ))")
    echo "| $1 | $u | $t | $(pct "$t" "$u") | $b | $(pct "$b" "$u") |"
}
row "the context alone (\`set_context\`, or \`set_context_key\` for keys), COMMIT" 'cost[key_${k}_context] - e'
row "context, point lookup by id under the policy, COMMIT" 'cost[key_${k}_lookup]'
row "hand-written point lookup, the key a parameter (no row-level security, no context)" 'cost[key_${k}_lookup_hand]'
row "the policy's own cost in the point lookup (lookup minus context minus hand-written)" 'cost[key_${k}_lookup] - cost[key_${k}_context] - cost[key_${k}_lookup_hand] + e'
row "context, the first 20 rows by id under the policy, COMMIT" 'cost[key_${k}_listing]'
row "hand-written listing, the key a parameter" 'cost[key_${k}_listing_hand]'
row "the policy's own cost in the listing" 'cost[key_${k}_listing] - cost[key_${k}_context] - cost[key_${k}_listing_hand] + e'
echo
echo "| two levels: instructions per transaction (callgrind; 100 projects of 100 rows, text keys) | organization context, organization-level table | project context, project-level table | vs one level |"
echo "|---|---|---|---|"
two() { echo "| $1 | $2 | $3 | $(pct "$3" "$2") |"; }
two "the context alone (\`set_context_key\` / \`set_project_context_key\`), COMMIT" "$(( cost[key_text_context] - e ))" "$(( cost[project_context] - e ))"
two "context, point lookup by id under the policy, COMMIT" "${cost[key_text_lookup]}" "${cost[project_lookup]}"
two "context, the first 20 rows by id under the policy, COMMIT" "${cost[key_text_listing]}" "${cost[project_listing]}"
echo
echo "| a whole prepared transaction over the wire (callgrind on the server, pgbench -M prepared, one client) | instructions | vs hand-written |"
echo "|---|---|---|"
echo "| hand-written: \`set_config\`, point lookup with \`WHERE org_id = current_setting(...)::uuid\`, COMMIT | ${cost[wire_hand]} | 1.00 |"
echo "| pg_tenancy: \`set_context\`, the same lookup under the policy, COMMIT | ${cost[wire_policy]} | $(ratio "${cost[wire_hand]}" "${cost[wire_policy]}")x as fast |"
echo "| the policy alone (against the same pg_tenancy transaction with the policy's condition written into the query as a parameter, \`WHERE org_id = \$1\`, on a copy of the table without row-level security) | $(( cost[wire_policy] - cost[wire_param] )) more | $(awk -v a="$(( cost[wire_policy] - cost[wire_param] ))" -v b="${cost[wire_hand]}" 'BEGIN { printf "%.1f%%", 100 * a / b }') of the hand-written transaction |"
[ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"
