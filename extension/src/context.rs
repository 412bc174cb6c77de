//! The tenant context: which organization, user and member role the current transaction acts
//! for. Written only by the functions of [`crate::session`] after checking the membership; read
//! by the STABLE functions that compiled row-level security policies call once per statement.
//!
//! Every reader first makes sure the context is still true: the membership generation it was
//! checked at must still be the organization's ([`crate::membership`]). When it moved (a member
//! removed or demoted, the organization suspended), the reader checks the membership again and
//! answers with what the catalog says now, or with no context at all: a change of membership
//! reaches every session by its next statement, session contexts included.

use crate::error::TenancyError;
use crate::gucs;
use crate::membership::{self, Membership, OrgRole};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::{CStr, CString};

/// How long a context lasts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// Until COMMIT or ROLLBACK (and undone by ROLLBACK TO SAVEPOINT).
    Transaction,
    /// Until the session ends or the context is cleared.
    Session,
}

fn write(name: &CStr, value: &str, scope: Scope) {
    let value = CString::new(value).unwrap_or_else(|_| {
        TenancyError::InvalidArgument { param: "user_id", reason: "must not contain NUL bytes".into(), hint: None }
            .raise()
    });
    let action = match scope {
        Scope::Transaction => pg_sys::GucAction::GUC_ACTION_LOCAL,
        Scope::Session => pg_sys::GucAction::GUC_ACTION_SET,
    };
    // SAFETY: valid NUL-terminated strings; elevel ERROR makes failures raise. PGC_SUSET is the
    // privilege this code (not the caller) holds over these settings: callers reach it only
    // through the validating functions of crate::session.
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

/// When and how a context's membership was checked: the membership generation then, and whether
/// a token the DBA trusts for roles vouched for it (then a recheck looks for the organization
/// and the role, not for a row of `tenancy.members`). Kept in `tenancy.checked_generation` as
/// the generation, followed by `t` when trusted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Checked {
    pub generation: u64,
    pub trusted: bool,
}

impl Checked {
    pub const NONE: Checked = Checked { generation: 0, trusted: false };

    fn text(self) -> String {
        if self.trusted {
            format!("{}t", self.generation)
        } else {
            self.generation.to_string()
        }
    }

    fn parse(bytes: &[u8]) -> Option<Checked> {
        match bytes.split_last() {
            Some((b't', digits)) => Some(Checked { generation: parse_u64(digits)?, trusted: true }),
            _ => Some(Checked { generation: parse_u64(bytes)?, trusted: false }),
        }
    }
}

/// Writes a whole context: `org` (canonical uuid text, or "" for none), `project` (the same, or
/// "" for an organization context), `user`, the membership and when it was checked.
pub(crate) fn write_all(org: &str, project: &str, user: &str, m: Option<&Membership>, checked: Checked, scope: Scope) {
    let (role, ranks, permissions) = m.map_or(("", "", ""), |m| (&*m.role, &*m.role_ranks, &*m.permissions));
    let mut membership = checked.text();
    membership.reserve(3 + role.len() + ranks.len() + permissions.len());
    for part in [role, ranks, permissions] {
        membership.push(';');
        membership.push_str(part);
    }
    if let Some(o) = m.and_then(|m| m.org.as_ref()) {
        for part in [&o.role, &o.permissions] {
            membership.push(';');
            membership.push_str(part);
        }
    }
    // A project context is `org/project` in the one setting (a second setting would cost a write
    // of its own on every context).
    if project.is_empty() {
        write(gucs::ORG_ID_NAME, org, scope);
    } else {
        write(gucs::ORG_ID_NAME, &format!("{org}/{project}"), scope);
    }
    write(gucs::USER_ID_NAME, user, scope);
    write(gucs::MEMBERSHIP_NAME, &membership, scope);
}

/// The parts of `tenancy.membership` (see [`gucs::MEMBERSHIP`]), read in place.
#[derive(Clone, Copy)]
struct Parts<'a> {
    checked: &'a [u8],
    role: &'a [u8],
    ranks: &'a [u8],
    permissions: &'a [u8],
    /// The organization's role and permissions, when `role` is a project's override of it.
    org: Option<(&'a [u8], &'a [u8])>,
}

