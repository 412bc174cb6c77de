//! Organizations keyed the application's way: a text id (`org_abc123`, a cuid, a ULID) or a
//! bigint, next to the uuid every organization has in `tenancy.organizations`.
//!
//! The uuid of a key is a function of the key alone ([`id_of_key`], `tenancy.org_key_id()`):
//!
//! - a key that is a uuid in canonical form (lowercase, with hyphens) and not of version 8 is
//!   that uuid: an organization created with `tenancy.create_organization()` has the text of its
//!   id as its key, and a text column holding uuids (Prisma's `String @default(uuid())`) needs
//!   no mapping;
//! - any other key is the first 16 bytes of SHA-256 over a fixed prefix and the key, marked as
//!   a version 8 uuid. No canonical uuid key other than a version 8 one can produce such a uuid,
//!   and finding two keys with the same one is finding a SHA-256 collision.
//!
//! So the context functions need no catalog lookup to go from the application's key to the
//! organization (the membership check, its shared cache, counters and usage keep working by
//! uuid), and going back is a lookup of `tenancy.organizations.key` only for version 8 ids, made
//! once per backend and organization: a CHECK constraint keeps `id = tenancy.org_key_id(key)`,
//! so an id always has the same key, and what a backend remembered never goes stale.

use pgrx::prelude::*;
use sha2::{Digest, Sha256};
use std::cell::RefCell;

/// What a key's hash starts with, so that these ids are pg_tenancy's own.
const PREFIX: &[u8] = b"pg_tenancy organization key\0";

/// Longest key accepted, in bytes.
pub const MAX_KEY: usize = 256;

/// True when `text` is a uuid in canonical form: 36 characters, lowercase hex digits, hyphens at
/// 8, 13, 18 and 23.
fn canonical_uuid(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != 36 {
        return None;
    }
    for (i, &b) in text.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        };
        if !ok {
            return None;
        }
    }
    crate::context::parse_uuid(text)
}

fn version(id: &[u8; 16]) -> u8 {
    id[6] >> 4
}

/// The uuid of the organization with application key `key`.
pub fn id_of_key(key: &str) -> [u8; 16] {
    if let Some(id) = canonical_uuid(key.as_bytes()).filter(|id| version(id) != 8) {
        return id;
    }
    let digest = Sha256::new().chain_update(PREFIX).chain_update(key.as_bytes()).finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x80; // version 8
    id[8] = (id[8] & 0x3f) | 0x80; // RFC 9562 variant
    id
}

/// The key argument of a function: not NULL, not empty, not too long.
pub fn key_argument(param: &'static str, value: Option<&str>) -> [u8; 16] {
    let key = crate::error::required(param, value);
    if key.trim().is_empty() {
        crate::error::TenancyError::InvalidArgument { param, reason: "must not be empty".into(), hint: None }.raise()
    }
    if key.len() > MAX_KEY {
        crate::error::TenancyError::InvalidArgument {
            param,
            reason: format!("is {} bytes long", key.len()),
            hint: Some(format!("Organization keys are at most {MAX_KEY} bytes.")),
        }
        .raise()
    }
    cached_id_of_key(key)
}

/// The uuid of the organization whose application key is `key` (see the module's comment):
/// what `tenancy.organizations.id` holds for an organization copied from the application's
/// own table with text or integer ids. NULL for NULL.
#[pg_extern(immutable, strict, parallel_safe)]
fn org_key_id(key: &str) -> pgrx::Uuid {
    pgrx::Uuid::from_bytes(id_of_key(key))
}

/// How many keys a backend remembers each way before it starts over.
const REMEMBERED: usize = 4096;

/// An organization's application key, as text and (when it is one) as a bigint.
struct Key {
    text: String,
    bigint: Option<i64>,
}

thread_local! {
    /// Keys of ids looked up so far (an id's key never changes).
    static KEYS: RefCell<foldhash::HashMap<[u8; 16], Key>> = RefCell::new(Default::default());
    /// Ids of keys hashed so far: SHA-256 costs about 3,700 instructions, a lookup here a tenth.
    static IDS: RefCell<foldhash::HashMap<String, [u8; 16]>> = RefCell::new(Default::default());
}

/// [`id_of_key`], remembered by the backend.
pub fn cached_id_of_key(key: &str) -> [u8; 16] {
    if let Some(id) = IDS.with(|ids| ids.borrow().get(key).copied()) {
        return id;
    }
    let id = id_of_key(key);
    IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        if ids.len() >= REMEMBERED {
            ids.clear();
        }
        ids.insert(key.to_string(), id);
    });
    id
}

/// Runs `f` with the application's key of organization `id` (text, and bigint when it is one):
/// the text of a uuid that is not of version 8, else `tenancy.organizations.key`. None when no
/// organization has that id.
pub fn with_key<R>(id: &pgrx::Uuid, f: impl FnOnce(&str, Option<i64>) -> R) -> Option<R> {
    let bytes = *id.as_bytes();
    let mut f = Some(f);
    let found = KEYS.with(|k| k.borrow().get(&bytes).map(|key| (f.take().unwrap())(&key.text, key.bigint)));
    if found.is_some() {
        return found;
    }
    let text = if version(&bytes) != 8 {
        crate::context::uuid_text(id)
    } else {
        let key = crate::membership::org_key(*id);
        // Only a key that maps back to the id is remembered (the CHECK constraint makes every one so).
        key.filter(|k| id_of_key(k) == bytes)?
    };
    let key = Key { bigint: bigint_key(&text), text };
    let result = (f.take().unwrap())(&key.text, key.bigint);
    KEYS.with(|k| {
        let mut k = k.borrow_mut();
        if k.len() >= REMEMBERED {
            k.clear();
        }
        k.insert(bytes, key);
    });
    Some(result)
}

