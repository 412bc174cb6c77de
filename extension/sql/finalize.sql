-- The catalog follows the same rules as application data: under a tenant context a role sees
-- only its own organization and its members; without one, nothing. DBAs see everything.
-- Nobody but the owner writes the catalog directly: the management functions do.

GRANT USAGE ON SCHEMA tenancy TO PUBLIC;
GRANT SELECT ON tenancy.plans, tenancy.roles TO PUBLIC;
GRANT SELECT ON tenancy.organizations, tenancy.members TO PUBLIC;

ALTER TABLE tenancy.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY organizations_own ON tenancy.organizations FOR SELECT
    USING (id = (SELECT tenancy.current_org()) OR (SELECT tenancy.is_admin()));

ALTER TABLE tenancy.members ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.members FORCE ROW LEVEL SECURITY;
CREATE POLICY members_own ON tenancy.members FOR SELECT
    USING (org_id = (SELECT tenancy.current_org()) OR (SELECT tenancy.is_admin()));

-- Quotas: everyone may read what plans offer; DBAs (tenancy_admin) add plans, resources and limits.
GRANT SELECT ON tenancy.resources, tenancy.plan_limits TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON tenancy.plans, tenancy.resources, tenancy.plan_limits TO tenancy_admin;
GRANT SELECT ON tenancy.quota_sources TO tenancy_admin;
GRANT SELECT ON tenancy.quota_overrides TO PUBLIC;
ALTER TABLE tenancy.quota_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.quota_overrides FORCE ROW LEVEL SECURITY;
CREATE POLICY quota_overrides_own ON tenancy.quota_overrides FOR SELECT
    USING (org_id = (SELECT tenancy.current_org()) OR (SELECT tenancy.is_admin()));
GRANT SELECT ON tenancy.usage_events, tenancy.active_users TO tenancy_admin;

-- A limit change reaches every backend's cache at commit ("the very next statement").
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.plan_limits
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.quota_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.resources
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER UPDATE OF plan ON tenancy.organizations
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();

-- Raises 42703 "table ... has no <what> column ..." unless `relation` has column `col` of one of
-- `types`. Shared by the enable_* functions below.
CREATE FUNCTION tenancy._require_column(relation regclass, col text, types regtype[], what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = relation AND a.attname = col
                     AND a.atttypid = ANY (types) AND NOT a.attisdropped AND a.attnum > 0) THEN
        RAISE EXCEPTION 'table % has no % column "%"', relation, what, col USING ERRCODE = '42703';
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy._require_column(regclass, text, regtype[], text) FROM PUBLIC;

-- Drops a trigger if it exists, without a notice when it does not. True when it dropped one.
CREATE FUNCTION tenancy._drop_trigger(relation regclass, name text) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = relation AND t.tgname = name) THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TRIGGER %I ON %s', name, relation);
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy._drop_trigger(regclass, text) FROM PUBLIC;

-- Undoes enable_quota and enable_usage on a table for every resource not in `keep`: their
-- triggers go, and the quotas' registrations. Returns how many resources it undid. The policy
-- compiler emits a call for every table, keeping the quotas and metrics its policies declare
-- on it, so that one removed from the policy files stops being counted.
CREATE FUNCTION tenancy.keep_quotas(relation regclass, keep text[] DEFAULT '{}') RETURNS integer
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
        IF tenancy._drop_trigger(relation, 'tenancy_quota_' || r)::int
           + tenancy._drop_trigger(relation, 'tenancy_quota_' || r || '_truncate')::int
           + tenancy._drop_trigger(relation, 'tenancy_usage_' || r)::int > 0 THEN
            undone := undone + 1;
        END IF;
    END LOOP;
    RETURN undone;
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy.keep_quotas(regclass, text[]) FROM PUBLIC;

