//! What pg_tenancy watches in the statements a session runs (a `ProcessUtility` hook):
//!
//! - **EXPLAIN under row-level security is refused.** A plan's row counts (`Rows Removed by
//!   Filter`), timings, buffer counts and even its estimates and shape tell about rows the
//!   policies hide: an index probe on another organization's slug or user id runs before the
//!   policy filters it out. Roles that row-level security applies to may not EXPLAIN (with or
//!   without ANALYZE, and `EXPLAIN EXECUTE`) a query that reads a table through its policies or a
//!   security-barrier view, unless a superuser set `tenancy.allow_explain` in their session; nor
//!   one that calls a function which does (an `ExecutorStart` hook watches every query run while
//!   such an EXPLAIN plans and runs: `tenancy.shares_of()`, `query_to_xml()`, a trigger).
//!   `debug_print_plan`, which any role may set, prints the same plan tree with its estimates
//!   to a client that asks for LOG messages: refused alike for such a query (the planner hook,
//!   [`crate::param`], checks it).
//! - **No table-wide locks on tables shared by every organization.** `LOCK TABLE` in a mode that
//!   blocks writes (SHARE UPDATE EXCLUSIVE and stronger) on a table that row-level security
//!   applies to would stop every other organization's writes: refused for those roles.
//! - **An application role does not change itself.** Every organization shares it, so a setting
//!   it gave itself (`ALTER ROLE app_user SET default_transaction_read_only = on`,
//!   `statement_timeout = '1ms'`) or a new password would break every organization's
//!   connections: `ALTER ROLE` of itself is refused for application roles (members of
//!   `tenancy_writer` or `tenancy_reader`).
//! - **Holdable cursors are remembered with the context they were filled under**, so that
//!   [`refuse_if_cursor_from_another_context`] keeps a `WITH HOLD` cursor's rows from crossing
//!   into another organization's context on the same connection (a connection pool's).
//! - **A cursor's rows stop with its context.** A cursor (or a portal fetched in parts) opened
//!   under a context is read from its snapshot: once the membership it was opened for is
//!   removed, demoted or suspended, fetching more of it is refused (`ExecutorRun` and `FETCH`).
//! - **A reshare is checked when its transaction commits**, holding a lock on the share it
//!   passes on for that moment only: `SET CONSTRAINTS ... IMMEDIATE`, which would check it early
//!   and hold the lock (keeping the owner from revoking) until the transaction ends, is refused
//!   while such a check is pending.

use crate::error::TenancyError;
use crate::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::{CStr, CString};

static mut PREV_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;

/// Installs the hooks and the transaction callback; called from `_PG_init`.
pub fn init() {
    // SAFETY: _PG_init runs once per process before any statement; chaining the previous hooks
    // keeps other extensions' hooks working.
    unsafe {
        PREV_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
    }
}

thread_local! {
    /// The query texts of the EXPLAINs by a role under row-level security now in progress
    /// (nested: EXPLAIN in a function under EXPLAIN). A query run meanwhile with another text
    /// is one that the explained query's functions, triggers or planning ran.
    static EXPLAINING: RefCell<Vec<*const std::ffi::c_char>> = const { RefCell::new(Vec::new()) };
    /// Portals fetched in parts that were opened under a context: (query, organization, user).
    static OPENED: RefCell<Vec<(*mut pg_sys::QueryDesc, String, String)>> = const { RefCell::new(Vec::new()) };
}

/// Pops [`EXPLAINING`] when the EXPLAIN ends, an error unwinding through it included.
struct Explaining;

impl Drop for Explaining {
    fn drop(&mut self) {
        EXPLAINING.with(|e| e.borrow_mut().pop());
    }
}

/// # Safety
/// `node` must be null or a valid node.
unsafe fn tag(node: *const pg_sys::Node) -> pg_sys::NodeTag {
    if node.is_null() {
        pg_sys::NodeTag::T_Invalid
    } else {
        unsafe { (*node).type_ }
    }
}

