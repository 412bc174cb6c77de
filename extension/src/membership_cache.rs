//! Memberships found, shared by every backend: a new connection's first context in an
//! organization (a pool that opens connections, pgbench, PostgREST's workers) then costs a
//! lookup in shared memory instead of three index scans.
//!
//! An entry holds the whole key (database, the catalog's schema and `tenancy.members` oids, the
//! organization, the user's bytes) and the organization's generation the membership was found
//! at, with the member role's name. A reader takes an entry only when its key is equal byte for
//! byte and its generation is still the organization's, exactly the rule of the per-backend
//! cache ([`crate::membership::lookup_at`]): whatever could take the membership away moves the
//! generation at commit. The table is two-way set associative (a key has two places; a new
//! entry takes an empty one or replaces one of the two); a miss only costs the lookup.
//!
//! Entries are written under a sequence lock: a writer makes the entry's sequence odd, writes,
//! and makes it even again; a reader copies the entry and keeps the copy only when the sequence
//! was the same even number before and after. Every word is an atomic, so a torn read is
//! detected rather than undefined. A writer that finds the entry being written gives up: this is
//! a cache.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Entries in the table (8192 × 368 bytes, about 3 MB).
pub const ENTRIES: usize = 8192;
const USER_WORDS: usize = crate::session::MAX_USER_ID / 8;
/// Longer role names are not cached.
const ROLE_WORDS: usize = 8;

#[repr(C)]
pub struct Entry {
    seq: AtomicU64,
    /// database oid << 32 | `tenancy.members` oid.
    db_members: AtomicU64,
    /// schema oid << 32 | user length << 16 | role length.
    schema_lengths: AtomicU64,
    org: [AtomicU64; 2],
    generation: AtomicU64,
    user: [AtomicU64; USER_WORDS],
    role: [AtomicU64; ROLE_WORDS],
}

#[repr(C)]
pub struct Table {
    entries: [Entry; ENTRIES],
}

/// What an entry is found by.
pub struct Key<'a> {
    pub db: u32,
    pub schema: u32,
    pub members: u32,
    pub org: &'a [u8; 16],
    pub user: &'a str,
}

impl Key<'_> {
    /// The first of the key's two places.
    fn slot(&self) -> usize {
        // FNV-1a over the organization and the user: a slot, not an identity (the whole key is
        // compared), so a chosen collision only evicts.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.org.iter().chain(self.user.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= u64::from(self.db) ^ (u64::from(self.schema) << 32);
        (h % (ENTRIES as u64 / 2)) as usize * 2
    }
}

/// Bytes as little-endian words, zero-padded.
fn words<const N: usize>(bytes: &[u8]) -> [u64; N] {
    let mut out = [0u64; N];
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        out[i] = u64::from_le_bytes(w);
    }
    out
}

fn org_words(org: &[u8; 16]) -> [u64; 2] {
    words::<2>(org)
}

impl Table {
    /// The member role cached for `key` if it was found at `generation`.
    pub fn get(&self, key: &Key, generation: u64) -> Option<String> {
        let slot = key.slot();
        [slot, slot + 1].into_iter().find_map(|i| match read(&self.entries[i], key) {
            Some((found_at, role)) if found_at == generation => Some(role),
            _ => None,
        })
    }

