//! Who belongs to which organization, as of now, and how a change of membership reaches every
//! session by its next statement.
//!
//! [`lookup`] reads `tenancy.members`, `tenancy.organizations` and `tenancy.roles` directly
//! through their indexes with the latest snapshot: no SQL is parsed or planned, so nothing the
//! caller defines (functions, operators, a search_path) can take part, no privilege needs to be
//! borrowed, and it works inside parallel queries, where the context readers call it.
//!
//! Each organization hashes to one of [`SLOTS`] generation counters in shared memory. A
//! committed change that can take rights away (a member removed or given another role, an
//! organization suspended or deleted, any change to the roles) moves the generation of the
//! organizations it touched; a context remembers the generation it was checked at
//! (in `tenancy.membership`), and a reader that finds it moved checks the membership again
//! ([`crate::context`]). Unrelated organizations that share a slot only cost a recheck.

use crate::error::TenancyError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Generation counters in shared memory (32 KiB), then the memberships found
/// ([`crate::membership_cache`]).
pub const SLOTS: usize = 4096;
const SHMEM_NAME: &CStr = c"pg_tenancy membership generations";

#[repr(C)]
struct Generations {
    slots: [AtomicU64; SLOTS],
    /// Moves when `tenancy.token_keys` changes: every backend reloads its keys and forgets the
    /// tokens it verified ([`crate::token`]).
    keys: AtomicU64,
    /// Moves when `tenancy.roles` may have changed (with every organization's generation):
    /// every backend reads the roles again.
    roles: AtomicU64,
    found: crate::membership_cache::Table,
}

// Set once per process by the shmem startup hook (postmaster, then inherited by backends).
static mut GENERATIONS: *const Generations = std::ptr::null();

/// Registers the shared memory and the transaction callback; called from `_PG_init`.
pub fn init() {
    crate::shmem::register(shmem_request, shmem_startup);
    // SAFETY: _PG_init runs in the postmaster while it loads shared_preload_libraries.
    unsafe { pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut()) };
}

unsafe fn shmem_request() {
    // SAFETY: called by the postmaster in its shmem request phase.
    unsafe { pg_sys::RequestAddinShmemSpace(std::mem::size_of::<Generations>()) };
}

unsafe fn shmem_startup() {
    // SAFETY: called by every process at startup; the region is sized as requested above and set
    // to generation 1 once, by the process that creates it.
    unsafe {
        let base = crate::shmem::attach(SHMEM_NAME, std::mem::size_of::<Generations>(), |base| {
            for slot in (*(base as *mut Generations)).slots.iter() {
                slot.store(1, Ordering::Relaxed);
            }
            (*(base as *mut Generations)).keys.store(1, Ordering::Relaxed);
            (*(base as *mut Generations)).roles.store(1, Ordering::Relaxed);
        });
        GENERATIONS = base as *const Generations;
    }
}

fn generations() -> &'static Generations {
    // SAFETY: written once by the startup hook before any backend runs SQL.
    unsafe { GENERATIONS.as_ref().unwrap_or_else(|| TenancyError::NotPreloaded.raise()) }
}

fn slot_of(org: &[u8; 16]) -> usize {
    // FNV-1a: cheap, and uuids spread well.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in org {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % SLOTS as u64) as usize
}

/// The current membership generation of `org`.
pub fn generation(org: &[u8; 16]) -> u64 {
    generations().slots[slot_of(org)].load(Ordering::Acquire)
}

/// The current generation of the token keys.
pub fn keys_generation() -> u64 {
    generations().keys.load(Ordering::Acquire)
}

/// Whether this transaction changed memberships, organizations or roles (its triggers fired):
/// what it sees of them is not committed, so nothing it finds may be remembered, and nothing
/// remembered stands for what it sees.
fn changes_pending() -> bool {
    PENDING.with(|p| {
        let p = p.borrow();
        p.all || !p.orgs.is_empty()
    })
}

/// Whether what this transaction finds in the catalog may be remembered: only when it wrote
/// nothing at all (no transaction id), so that the latest snapshot it reads with shows what is
/// committed and nothing of its own. A member it added, an organization it created (sign-up),
/// would otherwise be remembered at a generation that their rollback never moves.
fn may_remember() -> bool {
    // SAFETY: reads backend-local transaction state.
    !changes_pending() && unsafe { pg_sys::GetTopTransactionIdIfAny() } == pg_sys::InvalidTransactionId
}

