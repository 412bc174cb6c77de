//! The tenant context lives in superuser-only (`PGC_SUSET`) settings under the reserved prefix
//! `tenancy.`. An application role cannot `SET`, `SET LOCAL`, `set_config()`, `RESET`, `ALTER ROLE
//! .. SET` or `ALTER DATABASE .. SET` them, nor pass them in the startup packet; only the
//! validating functions in [`crate::context`] write them. Because they are ordinary settings,
//! PostgreSQL gives us transaction scoping, savepoint rollback and propagation to parallel
//! workers for free. `RESET ALL` / `DISCARD ALL` may clear them (never set them), which fails
//! closed and lets connection poolers drop a leftover session context.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// `tenancy.org_id`: id of the organization the current transaction acts for (empty: none), and
/// in a project context the project's after a `/` (`<org uuid>/<project uuid>`).
pub static ORG_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `tenancy.user_id`: the application's id of the user acting (empty: none).
pub static USER_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `tenancy.membership`: the membership the context was checked against, in one setting (one
/// write instead of four: each costs about 2,000 instructions), as
/// `checked;role;ranks;permissions[;org_role;org_permissions]`:
/// - `checked`: the membership generation of the context's organization when its membership was
///   last checked ([`crate::membership`]), followed by `t` when a trusted token vouched for it; a
///   reader that finds the organization's generation moved checks the membership again;
/// - `role`: the user's member role in that organization (`[a-z][a-z0-9_]*`, empty for none);
/// - `ranks`: every role with its rank, `owner:40,admin:30,...`, captured when the context was
///   set so that `has_role()` needs no catalog lookup;
/// - `permissions`: the member role's permissions, comma separated;
/// - in a project context, `org_role` and `org_permissions`: the user's role in the project's
///   organization and its permissions (what `has_org_role()` reads), when `role` is the
///   project's override of it. Absent, they are `role` and `permissions`.
pub static MEMBERSHIP: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `tenancy.allow_explain`: whether EXPLAIN may show queries that row-level security applies to.
/// Off by default: the row counts, timings, buffer counts and estimates of such a plan tell about
/// rows the policies hide (see [`crate::hooks`]). Superuser-only, so a DBA may turn it on in
/// their own session and then `SET ROLE` to an application role.
pub static ALLOW_EXPLAIN: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `tenancy.allow_signup`: whether roles that are not DBAs may create organizations with
/// `tenancy.create_organization()` (sign-up). Superuser-only; per database or role with `ALTER
/// DATABASE|ROLE ... SET tenancy.allow_signup = off`.
pub static ALLOW_SIGNUP: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `tenancy.session_context`: whether the role may keep a context for the whole session
/// (`tenancy.set_session_context()`). Off by default: behind a pool, a session context reaches
/// whoever gets the connection next. `tenancy apply` turns it on for the policy files' session
/// roles.
pub static SESSION_CONTEXT: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `tenancy.token_leeway`: seconds of clock skew allowed when checking a token's `exp` and `nbf`.
pub static TOKEN_LEEWAY: GucSetting<i32> = GucSetting::<i32>::new(30);
/// `tenancy.postgrest_trust_claims`: whether `tenancy.postgrest_pre_request()` takes the context
/// from `request.jwt.claims` (PostgREST verified the token) instead of verifying the bearer token
/// of `request.headers` itself. Off by default: any SQL can set `request.jwt.claims`.
pub static POSTGREST_TRUST_CLAIMS: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Names as `set_config_option()` wants them, in the order [`crate::context`] writes them.
pub const ORG_ID_NAME: &std::ffi::CStr = c"tenancy.org_id";
pub const USER_ID_NAME: &std::ffi::CStr = c"tenancy.user_id";
pub const MEMBERSHIP_NAME: &std::ffi::CStr = c"tenancy.membership";

pub fn init() {
    let flags = GucFlags::from_bits_retain(pgrx::pg_sys::GUC_NOT_IN_SAMPLE as i32)
        | GucFlags::DISALLOW_IN_FILE
        | GucFlags::DISALLOW_IN_AUTO_FILE;
    let define = |name, short, setting| {
        GucRegistry::define_string_guc(
            name,
            short,
            c"Set only through tenancy.set_context(); superuser-only so that it cannot be forged.",
            setting,
            GucContext::Suset,
            flags,
        )
    };
    define(ORG_ID_NAME, c"Organization of the current tenant context.", &ORG_ID);
    define(USER_ID_NAME, c"User of the current tenant context.", &USER_ID);
    define(
        MEMBERSHIP_NAME,
        c"Membership of the current tenant context, as checked (generation;role;ranks;permissions).",
        &MEMBERSHIP,
    );

    GucRegistry::define_bool_guc(
        c"tenancy.allow_explain",
        c"Allows EXPLAIN of queries that row-level security applies to.",
        c"Off: refused, because such a plan's row counts, timings and estimates reveal rows the policies hide.",
        &ALLOW_EXPLAIN,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"tenancy.session_context",
        c"Allows this role to keep a tenant context for the whole session (tenancy.set_session_context).",
        c"Off: behind a connection pool a session context reaches whoever gets the connection next.",
        &SESSION_CONTEXT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenancy.token_leeway",
        c"Seconds of clock skew allowed when checking a context token's exp and nbf claims.",
        c"",
        &TOKEN_LEEWAY,
        0,
        300,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"tenancy.postgrest_trust_claims",
        c"Makes tenancy.postgrest_pre_request() trust request.jwt.claims instead of verifying the bearer token.",
        c"Off: the pre-request function verifies the token of the Authorization header itself.",
        &POSTGREST_TRUST_CLAIMS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"tenancy.allow_signup",
        c"Allows roles that are not DBAs to create organizations (tenancy.create_organization).",
        c"Off: only superusers and members of tenancy_admin create organizations.",
        &ALLOW_SIGNUP,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// Reserves the `tenancy.` prefix; called from `_PG_init` after every `tenancy.*` setting is
/// defined (here and in [`crate::counters`]): reserving removes the placeholders of settings not
/// defined yet, such as a `tenancy.max_counters` line in postgresql.conf.
pub fn reserve_prefix() {
    // SAFETY: called from _PG_init in the postmaster with a static NUL-terminated string.
    // Reserving the prefix removes placeholders and refuses any other `tenancy.*` setting, so
    // nobody can create a look-alike placeholder.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"tenancy".as_ptr()) };
}

/// Calls `f` with the setting's bytes (empty when not set), without copying them: the readers
/// that policies call once per statement use this.
pub fn with<R>(setting: &GucSetting<Option<CString>>, f: impl FnOnce(&[u8]) -> R) -> R {
    // SAFETY: the GUC machinery owns the string the variable points to; it stays valid until the
    // setting changes, which nothing does while `f` runs (it only reads).
    let bytes = unsafe {
        let value = *setting.as_ptr();
        if value.is_null() {
            &[][..]
        } else {
            std::ffi::CStr::from_ptr(value).to_bytes()
        }
    };
    f(bytes)
}

/// The setting's value, with the empty string read as "not set".
pub fn read(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting.get().and_then(|v| v.into_string().ok()).filter(|v| !v.is_empty())
}
