//! Who is calling, and running catalog statements as the catalog's owner.
//!
//! Management functions are SECURITY INVOKER on purpose: inside a SECURITY DEFINER function the
//! caller's identity is gone, and "is the caller a DBA?" cannot be answered. Instead each function
//! decides with the real caller's identity, then runs its fixed, parameterised catalog statements
//! as the owner of schema `tenancy` with `search_path` pinned to `pg_catalog, pg_temp`, the same
//! technique PostgreSQL uses for its own foreign-key checks.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgOid;

/// Name of the NOLOGIN role whose members may manage every organization without a context.
pub const ADMIN_ROLE: &std::ffi::CStr = c"tenancy_admin";

/// True when the calling role is a superuser or has the privileges of `tenancy_admin`.
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
        // SAFETY: restores exactly the values read in `as_catalog_owner`.
        unsafe {
            pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_context);
            pg_sys::AtEOXact_GUC(!std::thread::panicking(), self.nest_level);
        }
    }
}

/// Runs `f` as the owner of schema `tenancy`, with a safe search_path.
pub fn as_catalog_owner<R>(f: impl FnOnce() -> R) -> R {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: FFI calls into the GUC machinery and miscinit with valid pointers and
    // NUL-terminated strings; the Drop guard undoes both changes.
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
    let owner = catalog_owner();
    // SAFETY: switching to an existing role for the duration of `f`; the guard switches back.
    unsafe {
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        )
    };
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
    let owner = Spi::get_one::<pg_sys::Oid>(
        "SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname OPERATOR(pg_catalog.=) 'tenancy'",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| pgrx::error!("schema \"tenancy\" is missing: is pg_tenancy installed?"));
    OWNER.with(|o| o.set((schema, owner)));
    owner
}

/// Restores the caller's user id when dropped (also while an error unwinds).
struct SwitchedUser {
    saved_user: pg_sys::Oid,
    saved_context: i32,
}

impl Drop for SwitchedUser {
    fn drop(&mut self) {
        // SAFETY: restores exactly the values read in `as_owner_for_kept_plan`.
        unsafe { pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_context) };
    }
}

/// Runs `f`, which only executes plans kept with SPI_keepplan that were prepared under
/// [`as_catalog_owner`], as the catalog owner. Unlike `as_catalog_owner` it leaves
/// `search_path` alone: a kept plan is revalidated with the search_path it was created under,
/// so no name is resolved under the caller's. This is the hot path of `record_usage()`.
pub fn as_owner_for_kept_plan<R>(f: impl FnOnce() -> R) -> R {
    let owner = catalog_owner();
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: reads and sets the current user id; the guard restores it.
    let guard = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(owner, saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
        SwitchedUser { saved_user, saved_context }
    };
    let result = f();
    drop(guard);
    result
}

/// Where a backend keeps one statement that [`run_kept`] prepares on first use.
pub type KeptStatement = std::cell::RefCell<Option<pgrx::spi::OwnedPreparedStatement>>;

/// Runs `run` with `slot`'s statement, as the catalog owner. The statement (`sql` with
/// parameters of `types`) is prepared on first use under [`as_catalog_owner`] and kept for the
/// life of the backend, so the hot paths that call this parse and plan it once. `what` names the
/// statement in errors.
pub fn run_kept<R>(
    slot: &'static std::thread::LocalKey<KeptStatement>,
    sql: &str,
    types: &[pg_sys::Oid],
    what: &str,
    run: impl FnOnce(&mut pgrx::spi::SpiClient<'_>, &pgrx::spi::OwnedPreparedStatement) -> pgrx::spi::Result<R>,
) -> R {
    if slot.with(|s| s.borrow().is_none()) {
        let types: Vec<PgOid> = types.iter().map(|&t| PgOid::from(t)).collect();
        let stmt = as_catalog_owner(|| {
            Spi::connect(|client| client.prepare(sql, &types).map(|p| p.keep()))
                .unwrap_or_else(|e| pgrx::error!("pg_tenancy: preparing {what} failed: {e}"))
        });
        slot.with(|s| *s.borrow_mut() = Some(stmt));
    }
    as_owner_for_kept_plan(|| {
        Spi::connect_mut(|client| {
            slot.with(|s| {
                let stmt = s.borrow();
                run(client, stmt.as_ref().expect("prepared above"))
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