/// Makes the token keys' generation move when this transaction commits.
pub fn keys_changed() {
    PENDING.with(|p| p.borrow_mut().keys = true);
}

#[derive(Default)]
struct Pending {
    orgs: Vec<[u8; 16]>,
    all: bool,
    keys: bool,
}

thread_local! {
    /// Organizations whose generation moves when this transaction commits.
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        // A prepared transaction's changes become visible at COMMIT PREPARED, in a session
        // whose callbacks know nothing of them: the generations would move too early.
        XACT_EVENT_PRE_PREPARE
            if PENDING.with(|p| !p.borrow().orgs.is_empty() || p.borrow().all || p.borrow().keys) =>
        {
            TenancyError::PrepareWithMembershipChange.raise()
        }
        // After the commit is visible to every snapshot: a reader that sees the new generation
        // and checks again sees the change.
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => {
            let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
            let g = generations();
            if pending.keys {
                g.keys.fetch_add(1, Ordering::AcqRel);
            }
            if pending.all {
                g.roles.fetch_add(1, Ordering::AcqRel);
                for slot in g.slots.iter() {
                    slot.fetch_add(1, Ordering::AcqRel);
                }
            } else {
                for org in &pending.orgs {
                    g.slots[slot_of(org)].fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => {
            PENDING.with(|p| *p.borrow_mut() = Pending::default());
        }
        _ => {}
    }
}

/// Trigger on `tenancy.members`, `tenancy.organizations` (row, AFTER UPDATE OR DELETE) and
/// `tenancy.roles` (statement), and on TRUNCATE of the first two: the generations of the
/// organizations concerned (all of them, for roles and TRUNCATE) move at commit.
#[pg_trigger]
fn membership_changed_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
    let table = trigger.table_name()?;
    if trigger.table_schema()? != "tenancy"
        || !["members", "organizations", "roles", "project_members"].contains(&table.as_str())
    {
        TenancyError::UnregisteredTrigger {
            function: "membership_changed_trigger",
            table: format!("{}.{table}", trigger.table_schema()?),
            registrar: "pg_tenancy itself, on its own tables",
        }
        .raise()
    }
    let column = match table.as_str() {
        "members" => "org_id",
        "project_members" => "project_id",
        _ => "id",
    };
    let of = |row: Option<pgrx::heap_tuple::PgHeapTuple<'_, pgrx::AllocatedByPostgres>>| {
        row.and_then(|t| t.get_by_name::<pgrx::Uuid>(column).ok().flatten())
    };
    // The old row's organization (or project): what a change or removal takes away. A project's
    // override row counts when it is added too (it may take access away: "no access").
    let orgs = match (table.as_str(), trigger.level()) {
        ("roles", _) | (_, pgrx::PgTriggerLevel::Statement) => None,
        ("project_members", _) => Some([of(trigger.old()), of(trigger.new())]),
        _ => Some([of(trigger.old()), None]),
    };
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match orgs {
            Some(orgs) => {
                for org in orgs.into_iter().flatten() {
                    let bytes = *org.as_bytes();
                    if !p.orgs.contains(&bytes) {
                        p.orgs.push(bytes);
                    }
                }
            }
            None => p.all = true,
        }
    });
    Ok(None)
}

/// A member's role, checked against the catalog: what a context holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub role: String,
    /// Every role with its rank, `owner:40,admin:30,...`, highest first.
    pub role_ranks: String,
    /// The role's permissions, comma separated.
    pub permissions: String,
    /// In a project context whose project overrides the organization role: the organization
    /// role (None: `role` is the organization's).
    pub org: Option<OrgRole>,
}

/// A member's role in the organization of a project context, and its permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgRole {
    pub role: String,
    pub permissions: String,
}

impl Membership {
    /// The role (and its permissions) that checks at `level` read.
    pub fn role_at(&self, level: crate::context::Level) -> (&str, &str) {
        match (&self.org, level) {
            (Some(o), crate::context::Level::Organization) => (&o.role, &o.permissions),
            _ => (&self.role, &self.permissions),
        }
    }
}

