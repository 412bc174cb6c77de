//! Exact per-organization counters in shared memory, for quotas.
//!
//! A counter holds, for one (organization, resource): `committed`, the amount visible to
//! everyone; `pending`, what in-flight transactions have reserved; and `releasing`, what
//! in-flight transactions are freeing. A writer reserves under a short partition LWLock and is
//! refused when `committed + pending + amount` would pass the limit, so at most the limit can
//! ever commit, however many clients insert at once. Nobody holds a lock until commit: a
//! transaction callback settles reservations at COMMIT (pending → committed) or ABORT (dropped),
//! and a subtransaction callback drops those of a rolled-back savepoint. Organizations in
//! different partitions never touch the same lock.
//!
//! The counters are a cache of the tables, never the truth: a missing counter (after a restart,
//! a crash, or eviction) is rebuilt by counting the table with a snapshot of everything other
//! transactions committed, which is why row-count and sum quotas need no durability of their
//! own. A counter with reservations or releases in flight is never evicted.

use crate::error::TenancyError;
use pgrx::pg_sys;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// `tenancy.max_counters`: how many (organization, resource) counters shared memory holds.
pub static MAX_COUNTERS: GucSetting<i32> = GucSetting::<i32>::new(65536);

const PARTITIONS: usize = 16;
const TRANCHE: &std::ffi::CStr = c"pg_tenancy_counters";
const SHMEM_NAME: &std::ffi::CStr = c"pg_tenancy counters";

/// What a counter counts: an organization's use of one resource (in one period, for metered
/// resources; 0 otherwise).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Key {
    pub org: [u8; 16],
    /// The database (counters of one cluster's databases never mix).
    pub database: u32,
    /// The table counted (0 for resources not counted from a table): a table dropped and
    /// created again starts afresh.
    pub relation: u32,
    pub resource: i32,
    pub period: i32,
}

impl Key {
    /// The key of `org`'s use of `resource` in the current database.
    pub fn new(org: pgrx::Uuid, relation: u32, resource: i32, period: i32) -> Key {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(org.as_bytes());
        // SAFETY: reads the backend's database id.
        let database = unsafe { pg_sys::MyDatabaseId.to_u32() };
        Key { org: bytes, database, relation, resource, period }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Slot {
    used: bool,
    /// Set by TRUNCATE: rebuild from the table before the next use.
    stale: bool,
    key: Key,
    committed: i64,
    pending: i64,
    releasing: i64,
    /// The limit, shared by every backend while `limit_generation` is current (-1: unlimited;
    /// `limit_generation` 0: not looked up yet, since the generation starts at 1).
    limit: i64,
    limit_generation: u64,
}

#[repr(C)]
struct Header {
    /// Bumped when any limit may have changed, so backends drop their cached limits.
    limits_generation: AtomicU64,
    per_partition: u64,
}

struct Shared {
    header: *mut Header,
    slots: *mut Slot,
    locks: *mut pg_sys::LWLockPadded,
    per_partition: usize,
}

// Set once per process by the shmem startup hook (postmaster, then inherited by backends).
static mut SHARED: Option<Shared> = None;

fn per_partition() -> usize {
    (MAX_COUNTERS.get().max(PARTITIONS as i32) as usize).div_ceil(PARTITIONS)
}

fn shmem_size() -> usize {
    std::mem::size_of::<Header>() + PARTITIONS * per_partition() * std::mem::size_of::<Slot>()
}

/// Registers the setting and the shared-memory hooks; called from `_PG_init`.
pub fn init() {
    GucRegistry::define_int_guc(
        c"tenancy.max_counters",
        c"Number of quota counters (organization x resource) kept in shared memory.",
        c"When full, idle counters are evicted and rebuilt from the tables on next use.",
        &MAX_COUNTERS,
        1024,
        16 * 1024 * 1024,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    crate::shmem::register(shmem_request, shmem_startup);
    // SAFETY: _PG_init runs in the postmaster while it loads shared_preload_libraries.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

unsafe fn shmem_request() {
    // SAFETY: called by the postmaster in its shmem request phase.
    unsafe {
        pg_sys::RequestAddinShmemSpace(shmem_size());
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), PARTITIONS as i32);
        // MaxBackends is known from here on.
        let needed = MAX_HELD_PER_TRANSACTION as i64 * i64::from(pg_sys::MaxBackends);
        if i64::from(MAX_COUNTERS.get()) < needed {
            pgrx::warning!(
                "pg_tenancy: tenancy.max_counters ({}) is below {needed} ({MAX_HELD_PER_TRANSACTION} per connection): \
                 concurrent transactions could fill the quota counters",
                MAX_COUNTERS.get()
            );
        }
    }
}

unsafe fn shmem_startup() {
    // SAFETY: called by every process at startup; the region is sized by shmem_size() above and
    // its header written once, by the process that creates it.
    unsafe {
        let base = crate::shmem::attach(SHMEM_NAME, shmem_size(), |base| {
            let header = base as *mut Header;
            (*header).per_partition = per_partition() as u64;
            (*header).limits_generation = AtomicU64::new(1);
        });
        let header = base as *mut Header;
        let slots = base.add(std::mem::size_of::<Header>()) as *mut Slot;
        SHARED = Some(Shared {
            header,
            slots,
            locks: pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr()),
            per_partition: (*header).per_partition as usize,
        });
    }
}

fn shared() -> &'static Shared {
    // SAFETY: SHARED is written once by the startup hook before any backend runs SQL.
    unsafe { (*std::ptr::addr_of!(SHARED)).as_ref().unwrap_or_else(|| TenancyError::NotPreloaded.raise()) }
}