/// The pointers of a PostgreSQL list of pointers.
///
/// # Safety
/// `list` must be NIL or a valid pointer list that outlives the iterator.
pub(crate) unsafe fn pointers<T>(list: *mut pg_sys::List) -> impl Iterator<Item = *mut T> {
    let n = if list.is_null() { 0 } else { unsafe { (*list).length } };
    (0..n).map(move |i| unsafe { (*(*list).elements.add(i as usize)).ptr_value as *mut T })
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: the executor passes a valid utility statement; every node is read, never written.
    unsafe {
        let stmt = (*pstmt).utilityStmt;
        let mut holdable = None;
        let mut explaining = None;
        match tag(stmt) {
            pg_sys::NodeTag::T_ExplainStmt => {
                refuse_explain_under_rls((*(stmt as *mut pg_sys::ExplainStmt)).query);
                if !gucs::ALLOW_EXPLAIN.get() && !crate::context::caller_bypasses_rls() {
                    EXPLAINING.with(|e| e.borrow_mut().push(query_string));
                    explaining = Some(Explaining);
                }
            }
            pg_sys::NodeTag::T_ConstraintsSetStmt => {
                refuse_early_reshare_check(stmt as *mut pg_sys::ConstraintsSetStmt)
            }
            pg_sys::NodeTag::T_FetchStmt => refuse_held_cursor_of_ended_context(stmt as *mut pg_sys::FetchStmt),
            pg_sys::NodeTag::T_LockStmt => refuse_table_locks_under_rls(stmt as *mut pg_sys::LockStmt),
            pg_sys::NodeTag::T_AlterRoleStmt => refuse_changing_own_role((*(stmt as *mut pg_sys::AlterRoleStmt)).role),
            pg_sys::NodeTag::T_AlterRoleSetStmt => {
                refuse_changing_own_role((*(stmt as *mut pg_sys::AlterRoleSetStmt)).role)
            }
            pg_sys::NodeTag::T_DeclareCursorStmt => {
                let declare = stmt as *mut pg_sys::DeclareCursorStmt;
                if (*declare).options & pg_sys::CURSOR_OPT_HOLD as i32 != 0 && !(*declare).portalname.is_null() {
                    let name = CStr::from_ptr((*declare).portalname).to_string_lossy().into_owned();
                    // A holdable cursor's rows outlive the transaction and its context, and are
                    // then read without the executor (FETCH, cursor_to_xml(), PL/pgSQL): whoever
                    // gets the connection next could read them. Not over rows policies hide.
                    if !crate::context::caller_bypasses_rls() && analysed_reads_hidden_rows((*declare).query) {
                        TenancyError::HoldableCursorRefused { cursor: name }.raise()
                    }
                    holdable = Some(name);
                }
            }
            _ => {}
        }
        match PREV_UTILITY {
            // Guarded: an error unwinds through this frame (and drops `explaining`).
            Some(prev) => pg_sys::ffi::pg_guard_ffi_boundary(|| {
                prev(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc)
            }),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
        drop(explaining);
        if let Some(name) = holdable {
            HELD.with(|h| {
                let mut h = h.borrow_mut();
                h.retain(|c| c.name != name);
                let mut cursor = Cursor { name, contexts: Vec::new(), committed: false };
                cursor.note_current_context();
                h.push(cursor);
            });
        }
    }
}

/// Raises 42501 if `query` (an analysed EXPLAIN target) reads anything through row-level
/// security or a security-barrier view, for a role that row-level security applies to.
///
/// # Safety
/// `query` must be the valid Query node of an ExplainStmt.
unsafe fn refuse_explain_under_rls(query: *mut pg_sys::Node) {
    if gucs::ALLOW_EXPLAIN.get() || crate::context::caller_bypasses_rls() {
        return;
    }
    // SAFETY: as the function's contract says.
    if unsafe { analysed_reads_hidden_rows(query) } {
        TenancyError::ExplainRefused.raise()
    }
}

/// True when `query` (an analysed statement: EXPLAIN's or DECLARE's) reads anything through
/// row-level security or a security-barrier view once rewritten (planning may add more: an
/// inlined SQL function; [`refuse_nested_reads_while_explaining`] sees those).
///
/// # Safety
/// `query` must be a valid analysed Query node.
unsafe fn analysed_reads_hidden_rows(query: *mut pg_sys::Node) -> bool {
    // SAFETY: as the function's contract says; rewriting works on a copy, as ExplainQuery does.
    unsafe {
        let mut query = query as *mut pg_sys::Query;
        loop {
            if tag(query as *mut pg_sys::Node) != pg_sys::NodeTag::T_Query {
                break false;
            }
            if (*query).commandType != pg_sys::CmdType::CMD_UTILITY {
                let copy = pg_sys::copyObjectImpl(query as *const std::ffi::c_void) as *mut pg_sys::Query;
                let rewritten = pg_sys::QueryRewrite(copy);
                break pointers::<pg_sys::Node>(rewritten).any(|q| reads_hidden_rows(q));
            }
            let inner = (*query).utilityStmt;
            if tag(inner) == pg_sys::NodeTag::T_ExecuteStmt {
                break prepared_reads_hidden_rows((*(inner as *mut pg_sys::ExecuteStmt)).name);
            }
            query = pg_sys::UtilityContainsQuery(inner);
            if query.is_null() {
                break false;
            }
        }
    }
}

// PostgreSQL's own executor functions, called directly (not through pgrx's guarded wrappers):
// the executor hooks run for every statement, and their common case is only a call through.
unsafe extern "C-unwind" {
    #[link_name = "standard_ExecutorStart"]
    fn executor_start_next(query_desc: *mut pg_sys::QueryDesc, eflags: i32);
    #[link_name = "standard_ExecutorRun"]
    fn executor_run_next(
        query_desc: *mut pg_sys::QueryDesc,
        direction: pg_sys::ScanDirection::Type,
        count: u64,
        execute_once: bool,
    );
    #[link_name = "standard_ExecutorEnd"]
    fn executor_end_next(query_desc: *mut pg_sys::QueryDesc);
}

/// True when `list` is empty (or busy, which it never is between statements). Never panics: the
/// executor hooks below are not guarded, so that the common case costs a few instructions, and
/// nothing may unwind out of them; their rare cases go through guarded functions.
fn is_empty<T>(list: &'static std::thread::LocalKey<RefCell<Vec<T>>>) -> bool {
    list.with(|l| l.try_borrow().map_or(true, |l| l.is_empty()))
}

// Not #[pg_guard]: see `is_empty`. A PostgreSQL error raised below crosses this frame, which
// holds nothing to drop.
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    // SAFETY: the executor passes a valid QueryDesc; the previous hook or PostgreSQL's own
    // function takes it on.
    unsafe {
        if !is_empty(&EXPLAINING) {
            refuse_nested_reads_while_explaining(query_desc);
        }
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query_desc, eflags),
            None => executor_start_next(query_desc, eflags),
        }
        if crate::param::marked((*query_desc).plannedstmt) {
            crate::param::reset(query_desc);
        }
    }
}

