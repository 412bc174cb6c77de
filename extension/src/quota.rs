//! Plans, limits and quotas: the SQL API (`set_plan`, `set_quota`, `quota`, `quotas`) and the
//! row trigger that keeps `count` and `sum` resources within their limits exactly, using
//! [`crate::counters`].

use crate::catalog::{arg, count_latest, one, require_listed};
use crate::context::current_org;
use crate::counters::{self, Key, Reserved};
use crate::error::{required, TenancyError};
use crate::privilege::{as_catalog_owner, as_table_owner, caller_is_admin};
use crate::registry;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::Uuid;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

/// A resource as declared in `tenancy.resources`.
#[derive(Clone, Debug)]
pub struct Resource {
    pub id: i32,
    pub name: String,
    pub kind: String,
    pub label: String,
    pub unit: String,
}

/// Per-backend caches, dropped whenever the shared limits generation moves.
#[derive(Default)]
struct Cache {
    generation: u64,
    resources: HashMap<String, Resource>,
    limits: HashMap<(Uuid, i32), Option<i64>>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    let generation = counters::limits_generation();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.generation != generation {
            *c = Cache { generation, ..Cache::default() };
        }
        f(&mut c)
    })
}

/// Drops this backend's cached limits and registrations now and, at commit, everyone's.
pub fn invalidate_limits() {
    CACHE.with(|c| *c.borrow_mut() = Cache::default());
    registry::invalidate();
    counters::limits_changed();
}

/// The most a single row (of a `sum` quota or `[usage]` table) or call (`record_usage()`) may
/// count: 10^15, a petabyte in bytes. Counters and reports then stay far from a bigint's range.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// Raises 22003 unless `amount` is between 0 and [`MAX_AMOUNT`] (`what` names it).
pub fn require_amount(amount: i64, what: impl FnOnce() -> String) {
    if !(0..=MAX_AMOUNT).contains(&amount) {
        TenancyError::AmountOutOfRange { amount, what: what(), max: MAX_AMOUNT }.raise()
    }
}

/// An integer column of a row as a bigint (bigint, integer and smallint columns), or None when
/// NULL or missing.
pub fn integer_column(
    tuple: &pgrx::heap_tuple::PgHeapTuple<'_, pgrx::AllocatedByPostgres>,
    column: &str,
) -> Option<i64> {
    tuple
        .get_by_name::<i64>(column)
        .or_else(|_| tuple.get_by_name::<i32>(column).map(|v| v.map(i64::from)))
        .or_else(|_| tuple.get_by_name::<i16>(column).map(|v| v.map(i64::from)))
        .ok()
        .flatten()
}

/// Looks up a resource by name; raises 22023 listing the valid ones when unknown.
pub fn lookup_resource(name: &str) -> Resource {
    if let Some(r) = with_cache(|c| c.resources.get(name).cloned()) {
        return r;
    }
    let found = as_catalog_owner(|| {
        Spi::connect(|client| {
            let t = client.select(
                "SELECT id, name, kind, label, unit FROM tenancy.resources WHERE name = $1",
                Some(1),
                &[name.into()],
            )?;
            let Some(row) = t.into_iter().next() else { return Ok(None) };
            Ok::<_, pgrx::spi::Error>(Some(Resource {
                id: row.get::<i32>(1)?.unwrap_or_default(),
                name: row.get::<String>(2)?.unwrap_or_default(),
                kind: row.get::<String>(3)?.unwrap_or_default(),
                label: row.get::<String>(4)?.unwrap_or_default(),
                unit: row.get::<String>(5)?.unwrap_or_default(),
            }))
        })
        .unwrap_or_else(|e| pgrx::error!("pg_tenancy: catalog query failed: {e}"))
    });
    let Some(found) = found else {
        let valid: String =
            as_catalog_owner(|| one("SELECT string_agg(name, ', ' ORDER BY name) FROM tenancy.resources", &[]))
                .unwrap_or_default();
        TenancyError::UnknownResource { resource: name.to_string(), valid }.raise()
    };
    with_cache(|c| c.resources.insert(name.to_string(), found.clone()));
    found
}

