//! Starting and ending a tenant context: `tenancy.set_context()`, `set_session_context()`,
//! `set_user_context()` and `clear_context()`. A context for an organization starts only after
//! the membership is checked; it never starts while a holdable cursor filled under another
//! context is open (its rows would cross over, [`crate::hooks`] tracks them).

use crate::context::{self, Scope};
use crate::error::{self, TenancyError};
use crate::{gucs, membership, privilege};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// What the user id of a service context starts with ([`crate::service`]): no user's may.
pub const SERVICE_PREFIX: &str = "service:";

/// Longest user id accepted, in bytes (ids are the application's: uuids, emails, `user_42`).
pub const MAX_USER_ID: usize = 256;

/// The user id argument: not empty, not too long.
pub fn user_id<'a>(param: &'static str, value: Option<&'a str>) -> &'a str {
    let user = error::non_empty(param, value);
    if user.starts_with(SERVICE_PREFIX) {
        TenancyError::InvalidArgument {
            param,
            reason: format!("\"{user}\" starts with \"{SERVICE_PREFIX}\""),
            hint: Some("User ids starting with \"service:\" are the services' (tenancy.set_service_context()).".into()),
        }
        .raise()
    }
    if user.len() > MAX_USER_ID {
        TenancyError::InvalidArgument {
            param,
            reason: format!("is {} bytes long", user.len()),
            hint: Some(format!("User ids are at most {MAX_USER_ID} bytes.")),
        }
        .raise()
    }
    user
}

pub(crate) fn warn_outside_transaction(scope: Scope) {
    // Outside a transaction block and outside a procedure or DO block (which may run many
    // statements in one transaction, and commit themselves): a statement of its own.
    // SAFETY: reads backend-local transaction and SPI state.
    if scope == Scope::Transaction && !unsafe { pg_sys::IsTransactionBlock() || pg_sys::SPI_inside_nonatomic_context() }
    {
        error::warn(
            "tenant context set outside a transaction block lasts only for this statement",
            "Call tenancy.set_context() after BEGIN, or use tenancy.set_session_context().",
        );
    }
}

/// Refuses `function` to roles that must start their contexts with signed tokens: members of
/// `tenancy_token_only` (`tenancy apply` grants it to the roles a policy file says `context =
/// "token"` of), whether the session logged in as one or switched to one (`SET ROLE`).
pub(crate) fn refuse_unless_any_mode(function: &'static str) {
    if context::caller_bypasses_rls() {
        return;
    }
    if token_only() {
        TenancyError::TokenOnly { function, role: privilege::current_role_name() }.raise()
    }
}

/// Refuses a session context to roles not allowed one (`tenancy.session_context` off; DBAs may):
/// behind a pool, a session context would reach whoever gets the connection next.
fn refuse_unless_session_role() {
    if !gucs::SESSION_CONTEXT.get() && !context::caller_bypasses_rls() {
        TenancyError::SessionContextRefused { role: privilege::current_role_name() }.raise()
    }
}

/// How a refusal names the organization or project asked for: by the application's `key` the
/// caller gave (quoted), else by its uuid.
fn named(key: Option<&str>, id: &pgrx::Uuid) -> String {
    key.map_or_else(|| context::uuid_text(id), |k| format!("\"{}\"", k.replace('"', "\"\"")))
}

thread_local! {
    /// (current role, login role) -> whether either is token-only; forgotten whenever a role or a
    /// role membership changes (registered with the syscache on first use).
    static TOKEN_ONLY: std::cell::Cell<Option<(pg_sys::Oid, pg_sys::Oid, bool)>> = const { std::cell::Cell::new(None) };
    static WATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe extern "C-unwind" fn forget_token_only(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    TOKEN_ONLY.with(|t| t.set(None));
}

/// Whether the current role or the role the session logged in as is a member of
/// `tenancy_token_only`.
fn token_only() -> bool {
    // SAFETY: backend-local identity, syscache callbacks registered once per backend, and role
    // lookups inside a transaction.
    unsafe {
        let (me, login) = (pg_sys::GetUserId(), pg_sys::GetSessionUserId());
        if let Some((m, l, answer)) = TOKEN_ONLY.with(|t| t.get()) {
            if m == me && l == login {
                return answer;
            }
        }
        if !WATCHING.with(|w| w.replace(true)) {
            for cache in [pg_sys::SysCacheIdentifier::AUTHMEMROLEMEM, pg_sys::SysCacheIdentifier::AUTHOID] {
                pg_sys::CacheRegisterSyscacheCallback(cache as i32, Some(forget_token_only), pg_sys::Datum::from(0));
            }
        }
        let mark = pg_sys::get_role_oid(c"tenancy_token_only".as_ptr(), true);
        let answer = mark != pg_sys::InvalidOid
            && (pg_sys::is_member_of_role_nosuper(me, mark) || pg_sys::is_member_of_role_nosuper(login, mark));
        TOKEN_ONLY.with(|t| t.set(Some((me, login, answer))));
        answer
    }
}

/// Who the context is for, once known to be true: a member the catalog lists, or (a token whose
/// key the DBA trusts for roles) the member role the token names.
pub(crate) enum Vouched<'a> {
    Member,
    Trusted {
        role: &'a str,
        permissions: Option<&'a [String]>,
    },
    /// A service of `tenancy.services` ([`crate::service`]): the organization must be active and
    /// the role exist; a service is no user, so it is not counted as an active one.
    Service {
        role: &'a str,
    },
}

