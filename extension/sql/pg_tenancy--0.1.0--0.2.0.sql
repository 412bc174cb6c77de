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
--   `tenancy apply` keeps it so, and takes it from read-only roles, which get the new mark
--   tenancy_reader instead (run it again after this update).
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
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_reader') THEN
        CREATE ROLE tenancy_reader NOLOGIN;
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

-- Active users are a log without a unique key: concurrent sessions of one user never wait for
-- each other's transaction when they note the user (readers count distinct users).
ALTER TABLE tenancy.active_users DROP CONSTRAINT active_users_pkey;
CREATE INDEX active_users_org_id_period_idx ON tenancy.active_users (org_id, period, user_id);

-- Sign-up chooses among self-service plans only.
ALTER TABLE tenancy.plans ADD COLUMN self_service boolean NOT NULL DEFAULT false;
UPDATE tenancy.plans SET self_service = true WHERE name = 'free';

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

-- Deleted rows' shares are forgotten by the library now: the ids are read as the table's owner,
-- never cast as a superuser (the plpgsql trigger was SECURITY DEFINER).
CREATE OR REPLACE FUNCTION tenancy."forget_shares"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'forget_shares_wrapper';

CREATE FUNCTION tenancy."_revoke_reshares"(
	"relation" oid,
	"owner" uuid,
	"row_id" TEXT,
	"grantee" uuid,
	"may_write" bool,
	"may_reshare" bool
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_revoke_reshares_wrapper';

-- shares_of() casts ids as the table's owner (a domain's CHECK may run that owner's code).
CREATE FUNCTION tenancy."canonical_id"(
	"relation" oid,
	"id" TEXT
) RETURNS TEXT
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'canonical_id_wrapper';

-- tenancy verify runs the audited tables' code in a security-restricted operation.
CREATE FUNCTION tenancy."run_restricted"(
	"role" TEXT,
	"statement" TEXT,
	"ignore_force" bool DEFAULT false
) RETURNS jsonb
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'run_restricted_wrapper';

-- Makes a tenant table shareable: registers it, and adds the triggers that keep shares sound.
-- The policy compiler emits calls to it for `kind = "shareable"`; DBAs may too.
CREATE OR REPLACE FUNCTION tenancy.enable_sharing(
    relation regclass,
    id_column text DEFAULT 'id',
    tenant_column text DEFAULT 'org_id',
    visibility_column text DEFAULT NULL,
    share_permission text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id_type text;
    part regclass;
BEGIN
    IF relation IS NULL OR id_column IS NULL OR tenant_column IS NULL THEN
        RAISE EXCEPTION 'invalid argument: relation, id_column and tenant_column must not be null' USING ERRCODE = '22023';
    END IF;
    PERFORM tenancy._require_column(relation, tenant_column, '{uuid}', 'uuid');
    SELECT format_type(atttypid, atttypmod) INTO id_type FROM pg_attribute
     WHERE attrelid = relation AND attname = id_column AND attnum > 0 AND NOT attisdropped;
    IF id_type IS NULL THEN
        RAISE EXCEPTION 'table % has no column "%"', relation, id_column USING ERRCODE = '42703';
    END IF;
    IF visibility_column IS NOT NULL THEN
        PERFORM tenancy._require_column(relation, visibility_column, '{text,character varying}', 'text');
    END IF;
    IF share_permission IS NOT NULL AND share_permission !~ '^[a-z][a-z0-9_.]*$' THEN
        RAISE EXCEPTION 'invalid permission name "%"', share_permission USING ERRCODE = '22023',
            HINT = 'Permissions are lowercase dotted names such as documents.share.';
    END IF;
    INSERT INTO tenancy.shareable_tables AS t VALUES (relation, tenant_column, id_column, id_type, visibility_column, share_permission)
    ON CONFLICT ON CONSTRAINT shareable_tables_pkey DO UPDATE
        SET tenant_column = excluded.tenant_column, id_column = excluded.id_column, id_type = excluded.id_type,
            visibility_column = excluded.visibility_column, share_permission = excluded.share_permission
        WHERE (t.tenant_column, t.id_column, t.id_type, t.visibility_column, t.share_permission)
              IS DISTINCT FROM (excluded.tenant_column, excluded.id_column, excluded.id_type,
                                excluded.visibility_column, excluded.share_permission);
    -- A shared row keeps its organization and id; only its organization changes its visibility.
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER tenancy_protect_shared BEFORE UPDATE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION tenancy.protect_shared_row(%L, %L, %L)',
        relation, tenant_column, id_column, coalesce(visibility_column, ''));
    -- Deleted rows take their shares with them, so an id used again is not shared by accident:
    -- on the table and on each of its partitions (statement triggers are not cloned to
    -- partitions, and a DELETE or TRUNCATE may name a partition; run this again after adding
    -- partitions, as tenancy apply does).
    FOR part IN SELECT p.relid FROM pg_partition_tree(relation) p
                UNION SELECT relation ORDER BY 1 LOOP
        CONTINUE WHEN (SELECT c.relkind FROM pg_class c WHERE c.oid = part) NOT IN ('r', 'p');
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER tenancy_forget_shares AFTER DELETE ON %s REFERENCING OLD TABLE AS tenancy_gone '
            'FOR EACH STATEMENT EXECUTE FUNCTION tenancy.forget_shares(%L, %L)',
            part, tenant_column, id_column);
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER tenancy_forget_shares_truncate AFTER TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION tenancy.forget_shares(%L, %L)',
            part, tenant_column, id_column);
    END LOOP;