-- The enable_* functions, keep_quotas() and disable_sharing() are for superusers (who run `tenancy apply`):
-- they create triggers on application tables and write the catalog as the caller. Members of
-- tenancy_admin manage organizations, not schemas, and get a plain "permission denied".
-- Makes a table count toward a `count` resource (one row = 1) or a `sum` resource (sum of a
-- column), exactly under concurrency. The policy compiler emits calls to it; DBAs may too.
CREATE FUNCTION tenancy.enable_quota(
    resource text,
    relation regclass,
    tenant_column text DEFAULT 'org_id',
    sum_column text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r tenancy.resources;
    cols text;
    previous regclass;
BEGIN
    SELECT * INTO r FROM tenancy.resources WHERE name = enable_quota.resource;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown resource "%"', enable_quota.resource USING ERRCODE = '22023',
            DETAIL = (SELECT 'Valid resources are: ' || string_agg(name, ', ' ORDER BY name) || '.' FROM tenancy.resources);
    END IF;
    IF r.kind NOT IN ('count', 'sum') THEN
        RAISE EXCEPTION 'resource "%" is of kind %, not counted from a table', r.name, r.kind USING ERRCODE = '22023';
    END IF;
    IF (r.kind = 'sum') <> (sum_column IS NOT NULL) THEN
        RAISE EXCEPTION 'resource "%" is of kind %: %', r.name, r.kind,
            CASE WHEN r.kind = 'sum' THEN 'name the column to sum' ELSE 'it counts rows, so give no column to sum' END
            USING ERRCODE = '22023';
    END IF;
    PERFORM tenancy._require_column(relation, tenant_column, '{uuid}', 'uuid');
    IF sum_column IS NOT NULL THEN
        PERFORM tenancy._require_column(relation, sum_column, '{bigint,integer,smallint}', 'integer');
    END IF;
    cols := quote_ident(tenant_column) || coalesce(', ' || quote_ident(sum_column), '');
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER %I AFTER INSERT OR DELETE OR UPDATE OF %s ON %s '
        'FOR EACH ROW EXECUTE FUNCTION tenancy.quota_trigger(%L, %L, %L)',
        'tenancy_quota_' || r.name, cols, relation, r.name, tenant_column, coalesce(sum_column, ''));
    -- TRUNCATE fires no row triggers: it marks the table's counters for a rebuild.
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER %I AFTER TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION tenancy.quota_trigger(%L, %L, %L)',
        'tenancy_quota_' || r.name || '_truncate', relation, r.name, tenant_column, coalesce(sum_column, ''));
    -- A quota counted from another table until now: that table's triggers go, or they would
    -- keep enforcing the limit on its rows.
    SELECT s.relation INTO previous FROM tenancy.quota_sources s WHERE s.resource = r.name;
    IF previous IS NOT NULL AND previous <> relation THEN
        PERFORM tenancy._drop_trigger(previous, 'tenancy_quota_' || r.name);
        PERFORM tenancy._drop_trigger(previous, 'tenancy_quota_' || r.name || '_truncate');
    END IF;
    INSERT INTO tenancy.quota_sources (resource, relation, tenant_column, sum_column)
    VALUES (r.name, relation, tenant_column, sum_column)
    ON CONFLICT ON CONSTRAINT quota_sources_pkey DO UPDATE
        SET relation = excluded.relation, tenant_column = excluded.tenant_column, sum_column = excluded.sum_column;
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy.enable_quota(text, regclass, text, text) FROM PUBLIC;

-- Records a metric as rows are inserted into a table: one unit per row, or the sum of a column
-- (bytes uploaded, say), inside the inserting statement. The policy compiler emits calls to it
-- for the `[usage]` section; DBAs may too.
CREATE FUNCTION tenancy.enable_usage(
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
        'CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s '
        'FOR EACH ROW EXECUTE FUNCTION tenancy.usage_trigger(%L, %L, %L)',
        'tenancy_usage_' || r.name, relation, r.name, tenant_column, coalesce(amount_column, ''));
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy.enable_usage(text, regclass, text, text) FROM PUBLIC;

-- Usage is read like the rest of the catalog: the own organization under a context, all for DBAs.
GRANT SELECT ON tenancy.usage_events, tenancy.active_users TO PUBLIC;
ALTER TABLE tenancy.usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.usage_events FORCE ROW LEVEL SECURITY;
CREATE POLICY usage_events_own ON tenancy.usage_events FOR SELECT
    USING (org_id = (SELECT tenancy.current_org()) OR (SELECT tenancy.is_admin()));
ALTER TABLE tenancy.active_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.active_users FORCE ROW LEVEL SECURITY;
CREATE POLICY active_users_own ON tenancy.active_users FOR SELECT
    USING (org_id = (SELECT tenancy.current_org()) OR (SELECT tenancy.is_admin()));

