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
