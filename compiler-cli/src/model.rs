//! The compiled model: what [`crate::check`] resolves policy files and a schema into, and
//! what [`crate::emit`] turns into SQL. Plain data; no rule lives here.

pub use crate::policy::Level;
use crate::policy::{Command, MEMBER_ROLES};
use crate::schema::QualifiedName;
use std::collections::BTreeMap;

/// The minimum member role a command needs on a tenant table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinRole(pub String);

impl MinRole {
    /// True when every member satisfies it, so no role check needs to be emitted.
    pub fn is_lowest(&self) -> bool {
        self.0 == MEMBER_ROLES[MEMBER_ROLES.len() - 1]
    }
}

/// A command's compiled rule: every part must hold.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub role: MinRole,
    pub permission: Option<String>,
    /// Column that must equal `tenancy.current_user_id()`.
    pub owner: Option<String>,
    /// A checked predicate, with context calls wrapped to run once per statement.
    pub check: Option<String>,
    /// Columns the rule filters on (owner column, predicate columns).
    pub columns: Vec<String>,
}

/// The type of a tenant column, and so what the policies compare it with: the organization's
/// uuid (`tenancy.current_org()`), or the application's own key of it, as text
/// (`tenancy.current_org_key()`, for text and varchar columns) or as a number
/// (`tenancy.current_org_bigint()`, for smallint, integer and bigint columns). The column side
/// is never cast, so the comparison stays an index condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TenantKey {
    #[default]
    Uuid,
    Text,
    Integer,
}

impl TenantKey {
    /// The key type of a column of type `data_type` (as the catalog spells it), if it can be one.
    pub fn of_type(data_type: &str) -> Option<TenantKey> {
        match crate::schema::builtin_type(data_type)? {
            "uuid" => Some(TenantKey::Uuid),
            "text" => Some(TenantKey::Text),
            "smallint" | "integer" | "bigint" => Some(TenantKey::Integer),
            _ => None,
        }
    }

    /// The context function a tenant column of this type is compared with.
    pub fn reader(self) -> &'static str {
        match self {
            TenantKey::Uuid => "tenancy.current_org()",
            TenantKey::Text => "tenancy.current_org_key()",
            TenantKey::Integer => "tenancy.current_org_bigint()",
        }
    }

    /// The context function a tenant column of this type is compared with at `level`: the
    /// project readers for project-level tables, else the organization's ([`TenantKey::reader`]).
    /// `None` is a policy set without `[projects]`.
    pub fn reader_at(self, level: Option<Level>) -> &'static str {
        match (level, self) {
            (Some(Level::Project), TenantKey::Uuid) => "tenancy.current_project()",
            (Some(Level::Project), TenantKey::Text) => "tenancy.current_project_key()",
            (Some(Level::Project), TenantKey::Integer) => "tenancy.current_project_bigint()",
            (None | Some(Level::Organization), _) => self.reader(),
        }
    }
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per table: boxing would buy nothing
pub enum CompiledKind {
    Tenant {
        column: String,
        /// The tenant column's type: what the policies compare it with.
        key: TenantKey,
        /// With `[projects]`: whether rows belong to organizations or projects (None without).
        level: Option<Level>,
        /// Emit an index on the tenant column (none leads with it yet).
        add_index: bool,
        /// Emit SET NOT NULL on the tenant column.
        set_not_null: bool,
        /// Per command: `None` when the command is not allowed.
        commands: BTreeMap<Command, Option<CompiledRule>>,
        /// Columns that rules require to hold the acting user: defaulted to it.
        owner_columns: Vec<String>,
        /// Indexes to emit: for foreign keys, and for the columns rules filter on (led by the
        /// tenant column), where no index leads with those columns yet.
        extra_indexes: Vec<Vec<String>>,
        /// Shareable tables: how rows are shared.
        sharing: Option<Sharing>,
        /// Foreign keys to other tenant tables without the tenant column, which the policies
        /// make safe.
        references: Vec<Reference>,
        /// Rows whose tenant column is NULL are global: readable by every organization.
        global_rows: bool,
        /// NULL-keyed rows belong to the user in this column (`user_rows`), and its type ([`crate::check`]'s user id types: text, uuid, integer, bigint).
        user_rows: Option<(String, String)>,
    },
    Global,
    /// Application-wide: the application roles read (and the writers write) every row.
    Unscoped {
        reason: String,
    },
    /// The application's users: each user reads their own row (and, with `co_members`, the
    /// rows of the current organization's members) and writes only their own.
    Identity {
        /// The column holding the user's id, and whether it is text (else compared as `::text`).
        column: String,
        text: bool,
        co_members: bool,
    },
    /// A tenant table without a tenant column: each row belongs to the organization of the row
    /// its foreign key `parent` references (a tenant table with a tenant column).
    Child {
        parent: Reference,
        /// Its other foreign keys to tenant and child tables, which the policies make safe.
        references: Vec<Reference>,
        commands: BTreeMap<Command, Option<CompiledRule>>,
        owner_columns: Vec<String>,
        extra_indexes: Vec<Vec<String>>,
    },
}