/// Raises 42501 when `query_desc`, run while a role under row-level security EXPLAINs, is not the
/// explained query itself (a function's, a trigger's, planning's) and reads what policies hide.
#[pg_guard]
unsafe extern "C-unwind" fn refuse_nested_reads_while_explaining(query_desc: *mut pg_sys::QueryDesc) {
    let explained = EXPLAINING.with(|e| e.borrow().last().copied());
    // SAFETY: a valid QueryDesc with its planned statement, whose relations are locked.
    unsafe {
        // The explained query itself too: planning may have inlined an SQL function that reads a
        // governed table, which the check of the analysed statement could not see.
        if explained.is_some() && reads_hidden_rows_planned((*query_desc).plannedstmt) {
            TenancyError::ExplainRefused.raise()
        }
    }
}

/// True when a planned statement reads a relation whose policies may hide rows: row-level
/// security enabled with no policy, or with a policy whose condition is not `true`. Whoever
/// runs it (a function's SPI may run as its owner), its buffer counts and timings are the
/// EXPLAINing role's to see.
///
/// # Safety
/// `stmt` must be a valid PlannedStmt whose relations the executor has locked.
pub(crate) unsafe fn reads_hidden_rows_planned(stmt: *mut pg_sys::PlannedStmt) -> bool {
    unsafe {
        pointers::<pg_sys::RangeTblEntry>((*stmt).rtable).any(|rte| {
            if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
                return false;
            }
            let rel = pg_sys::RelationIdGetRelation((*rte).relid);
            if rel.is_null() {
                return false;
            }
            let hides = (*(*rel).rd_rel).relrowsecurity && {
                let desc = (*rel).rd_rsdesc;
                desc.is_null()
                    || (*desc).policies.is_null()
                    || pointers::<pg_sys::RowSecurityPolicy>((*desc).policies)
                        .any(|p| !(*p).qual.is_null() && !is_true((*p).qual as *mut pg_sys::Node))
            };
            pg_sys::RelationClose(rel);
            hides
        })
    }
}

