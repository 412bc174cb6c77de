-- Governed schemas: those whose every table the policy files cover (`tenancy apply` records
-- them). A table created in one later is fail-closed at once, before any policy file mentions
-- it: row-level security enabled and forced, no policy, so it shows no rows and takes no writes
-- until `tenancy apply` covers it. A partition of a covered table (CREATE TABLE ... PARTITION OF,
-- ATTACH PARTITION, pg_partman) gets its parent's tenancy policies at once, so that reading it
-- directly is governed like reading the parent.
CREATE TABLE tenancy.governed_schemas (
    schema_name  name PRIMARY KEY,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenancy.governed_schemas IS
    'Schemas whose new tables are closed at once (tenancy apply records them from the policy files).';
-- Which schemas are governed is no secret (the event trigger of whoever creates a table reads
-- it); only the DBA changes it.
REVOKE ALL ON tenancy.governed_schemas FROM PUBLIC;
GRANT SELECT ON tenancy.governed_schemas TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tenancy.governed_schemas', '');

-- Unique keys without the tenant column that the policy files declare unique across
-- organizations on purpose (`globally_unique`), with the reason: `tenancy apply` records them,
-- `tenancy lint` shows them as waived.
CREATE TABLE tenancy.unique_waivers (
    relation     regclass NOT NULL,
    columns      text NOT NULL,
    reason       text NOT NULL CHECK (btrim(reason) <> ''),
    PRIMARY KEY (relation, columns)
);
COMMENT ON TABLE tenancy.unique_waivers IS
    'Unique keys declared globally unique in the policy files, with the reason (tenancy apply records them).';
REVOKE ALL ON tenancy.unique_waivers FROM PUBLIC;
GRANT SELECT ON tenancy.unique_waivers TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tenancy.unique_waivers', '');

-- Runs as whoever ran the DDL (who owns the new table, and so may change it); only fixed
-- statements on the new table, with names quoted from the catalog.
CREATE FUNCTION tenancy.close_new_tables() RETURNS event_trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    p record;
BEGIN
    FOR t IN
        WITH commands AS (
            SELECT e.objid, e.command_tag FROM pg_event_trigger_ddl_commands() e
             WHERE e.classid = 'pg_class'::regclass
        ), targets AS (
            -- A table just created (a partition too)...
            SELECT c.oid FROM commands JOIN pg_class c ON c.oid = commands.objid
             WHERE commands.command_tag <> 'ALTER TABLE' AND c.relkind IN ('r', 'p')
            UNION
            -- ...or a partition just attached (ALTER TABLE names the partitioned table): one
            -- that lacks a tenancy policy of its parent.
            SELECT i.inhrelid FROM commands
              JOIN pg_class c ON c.oid = commands.objid AND c.relkind = 'p'
              JOIN pg_inherits i ON i.inhparent = c.oid
             WHERE commands.command_tag = 'ALTER TABLE'
               AND EXISTS (SELECT FROM pg_policy pol WHERE pol.polrelid = c.oid AND pol.polname LIKE 'tenancy\_%'
                             AND NOT EXISTS (SELECT FROM pg_policy q WHERE q.polrelid = i.inhrelid AND q.polname = pol.polname))
        )
        SELECT c.oid, c.oid::regclass AS rel, c.relrowsecurity, c.relforcerowsecurity,
               (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid AND c.relispartition) AS parent
          FROM targets
          JOIN pg_class c ON c.oid = targets.oid
          JOIN tenancy.governed_schemas g ON g.schema_name = (SELECT n.nspname FROM pg_namespace n WHERE n.oid = c.relnamespace)
    LOOP
        -- The ALTERs below fire this trigger again, and find nothing left to do.
        IF NOT t.relrowsecurity THEN
            EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t.rel);
        END IF;
        IF NOT t.relforcerowsecurity THEN
            EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t.rel);
        END IF;
        CONTINUE WHEN t.parent IS NULL;
        FOR p IN
            SELECT pol.polname, pol.polpermissive, pol.polcmd,
                   pg_get_expr(pol.polqual, pol.polrelid) AS qual,
                   pg_get_expr(pol.polwithcheck, pol.polrelid) AS with_check,
                   (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(r::regrole::text) END, ', ')
                      FROM unnest(pol.polroles) r) AS roles
              FROM pg_policy pol
             WHERE pol.polrelid = t.parent AND pol.polname LIKE 'tenancy\_%'
               AND NOT EXISTS (SELECT FROM pg_policy q WHERE q.polrelid = t.oid AND q.polname = pol.polname)
        LOOP
            -- A policy whose expression names the parent itself cannot be copied as it is: the
            -- partition then stays closed for that command until `tenancy apply` covers it.
            BEGIN
            EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s',
                p.polname, t.rel,
                CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                              WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                p.roles,
                CASE WHEN p.qual IS NULL THEN '' ELSE format(' USING (%s)', p.qual) END,
                CASE WHEN p.with_check IS NULL THEN '' ELSE format(' WITH CHECK (%s)', p.with_check) END);
            EXCEPTION WHEN undefined_table OR undefined_column THEN
                RAISE WARNING 'policy % of % not copied to its new partition %: run tenancy apply', p.polname, t.parent::regclass, t.rel;
            END;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenancy.close_new_tables() IS
    'Event trigger: closes new tables of governed schemas, and gives new partitions their parent''s policies.';

CREATE EVENT TRIGGER tenancy_close_new_tables ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
    EXECUTE FUNCTION tenancy.close_new_tables();