    /// Remembers that `key` was found a member with role `role` at `generation`.
    pub fn put(&self, key: &Key, generation: u64, role: &str) {
        let user = key.user.as_bytes();
        if user.len() > USER_WORDS * 8 || role.len() > ROLE_WORDS * 8 {
            return;
        }
        let slot = key.slot();
        // The place that holds this key or is empty, else one of the two (by the generation,
        // which varies enough to spread evictions).
        let held = |i: usize| self.entries[i].seq.load(Ordering::Relaxed) == 0 || read(&self.entries[i], key).is_some();
        let place = if held(slot) {
            slot
        } else if held(slot + 1) {
            slot + 1
        } else {
            slot + (generation & 1) as usize
        };
        let e = &self.entries[place];
        let seq = e.seq.load(Ordering::Relaxed);
        if seq & 1 == 1 || e.seq.compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return;
        }
        fence(Ordering::Release);
        e.db_members.store(u64::from(key.db) << 32 | u64::from(key.members), Ordering::Relaxed);
        e.schema_lengths
            .store(u64::from(key.schema) << 32 | (user.len() as u64) << 16 | role.len() as u64, Ordering::Relaxed);
        for (slot, w) in e.org.iter().zip(org_words(key.org)) {
            slot.store(w, Ordering::Relaxed);
        }
        e.generation.store(generation, Ordering::Relaxed);
        for (slot, w) in e.user.iter().zip(words::<USER_WORDS>(user)) {
            slot.store(w, Ordering::Relaxed);
        }
        for (slot, w) in e.role.iter().zip(words::<ROLE_WORDS>(role.as_bytes())) {
            slot.store(w, Ordering::Relaxed);
        }
        e.seq.store(seq + 2, Ordering::Release);
    }
}

/// The generation and role `e` holds for `key`, read consistently (None: another key, empty,
/// being written, or changed while read).
fn read(e: &Entry, key: &Key) -> Option<(u64, String)> {
    let user = key.user.as_bytes();
    if user.len() > USER_WORDS * 8 {
        return None;
    }
    let before = e.seq.load(Ordering::Acquire);
    if before & 1 == 1 || before == 0 {
        return None;
    }
    let db_members = e.db_members.load(Ordering::Relaxed);
    let schema_lengths = e.schema_lengths.load(Ordering::Relaxed);
    let org = [e.org[0].load(Ordering::Relaxed), e.org[1].load(Ordering::Relaxed)];
    let found_at = e.generation.load(Ordering::Relaxed);
    let user_len = ((schema_lengths >> 16) & 0xffff) as usize;
    let role_len = (schema_lengths & 0xffff) as usize;
    let mut stored_user = [0u64; USER_WORDS];
    for (i, w) in stored_user.iter_mut().enumerate().take(user_len.div_ceil(8).min(USER_WORDS)) {
        *w = e.user[i].load(Ordering::Relaxed);
    }
    let mut role = [0u64; ROLE_WORDS];
    for (i, w) in role.iter_mut().enumerate() {
        *w = e.role[i].load(Ordering::Relaxed);
    }
    fence(Ordering::Acquire);
    if e.seq.load(Ordering::Relaxed) != before {
        return None;
    }
    let matches = db_members == (u64::from(key.db) << 32 | u64::from(key.members))
        && schema_lengths >> 32 == u64::from(key.schema)
        && user_len == user.len()
        && org == org_words(key.org)
        && stored_user == words::<USER_WORDS>(user)
        && role_len <= ROLE_WORDS * 8;
    if !matches {
        return None;
    }
    let bytes: Vec<u8> = role.iter().flat_map(|w| w.to_le_bytes()).take(role_len).collect();
    Some((found_at, String::from_utf8(bytes).ok()?))
}

#[cfg(test)]
mod unit {
    use super::*;

    fn table() -> Box<Table> {
        // The table is megabytes: allocate it zeroed on the heap, never on a test thread's stack
        // (`Box::new(zeroed())` builds it on the stack first in debug builds).
        let layout = std::alloc::Layout::new::<Table>();
        // SAFETY: the layout is Table's own and not zero-sized; all-zero bytes are a valid Table
        // (every field is an atomic integer); the Box frees it with the same layout.
        unsafe {
            let p = std::alloc::alloc_zeroed(layout) as *mut Table;
            assert!(!p.is_null(), "out of memory");
            Box::from_raw(p)
        }
    }

