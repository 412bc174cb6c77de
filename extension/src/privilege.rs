//! Who is calling, and running catalog statements as the catalog's owner.
//!
//! Management functions are SECURITY INVOKER on purpose: inside a SECURITY DEFINER function the
//! caller's identity is gone, and "is the caller a DBA?" cannot be answered. Instead each function
//! decides with the real caller's identity, then runs its fixed, parameterised catalog statements
//! as the owner of schema `tenancy` with `search_path` pinned to `pg_catalog, pg_temp`, the same
//! technique PostgreSQL uses for its own foreign-key checks. An application table is only ever
//! read as its own owner, in a security-restricted operation ([`as_table_owner`]).

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgOid;

/// Name of the NOLOGIN role whose members may manage every organization without a context.
pub const ADMIN_ROLE: &std::ffi::CStr = c"tenancy_admin";

/// True when the calling role is a superuser or has the privileges of `tenancy_admin`.
/// The current role's name, for messages.
pub fn current_role_name() -> String {
    // SAFETY: a syscache lookup of the current user; noerr returns NULL for a dropped role.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true);
        if name.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }
}

pub fn caller_is_admin() -> bool {
    // SAFETY: plain catalog lookups in a backend with a valid transaction; get_role_oid with
    // missing_ok = true returns InvalidOid instead of raising.
    unsafe {
        let me = pg_sys::GetUserId();
        if pg_sys::superuser_arg(me) {
            return true;
        }
        let admin = pg_sys::get_role_oid(ADMIN_ROLE.as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::has_privs_of_role(me, admin)
    }
}

/// Restores the caller's user id and GUC nest level when dropped, including while a PostgreSQL
/// error unwinds through Rust (transaction abort would also restore them; this keeps the
/// function correct when the error is caught by a savepoint in the caller).
struct Elevated {
    saved_user: pg_sys::Oid,
    saved_context: i32,
    nest_level: i32,
}

impl Drop for Elevated {
    fn drop(&mut self) {
        // SAFETY: restores exactly the values read in `elevate`. `AtEOXact_GUC(false, ..)` rolls
        // back every setting changed since the nest level began, a plain `SET` (or
        // `set_config(.., false)`) by code that ran in between included: with `true` such a
        // change would outlive the scope and reach the caller (a search_path that shadows
        // pg_catalog, say). This is what PostgreSQL's own maintenance commands do after running
        // a table owner's code.
        unsafe {
            pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_context);
            pg_sys::AtEOXact_GUC(false, self.nest_level);
        }
    }
}

/// Switches to `user` with the security context bits `flags` added, and `search_path` pinned to
/// `pg_catalog, pg_temp` in a new GUC nest level: no name in a statement run from here resolves
/// to anything the caller (or an application role) created. Undone when the guard drops.
fn elevate(user: impl FnOnce() -> pg_sys::Oid, flags: u32) -> Elevated {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: FFI calls into the GUC machinery and miscinit with valid pointers and
    // NUL-terminated strings; the guard undoes both changes.
    let guard = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        let nest_level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        Elevated { saved_user, saved_context, nest_level }
    };
    let user = user();
    // SAFETY: switching to an existing role for the duration of the guard.
    unsafe { pg_sys::SetUserIdAndSecContext(user, saved_context | flags as i32) };
    guard
}

/// Runs `f` as the owner of schema `tenancy`, with a safe search_path. Only for pg_tenancy's own
/// fixed statements over its own tables: never over a relation, name or expression that a caller
/// or an application's schema controls (see [`as_table_owner`]).
pub fn as_catalog_owner<R>(f: impl FnOnce() -> R) -> R {
    let guard = elevate(catalog_owner, pg_sys::SECURITY_LOCAL_USERID_CHANGE);
    let result = f();
    drop(guard);
    result
}

