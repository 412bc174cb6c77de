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

/// A parameter of [`latest`]: its type and value (None: NULL).
pub struct Arg(pg_sys::Oid, Option<pg_sys::Datum>);

/// `value` as a parameter of [`latest`].
pub fn arg<T: IntoDatum>(value: T) -> Arg {
    Arg(T::type_oid(), value.into_datum())
}

/// Runs `sql` over pg_tenancy's own tables with the latest snapshot instead of the transaction's,
/// and returns the first column of each row it returns as a uuid (RETURNING, or a SELECT). In a
/// REPEATABLE READ transaction too it reads and reaches rows that other transactions committed
/// since this one began, the way PostgreSQL's own foreign-key checks and actions do: a count
/// taken under a lock (members of an organization) or a revocation (the shares a grantee passed
/// on) must see everything committed, not the transaction's past. Run as the catalog owner.
pub fn latest(sql: &str, args: &[Arg]) -> Vec<Option<pgrx::Uuid>> {
    execute_latest(sql, args, false, |datum, is_null| {
        // SAFETY: the first column of these statements is a uuid.
        unsafe { pgrx::Uuid::from_datum(datum, is_null) }
    })
}

/// [`latest`] for a statement that returns one bigint (a count).
pub fn count_latest(sql: &str, args: &[Arg]) -> i64 {
    let rows = execute_latest(sql, args, true, |datum, is_null| {
        // SAFETY: the first column of these statements is a bigint.
        unsafe { i64::from_datum(datum, is_null) }
    });
    rows.into_iter().next().flatten().unwrap_or_else(|| pgrx::error!("pg_tenancy: a catalog count returned no row"))
}

/// Prepares and executes `sql` with `args` under the latest snapshot; `first` reads the first
/// column of each row returned.
fn execute_latest<T>(
    sql: &str,
    args: &[Arg],
    read_only: bool,
    first: impl Fn(pg_sys::Datum, bool) -> Option<T>,
) -> Vec<Option<T>> {
    let sql = std::ffi::CString::new(sql).unwrap_or_else(|_| pgrx::error!("pg_tenancy: NUL in a catalog statement"));
    let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.0).collect();
    let mut values: Vec<pg_sys::Datum> = args.iter().map(|a| a.1.unwrap_or(pg_sys::Datum::from(0))).collect();
    let nulls: Vec<std::ffi::c_char> =
        args.iter().map(|a| if a.1.is_some() { b' ' } else { b'n' } as std::ffi::c_char).collect();
    Spi::connect(|_| {
        // SAFETY: standard SPI calls inside a connection: the plan is prepared with the
        // parameters' types and executed once with their values; the latest snapshot is only
        // read by the executor (no crosscheck), as RI_FKey actions do in REPEATABLE READ.
        unsafe {
            let plan = pg_sys::SPI_prepare(sql.as_ptr(), types.len() as i32, types.as_mut_ptr());
            if plan.is_null() {
                let code = pg_sys::SPI_result;
                pgrx::error!("pg_tenancy: preparing a catalog statement failed (SPI code {code})");
            }
            let rc = pg_sys::SPI_execute_snapshot(
                plan,
                values.as_mut_ptr(),
                nulls.as_ptr(),
                pg_sys::GetLatestSnapshot(),
                std::ptr::null_mut(),
                read_only,
                !read_only,
                0,
            );
            if rc < 0 {
                pgrx::error!("pg_tenancy: a catalog statement failed (SPI code {rc})");
            }
            let table = pg_sys::SPI_tuptable;
            if table.is_null() {
                return Vec::new();
            }
            (0..pg_sys::SPI_processed as usize)
                .map(|i| {
                    let mut is_null = false;
                    let datum = pg_sys::SPI_getbinval(*(*table).vals.add(i), (*table).tupdesc, 1, &mut is_null);
                    first(datum, is_null)
                })
                .collect()
        }
    })
}