// Not #[pg_guard]: see `is_empty`.
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    // SAFETY: the executor passes a valid QueryDesc; the previous hook or PostgreSQL's own
    // function takes it on.
    unsafe {
        // A query started before an EXPLAIN began (a cursor) and run while it runs (by
        // `cursor_to_xml()`, say) counts its buffers into the explained plan too.
        if !is_empty(&EXPLAINING) {
            refuse_nested_reads_while_explaining(query_desc);
        }
        let again = (*query_desc).already_executed;
        if (again && !is_empty(&OPENED)) || (!again && (count != 0 || runs_a_cursor(query_desc))) {
            note_or_check_portal(query_desc, again);
        }
        if crate::param::marked((*query_desc).plannedstmt) {
            crate::param::fill(query_desc);
        }
        match PREV_EXECUTOR_RUN {
            Some(prev) => prev(query_desc, direction, count, execute_once),
            None => executor_run_next(query_desc, direction, count, execute_once),
        }
    }
}

/// True when `query_desc` is the query of a named portal being run: a cursor (`DECLARE`, SPI's
/// and PL/pgSQL's), whose first run may be `MOVE ALL` and whose rows may be fetched again
/// (`FETCH BACKWARD`). A statement's own portal is unnamed; SPI's plain statements run no portal.
///
/// # Safety
/// `query_desc` must be valid.
unsafe fn runs_a_cursor(query_desc: *mut pg_sys::QueryDesc) -> bool {
    // SAFETY: ActivePortal is null or the portal being run.
    unsafe {
        let portal = pg_sys::ActivePortal;
        !portal.is_null() && (*portal).queryDesc == query_desc && !(*portal).name.is_null() && *(*portal).name != 0
    }
}

/// A portal fetched in parts (a cursor, a portal with a row limit): its first run remembers the
/// context it was opened under; a later one checks that context still holds.
#[pg_guard]
unsafe extern "C-unwind" fn note_or_check_portal(query_desc: *mut pg_sys::QueryDesc, again: bool) {
    if again {
        refuse_portal_of_ended_context(query_desc);
    } else {
        // Without an organization too (none, or a user-only context): a context restored under
        // the cursor later (ROLLBACK TO SAVEPOINT) is another context.
        let org = crate::context::scope_text().unwrap_or_default();
        let user = gucs::read(&gucs::USER_ID).unwrap_or_default();
        OPENED.with(|o| {
            let mut o = o.borrow_mut();
            o.retain(|(q, _, _)| *q != query_desc);
            o.push((query_desc, org, user));
        });
    }
}

// Not #[pg_guard]: see `is_empty`.
unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    if !is_empty(&OPENED) {
        OPENED.with(|o| {
            if let Ok(mut o) = o.try_borrow_mut() {
                o.retain(|(q, _, _)| *q != query_desc);
            }
        });
    }
    // SAFETY: the executor passes a valid QueryDesc; the previous hook or PostgreSQL's own
    // function takes it on.
    unsafe {
        match PREV_EXECUTOR_END {
            Some(prev) => prev(query_desc),
            None => executor_end_next(query_desc),
        }
    }
}