fn hash(key: &Key) -> u64 {
    // FNV-1a over the key's bytes: cheap, and spreads uuids well.
    let mut h: u64 = 0xcbf29ce484222325;
    let bytes = key
        .org
        .iter()
        .copied()
        .chain(key.database.to_le_bytes())
        .chain(key.relation.to_le_bytes())
        .chain(key.resource.to_le_bytes())
        .chain(key.period.to_le_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A partition locked exclusively; unlocked when dropped. No PostgreSQL error may be raised
/// while one is held (LWLocks are released on abort, but the counters would be left half-updated).
struct Partition {
    lock: *mut pg_sys::LWLock,
    slots: &'static mut [Slot],
}

impl Partition {
    fn lock(key: &Key) -> Partition {
        let s = shared();
        let p = (hash(key) % PARTITIONS as u64) as usize;
        // SAFETY: p < PARTITIONS locks were requested; the slice is this partition's region,
        // only touched while its lock is held.
        unsafe {
            let lock = &raw mut (*s.locks.add(p)).lock;
            pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
            let slots = std::slice::from_raw_parts_mut(s.slots.add(p * s.per_partition), s.per_partition);
            Partition { lock, slots }
        }
    }

    /// Index of the slot holding a usable counter for `key` (not one TRUNCATE made stale).
    fn find_fresh(&self, key: &Key) -> Option<usize> {
        self.find(key).filter(|&i| !self.slots[i].stale)
    }

    /// Installs `key` with `committed`, reusing its stale slot if it has one.
    fn install_fresh(&mut self, key: &Key, committed: i64) -> Option<usize> {
        if let Some(i) = self.find(key) {
            let slot = &mut self.slots[i];
            slot.stale = false;
            // TRUNCATE took an ACCESS EXCLUSIVE lock: nothing else is in flight on this table.
            slot.committed = committed;
            return Some(i);
        }
        self.install(key, committed)
    }

    /// Index of the slot holding `key`, probing linearly from its hash.
    fn find(&self, key: &Key) -> Option<usize> {
        let n = self.slots.len();
        let start = (hash(key) / PARTITIONS as u64) as usize % n;
        for i in 0..n {
            let idx = (start + i) % n;
            let slot = &self.slots[idx];
            if !slot.used {
                return None;
            }
            if slot.key == *key {
                return Some(idx);
            }
        }
        None
    }

    /// Installs `key` with `committed`: in the first free slot of its probe sequence, or in
    /// place of an idle counter (nothing in flight), which keeps probe chains intact.
    fn install(&mut self, key: &Key, committed: i64) -> Option<usize> {
        let n = self.slots.len();
        let start = (hash(key) / PARTITIONS as u64) as usize % n;
        let mut victim = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let slot = &self.slots[idx];
            if !slot.used {
                victim = Some(idx);
                break;
            }
            if victim.is_none() && slot.pending == 0 && slot.releasing == 0 {
                victim = Some(idx);
            }
        }
        let idx = victim?;
        self.slots[idx] = Slot {
            used: true,
            stale: false,
            key: *key,
            committed,
            pending: 0,
            releasing: 0,
            limit: -1,
            limit_generation: 0,
        };
        Some(idx)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        // SAFETY: releases the lock taken in Partition::lock.
        unsafe { pg_sys::LWLockRelease(self.lock) };
    }
}

#[derive(Clone, Copy)]
struct Reservation {
    key: Key,
    /// Positive: reserved (pending); negative: being released.
    amount: i64,
    subxact: pg_sys::SubTransactionId,
}

thread_local! {
    static RESERVATIONS: RefCell<Vec<Reservation>> = const { RefCell::new(Vec::new()) };
    static LIMITS_CHANGED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The counters this transaction holds reservations on (see [`MAX_HELD_PER_TRANSACTION`]).
    static HELD: RefCell<std::collections::HashSet<Key>> = RefCell::new(std::collections::HashSet::new());
}

/// The outcome of [`reserve`].
pub enum Reserved {
    Ok,
    /// Refused: `used` is committed plus in-flight reservations.
    OverLimit {
        used: i64,
    },
    /// Refused: the counter would leave the range of a bigint.
    Overflow,
}

/// How many counters one transaction of a role that row-level security applies to may hold
/// reservations or releases on. An application role reaches only the counters of organizations it has a
/// context for; with this cap even many such contexts in one transaction cannot fill the
/// shared counters (`tenancy.max_counters` should be at least this times `max_connections`,
/// which the server warns about at start).
pub const MAX_HELD_PER_TRANSACTION: usize = 64;

/// Reserves `amount` (or, when negative, releases it) on `key` for the current transaction,
/// refusing when the limit would be passed. The fast path is one short lock: the counter and
/// its limit are both in shared memory. Otherwise, without any lock held, `limit_of` looks the
/// limit up and `rebuild` counts the table when no counter exists.
pub fn reserve(
    key: Key,
    amount: i64,
    limit_of: impl FnOnce() -> Option<i64>,
    rebuild: impl FnOnce() -> i64,
) -> Reserved {
    // Releases count too: a counter with a release in flight cannot be evicted either.
    if amount != 0 {
        check_held(&key);
    }
    let generation = limits_generation();
    // A transaction that changed limits itself sees them before anyone else: no sharing then.
    let shareable = !LIMITS_CHANGED.with(|c| c.get());
    let fast = {
        let part = Partition::lock(&key);
        match part.find_fresh(&key) {
            Some(i) if amount <= 0 || (shareable && part.slots[i].limit_generation == generation) => {
                let limit = (part.slots[i].limit >= 0).then_some(part.slots[i].limit);
                Some(apply(&mut part.slots[i], amount, limit))
            }
            _ => None,
        }
    };
    let outcome = match fast {
        Some(outcome) => Some(outcome),
        None => {
            let limit = if amount > 0 { limit_of() } else { None };
            let rebuilt = {
                let part = Partition::lock(&key);
                part.find_fresh(&key).is_none()
            }
            .then(rebuild);
            let mut part = Partition::lock(&key);
            let idx = match part.find_fresh(&key) {
                Some(i) => Some(i),
                None => part.install_fresh(&key, rebuilt.unwrap_or(0)),
            };
            match idx {
                None => None,
                Some(i) => {
                    let slot = &mut part.slots[i];
                    if amount > 0 && shareable {
                        slot.limit = limit.unwrap_or(-1);
                        slot.limit_generation = generation;
                    }
                    Some(apply(slot, amount, limit))
                }
            }
        }
    };
    match outcome {
        None => TenancyError::CountersFull.raise(),
        Some(Reserved::Ok) => {
            if amount != 0 {
                // SAFETY: reads backend-local transaction state.
                let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
                RESERVATIONS.with(|r| r.borrow_mut().push(Reservation { key, amount, subxact }));
                HELD.with(|h| h.borrow_mut().insert(key));
            }
            Reserved::Ok
        }
        Some(over) => over,
    }
}

/// Raises 53400 when this transaction, of a role that row-level security applies to, would hold
/// reservations on more than [`MAX_HELD_PER_TRANSACTION`] counters with `key`.
fn check_held(key: &Key) {
    let full = HELD.with(|h| {
        let h = h.borrow();
        !h.contains(key) && h.len() >= MAX_HELD_PER_TRANSACTION
    });
    if full && !crate::context::caller_bypasses_rls() {
        TenancyError::TooManyCounters { max: MAX_HELD_PER_TRANSACTION }.raise()
    }
}

/// The check and the update, under the partition lock. Every sum is checked: a counter that
/// would leave the range of a bigint refuses the change instead of wrapping.
fn apply(slot: &mut Slot, amount: i64, limit: Option<i64>) -> Reserved {
    let Some(used) = slot.committed.checked_add(slot.pending) else { return Reserved::Overflow };
    if amount > 0 {
        let Some(after) = used.checked_add(amount) else { return Reserved::Overflow };
        if limit.is_some_and(|l| after > l) {
            return Reserved::OverLimit { used };
        }
        let Some(pending) = slot.pending.checked_add(amount) else { return Reserved::Overflow };
        slot.pending = pending;
    } else {
        let Some(releasing) = amount.checked_neg().and_then(|a| slot.releasing.checked_add(a)) else {
            return Reserved::Overflow;
        };
        slot.releasing = releasing;
    }
    Reserved::Ok
}

/// Committed plus in-flight use of `key`, rebuilding the counter if needed (saturating: a
/// report never fails for want of range).
pub fn used(key: Key, rebuild: impl FnOnce() -> i64) -> i64 {
    {
        let part = Partition::lock(&key);
        if let Some(i) = part.find_fresh(&key) {
            return part.slots[i].committed.saturating_add(part.slots[i].pending);
        }
    }
    let value = rebuild();
    let mut part = Partition::lock(&key);
    match part.find_fresh(&key).or_else(|| part.install_fresh(&key, value)) {
        Some(i) => part.slots[i].committed.saturating_add(part.slots[i].pending),
        None => value,
    }
}

/// Applies (commit) or drops (abort) reservations; must not raise: it runs in commit callbacks.
/// [`apply`] checked every reservation's range, so the sums stay in range; they saturate rather
/// than panic regardless.
fn settle(reservations: &[Reservation], commit: bool) {
    for r in reservations {
        let part = Partition::lock(&r.key);
        if let Some(i) = part.find(&r.key) {
            let slot = &mut part.slots[i];
            if r.amount >= 0 {
                slot.pending = slot.pending.saturating_sub(r.amount);
            } else {
                slot.releasing = slot.releasing.saturating_add(r.amount);
            }
            if commit {
                slot.committed = slot.committed.saturating_add(r.amount);
            }
        }
    }
}

/// Marks every counter of `relation` in the current database stale (after TRUNCATE), so the
/// next use rebuilds it from the table.
pub fn invalidate_relation(relation: u32) {
    let s = shared();
    // SAFETY: reads the backend's database id; each partition is scanned under its own lock.
    let database = unsafe { pg_sys::MyDatabaseId.to_u32() };
    for p in 0..PARTITIONS {
        // SAFETY: as in Partition::lock, for partition p.
        unsafe {
            let lock = &raw mut (*s.locks.add(p)).lock;
            pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
            let slots = std::slice::from_raw_parts_mut(s.slots.add(p * s.per_partition), s.per_partition);
            for slot in slots.iter_mut().filter(|x| x.used && x.key.database == database && x.key.relation == relation)
            {
                slot.stale = true;
            }
            pg_sys::LWLockRelease(lock);
        }
    }
}

/// True when this transaction changed limits (not yet visible to other backends).
pub fn changed_limits_here() -> bool {
    LIMITS_CHANGED.with(|c| c.get())
}

/// Marks that this transaction changed limits: other backends drop cached limits at commit.
pub fn limits_changed() {
    LIMITS_CHANGED.with(|c| c.set(true));
}

/// The current limits generation (cached limits from another generation are stale).
pub fn limits_generation() -> u64 {
    // SAFETY: the header lives as long as the server.
    unsafe { (*shared().header).limits_generation.load(Ordering::Acquire) }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_PREPARE if RESERVATIONS.with(|r| !r.borrow().is_empty()) => {
            TenancyError::PrepareWithQuota.raise()
        }
        XACT_EVENT_COMMIT
        | XACT_EVENT_PARALLEL_COMMIT
        | XACT_EVENT_ABORT
        | XACT_EVENT_PARALLEL_ABORT
        | XACT_EVENT_PREPARE => {
            let commit = matches!(event, XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT);
            let taken = RESERVATIONS.with(|r| std::mem::take(&mut *r.borrow_mut()));
            HELD.with(|h| h.borrow_mut().clear());
            if !taken.is_empty() {
                settle(&taken, commit);
            }
            if LIMITS_CHANGED.with(|c| c.replace(false)) && commit {
                // SAFETY: the header lives as long as the server.
                unsafe { (*shared().header).limits_generation.fetch_add(1, Ordering::AcqRel) };
            }
        }
        _ => {}
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    match event {
        SUBXACT_EVENT_COMMIT_SUB => RESERVATIONS.with(|r| {
            for res in r.borrow_mut().iter_mut().filter(|res| res.subxact == my_subid) {
                res.subxact = parent_subid;
            }
        }),
        SUBXACT_EVENT_ABORT_SUB => {
            let dropped: Vec<Reservation> = RESERVATIONS.with(|r| {
                let mut all = r.borrow_mut();
                let (gone, kept) = all.iter().partition(|res| res.subxact == my_subid);
                *all = kept;
                gone
            });
            settle(&dropped, false);
        }
        _ => {}
    }
}