/// Where the catalog tables are (per backend; the schema's oid changes if the extension is
/// created again).
#[derive(Clone, Copy)]
pub(crate) struct Catalog {
    schema: pg_sys::Oid,
    members: pg_sys::Oid,
    members_pkey: pg_sys::Oid,
    organizations: pg_sys::Oid,
    organizations_pkey: pg_sys::Oid,
    roles: pg_sys::Oid,
    /// `tenancy.project_members` and its primary key (InvalidOid in a database whose extension
    /// is older than 0.6.0 and not updated yet: no project context starts there).
    project_members: pg_sys::Oid,
    project_members_pkey: pg_sys::Oid,
    pub(crate) active_users: pg_sys::Oid,
    /// `(org_id, period, user_id)`.
    pub(crate) active_users_idx: pg_sys::Oid,
}

thread_local! {
    static CATALOG: std::cell::Cell<Option<Catalog>> = const { std::cell::Cell::new(None) };
}

pub(crate) fn catalog() -> Catalog {
    // SAFETY: syscache lookups by name inside a transaction; missing_ok returns InvalidOid.
    let schema = unsafe { pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true) };
    if let Some(c) = CATALOG.with(|c| c.get()).filter(|c| c.schema == schema && schema != pg_sys::InvalidOid) {
        return c;
    }
    let rel = |name: &CStr| {
        // SAFETY: as above.
        let oid = unsafe { pg_sys::get_relname_relid(name.as_ptr(), schema) };
        if oid == pg_sys::InvalidOid {
            pgrx::error!(
                "pg_tenancy: relation tenancy.{} is missing: is pg_tenancy installed?",
                name.to_string_lossy()
            );
        }
        oid
    };
    let c = Catalog {
        schema,
        members: rel(c"members"),
        members_pkey: rel(c"members_pkey"),
        organizations: rel(c"organizations"),
        organizations_pkey: rel(c"organizations_pkey"),
        roles: rel(c"roles"),
        // SAFETY: as above.
        project_members: unsafe { pg_sys::get_relname_relid(c"project_members".as_ptr(), schema) },
        project_members_pkey: unsafe { pg_sys::get_relname_relid(c"project_members_pkey".as_ptr(), schema) },
        active_users: rel(c"active_users"),
        active_users_idx: rel(c"active_users_org_id_period_idx"),
    };
    CATALOG.with(|cell| cell.set(Some(c)));
    c
}

/// An open relation and the attribute numbers of its columns, closed when dropped.
pub(crate) struct Table {
    rel: pg_sys::Relation,
}

impl Table {
    pub(crate) fn open(oid: pg_sys::Oid) -> Table {
        // SAFETY: the oid names one of our catalog tables; the lock is released at close.
        Table { rel: unsafe { pg_sys::table_open(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) } }
    }

    pub(crate) fn attnum(&self, column: &CStr) -> i16 {
        // SAFETY: a syscache lookup on an open relation.
        let n = unsafe { pg_sys::get_attnum((*self.rel).rd_id, column.as_ptr()) };
        if n <= 0 {
            pgrx::error!("pg_tenancy: catalog column \"{}\" is missing", column.to_string_lossy());
        }
        n
    }

