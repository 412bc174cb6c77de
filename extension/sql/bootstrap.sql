-- pg_tenancy catalog: plans, roles, organizations and members.
-- Written as SQL because it reads best as SQL; the functions that manage it are in Rust.

DO $$
BEGIN
    -- Members of tenancy_admin may manage every organization without a tenant context.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_admin') THEN
        CREATE ROLE tenancy_admin NOLOGIN;
    END IF;
END
$$;

CREATE TABLE tenancy.plans (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]*$'),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenancy.plans IS 'Plans an organization can be on.';

INSERT INTO tenancy.plans (name, description) VALUES
    ('free', 'Free plan'),
    ('pro', 'Pro plan'),
    ('enterprise', 'Enterprise plan');

CREATE TABLE tenancy.roles (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    rank        integer NOT NULL UNIQUE CHECK (rank > 0),
    permissions text[] NOT NULL DEFAULT '{}',
    description text NOT NULL DEFAULT ''
);
COMMENT ON TABLE tenancy.roles IS
    'Member roles. A role satisfies tenancy.has_role(r) when its rank is at least r''s rank.';

INSERT INTO tenancy.roles (name, rank, permissions, description) VALUES
    ('owner', 40, '{members.manage,settings.manage,billing.manage,organization.delete}',
        'Full control, including billing and other owners'),
    ('admin', 30, '{members.manage,settings.manage}', 'Manages members and settings'),
    ('member', 20, '{}', 'Works with the organization''s data'),
    ('guest', 10, '{}', 'Read-mostly access');

CREATE TABLE tenancy.organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE
                CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name        text NOT NULL CHECK (btrim(name) <> ''),
    plan        text NOT NULL DEFAULT 'free' REFERENCES tenancy.plans (name),
    settings    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    parent_id   uuid REFERENCES tenancy.organizations (id),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (parent_id IS DISTINCT FROM id)
);
CREATE INDEX organizations_parent_id_idx ON tenancy.organizations (parent_id);
COMMENT ON TABLE tenancy.organizations IS 'Tenants. Manage with tenancy.create_organization() and friends.';

CREATE TABLE tenancy.members (
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id) ON DELETE CASCADE,
    user_id     text NOT NULL CHECK (btrim(user_id) <> ''),
    role        text NOT NULL REFERENCES tenancy.roles (name) ON UPDATE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX members_user_id_idx ON tenancy.members (user_id);
COMMENT ON TABLE tenancy.members IS 'Who belongs to which organization, with which role.';

-- pg_dump keeps the tenants and their members (the seeded plans and roles come with the extension).
SELECT pg_catalog.pg_extension_config_dump('tenancy.organizations', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.members', '');
