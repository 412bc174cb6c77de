//! Ended shares, and transactions that began before they ended.
//!
//! Compiled policies read `tenancy.shares` with the statement's snapshot. In READ COMMITTED
//! every statement takes a new one, so an ended share stops at the next statement. A REPEATABLE
//! READ or SERIALIZABLE transaction keeps the snapshot it began with, and would go on reading
//! (and writing) a row whose share ended after it began. So every share that ends (deleted, or
//! its rights narrowed) records its transaction in shared memory under the organization that had
//! received it, before it commits; and in such a transaction the context readers fail with
//! 40001 (retry) once a revocation concerning their organization has committed that their
//! snapshot does not see.
//!
//! Each organization hashes to one of [`BUCKETS`] buckets of [`WAYS`] transaction ids. A full
//! bucket drops an entry that every snapshot sees (or that aborted); failing that, its oldest,
//! whose id it keeps as `evicted`: a transaction whose snapshot may not see that one fails too.
//! Organizations sharing a bucket only cost a retry.

use crate::error::TenancyError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};

pub const BUCKETS: usize = 1024;
pub const WAYS: usize = 8;
const SHMEM_NAME: &CStr = c"pg_tenancy revoked shares";

/// Full transaction ids (0: none) of the transactions that ended a share.
#[repr(C)]
struct Bucket {
    xids: [AtomicU64; WAYS],
    /// The newest id dropped while some snapshot might not have seen it (0: none).
    evicted: AtomicU64,
}

#[repr(C)]
struct Revocations {
    buckets: [Bucket; BUCKETS],
}

// Set once per process by the startup step (postmaster, then inherited by backends).
static mut REVOCATIONS: *const Revocations = std::ptr::null();

pub fn init() {
    crate::shmem::register(shmem_request, shmem_startup);
}

unsafe fn shmem_request() {
    // SAFETY: called by the postmaster in its shmem request phase.
    unsafe { pg_sys::RequestAddinShmemSpace(std::mem::size_of::<Revocations>()) };
}

unsafe fn shmem_startup() {
    // SAFETY: called by every process at startup; zeroed memory is the empty state.
    unsafe {
        REVOCATIONS =
            crate::shmem::attach(SHMEM_NAME, std::mem::size_of::<Revocations>(), |_| {}) as *const Revocations;
    }
}

fn bucket(org: &[u8; 16]) -> &'static Bucket {
    // SAFETY: written once by the startup step before any backend runs SQL.
    let all = unsafe { REVOCATIONS.as_ref().unwrap_or_else(|| TenancyError::NotPreloaded.raise()) };
    // FNV-1a, as for membership generations.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in org {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    &all.buckets[(h % BUCKETS as u64) as usize]
}

/// The full id of `xid`, a transaction id no older than 2^31 transactions before `next`.
fn widen(xid: pg_sys::TransactionId, next: u64) -> u64 {
    next.wrapping_sub(u64::from((next as u32).wrapping_sub(xid.into_inner())))
}

thread_local! {
    /// (this transaction's full id, the organizations it recorded already).
    static RECORDED: RefCell<(u64, Vec<[u8; 16]>)> = const { RefCell::new((0, Vec::new())) };
}

