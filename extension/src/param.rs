//! The organization of the context as a parameter of each statement, set once when the
//! statement runs (a `planner` hook, and the executor hooks in [`crate::hooks`]).
//!
//! Policies compare the tenant column with `(SELECT tenancy.current_org())`, which PostgreSQL
//! plans as an InitPlan: a one-row Result node that sets a parameter, evaluated once per
//! statement. Its machinery costs more than the call it wraps: the node's initialisation, its
//! projection, the EXECUTE check of the function and running the subplan come to about 6,000
//! instructions per statement, more than 5% of a whole prepared transaction (`make bench`).
//!
//! So the planner hook takes such InitPlans out of the plan it returns, and leaves a mark
//! ([`MARK`]) naming the parameter each one set. When the statement runs, the executor hooks
//! set those parameters from [`current_org`](crate::context::current_org) directly:
//!
//! - **`ExecutorStart`** ([`reset`]): NULL, so that a statement run in a way that skips
//!   `ExecutorRun` reads no organization's rows (fail closed), never an unset value.
//! - **The first `ExecutorRun`** ([`fill`]): the organization of the context, when the InitPlan
//!   would have run (it runs when first needed: a cursor's first fetch). Later runs of the same
//!   statement (a cursor's next fetches) keep it, as the InitPlan's value was kept.
//!
//! Only InitPlans that are exactly `SELECT tenancy.current_org()` (or, for tenant columns of the
//! application's key type, `current_org_key()` or `current_org_bigint()`: an expression sublink, no
//! arguments, no correlation) are taken out; anything else is planned as PostgreSQL planned it.
//! Parallel workers get the value from their leader, as they got the InitPlan's value: the
//! Gather node lists the parameter among those it passes on.

use crate::hooks::pointers;
use pgrx::pg_sys;
use std::cell::Cell;

/// `PlanInvalItem.cacheId` of a mark: no syscache has a negative id, so plan invalidation,
/// which compares the ids, never matches it. `hashValue` holds the parameter's id.
pub const MARK: i32 = -0x746e_6379; // "tncy"

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;

/// The context readers taken out of plans: `tenancy.current_org()` (uuid), and for tenant
/// columns of the application's own key type `tenancy.current_org_key()` (text) and
/// `tenancy.current_org_bigint()` (bigint).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reader {
    Uuid = 0,
    Key = 1,
    Bigint = 2,
    /// `tenancy.current_project()`, `current_project_key()` and `current_project_bigint()`: the
    /// same for the project of a project context.
    ProjectUuid = 3,
    ProjectKey = 4,
    ProjectBigint = 5,
}

impl Reader {
    const ALL: [Reader; 6] =
        [Reader::Uuid, Reader::Key, Reader::Bigint, Reader::ProjectUuid, Reader::ProjectKey, Reader::ProjectBigint];

    fn result_type(self) -> pg_sys::Oid {
        match self {
            Reader::Uuid | Reader::ProjectUuid => pg_sys::UUIDOID,
            Reader::Key | Reader::ProjectKey => pg_sys::TEXTOID,
            Reader::Bigint | Reader::ProjectBigint => pg_sys::INT8OID,
        }
    }

    fn address(self) -> usize {
        match self {
            Reader::Uuid => current_org_wrapper as *const () as usize,
            Reader::Key => current_org_key_wrapper as *const () as usize,
            Reader::Bigint => current_org_bigint_wrapper as *const () as usize,
            Reader::ProjectUuid => current_project_wrapper as *const () as usize,
            Reader::ProjectKey => current_project_key_wrapper as *const () as usize,
            Reader::ProjectBigint => current_project_bigint_wrapper as *const () as usize,
        }
    }

    fn of_mark(hash: u32) -> (Reader, usize) {
        let reader = match hash >> MARK_KIND_SHIFT {
            1 => Reader::Key,
            2 => Reader::Bigint,
            3 => Reader::ProjectUuid,
            4 => Reader::ProjectKey,
            5 => Reader::ProjectBigint,
            _ => Reader::Uuid,
        };
        (reader, (hash & ((1 << MARK_KIND_SHIFT) - 1)) as usize)
    }
}