/// The organization's limit for a resource: its override, else its plan's; None is unlimited.
pub fn limit(org: Uuid, resource: &Resource) -> Option<i64> {
    if let Some(l) = with_cache(|c| c.limits.get(&(org, resource.id)).copied()) {
        return l;
    }
    let l: Option<i64> = as_catalog_owner(|| one(&limit_sql(resource), &[org.into()]));
    with_cache(|c| c.limits.insert((org, resource.id), l));
    l
}

/// The effective limit of `resource` for the organization `$1` (a resource name is a validated
/// identifier, safe to inline). A project (an organization with a parent) counts against its
/// own override, else its organization's, else its organization's plan: the plan belongs to
/// the organization.
fn limit_sql(resource: &Resource) -> String {
    format!(
        "SELECT quota FROM (
             SELECT quota, 1 AS rank FROM tenancy.quota_overrides WHERE org_id = $1 AND resource = '{0}'
             UNION ALL
             SELECT q.quota, 2 FROM tenancy.organizations o
               JOIN tenancy.quota_overrides q ON q.org_id = o.parent_id AND q.resource = '{0}'
              WHERE o.id = $1
             UNION ALL
             SELECT pl.quota, 3 FROM tenancy.organizations o
               LEFT JOIN tenancy.organizations parent ON parent.id = o.parent_id
               JOIN tenancy.plan_limits pl ON pl.plan = coalesce(parent.plan, o.plan) AND pl.resource = '{0}'
              WHERE o.id = $1
         ) q ORDER BY rank LIMIT 1",
        resource.name
    )
}

/// The limit as everyone will see it from now on (latest snapshot), for the shared counters.
/// A transaction that changed limits itself reads its own view instead.
pub fn limit_now(org: Uuid, resource: &Resource) -> Option<i64> {
    if counters::changed_limits_here() {
        return limit(org, resource);
    }
    latest_i64(&limit_sql(resource), TenantParam::Uuid(org), false)
}

fn key(org: Uuid, resource: &Resource, relation: pg_sys::Oid) -> Key {
    Key::new(org, relation.to_u32(), resource.id, 0)
}

/// Runs `sql` (one bigint result, `$1` the organization) against every change other
/// transactions committed, but none of this transaction's own: counters rebuilt from it plus
/// this transaction's reservations are exact. `sql` reads pg_tenancy's own tables.
pub(crate) fn count_committed(sql: &str, org: Uuid) -> i64 {
    as_catalog_owner(|| latest_i64(sql, TenantParam::Uuid(org), true)).unwrap_or(0)
}

/// What a query over an application table compares its tenant column with (`$1`): the
/// organization's uuid, or its application key as text or as a bigint.
pub(crate) enum TenantParam {
    Uuid(Uuid),
    Text(String),
    Int(i64),
}

impl TenantParam {
    /// `$1` for organization `org` on tenant column `column` of `relation`. None when the
    /// organization has no key of the column's kind (no row of the table can be its).
    pub(crate) fn of(relation: pg_sys::Oid, column: &str, org: Uuid) -> Option<TenantParam> {
        match crate::key::ColumnKind::of(relation, column)? {
            crate::key::ColumnKind::Uuid => Some(TenantParam::Uuid(org)),
            crate::key::ColumnKind::Text => crate::key::key_of(&org).map(TenantParam::Text),
            crate::key::ColumnKind::Integer => crate::key::with_key(&org, |_, n| n).flatten().map(TenantParam::Int),
        }
    }

    fn typed_datum(self) -> (pg_sys::Oid, pg_sys::Datum) {
        match self {
            TenantParam::Uuid(org) => (pg_sys::UUIDOID, org.into_datum().expect("uuid datum")),
            TenantParam::Text(key) => (pg_sys::TEXTOID, key.into_datum().expect("text datum")),
            TenantParam::Int(n) => (pg_sys::INT8OID, n.into_datum().expect("bigint datum")),
        }
    }
}

/// [`count_committed`] over an application table, read as its owner in a security-restricted
/// operation ([`as_table_owner`]): planning and reading it may run code its owner wrote.
fn count_committed_in(relation: pg_sys::Oid, sql: &str, column: &str, org: Uuid) -> i64 {
    let Some(param) = TenantParam::of(relation, column, org) else { return 0 };
    as_table_owner(relation, || latest_i64(sql, param, true)).unwrap_or(0)
}

