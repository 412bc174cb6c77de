-- Who reads the catalog. It follows the same rules as application data: under a tenant context
-- a role sees only its own organization's rows; without one, nothing. DBAs (superusers, who
-- bypass row-level security, and members of tenancy_admin) see everything. Nobody but the owner
-- writes the catalog directly: the management functions do.
--
-- Each table has one policy for everyone and a separate one for tenancy_admin, never an `OR`
-- of the two: an `OR` would let an index probe on any column (a slug, a user id) run before the
-- organization check, for every role.

GRANT USAGE ON SCHEMA tenancy TO PUBLIC;
GRANT SELECT ON tenancy.plans, tenancy.roles TO PUBLIC;
GRANT SELECT ON tenancy.organizations, tenancy.members TO PUBLIC;

ALTER TABLE tenancy.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY organizations_own ON tenancy.organizations FOR SELECT
    USING (id = (SELECT tenancy.current_org()));
CREATE POLICY organizations_admin ON tenancy.organizations FOR SELECT TO tenancy_admin USING (true);

ALTER TABLE tenancy.members ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.members FORCE ROW LEVEL SECURITY;
CREATE POLICY members_own ON tenancy.members FOR SELECT
    USING (org_id = (SELECT tenancy.current_org()));
CREATE POLICY members_admin ON tenancy.members FOR SELECT TO tenancy_admin USING (true);

-- Quotas: everyone may read what plans offer; DBAs (tenancy_admin) add plans, resources and limits.
GRANT SELECT ON tenancy.resources, tenancy.plan_limits TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON tenancy.plans, tenancy.resources, tenancy.plan_limits TO tenancy_admin;
GRANT SELECT ON tenancy.quota_sources, tenancy.usage_sources TO tenancy_admin;
GRANT SELECT ON tenancy.quota_overrides TO PUBLIC;
ALTER TABLE tenancy.quota_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.quota_overrides FORCE ROW LEVEL SECURITY;
CREATE POLICY quota_overrides_own ON tenancy.quota_overrides FOR SELECT
    USING (org_id = (SELECT tenancy.current_org()));
CREATE POLICY quota_overrides_admin ON tenancy.quota_overrides FOR SELECT TO tenancy_admin USING (true);

-- Usage is read like the rest of the catalog: the own organization under a context, all for DBAs.
GRANT SELECT ON tenancy.usage_events, tenancy.active_users TO PUBLIC;
ALTER TABLE tenancy.usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.usage_events FORCE ROW LEVEL SECURITY;
CREATE POLICY usage_events_own ON tenancy.usage_events FOR SELECT
    USING (org_id = (SELECT tenancy.current_org()));
CREATE POLICY usage_events_admin ON tenancy.usage_events FOR SELECT TO tenancy_admin USING (true);
ALTER TABLE tenancy.active_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.active_users FORCE ROW LEVEL SECURITY;
CREATE POLICY active_users_own ON tenancy.active_users FOR SELECT
    USING (org_id = (SELECT tenancy.current_org()));
CREATE POLICY active_users_admin ON tenancy.active_users FOR SELECT TO tenancy_admin USING (true);

-- A limit or registration change reaches every backend's cache at commit ("the very next
-- statement").
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.plan_limits
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.quota_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.resources
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER UPDATE OF plan ON tenancy.organizations
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.quota_sources
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.usage_sources
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();
CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.shareable_tables
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();

-- A membership that is taken away (a member removed or given another role, an organization
-- suspended or deleted, the roles changed) is checked again by every session by its next
-- statement: these move the organizations' membership generations at commit.
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