/// A mark's `hashValue`: the parameter's id, and the reader in the bits above this one.
const MARK_KIND_SHIFT: u32 = 28;

thread_local! {
    /// The oids of the readers found last, by [`Reader`] (0: none yet).
    static READERS: [Cell<pg_sys::Oid>; 6] = const { [const { Cell::new(pg_sys::Oid::INVALID) }; 6] };
    /// Statements that have read the organization into their parameters and not ended yet
    /// (running, or a cursor between fetches): while there is one, the context may not change
    /// ([`refuse_context_change`]).
    static READING: Cell<u32> = const { Cell::new(0) };
}

/// Raises 55000 while a statement that read the organization of the context is not over: a
/// context started inside it (a CTE calling `set_context()`, a DO block's nested statement)
/// would give its later parts, and its role checks, another context than its parameter.
pub fn refuse_context_change() {
    if READING.with(Cell::get) > 0 {
        crate::error::TenancyError::ContextChangeInsideStatement.raise()
    }
}

/// Called when the executor state of a statement that read the organization is freed (its end,
/// or the cleanup of an error).
unsafe extern "C-unwind" fn stopped_reading(_arg: *mut std::ffi::c_void) {
    READING.with(|r| r.set(r.get().saturating_sub(1)));
}

unsafe extern "C-unwind" {
    #[link_name = "standard_planner"]
    fn planner_next(
        parse: *mut pg_sys::Query,
        query_string: *const std::ffi::c_char,
        cursor_options: i32,
        bound_params: pg_sys::ParamListInfo,
    ) -> *mut pg_sys::PlannedStmt;
    /// The C function behind `tenancy.current_org()` (pgrx's wrapper of
    /// [`crate::context::current_org`]).
    fn current_org_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    /// `tenancy.current_org_key()` and `tenancy.current_org_bigint()` ([`crate::key`]).
    fn current_org_key_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    fn current_org_bigint_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    /// `tenancy.current_project()`, `current_project_key()` and `current_project_bigint()`.
    fn current_project_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    fn current_project_key_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    fn current_project_bigint_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// Installs the planner hook; called from `_PG_init`.
pub fn init() {
    // SAFETY: _PG_init runs once per process before any statement; the previous hook is chained.
    unsafe {
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(plan);
        // A function dropped and made again (DROP EXTENSION, CREATE EXTENSION) gets a new oid,
        // and its old oid may go to another function.
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::PROCOID as i32,
            Some(forget),
            pg_sys::Datum::from(0usize),
        );
    }
}

unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    READERS.with(|r| r.iter().for_each(|c| c.set(pg_sys::Oid::INVALID)));
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn plan(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: the planner's arguments are passed on unchanged; the statement it returns is new
    // and ours to change until we return it.
    unsafe {
        if !parse.is_null() && (*parse).commandType != pg_sys::CmdType::CMD_UTILITY {
            if (*parse).commandType == pg_sys::CmdType::CMD_MERGE {
                refuse_merge_under_rls(parse);
            }
            wrap_context_calls(parse);
        }
        let stmt = match PREV_PLANNER {
            Some(prev) => prev(parse, query_string, cursor_options, bound_params),
            None => planner_next(parse, query_string, cursor_options, bound_params),
        };
        if !(*stmt).subplans.is_null() {
            take_out_context_initplans(stmt);
        }
        // postgres.c prints the plan (estimates from every organization's rows) once we return,
        // to the session's client: refused when the plan reads through row-level security or a
        // security-barrier view, unless the session's own user sees every row anyway (inside a
        // SECURITY DEFINER function the current user may, and the client still gets the plan).
        if pg_sys::Debug_print_plan
            && !crate::gucs::ALLOW_EXPLAIN.get()
            && !crate::context::bypasses_rls(pg_sys::GetSessionUserId())
            && (crate::hooks::reads_hidden_rows_planned(stmt) || reads_barrier_view(stmt))
        {
            crate::error::TenancyError::DebugPlanRefused.raise()
        }
        stmt
    }
}

