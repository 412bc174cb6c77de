-- pg_tenancy 0.4.0 -> 0.5.0: organizations keyed the application's way (a text id such as
-- `org_abc123` or a cuid, or an integer), so that tenant columns of type text, varchar, integer
-- and bigint are governed like uuid ones.
--
-- Install the 0.5.0 library first (make install), restart the server (the library is
-- preloaded), then, as a superuser, in every database that has the extension:
--
--     ALTER EXTENSION pg_tenancy UPDATE;
--
-- Nothing changes for applications with uuid tenant columns.

\echo Use "ALTER EXTENSION pg_tenancy UPDATE TO '0.5.0'" to load this file. \quit

CREATE FUNCTION tenancy."org_key_id"("key" text) RETURNS uuid
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'org_key_id_wrapper';
CREATE FUNCTION tenancy."current_org_key"() RETURNS text
    STRICT STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'current_org_key_wrapper';
CREATE FUNCTION tenancy."current_org_bigint"() RETURNS bigint
    STRICT STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'current_org_bigint_wrapper';
CREATE FUNCTION tenancy."set_context_key"("org_key" text, "user_id" text) RETURNS void
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_context_key_wrapper';
CREATE FUNCTION tenancy."set_session_context_key"("org_key" text, "user_id" text) RETURNS void
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_session_context_key_wrapper';
CREATE FUNCTION tenancy."set_service_context_key"("org_key" text, "service" text) RETURNS void
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_service_context_key_wrapper';

-- Organizations keyed the application's way: a text id (`org_abc123`, a cuid, a ULID) or an
-- integer, copied from the application's own organizations table by `tenancy apply`'s sync.
-- Such an organization's id is tenancy.org_key_id(key), a function of the key alone, so the
-- context functions go from key to organization without a lookup (tenancy.set_context_key())
-- and every id has one key (tenancy.current_org_key(), tenancy.current_org_bigint()). An
-- organization made with tenancy.create_organization() has no key column of its own: its key is
-- the text of its id.
ALTER TABLE tenancy.organizations ADD COLUMN key text;
ALTER TABLE tenancy.organizations ADD CONSTRAINT organizations_key_key UNIQUE (key);
ALTER TABLE tenancy.organizations ADD CONSTRAINT organizations_key_check
    CHECK (key IS NULL OR (octet_length(key) BETWEEN 1 AND 256 AND btrim(key) <> '' AND id = tenancy.org_key_id(key)));
COMMENT ON COLUMN tenancy.organizations.key IS
    'The application''s own id of the organization (text or integer ids), when it is not the text of id; id = tenancy.org_key_id(key).';

-- An organization switcher of an application keyed by text or integers needs its own key.
DROP FUNCTION tenancy.user_organizations(text);
CREATE FUNCTION tenancy."user_organizations"("user_id" text DEFAULT NULL)
    RETURNS TABLE ("org_id" uuid, "slug" text, "name" text, "role" text, "status" text, "org_key" text)
    STABLE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'user_organizations_wrapper';

-- Quotas and usage count tables whose tenant column is a text or integer key too.
CREATE OR REPLACE FUNCTION tenancy.enable_quota(
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
    PERFORM tenancy._require_column(relation, tenant_column, '{uuid,text,character varying,bigint,integer,smallint}', 'uuid, text or integer');
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
    PERFORM tenancy._require_column(relation, tenant_column, '{uuid,text,character varying,bigint,integer,smallint}', 'uuid, text or integer');
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