    #[test]
    fn an_entry_is_found_only_by_its_whole_key_and_generation() {
        let t = table();
        let org = [7u8; 16];
        let key = Key { db: 5, schema: 16384, members: 16400, org: &org, user: "alice" };
        assert_eq!(t.get(&key, 3), None, "an empty table holds nothing");
        t.put(&key, 3, "admin");
        assert_eq!(t.get(&key, 3).as_deref(), Some("admin"));
        assert_eq!(t.get(&key, 4), None, "a moved generation misses");
        assert_eq!(t.get(&Key { user: "alicf", ..key }, 3), None);
        assert_eq!(t.get(&Key { user: "alice\0", ..key }, 3), None, "trailing zero bytes are not padding");
        assert_eq!(t.get(&Key { db: 6, ..key }, 3), None);
        assert_eq!(t.get(&Key { schema: 16385, ..key }, 3), None);
        assert_eq!(t.get(&Key { members: 16401, ..key }, 3), None);
        let other = [8u8; 16];
        assert_eq!(t.get(&Key { org: &other, ..key }, 3), None);
        let long = "u".repeat(256);
        let long_key = Key { user: &long, ..key };
        t.put(&long_key, 1, "member");
        assert_eq!(t.get(&long_key, 1).as_deref(), Some("member"), "the longest user id fits");
        t.put(&key, 3, &"r".repeat(65));
        assert_eq!(t.get(&key, 3).as_deref(), Some("admin"), "a role too long to cache leaves the entry");
    }

    #[test]
    fn two_keys_of_one_place_are_both_kept_and_a_third_replaces_one() {
        let t = table();
        let org = [9u8; 16];
        let users: Vec<String> = (0..200_000).map(|i| format!("u{i}")).collect();
        let first = Key { db: 1, schema: 2, members: 3, org: &org, user: &users[0] };
        let same: Vec<&String> =
            users.iter().filter(|u| Key { user: u, ..first }.slot() == first.slot()).take(3).collect();
        assert_eq!(same.len(), 3, "three users that share a place");
        fn key<'a>(u: &'a str, org: &'a [u8; 16]) -> Key<'a> {
            Key { user: u, db: 1, schema: 2, members: 3, org }
        }
        t.put(&key(same[0], &org), 1, "a");
        t.put(&key(same[1], &org), 1, "b");
        assert_eq!(t.get(&key(same[0], &org), 1).as_deref(), Some("a"));
        assert_eq!(t.get(&key(same[1], &org), 1).as_deref(), Some("b"));
        t.put(&key(same[0], &org), 2, "c");
        assert_eq!(t.get(&key(same[0], &org), 2).as_deref(), Some("c"), "a key's entry is renewed in place");
        assert_eq!(t.get(&key(same[1], &org), 1).as_deref(), Some("b"));
        t.put(&key(same[2], &org), 1, "d");
        assert_eq!(t.get(&key(same[2], &org), 1).as_deref(), Some("d"));
        let kept = [t.get(&key(same[0], &org), 2).is_some(), t.get(&key(same[1], &org), 1).is_some()];
        assert_eq!(kept.iter().filter(|k| **k).count(), 1, "the third replaced exactly one");
    }

    #[test]
    fn an_entry_being_written_is_not_read() {
        let t = table();
        let org = [1u8; 16];
        let key = Key { db: 1, schema: 2, members: 3, org: &org, user: "bob" };
        t.put(&key, 1, "owner");
        let e = &t.entries[key.slot()];
        e.seq.fetch_add(1, Ordering::AcqRel);
        t.entries[key.slot() + 1].seq.fetch_add(1, Ordering::AcqRel);
        assert_eq!(t.get(&key, 1), None, "an odd sequence is a write under way");
        t.put(&key, 1, "member");
        e.seq.fetch_add(1, Ordering::AcqRel);
        t.entries[key.slot() + 1].seq.fetch_add(1, Ordering::AcqRel);
        assert_eq!(t.get(&key, 1).as_deref(), Some("owner"), "a writer that finds a write under way gives up");
    }
}
