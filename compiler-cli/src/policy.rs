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
    /// Name of the tenant column (default `org_id`).
    pub tenant_column: Option<Spanned<String>>,
    /// The database roles the application connects as.
    pub roles: Option<Spanned<AppRoles>>,
    /// Minimum member role per command for tenant tables that do not say otherwise.
    pub defaults: Option<Spanned<Commands>>,
    #[serde(default)]
    pub tables: BTreeMap<Spanned<String>, Spanned<TablePolicy>>,
    /// Resources counted from tenant tables, enforced by the extension's quota trigger.
    #[serde(default)]
    pub quotas: BTreeMap<Spanned<String>, Spanned<QuotaSource>>,
}

/// `[quotas] projects = { table = "projects" }` counts rows;
/// `storage = { table = "files", sum = "size_bytes" }` sums a column.
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
}

/// Minimum member role (`owner`, `admin`, `member`, `guest`) or `none` per command.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    pub select: Option<Spanned<String>>,
    pub insert: Option<Spanned<String>>,
    pub update: Option<Spanned<String>>,
    pub delete: Option<Spanned<String>>,
}

impl Commands {
    pub fn get(&self, command: Command) -> Option<&Spanned<String>> {
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablePolicy {
    pub kind: Spanned<TableKind>,
    /// Overrides the file's `tenant_column` for this table.
    pub tenant_column: Option<Spanned<String>>,
    // The commands are spelled out rather than `#[serde(flatten)]`ed, which would lose spans.
    pub select: Option<Spanned<String>>,
    pub insert: Option<Spanned<String>>,
    pub update: Option<Spanned<String>>,
    pub delete: Option<Spanned<String>>,
}

impl TablePolicy {
    pub fn command(&self, command: Command) -> Option<&Spanned<String>> {
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