/// Runs `sql` (at most one bigint or numeric, `$1` the organization) with the latest snapshot, optionally
/// hiding this transaction's own changes. None: no row, or NULL. A value beyond a bigint's range
/// raises 22003. The caller chooses the rights it runs with.
fn latest_i64(sql: &str, param: TenantParam, hide_own: bool) -> Option<i64> {
    let sql = CString::new(sql).unwrap_or_else(|_| pgrx::error!("pg_tenancy: NUL in a generated query"));
    // SAFETY: standard SPI and snapshot calls. PushActiveSnapshot copies the latest snapshot,
    // so setting the copy's curcid to FirstCommandId hides this transaction's own inserts
    // (and shows rows it deleted) without affecting anything else; read-only SPI uses the
    // active snapshot as is. The snapshot is popped before returning.
    unsafe {
        pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
        if hide_own {
            (*pg_sys::GetActiveSnapshot()).curcid = pg_sys::FirstCommandId;
        }
        let value = Spi::connect(|_| {
            let (typ, value) = param.typed_datum();
            let mut types = [typ];
            let mut values = [value];
            let nulls = [b' ' as std::ffi::c_char];
            let rc = pg_sys::SPI_execute_with_args(
                sql.as_ptr(),
                1,
                types.as_mut_ptr(),
                values.as_mut_ptr(),
                nulls.as_ptr(),
                true,
                1,
            );
            if rc != pg_sys::SPI_OK_SELECT as i32 {
                pgrx::error!("pg_tenancy: a quota query failed (SPI code {rc})");
            }
            if pg_sys::SPI_processed == 0 {
                return None;
            }
            let table = pg_sys::SPI_tuptable;
            let mut is_null = false;
            let datum = pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, 1, &mut is_null);
            if pg_sys::SPI_gettypeid((*table).tupdesc, 1) == pg_sys::INT8OID {
                return i64::from_datum(datum, is_null);
            }
            let value = AnyNumeric::from_datum(datum, is_null)?;
            Some(i64::try_from(value.clone()).unwrap_or_else(|_| {
                TenancyError::AmountOutOfRange {
                    amount: i64::MAX,
                    what: format!("a counter rebuilt to {value}"),
                    max: i64::MAX,
                }
                .raise()
            }))
        });
        pg_sys::PopActiveSnapshot();
        value
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The query that rebuilds a counter for `resource` on `schema.table`: every name is quoted or
/// schema-qualified, so that it means the same under any search_path.
fn rebuild_sql(schema: &str, table: &str, tenant_column: &str, sum_column: Option<&str>) -> String {
    let what = match sum_column {
        Some(col) => format!("pg_catalog.sum({})::pg_catalog.numeric", quote_ident(col)),
        None => "pg_catalog.count(*)::pg_catalog.numeric".to_string(),
    };
    format!(
        "SELECT {what} FROM {}.{} WHERE {} OPERATOR(pg_catalog.=) $1",
        quote_ident(schema),
        quote_ident(table),
        quote_ident(tenant_column)
    )
}

/// `schema.table` of a relation, for the rebuild query.
fn relation_name(relation: pg_sys::Oid) -> (String, String) {
    as_catalog_owner(|| {
        Spi::connect(|client| {
            let t = client.select(
                "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                  WHERE c.oid OPERATOR(pg_catalog.=) $1",
                Some(1),
                &[relation.into()],
            )?;
            let row = t.first();
            Ok::<_, pgrx::spi::Error>((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
            ))
        })
        .unwrap_or_else(|e| pgrx::error!("pg_tenancy: {e}"))
    })
}

fn human_amount(amount: i64, unit: &str) -> String {
    if unit == "bytes" {
        const UNITS: [(&str, i64); 4] = [("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)];
        for (name, size) in UNITS {
            if amount >= size && amount % size == 0 {
                return format!("{} {name}", amount / size);
            }
        }
        return format!("{amount} bytes");
    }
    amount.to_string()
}

fn org_label(org: Uuid) -> String {
    let slug: Option<String> =
        as_catalog_owner(|| one("SELECT slug FROM tenancy.organizations WHERE id = $1", &[org.into()]));
    match slug {
        Some(s) => format!("{s} ({org})"),
        None => org.to_string(),
    }
}

/// Raises the quota error for `resource`: 53400 with limit, use and how to get more.
pub fn exceeded(org: Uuid, resource: &Resource, limit: i64, used: i64) -> ! {
    TenancyError::QuotaExceeded {
        label: resource.label.clone(),
        limit: human_amount(limit, &resource.unit),
        detail: format!(
            "Organization {} uses {} of {} for resource \"{}\".",
            org_label(org),
            human_amount(used, &resource.unit),
            human_amount(limit, &resource.unit),
            resource.name
        ),
    }
    .raise()
}

/// Reserves `amount` of a table-backed resource for `org`, raising the quota error if refused.
fn charge(org: Uuid, resource: &Resource, relation: pg_sys::Oid, amount: i64, rebuild: &dyn Fn() -> i64) {
    let limit = || limit_now(org, resource);
    match counters::reserve(key(org, resource, relation), amount, limit, rebuild) {
        Reserved::Ok => {}
        Reserved::OverLimit { used } => exceeded(org, resource, limit_now(org, resource).unwrap_or(0), used),
        Reserved::Overflow => TenancyError::CounterOutOfRange { resource: resource.name.clone() }.raise(),
    }
}

/// Row trigger (AFTER INSERT OR UPDATE OR DELETE, and TRUNCATE) that `tenancy.enable_quota()`
/// installs. Arguments: resource, tenant column, and the summed column ('' for row counts).
/// Refuses tables it was not registered on; on a partition, counts for the registered
/// partitioned table. New values of a summed column must be between 0 and [`MAX_AMOUNT`].
#[pg_trigger]
fn quota_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
    let relation = registry::require(registry::Kind::Quota, trigger);
    let args = trigger.extra_args()?;
    let (Some(name), Some(tenant_column)) = (args.first(), args.get(1)) else {
        pgrx::error!("tenancy.quota_trigger() needs (resource, tenant column[, summed column])");
    };
    let sum_column = args.get(2).filter(|c| !c.is_empty()).map(String::as_str);
    let resource = lookup_resource(name);
    if matches!(trigger.op()?, pgrx::PgTriggerOperation::Truncate) {
        counters::invalidate_relation(relation.to_u32());
        return Ok(None);
    }
    // Only a missing counter needs the rebuild query (and the table's name).
    let rebuild = |org: Uuid| {
        let (schema, table) = relation_name(relation);
        count_committed_in(relation, &rebuild_sql(&schema, &table, tenant_column, sum_column), tenant_column, org)
    };
    let charge = |org: Uuid, amount: i64| charge(org, &resource, relation, amount, &|| rebuild(org));
    let amount_of = |tuple: &pgrx::heap_tuple::PgHeapTuple<'_, pgrx::AllocatedByPostgres>| -> (Option<Uuid>, i64) {
        let org = crate::key::org_of_column(tuple, tenant_column);
        let amount = match sum_column {
            Some(col) => integer_column(tuple, col).unwrap_or(0),
            None => 1,
        };
        (org, amount)
    };
    let old = trigger.old().map(|t| amount_of(&t));
    let new = trigger.new().map(|t| amount_of(&t));
    if let (Some((Some(_), amount)), Some(col)) = (&new, sum_column) {
        require_amount(*amount, || format!("column \"{col}\" counted by quota \"{}\"", resource.name));
    }
    match (old, new) {
        (None, Some((Some(org), amount))) => charge(org, amount),
        (Some((Some(org), amount)), None) => charge(org, -amount),
        (Some((old_org, old_amount)), Some((new_org, new_amount))) => {
            if old_org == new_org {
                if let Some(org) = new_org {
                    if new_amount != old_amount {
                        let delta = new_amount.checked_sub(old_amount).unwrap_or_else(|| {
                            TenancyError::CounterOutOfRange { resource: resource.name.clone() }.raise()
                        });
                        charge(org, delta);
                    }
                }
            } else {
                if let Some(org) = old_org {
                    charge(org, -old_amount);
                }
                if let Some(org) = new_org {
                    charge(org, new_amount);
                }
            }
        }
        _ => {}
    }
    Ok(None)
}

/// Statement trigger on the limit and registration tables: drops cached limits and
/// registrations (everyone's, at commit). Only on pg_tenancy's own tables.
#[pg_trigger]
fn limits_changed_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
    if trigger.table_schema()? != "tenancy" {
        TenancyError::UnregisteredTrigger {
            function: "limits_changed_trigger",
            table: format!("{}.{}", trigger.table_schema()?, trigger.table_name()?),
            registrar: "pg_tenancy itself, on its own tables",
        }
        .raise()
    }
    invalidate_limits();
    Ok(None)
}

