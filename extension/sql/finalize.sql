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
GRANT SELECT ON tenancy.quota_overrides, tenancy.quota_sources TO tenancy_admin;

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
