//! What verify knows of each table: from the compiled policy files when it is given them (the
//! tenant column of each table, its kind and level, its parent, the application's own
//! organizations and projects), else from lint's heuristics (one tenant column name for every
//! table, and what `tenancy apply` wrote in the policies' comments).

use super::Kind;
use crate::model::{Compiled, CompiledKind, TenantKey};
use crate::policy::Level;
use crate::schema::{quote_ident, ForeignKey};
use std::collections::BTreeMap;

pub(super) struct Column {
    pub name: String,
    pub sql_type: String,
    pub not_null: bool,
    pub has_default: bool,
    pub generated: bool,
    /// `GENERATED ALWAYS AS IDENTITY`: takes no value.
    pub identity_always: bool,
    /// A value the column's CHECK constraints or enum type suggest.
    pub suggested: Option<String>,
    /// A domain's base type (`format_type`), whose values the domain takes.
    pub base_type: Option<String>,
}

/// What pg_attribute adds to a column, by name: has a default, is generated, its enum's first
/// label, its one-column CHECK constraints, is `GENERATED ALWAYS AS IDENTITY`, its domain's base
/// type and the domain's CHECK constraints.
type ColumnFacts = (bool, bool, Option<String>, Option<String>, bool, Option<String>, Option<String>);

/// A child table's foreign key to the table its rows belong through.
pub(super) struct Parent {
    pub columns: Vec<String>,
    pub target: String,
    pub target_columns: Vec<String>,
    pub target_tenant: String,
    /// The target has global rows (NULL tenant): so do its children.
    pub target_global: bool,
}

pub(super) struct Table {
    pub name: String,
    /// The table's owner: everything the verifier (a superuser) does to the table's rows runs as
    /// this role, so that the table's own code (triggers, defaults, index expressions, types)
    /// never runs with a superuser's rights.
    pub owner: String,
    pub kind: Kind,
    pub columns: Vec<Column>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Tenant and shareable tables: the column naming the row's organization or project.
    pub tenant: Option<String>,
    /// Child tables: the foreign key their rows belong through.
    pub parent: Option<Parent>,
    /// Rows belong to projects (two levels), not organizations.
    pub project_level: bool,
    /// The tenant column (or the parent's) is a uuid: it holds pg_tenancy's id of the
    /// organization or project, whatever the application's key.
    pub uuid_key: bool,
    /// Rows whose tenant column is NULL are global: every tenant reads them, none writes them.
    pub global_rows: bool,
    /// Identity tables: the column holding the user's id.
    pub identity: Option<String>,
    /// `user_rows`: rows whose tenant column is NULL belong to the user in this column.
    pub user_rows: Option<String>,
    pub id_column: Option<String>,
    pub visibility_column: Option<String>,
    /// Unscoped tables: the policy's reason. Others: why the table cannot be verified yet.
    pub reason: Option<String>,
    /// Its CHECK constraints: each one's name and columns, for rows that must satisfy them.
    pub checks: Vec<(String, Vec<String>)>,
    /// The application's project memberships (`[project_memberships]`): the organization's
    /// admins reach its projects' rows from the organization's context.
    pub org_admins: bool,
    /// The roles the policy files let read the table (None: not known, without them).
    pub readers: Option<Vec<String>>,
}

impl Table {
    /// The text of the tenant (organization or project key) a row `t` of this table belongs to:
    /// its tenant column, or its parent's (NULL under a global parent row; when the parent is not
    /// visible, NULL or, if the parent has global rows, a control character no key holds).
    pub fn owner_sql(&self) -> String {
        match (&self.tenant, &self.parent) {
            (Some(c), _) => format!("t.{}::text", quote_ident(c)),
            (None, Some(p)) => {
                let tenant = format!("p.{}::text", quote_ident(&p.target_tenant));
                let parent = format!(
                    "FROM {} p WHERE {}",
                    p.target,
                    p.columns
                        .iter()
                        .zip(&p.target_columns)
                        .map(|(c, tc)| format!("p.{} = t.{}", quote_ident(tc), quote_ident(c)))
                        .collect::<Vec<_>>()
                        .join(" AND ")
                );
                if p.target_global {
                    // NULL only under a global parent row; a parent out of sight is nobody's.
                    format!("NULLIF(COALESCE((SELECT COALESCE({tenant}, chr(1)) {parent}), chr(2)), chr(1))")
                } else {
                    format!("(SELECT {tenant} {parent})")
                }
            }
            (None, None) => "NULL::text".into(),
        }
    }

