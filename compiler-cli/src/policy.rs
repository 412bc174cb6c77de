//! The policy file format (TOML). Every value keeps its byte span so that mistakes are reported
//! at their place in the file. See README.md, "Policy file reference".

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// One policy file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Schemas pg_tenancy governs: every table in them must be covered by a policy.
    pub schemas: Option<Spanned<Vec<Spanned<String>>>>,
    /// Name of the tenant column (default `org_id`). With `[projects]`, the column of the
    /// project-level tables.
    pub tenant_column: Option<Spanned<String>>,
    /// With `[projects]`: the tenant column of the organization-level tables (those with
    /// `level = "organization"` that do not set their own `tenant_column`).
    pub organization_column: Option<Spanned<String>>,
    /// Tables of the governed schemas that no `[tables]` entry names and that have the tenant
    /// column are tenant tables with the defaults (`kind = "tenant"`). Tables without it must
    /// still be listed, each with its kind.
    pub implicit_tenant_tables: Option<Spanned<bool>>,
    /// Why one-column uuid primary keys without a server default hold random ids that the
    /// application generates (Django's `UUIDField(default=uuid.uuid4)`, Prisma's
    /// `@default(uuid())`): such keys are then accepted like `DEFAULT gen_random_uuid()` ones,
    /// and `tenancy apply` records them, with this reason, as waived.
    pub random_ids: Option<Spanned<String>>,
    /// The database roles the application connects as.
    pub roles: Option<Spanned<AppRoles>>,
    /// Minimum member role per command for tenant tables that do not say otherwise.
    pub defaults: Option<Spanned<Commands>>,
    #[serde(default)]
    pub tables: BTreeMap<Spanned<String>, Spanned<TablePolicy>>,
    /// Resources counted from tenant tables, enforced by the extension's quota trigger.
    #[serde(default)]
    pub quotas: BTreeMap<Spanned<String>, Spanned<QuotaSource>>,
    /// Metrics recorded as rows are inserted into tenant tables (one unit per row, or the sum of
    /// a column), by the extension's usage trigger.
    #[serde(default)]
    pub usage: BTreeMap<Spanned<String>, Spanned<QuotaSource>>,
    /// The application's own organizations table, kept in `tenancy.organizations`.
    pub organizations: Option<Spanned<OrganizationsMap>>,
    /// The application's own memberships table, kept in `tenancy.members`.
    pub memberships: Option<Spanned<MembershipsMap>>,
    /// The application's projects table: a second tenant level under the organizations, kept
    /// in `tenancy.organizations` as rows whose `parent_id` is their organization.
    pub projects: Option<Spanned<ProjectsMap>>,
    /// The application's per-project roles, kept in `tenancy.project_members`. Needs `[projects]`.
    pub project_memberships: Option<Spanned<ProjectMembershipsMap>>,
    /// Lookups before the tenant is known (an API key -> its organization), each compiled into
    /// a function the application roles may call.
    #[serde(default)]
    pub lookups: BTreeMap<Spanned<String>, Spanned<Lookup>>,
    /// Materialized views of governed tables that the application roles read whole on purpose
    /// (a job's cross-organization snapshot), each with the reason: row-level security does not
    /// apply to a materialized view, so without an entry one is an error.
    #[serde(default)]
    pub materialized_views: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Services that act in an organization without a user (`tenancy.set_service_context()`).
    #[serde(default)]
    pub services: BTreeMap<Spanned<String>, Spanned<Service>>,
}

/// `[services] billing = { roles = ["app_jobs"], member_role = "admin" }`: the application roles
/// that may call `tenancy.set_service_context(org, 'billing')`, and the member role the service
/// acts with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub roles: Vec<Spanned<String>>,
    pub member_role: Spanned<String>,
}

/// `[lookups] api_key = { table = "api_keys", key = "token_digest", organization = "org_id",
/// user = "user_id" }`: `tenancy apply` creates `<schema>.tenancy_lookup_api_key(key)`, which
/// returns the organization (and user) of the row whose key column equals the key exactly, and
/// nothing else, whatever the context.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    pub table: Spanned<String>,
    /// The column compared with the argument (text, varchar, uuid or bytea), unique.
    pub key: Spanned<String>,
    /// The column holding the organization id (default: the table's tenant column).
    pub organization: Option<Spanned<String>>,
    /// A column holding a user id, returned too.
    pub user: Option<Spanned<String>>,
}

