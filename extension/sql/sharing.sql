-- Sharing rows of a shareable table with other organizations (share(), unshare(),
-- shares_of()) and publishing them. The compiled policies of a shareable table read the shares
-- through tenancy.received_shares; the trigger that keeps a shared row in place is in Rust
-- (src/sharing.rs), as is the check of a row's owner, which reads the application table as its
-- own owner.

-- Every role may read the shares that concern its organization: those of its own rows, those it
-- received and those it granted. Only the functions below write them.
GRANT SELECT ON tenancy.shares TO PUBLIC;
ALTER TABLE tenancy.shares ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.shares FORCE ROW LEVEL SECURITY;
CREATE POLICY shares_own ON tenancy.shares FOR SELECT
    USING (grantee_org = (SELECT tenancy.current_org()) OR owner_org = (SELECT tenancy.current_org())
           OR granted_by_org = (SELECT tenancy.current_org()));
CREATE POLICY shares_admin ON tenancy.shares FOR SELECT TO tenancy_admin USING (true);
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
CREATE FUNCTION tenancy.disable_sharing(relation regclass) RETURNS boolean
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
-- Only reshares queue the check, so that SET CONSTRAINTS ... IMMEDIATE (refused while one is
-- pending: it would hold the lock until the transaction ends) stays free for everyone else.
CREATE CONSTRAINT TRIGGER reshare_still_allowed AFTER INSERT OR UPDATE ON tenancy.shares
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.granted_by_org IS DISTINCT FROM NEW.owner_org)
    EXECUTE FUNCTION tenancy._check_reshare();

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

-- The shares of one row (or of every row of a table) that concern the current organization:
-- all shares of its own rows, and those it received or granted. `id` may be in any spelling its
-- type accepts.
CREATE FUNCTION tenancy.shares_of(relation regclass, id text)
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