    /// [`Table::owner_sql`] for `user` acting for the tenant keyed `own`: on a `user_rows` table,
    /// the user's own NULL-keyed rows are the tenant's own, another user's are `user:<id>`.
    pub fn owner_sql_as(&self, user: &str, own: Option<&str>) -> String {
        match (&self.user_rows, &self.tenant, own) {
            (Some(u), Some(c), Some(own)) => format!(
                "CASE WHEN t.{c} IS NULL AND t.{u}::text = {} THEN {} ELSE COALESCE(t.{c}::text, 'user:' || t.{u}::text) END",
                super::literal(user),
                super::literal(own),
                c = quote_ident(c),
                u = quote_ident(u),
            ),
            _ => self.owner_sql(),
        }
    }

    /// A column an UPDATE can set to itself to touch every row it may.
    pub fn touch_column(&self) -> Option<String> {
        self.tenant
            .clone()
            .or_else(|| self.parent.as_ref().map(|p| p.columns[0].clone()))
            .or_else(|| self.identity.clone())
            .or_else(|| self.columns.iter().find(|c| !c.generated).map(|c| c.name.clone()))
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The tables of the audited schemas (partitions are written and read through their table), in
/// dependency order.
pub(super) fn read_tables(
    tx: &mut postgres::Transaction<'_>,
    schemas: &[String],
    tenant_column: &str,
    compiled: Option<&Compiled>,
) -> Result<Vec<Table>, postgres::Error> {
    // The tables, their columns and foreign keys as the compiler reads them; then what only the
    // verifier needs: defaults, generated columns, values an enum or a CHECK suggests, sharing.
    let (catalog, _) = crate::live::read(tx, schemas)?;
    let model: BTreeMap<String, &crate::model::CompiledTable> =
        compiled.map(|c| c.tables.iter().map(|t| (t.name.to_string(), t)).collect()).unwrap_or_default();
    let mut tables = Vec::new();
    for table in catalog.tables.into_values() {
        let name = table.name.to_string();
        let facts = tx.query_one(
            "SELECT c.relispartition, s.id_column, s.visibility_column, pg_get_userbyid(c.relowner)::text
               FROM pg_class c LEFT JOIN tenancy.shareable_tables s ON s.relation = c.oid
              WHERE c.oid = $1::text::regclass",
            &[&name],
        )?;
        if facts.get::<_, bool>(0) {
            continue; // rows are written and read through the partitioned table
        }
        let extra: BTreeMap<String, ColumnFacts> = tx
            .query(
                "SELECT a.attname::text, a.atthasdef OR a.attidentity <> '', a.attgenerated <> '',
                        (SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = a.atttypid ORDER BY e.enumsortorder LIMIT 1),
                        (SELECT string_agg(pg_get_constraintdef(k.oid), ' ') FROM pg_constraint k
                          WHERE k.conrelid = a.attrelid AND k.contype = 'c' AND k.conkey = ARRAY[a.attnum]),
                        a.attidentity = 'a',
                        (SELECT format_type(d.typbasetype, d.typtypmod) FROM pg_type d
                          WHERE d.oid = a.atttypid AND d.typtype = 'd'),
                        (SELECT string_agg(pg_get_constraintdef(k.oid), ' ') FROM pg_constraint k
                          WHERE k.contypid = a.atttypid AND k.contype = 'c')
                   FROM pg_attribute a
                  WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[&name],
            )?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7))))
            .collect();
        let columns: Vec<Column> = table
            .columns
            .iter()
            .map(|c| {
                let (has_default, generated, label, check, identity_always, base_type, domain_check) =
                    extra.get(&c.name).cloned().unwrap_or_default();
                // An enum's first label, or a value a CHECK constraint (or the domain's) lists.
                let suggested = label
                    .or_else(|| check.as_deref().and_then(check_literal))
                    .or_else(|| domain_check.as_deref().and_then(check_literal));
                Column {
                    name: c.name.clone(),
                    sql_type: c.data_type.clone(),
                    not_null: c.not_null,
                    has_default,
                    generated,
                    identity_always,
                    suggested,
                    base_type,
                }
            })
            .collect();
        let mut t = Table {
            name: name.clone(),
            owner: facts.get(3),
            kind: Kind::Global,
            columns,
            foreign_keys: table.foreign_keys.clone(),
            tenant: None,
            parent: None,
            project_level: false,
            uuid_key: true,
            global_rows: false,
            identity: None,
            user_rows: None,
            id_column: facts.get(1),
            visibility_column: facts.get(2),
            reason: None,
            checks: tx
                .query(
                    "SELECT k.conname::text, array_agg(a.attname::text ORDER BY a.attnum)
                       FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey)
                      WHERE k.conrelid = $1::text::regclass AND k.contype = 'c'
                      GROUP BY k.conname ORDER BY k.conname",
                    &[&name],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
            org_admins: false,
            readers: None,
        };
        t.org_admins = compiled.is_some_and(|c| {
            c.sync.projects.is_some()
                && c.sync.project_memberships.as_ref().is_some_and(|m| m.table.to_string() == name)
        });
        t.readers = model.get(&name).and_then(|c| readers(c));
        match model.get(&name) {
            Some(compiled) => from_model(&mut t, &compiled.kind),
            None => {
                // What `tenancy apply` wrote in the SELECT policy's comment, else the column name.
                let comment: Option<String> = tx
                    .query_opt(
                        "SELECT obj_description(p.oid, 'pg_policy') FROM pg_policy p
                          WHERE p.polrelid = $1::text::regclass AND p.polname = 'tenancy_select'",
                        &[&name],
                    )?
                    .and_then(|r| r.get(0));
                from_heuristics(&mut t, comment.as_deref().unwrap_or(""), tenant_column);
            }
        }
        tables.push(t);
    }
    Ok(order_by_dependencies(tables))
}

