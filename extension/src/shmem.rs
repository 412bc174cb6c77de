//! Shared memory regions of pg_tenancy ([`crate::counters`], [`crate::membership`]): each module
//! registers how to request its region and how to attach it; this module chains PostgreSQL's two
//! shared-memory hooks once for all of them.

use pgrx::pg_sys;
use std::ffi::CStr;

/// A region's step in one of the two hooks.
pub type Step = unsafe fn();

const MAX_REGIONS: usize = 4;

// Written only in _PG_init (postmaster), read by the hooks.
static mut REQUESTS: [Option<Step>; MAX_REGIONS] = [None; MAX_REGIONS];
static mut STARTUPS: [Option<Step>; MAX_REGIONS] = [None; MAX_REGIONS];
static mut PREV_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Registers a region: `request` asks for its size (and locks) while the postmaster starts,
/// `startup` attaches it in every process (see [`attach`]). Called from `_PG_init`.
pub fn register(request: Step, startup: Step) {
    // SAFETY: _PG_init runs in the postmaster while it loads shared_preload_libraries, before
    // either hook runs; chaining the previous hooks keeps other extensions working.
    unsafe {
        let requests = &mut *std::ptr::addr_of_mut!(REQUESTS);
        let startups = &mut *std::ptr::addr_of_mut!(STARTUPS);
        if requests.iter().all(Option::is_none) {
            PREV_REQUEST_HOOK = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(shmem_request);
            PREV_STARTUP_HOOK = pg_sys::shmem_startup_hook;
            pg_sys::shmem_startup_hook = Some(shmem_startup);
        }
        let Some(i) = requests.iter().position(Option::is_none) else {
            pgrx::error!("pg_tenancy: more than {MAX_REGIONS} shared memory regions")
        };
        requests[i] = Some(request);
        startups[i] = Some(startup);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: called by the postmaster in its shmem request phase; the steps were registered
    // for it.
    unsafe {
        if let Some(prev) = PREV_REQUEST_HOOK {
            prev();
        }
        for step in (*std::ptr::addr_of!(REQUESTS)).iter().flatten() {
            step();
        }
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: called by every process at startup; the steps were registered for it.
    unsafe {
        if let Some(prev) = PREV_STARTUP_HOOK {
            prev();
        }
        for step in (*std::ptr::addr_of!(STARTUPS)).iter().flatten() {
            step();
        }
    }
}

/// Attaches the region `name` of `size` bytes, creating it and running `init` over its zeroed
/// bytes the first time (in the postmaster), under AddinShmemInitLock.
///
/// # Safety
/// Must be called from a registered startup step, with the size its request step asked for.
pub unsafe fn attach(name: &CStr, size: usize, init: impl FnOnce(*mut u8)) -> *mut u8 {
    // SAFETY: the ShmemInitStruct protocol: AddinShmemInitLock is MainLWLockArray slot 21 in
    // PostgreSQL 15; `found` says whether another process created the region already.
    unsafe {
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(name.as_ptr(), size, &mut found) as *mut u8;
        if !found {
            std::ptr::write_bytes(base, 0, size);
            init(base);
        }
        pg_sys::LWLockRelease(init_lock);
        base
    }
}