/// A foreign key to a tenant table that leaves out the tenant column. The policies make it safe
/// without changing the keys: INSERT and UPDATE require the referenced row to belong to the
/// current organization (an index probe on the target's key), so no row can point into another
/// organization, and another organization's key is refused exactly like one that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub columns: Vec<String>,
    pub target: QualifiedName,
    pub target_columns: Vec<String>,
    pub target_tenant: String,
    /// The type of the target's tenant column.
    pub target_key: TenantKey,
    /// The target's NULL-keyed rows are global: they may be referenced too.
    pub target_global: bool,
    /// The target's level (None without `[projects]`): which reader its tenant column is
    /// compared with.
    pub target_level: Option<Level>,
    /// The target is a child table: its rows belong through this foreign key of its own (to a
    /// tenant table), whose tenant, key type, global rows and level the fields above repeat.
    pub via: Option<Box<Reference>>,
}

/// A one-column foreign key from a governed table to an identity table. PostgreSQL checks it as
/// the table's owner, who sees every user; a trigger checks first, as the writer, that the user
/// is one the writer sees (themselves or a member of the current organization), and refuses
/// another with the foreign key's own error, so that a user id outside the organization reads
/// exactly like one that does not exist. Only a changed value is checked: a row keeps pointing at
/// a user who has since left the organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserReference {
    pub column: String,
    /// The foreign key's name, for the error.
    pub constraint: String,
    pub target: QualifiedName,
    pub target_column: String,
    /// The target column's SQL type, to compare without a cast on its side.
    pub target_type: String,
}

/// How a shareable table's rows are shared (`tenancy.enable_sharing()`).
#[derive(Debug, Clone)]
pub struct Sharing {
    /// With the tenant column, identifies a row; shares name rows by it.
    pub id_column: String,
    /// Its SQL type, to read share row ids back (`row_id::uuid`).
    pub id_type: String,
    /// Emit an index on the id column (shared rows are looked up by id).
    pub add_id_index: bool,
    /// `'public'` rows are readable by every organization.
    pub visibility_column: Option<String>,
    /// Lets members below admin share rows.
    pub share_permission: Option<String>,
}

/// A resource counted from a tenant table (`SELECT tenancy.enable_quota(...)`).
#[derive(Debug, Clone)]
pub struct CompiledQuota {
    pub resource: String,
    pub table: QualifiedName,
    pub tenant_column: String,
    pub sum_column: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CompiledTable {
    pub name: QualifiedName,
    pub kind: CompiledKind,
    /// The application roles that may write this table, and those that may only read it.
    pub read_write: Vec<String>,
    pub read_only: Vec<String>,
    /// Partitions (at any depth) the policies cover with this table: they get its policies, so
    /// that reading one directly is governed like reading the table, and no grants.
    pub partitions: Vec<QualifiedName>,
    /// Its `globally_unique` keys: (columns as `a, b`, reason), recorded for lint.
    pub waivers: Vec<(String, String)>,
    /// Tenant and child tables: foreign keys to identity tables, checked as the writer.
    pub user_references: Vec<UserReference>,
}

impl CompiledTable {
    /// Every application role that may read the table, sorted.
    pub fn readers(&self) -> Vec<String> {
        sorted_union(&self.read_write, &self.read_only)
    }