/// The roles that may read `c` by its policies: its readers, when its SELECT is allowed.
fn readers(c: &crate::model::CompiledTable) -> Option<Vec<String>> {
    let commands = match &c.kind {
        CompiledKind::Tenant { commands, .. } | CompiledKind::Child { commands, .. } => commands,
        CompiledKind::Identity { .. } => return Some(c.roles_for(crate::policy::Command::Select)),
        CompiledKind::Global | CompiledKind::Unscoped { .. } => return None,
    };
    Some(match commands.get(&crate::policy::Command::Select) {
        Some(Some(_)) => c.roles_for(crate::policy::Command::Select),
        _ => vec![],
    })
}

fn from_model(t: &mut Table, kind: &CompiledKind) {
    match kind {
        CompiledKind::Tenant { column, key, level, sharing, global_rows, user_rows, .. } => {
            t.kind = if sharing.is_some() { Kind::Shareable } else { Kind::Tenant };
            t.uuid_key = *key == TenantKey::Uuid;
            t.tenant = Some(column.clone());
            t.project_level = *level == Some(Level::Project);
            t.global_rows = *global_rows;
            if let Some(s) = sharing {
                t.id_column = Some(s.id_column.clone());
                t.visibility_column = s.visibility_column.clone();
            }
            t.user_rows = user_rows.as_ref().map(|(c, _)| c.clone());
        }
        CompiledKind::Child { parent, .. } => {
            t.kind = Kind::Child;
            t.project_level = parent.target_level == Some(Level::Project);
            t.uuid_key = parent.target_key == TenantKey::Uuid;
            t.parent = Some(Parent {
                columns: parent.columns.clone(),
                target: parent.target.to_string(),
                target_columns: parent.target_columns.clone(),
                target_tenant: parent.target_tenant.clone(),
                target_global: parent.target_global,
            });
            t.global_rows = parent.target_global;
        }
        CompiledKind::Global => t.kind = Kind::Global,
        CompiledKind::Unscoped { reason } => {
            t.kind = Kind::Unscoped;
            t.reason = Some(reason.clone());
        }
        CompiledKind::Identity { column, .. } => {
            t.kind = Kind::Identity;
            t.identity = Some(column.clone());
        }
    }
}

/// Without the policy files: a table is a tenant table when it has the tenant column (of a key
/// type), or when the policies' comment gives its level and tenant column; else it is global.
fn from_heuristics(t: &mut Table, comment: &str, tenant_column: &str) {
    let level = comment.strip_prefix("level: ").map(|rest| rest.split(',').next().unwrap_or("").to_string());
    let commented = comment.split("tenant column: ").nth(1).map(|c| c.trim().to_string());
    let column = commented.or_else(|| {
        t.column(tenant_column).filter(|c| TenantKey::of_type(&c.sql_type).is_some()).map(|_| tenant_column.to_string())
    });
    if let Some(rest) = comment.strip_prefix("unscoped: ") {
        t.kind = Kind::Unscoped;
        t.reason = Some(rest.to_string());
        return;
    }
    if let Some(c) = comment.strip_prefix("identity: ") {
        t.kind = Kind::Identity;
        t.identity = Some(c.trim().to_string());
        return;
    }
    match column {
        Some(c) => {
            t.kind = if t.id_column.is_some() { Kind::Shareable } else { Kind::Tenant };
            let sql_type = t.column(&c).map(|c| c.sql_type.clone()).unwrap_or_default();
            t.tenant = Some(c);
            t.project_level = level.as_deref() == Some("project");
            if let Some(level) = &level {
                // Its rows belong to projects or organizations the policy files name.
                t.reason = Some(format!(
                    "{level}-level table of a two-level policy set: give verify the policy files (--policies), which name the projects"
                ));
            } else if sql_type != "uuid" {
                // Its rows hold the application's key of an organization.
                t.reason = Some(format!(
                    "its tenant column is {sql_type}: give verify the policy files (--policies), which name the application's organizations"
                ));
            }
        }
        None if level.is_some() => {
            t.kind = Kind::Child;
            t.reason = Some(
                "its rows belong through a parent table: give verify the policy files (--policies), which name it"
                    .into(),
            );
        }
        None => t.kind = Kind::Global,
    }
}