/// True when the membership of (`org`, `user`) still holds: the context's own, checked as the
/// readers check it, or else looked up in the catalog.
fn context_holds(org: &str, user: &str) -> bool {
    if crate::context::is_scope(org, user) {
        return crate::context::current_org().is_some();
    }
    let uuid = |text: &str| crate::context::parse_uuid(text.as_bytes()).map(pgrx::Uuid::from_bytes);
    match org.split_once('/') {
        // A project context: `org/project`.
        Some((org, project)) => uuid(org).zip(uuid(project)).is_some_and(|(org, project)| {
            crate::membership::lookup_project(project, user).is_some_and(|(o, _)| o == org)
        }),
        None => uuid(org).is_some_and(|org| crate::membership::lookup(org, user).is_some()),
    }
}

/// The name of the portal being run, for errors.
fn active_portal_name() -> String {
    // SAFETY: ActivePortal is null or the portal being run.
    unsafe {
        let portal = pg_sys::ActivePortal;
        if portal.is_null() || (*portal).name.is_null() {
            return String::new();
        }
        CStr::from_ptr((*portal).name).to_string_lossy().into_owned()
    }
}

/// Raises 42501 when `query_desc` was opened under a context whose membership has ended since.
fn refuse_portal_of_ended_context(query_desc: *mut pg_sys::QueryDesc) {
    // Every fetch: the common case (the context it was opened under) compares in place, with
    // no copies.
    let opened = OPENED.with(|o| {
        o.borrow().iter().find(|(q, _, _)| *q == query_desc).map(|(_, org, user)| {
            let same = crate::context::is_scope(org, user);
            (same, org.is_empty(), (!same).then(|| (org.clone(), user.clone())))
        })
    });
    match opened {
        Some((true, false, _)) if crate::context::current_org().is_none() => {
            TenancyError::CursorContextEnded { cursor: active_portal_name() }.raise()
        }
        Some((false, _, Some((org, user)))) => {
            if !org.is_empty() && !context_holds(&org, &user) {
                TenancyError::CursorContextEnded { cursor: active_portal_name() }.raise()
            }
            TenancyError::CursorOfAnotherContext { cursor: active_portal_name() }.raise()
        }
        _ => {}
    }
}

/// Raises 42501 when `FETCH` or `MOVE` reads a holdable cursor filled under a context whose
/// membership has ended since.
///
/// # Safety
/// `stmt` must be a valid FetchStmt.
unsafe fn refuse_held_cursor_of_ended_context(stmt: *mut pg_sys::FetchStmt) {
    // SAFETY: as the function's contract says.
    let name = unsafe {
        if (*stmt).portalname.is_null() {
            return;
        }
        CStr::from_ptr((*stmt).portalname).to_string_lossy().into_owned()
    };
    let contexts = HELD.with(|h| h.borrow().iter().find(|c| c.name == name && c.committed).map(|c| c.contexts.clone()));
    if let Some(contexts) = contexts {
        if contexts.iter().any(|(org, user)| !context_holds(org, user)) {
            TenancyError::CursorContextEnded { cursor: name }.raise()
        }
    }
}

/// Raises 55000 if `SET CONSTRAINTS ... IMMEDIATE` would run the pending check of a share passed
/// on (`tenancy.reshare_still_allowed`) now instead of at commit, for a role that row-level
/// security applies to.
///
/// # Safety
/// `stmt` must be a valid ConstraintsSetStmt.
unsafe fn refuse_early_reshare_check(stmt: *mut pg_sys::ConstraintsSetStmt) {
    // SAFETY: as the function's contract says; the list holds RangeVars.
    unsafe {
        if (*stmt).deferred || crate::context::caller_bypasses_rls() {
            return;
        }
        let names_it = (*stmt).constraints.is_null()
            || pointers::<pg_sys::RangeVar>((*stmt).constraints).any(|rv| {
                CStr::from_ptr((*rv).relname).to_bytes() == b"reshare_still_allowed"
                    && ((*rv).schemaname.is_null() || CStr::from_ptr((*rv).schemaname).to_bytes() == b"tenancy")
            });
        if !names_it {
            return;
        }
        let schema = pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true);
        let shares = pg_sys::get_relname_relid(c"shares".as_ptr(), schema);
        if shares != pg_sys::InvalidOid && pg_sys::AfterTriggerPendingOnRel(shares) {
            TenancyError::ReshareCheckedEarly.raise()
        }
    }
}

