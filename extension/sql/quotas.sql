-- Quotas counted from application tables: enable_quota() registers a table and installs the
-- quota trigger, keep_quotas() undoes what the policy files no longer declare. Both are for
-- superusers (who run `tenancy apply`): they create triggers on application tables and write
-- the catalog as the caller. Members of tenancy_admin manage organizations, not schemas, and
-- get a plain "permission denied". The trigger functions refuse tables not registered here.

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

-- Undoes enable_quota and enable_usage on a table for every resource not in `keep`: their
-- triggers go, and their registrations. Returns how many resources it undid. The policy
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