impl<'a> Parts<'a> {
    fn of(bytes: &'a [u8]) -> Parts<'a> {
        let mut parts = bytes.splitn(6, |b| *b == b';');
        let mut next = || parts.next().unwrap_or_default();
        let (checked, role, ranks, permissions) = (next(), next(), next(), next());
        let org = match (parts.next(), parts.next()) {
            (Some(role), Some(permissions)) => Some((role, permissions)),
            _ => None,
        };
        Parts { checked, role, ranks, permissions, org }
    }

    fn role(&self) -> Option<String> {
        (!self.role.is_empty()).then(|| String::from_utf8_lossy(self.role).into_owned())
    }

    /// The organization role and its permissions: the project's organization's in a project
    /// context, else the role itself.
    fn org_role(&self) -> (&'a [u8], &'a [u8]) {
        self.org.unwrap_or((self.role, self.permissions))
    }

    fn membership(&self) -> Option<Membership> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Some(Membership {
            role: self.role()?,
            role_ranks: text(self.ranks),
            permissions: text(self.permissions),
            org: self.org.map(|(role, permissions)| OrgRole { role: text(role), permissions: text(permissions) }),
        })
    }
}

/// Calls `f` with the parts of `tenancy.membership`, without copying them.
fn with_membership<R>(f: impl FnOnce(Parts) -> R) -> R {
    gucs::with(&gucs::MEMBERSHIP, |bytes| f(Parts::of(bytes)))
}

/// The context every reader answers from.
pub struct Context {
    pub org: Option<pgrx::Uuid>,
    pub user: Option<String>,
    pub member: Option<Membership>,
}

/// (organization, project, user, trusted role) -> (the generation it was checked at, the
/// membership then, if any).
type Rechecked = foldhash::HashMap<([u8; 16], Option<[u8; 16]>, String, Option<String>), (u64, Option<Membership>)>;

/// The last uuid text a reader parsed, and its bytes.
type LastParsed = std::cell::Cell<Option<([u8; 36], [u8; 16])>>;

thread_local! {
    /// The last organization text [`context_org`] parsed.
    static LAST_ORG: LastParsed = const { std::cell::Cell::new(None) };
    /// The same for [`context_project`].
    static LAST_PROJECT: LastParsed = const { std::cell::Cell::new(None) };
    /// Memberships checked again after their generation moved, by (organization, project, user):
    /// what a session context whose settings cannot be rewritten (inside a parallel query)
    /// answers with.
    static RECHECKED: RefCell<Rechecked> = RefCell::new(Rechecked::default());
}

/// The organization and project parts of `tenancy.org_id` (`org` or `org/project`).
fn split_scope(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| *b == b'/') {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[]),
    }
}

/// The uuid in one part of `tenancy.org_id`, parsed (None: empty). Reads the setting in place;
/// the last text parsed is remembered in `last` (a comparison of 36 bytes instead of parsing
/// them: the readers run once per statement each).
fn scope_uuid(project: bool, last: &'static std::thread::LocalKey<LastParsed>) -> Option<pgrx::Uuid> {
    gucs::with(&gucs::ORG_ID, |whole| {
        let (org, proj) = split_scope(whole);
        let bytes = if project { proj } else { org };
        if bytes.is_empty() {
            return None;
        }
        if let Some(id) = last.with(|last| last.get().filter(|(text, _)| text[..] == *bytes).map(|(_, id)| id)) {
            return Some(pgrx::Uuid::from_bytes(id));
        }
        match parse_uuid(bytes) {
            Some(id) => {
                if let Ok(text) = <[u8; 36]>::try_from(bytes) {
                    last.with(|last| last.set(Some((text, id))));
                }
                Some(pgrx::Uuid::from_bytes(id))
            }
            None => TenancyError::CorruptContext(format!(
                "tenancy.org_id is not a uuid, or two joined by '/': \"{}\"",
                String::from_utf8_lossy(whole)
            ))
            .raise(),
        }
    })
}

/// The organization of the context, parsed (None: no context).
fn context_org() -> Option<pgrx::Uuid> {
    scope_uuid(false, &LAST_ORG)
}