    /// The roles a command's policy is for: the readers for SELECT, the writers otherwise.
    pub fn roles_for(&self, command: Command) -> Vec<String> {
        if command == Command::Select {
            self.readers()
        } else {
            self.read_write.clone()
        }
    }
}

/// Everything [`crate::emit`] needs, in a deterministic order.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub schemas: Vec<String>,
    pub read_write: Vec<String>,
    pub read_only: Vec<String>,
    /// Roles that may keep a session context (`[roles] session`).
    pub session: Vec<String>,
    /// Roles that start contexts with signed tokens only (`[roles.context]`: `"token"`).
    pub token_only: Vec<String>,
    pub tables: Vec<CompiledTable>,
    pub quotas: Vec<CompiledQuota>,
    /// Metrics recorded from tenant tables (`SELECT tenancy.enable_usage(...)`).
    pub usage: Vec<CompiledQuota>,
    /// Views over governed tables: made `security_invoker` so the tables' policies apply.
    pub views: Vec<QualifiedName>,
    /// `[materialized_views]`: materialized views of governed tables the application roles read
    /// whole on purpose, with the reason (recorded for lint).
    pub materialized_views: Vec<(QualifiedName, String)>,
    /// Names of the relations the schema already has (tables, views, indexes, with the table of
    /// each index), which the indexes the compiler adds must not take.
    pub taken_names: std::collections::BTreeMap<QualifiedName, Option<QualifiedName>>,
    /// The application's own organizations and memberships, kept in the extension's tables.
    pub sync: SyncMaps,
    /// `[lookups]`: functions that find an organization by an exact key before any context.
    pub lookups: Vec<CompiledLookup>,
    /// `[services]`: (name, member role, application roles), written to `tenancy.services`.
    pub services: Vec<(String, String, Vec<String>)>,
}

/// A `[lookups]` entry, checked.
#[derive(Debug, Clone)]
pub struct CompiledLookup {
    pub name: String,
    pub table: QualifiedName,
    pub key: String,
    /// The argument's SQL type (the key column's, without a length).
    pub key_type: String,
    /// None on an identity table: the lookup returns the user only (`org_id` NULL).
    pub organization: Option<String>,
    /// The organization column's type (its value is mapped to tenancy's uuid).
    pub organization_key: TenantKey,
    pub user: Option<String>,
    /// The table is project-level and `organization` its tenant column: the lookup returns the
    /// project (`project_id`) and its organization (`org_id`).
    pub project: bool,
}

/// `[organizations]` and `[memberships]`, checked against the schema.
#[derive(Debug, Clone, Default)]
pub struct SyncMaps {
    pub organizations: Option<OrganizationsSync>,
    pub memberships: Option<MembershipsSync>,
    pub projects: Option<ProjectsSync>,
    pub project_memberships: Option<ProjectMembershipsSync>,
}

/// `[projects]`, checked: kept in `tenancy.organizations` with `parent_id` their organization.
#[derive(Debug, Clone)]
pub struct ProjectsSync {
    pub table: QualifiedName,
    pub id: String,
    /// The id column's type: a uuid is the project's id, any other its `key`.
    pub key: TenantKey,
    /// The column holding the organization's id, and its key type (the organizations').
    pub organization: String,
    pub organization_key: TenantKey,
    pub name: String,
    pub slug: Option<String>,
    pub active: Option<String>,
}

/// `[project_memberships]`, checked: kept in `tenancy.project_members`.
#[derive(Debug, Clone)]
pub struct ProjectMembershipsSync {
    pub table: QualifiedName,
    pub project: String,
    /// The projects' key type (the project column holds a project's id).
    pub project_key: TenantKey,
    pub user: String,
    pub role: String,
    /// (application value as text, member role or `none`); empty: the values are roles.
    pub roles: Vec<(String, String)>,
    pub active: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OrganizationsSync {
    pub table: QualifiedName,
    pub id: String,
    /// The id column's type: a uuid is the organization's id, any other key its `key`.
    pub key: TenantKey,
    pub name: String,
    pub slug: Option<String>,
    /// A checked predicate over the row (unqualified columns).
    pub active: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MembershipsSync {
    pub table: QualifiedName,
    pub organization: String,
    pub organization_key: TenantKey,
    pub user: String,
    pub role: Option<String>,
    /// (application value as text, member role); empty: the values are member roles.
    pub roles: Vec<(String, String)>,
    pub default_role: String,
    pub active: Option<String>,
}

impl Compiled {
    pub fn app_roles(&self) -> Vec<String> {
        sorted_union(&self.read_write, &self.read_only)
    }
}

/// The roles of both lists, sorted, each once.
fn sorted_union(a: &[String], b: &[String]) -> Vec<String> {
    let mut all: Vec<String> = a.iter().chain(b).cloned().collect();
    all.sort();
    all.dedup();
    all
}