END
$$;

-- Undoes enable_sharing: the table's shares are deleted, so that making it shareable again
-- later brings no old grant back; its sharing triggers and its registration go too. True when
-- the table was shareable; on any other table it changes nothing. The policy compiler emits a
-- call for every table that its policies do not make shareable.
CREATE OR REPLACE FUNCTION tenancy.disable_sharing(relation regclass) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
BEGIN
    IF relation IS NULL THEN
        RAISE EXCEPTION 'invalid argument: relation must not be null' USING ERRCODE = '22023';
    END IF;
    DELETE FROM tenancy.shareable_tables t WHERE t.relation = disable_sharing.relation;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM tenancy.shares s WHERE s.relation = disable_sharing.relation;
    PERFORM tenancy._drop_trigger(relation, 'tenancy_protect_shared');
    FOR part IN SELECT p.relid FROM pg_partition_tree(relation) p
                UNION SELECT relation ORDER BY 1 LOOP
        PERFORM tenancy._drop_trigger(part, 'tenancy_forget_shares');
        PERFORM tenancy._drop_trigger(part, 'tenancy_forget_shares_truncate');
    END LOOP;
    RETURN true;
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
CREATE OR REPLACE FUNCTION tenancy._shared_row(
    relation regclass, row_id text, org_id uuid, verb text,
    OUT t tenancy.shareable_tables, OUT owner uuid, OUT mine tenancy.shares, OUT id text
)
LANGUAGE plpgsql STABLE
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
         ORDER BY s.granted_at, s.owner_org LIMIT 1;
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
        PERFORM tenancy._revoke_reshares(relation, r.owner, id, org_id,
                                         'write' = ANY (permissions), 'reshare' = ANY (permissions));
    END IF;
END
$$;

-- A reshare holds only if the share it passes on still allows it when its transaction commits:
-- checked then (a deferred constraint trigger), with the share it passes on locked for that
-- moment. An unshare() or a narrower share() of it that commits first makes the reshare's
-- transaction fail (40001, retry); one that comes later waits for that commit and then takes the
-- reshare away (tenancy._revoke_reshares()). No revocation is lost, and no organization can hold
-- a lock that keeps another from revoking a share or deleting its row.
CREATE FUNCTION tenancy._check_reshare() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent tenancy.shares;
BEGIN
    IF NEW.granted_by_org = NEW.owner_org THEN
        RETURN NULL;
    END IF;
    -- Ended since, by this transaction?
    PERFORM FROM tenancy.shares s
     WHERE s.relation = NEW.relation AND s.owner_org = NEW.owner_org AND s.row_id = NEW.row_id
       AND s.grantee_org = NEW.grantee_org AND s.granted_by_org = NEW.granted_by_org;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO parent FROM tenancy.shares s
     WHERE s.relation = NEW.relation AND s.owner_org = NEW.owner_org AND s.row_id = NEW.row_id
       AND s.grantee_org = NEW.granted_by_org
       FOR SHARE;
    IF NOT FOUND OR NOT parent.can_reshare OR (NEW.can_write AND NOT parent.can_write) THEN
        RAISE EXCEPTION 'row % of % can no longer be shared on by organization %', NEW.row_id, NEW.relation, NEW.granted_by_org
            USING ERRCODE = '40001',
                  DETAIL = 'The share that organization received was ended or narrowed while this transaction passed it on.',
                  HINT = 'Retry the transaction.';
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER reshare_still_allowed AFTER INSERT OR UPDATE ON tenancy.shares
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.granted_by_org IS DISTINCT FROM NEW.owner_org)
    EXECUTE FUNCTION tenancy._check_reshare();

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
    PERFORM tenancy._revoke_reshares(relation, r.owner, id, org_id, false, false);
    RETURN true;
END
$$;

-- The reshares a shrinking share takes with it are revoked by the library now (latest snapshot).
DROP FUNCTION tenancy._trim_reshares(regclass, uuid, text, uuid, boolean, boolean);

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
        -- Cast by the table's owner: the id's type may run code that owner wrote.
        canonical := tenancy.canonical_id(relation, id);
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

-- Shareable tables get their forget_shares triggers on their partitions too.
SELECT tenancy.enable_sharing(t.relation, t.id_column, t.tenant_column, t.visibility_column, t.share_permission)
  FROM tenancy.shareable_tables t ORDER BY t.relation;

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
    tenancy.shares_of(regclass, text), tenancy.shares_of(regclass), tenancy.shares_of(regclass, anyelement),
    tenancy.canonical_id(oid, text)
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
