#!/usr/bin/env bash
# The pg_tenancy demo: two organizations kept apart inside PostgreSQL by compiled policies.
# Run by `make demo` after the extension is installed and the demo cluster is running.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
TENANCY="${TENANCY:-target/release/tenancy}"
cluster="scripts/cluster.sh"
ADMIN_URL="$($cluster admin-url demo)"
APP_URL="$($cluster url demo)"
PSQL="/usr/lib/postgresql/${PG_MAJOR:-15}/bin/psql"

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
# Runs SQL as the application role and shows it; an expected error is shown, not fatal.
app() {
    printf '\033[36mapp_user>\033[0m %s\n' "$(echo "$1" | sed '2,$s/^/          /')"
    printf '%s\n' "$1" | "$PSQL" -X -q "$APP_URL" -v ON_ERROR_STOP=1 -P footer=off -f - 2>&1 \
        | sed -e 's/^psql:<stdin>:[0-9]*: //' -e 's/^/    /' || true
}
admin() { "$PSQL" -X -q "$ADMIN_URL" -v ON_ERROR_STOP=1 "$@"; }

bold "0. A fresh demo database with the extension and the example schema (sql/schema.sql)"
"$PSQL" -X -q "${ADMIN_URL/tenancy_demo/postgres}" -c "DROP DATABASE IF EXISTS tenancy_demo WITH (FORCE)" -c "CREATE DATABASE tenancy_demo"
admin -c "CREATE EXTENSION pg_tenancy" -f sql/schema.sql
echo "    CREATE EXTENSION pg_tenancy; \i sql/schema.sql"

bold "1. Compile the policy file (policies/app.toml) against the live schema and apply it"
"$TENANCY" check policies/app.toml --database-url "$ADMIN_URL"
"$TENANCY" compile policies/app.toml --database-url "$ADMIN_URL" | sed -n '/^-- app.projects/,/^$/p' | sed 's/^/    /'
"$TENANCY" apply policies/app.toml --database-url "$ADMIN_URL"

bold "2. Two organizations; sam belongs to both (as a DBA)"
admin -v ON_ERROR_STOP=1 <<'SQL' | sed 's/^/    /'
\set QUIET on
SELECT tenancy.create_organization('Acme Corp', 'acme', 'alice', 'pro') AS acme \gset
SELECT tenancy.create_organization('Globex', 'globex', 'gina') AS globex \gset
\o /dev/null
SELECT tenancy.add_member(:'acme', 'bob', 'member');
SELECT tenancy.add_member(:'acme', 'sam', 'admin');
SELECT tenancy.add_member(:'globex', 'sam', 'guest');
\o
\pset footer off
SELECT o.slug, m.user_id, m.role FROM tenancy.members m JOIN tenancy.organizations o ON o.id = m.org_id ORDER BY 1, 2;
SQL
ACME_ID=$(admin -At -c "SELECT id FROM tenancy.organizations WHERE slug = 'acme'")
GLOBEX_ID=$(admin -At -c "SELECT id FROM tenancy.organizations WHERE slug = 'globex'")

bold "3. Each organization writes its own data (the app calls set_context at the start of each transaction)"
app "BEGIN;
SELECT tenancy.set_context('$ACME_ID', 'alice') \\gset
INSERT INTO app.projects (name) VALUES ('Rocket skates'), ('Giant magnet');
INSERT INTO app.tasks (project_id, title) SELECT id, 'Order parts' FROM app.projects;
COMMIT;"
app "BEGIN;
SELECT tenancy.set_context('$GLOBEX_ID', 'gina') \\gset
INSERT INTO app.projects (name) VALUES ('Doomsday device');
COMMIT;"

bold "4. Each organization sees only its own rows, from the same SQL"
app "BEGIN; SELECT tenancy.set_context('$ACME_ID', 'alice') \\gset
SELECT name, created_by FROM app.projects ORDER BY name;
COMMIT;"
app "BEGIN; SELECT tenancy.set_context('$GLOBEX_ID', 'gina') \\gset
SELECT name, created_by FROM app.projects ORDER BY name;
COMMIT;"

bold "5. sam is in both: the same query shows different rows after switching organization"
app "BEGIN;
SELECT tenancy.set_context('$ACME_ID', 'sam') \\gset
SELECT tenancy.current_member_role() AS role, count(*) AS projects FROM app.projects;
SELECT tenancy.set_context('$GLOBEX_ID', 'sam') \\gset
SELECT tenancy.current_member_role() AS role, count(*) AS projects FROM app.projects;
COMMIT;"

bold "6. A non-member cannot set a context (and an unknown org gets the very same error)"
app "SELECT tenancy.set_context('$GLOBEX_ID', 'alice');"
app "SELECT tenancy.set_context('00000000-0000-0000-0000-000000000000', 'alice');"

bold "7. No context: nothing is visible, and writes are refused"
app "SELECT count(*) FROM app.projects;"
app "INSERT INTO app.projects (name) VALUES ('orphan');"

bold "8. Writing into the other organization is refused; so is forging the context"
app "BEGIN; SELECT tenancy.set_context('$ACME_ID', 'alice') \\gset
INSERT INTO app.projects (org_id, name) VALUES ('$GLOBEX_ID', 'sneaky');
ROLLBACK;"
app "SET tenancy.org_id = '$GLOBEX_ID';"
app "BEGIN; SELECT tenancy.set_context('$ACME_ID', 'bob') \\gset
DELETE FROM app.projects;
ROLLBACK;"