/// Whether planned statement `stmt` reads a security-barrier view (`tenancy.received_shares`):
/// its range table keeps the view's entry, flagged, after the planner pulled it up.
///
/// # Safety
/// `stmt` must be a valid planned statement.
unsafe fn reads_barrier_view(stmt: *mut pg_sys::PlannedStmt) -> bool {
    // SAFETY: as the function's contract says.
    unsafe {
        crate::hooks::pointers::<pg_sys::RangeTblEntry>((*stmt).rtable)
            .any(|rte| (*rte).rtekind == pg_sys::RTEKind::RTE_SUBQUERY && (*rte).security_barrier)
    }
}

/// Raises 0A000 for a MERGE into a table that row-level security applies to for this role.
/// PostgreSQL 15 checks a MERGE target's UPDATE and DELETE policies as errors, not filters, and
/// filters the target by its SELECT policies only when the MERGE reads a target column: `MERGE
/// INTO t USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE` fails exactly when another
/// organization has a row in `t`.
///
/// # Safety
/// `query` must be a valid, rewritten MERGE.
unsafe fn refuse_merge_under_rls(query: *mut pg_sys::Query) {
    unsafe {
        let index = (*query).resultRelation;
        if index <= 0 {
            return;
        }
        let rte: *mut pg_sys::RangeTblEntry = nth((*query).rtable, index as usize - 1);
        let enabled = pg_sys::check_enable_rls((*rte).relid, pg_sys::Oid::INVALID, true);
        if enabled == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32 {
            let name = pg_sys::get_rel_name((*rte).relid);
            let table = if name.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
            };
            crate::error::TenancyError::MergeRefused { table }.raise()
        }
    }
}