    /// Calls `each` with every tuple matching `keys` (heap attribute numbers), through `index`
    /// (InvalidOid: a sequential scan), under `snapshot`.
    ///
    /// # Safety
    /// `snapshot` must be registered; `keys` must hold valid datums for their columns.
    pub(crate) unsafe fn scan(
        &self,
        index: pg_sys::Oid,
        snapshot: pg_sys::Snapshot,
        keys: &mut [pg_sys::ScanKeyData],
        mut each: impl FnMut(pg_sys::HeapTuple, pg_sys::TupleDesc) -> bool,
    ) {
        unsafe {
            let scan = pg_sys::systable_beginscan(
                self.rel,
                index,
                index != pg_sys::InvalidOid,
                snapshot,
                keys.len() as i32,
                keys.as_mut_ptr(),
            );
            loop {
                let tuple = pg_sys::systable_getnext(scan);
                if tuple.is_null() || !each(tuple, (*self.rel).rd_att) {
                    break;
                }
            }
            pg_sys::systable_endscan(scan);
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: closes what `open` opened (on an error, transaction abort closes it instead,
        // and this drop runs only on the normal path: PostgreSQL errors unwind past it).
        if !std::thread::panicking() {
            unsafe { pg_sys::table_close(self.rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
        }
    }
}

/// A column of `tuple`, or None when NULL.
///
/// # Safety
/// `tuple` and `desc` must belong together.
pub(crate) unsafe fn column<T: FromDatum>(tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc, attnum: i16) -> Option<T> {
    unsafe {
        let mut is_null = false;
        let datum = pgrx::pg_sys::heap_getattr(tuple, i32::from(attnum), desc, &mut is_null);
        T::from_datum(datum, is_null)
    }
}

pub(crate) fn equal_key(attnum: i16, procedure: pg_sys::RegProcedure, value: pg_sys::Datum) -> pg_sys::ScanKeyData {
    // SAFETY: ScanKeyInit fills every field of the zeroed key.
    unsafe {
        let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(&mut key, attnum, pg_sys::BTEqualStrategyNumber as u16, procedure, value);
        key
    }
}

/// `user`'s membership in `org`, if the organization exists and is active, as of the latest
/// committed state (not the transaction's snapshot: a context must never be checked against the
/// past). Reads the tables directly, so callers need no privilege on them.
pub fn lookup(org: pgrx::Uuid, user: &str) -> Option<Membership> {
    let c = catalog();
    let roles_at = roles_generation();
    with_latest_snapshot(|snapshot| {
        // SAFETY: the snapshot is registered; each key holds a datum of its column's type.
        unsafe {
            // The membership first: for someone who is no member, an organization that exists
            // and one that does not cost the same single probe of tenancy.members (checking the
            // organization first took one more index lookup, and heap fetch, when it existed).
            let role = member_role(&c, snapshot, org, user)?;
            if !org_active(&c, snapshot, org) {
                return None;
            }
            role_of(&c, snapshot, roles_at, &role)
        }
    })
}

/// The role `user` is listed with in `org`, read through `tenancy.members`' primary key.
///
/// # Safety
/// `snapshot` must be registered.
unsafe fn member_role(c: &Catalog, snapshot: pg_sys::Snapshot, org: pgrx::Uuid, user: &str) -> Option<String> {
    unsafe {
        let members = Table::open(c.members);
        let (m_org, m_user, m_role) = (members.attnum(c"org_id"), members.attnum(c"user_id"), members.attnum(c"role"));
        let mut role = None;
        let mut keys = [
            equal_key(m_org, pg_sys::Oid::from(pg_sys::F_UUID_EQ), org.into_datum().expect("uuid datum")),
            equal_key(m_user, pg_sys::Oid::from(pg_sys::F_TEXTEQ), user.into_datum().expect("text datum")),
        ];
        members.scan(c.members_pkey, snapshot, &mut keys, |t, d| {
            role = column::<String>(t, d, m_role);
            false
        });
        role
    }
}

/// `user`'s access to `project`: the project's organization, and the membership the project
/// gives (its override of the user's organization role, or that role), when the project and its
/// organization exist and are active, the user is a member of the organization, and the
/// project's role for the user is not "no access" (an override with no role). As of the latest
/// committed state, like [`lookup`]. It makes the same four probes whatever it finds, so that
/// a project of another organization, one that does not exist and one the user may not enter
/// cost the same.
pub fn lookup_project(project: pgrx::Uuid, user: &str) -> Option<(pgrx::Uuid, Membership)> {
    let c = catalog();
    if c.project_members == pg_sys::InvalidOid || c.project_members_pkey == pg_sys::InvalidOid {
        return None;
    }
    let roles_at = roles_generation();
    with_latest_snapshot(|snapshot| {
        // SAFETY: the snapshot is registered; each key holds a datum of its column's type.
        unsafe {
            let (parent, project_active) =
                org_row(&c, snapshot, project, false).map_or((None, false), |r| (r.parent, r.active));
            let org = parent.unwrap_or(pgrx::Uuid::from_bytes([0; 16]));
            let org_role = member_role(&c, snapshot, org, user);
            let org_is_active = org_active(&c, snapshot, org);
            let overridden = project_role(&c, snapshot, project, user);
            if parent.is_none() || !project_active || !org_is_active {
                return None;
            }
            let org_role = org_role?;
            let role = match overridden {
                Some(None) => return None,
                Some(Some(role)) => role,
                None => org_role.clone(),
            };
            let mut m = role_of(&c, snapshot, roles_at, &role)?;
            if role != org_role {
                let o = role_of(&c, snapshot, roles_at, &org_role)?;
                m.org = Some(OrgRole { role: o.role, permissions: o.permissions });
            }
            Some((org, m))
        }
    })
}

/// (catalog schema, project, user) -> (the project's organization, the generation the access was
/// checked at, the membership then).
type ProjectsChecked = foldhash::HashMap<(pg_sys::Oid, [u8; 16], String), (pgrx::Uuid, u64, Membership)>;

thread_local! {
    /// Accesses found by [`lookup_project_at`].
    static PROJECT_FOUND: RefCell<ProjectsChecked> = RefCell::new(ProjectsChecked::default());
}

/// [`lookup_project`], and the generation of the pair it holds at (read before the lookup that
/// answered, [`crate::context::context_generation`]); remembered by the backend while that
/// generation stays, as [`lookup_at`] does for organizations. The organization is known only
/// from the project: a first lookup finds it, and the answer is the second's, after the
/// generation was read.
pub fn lookup_project_at(project: pgrx::Uuid, user: &str) -> Option<(pgrx::Uuid, Membership, u64)> {
    let c = catalog();
    let key = (c.schema, *project.as_bytes(), user.to_string());
    let remember = !changes_pending();
    if remember {
        let hit = PROJECT_FOUND.with(|f| f.borrow().get(&key).cloned());
        if let Some((org, generation, m)) = hit {
            if crate::context::context_generation(&org, Some(&project)) == generation {
                return Some((org, m, generation));
            }
        }
    }
    let (org, _) = lookup_project(project, user)?;
    let generation = crate::context::context_generation(&org, Some(&project));
    let (again, m) = lookup_project(project, user)?;
    if again != org {
        return None;
    }
    if remember && may_remember() {
        PROJECT_FOUND.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() >= 4096 {
                f.clear();
            }
            f.insert(key, (org, generation, m.clone()));
        });
    }
    Some((org, m, generation))
}

/// The `key` of organization `id` (None: none, or no such row), read from the table directly:
/// no SPI, so also in a parallel worker (which reads with the query's snapshot; a key never
/// changes once its organization exists).
pub fn org_key(id: pgrx::Uuid) -> Option<String> {
    let c = catalog();
    // SAFETY: reads backend-local state; the snapshots are registered for the scan.
    unsafe {
        if pg_sys::IsInParallelMode() {
            let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetActiveSnapshot());
            let found = org_row(&c, snapshot, id, true).and_then(|r| r.key);
            pg_sys::UnregisterSnapshot(snapshot);
            found
        } else {
            with_latest_snapshot(|snapshot| org_row(&c, snapshot, id, true).and_then(|r| r.key))
        }
    }
}

/// What the context functions read of a row of `tenancy.organizations`.
struct OrgRow {
    /// The project's organization (None: an organization).
    parent: Option<pgrx::Uuid>,
    active: bool,
    /// Read only when asked for (a database whose extension predates 0.5.0 has no `key`).
    key: Option<String>,
}

/// The row of organization `id`, read through the primary key (None: no such row); its `key`
/// with `with_key`.
///
/// # Safety
/// `snapshot` must be registered.
unsafe fn org_row(c: &Catalog, snapshot: pg_sys::Snapshot, id: pgrx::Uuid, with_key: bool) -> Option<OrgRow> {
    unsafe {
        let orgs = Table::open(c.organizations);
        let (org_id, parent_id, status) = (orgs.attnum(c"id"), orgs.attnum(c"parent_id"), orgs.attnum(c"status"));
        let key = with_key.then(|| orgs.attnum(c"key"));
        let mut found = None;
        orgs.scan(
            c.organizations_pkey,
            snapshot,
            &mut [equal_key(org_id, pg_sys::Oid::from(pg_sys::F_UUID_EQ), id.into_datum().expect("uuid datum"))],
            |t, d| {
                found = Some(OrgRow {
                    parent: column::<pgrx::Uuid>(t, d, parent_id),
                    active: column::<String>(t, d, status).as_deref() == Some("active"),
                    key: key.and_then(|key| column::<String>(t, d, key)),
                });
                false
            },
        );
        found
    }
}

/// The override of `user`'s role in `project`: None without one, Some(None) for "no access".
///
/// # Safety
/// `snapshot` must be registered, and `c.project_members` valid.
unsafe fn project_role(
    c: &Catalog,
    snapshot: pg_sys::Snapshot,
    project: pgrx::Uuid,
    user: &str,
) -> Option<Option<String>> {
    unsafe {
        let members = Table::open(c.project_members);
        let (m_project, m_user, m_role) =
            (members.attnum(c"project_id"), members.attnum(c"user_id"), members.attnum(c"role"));
        let mut found = None;
        let mut keys = [
            equal_key(m_project, pg_sys::Oid::from(pg_sys::F_UUID_EQ), project.into_datum().expect("uuid datum")),
            equal_key(m_user, pg_sys::Oid::from(pg_sys::F_TEXTEQ), user.into_datum().expect("text datum")),
        ];
        members.scan(c.project_members_pkey, snapshot, &mut keys, |t, d| {
            found = Some(column::<String>(t, d, m_role));
            false
        });
        found
    }
}

/// A membership in `org` with member role `role`, vouched for by a signed token whose key the DBA
/// trusts for roles ([`crate::token`]): the organization must exist and be active and the role
/// must exist; nobody need be listed in `tenancy.members`.
pub fn lookup_trusted(org: pgrx::Uuid, role: &str) -> Option<Membership> {
    let c = catalog();
    let roles_at = roles_generation();
    with_latest_snapshot(|snapshot| {
        // SAFETY: as in lookup.
        unsafe {
            if !org_active(&c, snapshot, org) {
                return None;
            }
            role_of(&c, snapshot, roles_at, role)
        }
    })
}

/// (organization, user) -> (the generation it was checked at, the membership then).
type Checked = foldhash::HashMap<(pg_sys::Oid, [u8; 16], String), (u64, Membership)>;

thread_local! {
    /// Memberships found by [`lookup_at`], by (catalog schema, organization, user).
    static FOUND: RefCell<Checked> = RefCell::new(Checked::default());
}

/// [`lookup`], remembered while the organization's generation stays `generation` (read by the
/// caller before this call): whatever could take the membership away moves it. Remembered per
/// backend, and for every backend in shared memory ([`crate::membership_cache`]), so that a new
/// connection's first context in an organization costs no index scan either. Only memberships
/// found are remembered; a user added later is found by the next call. A transaction that
/// changed the catalog itself always looks up, and remembers nothing: what it sees is not
/// committed, and may never be.
pub fn lookup_at(org: pgrx::Uuid, user: &str, generation: u64) -> Option<Membership> {
    if changes_pending() {
        return lookup(org, user);
    }
    let c = catalog();
    let key = (c.schema, *org.as_bytes(), user.to_string());
    let hit = FOUND.with(|f| f.borrow().get(&key).filter(|(g, _)| *g == generation).map(|(_, m)| m.clone()));
    if hit.is_some() {
        return hit;
    }
    // SAFETY: reads backend-local state.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let shared_key = crate::membership_cache::Key {
        db,
        schema: c.schema.to_u32(),
        members: c.members.to_u32(),
        org: org.as_bytes(),
        user,
    };
    let found = match generations().found.get(&shared_key, generation) {
        // The member's role as found by another backend at this generation: its rank and
        // permissions are the roles' as now (a change to the roles moves every generation).
        Some(role) => {
            let roles_at = roles_generation();
            match cached_roles(&c, roles_at) {
                Some(roles) => roles.membership(&role),
                None => with_latest_snapshot(|snapshot| {
                    // SAFETY: the snapshot is registered.
                    unsafe { role_of(&c, snapshot, roles_at, &role) }
                }),
            }
        }
        None => {
            let found = lookup(org, user);
            if let Some(m) = found.as_ref().filter(|_| may_remember()) {
                generations().found.put(&shared_key, generation, &m.role);
            }
            found
        }
    }?;
    if !may_remember() {
        return Some(found);
    }
    FOUND.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() >= 4096 {
            f.clear();
        }
        f.insert(key, (generation, found.clone()));
    });
    Some(found)
}

