//! Which application tables pg_tenancy's triggers may work on: those a superuser registered
//! through `tenancy.enable_quota()`, `enable_usage()` or `enable_sharing()` (what `tenancy apply`
//! runs). Every trigger function checks its table here first, so that attaching one to a table
//! of one's own (a temporary table, say) to count, meter or probe another organization is
//! refused, even by a role that was somehow granted EXECUTE on it.
//!
//! Answers are cached per backend, by trigger, and dropped when the registrations change
//! (`tenancy.limits_changed_trigger()` on the registration tables moves the generation).

use crate::catalog::one;
use crate::counters;
use crate::error::TenancyError;
use crate::privilege::as_catalog_owner;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::HashMap;

/// A trigger's registration: the registered table (the partitioned table, for a partition's
/// cloned trigger), or none.
type Registered = Option<pg_sys::Oid>;

#[derive(Default)]
struct Cache {
    generation: u64,
    by_trigger: HashMap<pg_sys::Oid, Registered>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Drops this backend's cached registrations now (other backends drop theirs at commit).
pub fn invalidate() {
    CACHE.with(|c| *c.borrow_mut() = Cache::default());
}

/// What a trigger function is registered by.
#[derive(Clone, Copy)]
pub enum Kind {
    /// `tenancy.quota_trigger(resource, tenant column, summed column or '')`.
    Quota,
    /// `tenancy.usage_trigger(metric, tenant column, amount column or '')`.
    Usage,
    /// `tenancy.protect_shared_row(tenant column, id column, visibility column or '')`.
    Sharing,
    /// `tenancy.forget_shares(tenant column, id column)`.
    Forget,
}

impl Kind {
    fn function(self) -> &'static str {
        match self {
            Kind::Quota => "quota_trigger",
            Kind::Usage => "usage_trigger",
            Kind::Sharing => "protect_shared_row",
            Kind::Forget => "forget_shares",
        }
    }

    fn registrar(self) -> &'static str {
        match self {
            Kind::Quota => "tenancy.enable_quota()",
            Kind::Usage => "tenancy.enable_usage()",
            Kind::Sharing | Kind::Forget => "tenancy.enable_sharing()",
        }
    }

    /// The registrations matching the trigger's arguments `$2`, `$3`, `$4` ('' for none);
    /// [`require`] narrows them to the trigger's table (`$1`) or its partition ancestors.
    fn matching(self) -> &'static str {
        match self {
            Kind::Quota => {
                "SELECT s.relation::pg_catalog.oid FROM tenancy.quota_sources s
                  WHERE s.resource OPERATOR(pg_catalog.=) $2 AND s.tenant_column OPERATOR(pg_catalog.=) $3
                    AND coalesce(s.sum_column, '') OPERATOR(pg_catalog.=) $4"
            }
            Kind::Usage => {
                "SELECT s.relation::pg_catalog.oid FROM tenancy.usage_sources s
                  WHERE s.metric OPERATOR(pg_catalog.=) $2 AND s.tenant_column OPERATOR(pg_catalog.=) $3
                    AND coalesce(s.amount_column, '') OPERATOR(pg_catalog.=) $4"
            }
            Kind::Forget => {
                "SELECT s.relation::pg_catalog.oid FROM tenancy.shareable_tables s
                  WHERE s.tenant_column OPERATOR(pg_catalog.=) $2 AND s.id_column OPERATOR(pg_catalog.=) $3
                    AND $4 OPERATOR(pg_catalog.=) ''"
            }
            Kind::Sharing => {
                "SELECT s.relation::pg_catalog.oid FROM tenancy.shareable_tables s
                  WHERE s.tenant_column OPERATOR(pg_catalog.=) $2 AND s.id_column OPERATOR(pg_catalog.=) $3
                    AND coalesce(s.visibility_column, '') OPERATOR(pg_catalog.=) $4"
            }
        }
    }
}

/// The table `trigger` (a trigger of function `kind`, with its three arguments) was registered
/// for; raises 42501 for a table no superuser registered it on.
pub fn require(kind: Kind, trigger: &pgrx::PgTrigger<'_>) -> pg_sys::Oid {
    // SAFETY: the trigger manager passes valid trigger data with a trigger and a relation.
    let (tgoid, relid) = unsafe {
        let data = trigger.trigger_data();
        ((*data.tg_trigger).tgoid, (*data.tg_relation).rd_id)
    };
    let generation = counters::limits_generation();
    let cached = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.generation != generation {
            *c = Cache { generation, ..Cache::default() };
        }
        c.by_trigger.get(&tgoid).copied()
    });
    let registered = cached.unwrap_or_else(|| {
        // The registered table among the trigger's table (`$1`) and its partition ancestors.
        let sql = format!(
            "{} AND s.relation::pg_catalog.oid OPERATOR(pg_catalog.=) ANY (ARRAY[$1] OPERATOR(pg_catalog.||)
                 ARRAY(SELECT a.relid::pg_catalog.oid FROM pg_catalog.pg_partition_ancestors($1::pg_catalog.regclass) a))",
            kind.matching()
        );
        let args = trigger.extra_args().unwrap_or_default();
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        let found: Registered = as_catalog_owner(|| {
            one::<pg_sys::Oid>(
                &sql,
                &[relid.into(), arg(0).as_str().into(), arg(1).as_str().into(), arg(2).as_str().into()],
            )
        });
        CACHE.with(|c| c.borrow_mut().by_trigger.insert(tgoid, found));
        found
    });
    registered.unwrap_or_else(|| {
        let schema = trigger.table_schema().unwrap_or_default();
        let table = trigger.table_name().unwrap_or_default();
        TenancyError::UnregisteredTrigger {
            function: kind.function(),
            table: format!("{schema}.{table}"),
            registrar: kind.registrar(),
        }
        .raise()
    })
}