/// The project of the context, parsed (None: an organization context, or none).
fn context_project() -> Option<pgrx::Uuid> {
    scope_uuid(true, &LAST_PROJECT)
}

/// The generation a context in `org` (and `project`) is checked at: the organization's, plus the
/// project's in a project context. Both only ever grow, so the sum moves whenever either does
/// (a project never changes organization, so the pair is always the same two counters).
pub(crate) fn context_generation(org: &pgrx::Uuid, project: Option<&pgrx::Uuid>) -> u64 {
    let generation = membership::generation(org.as_bytes());
    match project {
        Some(p) => generation.wrapping_add(membership::generation(p.as_bytes())),
        None => generation,
    }
}

/// True when the membership of the context's organization (and project) has not changed since
/// the context was checked: its generation in shared memory is the one the context recorded.
/// The whole cost of keeping session contexts true, on every reader call (kept out of line so
/// that a profile shows it on its own).
#[inline(never)]
fn still_current(org: &pgrx::Uuid) -> bool {
    let generation = if gucs::with(&gucs::ORG_ID, |bytes| bytes.len() <= 36) {
        membership::generation(org.as_bytes())
    } else {
        context_generation(org, context_project().as_ref())
    };
    with_membership(|parts| {
        // The common case without parsing a suffix: the digits are the generation.
        let bytes = parts.checked;
        parse_u64(bytes) == Some(generation) || Checked::parse(bytes).is_some_and(|c| c.generation == generation)
    })
}

/// The organization of the context, if it still holds, and the membership checked again when it
/// had to be (None: the settings hold it); see [`current`].
fn checked_org() -> Option<(pgrx::Uuid, Option<Membership>)> {
    let org = context_org()?;
    if still_current(&org) {
        return Some((org, None));
    }
    let project = context_project();
    let generation = context_generation(&org, project.as_ref());
    // SAFETY: reads backend-local state.
    if unsafe { pg_sys::ParallelWorkerNumber >= 0 } {
        // A worker cannot check and remember for its leader: fail closed for this statement.
        return None;
    }
    let user = gucs::read(&gucs::USER_ID).unwrap_or_default();
    let (trusted, role, permissions) = with_membership(|parts| {
        let trusted = Checked::parse(parts.checked).is_some_and(|c| c.trusted);
        (trusted, parts.role().unwrap_or_default(), String::from_utf8_lossy(parts.permissions).into_owned())
    });
    // A trusted context keeps the role (and permissions) its token gave it while the
    // organization stays active and the role exists.
    let trusted_role = trusted.then_some(role);
    let key = (*org.as_bytes(), project.map(|p| *p.as_bytes()), user.clone(), trusted_role.clone());
    let memo = RECHECKED.with(|r| r.borrow().get(&key).filter(|(g, _)| *g == generation).map(|(_, m)| m.clone()));
    let member = memo.unwrap_or_else(|| {
        // The generation was read before this lookup takes its snapshot: a change committed
        // after it moves the generation again.
        let found = match (&trusted_role, project) {
            (Some(role), _) => membership::lookup_trusted(org, role).map(|mut m| {
                m.permissions = permissions;
                m
            }),
            // The project is still the organization's (it never moves) and the user's access to
            // it still holds.
            (None, Some(project)) => {
                membership::lookup_project(project, &user).filter(|(o, _)| *o == org).map(|(_, m)| m)
            }
            (None, None) => membership::lookup(org, &user),
        };
        RECHECKED.with(|r| {
            let mut r = r.borrow_mut();
            if r.len() > 1024 {
                r.clear();
            }
            r.insert(key, (generation, found.clone()));
        });
        found
    });
    // Outside a parallel query the settings themselves are brought up to date for the rest of
    // the transaction, so that the next reader (and parallel workers) need not check again.
    // SAFETY: reads backend-local state.
    if !unsafe { pg_sys::IsInParallelMode() } {
        let checked = Checked { generation, trusted };
        let project_text = project.as_ref().map(uuid_text).unwrap_or_default();
        match &member {
            Some(m) => write_all(&uuid_text(&org), &project_text, &user, Some(m), checked, Scope::Transaction),
            None => write_all("", "", "", None, checked, Scope::Transaction),
        }
    }
    let member = member?;
    Some((org, Some(member)))
}

