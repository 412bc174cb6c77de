-- Services: work without a user (background jobs, webhooks, imports) in an organization's
-- context, by the database roles the policy files allow (`[services]`, written by `tenancy
-- apply`), acting with a member role. See tenancy.set_service_context().
CREATE TABLE tenancy.services (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*$' AND length(name) <= 63),
    member_role  text NOT NULL REFERENCES tenancy.roles (name) ON UPDATE CASCADE,
    -- The database roles (and their members) that may act as the service.
    db_roles     name[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenancy.services IS 'Services that may act in an organization without a user (tenancy.set_service_context); DBA only.';
REVOKE ALL ON tenancy.services FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tenancy.services', '');
