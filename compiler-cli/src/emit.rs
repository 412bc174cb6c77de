//! Turns a [`Compiled`] policy set into SQL a DBA can read, review and re-run: deterministic order,
//! idempotent statements, one commented block per object, in units that `tenancy plan` applies or
//! skips together.
//!
//! Every context function in a policy is wrapped as `(SELECT tenancy.f())`, which PostgreSQL
//! plans as an InitPlan: evaluated once per statement, not once per row, and the tenant column
//! comparison stays indexable.

use crate::check::{Compiled, CompiledKind, CompiledRule, CompiledTable, Sharing};
use crate::hardening;
use crate::policy::Command;
use crate::schema::{quote_ident, QualifiedName};
use std::fmt::Write;

/// Names of the policies we own on each table; other policies are left alone.
pub fn policy_name(command: Command) -> String {
    format!("tenancy_{}", command.key())
}

fn role_list(roles: &[String]) -> String {
    roles.iter().map(|r| quote_ident(r)).collect::<Vec<_>>().join(", ")
}

/// The row predicate for a tenant table command: every part of its rule, each context call
/// wrapped to run once per statement. On a shareable table, SELECT also reaches rows shared with
/// the current organization and public rows, and UPDATE rows shared with it for writing.
fn predicate(
    table: &QualifiedName,
    column: &str,
    rule: &CompiledRule,
    sharing: Option<&Sharing>,
    command: Command,
) -> String {
    let own = format!("{} = (SELECT tenancy.current_org())", quote_ident(column));
    let reach = match (sharing, command) {
        (Some(sharing), Command::Select) => {
            let mut arms = vec![own];
            if let Some(v) = &sharing.visibility_column {
                arms.push(format!("({} = 'public' AND (SELECT tenancy.current_org()) IS NOT NULL)", quote_ident(v)));
            }
            arms.push(shared_arm(table, column, sharing, false));
            format!("({})", arms.join("\n        OR "))
        }
        (Some(sharing), Command::Update) => format!("({own}\n        OR {})", shared_arm(table, column, sharing, true)),
        _ => own,
    };
    let mut parts = vec![reach];
    if !rule.role.is_lowest() {
        parts.push(format!("(SELECT tenancy.has_role({}))", literal(&rule.role.0)));
    }
    if let Some(p) = &rule.permission {
        parts.push(format!("(SELECT tenancy.has_permission({}))", literal(p)));
    }
    if let Some(o) = &rule.owner {
        parts.push(format!("{} = (SELECT tenancy.current_user_id())", quote_ident(o)));
    }
    if let Some(c) = &rule.check {
        parts.push(format!("({c})"));
    }
    parts.join(" AND ")
}

/// What makes a [`crate::check::Reference`] safe: the referenced row exists in the current
/// organization (or the foreign key's columns hold a NULL, which references nothing). One probe
/// of the target's unique index on its key; the target's own policies apply too. Another
/// organization's key fails exactly as a missing one does, before the foreign key is checked.
fn reference_check(table: &QualifiedName, r: &crate::check::Reference) -> String {
    let this = quote_ident(&table.name);
    let nulls: Vec<String> = r.columns.iter().map(|c| format!("{this}.{} IS NULL", quote_ident(c))).collect();
    let matches: Vec<String> = r
        .columns
        .iter()
        .zip(&r.target_columns)
        .map(|(c, t)| format!("t.{} = {this}.{}", quote_ident(t), quote_ident(c)))
        .collect();
    format!(
        "({} OR EXISTS (SELECT FROM {} t WHERE {} AND t.{} = (SELECT tenancy.current_org())))",
        nulls.join(" OR "),
        r.target,
        matches.join(" AND "),
        quote_ident(&r.target_tenant)
    )
}

/// Rows shared with the current organization (for writing, with `write`). The array is computed
/// once per statement and drives an index scan on the id column; the correlated check then
/// makes sure the row's organization is the one that shared it. It runs only for rows whose id
/// is in the array, so it is one index probe per such row: `OFFSET 0` keeps the planner from
/// hashing every share of the organization instead, which costs more than the probes it saves
/// (measured: about 3.5 µs per statement on a lookup, see bench/rls.sh).
fn shared_arm(table: &QualifiedName, column: &str, sharing: &Sharing, write: bool) -> String {
    let shares = format!(
        "FROM tenancy.received_shares s WHERE s.relation = {}::regclass{}",
        literal(&table.to_string()),
        if write { " AND s.can_write" } else { "" }
    );
    let this = quote_ident(&table.name);
    let id = quote_ident(&sharing.id_column);
    format!(
        "({id} = ANY (ARRAY(SELECT s.row_id::{} {shares}))\n            AND EXISTS (SELECT {shares} AND s.owner_org = {this}.{} AND s.row_id = {this}.{id}::text OFFSET 0))",
        sharing.id_type,
        quote_ident(column)
    )
}