/// `[organizations]`: the application's organizations table. `tenancy apply` copies its rows
/// into `tenancy.organizations` (keeping their ids) and a trigger keeps them in sync.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationsMap {
    pub table: Spanned<String>,
    /// The uuid id column (default `id`).
    pub id: Option<Spanned<String>>,
    /// The name column (default `name`).
    pub name: Option<Spanned<String>>,
    /// A slug column, if the application has one (else slugs are made from the ids).
    pub slug: Option<Spanned<String>>,
    /// A predicate over the row: organizations it does not hold for are suspended.
    pub active: Option<Spanned<String>>,
}

/// `[memberships]`: the application's memberships table. `tenancy apply` copies its rows into
/// `tenancy.members` and a trigger keeps them in sync, with the rights of whoever writes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipsMap {
    pub table: Spanned<String>,
    /// The column holding the organization's id.
    pub organization: Spanned<String>,
    /// The column holding the user's id (any type: compared as text).
    pub user: Spanned<String>,
    /// The column holding the member's role, if any (else every member has `default_role`).
    pub role: Option<Spanned<String>>,
    /// The application's role values (as text: `"0"`, `"admin"`) and the member role each is;
    /// a value not listed makes no membership. Without it, values are member roles themselves.
    #[serde(default)]
    pub roles: BTreeMap<Spanned<String>, Spanned<String>>,
    /// The member role without a role column (default `member`).
    pub default_role: Option<Spanned<String>>,
    /// A predicate over the row: memberships it does not hold for are not memberships.
    pub active: Option<Spanned<String>>,
}

/// `[projects]`: the application's projects table, each row a project of the organization in
/// its `organization` column. `tenancy apply` copies its rows into `tenancy.organizations` (with
/// `parent_id` the organization's id) and a trigger keeps them in sync.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectsMap {
    pub table: Spanned<String>,
    /// The project's id column (default `id`): a uuid is the project's id, any other its key.
    pub id: Option<Spanned<String>>,
    /// The column holding the project's organization (its `[organizations]` id).
    pub organization: Spanned<String>,
    /// The name column (default `name`).
    pub name: Option<Spanned<String>>,
    pub slug: Option<Spanned<String>>,
    /// A predicate over the row: projects it does not hold for are suspended.
    pub active: Option<Spanned<String>>,
}

/// `[project_memberships]`: per-project roles overriding the organization role. A value mapped to
/// `"none"` takes the project away from the member (a row with a NULL role); a value not listed
/// makes no override.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectMembershipsMap {
    pub table: Spanned<String>,
    /// The column holding the project's id.
    pub project: Spanned<String>,
    /// The column holding the user's id (any type: compared as text).
    pub user: Spanned<String>,
    /// The column holding the member's role in the project.
    pub role: Spanned<String>,
    /// The application's role values and the member role (or `"none"`) each is. Without it,
    /// values are member roles (or `none`) themselves.
    #[serde(default)]
    pub roles: BTreeMap<Spanned<String>, Spanned<String>>,
    /// A predicate over the row: rows it does not hold for make no override.
    pub active: Option<Spanned<String>>,
}

/// The tenant level of a table in a policy set with `[projects]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Rows belong to an organization, whatever its project: compared with the organization
    /// readers, with the organization role.
    Organization,
    /// Rows belong to a project: compared with the project readers, with the effective role.
    Project,
}

impl Level {
    pub fn key(self) -> &'static str {
        match self {
            Level::Organization => "organization",
            Level::Project => "project",
        }
    }
}