/// The context, checked: None for each part that is not set, or no longer holds.
pub fn current() -> Context {
    match checked_org() {
        Some((org, Some(member))) => Context { org: Some(org), user: gucs::read(&gucs::USER_ID), member: Some(member) },
        Some((org, None)) => Context {
            org: Some(org),
            user: gucs::read(&gucs::USER_ID),
            member: with_membership(|parts| parts.membership()),
        },
        // No organization: a user-only context (tenancy.set_user_context()) or none; a context
        // whose membership no longer holds has neither.
        None if gucs::read(&gucs::ORG_ID).is_none() => {
            Context { org: None, user: gucs::read(&gucs::USER_ID), member: None }
        }
        None => Context { org: None, user: None, member: None },
    }
}

/// The project of the context, if it still holds (None in an organization context).
pub fn current_project_id() -> Option<pgrx::Uuid> {
    checked_org()?;
    context_project()
}

/// Whether the context is the one [`scope_text`] gave `text` for, and its user `user`, compared in
/// place (a cursor's every fetch checks it: no copies).
pub(crate) fn is_scope(text: &str, user: &str) -> bool {
    gucs::with(&gucs::ORG_ID, |scope| scope == text.as_bytes()) && gucs::with(&gucs::USER_ID, |u| u == user.as_bytes())
}

/// What identifies the context for the cursors that [`crate::hooks`] follows: the
/// organization's uuid text, followed by `/` and the project's in a project context (None: no
/// organization): `tenancy.org_id` as it is.
pub(crate) fn scope_text() -> Option<String> {
    gucs::read(&gucs::ORG_ID)
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
    checked_org().map(|(org, _)| org)
}

/// The user of the current context (also of a user-only context), or NULL.
#[pg_extern(stable, parallel_safe)]
fn current_user_id() -> Option<String> {
    match checked_org() {
        Some(_) => gucs::read(&gucs::USER_ID),
        None if gucs::with(&gucs::ORG_ID, <[u8]>::is_empty) => gucs::read(&gucs::USER_ID),
        None => None,
    }
}

/// The member role of the current context, or NULL.
#[pg_extern(stable, parallel_safe)]
fn current_member_role() -> Option<String> {
    match checked_org() {
        Some((_, None)) => with_membership(|parts| parts.role()),
        Some((_, Some(m))) => Some(m.role),
        None => None,
    }
}

fn rank_of(ranks: &str, role: &str) -> Option<i32> {
    ranks.split(',').find_map(|entry| {
        let (name, rank) = entry.split_once(':')?;
        (name == role).then(|| rank.parse().ok()).flatten()
    })
}

/// Whether `mine` ranks at or above `role` in `ranks`; an unknown `role` is an error.
fn ranked(mine: &str, ranks: &str, role: &str) -> bool {
    let Some(wanted) = rank_of(ranks, role) else {
        let valid: Vec<&str> = ranks.split(',').filter_map(|e| e.split_once(':').map(|p| p.0)).collect();
        TenancyError::UnknownRole { role: role.to_string(), valid: valid.join(", ") }.raise()
    };
    rank_of(ranks, mine).is_some_and(|have| have >= wanted)
}

/// Which of the context's roles a check reads: the effective one (in a project context, the
/// project's override of the organization role, if any) or the organization's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Effective,
    Organization,
}

/// [`has_role`] at `level`.
pub(crate) fn has_role_at(role: &str, level: Level) -> bool {
    match checked_org() {
        // The settings hold the context: read them in place.
        Some((_, None)) => with_membership(|parts| {
            let mine = if level == Level::Organization { parts.org_role().0 } else { parts.role };
            !mine.is_empty()
                && ranked(
                    std::str::from_utf8(mine).unwrap_or_default(),
                    std::str::from_utf8(parts.ranks).unwrap_or_default(),
                    role,
                )
        }),
        Some((_, Some(m))) => ranked(m.role_at(level).0, &m.role_ranks, role),
        None => false,
    }
}

