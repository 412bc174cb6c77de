//! The planner's statistics under row-level security (the `get_relation_stats_hook` and
//! `get_index_stats_hook`).
//!
//! A table's statistics are built from every organization's rows, and PostgreSQL keeps using
//! them for a table that row-level security applies to, for leakproof operators: `=`, `<`, `>=`
//! on uuids and text, `^@` (`starts_with`). A plan's estimated cost then depends on other
//! organizations' values, and a role that cannot EXPLAIN still sees the cost: whether JIT
//! compiles the query (`jit_above_cost`, any role may set it), whether a prepared statement
//! switches to its generic plan (`pg_prepared_statements.generic_plans`, after
//! `cpu_tuple_cost` moved the threshold). Stepping a bound through them read other
//! organizations' ids and texts (an attack round found it), and for an indexed column the
//! planner even reads the live extremes from the index, uncommitted rows included.
//!
//! So for a table that row-level security applies to in the statement being planned (an RTE
//! with security quals; for an index's expression statistics and a column's width, a table
//! whose row-level security applies to the current role), the planner gets the statistics with
//! only the NULL fraction: the most common values, histograms and their frequencies go (and with
//! the histogram, the index probes for the extremes), and so do the number of distinct values
//! and the correlation, which an organization moves with values of its own (a value another
//! organization holds leaves the distinct count where a new one raises it: a round found that),
//! and the average width (the type's default instead). The planner uses its defaults: equality
//! `1 / 200`, ranges a third; plans of tenant tables rest on the tenant column's index.

use pgrx::pg_sys;

static mut PREV_RELATION: pg_sys::get_relation_stats_hook_type = None;
static mut PREV_INDEX: pg_sys::get_index_stats_hook_type = None;
static mut PREV_WIDTH: pg_sys::get_attavgwidth_hook_type = None;
/// pg_statistic's tuple descriptor, copied once per backend (a catalog's never changes).
static mut DESCRIPTOR: pg_sys::TupleDesc = std::ptr::null_mut();

/// Installs the hooks; called from `_PG_init`.
pub fn init() {
    // SAFETY: _PG_init runs once per process before any statement; the previous hooks are chained.
    unsafe {
        PREV_RELATION = pg_sys::get_relation_stats_hook;
        pg_sys::get_relation_stats_hook = Some(relation_stats);
        PREV_INDEX = pg_sys::get_index_stats_hook;
        pg_sys::get_index_stats_hook = Some(index_stats);
        PREV_WIDTH = pg_sys::get_attavgwidth_hook;
        pg_sys::get_attavgwidth_hook = Some(average_width);
    }
}

