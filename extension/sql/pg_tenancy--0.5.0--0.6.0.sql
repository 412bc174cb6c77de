-- pg_tenancy 0.5.0 -> 0.6.0: two levels of tenants, organizations and their projects.
--
-- Install the 0.6.0 library first (make install), restart the server (the library is
-- preloaded), then, as a superuser, in every database that has the extension:
--
--     ALTER EXTENSION pg_tenancy UPDATE;
--
-- Nothing changes for single-level applications. An organization created with a parent_id
-- (tenancy.create_organization(..., parent_id)) is now a project: it is entered with
-- tenancy.set_project_context(), no longer with set_context().

\echo Use "ALTER EXTENSION pg_tenancy UPDATE TO '0.6.0'" to load this file. \quit

CREATE FUNCTION tenancy."current_project"() RETURNS uuid
    STRICT STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'current_project_wrapper';
CREATE FUNCTION tenancy."current_project_key"() RETURNS text
    STRICT STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'current_project_key_wrapper';
CREATE FUNCTION tenancy."current_project_bigint"() RETURNS bigint
    STRICT STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'current_project_bigint_wrapper';
CREATE FUNCTION tenancy."has_org_role"("role" text) RETURNS bool
    STRICT STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'has_org_role_wrapper';
CREATE FUNCTION tenancy."has_org_permission"("permission" text) RETURNS bool
    STRICT STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'has_org_permission_wrapper';
CREATE FUNCTION tenancy."set_project_context"("project_id" uuid, "user_id" text) RETURNS void
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_project_context_wrapper';
CREATE FUNCTION tenancy."set_project_context_key"("project_key" text, "user_id" text) RETURNS void
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_project_context_key_wrapper';
CREATE FUNCTION tenancy."set_session_project_context"("project_id" uuid, "user_id" text) RETURNS void
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_session_project_context_wrapper';
CREATE FUNCTION tenancy."set_session_project_context_key"("project_key" text, "user_id" text) RETURNS void
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_session_project_context_key_wrapper';
CREATE FUNCTION tenancy."set_project_member"("project_id" uuid, "user_id" text, "role" text) RETURNS void
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_project_member_wrapper';
CREATE FUNCTION tenancy."remove_project_member"("project_id" uuid, "user_id" text) RETURNS void
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'remove_project_member_wrapper';

-- A project goes with its organization.
ALTER TABLE tenancy.organizations DROP CONSTRAINT organizations_parent_id_fkey;
ALTER TABLE tenancy.organizations ADD CONSTRAINT organizations_parent_id_fkey
    FOREIGN KEY (parent_id) REFERENCES tenancy.organizations (id) ON DELETE CASCADE;

