//! Usage metering: `record_usage()` appends a WAL-logged row (transactional and durable) and,
//! for metrics the plan limits per month, first reserves the amount on an exact shared-memory
//! counter ([`crate::counters`]), so that concurrent callers can never pass the limit together.
//! Active users are recorded when a context is set.

use crate::context::current_org;
use crate::counters::{self, Key, Reserved};
use crate::error::TenancyError;
use crate::privilege::{run_kept, KeptStatement};
use crate::quota::{self, Resource};
use crate::registry;
use pgrx::prelude::*;
use pgrx::Uuid;
use std::cell::RefCell;

/// A calendar month in UTC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    /// The month of the current transaction's start (what `now()` returns).
    pub fn current() -> Month {
        // SAFETY: reads the transaction start timestamp of this backend.
        let ts = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
        // PostgreSQL timestamps count microseconds from 2000-01-01 UTC, which is day 10957 of
        // the Unix epoch.
        Month::of_unix_day(ts.div_euclid(86_400_000_000) + 10_957)
    }

    fn of_unix_day(days: i64) -> Month {
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Month { year, month }
    }

    fn index(self) -> i32 {
        self.year * 12 + self.month as i32 - 1
    }

    fn next(self) -> Month {
        if self.month == 12 {
            Month { year: self.year + 1, month: 1 }
        } else {
            Month { month: self.month + 1, ..self }
        }
    }

    /// The first day as a PostgreSQL date: days since 2000-01-01.
    fn first_day_date(self) -> i32 {
        // Howard Hinnant's days_from_civil, for day 1.
        let (y, m) = (i64::from(self.year) - i64::from(self.month <= 2), i64::from(self.month));
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        (era * 146_097 + doe - 719_468 - 10_957) as i32
    }

    /// `YYYY-MM-01`.
    pub fn first_day(self) -> String {
        format!("{:04}-{:02}-01", self.year, self.month)
    }
}

thread_local! {
    static INSERT: KeptStatement = const { RefCell::new(None) };
    static ACTIVE_INSERT: KeptStatement = const { RefCell::new(None) };
    /// (org, user, month) already recorded as active by this backend.
    static ACTIVE_SEEN: RefCell<foldhash::HashSet<(Uuid, String, Month)>> = RefCell::new(foldhash::HashSet::default());
}

fn metric(name: &str) -> Resource {
    let r = quota::lookup_resource(name);
    if r.kind != "metric" {
        TenancyError::InvalidArgument {
            param: "metric",
            reason: format!("resource \"{name}\" is a {} quota, not a metered metric", r.kind),
            hint: Some("Metered metrics are the resources of kind 'metric' in tenancy.resources.".into()),
        }
        .raise()
    }
    if r.name == "active_users" {
        TenancyError::InvalidArgument {
            param: "metric",
            reason: "active_users is counted automatically when a context is set".into(),
            hint: None,
        }
        .raise()
    }
    r
}

fn insert_event(org: Uuid, metric: &str, amount: i64) {
    run_kept(
        &INSERT,
        "INSERT INTO tenancy.usage_events (org_id, metric, amount) VALUES ($1, $2, $3)",
        &[pg_sys::UUIDOID, pg_sys::TEXTOID, pg_sys::INT8OID],
        "recording usage",
        |client, stmt| client.update(stmt, None, &[org.into(), metric.into(), amount.into()]).map(|_| ()),
    )
}

/// Records `amount` of `metric` for `org`: refused past the month's limit (an error, or false
/// when `raise` is false), else appended.
fn record(org: Uuid, name: &str, amount: i64, raise: bool) -> bool {
    if amount <= 0 {
        TenancyError::InvalidArgument { param: "amount", reason: "must be positive".into(), hint: None }.raise()
    }
    quota::require_amount(amount, || format!("usage of metric \"{name}\""));
    let r = metric(name);
    if quota::limit(org, &r).is_some() {
        let month = Month::current();
        let key = Key::new(org, 0, r.id, month.index());
        // Only a missing counter needs this query. The metric name is a validated identifier
        // ([a-z][a-z0-9_]*), safe to inline.
        let rebuild = || {
            let sql = format!(
                "SELECT pg_catalog.sum(amount)::pg_catalog.numeric FROM tenancy.usage_events
                  WHERE org_id OPERATOR(pg_catalog.=) $1 AND metric OPERATOR(pg_catalog.=) '{}'
                    AND recorded_at OPERATOR(pg_catalog.>=) '{} 00:00:00+00'::pg_catalog.timestamptz
                    AND recorded_at OPERATOR(pg_catalog.<) '{} 00:00:00+00'::pg_catalog.timestamptz",
                r.name,
                month.first_day(),
                month.next().first_day()
            );
            quota::count_committed(&sql, org)
        };
        let limit = || quota::limit_now(org, &r);
        match counters::reserve(key, amount, limit, rebuild) {
            Reserved::Ok => {}
            Reserved::OverLimit { used } if raise => {
                quota::exceeded(org, &r, quota::limit_now(org, &r).unwrap_or(0), used)
            }
            Reserved::OverLimit { .. } => return false,
            Reserved::Overflow => TenancyError::CounterOutOfRange { resource: r.name.clone() }.raise(),
        }
    }
    insert_event(org, &r.name, amount);
    true
}