/// Starts a context for `user` in `org`, checking the membership (or, trusted, that the
/// organization is active and the role exists). A refusal names the organization by `key`, the
/// application's key the caller gave, if any.
pub(crate) fn start(org_id: pgrx::Uuid, key: Option<&str>, user: &str, vouched: Vouched, scope: Scope) {
    crate::param::refuse_context_change();
    let org = context::uuid_text(&org_id);
    crate::hooks::refuse_if_cursor_from_another_context(Some(&org), user);
    // Read before the lookup takes its snapshot: a membership change committed after it moves
    // the generation past this one, so readers check again.
    let generation = membership::generation(org_id.as_bytes());
    let counted = !matches!(vouched, Vouched::Service { .. });
    let (found, trusted) = match vouched {
        Vouched::Member => (membership::lookup_at(org_id, user, generation), false),
        Vouched::Service { role } => (membership::lookup_trusted(org_id, role), true),
        Vouched::Trusted { role, permissions } => {
            let found = membership::lookup_trusted(org_id, role).map(|mut m| {
                if let Some(p) = permissions {
                    m.permissions = p.join(",");
                }
                m
            });
            (found, true)
        }
    };
    let Some(membership) = found else {
        TenancyError::ContextRefused { org_id: named(key, &org_id), user_id: user.to_string() }.raise()
    };
    warn_outside_transaction(scope);
    context::write_all(&org, "", user, Some(&membership), context::Checked { generation, trusted }, scope);
    if counted {
        crate::usage::note_active_user(org_id, user);
    }
}

/// Starts a context for `user` in `project` (a project of an organization the user is a member
/// of), checking the access. A refusal names the project by `key`, the application's key the
/// caller gave, if any, and says the same whether the project does not exist, is another
/// organization's, or is closed to the user.
pub(crate) fn start_project(project_id: pgrx::Uuid, key: Option<&str>, user: &str, scope: Scope) {
    crate::param::refuse_context_change();
    let Some((org_id, membership, generation)) = membership::lookup_project_at(project_id, user) else {
        TenancyError::ProjectContextRefused { project_id: named(key, &project_id), user_id: user.to_string() }.raise()
    };
    let (org, project) = (context::uuid_text(&org_id), context::uuid_text(&project_id));
    if crate::hooks::holds_cursors() {
        crate::hooks::refuse_if_cursor_from_another_context(Some(&format!("{org}/{project}")), user);
    }
    warn_outside_transaction(scope);
    context::write_all(&org, &project, user, Some(&membership), context::Checked { generation, trusted: false }, scope);
    crate::usage::note_active_user(org_id, user);
}

fn set_project(project_id: pgrx::Uuid, key: Option<&str>, user_id: Option<&str>, scope: Scope) {
    let user = self::user_id("user_id", user_id);
    start_project(project_id, key, user, scope)
}

/// Sets the tenant context for the current transaction to a project: `tenancy.current_project()`
/// is the project and `tenancy.current_org()` its organization. The user must be a member of the
/// organization, and the project's role for the user (an override in `tenancy.project_members`)
/// must not be no access; the context's role is the override, or else the organization role.
/// Raises 42501 otherwise, with the same message whether or not the project exists.
#[pg_extern(volatile, parallel_unsafe)]
fn set_project_context(project_id: Option<pgrx::Uuid>, user_id: Option<&str>) {
    refuse_unless_any_mode("set_project_context");
    set_project(error::required("project_id", project_id), None, user_id, Scope::Transaction)
}

/// `set_project_context` for the project with the application's key `project_key`.
#[pg_extern(volatile, parallel_unsafe)]
fn set_project_context_key(project_key: Option<&str>, user_id: Option<&str>) {
    refuse_unless_any_mode("set_project_context_key");
    let project_id = pgrx::Uuid::from_bytes(crate::key::key_argument("project_key", project_key));
    set_project(project_id, project_key, user_id, Scope::Transaction)
}