/// Wraps each `tenancy.current_org()` that a policy's condition calls (a security qual or a
/// WITH CHECK option, at any level of `query`) in a sublink, `(SELECT tenancy.current_org())`,
/// which the planner makes an InitPlan and [`take_out_context_initplans`] a marked parameter.
///
/// Policies call `tenancy.current_org()` directly rather than through a sublink of their own:
/// a statement whose rewritten tree holds a sublink has all of it walked again each time its
/// cached plan is reused (to lock what the sublinks read), about 1,700 instructions for a point
/// lookup. The planner's input is a copy of that tree (or a tree planned once), so the sublinks
/// made here are planned but never cached.
///
/// # Safety
/// `query` must be a valid, analysed and rewritten query that the planner is about to plan.
unsafe fn wrap_context_calls(query: *mut pg_sys::Query) {
    unsafe {
        let mut wrapped = false;
        for rte in pointers::<pg_sys::RangeTblEntry>((*query).rtable) {
            if !(*rte).securityQuals.is_null() {
                (*rte).securityQuals =
                    wrap_in((*rte).securityQuals as *mut pg_sys::Node, &mut wrapped) as *mut pg_sys::List;
            }
            if (*rte).rtekind == pg_sys::RTEKind::RTE_SUBQUERY && !(*rte).subquery.is_null() {
                wrap_context_calls((*rte).subquery);
            }
        }
        for wco in pointers::<pg_sys::WithCheckOption>((*query).withCheckOptions) {
            (*wco).qual = wrap_in((*wco).qual, &mut wrapped);
        }
        for cte in pointers::<pg_sys::CommonTableExpr>((*query).cteList) {
            let inner = (*cte).ctequery as *mut pg_sys::Query;
            if !inner.is_null() && (*inner).type_ == pg_sys::NodeTag::T_Query {
                wrap_context_calls(inner);
            }
        }
        if (*query).hasSubLinks {
            // The queries of the statement's own sublinks (and of the policies' sublinks) read
            // tables with policies of their own. Subqueries in FROM and CTEs were seen above.
            let flags = (pg_sys::QTW_IGNORE_RT_SUBQUERIES | pg_sys::QTW_IGNORE_CTE_SUBQUERIES) as i32;
            pg_sys::query_tree_walker(query, Some(find_sublink_queries), std::ptr::null_mut(), flags);
        }
        if wrapped {
            (*query).hasSubLinks = true;
        }
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn find_sublink_queries(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> bool {
    unsafe {
        if node.is_null() {
            return false;
        }
        if (*node).type_ == pg_sys::NodeTag::T_Query {
            wrap_context_calls(node as *mut pg_sys::Query);
            return false;
        }
        pg_sys::expression_tree_walker(node, Some(find_sublink_queries), context)
    }
}

/// A copy of `node` with each call of `tenancy.current_org()` wrapped in a sublink; sub-queries
/// (a policy's EXISTS) are left to [`find_sublink_queries`].
///
/// # Safety
/// `node` must be null or a valid expression tree.
unsafe fn wrap_in(node: *mut pg_sys::Node, wrapped: &mut bool) -> *mut pg_sys::Node {
    unsafe { wrap_mutator(node, wrapped as *mut bool as *mut std::ffi::c_void) }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn wrap_mutator(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> *mut pg_sys::Node {
    unsafe {
        if node.is_null() {
            return node;
        }
        match (*node).type_ {
            pg_sys::NodeTag::T_Query => node,
            pg_sys::NodeTag::T_FuncExpr if reader_of(node as *mut pg_sys::FuncExpr).is_some() => {
                *(context as *mut bool) = true;
                sublink_of(node)
            }
            _ => {
                // PostgreSQL 15 declares the mutator without its arguments.
                let mutator: unsafe extern "C-unwind" fn() -> *mut pg_sys::Node = std::mem::transmute(
                    wrap_mutator
                        as unsafe extern "C-unwind" fn(*mut pg_sys::Node, *mut std::ffi::c_void) -> *mut pg_sys::Node,
                );
                pg_sys::expression_tree_mutator(node, Some(mutator), context)
            }
        }
    }
}

/// `(SELECT call)` for `call`, an expression.
///
/// # Safety
/// `call` must be a valid expression node.
unsafe fn sublink_of(call: *mut pg_sys::Node) -> *mut pg_sys::Node {
    unsafe {
        let select = pg_sys::palloc0(std::mem::size_of::<pg_sys::Query>()) as *mut pg_sys::Query;
        (*select).type_ = pg_sys::NodeTag::T_Query;
        (*select).commandType = pg_sys::CmdType::CMD_SELECT;
        (*select).querySource = pg_sys::QuerySource::QSRC_ORIGINAL;
        (*select).canSetTag = true;
        let column = pg_sys::pstrdup(c"current_org".as_ptr());
        let entry =
            pg_sys::makeTargetEntry(pg_sys::copyObjectImpl(call as *const _) as *mut pg_sys::Expr, 1, column, false);
        (*select).targetList = pg_sys::lappend(std::ptr::null_mut(), entry as *mut std::ffi::c_void);
        (*select).jointree = pg_sys::makeFromExpr(std::ptr::null_mut(), std::ptr::null_mut());
        let link = pg_sys::palloc0(std::mem::size_of::<pg_sys::SubLink>()) as *mut pg_sys::SubLink;
        (*link).xpr.type_ = pg_sys::NodeTag::T_SubLink;
        (*link).subLinkType = pg_sys::SubLinkType::EXPR_SUBLINK;
        (*link).subselect = select as *mut pg_sys::Node;
        (*link).location = -1;
        link as *mut pg_sys::Node
    }
}

/// The context reader `expr` calls, if it is a call of one without arguments.
///
/// # Safety
/// `expr` must be a valid FuncExpr.
unsafe fn reader_of(expr: *mut pg_sys::FuncExpr) -> Option<Reader> {
    unsafe {
        if !(*expr).args.is_null() || (*expr).funcid.to_u32() < pg_sys::FirstNormalObjectId {
            return None;
        }
        let result = (*expr).funcresulttype;
        Reader::ALL.into_iter().find(|r| r.result_type() == result && is_reader(*r, (*expr).funcid))
    }
}

/// # Safety
/// `list` must be NIL or a valid pointer list.
unsafe fn nth<T>(list: *mut pg_sys::List, i: usize) -> *mut T {
    unsafe { (*(*list).elements.add(i)).ptr_value as *mut T }
}

/// # Safety
/// `list` must be NIL or a valid list.
unsafe fn len(list: *mut pg_sys::List) -> usize {
    if list.is_null() {
        0
    } else {
        unsafe { (*list).length as usize }
    }
}

/// The reader `plan` computes, when it is a Result node computing a context reader and nothing
/// else.
///
/// # Safety
/// `plan` must be null or a valid plan node.
unsafe fn computed_reader(plan: *mut pg_sys::Plan) -> Option<Reader> {
    unsafe {
        if plan.is_null()
            || (*plan).type_ != pg_sys::NodeTag::T_Result
            || !(*plan).lefttree.is_null()
            || !(*plan).qual.is_null()
            || !(*plan).initPlan.is_null()
            || !(*(plan as *mut pg_sys::Result)).resconstantqual.is_null()
            || len((*plan).targetlist) != 1
        {
            return None;
        }
        let entry: *mut pg_sys::TargetEntry = nth((*plan).targetlist, 0);
        let expr = (*entry).expr as *mut pg_sys::FuncExpr;
        if expr.is_null() || (*expr).xpr.type_ != pg_sys::NodeTag::T_FuncExpr {
            return None;
        }
        reader_of(expr)
    }
}

/// True when `funcid` is `reader`: a function whose C code is ours, whatever its schema is
/// called.
fn is_reader(reader: Reader, funcid: pg_sys::Oid) -> bool {
    let known = READERS.with(|r| r[reader as usize].get());
    if known == funcid {
        return true;
    }
    // SAFETY: fmgr_info looks the function up (an error for a function that does not exist,
    // which a planned statement's cannot be) and fills a local FmgrInfo.
    let ours = unsafe {
        let mut info = pg_sys::FmgrInfo::default();
        pg_sys::fmgr_info(funcid, &mut info);
        info.fn_addr.map(|f| f as *const () as usize) == Some(reader.address())
    };
    if ours {
        READERS.with(|r| r[reader as usize].set(funcid));
    }
    ours
}

/// Takes each InitPlan that computes `tenancy.current_org()` out of `stmt`, marking its parameter.
///
/// # Safety
/// `stmt` must be a valid planned statement just made by the planner.
unsafe fn take_out_context_initplans(stmt: *mut pg_sys::PlannedStmt) {
    unsafe {
        let subplans = (*stmt).subplans;
        // plan_id counts from 1 in `subplans`.
        let ids: Vec<(i32, Reader)> =
            (0..len(subplans)).filter_map(|i| computed_reader(nth(subplans, i)).map(|r| (i as i32 + 1, r))).collect();
        if ids.is_empty() {
            return;
        }
        let mut taken = Vec::new();
        let mut visit = |plan: *mut pg_sys::Plan| take_out_initplans(plan, &ids, &mut taken);
        walk((*stmt).planTree, &mut visit);
        for subplan in pointers(subplans) {
            walk(subplan, &mut visit);
        }
        for (plan_id, param, reader) in taken {
            // The subplan is neither initialised nor run: ExecInitNode(NULL) is NULL, as for the
            // subplans a parallel worker does not run.
            (*(*subplans).elements.add(plan_id as usize - 1)).ptr_value = std::ptr::null_mut();
            let mark = pg_sys::palloc0(std::mem::size_of::<pg_sys::PlanInvalItem>()) as *mut pg_sys::PlanInvalItem;
            (*mark).type_ = pg_sys::NodeTag::T_PlanInvalItem;
            (*mark).cacheId = MARK;
            (*mark).hashValue = (param as u32) | ((reader as u32) << MARK_KIND_SHIFT);
            // Marks first: the executor hooks read them up to the first item that is not one.
            (*stmt).invalItems = pg_sys::lcons(mark as *mut std::ffi::c_void, (*stmt).invalItems);
        }
    }
}

/// Removes from `plan`'s InitPlans those with a plan id in `ids` that set one parameter from an
/// uncorrelated expression sublink, adding (plan id, parameter) to `taken`.
///
/// # Safety
/// `plan` must be a valid plan node.
unsafe fn take_out_initplans(plan: *mut pg_sys::Plan, ids: &[(i32, Reader)], taken: &mut Vec<(i32, i32, Reader)>) {
    unsafe {
        let list = (*plan).initPlan;
        if list.is_null() {
            return;
        }
        let mut kept: *mut pg_sys::List = std::ptr::null_mut();
        for sub in pointers::<pg_sys::SubPlan>(list) {
            let reader = ids.iter().find(|(id, _)| *id == (*sub).plan_id).map(|(_, r)| *r);
            let ours = (*sub).xpr.type_ == pg_sys::NodeTag::T_SubPlan
                && (*sub).subLinkType == pg_sys::SubLinkType::EXPR_SUBLINK
                && reader.is_some()
                && (*sub).parParam.is_null()
                && (*sub).args.is_null()
                && len((*sub).setParam) == 1
                && (*(*(*sub).setParam).elements).int_value < (1 << MARK_KIND_SHIFT);
            if let (true, Some(reader)) = (ours, reader) {
                taken.push(((*sub).plan_id, (*(*(*sub).setParam).elements).int_value, reader));
            } else {
                kept = pg_sys::lappend(kept, sub as *mut std::ffi::c_void);
            }
        }
        (*plan).initPlan = kept;
    }
}

/// Calls `visit` on `plan` and every plan node below it that can carry InitPlans.
///
/// # Safety
/// `plan` must be null or a valid plan tree.
unsafe fn walk(plan: *mut pg_sys::Plan, visit: &mut dyn FnMut(*mut pg_sys::Plan)) {
    unsafe {
        if plan.is_null() {
            return;
        }
        visit(plan);
        walk((*plan).lefttree, visit);
        walk((*plan).righttree, visit);
        let children = match (*plan).type_ {
            pg_sys::NodeTag::T_Append => (*(plan as *mut pg_sys::Append)).appendplans,
            pg_sys::NodeTag::T_MergeAppend => (*(plan as *mut pg_sys::MergeAppend)).mergeplans,
            pg_sys::NodeTag::T_BitmapAnd => (*(plan as *mut pg_sys::BitmapAnd)).bitmapplans,
            pg_sys::NodeTag::T_BitmapOr => (*(plan as *mut pg_sys::BitmapOr)).bitmapplans,
            pg_sys::NodeTag::T_CustomScan => (*(plan as *mut pg_sys::CustomScan)).custom_plans,
            pg_sys::NodeTag::T_SubqueryScan => {
                walk((*(plan as *mut pg_sys::SubqueryScan)).subplan, visit);
                std::ptr::null_mut()
            }
            _ => std::ptr::null_mut(),
        };
        for child in pointers(children) {
            walk(child, visit);
        }
    }
}

/// The parameters marked in `stmt`, in a form the executor hooks test in a few instructions.
///
/// # Safety
/// `stmt` must be a valid planned statement.
#[inline]
pub unsafe fn marked(stmt: *const pg_sys::PlannedStmt) -> bool {
    unsafe {
        let items = (*stmt).invalItems;
        !items.is_null() && (*nth::<pg_sys::PlanInvalItem>(items, 0)).cacheId == MARK
    }
}

/// Calls `each` with each parameter marked in `stmt`.
///
/// # Safety
/// `stmt` must be a valid planned statement.
unsafe fn each_mark(stmt: *const pg_sys::PlannedStmt, mut each: impl FnMut(Reader, usize)) {
    unsafe {
        for item in pointers::<pg_sys::PlanInvalItem>((*stmt).invalItems).take_while(|i| (**i).cacheId == MARK) {
            let (reader, param) = Reader::of_mark((*item).hashValue);
            each(reader, param);
        }
    }
}

/// After `ExecutorStart`: the marked parameters are NULL and not yet set.
///
/// # Safety
/// `query_desc` must be a started query whose statement is [`marked`].
pub unsafe fn reset(query_desc: *mut pg_sys::QueryDesc) {
    unsafe {
        let estate = (*query_desc).estate;
        each_mark((*query_desc).plannedstmt, |_, param| {
            let prm = (*estate).es_param_exec_vals.add(param);
            (*prm).execPlan = std::ptr::null_mut();
            (*prm).value = pg_sys::Datum::from(0usize);
            (*prm).isnull = true;
        });
    }
}

/// Before the first `ExecutorRun`: the marked parameters hold the organization of the context
/// (NULL without one). A parameter set before (`value` 1 for a NULL) is left as it is.
///
/// # Safety
/// `query_desc` must be a started query whose statement is [`marked`].
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn fill(query_desc: *mut pg_sys::QueryDesc) {
    unsafe {
        let estate = (*query_desc).estate;
        // Each reader's value, computed once for the statement.
        let mut values: [Option<Option<pg_sys::Datum>>; 6] = [None; 6];
        let mut filled = false;
        each_mark((*query_desc).plannedstmt, |reader, param| {
            let prm = (*estate).es_param_exec_vals.add(param);
            if !(*prm).isnull || (*prm).value != pg_sys::Datum::from(0usize) {
                return;
            }
            filled = true;
            let value = *values[reader as usize].get_or_insert_with(|| {
                let uuid = |id: pgrx::Uuid| {
                    let copy = pg_sys::MemoryContextAlloc((*estate).es_query_cxt, 16) as *mut u8;
                    std::ptr::copy_nonoverlapping(id.as_bytes().as_ptr(), copy, 16);
                    pg_sys::Datum::from(copy)
                };
                let key = |id: pgrx::Uuid| {
                    crate::key::with_key(&id, |key, _| {
                        // A text datum in the statement's memory, as the InitPlan's would have been.
                        let old = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
                        let text =
                            pg_sys::cstring_to_text_with_len(key.as_ptr() as *const std::ffi::c_char, key.len() as i32);
                        pg_sys::MemoryContextSwitchTo(old);
                        pg_sys::Datum::from(text)
                    })
                };
                match reader {
                    Reader::Uuid => crate::context::current_org().map(uuid),
                    Reader::Key => crate::context::current_org().and_then(key),
                    Reader::Bigint => crate::key::current_org_bigint().map(pg_sys::Datum::from),
                    Reader::ProjectUuid => crate::context::current_project_id().map(uuid),
                    Reader::ProjectKey => crate::context::current_project_id().and_then(key),
                    Reader::ProjectBigint => crate::key::current_project_bigint().map(pg_sys::Datum::from),
                }
            });
            match value {
                Some(datum) => {
                    (*prm).value = datum;
                    (*prm).isnull = false;
                }
                None => (*prm).value = pg_sys::Datum::from(1usize),
            }
        });
        if filled {
            let callback = pg_sys::MemoryContextAlloc(
                (*estate).es_query_cxt,
                std::mem::size_of::<pg_sys::MemoryContextCallback>(),
            ) as *mut pg_sys::MemoryContextCallback;
            (*callback).func = Some(stopped_reading);
            (*callback).arg = std::ptr::null_mut();
            pg_sys::MemoryContextRegisterResetCallback((*estate).es_query_cxt, callback);
            READING.with(|r| r.set(r.get() + 1));
        }
    }
}
