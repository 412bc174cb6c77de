//! The tenant context: which organization, user and member role the current transaction acts
//! for. Written only by [`set_context`] and friends after validating membership; read by the
//! STABLE functions that compiled row-level security policies call once per statement.

use crate::error::{self, TenancyError};
use crate::gucs;
use crate::privilege::{run_kept, KeptStatement};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// How long a context lasts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Until COMMIT or ROLLBACK (and undone by ROLLBACK TO SAVEPOINT).
    Transaction,
    /// Until the session ends or the context is cleared.
    Session,
}

struct Membership {
    role: String,
    role_ranks: String,
    permissions: String,
}

fn write(name: &CStr, value: &str, scope: Scope) {
    let value = CString::new(value).unwrap_or_else(|_| {
        TenancyError::InvalidArgument {
            param: "user_id",
            reason: "must not contain NUL bytes".into(),
            hint: None,
        }
        .raise()
    });
    let action = match scope {
        Scope::Transaction => pg_sys::GucAction::GUC_ACTION_LOCAL,
        Scope::Session => pg_sys::GucAction::GUC_ACTION_SET,
    };
    // SAFETY: valid NUL-terminated strings; elevel ERROR makes failures raise. PGC_SUSET is the
    // privilege this code (not the caller) holds over these settings: callers reach it only
    // through the validating functions below.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        );
    }
}

fn write_all(org_id: &str, user_id: &str, m: &Membership, scope: Scope) {
    write(gucs::ORG_ID_NAME, org_id, scope);
    write(gucs::USER_ID_NAME, user_id, scope);
    write(gucs::MEMBER_ROLE_NAME, &m.role, scope);
    write(gucs::ROLE_RANKS_NAME, &m.role_ranks, scope);
    write(gucs::PERMISSIONS_NAME, &m.permissions, scope);
}

thread_local! {
    /// The membership lookup (set_context runs in every transaction).
    static LOOKUP: KeptStatement = const { std::cell::RefCell::new(None) };
}

fn lookup_membership(org_id: pgrx::Uuid, user_id: &str) -> Option<Membership> {
    run_kept(
        &LOOKUP,
        "SELECT m.role,
                (SELECT string_agg(r.name || ':' || r.rank, ',' ORDER BY r.rank DESC)
                   FROM tenancy.roles r),
                array_to_string(mr.permissions, ',')
           FROM tenancy.members m
           JOIN tenancy.organizations o ON o.id = m.org_id
           JOIN tenancy.roles mr ON mr.name = m.role
          WHERE m.org_id = $1 AND m.user_id = $2 AND o.status = 'active'",
        &[pg_sys::UUIDOID, pg_sys::TEXTOID],
        "the membership lookup",
        |client, stmt| {
            let rows = client.select(stmt, Some(1), &[org_id.into(), user_id.into()])?;
            let Some(row) = rows.into_iter().next() else { return Ok(None) };
            Ok(Some(Membership {
                role: row.get::<String>(1)?.unwrap_or_default(),
                role_ranks: row.get::<String>(2)?.unwrap_or_default(),
                permissions: row.get::<String>(3)?.unwrap_or_default(),
            }))
        },
    )
}

fn set(org_id: Option<pgrx::Uuid>, user_id: Option<&str>, scope: Scope) {
    let org_id = error::required("org_id", org_id);
    let user_id = error::non_empty("user_id", user_id);
    let org_text = org_id.to_string();
    let Some(membership) = lookup_membership(org_id, user_id) else {
        TenancyError::ContextRefused { org_id: org_text, user_id: user_id.to_string() }.raise()
    };
    // SAFETY: reads backend-local transaction state.
    if scope == Scope::Transaction && !unsafe { pg_sys::IsTransactionBlock() } {
        error::warn(
            "tenant context set outside a transaction block lasts only for this statement",
            "Call tenancy.set_context() after BEGIN, or use tenancy.set_session_context().",
        );
    }
    write_all(&org_text, user_id, &membership, scope);
    crate::usage::note_active_user(org_id, user_id);
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

/// Clears the tenant context, both the session's and the current transaction's.
#[pg_extern(volatile, parallel_unsafe)]
fn clear_context() {
    let empty = Membership { role: String::new(), role_ranks: String::new(), permissions: String::new() };
    write_all("", "", &empty, Scope::Session);
}

/// The organization of the current context, or NULL.
///
/// The context readers are C functions on purpose. Calling one loads this library, whose
/// `_PG_init` refuses to run unless it was preloaded: were `pg_tenancy` ever dropped from
/// `shared_preload_libraries`, an inlined SQL reader would read a `tenancy.*` placeholder that
/// any role can `SET`. A C reader fails closed instead. Measured, they cost no more than an
/// inlined SQL reader: about 0.35 µs per call, once per statement in the InitPlan that policies
/// wrap it in (the InitPlan itself costs about 0.7 µs, whatever it returns).
#[pg_extern(stable, parallel_safe)]
pub fn current_org() -> Option<pgrx::Uuid> {
    let text = gucs::read(&gucs::ORG_ID)?;
    match parse_uuid(&text) {
        Some(bytes) => Some(pgrx::Uuid::from_bytes(bytes)),
        None => TenancyError::CorruptContext(format!("tenancy.org_id is not a uuid: \"{text}\"")).raise(),
    }
}

/// The user of the current context, or NULL.
#[pg_extern(stable, parallel_safe)]
fn current_user_id() -> Option<String> {
    gucs::read(&gucs::USER_ID)
}

/// The member role of the current context, or NULL.
#[pg_extern(stable, parallel_safe)]
fn current_member_role() -> Option<String> {
    gucs::read(&gucs::MEMBER_ROLE)
}

fn rank_of<'a>(ranks: &'a str, role: &str) -> Option<i32> {
    ranks.split(',').find_map(|entry| {
        let (name, rank) = entry.split_once(':')?;
        (name == role).then(|| rank.parse().ok()).flatten()
    })
}