/// Raises 42501 "permission denied to {what}" unless the caller is a DBA.
pub(crate) fn require_admin(what: &str, hint: &str) {
    if !caller_is_admin() {
        TenancyError::PermissionDenied {
            message: format!("permission denied to {what}"),
            detail: None,
            hint: Some(hint.into()),
        }
        .raise()
    }
}

const ADMIN_HINT: &str = "Connect as a superuser or a member of tenancy_admin.";

/// Raises 42704 unless the organization exists (for DBAs, who may know).
pub(crate) fn require_org_exists(org: Uuid) {
    let exists: Option<bool> =
        as_catalog_owner(|| one("SELECT EXISTS (SELECT FROM tenancy.organizations WHERE id = $1)", &[org.into()]));
    if exists != Some(true) {
        TenancyError::UnknownOrganization { org_id: org.to_string() }.raise()
    }
}

/// Moves an organization to another plan (DBAs; e.g. the billing system). Takes effect for the
/// next statement.
#[pg_extern(volatile, parallel_unsafe)]
fn set_plan(org_id: Option<Uuid>, plan: Option<&str>) {
    require_admin("change an organization's plan", ADMIN_HINT);
    let org = required("org_id", org_id);
    let plan = required("plan", plan);
    as_catalog_owner(|| {
        require_org_exists(org);
        require_listed("plans", "name", plan, |valid| TenancyError::UnknownPlan { plan: plan.to_string(), valid });
        Spi::run_with_args(
            "UPDATE tenancy.organizations SET plan = $2, updated_at = now() WHERE id = $1",
            &[org.into(), plan.into()],
        )
        .unwrap_or_else(|e| pgrx::error!("pg_tenancy: {e}"));
    });
    invalidate_limits();
}