fn context_org() -> Uuid {
    current_org().unwrap_or_else(|| TenancyError::NoContext { action: "recording usage".into() }.raise())
}

/// Records usage of a metric (`api_calls`, `bandwidth_bytes`, `compute_ms`, `storage_bytes`, ...)
/// for the current organization. Past the plan's monthly limit: SQLSTATE 53400.
#[pg_extern(volatile, parallel_unsafe)]
fn record_usage(metric: &str, amount: default!(i64, 1)) {
    record(context_org(), metric, amount, true);
}

/// Like `record_usage`, but returns false instead of raising when the limit would be passed.
#[pg_extern(volatile, parallel_unsafe)]
fn try_record_usage(metric: &str, amount: default!(i64, 1)) -> bool {
    record(context_org(), metric, amount, false)
}

/// `record_usage` for a named organization, for DBAs and back-office jobs.
#[pg_extern(volatile, parallel_unsafe)]
fn record_usage_for(org_id: Uuid, metric: &str, amount: default!(i64, 1)) {
    quota::require_admin(
        "record usage for another organization",
        "Use tenancy.record_usage() under a context, or connect as a tenancy_admin.",
    );
    quota::require_org_exists(org_id);
    record(org_id, metric, amount, true);
}

/// Row trigger installed by `tenancy.enable_usage()` (the `[usage]` section of the policy
/// files), with (metric, tenant column, amount column or ''): for the row's organization, inside
/// the writing statement (no extra round trip), it records one unit per inserted row, or the
/// row's amount; with an amount column it also fires on UPDATE of it (`INSERT ... ON CONFLICT
/// DO UPDATE` included) and records what an update adds (an amount lowered is not given back:
/// usage is consumption). Past the plan's monthly limit the row is refused with 53400. Refuses
/// tables it was not registered on; amounts must be between 0 and 10^15.
#[pg_trigger]
fn usage_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
    registry::require(registry::Kind::Usage, trigger);
    let args = trigger.extra_args()?;
    let (Some(name), Some(tenant_column)) = (args.first(), args.get(1)) else {
        pgrx::error!("tenancy.usage_trigger() needs (metric, tenant column[, amount column])");
    };
    let column = args.get(2).filter(|c| !c.is_empty());
    let Some(row) = trigger.new() else { return Ok(None) };
    let Some(org) = crate::key::org_of_column(&row, tenant_column) else { return Ok(None) };
    let amount_of = |t: &pgrx::heap_tuple::PgHeapTuple<'_, pgrx::AllocatedByPostgres>| match column {
        Some(c) => quota::integer_column(t, c).unwrap_or(0),
        None => 1,
    };
    let amount = amount_of(&row);
    if let Some(c) = column {
        quota::require_amount(amount, || format!("column \"{c}\" metered as \"{name}\""));
    }
    let metered = match trigger.old() {
        // An update meters what it adds, for the row's organization (a row moved to another
        // organization counts there in full).
        Some(old) if crate::key::org_of_column(&old, tenant_column) == Some(org) => {
            amount.saturating_sub(amount_of(&old)).max(0)
        }
        _ => amount,
    };
    if metered > 0 {
        record(org, name, metered, true);
    }
    Ok(None)
}