/// Raises 42501 if `LOCK TABLE` would take a lock that blocks writes on a table that
/// row-level security applies to for the current role.
///
/// # Safety
/// `stmt` must be a valid LockStmt.
unsafe fn refuse_table_locks_under_rls(stmt: *mut pg_sys::LockStmt) {
    // SAFETY: as the function's contract says.
    let (mode, relations) = unsafe { ((*stmt).mode, (*stmt).relations) };
    if mode < pg_sys::ShareUpdateExclusiveLock as i32 || crate::context::caller_bypasses_rls() {
        return;
    }
    // SAFETY: each element of a LockStmt's list is a RangeVar; a missing relation resolves to
    // InvalidOid (LOCK TABLE itself reports it).
    unsafe {
        for rv in pointers::<pg_sys::RangeVar>(relations) {
            let relid = pg_sys::RangeVarGetRelidExtended(
                rv,
                pg_sys::NoLock as i32,
                pg_sys::RVROption::RVR_MISSING_OK,
                None,
                std::ptr::null_mut(),
            );
            if relid != pg_sys::InvalidOid
                && pg_sys::check_enable_rls(relid, pg_sys::InvalidOid, true)
                    == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
            {
                let name = CStr::from_ptr((*rv).relname).to_string_lossy().into_owned();
                TenancyError::TableLockRefused { table: name }.raise()
            }
        }
    }
}

/// Raises 42501 if an application role alters itself (its settings, its password).
///
/// # Safety
/// `role` must be null (ALTER ROLE ALL) or a valid RoleSpec.
unsafe fn refuse_changing_own_role(role: *mut pg_sys::RoleSpec) {
    if role.is_null() {
        return; // ALTER ROLE ALL: superusers only, and PostgreSQL says so
    }
    // SAFETY: a syscache lookup of the named role (missing: InvalidOid, reported by ALTER ROLE).
    let (target, me) = unsafe { (pg_sys::get_rolespec_oid(role, true), pg_sys::GetUserId()) };
    if target != me || crate::context::caller_bypasses_rls() {
        return;
    }
    let application: Option<bool> = crate::privilege::as_catalog_owner(|| {
        crate::catalog::one(
            "SELECT pg_catalog.pg_has_role($1, 'tenancy_writer', 'MEMBER')
                 OR pg_catalog.pg_has_role($1, 'tenancy_reader', 'MEMBER')",
            &[me.into()],
        )
    });
    if application == Some(true) {
        // SAFETY: the name of an existing role.
        let name = unsafe { CStr::from_ptr(pg_sys::GetUserNameFromId(me, false)).to_string_lossy().into_owned() };
        TenancyError::AlterOwnRoleRefused { role: name }.raise()
    }
}

/// True when a prepared statement's rewritten queries read through row-level security.
///
/// # Safety
/// `name` must be a valid C string.
unsafe fn prepared_reads_hidden_rows(name: *const std::ffi::c_char) -> bool {
    unsafe {
        let prepared = pg_sys::FetchPreparedStatement(name, false);
        if prepared.is_null() {
            return false; // EXPLAIN EXECUTE reports the missing statement itself
        }
        // Brings the statement's rewritten queries up to date for the current role.
        pg_sys::FetchPreparedStatementTargetList(prepared);
        let source = (*prepared).plansource;
        ((*source).dependsOnRLS && (*source).rewriteRoleId != pg_sys::GetUserId())
            || pointers::<pg_sys::Node>((*source).query_list).any(|q| reads_hidden_rows(q))
    }
}

/// True when `node` (a rewritten Query) reads a relation through policies, or a security-barrier
/// view, anywhere: in subqueries, CTEs and sublinks too.
///
/// # Safety
/// `node` must be null or a valid node tree.
unsafe fn reads_hidden_rows(node: *mut pg_sys::Node) -> bool {
    unsafe { walk(node, std::ptr::null_mut()) }
}