/// Sets a per-organization limit that overrides the plan's; NULL removes the override (DBAs).
#[pg_extern(volatile, parallel_unsafe)]
fn set_quota(org_id: Option<Uuid>, resource: Option<&str>, quota: Option<i64>) {
    require_admin("change an organization's quota", ADMIN_HINT);
    let org = required("org_id", org_id);
    let name = required("resource", resource);
    if quota.is_some_and(|q| q < 0) {
        TenancyError::InvalidArgument {
            param: "quota",
            reason: "must not be negative".into(),
            hint: Some("Use NULL to remove the override and fall back to the plan's limit.".into()),
        }
        .raise()
    }
    let r = lookup_resource(name);
    as_catalog_owner(|| {
        require_org_exists(org);
        let sql = match quota {
            Some(_) => {
                "INSERT INTO tenancy.quota_overrides (org_id, resource, quota) VALUES ($1, $2, $3)
                        ON CONFLICT (org_id, resource) DO UPDATE SET quota = excluded.quota"
            }
            None => "DELETE FROM tenancy.quota_overrides WHERE org_id = $1 AND resource = $2",
        };
        let args: Vec<DatumWithOid> = match quota {
            Some(q) => vec![org.into(), r.name.as_str().into(), q.into()],
            None => vec![org.into(), r.name.as_str().into()],
        };
        Spi::run_with_args(sql, &args).unwrap_or_else(|e| pgrx::error!("pg_tenancy: {e}"));
    });
    invalidate_limits();
}

