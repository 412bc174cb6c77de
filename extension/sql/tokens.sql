-- Signed context tokens (tenancy.set_context_token(), tenancy.postgrest_pre_request()): the keys
-- they are verified with. Only the table's owner (the DBA) reads or writes it; the extension
-- reads it straight from the table, so no other role needs any privilege on it.
CREATE TABLE tenancy.token_keys (
    -- The JWT header's `kid`. A token without one is tried against every current key of its
    -- algorithm, so that keys rotate without downtime.
    kid          text PRIMARY KEY CHECK (kid <> '' AND length(kid) <= 256),
    -- The one algorithm this key verifies; a token whose header names another is refused.
    algorithm    text NOT NULL CHECK (algorithm IN ('HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512',
                                                    'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA')),
    -- HS*: the shared secret (at least 32 bytes), or a JWK of kty "oct". Others: the public
    -- key, as PEM (-----BEGIN PUBLIC KEY-----) or as a JWK.
    key          text NOT NULL,
    -- When set, a token must carry this `iss` / this `aud`.
    issuer       text,
    audience     text,
    valid_from   timestamptz NOT NULL DEFAULT now(),
    valid_until  timestamptz,
    -- false: the token names the user and the organization; the member role comes from
    -- tenancy.members (the user must be an active member). true: the identity provider is the
    -- source of truth: the token's org_role (which must exist in tenancy.roles) and
    -- org_permissions are the context's, with no row in tenancy.members needed.
    trust_claims boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
COMMENT ON TABLE tenancy.token_keys IS 'Keys that verify context tokens (tenancy.set_context_token); DBA only.';
REVOKE ALL ON tenancy.token_keys FROM PUBLIC;
-- Keys are the DBA's data: pg_dump keeps them.
SELECT pg_catalog.pg_extension_config_dump('tenancy.token_keys', '');

CREATE TRIGGER tenancy_token_key_valid AFTER INSERT OR UPDATE ON tenancy.token_keys
    FOR EACH ROW EXECUTE FUNCTION tenancy.token_keys_trigger();
CREATE TRIGGER tenancy_token_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.token_keys
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.token_keys_trigger();
