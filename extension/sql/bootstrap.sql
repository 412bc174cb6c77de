-- pg_tenancy catalog: plans, roles, organizations and members.
-- Written as SQL because it reads best as SQL; the functions that manage it are in Rust.

DO $$
BEGIN
    -- Members of tenancy_admin may manage every organization without a tenant context.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_admin') THEN
        CREATE ROLE tenancy_admin NOLOGIN;
    END IF;
    -- Members of tenancy_writer may call the functions that write (members, sharing, usage,
    -- sign-up); `tenancy apply` makes the read-write application roles members, and only them.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_writer') THEN
        CREATE ROLE tenancy_writer NOLOGIN;
    END IF;
    -- Members of tenancy_reader are the read-only application roles (`tenancy apply` makes
    -- them members): a mark, with no privileges of its own. With tenancy_writer it tells, the
    -- DBA's way, which roles are application roles (`tenancy verify` acts as them).
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_reader') THEN
        CREATE ROLE tenancy_reader NOLOGIN;
    END IF;
    -- Members of tenancy_token_only start tenant contexts only with signed tokens
    -- (tenancy.set_context_token()): a mark, with no privileges of its own. It holds for the
    -- session's login role and for the current role (SET ROLE), so mark every role the
    -- application logs in as or switches to (PostgREST's authenticator too).
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_token_only') THEN
        CREATE ROLE tenancy_token_only NOLOGIN;
    END IF;
END
$$;

CREATE TABLE tenancy.plans (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]*$'),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Sign-up (tenancy.create_organization() by a role that is not a DBA) may choose it.
    self_service boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE tenancy.plans IS 'Plans an organization can be on.';

INSERT INTO tenancy.plans (name, description, self_service) VALUES
    ('free', 'Free plan', true),
    ('pro', 'Pro plan', false),
    ('enterprise', 'Enterprise plan', false);

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
    name        text NOT NULL CHECK (btrim(name) <> '' AND char_length(name) <= 200),
    plan        text NOT NULL DEFAULT 'free' REFERENCES tenancy.plans (name),
    settings    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    parent_id   uuid REFERENCES tenancy.organizations (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (parent_id IS DISTINCT FROM id)
);
CREATE INDEX organizations_parent_id_idx ON tenancy.organizations (parent_id);
COMMENT ON TABLE tenancy.organizations IS 'Tenants. Manage with tenancy.create_organization() and friends.';

CREATE TABLE tenancy.members (
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id) ON DELETE CASCADE,
    user_id     text NOT NULL CHECK (btrim(user_id) <> '' AND octet_length(user_id) <= 256),
    role        text NOT NULL REFERENCES tenancy.roles (name) ON UPDATE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX members_user_id_idx ON tenancy.members (user_id);
COMMENT ON TABLE tenancy.members IS 'Who belongs to which organization, with which role.';

-- Quotas. A resource is something a plan limits: a table's row count (`count`), the sum of a
-- column (`sum`), the organization's members (`members`), or metered usage per period (`metric`).
CREATE TABLE tenancy.resources (
    id          integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    kind        text NOT NULL CHECK (kind IN ('count', 'sum', 'members', 'metric')),
    label       text NOT NULL CHECK (btrim(label) <> ''),
    unit        text NOT NULL DEFAULT '' CHECK (unit IN ('', 'bytes', 'ms')),
    description text NOT NULL DEFAULT ''
);
COMMENT ON TABLE tenancy.resources IS 'What plans limit. label names one unit in error messages ("Project limit reached").';

INSERT INTO tenancy.resources (name, kind, label, unit, description) VALUES
    ('users', 'members', 'Member', '', 'Members of the organization'),
    ('projects', 'count', 'Project', '', 'Projects'),
    ('storage', 'sum', 'Storage', 'bytes', 'Stored bytes'),
    ('api_calls', 'metric', 'API call', '', 'API calls per month'),
    ('custom_domains', 'count', 'Custom domain', '', 'Custom domains'),
    ('storage_bytes', 'metric', 'Stored byte', 'bytes', 'Bytes stored, as reported by the application'),
    ('bandwidth_bytes', 'metric', 'Transferred byte', 'bytes', 'Bytes transferred per month'),
    ('compute_ms', 'metric', 'Compute millisecond', 'ms', 'Compute time per month'),
    ('active_users', 'metric', 'Active user', '', 'Distinct users who set a context in the month');

CREATE TABLE tenancy.plan_limits (
    plan        text NOT NULL REFERENCES tenancy.plans (name) ON UPDATE CASCADE ON DELETE CASCADE,
    resource    text NOT NULL REFERENCES tenancy.resources (name) ON UPDATE CASCADE ON DELETE CASCADE,
    quota       bigint CHECK (quota >= 0),
    PRIMARY KEY (plan, resource)
);
COMMENT ON TABLE tenancy.plan_limits IS 'Limit per plan and resource; NULL (or no row) is unlimited.';

INSERT INTO tenancy.plan_limits (plan, resource, quota) VALUES
    ('free', 'users', 5), ('free', 'projects', 10), ('free', 'storage', 1073741824),
    ('free', 'api_calls', 1000), ('free', 'custom_domains', 0),
    ('pro', 'users', 50), ('pro', 'projects', 100), ('pro', 'storage', 107374182400),
    ('pro', 'api_calls', 100000), ('pro', 'custom_domains', 3),
    ('enterprise', 'users', NULL), ('enterprise', 'projects', NULL), ('enterprise', 'storage', NULL),
    ('enterprise', 'api_calls', NULL), ('enterprise', 'custom_domains', NULL);

CREATE TABLE tenancy.quota_overrides (
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id) ON DELETE CASCADE,
    resource    text NOT NULL REFERENCES tenancy.resources (name) ON UPDATE CASCADE ON DELETE CASCADE,
    quota       bigint NOT NULL CHECK (quota >= 0),
    PRIMARY KEY (org_id, resource)
);
COMMENT ON TABLE tenancy.quota_overrides IS 'Per-organization limits that replace the plan''s (tenancy.set_quota()).';

