-- pg_tenancy 0.2.0 -> 0.3.0: signed context tokens, token-only and session roles, PostgREST.
--
-- Install the 0.3.0 library first (make install), restart the server (the library is
-- preloaded), then, as a superuser, in every database that has the extension:
--
--     ALTER EXTENSION pg_tenancy UPDATE;
--
-- What changes for applications (see README, "Upgrading"):
-- - tenancy.set_session_context() is refused for roles that are not session roles: declare them
--   in the policy file ([roles] session = [...]) and run `tenancy apply`, which sets
--   tenancy.session_context = on for them (ALTER ROLE; new connections).
-- - New: tenancy.set_context_token(), tenancy.postgrest_pre_request() and the DBA's table of
--   keys, tenancy.token_keys; members of the new role tenancy_token_only (roles whose policy
--   file says `context = "token"`) may start contexts only with tokens.

\echo Use "ALTER EXTENSION pg_tenancy UPDATE TO '0.3.0'" to load this file. \quit

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_token_only') THEN
        CREATE ROLE tenancy_token_only NOLOGIN;
    END IF;
END
$$;

CREATE FUNCTION tenancy.set_context_token("token" text) RETURNS void
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_context_token_wrapper';
CREATE FUNCTION tenancy.postgrest_pre_request() RETURNS void
    STRICT VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'postgrest_pre_request_wrapper';
CREATE FUNCTION tenancy.token_keys_trigger() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'token_keys_trigger_wrapper';

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

REVOKE ALL ON FUNCTION tenancy.set_context_token(text), tenancy.postgrest_pre_request(),
    tenancy.token_keys_trigger() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.set_context_token(text), tenancy.postgrest_pre_request() TO PUBLIC;