/// The application's key of organization `id` (see [`with_key`]).
pub fn key_of(id: &pgrx::Uuid) -> Option<String> {
    with_key(id, |text, _| text.to_string())
}

/// The application's key of the organization of the current context (text), or NULL: what
/// compiled policies compare a text or varchar tenant column with.
#[pg_extern(stable, parallel_safe)]
pub fn current_org_key() -> Option<String> {
    key_of(&crate::context::current_org()?)
}

/// The organization of the current context as a bigint (its application key), or NULL (also
/// when its key is not a number): what compiled policies compare an integer or bigint tenant
/// column with.
#[pg_extern(stable, parallel_safe)]
pub fn current_org_bigint() -> Option<i64> {
    with_key(&crate::context::current_org()?, |_, n| n).flatten()
}

/// The application's key of the project of the current context (text), or NULL (also in an
/// organization context): what compiled policies compare a project-level text tenant column with.
#[pg_extern(stable, parallel_safe)]
pub fn current_project_key() -> Option<String> {
    key_of(&crate::context::current_project_id()?)
}

/// The project of the current context as a bigint (its application key), or NULL.
#[pg_extern(stable, parallel_safe)]
pub fn current_project_bigint() -> Option<i64> {
    with_key(&crate::context::current_project_id()?, |_, n| n).flatten()
}

/// `key` as a bigint when it is one in PostgreSQL's own output form (`42`, `-7`; not `042` or
/// `+42`): the key the sync writes for an integer id is `id::text`, so no two organizations'
/// keys name the same number.
fn bigint_key(key: &str) -> Option<i64> {
    key.parse::<i64>().ok().filter(|n| n.to_string() == key)
}

/// The kinds of tenant column pg_tenancy reads: a uuid, a text or varchar key, an integer key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ColumnKind {
    Uuid,
    Text,
    Integer,
}

impl ColumnKind {
    /// The kind of column `column` of `relation`, None for any other type or no such column.
    pub fn of(relation: pg_sys::Oid, column: &str) -> Option<ColumnKind> {
        let name = std::ffi::CString::new(column).ok()?;
        // SAFETY: catalog lookups by oid and name; an unknown column gives InvalidAttrNumber.
        let typ = unsafe {
            let attnum = pg_sys::get_attnum(relation, name.as_ptr());
            if attnum == pg_sys::InvalidAttrNumber as i16 {
                return None;
            }
            pg_sys::get_atttype(relation, attnum)
        };
        match typ {
            pg_sys::UUIDOID => Some(ColumnKind::Uuid),
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Some(ColumnKind::Text),
            pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID => Some(ColumnKind::Integer),
            _ => None,
        }
    }
}

/// The organization of a row: its tenant column `column` read as a uuid, or as the
/// application's text or integer key of the organization. None for NULL (or another type).
pub fn org_of_column(
    tuple: &pgrx::heap_tuple::PgHeapTuple<'_, pgrx::AllocatedByPostgres>,
    column: &str,
) -> Option<pgrx::Uuid> {
    if let Ok(id) = tuple.get_by_name::<pgrx::Uuid>(column) {
        return id;
    }
    if let Ok(key) = tuple.get_by_name::<String>(column) {
        return key.map(|k| pgrx::Uuid::from_bytes(cached_id_of_key(&k)));
    }
    crate::quota::integer_column(tuple, column).map(|n| pgrx::Uuid::from_bytes(cached_id_of_key(&n.to_string())))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn canonical_uuids_that_are_not_version_8_are_their_own_key() {
        let text = "0b1e4a3c-7a1d-4f0e-9c55-2b7d1c9e8f00";
        assert_eq!(id_of_key(text), crate::context::parse_uuid(text.as_bytes()).unwrap());
    }

    #[test]
    fn other_keys_hash_to_version_8_ids_that_differ() {
        for key in ["org_abc123", "42", "0B1E4A3C-7A1D-4F0E-9C55-2B7D1C9E8F00", "0b1e4a3c7a1d4f0e9c552b7d1c9e8f00"] {
            let id = id_of_key(key);
            assert_eq!(version(&id), 8, "{key}");
            assert_eq!(id[8] >> 6, 2, "{key}");
        }
        assert_ne!(id_of_key("42"), id_of_key("43"));
        assert_eq!(id_of_key("org_abc123"), id_of_key("org_abc123"));
        // A canonical version 8 uuid is hashed too: no key's id is another key's text.
        let v8 = crate::context::uuid_text(&pgrx::Uuid::from_bytes(id_of_key("42")));
        assert_ne!(id_of_key(&v8), id_of_key("42"));
        assert_eq!(version(&id_of_key(&v8)), 8);
    }

    #[test]
    fn only_canonical_numbers_are_bigint_keys() {
        assert_eq!(bigint_key("42"), Some(42));
        assert_eq!(bigint_key("-7"), Some(-7));
        for key in ["042", "+42", " 42", "4.2", "", "9223372036854775808", "org_1"] {
            assert_eq!(bigint_key(key), None, "{key}");
        }
    }
}