CREATE TABLE tenancy.quota_sources (
    resource      text PRIMARY KEY REFERENCES tenancy.resources (name) ON UPDATE CASCADE ON DELETE CASCADE,
    relation      regclass NOT NULL,
    tenant_column text NOT NULL,
    sum_column    text
);
COMMENT ON TABLE tenancy.quota_sources IS 'Which table (and column) counts each count/sum resource (tenancy.enable_quota()).';

CREATE TABLE tenancy.usage_sources (
    metric        text NOT NULL REFERENCES tenancy.resources (name) ON UPDATE CASCADE ON DELETE CASCADE,
    relation      regclass NOT NULL,
    tenant_column text NOT NULL,
    amount_column text,
    PRIMARY KEY (metric, relation)
);
COMMENT ON TABLE tenancy.usage_sources IS 'Which tables record which metric as rows are written (tenancy.enable_usage()).';

-- Usage metering: one row per record_usage() call, WAL-logged like any row, so a rolled-back
-- transaction records nothing and every committed increment survives a crash. Periods are
-- calendar months in UTC. No foreign keys on purpose: record_usage() validates the organization
-- and metric, usage history outlives a deleted organization (it is billing data), and a foreign
-- key check would take a KEY SHARE lock on the organization's row per call, which serialises
-- concurrent callers of a hot organization on MultiXacts.
CREATE TABLE tenancy.usage_events (
    org_id      uuid NOT NULL,
    metric      text NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_org_metric_time_idx ON tenancy.usage_events (org_id, metric, recorded_at);
COMMENT ON TABLE tenancy.usage_events IS 'Metered usage (tenancy.record_usage()); read with tenancy.usage() and tenancy.usage_report().';

-- Not unique on purpose: two sessions of one user that set their first context of the month at
-- once would otherwise wait for each other's transaction (a unique index makes the second insert
-- wait for the first to commit). Each backend notes a user once a month, and writes a row only
-- when none is there yet (so a rare race leaves a duplicate); readers count distinct users.
CREATE TABLE tenancy.active_users (
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id) ON DELETE CASCADE,
    period      date NOT NULL CHECK (extract(day FROM period) = 1),
    user_id     text NOT NULL
);
CREATE INDEX active_users_org_id_period_idx ON tenancy.active_users (org_id, period, user_id);
COMMENT ON TABLE tenancy.active_users IS 'Users who set a context, per organization and month (UTC).';

-- Sharing. A shareable table (tenancy.enable_sharing(), emitted by the policy compiler for
-- `kind = "shareable"`) lets its rows be shared with other organizations (tenancy.share()) and,
-- with a visibility column, published to all of them.
CREATE TABLE tenancy.shareable_tables (
    relation          regclass PRIMARY KEY,
    tenant_column     text NOT NULL,
    id_column         text NOT NULL,
    id_type           text NOT NULL,
    visibility_column text,
    share_permission  text
);
COMMENT ON TABLE tenancy.shareable_tables IS 'Tables whose rows can be shared (tenancy.enable_sharing()).';

-- One row per row shared with one organization. Read access is implied; write and reshare are
-- granted explicitly. A grantee never deletes. Rows of the shared table that are deleted take
-- their shares with them (tenancy.forget_shares()). The grantee is not a foreign key on purpose:
-- a share to an organization that does not exist is kept like any other (and reaches nobody),
-- so that share() answers alike for every organization the caller cannot see. Creating an
-- organization drops shares addressed to its id; deleting one drops those it received.
CREATE TABLE tenancy.shares (
    relation       regclass NOT NULL,
    owner_org      uuid NOT NULL REFERENCES tenancy.organizations (id) ON DELETE CASCADE,
    row_id         text NOT NULL,
    grantee_org    uuid NOT NULL,
    can_write      boolean NOT NULL DEFAULT false,
    can_reshare    boolean NOT NULL DEFAULT false,
    granted_by_org uuid NOT NULL,
    granted_by     text NOT NULL,
    granted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (relation, owner_org, row_id, grantee_org),
    CHECK (grantee_org <> owner_org)
);
-- What the compiled policies read: the rows shared with the current organization.
CREATE INDEX shares_grantee_idx ON tenancy.shares (grantee_org, relation, owner_org, row_id) INCLUDE (can_write);
CREATE INDEX shares_granted_by_idx ON tenancy.shares (granted_by_org, relation);
COMMENT ON TABLE tenancy.shares IS 'Rows shared with other organizations (tenancy.share(), tenancy.unshare(), tenancy.shares_of()).';

-- pg_dump keeps the tenants and their members (the seeded plans and roles come with the extension).
SELECT pg_catalog.pg_extension_config_dump('tenancy.organizations', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.members', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.quota_overrides', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.quota_sources', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.usage_sources', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.usage_events', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.active_users', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.shareable_tables', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.shares', '');