/// Current use of a resource by an organization.
fn used_of(org: Uuid, r: &Resource) -> i64 {
    match r.kind.as_str() {
        // As committed now: add_member holds the organization's row lock while it counts, so the
        // limit holds in REPEATABLE READ too.
        "members" => as_catalog_owner(|| {
            count_latest("SELECT count(*) FROM tenancy.members WHERE org_id OPERATOR(pg_catalog.=) $1", &[arg(org)])
        }),
        "count" | "sum" => {
            let source: Option<(String, String, String, Option<String>, pg_sys::Oid)> = as_catalog_owner(|| {
                Spi::connect(|client| {
                    let t = client.select(
                        "SELECT n.nspname::text, c.relname::text, s.tenant_column, s.sum_column, c.oid
                           FROM tenancy.quota_sources s
                           JOIN pg_catalog.pg_class c ON c.oid = s.relation
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                          WHERE s.resource = $1",
                        Some(1),
                        &[r.name.as_str().into()],
                    )?;
                    let Some(row) = t.into_iter().next() else { return Ok(None) };
                    Ok::<_, pgrx::spi::Error>(Some((
                        row.get::<String>(1)?.unwrap_or_default(),
                        row.get::<String>(2)?.unwrap_or_default(),
                        row.get::<String>(3)?.unwrap_or_default(),
                        row.get::<String>(4)?,
                        row.get::<pg_sys::Oid>(5)?.unwrap_or(pg_sys::InvalidOid),
                    )))
                })
                .unwrap_or_else(|e| pgrx::error!("pg_tenancy: {e}"))
            });
            match source {
                Some((schema, table, tenant, sum, relation)) => {
                    let sql = rebuild_sql(&schema, &table, &tenant, sum.as_deref());
                    counters::used(key(org, r, relation), || count_committed_in(relation, &sql, &tenant, org))
                }
                None => 0,
            }
        }
        // Usage is summed as numeric; quota() shows at most a bigint's range.
        "metric" => as_catalog_owner(|| {
            one::<i64>(
                "SELECT least(tenancy.usage($1, $2), 9223372036854775807)::pg_catalog.int8",
                &[org.into(), r.name.as_str().into()],
            )
            .unwrap_or(0)
        }),
        _ => 0,
    }
}

/// The organization a caller may read quotas of: any for DBAs, else only the context's (or its
/// project's, in a project context).
fn readable_org(org_id: Option<Uuid>) -> Uuid {
    let org = required("org_id", org_id);
    if caller_is_admin() {
        require_org_exists(org);
        return org;
    }
    if current_org() != Some(org) && crate::context::current_project_id() != Some(org) {
        TenancyError::PermissionDenied {
            message: format!("permission denied to read the quotas of organization {org}"),
            detail: None,
            hint: Some("Set a context for that organization (or project) first.".into()),
        }
        .raise()
    }
    org
}

fn quota_row(org: Uuid, r: &Resource) -> (String, Option<i64>, i64, Option<i64>) {
    let l = limit(org, r);
    let used = used_of(org, r);
    (r.name.clone(), l, used, l.map(|l| (l - used).max(0)))
}

/// An organization's limit, use and what remains for one resource (NULL limit: unlimited).
#[pg_extern(volatile, parallel_unsafe)]
fn quota(
    org_id: Option<Uuid>,
    resource: Option<&str>,
) -> TableIterator<
    'static,
    (name!(resource, String), name!(quota, Option<i64>), name!(used, i64), name!(remaining, Option<i64>)),
> {
    let org = readable_org(org_id);
    let name = required("resource", resource);
    let r = lookup_resource(name);
    TableIterator::new(std::iter::once(quota_row(org, &r)))
}

/// [`quota`] for every resource, by name.
#[pg_extern(volatile, parallel_unsafe)]
fn quotas(
    org_id: Option<Uuid>,
) -> TableIterator<
    'static,
    (name!(resource, String), name!(quota, Option<i64>), name!(used, i64), name!(remaining, Option<i64>)),
> {
    let org = readable_org(org_id);
    let names: Vec<String> = as_catalog_owner(|| {
        Spi::connect(|client| {
            client
                .select("SELECT name FROM tenancy.resources ORDER BY name", None, &[])?
                .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|e| pgrx::error!("pg_tenancy: {e}"))
    });
    let rows: Vec<_> = names.iter().map(|n| quota_row(org, &lookup_resource(n))).collect();
    TableIterator::new(rows)
}

/// Checks the `members` resource before a member is added (caller holds the org row lock).
pub fn check_members(org: Uuid) {
    let r = lookup_resource("users");
    if let Some(l) = limit(org, &r) {
        let used = used_of(org, &r);
        if used + 1 > l {
            exceeded(org, &r, l, used)
        }
    }
}

#[cfg(test)]
mod unit {
    #[test]
    fn byte_amounts_read_like_plans() {
        assert_eq!(super::human_amount(1 << 30, "bytes"), "1 GB");
        assert_eq!(super::human_amount(100 * (1 << 30), "bytes"), "100 GB");
        assert_eq!(super::human_amount(1500, "bytes"), "1500 bytes");
        assert_eq!(super::human_amount(10, ""), "10");
    }
}