/// The first quoted literal of a CHECK constraint that is not a pattern: `status IN ('open',
/// 'done')` suggests `open`.
fn check_literal(check: &str) -> Option<String> {
    let mut rest = check;
    while let Some(start) = rest.find('\'') {
        let after = &rest[start + 1..];
        let end = after.find('\'')?;
        let value = &after[..end];
        if !value.is_empty() && !value.contains(['^', '$', '[', '%', '\\']) {
            return Some(value.to_string());
        }
        rest = &after[end + 1..];
    }
    None
}

/// Parents before children, so a child's foreign keys can point at its parents' fixture rows.
fn order_by_dependencies(mut tables: Vec<Table>) -> Vec<Table> {
    let mut ordered: Vec<Table> = Vec::new();
    while !tables.is_empty() {
        // Whether each foreign key of `t` points at a table written before it (or not audited).
        let ready = |t: &Table, nullable_may_wait: bool| {
            t.foreign_keys.iter().all(|fk| {
                let references = fk.references.to_string();
                references == t.name
                    || ordered.iter().any(|o| o.name == references)
                    || !tables.iter().any(|o| o.name == references)
                    || (nullable_may_wait && fk.columns.iter().all(|c| t.column(c).is_some_and(|c| !c.not_null)))
            })
        };
        // A cycle: first a table on it whose foreign keys into it can stay NULL (a table that
        // merely waits for the cycle would get NULLs it need not have), else the first.
        let on_cycle = |t: &Table| {
            let waits_for = |t: &Table| -> Vec<String> {
                t.foreign_keys
                    .iter()
                    .map(|fk| fk.references.to_string())
                    .filter(|r| *r != t.name && tables.iter().any(|o| o.name == *r))
                    .collect()
            };
            let mut seen: Vec<String> = Vec::new();
            let mut todo = waits_for(t);
            while let Some(name) = todo.pop() {
                if name == t.name {
                    return true;
                }
                if !seen.contains(&name) {
                    if let Some(o) = tables.iter().find(|o| o.name == name) {
                        todo.extend(waits_for(o));
                    }
                    seen.push(name);
                }
            }
            false
        };
        let next = tables
            .iter()
            .position(|t| ready(t, false))
            .or_else(|| tables.iter().position(|t| ready(t, true) && on_cycle(t)))
            .or_else(|| tables.iter().position(|t| ready(t, true)))
            .unwrap_or(0);
        ordered.push(tables.remove(next));
    }
    ordered
}

/// The application roles verify acts as.
pub(super) fn app_roles(
    tx: &mut postgres::Transaction<'_>,
    given: &[String],
    compiled: Option<&Compiled>,
    tables: &[Table],
) -> Result<Vec<String>, postgres::Error> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    if let Some(c) = compiled {
        return Ok(c.app_roles());
    }
    // The application roles as the DBA marked them (`tenancy apply` grants tenancy_writer to the
    // read-write roles and tenancy_reader to the read-only ones), never a role found through the
    // tables' grants or policies: their owner controls those, and verify runs the tables' code as
    // each role it acts as.
    let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    let rows = tx.query(
        "WITH t AS (SELECT n::regclass AS oid FROM unnest($1::text[]) n)
         SELECT DISTINCT r.rolname::text FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid
          WHERE m.roleid IN ('tenancy_writer'::regrole, 'tenancy_reader'::regrole)
            AND NOT r.rolsuper AND r.rolname <> current_user
            AND NOT EXISTS (SELECT FROM pg_class c JOIN t ON t.oid = c.oid WHERE c.relowner = r.oid)
          ORDER BY 1",
        &[&names],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