/// Notes that `user` acted for `org` this month (the `active_users` metric). Skipped where
/// nothing may be written: read-only transactions and standbys.
pub fn note_active_user(org: Uuid, user: &str) {
    // SAFETY: reads backend-local state (a standby records nothing: it cannot write).
    if unsafe { pg_sys::RecoveryInProgress() } {
        return;
    }
    let month = Month::current();
    let entry = (org, user.to_string(), month);
    if ACTIVE_SEEN.with(|s| s.borrow().contains(&entry)) {
        return;
    }
    // Recorded already (by another backend, or this one before it reconnected): a new
    // connection's first context per user is then one index probe, with no statement to run.
    if recorded(org, user, month) {
        ACTIVE_SEEN.with(|s| s.borrow_mut().insert(entry));
        return;
    }
    // SAFETY: reads backend-local transaction state.
    if unsafe { pg_sys::XactReadOnly } {
        // A read-only transaction cannot insert: a background worker does ([`crate::active`]).
        if crate::active::enqueue(org.as_bytes(), user, &month.first_day()) {
            ACTIVE_SEEN.with(|s| s.borrow_mut().insert(entry));
        } else {
            pgrx::log!("pg_tenancy: the queue of active users in read-only transactions is full; user not counted");
        }
        return;
    }
    // A kept statement: a pooled connection meets each of its organizations once a month. No
    // unique index to conflict with, so concurrent sessions of one user never wait for each other.
    run_kept(
        &ACTIVE_INSERT,
        // A row another backend wrote already is found by its index and not written again: a
        // new connection's first context per user is then a read, not a write (and its commit
        // no WAL flush).
        "INSERT INTO tenancy.active_users (org_id, period, user_id)
         SELECT $1, $2::pg_catalog.date, $3
          WHERE NOT EXISTS (SELECT FROM tenancy.active_users a
                             WHERE a.org_id = $1 AND a.period = $2::pg_catalog.date AND a.user_id = $3)",
        &[pg_sys::UUIDOID, pg_sys::TEXTOID, pg_sys::TEXTOID],
        "recording an active user",
        |client, stmt| {
            client.update(stmt, None, &[org.into(), month.first_day().as_str().into(), user.into()]).map(|_| ())
        },
    );
    ACTIVE_SEEN.with(|s| s.borrow_mut().insert(entry));
    // If this transaction rolls back, so does the row: forget it then. A savepoint rolled back
    // takes the row too ([`forget_on_subtransaction_abort`]).
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, || ACTIVE_SEEN.with(|s| s.borrow_mut().clear()));
    SUBXACT_CALLBACK.with(|registered| {
        if !registered.replace(true) {
            // SAFETY: registered once per backend; the callback only clears a backend-local set.
            unsafe { pg_sys::RegisterSubXactCallback(Some(forget_on_subtransaction_abort), std::ptr::null_mut()) };
        }
    });
}

thread_local! {
    static SUBXACT_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A rolled-back subtransaction may have taken an active user's row with it: this backend
/// forgets what it recorded (the next context probes the index again).
#[pg_guard]
unsafe extern "C-unwind" fn forget_on_subtransaction_abort(
    event: pg_sys::SubXactEvent::Type,
    _sub: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        ACTIVE_SEEN.with(|s| s.borrow_mut().clear());
    }
}

/// Whether `tenancy.active_users` holds (org, month, user), as committed now or written by this
/// transaction: read through its index directly, as [`crate::membership`] reads its tables.
fn recorded(org: Uuid, user: &str, month: Month) -> bool {
    use crate::membership::{column, equal_key, Table};
    let c = crate::membership::catalog();
    crate::membership::with_latest_snapshot(|snapshot| {
        let table = Table::open(c.active_users);
        let (a_org, a_period, a_user) = (table.attnum(c"org_id"), table.attnum(c"period"), table.attnum(c"user_id"));
        let mut keys = [
            equal_key(a_org, pg_sys::Oid::from(pg_sys::F_UUID_EQ), org.into_datum().expect("uuid datum")),
            equal_key(a_period, pg_sys::Oid::from(pg_sys::F_DATE_EQ), pg_sys::Datum::from(month.first_day_date())),
            equal_key(a_user, pg_sys::Oid::from(pg_sys::F_TEXTEQ), user.into_datum().expect("text datum")),
        ];
        let mut found = false;
        // SAFETY: the snapshot is registered; each key holds a datum of its column's type.
        unsafe {
            table.scan(c.active_users_idx, snapshot, &mut keys, |t, d| {
                // The index holds every key column; the heap tuple confirms the row is visible.
                found = column::<String>(t, d, a_user).as_deref() == Some(user);
                !found
            })
        };
        found
    })
}

#[cfg(test)]
mod unit {
    use super::Month;

    #[test]
    fn unix_days_map_to_calendar_months() {
        assert_eq!(Month::of_unix_day(0), Month { year: 1970, month: 1 });
        assert_eq!(Month::of_unix_day(10_957), Month { year: 2000, month: 1 });
        assert_eq!(Month::of_unix_day(11_016), Month { year: 2000, month: 2 }); // 2000-02-29 is day 11016
        assert_eq!(Month::of_unix_day(20_780), Month { year: 2026, month: 11 }); // 2026-11-23
        assert_eq!(Month { year: 2026, month: 12 }.next(), Month { year: 2027, month: 1 });
        assert_eq!(Month { year: 2026, month: 3 }.first_day(), "2026-03-01");
        assert_eq!(Month { year: 2000, month: 1 }.first_day_date(), 0);
        assert_eq!(Month { year: 2000, month: 3 }.first_day_date(), 60);
        assert_eq!(Month { year: 1999, month: 12 }.first_day_date(), -31);
        assert_eq!(Month { year: 2026, month: 12 }.first_day_date(), 20_780 + 8 - 10_957);
    }
}