/// Runs `f` with the latest snapshot, registered (the catalog as committed now, not as the
/// transaction's snapshot saw it).
pub(crate) fn with_latest_snapshot<R>(f: impl FnOnce(pg_sys::Snapshot) -> R) -> R {
    // SAFETY: the latest snapshot is registered for the scans and unregistered after them (on an
    // error, the transaction's abort releases it).
    unsafe {
        let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot());
        let result = f(snapshot);
        pg_sys::UnregisterSnapshot(snapshot);
        result
    }
}

/// Whether `org` exists, is active, and is an organization (not a project).
///
/// # Safety
/// `snapshot` must be registered.
unsafe fn org_active(c: &Catalog, snapshot: pg_sys::Snapshot, org: pgrx::Uuid) -> bool {
    unsafe {
        // A project (a row with a parent) is entered with a project context only.
        org_row(c, snapshot, org, false).is_some_and(|r| r.active && r.parent.is_none())
    }
}

/// The roles as a backend last read them: every role's rank (the `role_ranks` of a membership)
/// and each role's permissions.
struct Roles {
    schema: pg_sys::Oid,
    /// The roles' generation before they were read.
    generation: u64,
    ranks: String,
    permissions: foldhash::HashMap<String, String>,
}

thread_local! {
    static ROLES: RefCell<Option<std::rc::Rc<Roles>>> = const { RefCell::new(None) };
}

