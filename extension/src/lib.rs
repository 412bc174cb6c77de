//! pg_tenancy: multi-tenancy inside PostgreSQL.
//!
//! - [`gucs`]: the settings: the superuser-only ones that hold the tenant context, and the DBA's.
//! - [`membership`]: who belongs to which organization, read straight from the catalog, and the
//!   generations that make a change of membership reach every session by its next statement.
//! - [`context`]: reading the context (`tenancy.current_org()`, ...), checked against them.
//! - [`session`]: starting and ending a context (`tenancy.set_context()`, ...).
//! - [`organizations`]: organizations and members.
//! - [`privilege`]: caller identity, and running statements as the catalog's owner or, for an
//!   application table, as the table's owner in a security-restricted operation.
//! - [`registry`]: which tables pg_tenancy's triggers may work on.
//! - [`quota`]: plans, limits and the quota trigger; [`counters`]: its exact shared-memory counters.
//! - [`token`]: signed context tokens (`tenancy.set_context_token()`, PostgREST's pre-request).
//! - [`usage`]: usage metering (`record_usage()`, active users); [`active`]: active users of
//!   read-only transactions, queued in shared memory for a background worker.
//! - [`sharing`]: the trigger that keeps shared rows in place, and who owns a row (the sharing
//!   API is SQL).
//! - [`param`]: the organization as a parameter each statement sets once, instead of an InitPlan.
//! - [`hooks`]: EXPLAIN under row-level security, cursors and their contexts, SET CONSTRAINTS,
//!   table locks and ALTER ROLE.
//! - [`error`]: every error we raise, with its SQLSTATE; [`catalog`]: SPI helpers; [`shmem`]:
//!   shared memory.
//!
//! The SQL half is in `sql/`, one file per concern, in this order: `bootstrap.sql` (roles and
//! tables), `catalog.sql` (who reads the catalog), `quotas.sql`, `usage.sql`, `sharing.sql`,
//! `tokens.sql`, and `privileges.sql` (who may execute each function; last).

use pgrx::prelude::*;

mod active;
mod catalog;
mod context;
mod counters;
mod error;
mod gucs;
mod hooks;
mod key;
mod membership;
mod membership_cache;
mod organizations;
mod param;
mod privilege;
mod quota;
mod registry;
mod service;
mod session;
mod sharing;
mod shmem;
mod statistics;
mod token;
mod usage;

pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!(
    "../sql/catalog.sql",
    name = "catalog",
    requires = [
        "bootstrap",
        context::current_org,
        privilege::is_admin,
        quota::limits_changed_trigger,
        membership::membership_changed_trigger
    ]
);
extension_sql_file!("../sql/quotas.sql", name = "quotas", requires = ["catalog", quota::quota_trigger]);
extension_sql_file!("../sql/usage.sql", name = "usage", requires = ["quotas", usage::usage_trigger]);
extension_sql_file!(
    "../sql/sharing.sql",
    name = "sharing",
    requires = [
        "usage",
        sharing::protect_shared_row,
        sharing::_own_row,
        sharing::canonical_id,
        context::has_role,
        context::has_permission,
        context::current_user_id
    ]
);
extension_sql_file!("../sql/tokens.sql", name = "tokens", requires = ["sharing", token::token_keys_trigger]);
extension_sql_file!("../sql/schemas.sql", name = "schemas", requires = ["tokens"]);
extension_sql_file!("../sql/services.sql", name = "services", requires = ["schemas"]);
extension_sql_file!("../sql/keys.sql", name = "keys", requires = ["services", key::org_key_id]);
extension_sql_file!(
    "../sql/projects.sql",
    name = "projects",
    requires = ["keys", context::current_project, membership::membership_changed_trigger]
);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: reading a flag the postmaster sets while it loads shared_preload_libraries.
    // Loaded any later, a backend could have created `tenancy.*` placeholders before our
    // settings existed; refuse instead of guessing.
    if !unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        error::TenancyError::NotPreloaded.raise();
    }
    // An error that crosses pgrx's boundary (a PostgreSQL error raised inside SPI, say) would
    // carry a Rust backtrace in its DETAIL when RUST_BACKTRACE is set in the server's
    // environment: file paths and internals, shown to the application. Turn capturing off for
    // the library's backtraces (std reads this once, at the first capture).
    // SAFETY: the postmaster is single-threaded while it loads shared_preload_libraries.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    gucs::init();
    counters::init();
    gucs::reserve_prefix();
    membership::init();
    active::init();
    hooks::init();
    param::init();
    statistics::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_tenancy'"]
    }
}