bold "9. The policy costs one InitPlan per statement and uses the tenant index (the app may not EXPLAIN: plans tell about hidden rows)"
app "BEGIN; SELECT tenancy.set_context('$ACME_ID', 'alice') \\gset
EXPLAIN (COSTS OFF) SELECT * FROM app.projects ORDER BY created_at DESC LIMIT 20;
ROLLBACK;"
echo "    -- a DBA looks at the same plan as the application role:"
admin -P footer=off <<SQL | sed 's/^/    /'
SET tenancy.allow_explain = on;
SET ROLE app_user;
BEGIN;
SELECT tenancy.set_context('$ACME_ID', 'alice') \\gset
EXPLAIN (COSTS OFF) SELECT * FROM app.projects ORDER BY created_at DESC LIMIT 20;
COMMIT;
SQL

bold "10. Plans enforce quotas in the database (globex is on the free plan; its limit lowered to 2 projects)"
admin -c "SELECT tenancy.set_quota('$GLOBEX_ID', 'projects', 2)" >/dev/null
app "BEGIN; SELECT tenancy.set_context('$GLOBEX_ID', 'gina') \\gset
INSERT INTO app.projects (name) VALUES ('Weather machine');
INSERT INTO app.projects (name) VALUES ('One too many');
ROLLBACK;"

bold "11. Usage is metered per organization and month, transactionally (an upload records its bytes itself: [usage] in the policy)"
app "BEGIN; SELECT tenancy.set_context('$ACME_ID', 'alice') \\gset
SELECT tenancy.record_usage('api_calls', 3) \\gset
INSERT INTO app.files (name, size_bytes) VALUES ('logo.png', 52428800);
COMMIT;"
admin -P footer=off -c "SELECT slug, metric, amount, quota FROM tenancy.usage_report() WHERE amount > 0" | sed 's/^/    /'

bold "12. Sharing: acme publishes a handbook and shares one document with globex, for reading"
app "BEGIN; SELECT tenancy.set_context('$ACME_ID', 'alice') \\gset
INSERT INTO app.documents (title, visibility) VALUES ('Acme handbook', 'public');
INSERT INTO app.documents (title) VALUES ('Joint venture plan'), ('Acme secrets');
SELECT tenancy.share('app.documents', id, '$GLOBEX_ID', '{read}') FROM app.documents WHERE title = 'Joint venture plan' \\gset
COMMIT;"
app "BEGIN; SELECT tenancy.set_context('$GLOBEX_ID', 'gina') \\gset
SELECT title, visibility, org_id = tenancy.current_org() AS own FROM app.documents ORDER BY title;
WITH changed AS (UPDATE app.documents SET title = 'mine now' WHERE title = 'Joint venture plan' RETURNING 1)
SELECT count(*) AS rows_globex_could_update FROM changed;
WITH gone AS (DELETE FROM app.documents WHERE title = 'Acme handbook' RETURNING 1)
SELECT count(*) AS rows_globex_could_delete FROM gone;
ROLLBACK;"

bold "13. Signed context tokens: the identity provider signs who and which organization, the database checks the signature and the membership"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
secret="$(openssl rand -hex 32)"
admin -c "INSERT INTO tenancy.token_keys (kid, algorithm, key, issuer) VALUES ('demo', 'HS256', '$secret', 'demo-idp')" >/dev/null
echo "    -- the DBA registered an HS256 key (kid 'demo', issuer 'demo-idp') in tenancy.token_keys"
jwt() {  # jwt USER ORG: a token signed with the demo key, valid for five minutes
    local header payload
    header="$(printf '{"alg":"HS256","typ":"JWT","kid":"demo"}' | b64url)"
    payload="$(printf '{"sub":"%s","org_id":"%s","iss":"demo-idp","exp":%s}' "$1" "$2" "$(($(date +%s) + 300))" | b64url)"
    printf '%s.%s.%s' "$header" "$payload" "$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)"
}
ALICE_TOKEN="$(jwt alice "$ACME_ID")"
app "BEGIN; SELECT tenancy.set_context_token('$ALICE_TOKEN') \\gset
SELECT tenancy.current_user_id() AS user_id, tenancy.current_member_role() AS role, count(*) AS acme_projects FROM app.projects;
ROLLBACK;"
# The same signature over a payload that names globex instead: refused.
forged="$(jwt alice "$GLOBEX_ID" | cut -d. -f1,2).$(echo "$ALICE_TOKEN" | cut -d. -f3)"
app "SELECT tenancy.set_context_token('$forged');"

bold "14. tenancy verify: as each application role and organization, try every command on every table (rolled back)"
"$TENANCY" verify --database-url "$ADMIN_URL" --policies policies/app.toml | sed 's/^/    /'

bold "The demo cluster is still running."
cat <<MSG
    connect as the app:   make psql            ($APP_URL)
    connect as the DBA:   PSQL_ROLE=postgres make psql   ($ADMIN_URL)
    URLs for your code:   make db-url / make db-admin-url
    stop it:              make stop
MSG