-- Usage of one metric by one organization in [from, to) (default: the current month, UTC).
-- active_users counts distinct users over the months that overlap the range. Other
-- organizations' usage reads as 0, like an organization that does not exist.
CREATE FUNCTION tenancy.usage(
    org_id uuid,
    metric text,
    "from" timestamptz DEFAULT date_trunc('month', now(), 'UTC'),
    "to" timestamptz DEFAULT NULL
) RETURNS bigint
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
-- current month, UTC), with the plan's limit. DBAs see every organization.
CREATE FUNCTION tenancy.usage_report(
    period_start timestamptz DEFAULT date_trunc('month', now(), 'UTC'),
    period_end timestamptz DEFAULT NULL
) RETURNS TABLE (org_id uuid, slug text, plan text, metric text, amount bigint, quota bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH period AS (
        SELECT period_start AS s, coalesce(period_end, period_start + interval '1 month') AS e
    ), used AS (
        SELECT e.org_id, e.metric, sum(e.amount)::bigint AS amount
          FROM tenancy.usage_events e, period p
         WHERE e.recorded_at >= p.s AND e.recorded_at < p.e
         GROUP BY 1, 2
        UNION ALL
        SELECT a.org_id, 'active_users', count(DISTINCT a.user_id)
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

-- Sharing ------------------------------------------------------------------------------------
-- The compiled policies of a shareable table read tenancy.shares as the application role, so
-- every role may read the shares that concern its organization: those of its own rows, those
-- it received and those it granted. Only the functions below write them.
GRANT SELECT ON tenancy.shares TO PUBLIC;
ALTER TABLE tenancy.shares ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.shares FORCE ROW LEVEL SECURITY;
CREATE POLICY shares_own ON tenancy.shares FOR SELECT
    USING (grantee_org = (SELECT tenancy.current_org()) OR owner_org = (SELECT tenancy.current_org())
           OR granted_by_org = (SELECT tenancy.current_org()) OR (SELECT tenancy.is_admin()));
GRANT SELECT ON tenancy.shareable_tables TO PUBLIC;
-- What the compiled policies read: the shares the current organization received, and nothing
-- without a context. Owned by the catalog owner, so reading it costs no row-level security on
-- tenancy.shares; a security barrier, so no function in a caller's query sees other rows.
-- current_org() is STABLE: as the index condition it runs once per scan (an InitPlan here
-- would cost more than it saves).
CREATE VIEW tenancy.received_shares WITH (security_barrier) AS
    SELECT relation, owner_org, row_id, can_write FROM tenancy.shares
     WHERE grantee_org = tenancy.current_org();
COMMENT ON VIEW tenancy.received_shares IS 'Shares the current organization received (read by compiled policies).';
GRANT SELECT ON tenancy.received_shares TO PUBLIC;

-- Makes a tenant table shareable: registers it, and adds the triggers that keep shares sound.
-- The policy compiler emits calls to it for `kind = "shareable"`; DBAs may too.
CREATE FUNCTION tenancy.enable_sharing(
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
    -- Deleted rows take their shares with them, so an id used again is not shared by accident.
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER tenancy_forget_shares AFTER DELETE ON %s REFERENCING OLD TABLE AS tenancy_gone '
        'FOR EACH STATEMENT EXECUTE FUNCTION tenancy.forget_shares(%L, %L)',
        relation, tenant_column, id_column);
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER tenancy_forget_shares_truncate AFTER TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION tenancy.forget_shares(%L, %L)',
        relation, tenant_column, id_column);
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy.enable_sharing(regclass, text, text, text, text) FROM PUBLIC;

-- Undoes enable_sharing: the table's shares are deleted, so that making it shareable again
-- later brings no old grant back; its sharing triggers and its registration go too. True when
-- the table was shareable; on any other table it changes nothing. The policy compiler emits a
-- call for every table that its policies do not make shareable.
CREATE FUNCTION tenancy.disable_sharing(relation regclass) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
    PERFORM tenancy._drop_trigger(relation, 'tenancy_forget_shares');
    PERFORM tenancy._drop_trigger(relation, 'tenancy_forget_shares_truncate');
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy.disable_sharing(regclass) FROM PUBLIC;

CREATE FUNCTION tenancy.forget_shares() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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
REVOKE EXECUTE ON FUNCTION tenancy.forget_shares() FROM PUBLIC;

-- The sharing functions run as the catalog owner: they check the tenant context themselves.
-- What share() and unshare() (`verb`) check first, in this order:
-- - the row: the current organization's own row with that id, else one shared with it (ids are
--   unique per organization only). A row another organization owns and has not shared reads as
--   a row that does not exist. `id` is the id in its canonical text form (as shares store it);
-- - the right to share: the admin role, or the table's share permission;
-- - the organization to share with (or stop sharing with) is given.
CREATE FUNCTION tenancy._shared_row(
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
    id := tenancy._canonical_row_id(relation, row_id);
    EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE %I = $1::%s AND %I = $2)',
                   relation, t.id_column, t.id_type, t.tenant_column)
        INTO own USING id, cur;
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
REVOKE EXECUTE ON FUNCTION tenancy._shared_row(regclass, text, uuid, text) FROM PUBLIC;

-- Shares one row with another organization. permissions: read (always implied), write (update,
-- never delete) and reshare (share it on, never with more than it was given). The owning
-- organization's admins (or holders of the table's share permission) may share; a grantee may
-- share on only with reshare. Sharing again replaces the permissions.
CREATE FUNCTION tenancy.share(relation regclass, row_id text, org_id uuid, permissions text[] DEFAULT '{read}')
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
    IF NOT EXISTS (SELECT FROM tenancy.organizations o WHERE o.id = org_id) THEN
        RAISE EXCEPTION 'organization % does not exist', org_id USING ERRCODE = '42704';
    END IF;
    SELECT * INTO existing FROM tenancy.shares s
     WHERE s.relation = share.relation AND s.owner_org = r.owner AND s.row_id = id AND s.grantee_org = org_id;
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

