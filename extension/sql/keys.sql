-- Organizations keyed the application's way: a text id (`org_abc123`, a cuid, a ULID) or an
-- integer, copied from the application's own organizations table by `tenancy apply`'s sync.
-- Such an organization's id is tenancy.org_key_id(key), a function of the key alone, so the
-- context functions go from key to organization without a lookup (tenancy.set_context_key())
-- and every id has one key (tenancy.current_org_key(), tenancy.current_org_bigint()). An
-- organization made with tenancy.create_organization() has no key column of its own: its key is
-- the text of its id.
ALTER TABLE tenancy.organizations ADD COLUMN key text;
ALTER TABLE tenancy.organizations ADD CONSTRAINT organizations_key_key UNIQUE (key);
ALTER TABLE tenancy.organizations ADD CONSTRAINT organizations_key_check
    CHECK (key IS NULL OR (octet_length(key) BETWEEN 1 AND 256 AND btrim(key) <> '' AND id = tenancy.org_key_id(key)));
COMMENT ON COLUMN tenancy.organizations.key IS
    'The application''s own id of the organization (text or integer ids), when it is not the text of id; id = tenancy.org_key_id(key).';
