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
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = relation AND attname = tenant_column
                     AND atttypid = 'uuid'::regtype AND NOT attisdropped) THEN
        RAISE EXCEPTION 'table % has no uuid column "%"', relation, tenant_column USING ERRCODE = '42703';
    END IF;
    IF sum_column IS NOT NULL AND NOT EXISTS (
        SELECT FROM pg_attribute WHERE attrelid = relation AND attname = sum_column AND NOT attisdropped
           AND atttypid IN ('bigint'::regtype, 'integer'::regtype, 'smallint'::regtype)) THEN
        RAISE EXCEPTION 'table % has no integer column "%" to sum', relation, sum_column USING ERRCODE = '42703';
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
    INSERT INTO tenancy.quota_sources (resource, relation, tenant_column, sum_column)
    VALUES (r.name, relation, tenant_column, sum_column)
    ON CONFLICT ON CONSTRAINT quota_sources_pkey DO UPDATE
        SET relation = excluded.relation, tenant_column = excluded.tenant_column, sum_column = excluded.sum_column;
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy.enable_quota(text, regclass, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.enable_quota(text, regclass, text, text) TO tenancy_admin;

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