/// Runs `f`, which reads an application table, as that table's owner inside a security-restricted
/// operation, the way PostgreSQL runs its own maintenance (ANALYZE, REFRESH MATERIALIZED VIEW):
/// whatever the table's definition makes PostgreSQL run while planning or reading it (index
/// expressions, constraints of inheritance children, column types) runs with its owner's rights
/// and may not change roles or settings for good. `SECURITY_NOFORCE_RLS` lets the owner read past
/// `FORCE ROW LEVEL SECURITY`, as foreign-key checks do; search_path is pinned as above.
pub fn as_table_owner<R>(relation: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let owner = || {
        // SAFETY: a syscache lookup of an existing relation's owner.
        let tuple = unsafe {
            pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, pg_sys::Datum::from(relation))
        };
        if tuple.is_null() {
            pgrx::error!("pg_tenancy: relation {} does not exist", relation.to_u32());
        }
        // SAFETY: a valid pg_class tuple, released right after reading its owner.
        unsafe {
            let owner = (*(pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_class)).relowner;
            pg_sys::ReleaseSysCache(tuple);
            owner
        }
    };
    let guard = elevate(
        owner,
        pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION | pg_sys::SECURITY_NOFORCE_RLS,
    );
    let result = f();
    drop(guard);
    result
}

thread_local! {
    /// (oid of schema tenancy, its owner): the schema's oid changes if the extension is
    /// re-created, which makes the cached owner stale.
    static OWNER: std::cell::Cell<(pg_sys::Oid, pg_sys::Oid)> =
        const { std::cell::Cell::new((pg_sys::InvalidOid, pg_sys::InvalidOid)) };
}

/// The owner of schema `tenancy` (the extension's owner), cached per backend.
fn catalog_owner() -> pg_sys::Oid {
    // SAFETY: a syscache lookup by name; missing_ok returns InvalidOid.
    let schema = unsafe { pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true) };
    if schema == pg_sys::InvalidOid {
        pgrx::error!("schema \"tenancy\" is missing: is pg_tenancy installed?");
    }
    let (cached_schema, cached_owner) = OWNER.with(|o| o.get());
    if cached_schema == schema {
        return cached_owner;
    }
    // SAFETY: a syscache lookup of the schema found above.
    let owner = unsafe {
        let tuple =
            pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::NAMESPACEOID as i32, pg_sys::Datum::from(schema));
        if tuple.is_null() {
            pgrx::error!("schema \"tenancy\" is missing: is pg_tenancy installed?");
        }
        let owner = (*(pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_namespace)).nspowner;
        pg_sys::ReleaseSysCache(tuple);
        owner
    };
    OWNER.with(|o| o.set((schema, owner)));
    owner
}

/// Where a backend keeps one statement that [`run_kept`] prepares on first use.
pub type KeptStatement = std::cell::RefCell<Option<pgrx::spi::OwnedPreparedStatement>>;