/// A column's average width (pg_statistic's `stawidth`, read apart from the statistics hooks):
/// the type's default on a table whose row-level security applies to the current role.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn average_width(relid: pg_sys::Oid, attnum: pg_sys::AttrNumber) -> i32 {
    // SAFETY: catalog lookups of an existing relation's attribute, inside planning.
    unsafe {
        if let Some(prev) = PREV_WIDTH {
            let width = prev(relid, attnum);
            if width > 0 {
                return width;
            }
        }
        if attnum <= 0
            || pg_sys::check_enable_rls(relid, pg_sys::InvalidOid, true)
                != pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
        {
            return 0;
        }
        let (mut typid, mut typmod, mut collation) = (pg_sys::InvalidOid, -1, pg_sys::InvalidOid);
        pg_sys::get_atttypetypmodcoll(relid, attnum, &mut typid, &mut typmod, &mut collation);
        pg_sys::get_typavgwidth(typid, typmod)
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn relation_stats(
    root: *mut pg_sys::PlannerInfo,
    rte: *mut pg_sys::RangeTblEntry,
    attnum: pg_sys::AttrNumber,
    vardata: *mut pg_sys::VariableStatData,
) -> bool {
    // SAFETY: the planner's arguments, valid for the call; vardata is ours to fill.
    unsafe {
        // Another extension's hook that took control keeps it.
        if let Some(prev) = PREV_RELATION {
            if prev(root, rte, attnum, vardata) {
                return true;
            }
        }
        if (*rte).securityQuals.is_null() {
            return false;
        }
        supply(vardata, (*rte).relid, attnum, (*rte).inh);
        true
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn index_stats(
    root: *mut pg_sys::PlannerInfo,
    index: pg_sys::Oid,
    attnum: pg_sys::AttrNumber,
    vardata: *mut pg_sys::VariableStatData,
) -> bool {
    // SAFETY: as above; the index's table is looked up without erroring.
    unsafe {
        if let Some(prev) = PREV_INDEX {
            if prev(root, index, attnum, vardata) {
                return true;
            }
        }
        let table = pg_sys::IndexGetRelation(index, true);
        if table == pg_sys::InvalidOid
            || pg_sys::check_enable_rls(table, pg_sys::InvalidOid, true)
                != pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
        {
            return false;
        }
        supply(vardata, index, attnum, false);
        true
    }
}

/// Gives the planner a copy of the pg_statistic row of (`relation`, `attnum`, `inherited`), if
/// any, with the NULL fraction only ([`without_values`]), and releases the syscache's.
///
/// # Safety
/// `vardata` must be valid; inside planning.
unsafe fn supply(
    vardata: *mut pg_sys::VariableStatData,
    relation: pg_sys::Oid,
    attnum: pg_sys::AttrNumber,
    inherited: bool,
) {
    // SAFETY: as the function's contract says.
    unsafe {
        let tuple = pg_sys::SearchSysCache3(
            pg_sys::SysCacheIdentifier::STATRELATTINH as i32,
            pg_sys::Datum::from(relation),
            pg_sys::Datum::from(attnum),
            pg_sys::Datum::from(inherited),
        );
        if tuple.is_null() {
            (*vardata).statsTuple = std::ptr::null_mut();
            (*vardata).freefunc = None;
            return;
        }
        let kept = without_values(tuple);
        pg_sys::ReleaseSysCache(tuple);
        (*vardata).statsTuple = kept;
        (*vardata).freefunc = Some(free_tuple);
    }
}

/// A copy of pg_statistic row `tuple` with its NULL fraction only: its slots emptied, its
/// distinct count unknown (0) and its width 0 (the planner's defaults).
///
/// # Safety
/// `tuple` must be a valid pg_statistic tuple.
unsafe fn without_values(tuple: pg_sys::HeapTuple) -> pg_sys::HeapTuple {
    const NATTS: usize = pg_sys::Natts_pg_statistic as usize;
    // SAFETY: pg_statistic's descriptor, copied under a lock into the backend's lifetime
    // context; attribute numbers from the catalog's header.
    unsafe {
        if DESCRIPTOR.is_null() {
            let rel = pg_sys::table_open(pg_sys::StatisticRelationId, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
            DESCRIPTOR = pg_sys::CreateTupleDescCopy((*rel).rd_att);
            pg_sys::MemoryContextSwitchTo(old);
            pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        }
        let mut values = [pg_sys::Datum::from(0usize); NATTS];
        let mut nulls = [false; NATTS];
        let mut replace = [false; NATTS];
        for (attribute, value) in [
            (pg_sys::Anum_pg_statistic_stawidth, pg_sys::Datum::from(0i32)),
            (pg_sys::Anum_pg_statistic_stadistinct, pg_sys::Datum::from(0.0f32.to_bits())),
        ] {
            let i = attribute as usize - 1;
            values[i] = value;
            replace[i] = true;
        }
        for slot in 0..5u32 {
            // stakind, staop, stacoll zero; stanumbers, stavalues NULL.
            for (first, null) in [
                (pg_sys::Anum_pg_statistic_stakind1, false),
                (pg_sys::Anum_pg_statistic_staop1, false),
                (pg_sys::Anum_pg_statistic_stacoll1, false),
                (pg_sys::Anum_pg_statistic_stanumbers1, true),
                (pg_sys::Anum_pg_statistic_stavalues1, true),
            ] {
                let i = (first + slot - 1) as usize;
                values[i] = pg_sys::Datum::from(0usize);
                nulls[i] = null;
                replace[i] = true;
            }
        }
        pg_sys::heap_modify_tuple(tuple, DESCRIPTOR, values.as_mut_ptr(), nulls.as_mut_ptr(), replace.as_mut_ptr())
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn free_tuple(tuple: pg_sys::HeapTuple) {
    // SAFETY: the copy `supply` made, freed once by the planner.
    unsafe { pg_sys::heap_freetuple(tuple) }
}
