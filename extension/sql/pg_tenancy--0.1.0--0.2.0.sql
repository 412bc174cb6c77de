-- pg_tenancy 0.1.0 -> 0.2.0: isolation holds when the application's SQL is hostile.
--
-- Install the 0.2.0 library first (make install), restart the server (the library is
-- preloaded), then, as a superuser, in every database that has the extension:
--
--     ALTER EXTENSION pg_tenancy UPDATE;
--
-- What changes for applications (see README, "Upgrading"):
-- - The functions that write (sign-up, members, sharing, record_usage) need the new role
--   tenancy_writer. This script grants it to the roles the compiled policies let write
--   (their tenancy_insert/update/delete policies), so running applications keep working;
--   `tenancy apply` keeps it so, and takes it from read-only roles.
-- - user_organizations() and org_id() answer only for the context's user: call
--   tenancy.set_user_context(user_id) first (or pass a DBA's connection).
-- - usage() and usage_report() return numeric amounts.
-- - EXPLAIN of queries under row-level security is refused for the roles it applies to.
-- - share() accepts an organization id that does not exist, like any other.
-- Run `tenancy apply` again afterwards: it also revokes temporary tables, statistics and large
-- objects from PUBLIC.

\echo Use "ALTER EXTENSION pg_tenancy UPDATE TO '0.2.0'" to load this file. \quit

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_writer') THEN
        CREATE ROLE tenancy_writer NOLOGIN;
    END IF;
END
$$;

-- Tables -----------------------------------------------------------------------------------
-- Length limits (an existing name over 200 characters or user id over 256 bytes stops the
-- update here: shorten it first).
ALTER TABLE tenancy.organizations DROP CONSTRAINT organizations_name_check,
    ADD CONSTRAINT organizations_name_check CHECK (btrim(name) <> '' AND char_length(name) <= 200);
ALTER TABLE tenancy.members DROP CONSTRAINT members_user_id_check,
    ADD CONSTRAINT members_user_id_check CHECK (btrim(user_id) <> '' AND octet_length(user_id) <= 256);

CREATE TABLE tenancy.usage_sources (
    metric        text NOT NULL REFERENCES tenancy.resources (name) ON UPDATE CASCADE ON DELETE CASCADE,
    relation      regclass NOT NULL,
    tenant_column text NOT NULL,
    amount_column text,
    PRIMARY KEY (metric, relation)
);
COMMENT ON TABLE tenancy.usage_sources IS 'Which tables record which metric as rows are written (tenancy.enable_usage()).';
SELECT pg_catalog.pg_extension_config_dump('tenancy.usage_sources', '');

-- Shares to an organization that does not exist are kept like any other (see tenancy.shares).
ALTER TABLE tenancy.shares DROP CONSTRAINT shares_grantee_org_fkey;

-- New functions in the library ------------------------------------------------------------
CREATE FUNCTION tenancy."set_user_context"(
	"user_id" TEXT
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'set_user_context_wrapper';

CREATE FUNCTION tenancy."membership_changed_trigger"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'membership_changed_trigger_wrapper';

CREATE FUNCTION tenancy."_own_row"(
	"relation" oid,
	"id" TEXT,
	"org" uuid
) RETURNS TABLE (
	"id" TEXT,
	"owned" bool
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_own_row_wrapper';

-- Answers only for the context's user by default.
CREATE OR REPLACE FUNCTION tenancy."user_organizations"(
	"user_id" TEXT DEFAULT NULL
) RETURNS TABLE (
	"org_id" uuid,
	"slug" TEXT,
	"name" TEXT,
	"role" TEXT,
	"status" TEXT
)
STABLE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'user_organizations_wrapper';

-- Who reads the catalog: one policy for the organization, one for tenancy_admin -------------
ALTER POLICY organizations_own ON tenancy.organizations USING (id = (SELECT tenancy.current_org()));
CREATE POLICY organizations_admin ON tenancy.organizations FOR SELECT TO tenancy_admin USING (true);
ALTER POLICY members_own ON tenancy.members USING (org_id = (SELECT tenancy.current_org()));
CREATE POLICY members_admin ON tenancy.members FOR SELECT TO tenancy_admin USING (true);
ALTER POLICY quota_overrides_own ON tenancy.quota_overrides USING (org_id = (SELECT tenancy.current_org()));
CREATE POLICY quota_overrides_admin ON tenancy.quota_overrides FOR SELECT TO tenancy_admin USING (true);
ALTER POLICY usage_events_own ON tenancy.usage_events USING (org_id = (SELECT tenancy.current_org()));
CREATE POLICY usage_events_admin ON tenancy.usage_events FOR SELECT TO tenancy_admin USING (true);
ALTER POLICY active_users_own ON tenancy.active_users USING (org_id = (SELECT tenancy.current_org()));
CREATE POLICY active_users_admin ON tenancy.active_users FOR SELECT TO tenancy_admin USING (true);
ALTER POLICY shares_own ON tenancy.shares
    USING (grantee_org = (SELECT tenancy.current_org()) OR owner_org = (SELECT tenancy.current_org())
           OR granted_by_org = (SELECT tenancy.current_org()));
CREATE POLICY shares_admin ON tenancy.shares FOR SELECT TO tenancy_admin USING (true);
GRANT SELECT ON tenancy.quota_sources, tenancy.usage_sources TO tenancy_admin;
-- PUBLIC reads them (through their policies); a grant of its own to tenancy_admin is redundant.
REVOKE SELECT ON tenancy.usage_events, tenancy.active_users FROM tenancy_admin;

-- Registrations reach every backend's cache at commit; membership changes every session's context.
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.quota_sources
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.usage_sources
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.shareable_tables
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER membership_changed AFTER UPDATE OR DELETE ON tenancy.members
    FOR EACH ROW EXECUTE FUNCTION tenancy.membership_changed_trigger();
CREATE TRIGGER membership_changed_truncate AFTER TRUNCATE ON tenancy.members
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.membership_changed_trigger();
CREATE TRIGGER membership_changed AFTER UPDATE OF status OR DELETE ON tenancy.organizations
    FOR EACH ROW EXECUTE FUNCTION tenancy.membership_changed_trigger();
CREATE TRIGGER membership_changed_truncate AFTER TRUNCATE ON tenancy.organizations
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.membership_changed_trigger();
CREATE TRIGGER membership_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.membership_changed_trigger();

-- SQL functions that changed -----------------------------------------------------------------
-- usage() and usage_report() now sum in numeric (a changed return type needs DROP).
DROP FUNCTION tenancy.usage(uuid, text, timestamptz, timestamptz);
DROP FUNCTION tenancy.usage_report(timestamptz, timestamptz);
-- Canonical ids are computed by the table's owner now (tenancy._own_row()).
DROP FUNCTION tenancy._canonical_row_id(regclass, text);

-- Undoes enable_quota and enable_usage on a table for every resource not in `keep`: their
-- triggers go, and their registrations. Returns how many resources it undid. The policy
-- compiler emits a call for every table, keeping the quotas and metrics its policies declare
-- on it, so that one removed from the policy files stops being counted.
CREATE OR REPLACE FUNCTION tenancy.keep_quotas(relation regclass, keep text[] DEFAULT '{}') RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r text;
    undone integer := 0;
BEGIN
    IF relation IS NULL OR keep IS NULL THEN
        RAISE EXCEPTION 'invalid argument: relation and keep must not be null' USING ERRCODE = '22023';
    END IF;
    FOR r IN SELECT x.name FROM tenancy.resources x WHERE x.name <> ALL (keep) ORDER BY x.name LOOP
        DELETE FROM tenancy.quota_sources s WHERE s.resource = r AND s.relation = keep_quotas.relation;
        DELETE FROM tenancy.usage_sources s WHERE s.metric = r AND s.relation = keep_quotas.relation;
        IF tenancy._drop_trigger(relation, 'tenancy_quota_' || r)::int
           + tenancy._drop_trigger(relation, 'tenancy_quota_' || r || '_truncate')::int
           + tenancy._drop_trigger(relation, 'tenancy_usage_' || r)::int > 0 THEN
            undone := undone + 1;
        END IF;
    END LOOP;
    RETURN undone;
END
$$;

-- Records a metric as rows are written into a table, inside the writing statement: one unit per
-- inserted row, or the value of an integer column (bytes uploaded, say), and then what an UPDATE
-- of that column adds (so `INSERT ... ON CONFLICT DO UPDATE` and raising the amount later are
-- metered; lowering it gives nothing back). Registers the table: the trigger refuses others.
-- For superusers; the policy compiler emits calls to it for the `[usage]` section.
CREATE OR REPLACE FUNCTION tenancy.enable_usage(
    metric text,
    relation regclass,
    tenant_column text DEFAULT 'org_id',
    amount_column text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r tenancy.resources;
BEGIN
    SELECT * INTO r FROM tenancy.resources WHERE name = enable_usage.metric;
    IF NOT FOUND OR r.kind <> 'metric' OR r.name = 'active_users' THEN
        RAISE EXCEPTION 'unknown metric "%"', enable_usage.metric USING ERRCODE = '22023',
            DETAIL = (SELECT 'Metrics recorded from tables are: ' || string_agg(name, ', ' ORDER BY name) || '.'
                        FROM tenancy.resources WHERE kind = 'metric' AND name <> 'active_users');
    END IF;
    PERFORM tenancy._require_column(relation, tenant_column, '{uuid}', 'uuid');
    IF amount_column IS NOT NULL THEN
        PERFORM tenancy._require_column(relation, amount_column, '{bigint,integer,smallint}', 'integer');
    END IF;
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER %I AFTER INSERT%s ON %s '
        'FOR EACH ROW EXECUTE FUNCTION tenancy.usage_trigger(%L, %L, %L)',
        'tenancy_usage_' || r.name, coalesce(' OR UPDATE OF ' || quote_ident(amount_column), ''), relation,
        r.name, tenant_column, coalesce(amount_column, ''));
    INSERT INTO tenancy.usage_sources AS s (metric, relation, tenant_column, amount_column)
    VALUES (r.name, relation, tenant_column, amount_column)
    ON CONFLICT ON CONSTRAINT usage_sources_pkey DO UPDATE
        SET tenant_column = excluded.tenant_column, amount_column = excluded.amount_column
        WHERE (s.tenant_column, s.amount_column) IS DISTINCT FROM (excluded.tenant_column, excluded.amount_column);
END
$$;

-- Usage of one metric by one organization in [from, to) (default: the current month, UTC), as
-- numeric: a sum never fails for want of range. active_users counts distinct users over the
-- months that overlap the range. Other organizations' usage reads as 0, like an organization
-- that does not exist.
CREATE FUNCTION tenancy.usage(
    org_id uuid,
    metric text,
    "from" timestamptz DEFAULT date_trunc('month', now(), 'UTC'),
    "to" timestamptz DEFAULT NULL
) RETURNS numeric
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    upto timestamptz := coalesce("to", "from" + interval '1 month');
BEGIN
    IF NOT EXISTS (SELECT FROM tenancy.resources r WHERE r.name = usage.metric AND r.kind = 'metric') THEN
        RAISE EXCEPTION 'unknown metric "%"', metric USING ERRCODE = '22023',
            DETAIL = (SELECT 'Valid metrics are: ' || string_agg(name, ', ' ORDER BY name) || '.'
                        FROM tenancy.resources WHERE kind = 'metric');
    END IF;
    IF upto <= "from" THEN
        RAISE EXCEPTION 'invalid period: "to" (%) must be after "from" (%)', upto, "from" USING ERRCODE = '22023';
    END IF;
    IF metric = 'active_users' THEN
        RETURN (SELECT count(DISTINCT a.user_id) FROM tenancy.active_users a
                 WHERE a.org_id = usage.org_id
                   AND a.period >= (date_trunc('month', "from", 'UTC') AT TIME ZONE 'UTC')::date
                   AND a.period < (upto AT TIME ZONE 'UTC')::date);
    END IF;
    RETURN (SELECT coalesce(sum(e.amount), 0) FROM tenancy.usage_events e
             WHERE e.org_id = usage.org_id AND e.metric = usage.metric
               AND e.recorded_at >= "from" AND e.recorded_at < upto);
END
$$;

-- What an invoice needs: one row per organization and metric for a period (default: the
-- current month, UTC), with the plan's limit. Amounts are numeric, so one organization's usage
-- can never make the report fail for all of them. DBAs see every organization.
CREATE FUNCTION tenancy.usage_report(
    period_start timestamptz DEFAULT date_trunc('month', now(), 'UTC'),
    period_end timestamptz DEFAULT NULL
) RETURNS TABLE (org_id uuid, slug text, plan text, metric text, amount numeric, quota bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH period AS (
        SELECT period_start AS s, coalesce(period_end, period_start + interval '1 month') AS e
    ), used AS (
        SELECT e.org_id, e.metric, sum(e.amount) AS amount
          FROM tenancy.usage_events e, period p
         WHERE e.recorded_at >= p.s AND e.recorded_at < p.e
         GROUP BY 1, 2
        UNION ALL
        SELECT a.org_id, 'active_users', count(DISTINCT a.user_id)::numeric
          FROM tenancy.active_users a, period p
         WHERE a.period >= (date_trunc('month', p.s, 'UTC') AT TIME ZONE 'UTC')::date
           AND a.period < (p.e AT TIME ZONE 'UTC')::date
         GROUP BY 1
    )
    SELECT o.id, o.slug, o.plan, r.name, coalesce(u.amount, 0),
           coalesce(q.quota, CASE WHEN q.org_id IS NULL THEN pl.quota END)
      FROM tenancy.organizations o
     CROSS JOIN tenancy.resources r
      LEFT JOIN used u ON u.org_id = o.id AND u.metric = r.name
      LEFT JOIN tenancy.quota_overrides q ON q.org_id = o.id AND q.resource = r.name
      LEFT JOIN tenancy.plan_limits pl ON pl.plan = o.plan AND pl.resource = r.name
     WHERE r.kind = 'metric'
     ORDER BY o.slug, r.name
$$;

-- Shares addressed to an organization id that does not exist are kept (see tenancy.shares);
-- they must never reach an organization created later with that id, and those an organization
-- received go with it.
CREATE FUNCTION tenancy._forget_grantee() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM tenancy.shares s
     WHERE s.grantee_org = CASE WHEN TG_OP = 'INSERT' THEN NEW.id ELSE OLD.id END;
    RETURN NULL;
END
$$;

CREATE TRIGGER forget_grantee AFTER INSERT OR DELETE ON tenancy.organizations
    FOR EACH ROW EXECUTE FUNCTION tenancy._forget_grantee();


-- Deleted rows take their shares with them. Runs as the catalog owner (the application role
-- cannot write tenancy.shares), so it first checks that its table was registered by
-- enable_sharing() with these columns.
CREATE OR REPLACE FUNCTION tenancy.forget_shares() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM tenancy.shareable_tables t
                    WHERE t.relation = TG_RELID AND t.tenant_column = TG_ARGV[0] AND t.id_column = TG_ARGV[1]) THEN
        RAISE EXCEPTION 'tenancy.forget_shares() is not registered for table %.%', TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = '42501', DETAIL = 'Its triggers work only on tables registered by tenancy.enable_sharing().',
                  HINT = 'pg_tenancy''s trigger functions are installed by tenancy apply (as a superuser), not by CREATE TRIGGER.';
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM tenancy.shares WHERE relation = TG_RELID;
    ELSE
        EXECUTE format('DELETE FROM tenancy.shares s USING tenancy_gone g '
                       'WHERE s.relation = $1 AND s.owner_org = g.%I AND s.row_id = g.%I::text',
                       TG_ARGV[0], TG_ARGV[1])
            USING TG_RELID;
    END IF;
    RETURN NULL;
END
$$;

-- The sharing functions run as the catalog owner: they check the tenant context themselves.
-- What share() and unshare() (`verb`) check first, in this order:
-- - the row: the current organization's own row with that id, else one shared with it (ids are
--   unique per organization only). A row another organization owns and has not shared reads as
--   a row that does not exist. `id` is the id in its canonical text form (as shares store it),
--   and whether the row is the organization's own is read from the table as the table's owner
--   (tenancy._own_row(), in a security-restricted operation);
-- - the right to share: the admin role, or the table's share permission;
-- - the organization to share with (or stop sharing with) is given.
-- The share the organization received is locked (FOR SHARE): an unshare() or a narrower
-- share() of it by the organization that granted it waits until this transaction ends, then
-- sees what it passed on. No revocation is lost.
CREATE OR REPLACE FUNCTION tenancy._shared_row(
    relation regclass, row_id text, org_id uuid, verb text,
    OUT t tenancy.shareable_tables, OUT owner uuid, OUT mine tenancy.shares, OUT id text
)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cur uuid := tenancy.current_org();
    own boolean;
BEGIN
    IF cur IS NULL THEN
        RAISE EXCEPTION 'no tenant context' USING ERRCODE = '42501',
            DETAIL = format('%s requires a tenant context, and none is set.',
                            CASE verb WHEN 'share' THEN 'sharing a row' ELSE 'unsharing a row' END),
            HINT = 'Call tenancy.set_context(org_id, user_id) at the start of the transaction.';
    END IF;
    IF relation IS NULL OR row_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument: % must not be null', CASE WHEN relation IS NULL THEN 'relation' ELSE 'row_id' END
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO t FROM tenancy.shareable_tables s WHERE s.relation = _shared_row.relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not shareable', relation USING ERRCODE = '42809',
            HINT = 'Declare it with kind = "shareable" in the policy files and apply them.';
    END IF;
    -- The canonical text of the id (an invalid one fails here, as its type says).
    SELECT o.id, o.owned INTO id, own FROM tenancy._own_row(relation, row_id, cur) o;
    IF own THEN
        owner := cur;
    ELSE
        SELECT * INTO mine FROM tenancy.shares s
         WHERE s.relation = _shared_row.relation AND s.row_id = id AND s.grantee_org = cur
         ORDER BY s.granted_at, s.owner_org LIMIT 1
           FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'row % of % does not exist', row_id, relation USING ERRCODE = 'P0002';
        END IF;
        owner := mine.owner_org;
    END IF;
    IF NOT (tenancy.has_role('admin') OR (t.share_permission IS NOT NULL AND tenancy.has_permission(t.share_permission))) THEN
        RAISE EXCEPTION 'permission denied to % rows of %', verb, t.relation USING ERRCODE = '42501',
            DETAIL = 'Sharing needs the admin role' || coalesce(' or the ' || t.share_permission || ' permission', '') || '.';
    END IF;
    IF org_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument: org_id must not be null' USING ERRCODE = '22023';
    END IF;
END
$$;

-- Shares one row with another organization. permissions: read (always implied), write (update,
-- never delete) and reshare (share it on, never with more than it was given). The owning
-- organization's admins (or holders of the table's share permission) may share; a grantee may
-- share on only with reshare. Sharing again replaces the permissions. An organization id that
-- does not exist is accepted like any other (the share reaches nobody): the answer is the same
-- for every organization the caller cannot see.
CREATE OR REPLACE FUNCTION tenancy.share(relation regclass, row_id text, org_id uuid, permissions text[] DEFAULT '{read}')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    id text;
    cur uuid := tenancy.current_org();
    bad text;
    existing tenancy.shares;
BEGIN
    r := tenancy._shared_row(relation, row_id, org_id, 'share');
    id := r.id;
    IF permissions IS NULL OR cardinality(permissions) = 0 THEN
        RAISE EXCEPTION 'invalid argument: permissions must not be null or empty' USING ERRCODE = '22023',
            HINT = 'Valid permissions are: read, write, reshare.';
    END IF;
    SELECT string_agg(DISTINCT coalesce(p, 'NULL'), ', ') INTO bad FROM unnest(permissions) p
     WHERE p IS NULL OR p NOT IN ('read', 'write', 'reshare');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown share permission "%"', bad USING ERRCODE = '22023',
            DETAIL = 'Valid permissions are: read, write, reshare.';
    END IF;
    IF (r.mine).relation IS NOT NULL AND NOT (r.mine).can_reshare THEN
        RAISE EXCEPTION 'permission denied to share row % of % on', id, relation USING ERRCODE = '42501',
            DETAIL = 'It was shared with your organization without the reshare permission.';
    END IF;
    IF (r.mine).relation IS NOT NULL AND (('write' = ANY (permissions) AND NOT (r.mine).can_write)) THEN
        RAISE EXCEPTION 'permission denied to grant write on row % of %', id, relation USING ERRCODE = '42501',
            DETAIL = 'Your organization may only read it, and cannot grant more than it was given.';
    END IF;
    IF org_id = r.owner OR org_id = cur THEN
        RAISE EXCEPTION 'row % of % cannot be shared with %', id, relation,
            CASE WHEN org_id = r.owner THEN 'the organization that owns it' ELSE 'your own organization' END
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO existing FROM tenancy.shares s
     WHERE s.relation = share.relation AND s.owner_org = r.owner AND s.row_id = id AND s.grantee_org = org_id
       FOR UPDATE;
    IF FOUND AND existing.granted_by_org <> cur AND r.owner <> cur THEN
        RAISE EXCEPTION 'row % of % is already shared with organization % by another organization', id, relation, org_id
            USING ERRCODE = '42501', HINT = 'Only the organization that granted a share, or the row''s owner, may change it.';
    END IF;
    INSERT INTO tenancy.shares AS s (relation, owner_org, row_id, grantee_org, can_write, can_reshare, granted_by_org, granted_by)
    VALUES (relation, r.owner, id, org_id, 'write' = ANY (permissions), 'reshare' = ANY (permissions),
            cur, tenancy.current_user_id())
    ON CONFLICT ON CONSTRAINT shares_pkey DO UPDATE
        SET can_write = excluded.can_write, can_reshare = excluded.can_reshare,
            granted_by_org = excluded.granted_by_org, granted_by = excluded.granted_by, granted_at = now();
    -- Taking rights away from a grantee takes them from the shares it passed on.
    IF existing.relation IS NOT NULL THEN
        PERFORM tenancy._trim_reshares(relation, r.owner, id, org_id,
                                       'write' = ANY (permissions), 'reshare' = ANY (permissions));
    END IF;
END
$$;

-- After a grantee's share shrinks or ends: what it passed on shrinks or ends with it, and what
-- was passed on from there. Level by level, each its own statement, so that a level that had to
-- wait for a reshare in progress (which holds a lock on the share it passes on) sees the shares
-- that reshare committed; iterative, so no chain is too deep to revoke. The shares of one row
-- form a tree (one share per grantee), so each level is new.
CREATE OR REPLACE FUNCTION tenancy._trim_reshares(
    relation regclass, owner uuid, id text, grantee uuid, may_write boolean, may_reshare boolean
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    frontier uuid[] := ARRAY[grantee];
BEGIN
    IF may_reshare AND may_write THEN
        RETURN;
    END IF;
    LOOP
        IF NOT may_reshare THEN
            WITH gone AS (
                DELETE FROM tenancy.shares x
                 WHERE x.relation = _trim_reshares.relation AND x.owner_org = owner AND x.row_id = id
                   AND x.granted_by_org = ANY (frontier)
                RETURNING x.grantee_org)
            SELECT array_agg(g.grantee_org) INTO frontier FROM gone g;
        ELSE
            WITH narrowed AS (
                UPDATE tenancy.shares x SET can_write = false
                 WHERE x.relation = _trim_reshares.relation AND x.owner_org = owner AND x.row_id = id
                   AND x.granted_by_org = ANY (frontier) AND x.can_write
                RETURNING x.grantee_org)
            SELECT array_agg(n.grantee_org) INTO frontier FROM narrowed n;
        END IF;
        EXIT WHEN frontier IS NULL;
    END LOOP;
END
$$;

-- Stops sharing a row with an organization, and everything that organization shared on.
-- The owning organization may end any share of its rows; a grantee those it granted.
-- Returns whether there was such a share.
CREATE OR REPLACE FUNCTION tenancy.unshare(relation regclass, row_id text, org_id uuid)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    id text;
    cur uuid := tenancy.current_org();
    existing tenancy.shares;
BEGIN
    r := tenancy._shared_row(relation, row_id, org_id, 'unshare');
    id := r.id;
    SELECT * INTO existing FROM tenancy.shares s
     WHERE s.relation = unshare.relation AND s.owner_org = r.owner AND s.row_id = id AND s.grantee_org = org_id
       AND (r.owner = cur OR s.granted_by_org = cur)
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM tenancy.shares s
     WHERE s.relation = unshare.relation AND s.owner_org = r.owner AND s.row_id = id AND s.grantee_org = org_id;
    PERFORM tenancy._trim_reshares(relation, r.owner, id, org_id, false, false);
    RETURN true;
END
$$;

-- The shares of one row (or of every row of a table) that concern the current organization:
-- all shares of its own rows, and those it received or granted. `id` may be in any spelling its
-- type accepts.
CREATE OR REPLACE FUNCTION tenancy.shares_of(relation regclass, id text)
RETURNS TABLE (row_id text, org_id uuid, permissions text[], granted_by_org uuid, granted_by text, granted_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id_type text;
    canonical text := id;
BEGIN
    SELECT t.id_type INTO id_type FROM tenancy.shareable_tables t WHERE t.relation = shares_of.relation;
    IF id IS NOT NULL AND id_type IS NOT NULL THEN
        EXECUTE format('SELECT ($1::%s)::text', id_type) INTO canonical USING id;
    END IF;
    RETURN QUERY
    SELECT s.row_id, s.grantee_org,
           ARRAY['read'] || CASE WHEN s.can_write THEN ARRAY['write'] ELSE '{}' END
                         || CASE WHEN s.can_reshare THEN ARRAY['reshare'] ELSE '{}' END,
           s.granted_by_org, s.granted_by, s.granted_at
      FROM tenancy.shares s
     WHERE s.relation = shares_of.relation AND (canonical IS NULL OR s.row_id = canonical)
     ORDER BY s.row_id, s.granted_at, s.grantee_org;
END
$$;

-- Tables metered by [usage] in 0.1.0 are registered now, and meter updates of their amount.
DO $$
DECLARE
    t record;
    args text[];
BEGIN
    FOR t IN SELECT tg.tgrelid::regclass AS relation, tg.tgargs
               FROM pg_catalog.pg_trigger tg
              WHERE tg.tgfoid = 'tenancy.usage_trigger'::regproc AND tg.tgparentid = 0 AND NOT tg.tgisinternal
              ORDER BY 1
    LOOP
        args := string_to_array(encode(t.tgargs, 'escape'), '\000');
        PERFORM tenancy.enable_usage(args[1], t.relation, args[2], nullif(args[3], ''));
    END LOOP;
END
$$;

-- The roles the compiled policies let write keep calling the writing functions.
DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT pg_catalog.quote_ident(a.rolname)
               FROM pg_catalog.pg_policy p, unnest(p.polroles) AS pr(oid)
               JOIN pg_catalog.pg_roles a ON a.oid = pr.oid
              WHERE p.polname IN ('tenancy_insert', 'tenancy_update', 'tenancy_delete')
              ORDER BY 1
    LOOP
        EXECUTE format('GRANT tenancy_writer TO %s', r);
        RAISE NOTICE 'pg_tenancy: granted tenancy_writer to %', r;
    END LOOP;
END
$$;

-- Who may execute each function: as extension/sql/privileges.sql --------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tenancy FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    tenancy.current_org(), tenancy.current_user_id(), tenancy.current_member_role(),
    tenancy.has_role(text), tenancy.has_permission(text), tenancy.is_admin(),
    tenancy.set_context(uuid, text), tenancy.set_session_context(uuid, text),
    tenancy.set_user_context(text), tenancy.clear_context(),
    tenancy.user_organizations(text), tenancy.org_id(text, text),
    tenancy.quota(uuid, text), tenancy.quotas(uuid),
    tenancy.usage(uuid, text, timestamptz, timestamptz), tenancy.usage_report(timestamptz, timestamptz),
    tenancy.shares_of(regclass, text), tenancy.shares_of(regclass), tenancy.shares_of(regclass, anyelement)
TO PUBLIC;

GRANT EXECUTE ON FUNCTION
    tenancy.create_organization(text, text, text, text, uuid, uuid),
    tenancy.add_member(uuid, text, text), tenancy.update_member(uuid, text, text),
    tenancy.remove_member(uuid, text), tenancy.set_organization_status(uuid, text),
    tenancy.share(regclass, text, uuid, text[]), tenancy.share(regclass, anyelement, uuid, text[]),
    tenancy.unshare(regclass, text, uuid), tenancy.unshare(regclass, anyelement, uuid),
    tenancy.record_usage(text, bigint), tenancy.try_record_usage(text, bigint)
TO tenancy_writer, tenancy_admin;

GRANT EXECUTE ON FUNCTION
    tenancy.set_plan(uuid, text), tenancy.set_quota(uuid, text, bigint),
    tenancy.record_usage_for(uuid, text, bigint)
TO tenancy_admin;