/// [`has_permission`] at `level`.
pub(crate) fn has_permission_at(permission: &str, level: Level) -> bool {
    match checked_org() {
        Some((_, None)) => with_membership(|parts| {
            let mine = if level == Level::Organization { parts.org_role().1 } else { parts.permissions };
            mine.split(|b| *b == b',').any(|x| x == permission.as_bytes())
        }),
        Some((_, Some(m))) => m.role_at(level).1.split(',').any(|x| x == permission),
        None => false,
    }
}

/// True when the context's member role ranks at or above `role` (owner > admin > member > guest).
/// In a project context, the role is the project's override of the organization role, if the
/// user has one there. False without a context; an unknown role name is an error.
#[pg_extern(stable, parallel_safe)]
pub fn has_role(role: &str) -> bool {
    has_role_at(role, Level::Effective)
}

/// True when the context's member role grants `permission` (such as `members.manage`); in a
/// project context, the project's role.
#[pg_extern(stable, parallel_safe)]
pub fn has_permission(permission: &str) -> bool {
    has_permission_at(permission, Level::Effective)
}

/// `has_role()` with the user's role in the context's organization, also in a project context
/// (where a project's override, higher or lower, does not count): what organization-level
/// tables check.
#[pg_extern(stable, parallel_safe)]
pub fn has_org_role(role: &str) -> bool {
    has_role_at(role, Level::Organization)
}

/// `has_permission()` with the user's role in the context's organization.
#[pg_extern(stable, parallel_safe)]
pub fn has_org_permission(permission: &str) -> bool {
    has_permission_at(permission, Level::Organization)
}

/// The project of the current context (a project of the context's organization), or NULL in an
/// organization context and without one.
#[pg_extern(stable, parallel_safe)]
pub fn current_project() -> Option<pgrx::Uuid> {
    current_project_id()
}

/// Statement-level guard the policy compiler installs on every tenant table, with the minimum
/// member role for INSERT, UPDATE and DELETE as its three arguments. It refuses, with a clear
/// 42501, a write without a context, or by a member whose role is too low (row-level security
/// alone would silently affect zero rows). Roles that bypass row-level security (superusers,
/// BYPASSRLS: the DBAs) pass. Runs once per statement, not per row. It only ever refuses, so it
/// needs no registration; only superusers may attach it (it is not executable by PUBLIC).
#[pg_trigger]
fn require_context<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
    if caller_bypasses_rls() {
        return Ok(None);
    }
    let op = trigger.op()?;
    let table = format!("{}.{}", trigger.table_schema()?, trigger.table_name()?);
    let context = current();
    if context.org.is_none() {
        TenancyError::NoContext { action: format!("{op} on {table}") }.raise()
    }
    let position = match op {
        pgrx::PgTriggerOperation::Insert => 0,
        pgrx::PgTriggerOperation::Update => 1,
        pgrx::PgTriggerOperation::Delete => 2,
        pgrx::PgTriggerOperation::Truncate => return Ok(None),
    };
    let args = trigger.extra_args()?;
    // A fourth argument names the table's level in a two-level policy: `project` tables are
    // written in a project context only, `organization` tables with the organization's role.
    let level = match args.get(3).map(String::as_str) {
        Some("project") => {
            if current_project_id().is_none() {
                TenancyError::NoProjectContext { action: format!("{op} on {table}") }.raise()
            }
            Level::Effective
        }
        Some("organization") => Level::Organization,
        _ => Level::Effective,
    };
    // Each argument is `role` or `role|permission`.
    let Some(arg) = args.get(position).filter(|r| !r.is_empty() && r.as_str() != "none") else {
        return Ok(None);
    };
    let (required, permission) = match arg.split_once('|') {
        Some((role, permission)) => (role, Some(permission)),
        None => (arg.as_str(), None),
    };
    let mine = context.member.as_ref().map(|m| m.role_at(level).0.to_string()).unwrap_or_default();
    let deny = |detail: String, hint: &str| -> ! {
        TenancyError::PermissionDenied {
            message: format!("permission denied to {op} on {table}"),
            detail: Some(detail),
            hint: Some(hint.into()),
        }
        .raise()
    };
    if let Some(permission) = permission.filter(|p| !has_permission_at(p, level)) {
        deny(
            format!(
                "{op} on {table} requires permission \"{permission}\", which member role \"{mine}\" does not have."
            ),
            "Ask an owner or admin of the organization for a role with that permission.",
        )
    }
    if !has_role_at(required, level) {
        deny(
            format!("{op} on {table} requires member role \"{required}\" or higher; the current role is \"{mine}\"."),
            "Ask an owner or admin of the organization for a higher role.",
        )
    }
    Ok(None)
}