/// What a block of statements changes, so `tenancy plan` can tell whether it changes anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// The database as a whole: role memberships and what PUBLIC may use.
    Database,
    Schema(String),
    /// A table or a view, as SQL (`app.projects`).
    Relation(String),
}

/// Statements about one object, in units that are applied (or skipped) together: a policy's
/// `DROP POLICY IF EXISTS` and `CREATE POLICY`, a table's `REVOKE` and `GRANT`s, one `ALTER`.
#[derive(Debug, Clone)]
pub struct Block {
    pub header: Option<String>,
    pub object: Object,
    pub units: Vec<Vec<String>>,
}

/// The whole script: `BEGIN`, a check that the extension is installed, each table, `COMMIT`.
pub fn script(compiled: &Compiled, origin: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "-- Generated by tenancy {} from {origin}.", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "-- Do not edit: change the policy files and compile again.");
    out.push_str("BEGIN;\n\n");
    out.push_str(
        "DO $$\nBEGIN\n    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_tenancy') THEN\n        RAISE EXCEPTION 'the pg_tenancy extension is not installed in this database'\n            USING HINT = 'Run CREATE EXTENSION pg_tenancy as a superuser first.';\n    END IF;\nEND\n$$;\n\n",
    );
    out.push_str(&render(&blocks(compiled)));
    out.push_str("COMMIT;\n");
    out
}

/// Renders blocks as SQL: each block's header, its statements, a blank line.
pub fn render(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        if let Some(h) = &block.header {
            let _ = writeln!(out, "{h}");
        }
        for unit in &block.units {
            for statement in unit {
                let _ = writeln!(out, "{statement}");
            }
        }
        out.push('\n');
    }
    out
}

/// Every statement, grouped by object, in a deterministic order.
pub fn blocks(compiled: &Compiled) -> Vec<Block> {
    let mut out = Vec::new();
    let all_roles = compiled.app_roles();
    if !all_roles.is_empty() {
        out.push(database_block(compiled, &all_roles));
    }
    if !all_roles.is_empty() {
        for schema in &compiled.schemas {
            out.push(Block {
                header: None,
                object: Object::Schema(schema.clone()),
                units: vec![vec![format!(
                    "GRANT USAGE ON SCHEMA {} TO {};",
                    quote_ident(schema),
                    role_list(&all_roles)
                )]],
            });
        }
    }
    let mut names = IndexNames::new(compiled);
    for table in &compiled.tables {
        // The quotas and metrics the policies count from this table; any other goes.
        let counted: Vec<&str> = compiled
            .quotas
            .iter()
            .chain(&compiled.usage)
            .filter(|q| q.table == table.name)
            .map(|q| q.resource.as_str())
            .collect();
        out.push(table_block(table, &all_roles, &counted, &mut names));
    }
    for view in &compiled.views {
        let mut units = vec![vec![format!("ALTER VIEW {view} SET (security_invoker = true);")]];
        if !all_roles.is_empty() {
            units.push(vec![format!("GRANT SELECT ON {view} TO {};", role_list(&all_roles))]);
        }
        out.push(Block {
            header: Some(format!(
                "-- {view}: a view over governed tables runs with the caller's rights, so their policies apply"
            )),
            object: Object::Relation(view.to_string()),
            units,
        });
    }
    for q in &compiled.quotas {
        let sum = q.sum_column.as_ref().map_or(String::new(), |c| format!(", sum_column => {}", literal(c)));
        out.push(Block {
            header: Some(format!("-- quota `{}` counted from {} (exact under concurrency)", q.resource, q.table)),
            object: Object::Relation(q.table.to_string()),
            units: vec![vec![format!(
                "SELECT tenancy.enable_quota({}, {}, {}{sum});",
                literal(&q.resource),
                literal(&q.table.to_string()),
                literal(&q.tenant_column)
            )]],
        });
    }
    for u in &compiled.usage {
        let sum = u.sum_column.as_ref().map_or(String::new(), |c| format!(", amount_column => {}", literal(c)));
        out.push(Block {
            header: Some(format!(
                "-- usage `{}` recorded from {} as rows are inserted (no extra statement)",
                u.resource, u.table
            )),
            object: Object::Relation(u.table.to_string()),
            units: vec![vec![format!(
                "SELECT tenancy.enable_usage({}, {}, {}{sum});",
                literal(&u.resource),
                literal(&u.table.to_string()),
                literal(&u.tenant_column)
            )]],
        });
    }
    out
}