#[pg_guard]
unsafe extern "C-unwind" fn walk(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> bool {
    // SAFETY: PostgreSQL's tree walkers pass valid nodes of the tree they walk.
    unsafe {
        match tag(node) {
            pg_sys::NodeTag::T_Invalid => false,
            pg_sys::NodeTag::T_RangeTblEntry => {
                let rte = node as *mut pg_sys::RangeTblEntry;
                // securityQuals hold the policies row-level security applied (for this role):
                // a table whose policies let this role read every row (`USING (true)`: a global
                // table) hides nothing. false: go on into the entry (its subquery, functions).
                ((*rte).rtekind == pg_sys::RTEKind::RTE_RELATION
                    && pointers::<pg_sys::Node>((*rte).securityQuals).any(|q| !is_true(q)))
                    || ((*rte).rtekind == pg_sys::RTEKind::RTE_SUBQUERY && (*rte).security_barrier)
            }
            pg_sys::NodeTag::T_Query => pg_sys::query_tree_walker(
                node as *mut pg_sys::Query,
                Some(walk),
                context,
                pg_sys::QTW_EXAMINE_RTES_BEFORE as i32,
            ),
            _ => pg_sys::expression_tree_walker(node, Some(walk), context),
        }
    }
}

/// True for the constant `true`.
///
/// # Safety
/// `node` must be a valid expression node.
unsafe fn is_true(node: *mut pg_sys::Node) -> bool {
    unsafe {
        tag(node) == pg_sys::NodeTag::T_Const && {
            let c = node as *mut pg_sys::Const;
            !(*c).constisnull
                && (*c).consttype == pg_sys::BOOLOID
                && bool::from_datum((*c).constvalue, false) == Some(true)
        }
    }
}

/// A `WITH HOLD` cursor and every context it was filled under (declared, and committed: a
/// holdable cursor's rows are computed when its transaction commits).
struct Cursor {
    name: String,
    /// (organization, user) of each context with an organization.
    contexts: Vec<(String, String)>,
    committed: bool,
}

impl Cursor {
    fn note_current_context(&mut self) {
        if let Some(org) = crate::context::scope_text() {
            let entry = (org, gucs::read(&gucs::USER_ID).unwrap_or_default());
            if !self.contexts.contains(&entry) {
                self.contexts.push(entry);
            }
        }
    }
}

thread_local! {
    static HELD: RefCell<Vec<Cursor>> = const { RefCell::new(Vec::new()) };
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        // Holdable cursors have just been filled, under the transaction's context.
        XACT_EVENT_PRE_COMMIT => HELD.with(|h| {
            for c in h.borrow_mut().iter_mut().filter(|c| !c.committed) {
                c.note_current_context();
                c.committed = true;
            }
        }),
        // A holdable cursor declared in a transaction that rolls back is gone.
        XACT_EVENT_ABORT => {
            HELD.with(|h| h.borrow_mut().retain(|c| c.committed));
            EXPLAINING.with(|e| e.borrow_mut().clear());
            OPENED.with(|o| o.borrow_mut().clear());
        }
        // Holdable portals were read to the end at commit: nothing is fetched in parts any more.
        XACT_EVENT_COMMIT => OPENED.with(|o| o.borrow_mut().clear()),
        _ => {}
    }
}

/// Raises 55000 if a holdable cursor filled under another context is still open: starting a
/// context for (`org`, `user`) would let it read that context's rows. Cursors that are gone
/// (closed, `DISCARD ALL`) are forgotten here.
/// Whether this session holds a `WITH HOLD` cursor filled under a context (what
/// [`refuse_if_cursor_from_another_context`] looks at).
pub fn holds_cursors() -> bool {
    HELD.with(|h| !h.borrow().is_empty())
}

pub fn refuse_if_cursor_from_another_context(org: Option<&str>, user: &str) {
    let blocking = HELD.with(|h| {
        let mut h = h.borrow_mut();
        h.retain(|c| {
            let name = CString::new(c.name.as_str()).unwrap_or_default();
            // SAFETY: looks a portal up by a NUL-terminated name.
            let portal = unsafe { pg_sys::GetPortalByName(name.as_ptr()) };
            !portal.is_null()
        });
        h.iter().find(|c| c.contexts.iter().any(|(o, u)| Some(o.as_str()) != org || u != user)).map(|c| c.name.clone())
    });
    if let Some(cursor) = blocking {
        TenancyError::CursorFromAnotherContext { cursor }.raise()
    }
}
