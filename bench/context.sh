#!/usr/bin/env bash
# Context reader benchmark (run by `make bench`): what reading the tenant context costs per call,
# now that every reader checks that the context still holds (the organization's membership
# generation in shared memory), side by side with reading the raw setting; and what checking a
# membership costs (set_context, and a reader's recheck after a membership change).
#
# Server-side: each reader is called once per row of generate_series inside one statement (as
# a policy that is not wrapped in a sub-SELECT would call it), so clients, round trips and the
# scheduler are out of the picture; best of BENCH_ROUNDS (default 7) rounds of BENCH_CALLS
# (default 1,000,000) calls, minus the same loop with no call.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
CALLS="${BENCH_CALLS:-1000000}"
ROUNDS="${BENCH_ROUNDS:-7}"
bin=/usr/lib/postgresql/${PG_MAJOR:-15}/bin
ADMIN_URL="${BENCH_ADMIN_URL:-$(scripts/cluster.sh admin-url bench)}"
psql_admin() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$ADMIN_URL" "$@"; }

echo "setting up: one organization with one member" >&2
psql_admin <<'SQL'
DROP EXTENSION IF EXISTS pg_tenancy CASCADE;
CREATE EXTENSION pg_tenancy;
INSERT INTO tenancy.organizations (id, slug, name) VALUES ('00000000-0000-0000-0000-000000000001', 'one', 'One');
INSERT INTO tenancy.members (org_id, user_id, role) VALUES ('00000000-0000-0000-0000-000000000001', 'u1', 'member');
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_user') THEN CREATE ROLE app_user LOGIN; END IF;
END $$;
SQL

echo "| per call (ns; best of ${ROUNDS} rounds of ${CALLS} calls) | cost | vs reading the raw setting |"
echo "|---|---|---|"
psql_admin <<SQL 2>&1 | sed -n 's/^.*NOTICE:  //p'
SET tenancy.session_context = on;
SET ROLE app_user;
SELECT tenancy.set_session_context('00000000-0000-0000-0000-000000000001', 'u1');
SET client_min_messages = notice;
DO \$\$
DECLARE
    t timestamptz; n bigint := $CALLS; c bigint;
    names text[] := ARRAY['the loop alone', 'current_setting(''tenancy.org_id'')', 'tenancy.current_org()',
                          'tenancy.has_role(''member'')', 'tenancy.current_member_role()'];
    -- CASE on the row: a condition without the row's columns would run once, as a one-time filter.
    sqls text[] := ARRAY['true', 'current_setting(''tenancy.org_id'') <> ''''',
                         'tenancy.current_org() IS NOT NULL', 'tenancy.has_role(''member'')',
                         'tenancy.current_member_role() IS NOT NULL'];
    best numeric[] := array_fill(1e12::numeric, ARRAY[5]);
BEGIN
    FOR round IN 1..$ROUNDS LOOP
        FOR k IN 1..5 LOOP
            t := clock_timestamp();
            EXECUTE format('SELECT count(*) FROM generate_series(1, %s) g WHERE CASE WHEN g > 0 THEN %s END', n, sqls[k]) INTO c;
            best[k] := least(best[k], extract(epoch FROM clock_timestamp() - t) * 1e9 / n);
            IF c <> n THEN RAISE EXCEPTION '% returned % rows, not %', names[k], c, n; END IF;
        END LOOP;
    END LOOP;
    FOR k IN 2..5 LOOP
        RAISE NOTICE '| % | % | %x |', names[k], round(best[k] - best[1]),
            round((best[k] - best[1]) / greatest(best[2] - best[1], 1), 2);
    END LOOP;
END
\$\$;
SQL

echo
echo "| per call (µs; best of ${ROUNDS} rounds of 20,000 calls) | cost |"
echo "|---|---|"
psql_admin <<SQL 2>&1 | sed -n 's/^.*NOTICE:  //p'
SET client_min_messages = notice;
-- A reader whose organization's generation moved checks the membership again: the same lookup
-- as set_context, once per transaction (a session context) or per context.
DO \$\$
DECLARE
    t timestamptz; n int := 20000; best numeric := 1e12;
BEGIN
    SET LOCAL ROLE app_user;
    FOR round IN 1..$ROUNDS LOOP
        t := clock_timestamp();
        FOR i IN 1..n LOOP
            PERFORM tenancy.set_context('00000000-0000-0000-0000-000000000001', 'u1');
        END LOOP;
        best := least(best, extract(epoch FROM clock_timestamp() - t) * 1e6 / n);
    END LOOP;
    RAISE NOTICE '| tenancy.set_context(): the membership check and writing the context | % |', round(best, 2);
END
\$\$;
-- Signed tokens: one verified before (the backend's cache), and a fresh HS256 token per call
-- (minted in SQL with pgcrypto; the minting alone is timed too and taken off).
INSERT INTO tenancy.token_keys (kid, algorithm, key) VALUES ('bench', 'HS256', 'a-benchmark-secret-of-32-bytes-at-least');
\\set secret a-benchmark-secret-of-32-bytes-at-least
\\set kid bench
\\set org 00000000-0000-0000-0000-000000000001
$(cat bench/jwt.sql)
DO \$\$
DECLARE
    t timestamptz; n int := 20000; cached numeric := 1e12; fresh numeric := 1e12; minting numeric := 1e12;
    tok text := mint(0);
BEGIN
    FOR round IN 1..$ROUNDS LOOP
        t := clock_timestamp();
        FOR i IN 1..n LOOP
            PERFORM tenancy.set_context_token(tok);
        END LOOP;
        cached := least(cached, extract(epoch FROM clock_timestamp() - t) * 1e6 / n);
        t := clock_timestamp();
        FOR i IN 1..n LOOP
            PERFORM mint(round * n + i);
        END LOOP;
        minting := least(minting, extract(epoch FROM clock_timestamp() - t) * 1e6 / n);
        t := clock_timestamp();
        FOR i IN 1..n LOOP
            PERFORM tenancy.set_context_token(mint(-(round * n + i)));
        END LOOP;
        fresh := least(fresh, extract(epoch FROM clock_timestamp() - t) * 1e6 / n);
    END LOOP;
    RAISE NOTICE '| tenancy.set_context_token(): a token verified before | % |', round(cached, 2);
    RAISE NOTICE '| tenancy.set_context_token(): a fresh HS256 token (minting it in SQL taken off) | % |', round(fresh - minting, 2);
END
\$\$;
DELETE FROM tenancy.token_keys WHERE kid = 'bench';
SQL
echo
echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; PostgreSQL $("$bin/postgres" --version | awk '{print $3}'), default settings."