/// What the application roles may do besides using the governed tables (see
/// [`crate::hardening`]): the writing functions for read-write roles only; no temporary tables,
/// other sessions' activity, table statistics or large objects for any of them.
fn database_block(compiled: &Compiled, all_roles: &[String]) -> Block {
    let mut units = Vec::new();
    if !compiled.read_write.is_empty() {
        units.push(vec![hardening::grant_writer(&compiled.read_write)]);
    }
    for role in compiled.read_only.iter().filter(|r| !compiled.read_write.contains(r)) {
        units.push(hardening::read_only(role));
    }
    for role in all_roles {
        units.push(hardening::context_settings(
            role,
            compiled.token_only.contains(role),
            compiled.session.contains(role),
        ));
    }
    units.push(vec![hardening::revoke_temporary(all_roles)]);
    units.push(vec![hardening::RESTRICT_STATISTICS.to_string()]);
    units.push(vec![hardening::REVOKE_LARGE_OBJECTS.to_string()]);
    Block {
        header: Some(
            "-- application roles: the writing functions (tenancy_writer) for read-write roles only, tenancy_reader\n\
             -- for read-only ones; how each starts a tenant context (signed tokens only? a session context?);\n\
             -- no temporary tables, other sessions' activity, table statistics or large objects (PUBLIC's\n\
             -- rights to them go; monitoring keeps the statistics through pg_read_all_stats)"
                .to_string(),
        ),
        object: Object::Database,
        units,
    }
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// PostgreSQL's longest identifier, in bytes (NAMEDATALEN - 1); longer names are cut.
const MAX_IDENTIFIER: usize = 63;

/// Names for the indexes the compiler adds, `<table>_<columns>_idx` as PostgreSQL would choose,
/// but each within 63 bytes and unique in its schema: a name PostgreSQL would cut (silently, so
/// that two of them could become one, and `CREATE INDEX IF NOT EXISTS` skip the second) is cut
/// here and ends with a hash of the whole; a name some relation already has gets a number.
struct IndexNames {
    /// Relation name -> the table it indexes (None: not an index of a known table).
    taken: std::collections::BTreeMap<QualifiedName, Option<QualifiedName>>,
}

impl IndexNames {
    fn new(compiled: &Compiled) -> IndexNames {
        IndexNames { taken: compiled.taken_names.clone() }
    }

    /// A fresh name for an index on `table` over `what` (column names joined by `_`).
    fn next(&mut self, table: &QualifiedName, what: &str) -> String {
        let full = format!("{}_{what}", table.name);
        for n in 1.. {
            let suffix = if n == 1 { "_idx".to_string() } else { format!("{n}_idx") };
            let name = fit(&full, &suffix);
            let key = QualifiedName::new(table.schema.clone(), name.clone());
            if let std::collections::btree_map::Entry::Vacant(free) = self.taken.entry(key) {
                free.insert(Some(table.clone()));
                return name;
            }
        }
        unreachable!("an unbounded range ends")
    }

    /// The name of an index the compiler always declares (`CREATE INDEX IF NOT EXISTS`, which
    /// `plan` drops when the index is there): the one `table` already has under the first name
    /// [`Self::next`] would give, else a fresh one.
    fn own(&mut self, table: &QualifiedName, what: &str) -> String {
        let name = fit(&format!("{}_{what}", table.name), "_idx");
        match self.taken.get(&QualifiedName::new(table.schema.clone(), name.clone())) {
            Some(Some(owner)) if owner == table => name,
            _ => self.next(table, what),
        }
    }
}

/// `stem` + `suffix` when that fits in 63 bytes; else the stem cut at a character boundary,
/// followed by 8 hex digits of a hash of the whole stem (FNV-1a: the same on every machine,
/// so `plan` and `apply` name an index the same), then `suffix`.
fn fit(stem: &str, suffix: &str) -> String {
    if stem.len() + suffix.len() <= MAX_IDENTIFIER {
        return format!("{stem}{suffix}");
    }
    let hash = stem.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let tag = format!("_{:08x}", hash as u32);
    let mut cut = MAX_IDENTIFIER - tag.len() - suffix.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tag}{suffix}", &stem[..cut])
}