/// True when the context's member role ranks at or above `role` (owner > admin > member > guest).
/// False without a context; an unknown role name is an error.
#[pg_extern(stable, parallel_safe)]
fn has_role(role: &str) -> bool {
    let (Some(mine), Some(ranks)) = (gucs::read(&gucs::MEMBER_ROLE), gucs::read(&gucs::ROLE_RANKS))
    else {
        return false;
    };
    let Some(wanted) = rank_of(&ranks, role) else {
        let valid: Vec<&str> = ranks.split(',').filter_map(|e| e.split_once(':').map(|p| p.0)).collect();
        TenancyError::UnknownRole { role: role.to_string(), valid: valid.join(", ") }.raise()
    };
    rank_of(&ranks, &mine).is_some_and(|have| have >= wanted)
}

/// True when the context's member role grants `permission` (such as `members.manage`).
#[pg_extern(stable, parallel_safe)]
fn has_permission(permission: &str) -> bool {
    gucs::read(&gucs::PERMISSIONS).is_some_and(|p| p.split(',').any(|x| x == permission))
}

/// Statement-level guard the policy compiler installs on every tenant table, with the minimum
/// member role for INSERT, UPDATE and DELETE as its three arguments. It refuses, with a clear
/// 42501, a write without a context, or by a member whose role is too low (row-level security
/// alone would silently affect zero rows). Roles that bypass row-level security (superusers,
/// BYPASSRLS: the DBAs) pass. Runs once per statement, not per row.
#[pg_trigger]
fn require_context<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
    if caller_bypasses_rls() {
        return Ok(None);
    }
    let op = trigger.op()?;
    let table = format!("{}.{}", trigger.table_schema()?, trigger.table_name()?);
    if gucs::read(&gucs::ORG_ID).is_none() {
        TenancyError::NoContext { action: format!("{op} on {table}") }.raise()
    }
    let position = match op {
        pgrx::PgTriggerOperation::Insert => 0,
        pgrx::PgTriggerOperation::Update => 1,
        pgrx::PgTriggerOperation::Delete => 2,
        pgrx::PgTriggerOperation::Truncate => return Ok(None),
    };
    let args = trigger.extra_args()?;
    // Each argument is `role` or `role|permission`.
    let Some(arg) = args.get(position).filter(|r| !r.is_empty() && r.as_str() != "none") else {
        return Ok(None);
    };
    let (required, permission) = match arg.split_once('|') {
        Some((role, permission)) => (role, Some(permission)),
        None => (arg.as_str(), None),
    };
    let mine = || gucs::read(&gucs::MEMBER_ROLE).unwrap_or_default();
    let deny = |detail: String, hint: &str| -> ! {
        TenancyError::PermissionDenied {
            message: format!("permission denied to {op} on {table}"),
            detail: Some(detail),
            hint: Some(hint.into()),
        }
        .raise()
    };
    if let Some(permission) = permission.filter(|p| !has_permission(p)) {
        deny(
            format!("{op} on {table} requires permission \"{permission}\", which member role \"{}\" does not have.", mine()),
            "Ask an owner or admin of the organization for a role with that permission.",
        )
    }
    if !has_role(required) {
        deny(
            format!("{op} on {table} requires member role \"{required}\" or higher; the current role is \"{}\".", mine()),
            "Ask an owner or admin of the organization for a higher role.",
        )
    }
    Ok(None)
}

fn caller_bypasses_rls() -> bool {
    // SAFETY: syscache lookups for the current user inside a transaction.
    unsafe {
        let me = pg_sys::GetUserId();
        pg_sys::superuser_arg(me) || pg_sys::has_bypassrls_privilege(me)
    }
}

/// Parses a canonical or dash-less uuid.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn rank_lookup_reads_the_captured_list() {
        let ranks = "owner:40,admin:30,member:20,guest:10";
        assert_eq!(rank_of(ranks, "admin"), Some(30));
        assert_eq!(rank_of(ranks, "guest"), Some(10));
        assert_eq!(rank_of(ranks, "root"), None);
    }

    #[test]
    fn uuid_parser_rejects_garbage() {
        assert!(parse_uuid("0b1e4a3c-7a1d-4f0e-9c55-2b7d1c9e8f00").is_some());
        assert!(parse_uuid("nope").is_none());
        assert!(parse_uuid("0b1e4a3c-7a1d-4f0e-9c55-2b7d1c9e8fzz").is_none());
    }
}
