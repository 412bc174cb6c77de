//! Active users seen in read-only transactions. A read-only transaction cannot insert into
//! `tenancy.active_users`, and turning every read into a write would cost every reader; so the
//! user (at most once per backend, organization and month) goes into a queue in shared memory,
//! and a short-lived background worker connected to that database inserts what is queued and
//! exits. A worker runs for at most one database at a time; a backend that queues an entry
//! starts one when none runs.
//!
//! The queue is not durable: what is queued when the server stops is not counted (the worker
//! drains it within milliseconds of its arrival).

use crate::error::TenancyError;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};

/// Seconds after which a worker's claim is taken to have failed.
const STALE: i64 = 10;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Entries the queue holds.
const CAPACITY: usize = 1024;
const SHMEM_NAME: &CStr = c"pg_tenancy active users queue";

#[repr(C)]
#[derive(Clone, Copy)]
struct Entry {
    db: u32,
    org: [u8; 16],
    /// `YYYY-MM-01`.
    period: [u8; 10],
    len: u16,
    user: [u8; crate::session::MAX_USER_ID],
}

#[repr(C)]
struct Queue {
    /// A spinlock over `len` and `entries`: held only to copy entries in or out.
    lock: AtomicBool,
    /// The database a flushing worker runs for (0: none), and since when (Unix seconds): a
    /// worker that could not even connect (its database dropped meanwhile) never clears it, so a
    /// claim older than [`STALE`] seconds is taken over.
    flusher: AtomicU32,
    since: AtomicI64,
    len: usize,
    entries: [Entry; CAPACITY],
}

static mut QUEUE: *mut Queue = std::ptr::null_mut();

pub fn init() {
    crate::shmem::register(shmem_request, shmem_startup);
}

unsafe fn shmem_request() {
    // SAFETY: called by the postmaster in its shmem request phase.
    unsafe { pg_sys::RequestAddinShmemSpace(std::mem::size_of::<Queue>()) };
}

unsafe fn shmem_startup() {
    // SAFETY: the region is sized as requested; zeroed is an empty queue with no flusher.
    unsafe { QUEUE = crate::shmem::attach(SHMEM_NAME, std::mem::size_of::<Queue>(), |_| {}) as *mut Queue };
}

fn queue() -> &'static mut Queue {
    // SAFETY: set once by the startup hook before any backend runs SQL; `len` and `entries`
    // are touched only under `lock`.
    unsafe { QUEUE.as_mut().unwrap_or_else(|| TenancyError::NotPreloaded.raise()) }
}

fn with_lock<R>(f: impl FnOnce(&mut Queue) -> R) -> R {
    let q = queue();
    while q.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::hint::spin_loop();
    }
    // Nothing in `f` can raise an error: it copies bytes.
    let result = f(q);
    q.lock.store(false, Ordering::Release);
    result
}

/// Queues `user` as active in `org` in the month starting `period` (`YYYY-MM-01`), for this
/// database, and makes sure a worker will insert it. Returns false when the queue is full.
pub fn enqueue(org: &[u8; 16], user: &str, period: &str) -> bool {
    // SAFETY: reads backend-local state.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let mut entry =
        Entry { db, org: *org, period: [0; 10], len: user.len() as u16, user: [0; crate::session::MAX_USER_ID] };
    entry.period.copy_from_slice(&period.as_bytes()[..10]);
    entry.user[..user.len()].copy_from_slice(user.as_bytes());
    let queued = with_lock(|q| {
        // Queued already (by another backend, or this one before it reconnected).
        let same = |e: &Entry| {
            e.db == entry.db
                && e.org == entry.org
                && e.period == entry.period
                && e.len == entry.len
                && e.user[..user.len()] == entry.user[..user.len()]
        };
        if q.entries[..q.len].iter().any(same) {
            return true;
        }
        if q.len == CAPACITY {
            return false;
        }
        q.entries[q.len] = entry;
        q.len += 1;
        true
    });
    start_flusher(db);
    queued
}

/// Starts a worker for `db` unless one runs (for any database).
fn start_flusher(db: u32) {
    let q = queue();
    if let Err(running) = q.flusher.compare_exchange(0, db, Ordering::AcqRel, Ordering::Acquire) {
        let stale = now() - q.since.load(Ordering::Acquire) > STALE;
        if !stale || q.flusher.compare_exchange(running, db, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return;
        }
    }
    q.since.store(now(), Ordering::Release);
    let started = BackgroundWorkerBuilder::new("pg_tenancy active users")
        .set_type("pg_tenancy active users")
        .set_library("pg_tenancy")
        .set_function("pg_tenancy_active_users_flusher")
        .set_argument(Some(pg_sys::Datum::from(db)))
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic();
    if started.is_err() {
        // No worker slot free: the next read-only context tries again.
        q.flusher.store(0, Ordering::Release);
    }
}

/// Takes up to `max` entries of database `db` out of the queue.
fn take(db: u32, max: usize) -> Vec<Entry> {
    with_lock(|q| {
        let mut taken = Vec::new();
        let mut kept = 0;
        for i in 0..q.len {
            if q.entries[i].db == db && taken.len() < max {
                taken.push(q.entries[i]);
            } else {
                q.entries[kept] = q.entries[i];
                kept += 1;
            }
        }
        q.len = kept;
        taken
    })
}

fn pending(db: u32) -> bool {
    with_lock(|q| q.entries[..q.len].iter().any(|e| e.db == db))
}

/// The worker: inserts the queued active users of its database, then exits.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_tenancy_active_users_flusher(arg: pg_sys::Datum) {
    let db = arg.value() as u32;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    let q = queue();
    // However the worker ends (an error unwinds through here too), another may start.
    struct Done(u32);
    impl Drop for Done {
        fn drop(&mut self) {
            let _ = queue().flusher.compare_exchange(self.0, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }
    let _done = Done(db);
    loop {
        q.since.store(now(), Ordering::Release);
        let batch = take(db, 256);
        if batch.is_empty() {
            q.flusher.store(0, Ordering::Release);
            // An entry queued after the take, by a backend that saw this worker running: go on
            // if it can be taken back.
            if pending(db) && q.flusher.compare_exchange(0, db, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                continue;
            }
            return;
        }
        let orgs: Vec<pgrx::Uuid> = batch.iter().map(|e| pgrx::Uuid::from_bytes(e.org)).collect();
        let periods: Vec<String> = batch.iter().map(|e| String::from_utf8_lossy(&e.period).into_owned()).collect();
        let users: Vec<String> =
            batch.iter().map(|e| String::from_utf8_lossy(&e.user[..usize::from(e.len)]).into_owned()).collect();
        BackgroundWorker::transaction(|| {
            Spi::run_with_args(
                "INSERT INTO tenancy.active_users (org_id, period, user_id)
                 SELECT o, p::pg_catalog.date, u FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.uuid[]), pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[])) AS t(o, p, u)
                  WHERE NOT EXISTS (SELECT FROM tenancy.active_users a
                                     WHERE a.org_id = t.o AND a.period = t.p::pg_catalog.date AND a.user_id = t.u)
                    -- An organization deleted since: its users are not counted, and the rest of
                    -- the batch is not lost to a foreign key violation.
                    AND EXISTS (SELECT FROM tenancy.organizations o WHERE o.id = t.o)",
                &[orgs.into(), periods.into(), users.into()],
            )
        })
        .unwrap_or_else(|e| pgrx::error!("pg_tenancy: recording active users failed: {e}"));
        if BackgroundWorker::sigterm_received() {
            return;
        }
    }
}
