-- Usage metering from application tables (enable_usage()) and reading usage (usage(),
-- usage_report()). record_usage() and the usage trigger are in Rust (src/usage.rs).

-- Records a metric as rows are written into a table, inside the writing statement: one unit per
-- inserted row, or the value of an integer column (bytes uploaded, say), and then what an UPDATE
-- of that column adds (so `INSERT ... ON CONFLICT DO UPDATE` and raising the amount later are
-- metered; lowering it gives nothing back). Registers the table: the trigger refuses others.
-- For superusers; the policy compiler emits calls to it for the `[usage]` section.
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

