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
