//! Shared memory regions of pg_tenancy ([`crate::counters`], [`crate::membership`]): each is
//! requested while the postmaster loads the library and attached by every process at startup.

use pgrx::pg_sys;
use std::ffi::CStr;

/// Attaches the region `name` of `size` bytes, creating it and running `init` over its zeroed
/// bytes the first time (in the postmaster), under AddinShmemInitLock.
///
/// # Safety
/// Must be called from a `shmem_startup_hook`, with the size requested in `shmem_request_hook`.
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