-- Projects: the second level of tenants. A project is a row of tenancy.organizations whose
-- parent_id is its organization: it has an id (tenancy.org_key_id() of the application's key, like
-- an organization's), a key, a slug, a status, counters and usage of its own, and the plan of its
-- organization. Two levels only: an organization's projects have no projects, and a project
-- never changes organization (contexts, caches and counters take the pair to be fixed).
--
-- Who may enter a project comes from the organization: its members, with their organization
-- role, unless tenancy.project_members overrides the role for that project; an override with no
-- role (NULL) means no access.
CREATE TABLE tenancy.project_members (
    project_id  uuid NOT NULL REFERENCES tenancy.organizations (id) ON DELETE CASCADE,
    user_id     text NOT NULL CHECK (btrim(user_id) <> '' AND octet_length(user_id) <= 256),
    role        text REFERENCES tenancy.roles (name) ON UPDATE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user_id_idx ON tenancy.project_members (user_id);
COMMENT ON TABLE tenancy.project_members IS
    'Per-project roles overriding the organization role (NULL: no access). Manage with tenancy.set_project_member().';

-- A project belongs to an organization that is no project, and stays there.
CREATE FUNCTION tenancy.check_project_levels() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'organizations' THEN
        IF TG_OP = 'UPDATE' AND NEW.parent_id IS DISTINCT FROM OLD.parent_id THEN
            RAISE EXCEPTION 'organization % cannot change its parent', OLD.id
                USING ERRCODE = '0A000',
                      DETAIL = 'A project belongs to the organization it was created in, and an organization never becomes a project.',
                      HINT = 'Create the project again in the other organization.';
        END IF;
        IF TG_OP = 'INSERT' AND NEW.parent_id IS NOT NULL
           AND EXISTS (SELECT FROM tenancy.organizations p WHERE p.id = NEW.parent_id AND p.parent_id IS NOT NULL) THEN
            RAISE EXCEPTION 'organization % is a project: projects have no projects', NEW.parent_id
                USING ERRCODE = '23514', HINT = 'Create the project in the project''s organization.';
        END IF;
    ELSIF NOT EXISTS (SELECT FROM tenancy.organizations o WHERE o.id = NEW.project_id AND o.parent_id IS NOT NULL) THEN
        RAISE EXCEPTION 'organization % is not a project', NEW.project_id
            USING ERRCODE = '23503', HINT = 'Project roles are for projects: organizations with a parent_id. Roles in an organization are in tenancy.members.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER project_levels BEFORE INSERT OR UPDATE OF parent_id ON tenancy.organizations
    FOR EACH ROW EXECUTE FUNCTION tenancy.check_project_levels();
CREATE TRIGGER project_levels BEFORE INSERT OR UPDATE OF project_id ON tenancy.project_members
    FOR EACH ROW EXECUTE FUNCTION tenancy.check_project_levels();

-- Read like the rest of the catalog: the overrides of the context's project, or of every project
-- of the context's organization; the projects of the context's organization.
GRANT SELECT ON tenancy.project_members TO PUBLIC;
ALTER TABLE tenancy.project_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.project_members FORCE ROW LEVEL SECURITY;
CREATE POLICY project_members_own ON tenancy.project_members FOR SELECT
    USING (project_id = (SELECT tenancy.current_project()));
CREATE POLICY project_members_organization ON tenancy.project_members FOR SELECT
    USING (project_id IN (SELECT o.id FROM tenancy.organizations o WHERE o.parent_id = (SELECT tenancy.current_org())));
CREATE POLICY project_members_admin ON tenancy.project_members FOR SELECT TO tenancy_admin USING (true);
CREATE POLICY organizations_projects ON tenancy.organizations FOR SELECT
    USING (parent_id = (SELECT tenancy.current_org()));

-- An override added, changed or removed is seen by every session by its next statement (adding
-- one may take access away).
CREATE TRIGGER membership_changed AFTER INSERT OR UPDATE OR DELETE ON tenancy.project_members
    FOR EACH ROW EXECUTE FUNCTION tenancy.membership_changed_trigger();
CREATE TRIGGER membership_changed_truncate AFTER TRUNCATE ON tenancy.project_members
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.membership_changed_trigger();

-- The owners that tenancy.create_organization(..., parent_id) made members of a child are its
-- owners as a project now.
INSERT INTO tenancy.project_members (project_id, user_id, role)
SELECT m.org_id, m.user_id, m.role
  FROM tenancy.members m JOIN tenancy.organizations o ON o.id = m.org_id
 WHERE o.parent_id IS NOT NULL
ON CONFLICT DO NOTHING;

-- A member who leaves an organization leaves its projects' roles too: none comes back if they
-- rejoin.
CREATE FUNCTION tenancy.forget_project_roles() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM tenancy.project_members pm
     USING tenancy.organizations p
     WHERE p.id = pm.project_id AND p.parent_id = OLD.org_id AND pm.user_id = OLD.user_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER forget_project_roles AFTER DELETE ON tenancy.members
    FOR EACH ROW EXECUTE FUNCTION tenancy.forget_project_roles();

REVOKE ALL ON FUNCTION tenancy.check_project_levels() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.forget_project_roles() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.set_project_member(uuid, text, text), tenancy.remove_project_member(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.set_project_member(uuid, text, text), tenancy.remove_project_member(uuid, text)
    TO tenancy_writer, tenancy_admin;