/// `set_project_context` for the rest of the session (the roles `set_session_context` is for).
#[pg_extern(volatile, parallel_unsafe)]
fn set_session_project_context(project_id: Option<pgrx::Uuid>, user_id: Option<&str>) {
    refuse_unless_any_mode("set_session_project_context");
    refuse_unless_session_role();
    set_project(error::required("project_id", project_id), None, user_id, Scope::Session)
}

/// `set_session_project_context` for the project with the application's key `project_key`.
#[pg_extern(volatile, parallel_unsafe)]
fn set_session_project_context_key(project_key: Option<&str>, user_id: Option<&str>) {
    refuse_unless_any_mode("set_session_project_context_key");
    refuse_unless_session_role();
    let project_id = pgrx::Uuid::from_bytes(crate::key::key_argument("project_key", project_key));
    set_project(project_id, project_key, user_id, Scope::Session)
}

/// Starts a user-only context (no organization) for the current transaction.
pub(crate) fn start_user_only(user: &str) {
    crate::param::refuse_context_change();
    crate::hooks::refuse_if_cursor_from_another_context(None, user);
    warn_outside_transaction(Scope::Transaction);
    context::write_all("", "", user, None, context::Checked::NONE, Scope::Transaction);
}

fn set(org_id: Option<pgrx::Uuid>, user_id: Option<&str>, scope: Scope) {
    let org_id = error::required("org_id", org_id);
    let user = self::user_id("user_id", user_id);
    start(org_id, None, user, Vouched::Member, scope)
}

/// Sets the tenant context for the current transaction, after checking that the organization
/// exists and is active and that the user is a member. Raises 42501 otherwise, with the same
/// message whether or not the organization exists.
#[pg_extern(volatile, parallel_unsafe)]
fn set_context(org_id: Option<pgrx::Uuid>, user_id: Option<&str>) {
    refuse_unless_any_mode("set_context");
    set(org_id, user_id, Scope::Transaction)
}

/// Like `set_context`, but lasts for the rest of the session (for session-pooled connections and
/// interactive use). A later `set_context` overrides it for one transaction. Only for roles
/// allowed one (`tenancy.session_context = on`, which `tenancy apply` sets for the policy
/// files' session roles) and for DBAs: behind a pool, a session context would reach whoever gets
/// the connection next.
#[pg_extern(volatile, parallel_unsafe)]
fn set_session_context(org_id: Option<pgrx::Uuid>, user_id: Option<&str>) {
    refuse_unless_any_mode("set_session_context");
    refuse_unless_session_role();
    set(org_id, user_id, Scope::Session)
}

/// `set_context` for the organization with the application's key `org_key`: a text or integer id
/// of the application's own organizations table (`tenancy.org_key_id()` gives its uuid; the
/// text of a uuid is that uuid's key).
#[pg_extern(volatile, parallel_unsafe)]
fn set_context_key(org_key: Option<&str>, user_id: Option<&str>) {
    refuse_unless_any_mode("set_context_key");
    let org_id = pgrx::Uuid::from_bytes(crate::key::key_argument("org_key", org_key));
    let user = self::user_id("user_id", user_id);
    start(org_id, org_key, user, Vouched::Member, Scope::Transaction)
}

/// `set_session_context` for the organization with the application's key `org_key`.
#[pg_extern(volatile, parallel_unsafe)]
fn set_session_context_key(org_key: Option<&str>, user_id: Option<&str>) {
    refuse_unless_any_mode("set_session_context_key");
    refuse_unless_session_role();
    let org_id = pgrx::Uuid::from_bytes(crate::key::key_argument("org_key", org_key));
    let user = self::user_id("user_id", user_id);
    start(org_id, org_key, user, Vouched::Member, Scope::Session)
}

/// A context for a user before any organization is chosen, for the current transaction: enough
/// for `tenancy.user_organizations()` and `tenancy.org_id()` (an organization switcher, routing),
/// and nothing else: every tenant table reads as empty and refuses writes.
#[pg_extern(volatile, parallel_unsafe)]
fn set_user_context(user_id: Option<&str>) {
    refuse_unless_any_mode("set_user_context");
    let user = self::user_id("user_id", user_id);
    start_user_only(user)
}

/// Clears the tenant context, both the session's and the current transaction's.
#[pg_extern(volatile, parallel_unsafe)]
fn clear_context() {
    crate::param::refuse_context_change();
    context::write_all("", "", "", None, context::Checked::NONE, Scope::Session);
}