/// `[quotas] projects = { table = "projects" }` counts rows;
/// `storage = { table = "files", sum = "size_bytes" }` sums a column. `[usage]` entries have the
/// same shape: one unit of the metric per inserted row, or the row's value of `sum`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSource {
    pub table: Spanned<String>,
    pub sum: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoles {
    #[serde(default)]
    pub read_write: Vec<Spanned<String>>,
    #[serde(default)]
    pub read_only: Vec<Spanned<String>>,
    /// Roles that may keep a context for a whole session (`tenancy.set_session_context()`):
    /// for connections nobody else shares. Others may not (behind a pool it would leak).
    #[serde(default)]
    pub session: Vec<Spanned<String>>,
    /// How each role may start a context: `"any"` (the default: `set_context()` or a token) or
    /// `"token"` (only a signed token: `set_context_token()`).
    #[serde(default)]
    pub context: BTreeMap<Spanned<String>, Spanned<ContextMode>>,
}

/// How a role may start a tenant context (`[roles.context]`).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ContextMode {
    Any,
    Token,
}

/// Who may run a command on a tenant table's rows. Written either as a minimum member role
/// (`"member"`, or `"none"` to disallow the command), or as a table with any of:
/// `role` (minimum member role, default the lowest), `permission` (`tenancy.has_permission()`),
/// `owner` (a column that must hold the acting user: "only the row's creator"), and `check`
/// (a SQL predicate over the row).
#[derive(Debug, Default)]
pub struct CommandRule {
    pub role: Option<Spanned<String>>,
    /// True when written as a plain string: `role`'s span is then the whole value's.
    pub shorthand: bool,
    pub permission: Option<Spanned<String>>,
    pub owner: Option<Spanned<String>>,
    pub check: Option<Spanned<String>>,
}

impl CommandRule {
    /// True for the shorthand `"none"`: the command is not allowed.
    pub fn is_none(&self) -> bool {
        self.shorthand && self.role.as_ref().is_some_and(|r| r.get_ref() == "none")
    }
}

impl<'de> Deserialize<'de> for CommandRule {
    // Hand-written because serde's untagged enums buffer their input, which loses toml's spans.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RuleVisitor;
        impl<'de> serde::de::Visitor<'de> for RuleVisitor {
            type Value = CommandRule;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member role such as \"member\", or a table with role, permission, owner and check")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CommandRule, E> {
                Ok(CommandRule {
                    role: Some(Spanned::new(0..0, v.to_string())),
                    shorthand: true,
                    ..CommandRule::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<CommandRule, A::Error> {
                let mut rule = CommandRule::default();
                while let Some(key) = map.next_key::<String>()? {
                    let slot = match key.as_str() {
                        "role" => &mut rule.role,
                        "permission" => &mut rule.permission,
                        "owner" => &mut rule.owner,
                        "check" => &mut rule.check,
                        other => {
                            return Err(serde::de::Error::unknown_field(
                                other,
                                &["role", "permission", "owner", "check"],
                            ))
                        }
                    };
                    if slot.is_some() {
                        return Err(serde::de::Error::duplicate_field("rule key"));
                    }
                    *slot = Some(map.next_value::<Spanned<String>>()?);
                }
                Ok(rule)
            }
        }
        d.deserialize_any(RuleVisitor)
    }
}

/// A rule per command.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    pub select: Option<Spanned<CommandRule>>,
    pub insert: Option<Spanned<CommandRule>>,
    pub update: Option<Spanned<CommandRule>>,
    pub delete: Option<Spanned<CommandRule>>,
}

