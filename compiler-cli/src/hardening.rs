//! What application roles may do besides reading and writing governed tables, in one place for
//! `compile`/`apply` (which emit it) and `lint` (which audits it and prints the same SQL as the
//! fix). Privileges PostgreSQL grants to PUBLIC cannot be taken from one role alone, so these
//! take them from PUBLIC; what monitoring needs moves to `pg_read_all_stats` (`pg_monitor`).
//!
//! - **The writing functions** (members, sharing, usage, sign-up) are for read-write roles:
//!   `tenancy_writer` is granted to them and taken from read-only roles, which get
//!   `tenancy_reader` instead. Both mark the roles as application roles, the DBA's way (a table's
//!   owner controls its grants and policies): `tenancy verify` acts as those roles.
//! - **No temporary tables**: a temporary table filled under one organization's context stays
//!   readable under the next context on the same pooled connection.
//! - **No view of other sessions or of table statistics**: every tenant runs as the same role,
//!   so `pg_stat_activity` would show other tenants' statements, literals included, and
//!   `pg_stat_user_tables` and friends how many rows every organization together has and writes.
//! - **No large objects**: they belong to the role that created them, and all tenants are it.
//! - **How each role may start a context**: token-only roles are made members of
//!   `tenancy_token_only`, so SQL run as them (logged in as them or switched to them) cannot
//!   name another user or organization; `tenancy.session_context = on` (`ALTER ROLE ... SET`,
//!   for the role's new connections) only for session roles, because behind a pool a session
//!   context reaches whoever gets the connection next.

use crate::schema::quote_ident;

fn list(roles: &[String]) -> String {
    roles.iter().map(|r| quote_ident(r)).collect::<Vec<_>>().join(", ")
}

/// `GRANT tenancy_writer TO` the read-write roles.
pub fn grant_writer(roles: &[String]) -> String {
    format!("GRANT tenancy_writer TO {};", list(roles))
}

/// `REVOKE tenancy_writer FROM` a read-only role, and `GRANT tenancy_reader` to it.
pub fn read_only(role: &str) -> Vec<String> {
    vec![
        format!("REVOKE tenancy_writer FROM {};", quote_ident(role)),
        format!("GRANT tenancy_reader TO {};", quote_ident(role)),
    ]
}

/// The role's context settings: token-only or not, session contexts or not.
pub fn context_settings(role: &str, token_only: bool, session: bool) -> Vec<String> {
    let role = quote_ident(role);
    vec![
        if token_only {
            format!("GRANT tenancy_token_only TO {role};")
        } else {
            format!("REVOKE tenancy_token_only FROM {role};")
        },
        if session {
            format!("ALTER ROLE {role} SET tenancy.session_context = on;")
        } else {
            format!("ALTER ROLE {role} RESET tenancy.session_context;")
        },
    ]
}

/// No temporary tables for PUBLIC (and the application roles, should they hold it themselves).
pub fn revoke_temporary(roles: &[String]) -> String {
    let from = std::iter::once("PUBLIC".to_string()).chain(roles.iter().map(|r| quote_ident(r))).collect::<Vec<_>>();
    format!(
        "DO $$ BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM {}', current_database()); END $$;",
        from.join(", ").replace('\'', "''")
    )
}

/// The statistics views and functions PUBLIC may use move to pg_read_all_stats.
pub const RESTRICT_STATISTICS: &str = r"DO $$
DECLARE
    o text;
BEGIN
    FOR o IN SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
              WHERE c.relkind = 'v' AND has_table_privilege('public', c.oid, 'SELECT')
                AND ((c.relnamespace = 'pg_catalog'::regnamespace AND (c.relname LIKE 'pg\_stat\_%' OR c.relname LIKE 'pg\_statio\_%'))
                     OR c.relname LIKE 'pg\_stat\_statements%')
              ORDER BY 1 LOOP
        EXECUTE format('REVOKE SELECT ON %s FROM PUBLIC', o);
        EXECUTE format('GRANT SELECT ON %s TO pg_read_all_stats', o);
    END LOOP;
    FOR o IN SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
              WHERE has_function_privilege('public', p.oid, 'EXECUTE')
                AND ((p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE 'pg\_stat\_get\_%')
                     OR p.proname LIKE 'pg\_stat\_statements%')
              ORDER BY 1 LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', o);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pg_read_all_stats', o);
    END LOOP;
END
$$;";

/// The large-object functions are taken from PUBLIC.
pub const REVOKE_LARGE_OBJECTS: &str = r"DO $$
DECLARE
    f text;
BEGIN
    FOR f IN SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'pg_catalog'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE')
                AND (p.proname LIKE 'lo\_%' OR p.proname IN ('loread', 'lowrite'))
              ORDER BY 1 LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;";

/// The catalog state these statements change (for `tenancy plan`).
pub const DATABASE_STATE: &str = r"
SELECT concat_ws(E'\n',
    (SELECT coalesce(datacl::text, '') FROM pg_database WHERE datname = current_database()),
    (SELECT string_agg(schema_name::text, ',' ORDER BY schema_name) FROM tenancy.governed_schemas),
    (SELECT string_agg(name || ':' || member_role || ':' || db_roles::text, ',' ORDER BY name) FROM tenancy.services),
    (SELECT string_agg(m.roleid::regrole::text || ':' || m.member::regrole::text, ',' ORDER BY 1) FROM pg_auth_members m
      WHERE m.roleid::regrole::text IN ('tenancy_writer', 'tenancy_reader', 'tenancy_token_only')),
    (SELECT string_agg(s.setrole::text || ':' || array_to_string(s.setconfig, ','), ';' ORDER BY 1) FROM pg_db_role_setting s
      WHERE s.setdatabase = 0 AND array_to_string(s.setconfig, ',') LIKE '%tenancy.%'),
    (SELECT string_agg(c.oid::text || coalesce(c.relacl::text, ''), ';' ORDER BY c.oid) FROM pg_class c
      WHERE c.relkind = 'v' AND ((c.relnamespace = 'pg_catalog'::regnamespace AND (c.relname LIKE 'pg\_stat\_%' OR c.relname LIKE 'pg\_statio\_%'))
                                 OR c.relname LIKE 'pg\_stat\_statements%')),
    (SELECT string_agg(p.oid::text || coalesce(p.proacl::text, ''), ';' ORDER BY p.oid) FROM pg_proc p
      WHERE (p.pronamespace = 'pg_catalog'::regnamespace AND (p.proname LIKE 'pg\_stat\_get\_%' OR p.proname LIKE 'lo\_%' OR p.proname IN ('loread', 'lowrite')))
         OR p.proname LIKE 'pg\_stat\_statements%'))";

#[cfg(test)]
mod unit {
    #[test]
    fn temporary_is_revoked_from_public_and_the_roles() {
        let sql = super::revoke_temporary(&["app_user".into(), "Odd Role".into()]);
        assert_eq!(
            sql,
            r#"DO $$ BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, app_user, "Odd Role"', current_database()); END $$;"#
        );
    }
}
