//! Starting and ending a tenant context: `tenancy.set_context()`, `set_session_context()`,
//! `set_user_context()` and `clear_context()`. A context for an organization starts only after
//! the membership is checked; it never starts while a holdable cursor filled under another
//! context is open (its rows would cross over, [`crate::hooks`] tracks them).

use crate::context::{self, Scope};
use crate::error::{self, TenancyError};
use crate::membership;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Longest user id accepted, in bytes (ids are the application's: uuids, emails, `user_42`).
pub const MAX_USER_ID: usize = 256;

/// The user id argument: not empty, not too long.
pub fn user_id<'a>(param: &'static str, value: Option<&'a str>) -> &'a str {
    let user = error::non_empty(param, value);
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

fn warn_outside_transaction(scope: Scope) {
    // SAFETY: reads backend-local transaction state.
    if scope == Scope::Transaction && !unsafe { pg_sys::IsTransactionBlock() } {
        error::warn(
            "tenant context set outside a transaction block lasts only for this statement",
            "Call tenancy.set_context() after BEGIN, or use tenancy.set_session_context().",
        );
    }
}

fn set(org_id: Option<pgrx::Uuid>, user_id: Option<&str>, scope: Scope) {
    let org_id = error::required("org_id", org_id);
    let user = self::user_id("user_id", user_id);
    let org = org_id.to_string();
    crate::hooks::refuse_if_cursor_from_another_context(Some(&org), user);
    // Read before the lookup takes its snapshot: a membership change committed after it moves
    // the generation past this one, so readers check again.
    let generation = membership::generation(org_id.as_bytes());
    let Some(membership) = membership::lookup(org_id, user) else {
        TenancyError::ContextRefused { org_id: org, user_id: user.to_string() }.raise()
    };
    warn_outside_transaction(scope);
    context::write_all(&org, user, Some(&membership), generation, scope);
    crate::usage::note_active_user(org_id, user);
}

/// Sets the tenant context for the current transaction, after checking that the organization
/// exists and is active and that the user is a member. Raises 42501 otherwise, with the same
/// message whether or not the organization exists.
#[pg_extern(volatile, parallel_unsafe)]
fn set_context(org_id: Option<pgrx::Uuid>, user_id: Option<&str>) {
    set(org_id, user_id, Scope::Transaction)
}

/// Like `set_context`, but lasts for the rest of the session (for session-pooled connections and
/// interactive use). A later `set_context` overrides it for one transaction.
#[pg_extern(volatile, parallel_unsafe)]
fn set_session_context(org_id: Option<pgrx::Uuid>, user_id: Option<&str>) {
    set(org_id, user_id, Scope::Session)
}

/// A context for a user before any organization is chosen, for the current transaction: enough
/// for `tenancy.user_organizations()` and `tenancy.org_id()` (an organization switcher, routing),
/// and nothing else: every tenant table reads as empty and refuses writes.
#[pg_extern(volatile, parallel_unsafe)]
fn set_user_context(user_id: Option<&str>) {
    let user = self::user_id("user_id", user_id);
    crate::hooks::refuse_if_cursor_from_another_context(None, user);
    warn_outside_transaction(Scope::Transaction);
    context::write_all("", user, None, 0, Scope::Transaction);
}

/// Clears the tenant context, both the session's and the current transaction's.
#[pg_extern(volatile, parallel_unsafe)]
fn clear_context() {
    context::write_all("", "", None, 0, Scope::Session);
}