pub(crate) fn caller_bypasses_rls() -> bool {
    // SAFETY: the current user, inside a transaction.
    bypasses_rls(unsafe { pg_sys::GetUserId() })
}

/// Whether role `user` is a superuser or bypasses row-level security.
pub(crate) fn bypasses_rls(user: pg_sys::Oid) -> bool {
    // SAFETY: syscache lookups inside a transaction.
    unsafe { pg_sys::superuser_arg(user) || pg_sys::has_bypassrls_privilege(user) }
}

/// The canonical text of a uuid (`8-4-4-4-12` lowercase hex), without the formatting machinery
/// (`Display` costs about 6,000 instructions; `set_context` writes one per call).
pub(crate) fn uuid_text(org: &pgrx::Uuid) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in org.as_bytes().iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0xf)];
        at += 2;
    }
    // SAFETY: only ASCII hex digits and dashes were written.
    unsafe { String::from_utf8_unchecked(out.to_vec()) }
}

/// Parses a canonical or dash-less uuid, without allocating.
pub(crate) fn parse_uuid(text: &[u8]) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut nibbles = 0;
    for &b in text {
        let v = match b {
            b'-' => continue,
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        if nibbles == 32 {
            return None;
        }
        out[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
        nibbles += 1;
    }
    (nibbles == 32).then_some(out)
}

/// Parses a decimal u64 (None if empty or not a number).
fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
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
    fn uuid_parser_reads_canonical_and_bare_uuids_and_rejects_garbage() {
        let bytes = parse_uuid(b"0b1e4a3c-7a1d-4f0e-9c55-2b7d1c9e8f00").unwrap();
        assert_eq!(bytes[0], 0x0b);
        assert_eq!(bytes[15], 0x00);
        assert_eq!(parse_uuid(b"0b1e4a3c7a1d4f0e9c552b7d1c9e8f00"), Some(bytes));
        assert!(parse_uuid(b"nope").is_none());
        assert!(parse_uuid(b"0b1e4a3c-7a1d-4f0e-9c55-2b7d1c9e8fzz").is_none());
        assert!(parse_uuid(b"0b1e4a3c-7a1d-4f0e-9c55-2b7d1c9e8f").is_none());
        assert!(parse_uuid(b"0b1e4a3c-7a1d-4f0e-9c55-2b7d1c9e8f0000").is_none());
    }

    #[test]
    fn uuid_text_is_the_canonical_form() {
        let id = pgrx::Uuid::from_bytes(parse_uuid(b"0B1E4A3C-7A1D-4F0E-9C55-2B7D1C9E8F00").unwrap());
        assert_eq!(uuid_text(&id), "0b1e4a3c-7a1d-4f0e-9c55-2b7d1c9e8f00");
        assert_eq!(uuid_text(&id), id.to_string());
    }

    #[test]
    fn a_project_context_keeps_the_organization_role_beside_the_project_role() {
        let org = Parts::of(b"7;admin;owner:40,admin:30;members.manage,settings.manage");
        assert_eq!(org.role, b"admin");
        assert_eq!(org.org_role(), (&b"admin"[..], &b"members.manage,settings.manage"[..]));
        let project = Parts::of(b"9;admin;owner:40,admin:30,member:20;members.manage;member;");
        assert_eq!((project.role, project.permissions), (&b"admin"[..], &b"members.manage"[..]));
        assert_eq!(project.org_role(), (&b"member"[..], &b""[..]));
        let m = project.membership().unwrap();
        assert_eq!(m.role_at(Level::Effective), ("admin", "members.manage"));
        assert_eq!(m.role_at(Level::Organization), ("member", ""));
    }

    #[test]
    fn generations_parse_as_decimal() {
        assert_eq!(parse_u64(b"42"), Some(42));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"4x"), None);
        assert_eq!(parse_u64(b"99999999999999999999"), None);
    }
}