impl Commands {
    pub fn get(&self, command: Command) -> Option<&Spanned<CommandRule>> {
        match command {
            Command::Select => self.select.as_ref(),
            Command::Insert => self.insert.as_ref(),
            Command::Update => self.update.as_ref(),
            Command::Delete => self.delete.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// Rows belong to one organization each.
    Tenant,
    /// Reference data readable by every organization, written only by DBAs.
    Global,
    /// A tenant table whose rows its organization can share with others (`tenancy.share()`)
    /// and, with a visibility column, publish to every organization.
    Shareable,
    /// Application-wide rows written without a tenant (audit logs, sessions, jobs): the
    /// application roles read and write them whatever the context. Needs a `reason`.
    Unscoped,
    /// The application's users (identity rows keyed by the user's id): each user reads their own
    /// row and those of the members of the current organization, and writes only their own,
    /// created at sign-up under `tenancy.set_user_context(<new user's id>)`.
    Identity,
}

impl TableKind {
    pub fn key(self) -> &'static str {
        match self {
            TableKind::Tenant => "tenant",
            TableKind::Global => "global",
            TableKind::Shareable => "shareable",
            TableKind::Unscoped => "unscoped",
            TableKind::Identity => "identity",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablePolicy {
    pub kind: Spanned<TableKind>,
    /// Overrides the file's `tenant_column` (or `organization_column`) for this table.
    pub tenant_column: Option<Spanned<String>>,
    /// Override `[roles]` for this table: which application roles may write and which may only
    /// read it (roles in neither get nothing). Each defaults to the top-level list.
    pub read_write: Option<Spanned<Vec<Spanned<String>>>>,
    pub read_only: Option<Spanned<Vec<Spanned<String>>>>,
    /// Shareable tables: the column that, with the tenant column, identifies a row (default `id`).
    pub id_column: Option<Spanned<String>>,
    /// Shareable tables: a text column whose value `'public'` makes a row readable by every
    /// organization.
    pub visibility_column: Option<Spanned<String>>,
    /// Shareable tables: a permission that lets members below admin share rows.
    pub share_permission: Option<Spanned<String>>,
    /// Unique keys without the tenant column that are meant to be unique across organizations
    /// (an API key looked up before the tenant is known): the key's columns (`"a, b"`) and why.
    #[serde(default)]
    pub globally_unique: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Tenant tables: rows whose tenant column is NULL are global (built-in templates, prices):
    /// readable by every organization, written only by DBAs; the column may stay nullable.
    pub global_rows: Option<Spanned<bool>>,
    /// Tenant tables: rows whose tenant column is NULL belong to the user in this column (a
    /// user's personal tokens, files, settings): only that user reaches them, with a context in
    /// any organization or a user-only one (`tenancy.set_user_context()`); the column may stay
    /// nullable.
    pub user_rows: Option<Spanned<String>>,
    /// Tenant tables without a tenant column of their own: the foreign key (its columns, `"a,
    /// b"`) to the tenant table whose row's organization each row belongs to.
    pub parent: Option<Spanned<String>>,
    /// `kind = "identity"`: the column that holds the user's id (default `id`), compared with
    /// `tenancy.current_user_id()` and with the members' user ids.
    pub user_column: Option<Spanned<String>>,
    /// `kind = "identity"`: whether the members of the current organization see each other's
    /// rows (default true); false for rows only their user may read (credentials).
    pub co_members: Option<Spanned<bool>>,
    /// `kind = "unscoped"`: why the table is application-wide (required).
    pub reason: Option<Spanned<String>>,
    // The commands are spelled out rather than `#[serde(flatten)]`ed, which would lose spans.
    pub select: Option<Spanned<CommandRule>>,
    pub insert: Option<Spanned<CommandRule>>,
    pub update: Option<Spanned<CommandRule>>,
    pub delete: Option<Spanned<CommandRule>>,
    // Last, so that the list of keys in an unknown-field error only grows at its end.
    /// With `[projects]`: whether the table's rows belong to organizations or to projects
    /// (default `"project"`; the projects table itself `"organization"`).
    pub level: Option<Spanned<Level>>,
}

impl TablePolicy {
    pub fn command(&self, command: Command) -> Option<&Spanned<CommandRule>> {
        match command {
            Command::Select => self.select.as_ref(),
            Command::Insert => self.insert.as_ref(),
            Command::Update => self.update.as_ref(),
            Command::Delete => self.delete.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    Select,
    Insert,
    Update,
    Delete,
}

impl Command {
    pub const ALL: [Command; 4] = [Command::Select, Command::Insert, Command::Update, Command::Delete];

    pub fn sql(self) -> &'static str {
        match self {
            Command::Select => "SELECT",
            Command::Insert => "INSERT",
            Command::Update => "UPDATE",
            Command::Delete => "DELETE",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Command::Select => "select",
            Command::Insert => "insert",
            Command::Update => "update",
            Command::Delete => "delete",
        }
    }
}

/// The built-in member roles, highest first. `tenancy.has_role()` is hierarchical over them.
pub const MEMBER_ROLES: [&str; 4] = ["owner", "admin", "member", "guest"];