-- After a grantee's share shrinks or ends: what it passed on shrinks or ends with it.
CREATE FUNCTION tenancy._trim_reshares(
    relation regclass, owner uuid, id text, grantee uuid, may_write boolean, may_reshare boolean
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s tenancy.shares;
BEGIN
    FOR s IN SELECT * FROM tenancy.shares x
              WHERE x.relation = _trim_reshares.relation AND x.owner_org = owner AND x.row_id = id
                AND x.granted_by_org = grantee
    LOOP
        IF may_reshare THEN
            IF s.can_write AND NOT may_write THEN
                UPDATE tenancy.shares x SET can_write = false
                 WHERE x.relation = s.relation AND x.owner_org = s.owner_org AND x.row_id = s.row_id
                   AND x.grantee_org = s.grantee_org;
                PERFORM tenancy._trim_reshares(relation, owner, id, s.grantee_org, false, s.can_reshare);
            END IF;
        ELSE
            DELETE FROM tenancy.shares x
             WHERE x.relation = s.relation AND x.owner_org = s.owner_org AND x.row_id = s.row_id
               AND x.grantee_org = s.grantee_org;
            PERFORM tenancy._trim_reshares(relation, owner, id, s.grantee_org, false, false);
        END IF;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy._trim_reshares(regclass, uuid, text, uuid, boolean, boolean) FROM PUBLIC;

-- Stops sharing a row with an organization, and everything that organization shared on.
-- The owning organization may end any share of its rows; a grantee those it granted.
-- Returns whether there was such a share.
CREATE FUNCTION tenancy.unshare(relation regclass, row_id text, org_id uuid)
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
       AND (r.owner = cur OR s.granted_by_org = cur);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM tenancy.shares s
     WHERE s.relation = unshare.relation AND s.owner_org = r.owner AND s.row_id = id AND s.grantee_org = org_id;
    PERFORM tenancy._trim_reshares(relation, r.owner, id, org_id, false, false);
    RETURN true;
END
$$;

-- The canonical text of a row id of a shareable table (as shares store it).
CREATE FUNCTION tenancy._canonical_row_id(relation regclass, id text) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id_type text;
    canonical text;
BEGIN
    SELECT t.id_type INTO id_type FROM tenancy.shareable_tables t WHERE t.relation = _canonical_row_id.relation;
    IF id IS NULL OR id_type IS NULL THEN
        RETURN id;
    END IF;
    EXECUTE format('SELECT ($1::%s)::text', id_type) INTO canonical USING id;
    RETURN canonical;
END
$$;

-- The shares of one row (or of every row of a table) that concern the current organization:
-- all shares of its own rows, and those it received or granted.
CREATE FUNCTION tenancy.shares_of(relation regclass, id text)
RETURNS TABLE (row_id text, org_id uuid, permissions text[], granted_by_org uuid, granted_by text, granted_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.row_id, s.grantee_org,
           ARRAY['read'] || CASE WHEN s.can_write THEN ARRAY['write'] ELSE '{}' END
                         || CASE WHEN s.can_reshare THEN ARRAY['reshare'] ELSE '{}' END,
           s.granted_by_org, s.granted_by, s.granted_at
      FROM tenancy.shares s
     WHERE s.relation = $1 AND ($2 IS NULL OR s.row_id = tenancy._canonical_row_id($1, $2))
     ORDER BY s.row_id, s.granted_at, s.grantee_org
$$;
CREATE FUNCTION tenancy.shares_of(relation regclass)
RETURNS TABLE (row_id text, org_id uuid, permissions text[], granted_by_org uuid, granted_by text, granted_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM tenancy.shares_of($1, NULL::text) $$;

-- The same functions for ids of any type (uuid, bigint, ...): row ids are kept as text.
CREATE FUNCTION tenancy.share(relation regclass, row_id anyelement, org_id uuid, permissions text[] DEFAULT '{read}')
RETURNS void LANGUAGE sql AS $$ SELECT tenancy.share($1, $2::text, $3, $4) $$;
CREATE FUNCTION tenancy.unshare(relation regclass, row_id anyelement, org_id uuid)
RETURNS boolean LANGUAGE sql AS $$ SELECT tenancy.unshare($1, $2::text, $3) $$;
CREATE FUNCTION tenancy.shares_of(relation regclass, id anyelement)
RETURNS TABLE (row_id text, org_id uuid, permissions text[], granted_by_org uuid, granted_by text, granted_at timestamptz)
LANGUAGE sql STABLE AS $$ SELECT * FROM tenancy.shares_of($1, $2::text) $$;