/// Records that the current transaction ends (or narrows) a share `org` received.
fn record(org: &[u8; 16]) {
    // SAFETY: the transaction is deleting or updating a row, so it has an id.
    let me = unsafe { pg_sys::GetTopFullTransactionId() }.value;
    let done = RECORDED.with(|r| {
        let mut r = r.borrow_mut();
        if r.0 != me {
            *r = (me, Vec::new());
        }
        if r.1.contains(org) {
            return true;
        }
        r.1.push(*org);
        false
    });
    if done {
        return;
    }
    let b = bucket(org);
    loop {
        let values: Vec<u64> = b.xids.iter().map(|x| x.load(Ordering::SeqCst)).collect();
        if values.contains(&me) {
            return;
        }
        // An empty entry, one that every snapshot sees, or an aborted one can go; failing that,
        // the oldest, remembered as evicted.
        // SAFETY: reads of shared transaction state inside a transaction.
        let horizon = unsafe {
            let next = pg_sys::ReadNextFullTransactionId().value;
            widen(pg_sys::GetOldestNonRemovableTransactionId(std::ptr::null_mut()), next)
        };
        let free = values.iter().position(|&v| {
            // SAFETY: v is at or past the horizon, whose status is kept.
            v == 0 || v < horizon || unsafe { pg_sys::TransactionIdDidAbort((v as u32).into()) }
        });
        let (i, evict) = match free {
            Some(i) => (i, false),
            None => (values.iter().enumerate().min_by_key(|(_, v)| **v).map_or(0, |(i, _)| i), true),
        };
        if evict {
            b.evicted.fetch_max(values[i], Ordering::SeqCst);
        }
        if b.xids[i].compare_exchange(values[i], me, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return;
        }
    }
}

/// In a REPEATABLE READ or SERIALIZABLE transaction: raises 40001 when a share `org` received
/// was ended by a transaction that committed after this one's snapshot was taken. Nothing to do
/// in READ COMMITTED, or when no share of the organization's bucket ended lately.
pub fn check(org: &[u8; 16]) {
    // SAFETY: reads backend-local transaction state.
    if unsafe { pg_sys::XactIsoLevel } < pg_sys::XACT_REPEATABLE_READ as i32 || !unsafe { pg_sys::ActiveSnapshotSet() }
    {
        return;
    }
    let b = bucket(org);
    let values: Vec<u64> = b.xids.iter().map(|x| x.load(Ordering::SeqCst)).filter(|&v| v != 0).collect();
    // Read after the entries: an entry replaced meanwhile is in it by now.
    let evicted = b.evicted.load(Ordering::SeqCst);
    if values.is_empty() && evicted == 0 {
        return;
    }
    // SAFETY: the active snapshot is valid while the statement runs; the ids checked are at
    // or past its xmin, whose status is kept.
    let missed = unsafe {
        let snapshot = pg_sys::GetActiveSnapshot();
        let next = pg_sys::ReadNextFullTransactionId().value;
        let xmin = widen((*snapshot).xmin, next);
        (evicted != 0 && evicted >= xmin)
            || values.iter().any(|&v| {
                let xid = (v as u32).into();
                v >= xmin
                    && !pg_sys::TransactionIdIsCurrentTransactionId(xid)
                    && pg_sys::XidInMVCCSnapshot(xid, snapshot)
                    && pg_sys::TransactionIdDidCommit(xid)
            })
    };
    if missed {
        TenancyError::ShareEndedMeanwhile.raise()
    }
}

/// Trigger on `tenancy.shares` (row, AFTER DELETE, and AFTER UPDATE that takes rights away):
/// records the revocation for the organization that had received the share.
#[pg_trigger]
fn share_ended_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
    if trigger.table_schema()? != "tenancy" || trigger.table_name()? != "shares" {
        TenancyError::UnregisteredTrigger {
            function: "share_ended_trigger",
            table: format!("{}.{}", trigger.table_schema()?, trigger.table_name()?),
            registrar: "pg_tenancy itself, on its own tables",
        }
        .raise()
    }
    if let Some(org) = trigger.old().and_then(|t| t.get_by_name::<pgrx::Uuid>("grantee_org").ok().flatten()) {
        record(org.as_bytes());
    }
    Ok(None)
}

#[cfg(test)]
mod unit {
    use super::widen;

    #[test]
    fn widening_finds_the_epoch_of_recent_ids() {
        let next = (3u64 << 32) | 100;
        assert_eq!(widen(90u32.into(), next), (3u64 << 32) | 90);
        // Just before the epoch turned.
        assert_eq!(widen(u32::MAX.into(), next), (2u64 << 32) | u64::from(u32::MAX));
    }
}