/// The current generation of the roles.
fn roles_generation() -> u64 {
    generations().roles.load(Ordering::Acquire)
}

/// The membership of a member with role `role`: every role's rank and this role's permissions
/// (None: no such role). The roles are read once per backend and generation of the roles
/// (`generation`, read by the caller before it took `snapshot`), and on every call by a
/// transaction that changed them.
///
/// # Safety
/// `snapshot` must be registered.
unsafe fn role_of(c: &Catalog, snapshot: pg_sys::Snapshot, generation: u64, role: &str) -> Option<Membership> {
    let roles = match cached_roles(c, generation) {
        Some(roles) => roles,
        None => {
            // SAFETY: as the caller promised.
            let roles = std::rc::Rc::new(unsafe { read_roles(c, snapshot, generation) });
            if may_remember() {
                ROLES.with(|r| *r.borrow_mut() = Some(roles.clone()));
            }
            roles
        }
    };
    roles.membership(role)
}

/// The roles this backend read at `generation`, unless this transaction changed them.
fn cached_roles(c: &Catalog, generation: u64) -> Option<std::rc::Rc<Roles>> {
    ROLES
        .with(|r| r.borrow().clone())
        .filter(|r| r.schema == c.schema && r.generation == generation && !changes_pending())
}

impl Roles {
    fn membership(&self, role: &str) -> Option<Membership> {
        let permissions = self.permissions.get(role)?.clone();
        Some(Membership { role: role.to_string(), role_ranks: self.ranks.clone(), permissions, org: None })
    }
}

/// # Safety
/// `snapshot` must be registered.
unsafe fn read_roles(c: &Catalog, snapshot: pg_sys::Snapshot, generation: u64) -> Roles {
    unsafe {
        let roles = Table::open(c.roles);
        let (r_name, r_rank, r_perms) = (roles.attnum(c"name"), roles.attnum(c"rank"), roles.attnum(c"permissions"));
        let mut ranks: Vec<(i32, String)> = Vec::new();
        let mut permissions = foldhash::HashMap::default();
        roles.scan(pg_sys::InvalidOid, snapshot, &mut [], |t, d| {
            let name = column::<String>(t, d, r_name).unwrap_or_default();
            let perms: Vec<Option<String>> = column(t, d, r_perms).unwrap_or_default();
            permissions.insert(name.clone(), perms.into_iter().flatten().collect::<Vec<_>>().join(","));
            ranks.push((column::<i32>(t, d, r_rank).unwrap_or(0), name));
            true
        });
        ranks.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let ranks = ranks.iter().map(|(rank, name)| format!("{name}:{rank}")).collect::<Vec<_>>().join(",");
        Roles { schema: c.schema, generation, ranks, permissions }
    }
}