/// Runs `run` with `slot`'s statement, as the catalog owner. The statement (`sql` with
/// parameters of `types`) is prepared on first use and kept for the life of the backend, so the
/// hot paths that call this parse and plan it once. It is prepared and executed with the same
/// pinned search_path ([`as_catalog_owner`]): PostgreSQL re-analyses a kept statement whenever
/// the search_path differs from the one it was planned with, so executing it under the caller's
/// would resolve its names anew, there. `sql` also qualifies every function and operator. `what`
/// names the statement in errors.
pub fn run_kept<R>(
    slot: &'static std::thread::LocalKey<KeptStatement>,
    sql: &str,
    types: &[pg_sys::Oid],
    what: &str,
    run: impl FnOnce(&mut pgrx::spi::SpiClient<'_>, &pgrx::spi::OwnedPreparedStatement) -> pgrx::spi::Result<R>,
) -> R {
    as_catalog_owner(|| {
        if slot.with(|s| s.borrow().is_none()) {
            let types: Vec<PgOid> = types.iter().map(|&t| PgOid::from(t)).collect();
            let stmt = Spi::connect(|client| client.prepare(sql, &types).map(|p| p.keep()))
                .unwrap_or_else(|e| pgrx::error!("pg_tenancy: preparing {what} failed: {e}"));
            slot.with(|s| *s.borrow_mut() = Some(stmt));
        }
        Spi::connect_mut(|client| {
            slot.with(|s| {
                let stmt = s.borrow();
                match stmt.as_ref() {
                    Some(stmt) => run(client, stmt),
                    None => pgrx::error!("pg_tenancy: {what} was not prepared"),
                }
            })
        })
        .unwrap_or_else(|e| pgrx::error!("pg_tenancy: {what} failed: {e}"))
    })
}

#[pg_extern(stable, parallel_safe)]
/// True when the calling role may manage every organization: a superuser or a member of
/// `tenancy_admin`.
fn is_admin() -> bool {
    caller_is_admin()
}

/// Runs `f` as `role` inside a security-restricted operation (search_path pinned as above, and
/// every setting changed meanwhile rolled back): code that `f`'s statements make PostgreSQL run
/// (triggers, defaults, index expressions, policies, types) has `role`'s rights only, and may
/// neither `RESET ROLE` back to the session's user nor change the session for good.
/// `ignore_force` lets a table's owner read and write past `FORCE ROW LEVEL SECURITY`.
pub fn as_role_restricted<R>(role: pg_sys::Oid, ignore_force: bool, f: impl FnOnce() -> R) -> R {
    let mut flags = pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION;
    if ignore_force {
        flags |= pg_sys::SECURITY_NOFORCE_RLS;
    }
    let guard = elevate(|| role, flags);
    let result = f();
    drop(guard);
    result
}

/// For `tenancy verify` (superusers only): runs one statement as `role` in a security-restricted
/// operation ([`as_role_restricted`]), the way PostgreSQL's maintenance commands run a table
/// owner's code, and returns `{"processed": n, "rows": [[column text, ...], ...]}`. A verifier
/// connected as a superuser that merely `SET ROLE`d would let any trigger, default or policy of
/// the audited tables `RESET ROLE` and act as the superuser.
#[pg_extern(volatile, parallel_unsafe)]
fn run_restricted(role: &str, statement: &str, ignore_force: default!(bool, false)) -> pgrx::JsonB {
    // SAFETY: a catalog check of the calling role inside a transaction.
    if !unsafe { pg_sys::superuser() } {
        crate::error::TenancyError::PermissionDenied {
            message: "permission denied for function tenancy.run_restricted".into(),
            detail: Some("Only superusers may run statements as another role.".into()),
            hint: None,
        }
        .raise()
    }
    let name = std::ffi::CString::new(role).unwrap_or_else(|_| pgrx::error!("invalid role name"));
    // SAFETY: a role lookup by NUL-terminated name; missing_ok = false raises 42704 itself.
    let oid = unsafe { pg_sys::get_role_oid(name.as_ptr(), false) };
    let (processed, rows) = as_role_restricted(oid, ignore_force, || {
        Spi::connect_mut(|client| {
            let table = client.update(statement, None, &[])?;
            let processed = table.len();
            let mut rows = Vec::new();
            for row in table {
                let mut values = Vec::new();
                for i in 1..=row.columns() {
                    values.push(match row.get_datum_by_ordinal(i)?.value::<String>() {
                        Ok(v) => v.map_or(serde_json::Value::Null, serde_json::Value::String),
                        Err(_) => pgrx::error!("tenancy.run_restricted: column {i} of the result is not text"),
                    });
                }
                rows.push(serde_json::Value::Array(values));
            }
            Ok::<_, pgrx::spi::Error>((processed, rows))
        })
        .unwrap_or_else(|e| pgrx::error!("tenancy.run_restricted: {e}"))
    });
    pgrx::JsonB(serde_json::json!({ "processed": processed, "rows": rows }))
}
