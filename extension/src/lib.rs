//! pg_tenancy: multi-tenancy inside PostgreSQL.
//!
//! - [`gucs`]: the superuser-only settings that hold the tenant context.
//! - [`context`]: setting and reading the context (`tenancy.set_context()`, `current_org()`, ...).
//! - [`organizations`]: organizations and members.
//! - [`privilege`]: caller identity and running catalog statements as the catalog owner.
//! - [`quota`]: plans, limits and the quota trigger; [`counters`]: its exact shared-memory counters.
//! - [`usage`]: usage metering (`record_usage()`, active users).
//! - [`sharing`]: the trigger that keeps shared rows in place (the sharing API is SQL).
//! - [`error`]: every error we raise, with its SQLSTATE; [`catalog`]: SPI helpers.

use pgrx::prelude::*;

mod catalog;
mod context;
mod counters;
mod error;
mod gucs;
mod organizations;
mod privilege;
mod quota;
mod sharing;
mod usage;

pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: reading a flag the postmaster sets while it loads shared_preload_libraries.
    // Loaded any later, a backend could have created `tenancy.*` placeholders before our
    // settings existed; refuse instead of guessing.
    if !unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        error::TenancyError::NotPreloaded.raise();
    }
    gucs::init();
    counters::init();
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