fn table_block(table: &CompiledTable, all_roles: &[String], counted: &[&str], names: &mut IndexNames) -> Block {
    let name = table.name.to_string();
    let mut units: Vec<Vec<String>> = Vec::new();
    let header;
    match &table.kind {
        CompiledKind::Global => {
            header = format!("-- {name}: global reference table, readable by every organization, written by DBAs");
            units.push(vec![format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")]);
            units.push(vec![format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")]);
            let readers = table.readers();
            for command in Command::ALL {
                let mut unit = vec![format!("DROP POLICY IF EXISTS {} ON {name};", policy_name(command))];
                if command == Command::Select && !readers.is_empty() {
                    unit.push(format!(
                        "CREATE POLICY {} ON {name} AS PERMISSIVE FOR SELECT TO {} USING (true);",
                        policy_name(Command::Select),
                        role_list(&readers)
                    ));
                }
                units.push(unit);
            }
            // A table that was a tenant table loses the write guard, which would refuse a DBA
            // without BYPASSRLS for want of a tenant context; `plan` drops it where it is absent.
            units.push(vec![format!("DROP TRIGGER IF EXISTS tenancy_require_context ON {name};")]);
            let mut grants = vec![format!("REVOKE ALL ON TABLE {name} FROM {};", role_list(all_roles))];
            if !readers.is_empty() {
                grants.push(format!("GRANT SELECT ON TABLE {name} TO {};", role_list(&readers)));
            }
            units.push(grants);
        }
        CompiledKind::Tenant {
            column,
            add_index,
            set_not_null,
            commands,
            owner_columns,
            extra_indexes,
            sharing,
            references,
        } => {
            let col = quote_ident(column);
            header = match sharing {
                None => format!("-- {name}: tenant table, tenant column {col}"),
                Some(_) => format!("-- {name}: shareable tenant table, tenant column {col}"),
            };
            if *set_not_null {
                units.push(vec![format!("ALTER TABLE {name} ALTER COLUMN {col} SET NOT NULL;")]);
            }
            units.push(vec![format!("ALTER TABLE {name} ALTER COLUMN {col} SET DEFAULT tenancy.current_org();")]);
            for owner in owner_columns {
                units.push(vec![format!(
                    "ALTER TABLE {name} ALTER COLUMN {} SET DEFAULT tenancy.current_user_id();",
                    quote_ident(owner)
                )]);
            }
            units.push(vec![format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")]);
            units.push(vec![format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")]);
            let mut grants: Vec<(Command, Vec<String>)> = Vec::new();
            for command in Command::ALL {
                let mut unit = vec![format!("DROP POLICY IF EXISTS {} ON {name};", policy_name(command))];
                let roles: Vec<String> =
                    if command == Command::Select { table.readers() } else { table.read_write.clone() };
                if let (Some(Some(rule)), false) = (commands.get(&command), roles.is_empty()) {
                    let p = predicate(&table.name, column, rule, sharing.as_ref(), command);
                    // New rows may only point at rows of the current organization.
                    let mut checked = p.clone();
                    for r in references {
                        checked.push_str("\n        AND ");
                        checked.push_str(&reference_check(&table.name, r));
                    }
                    let clause = match command {
                        Command::Select | Command::Delete => format!("USING ({p})"),
                        Command::Insert => format!("WITH CHECK ({checked})"),
                        Command::Update => format!("USING ({p})\n    WITH CHECK ({checked})"),
                    };
                    unit.push(format!(
                        "CREATE POLICY {} ON {name} AS PERMISSIVE FOR {} TO {}\n    {clause};",
                        policy_name(command),
                        command.sql(),
                        role_list(&roles)
                    ));
                    grants.push((command, roles));
                }
                units.push(unit);
            }
            if *add_index {
                let index = quote_ident(&names.next(&table.name, column));
                units.push(vec![format!("CREATE INDEX IF NOT EXISTS {index} ON {name} ({col});")]);
            }
            for columns in extra_indexes {
                // Foreign-key checks and cascades, and policies, look rows up by these columns.
                let index = quote_ident(&names.next(&table.name, &columns.join("_")));
                let list = columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
                units.push(vec![format!("CREATE INDEX IF NOT EXISTS {index} ON {name} ({list});")]);
            }
            if let Some(sharing) = sharing {
                let id = quote_ident(&sharing.id_column);
                if sharing.add_id_index {
                    let index = quote_ident(&names.next(&table.name, &sharing.id_column));
                    units.push(vec![format!("CREATE INDEX IF NOT EXISTS {index} ON {name} ({id});")]);
                }
                if let Some(v) = &sharing.visibility_column {
                    let index = quote_ident(&names.own(&table.name, "public"));
                    units.push(vec![format!(
                        "CREATE INDEX IF NOT EXISTS {index} ON {name} ({id}) WHERE {} = 'public';",
                        quote_ident(v)
                    )]);
                }
                let optional = |v: &Option<String>| v.as_deref().map_or("NULL".to_string(), literal);
                units.push(vec![format!(
                    "SELECT tenancy.enable_sharing({}, id_column => {}, tenant_column => {}, visibility_column => {}, share_permission => {});",
                    literal(&name),
                    literal(&sharing.id_column),
                    literal(column),
                    optional(&sharing.visibility_column),
                    optional(&sharing.share_permission)
                )]);
            }
            // The guard refuses writes without a context, or by too low a role or a missing
            // permission, with a clear error. Each argument is `role` or `role|permission`.
            let min_role = |c: Command| match commands.get(&c) {
                Some(Some(rule)) => match &rule.permission {
                    Some(p) => literal(&format!("{}|{p}", rule.role.0)),
                    None => literal(&rule.role.0),
                },
                _ => "'none'".to_string(),
            };
            units.push(vec![format!(
                "CREATE OR REPLACE TRIGGER tenancy_require_context\n    BEFORE INSERT OR UPDATE OR DELETE ON {name}\n    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.require_context({}, {}, {});",
                min_role(Command::Insert),
                min_role(Command::Update),
                min_role(Command::Delete)
            )]);
            let mut unit = vec![format!("REVOKE ALL ON TABLE {name} FROM {};", role_list(all_roles))];
            for role in all_roles {
                let privileges: Vec<&str> =
                    grants.iter().filter(|(_, roles)| roles.contains(role)).map(|(c, _)| c.sql()).collect();
                if !privileges.is_empty() {
                    unit.push(format!("GRANT {} ON TABLE {name} TO {};", privileges.join(", "), quote_ident(role)));
                }
            }
            units.push(unit);
        }
    }
    if !matches!(&table.kind, CompiledKind::Tenant { sharing: Some(_), .. }) {
        // Not (or no longer) shareable: sharing left from earlier policies goes, its shares
        // included, so that no old grant comes back if the table is shared again. `plan`
        // drops the call where there is nothing to undo.
        units.push(vec![format!("SELECT tenancy.disable_sharing({});", literal(&name))]);
    }
    // Quotas and metrics removed from the policy files (or moved to another table) stop being
    // counted here; `plan` drops the call where there is nothing to undo.
    let keep: Vec<String> = counted.iter().map(|r| literal(r)).collect();
    units.push(vec![format!("SELECT tenancy.keep_quotas({}, ARRAY[{}]::text[]);", literal(&name), keep.join(", "))]);
    Block { header: Some(header), object: Object::Relation(name), units }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(taken: &[&str]) -> IndexNames {
        IndexNames {
            taken: taken
                .iter()
                .map(|n| (QualifiedName::new("app", *n), Some(QualifiedName::new("app", "projects"))))
                .collect(),
        }
    }

    #[test]
    fn short_index_names_are_the_ones_postgres_would_choose() {
        let mut n = names(&[]);
        assert_eq!(n.next(&QualifiedName::new("app", "projects"), "org_id"), "projects_org_id_idx");
    }

    #[test]
    fn long_index_names_fit_in_63_bytes_and_never_collide() {
        let mut n = names(&[]);
        let table = QualifiedName::new("app", "a_table_name_long_enough_to_need_cutting_by_postgres");
        let a = n.next(&table, "organization_id_and_some_more");
        let b = n.next(&table, "organization_id_and_some_other");
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with("_idx"));
        // The same input gives the same name on every run (plan and apply agree).
        assert_eq!(names(&[]).next(&table, "organization_id_and_some_more"), a);
        // Multi-byte names are cut at a character boundary.
        let wide = QualifiedName::new("app", "é".repeat(40));
        let w = names(&[]).next(&wide, "org_id");
        assert!(w.len() <= 63 && w.is_char_boundary(w.len()), "{w}");
    }

    #[test]
    fn a_name_a_relation_already_has_gets_a_number() {
        let mut n = names(&["projects_org_id_idx"]);
        let table = QualifiedName::new("app", "projects");
        assert_eq!(n.next(&table, "org_id"), "projects_org_id2_idx");
        assert_eq!(n.next(&table, "org_id"), "projects_org_id3_idx");
        // An index the compiler always declares keeps the name its table has it under.
        let mut n = names(&["projects_public_idx"]);
        assert_eq!(n.own(&table, "public"), "projects_public_idx");
        assert_eq!(n.own(&QualifiedName::new("app", "other"), "public"), "other_public_idx");
    }
}
