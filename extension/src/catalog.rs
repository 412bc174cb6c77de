//! Small helpers for the fixed, parameterised catalog statements the SQL API runs (usually
//! inside [`crate::privilege::as_catalog_owner`]).

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

/// Runs one statement and returns the first column of its first row (None: no row or NULL).
pub fn one<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Option<T> {
    Spi::connect_mut(|client| {
        let table = client.update(sql, Some(1), args)?;
        if table.is_empty() {
            return Ok(None);
        }
        table.first().get_one::<T>()
    })
    .unwrap_or_else(|e| pgrx::error!("pg_tenancy: catalog statement failed: {e}"))
}

/// Raises the error `unknown` builds (from the valid names, in `order`) unless `name` is listed
/// in the catalog table `table` (`roles` or `plans`; never user input). Run as the catalog owner.
pub(crate) fn require_listed(
    table: &str,
    order: &str,
    name: &str,
    unknown: impl FnOnce(String) -> crate::error::TenancyError,
) {
    let known: Option<bool> = one(
        &format!("SELECT EXISTS (SELECT FROM tenancy.{table} WHERE name OPERATOR(pg_catalog.=) $1)"),
        &[name.into()],
    );
    if known != Some(true) {
        let valid: String =
            one(&format!("SELECT pg_catalog.string_agg(name, ', ' ORDER BY {order}) FROM tenancy.{table}"), &[])
                .unwrap_or_default();
        unknown(valid).raise()
    }
}
