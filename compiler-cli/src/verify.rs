//! `tenancy verify`: proves isolation on a live database by trying to break it. Inside one
//! transaction that is always rolled back, it creates two organizations with an owner each,
//! writes rows into every table of the audited schemas (generating values for required columns
//! and foreign keys), shares and publishes rows of shareable tables, and then, as each
//! application role acting for each organization, tries every command against both
//! organizations' rows. Anything beyond the organization's own rows, the rows shared with it
//! and public rows is a leak. It knows nothing of the policy files: it works on any schema.

use crate::schema::{quote_ident, ForeignKey};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What to verify: the same as what `lint` audits. Without application roles, verify acts as
/// the members of `tenancy_writer` and `tenancy_reader` (except superusers, table owners and the
/// caller): the roles the DBA marked as application roles, which `tenancy apply` does.
pub use crate::lint::Options;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Tenant,
    Shareable,
    Global,
}

/// The result of one command on one table for one role.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cell {
    /// What the role reached without leaking: `own`, `shared`, `public`, `all`, or `denied`.
    pub reach: BTreeSet<&'static str>,
    /// Every leak, described.
    pub leaks: Vec<String>,
    /// Why (part of) this check could not run.
    pub unverified: Vec<String>,
}

impl Cell {
    fn text(&self) -> String {
        if !self.leaks.is_empty() {
            return "LEAK".into();
        }
        if !self.unverified.is_empty() {
            return "not verified".into();
        }
        let order = ["own", "shared", "public", "all", "none", "denied", "closed"];
        let mut parts: Vec<&str> = order.iter().copied().filter(|r| self.reach.contains(r)).collect();
        if parts.len() > 1 {
            parts.retain(|r| *r != "denied" && *r != "none");
        }
        if parts.is_empty() {
            "denied".into()
        } else {
            parts.join(", ")
        }
    }
}

pub const COMMANDS: [&str; 5] = ["select", "insert", "update", "delete", "no context"];

#[derive(Debug, Clone, Serialize)]
pub struct TableResult {
    pub table: String,
    pub kind: Kind,
    pub role: String,
    /// One per [`COMMANDS`] entry.
    pub cells: BTreeMap<&'static str, Cell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub roles: Vec<String>,
    pub organizations: usize,
    pub results: Vec<TableResult>,
    /// Tables no row could be written to, with the reason: their rows were not checked.
    pub unverified_tables: Vec<(String, String)>,
}

impl Report {
    pub fn leaks(&self) -> usize {
        self.results.iter().flat_map(|r| r.cells.values()).map(|c| c.leaks.len()).sum()
    }

    pub fn unverified(&self) -> usize {
        self.unverified_tables.len()
            + self.results.iter().flat_map(|r| r.cells.values()).filter(|c| !c.unverified.is_empty()).count()
    }
}

struct Column {
    name: String,
    sql_type: String,
    not_null: bool,
    has_default: bool,
    generated: bool,
    /// A value the column's CHECK constraints or enum type suggest.
    suggested: Option<String>,
}

struct Table {
    name: String,
    /// The table's owner: everything the verifier (a superuser) does to the table's rows runs as
    /// this role, so that the table's own code (triggers, defaults, index expressions, types)
    /// never runs with a superuser's rights.
    owner: String,
    kind: Kind,
    columns: Vec<Column>,
    foreign_keys: Vec<ForeignKey>,
    id_column: Option<String>,
    visibility_column: Option<String>,
    /// With two tenant levels, the level its SELECT policy's comment gives (`tenancy apply`
    /// writes it): such tables are not verified yet, which acts in organization contexts only.
    level: Option<String>,
}

/// The organizations the verifier creates, each with its owner.
struct Org {
    id: String,
    user: String,
}

/// A row the verifier wrote: its ctid and values.
#[derive(Clone)]
struct Fixture {
    ctid: String,
    values: serde_json::Map<String, Value>,
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs `sql` under a savepoint; on error rolls back to it and returns the error text.
fn attempt<T>(
    tx: &mut postgres::Transaction<'_>,
    f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, postgres::Error>,
) -> Result<Result<T, String>, postgres::Error> {
    tx.batch_execute("SAVEPOINT tenancy_verify")?;
    match f(tx) {
        Ok(v) => {
            tx.batch_execute("RELEASE SAVEPOINT tenancy_verify")?;
            Ok(Ok(v))
        }
        Err(e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT tenancy_verify; RELEASE SAVEPOINT tenancy_verify")?;
            Ok(Err(error_text(&e)))
        }
    }
}

/// What a statement returned: how many rows it processed, and its rows' columns as text.
#[derive(Debug, Default)]
struct Outcome {
    processed: u64,
    rows: Vec<Vec<Option<String>>>,
}

impl Outcome {
    /// Column `i` of row `r`.
    fn get(&self, r: usize, i: usize) -> Option<&str> {
        self.rows.get(r).and_then(|row| row.get(i)).and_then(|v| v.as_deref())
    }
}

fn error_text(e: &postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |d| format!("{} ({})", d.message(), d.code().code()))
}

/// Runs `sql` (every column of its result text) as `role`, in a security-restricted operation
/// (`tenancy.run_restricted()`): the verifier is a superuser, and a table's triggers, defaults,
/// policies or types that merely ran under `SET ROLE` could `RESET ROLE` and act as it.
/// `ignore_force` lets a table's owner past `FORCE ROW LEVEL SECURITY`.
fn restricted(
    tx: &mut postgres::Transaction<'_>,
    role: &str,
    ignore_force: bool,
    sql: &str,
) -> Result<Outcome, postgres::Error> {
    let row = tx.query_one("SELECT tenancy.run_restricted($1, $2, $3)::text", &[&role, &sql, &ignore_force])?;
    let value: Value = serde_json::from_str(row.get::<_, &str>(0)).unwrap_or_default();
    let rows = value["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|cols| cols.iter().map(|c| c.as_str().map(str::to_string)).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Outcome { processed: value["processed"].as_u64().unwrap_or(0), rows })
}

/// Runs `sql` as `role` acting for `org` (or without a context), always rolled back.
fn as_role(
    tx: &mut postgres::Transaction<'_>,
    role: &str,
    org: Option<&Org>,
    sql: &str,
) -> Result<Result<Outcome, String>, postgres::Error> {
    tx.batch_execute("SAVEPOINT tenancy_verify_as")?;
    let result = match org {
        Some(org) => {
            tx.batch_execute(&format!("SELECT tenancy.set_context({}, {})", literal(&org.id), literal(&org.user)))
        }
        None => tx.batch_execute("SELECT tenancy.clear_context()"),
    }
    .and_then(|()| restricted(tx, role, false, sql));
    tx.batch_execute("ROLLBACK TO SAVEPOINT tenancy_verify_as; RELEASE SAVEPOINT tenancy_verify_as")?;
    Ok(result.map_err(|e| error_text(&e)))
}

/// Runs `sql` as `table`'s owner, past FORCE ROW LEVEL SECURITY (see [`restricted`]): the
/// table's code runs with its owner's rights only.
fn as_owner(tx: &mut postgres::Transaction<'_>, table: &Table, sql: &str) -> Result<Outcome, postgres::Error> {
    restricted(tx, &table.owner, true, sql)
}

fn is_denied(error: &str) -> bool {
    // Refusals: privileges, row-level security, the extension's guards, foreign keys, checks.
    ["(42501)", "(23503)", "(23514)", "(P0001)", "(53400)", "(23502)"].iter().any(|c| error.ends_with(c))
}

/// Verifies every table of the audited schemas. Everything happens in one transaction that is
/// rolled back, whatever happens.
pub fn verify(client: &mut postgres::Client, options: &Options) -> Result<Report, VerifyError> {
    let mut tx = client.transaction()?;
    let report = run(&mut tx, options);
    tx.rollback()?;
    report
}

#[derive(Debug)]
pub enum VerifyError {
    Database(postgres::Error),
    /// The database is not one the verifier can work on (with the reason).
    Unusable(String),
}

impl From<postgres::Error> for VerifyError {
    fn from(e: postgres::Error) -> Self {
        VerifyError::Database(e)
    }
}

fn run(tx: &mut postgres::Transaction<'_>, options: &Options) -> Result<Report, VerifyError> {
    let me = tx.query_one(
        "SELECT rolsuper OR rolbypassrls, current_user::text, EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_tenancy')
           FROM pg_roles WHERE rolname = current_user",
        &[],
    )?;
    if !me.get::<_, bool>(2) {
        return Err(VerifyError::Unusable("the pg_tenancy extension is not installed in this database".into()));
    }
    if !me.get::<_, bool>(0) {
        return Err(VerifyError::Unusable(format!(
            "role {} is not a superuser: connect as a superuser, which the verifier needs to write fixtures for every organization and act as each application role",
            me.get::<_, String>(1)
        )));
    }
    // Nothing the audited schemas define may resolve in the verifier's own statements, and the
    // columns' types are read under the same search_path, so that format_type() qualifies every
    // type the verifier will name in a cast (`public."Role"`).
    tx.batch_execute("SET LOCAL search_path = pg_catalog, pg_temp")?;
    let tables = read_tables(tx, options)?;
    if tables.is_empty() {
        return Err(VerifyError::Unusable("no tables to verify in the audited schemas".into()));
    }
    let roles = app_roles(tx, options, &tables)?;
    if roles.is_empty() {
        return Err(VerifyError::Unusable(
            "no application role: no role other than superusers and the tables' owners is a member of tenancy_writer or tenancy_reader (tenancy apply grants them to the roles of the policy files; or pass --app-role)".into(),
        ));
    }
    let orgs = create_orgs(tx)?;
    let tenant_column = options.tenant_column.as_str();
    // Every check's constraints are checked by its own statement: a deferred trigger cannot fire
    // inside the security-restricted operations the checks run in (and would hide its outcome).
    tx.batch_execute("SET CONSTRAINTS ALL IMMEDIATE")?;
    // The fixtures are written and read back by each table's owner, past FORCE ROW LEVEL
    // SECURITY (all of it is rolled back); the probes below run as the application roles.
    let (fixtures, unverified_tables) = write_fixtures(tx, &tables, &orgs, tenant_column)?;
    share_fixtures(tx, &tables, &orgs, &fixtures)?;
    let visible = visible_rows(tx, &tables, &orgs, tenant_column)?;

    let mut results = Vec::new();
    for role in &roles {
        for table in &tables {
            if unverified_tables.iter().any(|(t, _)| *t == table.name) {
                continue;
            }
            let mut cells: BTreeMap<&'static str, Cell> = COMMANDS.iter().map(|c| (*c, Cell::default())).collect();
            for (x, org) in orgs.iter().enumerate() {
                let allowed = visible.get(&(table.name.clone(), x)).cloned().unwrap_or_default();
                check_table(tx, role, table, tenant_column, &orgs, x, org, &fixtures, allowed, &mut cells)?;
            }
            let cell = cells.get_mut("no context").unwrap();
            check_without_context(tx, role, table, tenant_column, &orgs, &fixtures, cell)?;
            results.push(TableResult { table: table.name.clone(), kind: table.kind, role: role.clone(), cells });
        }
    }
    results.sort_by(|a, b| (&a.role, &a.table).cmp(&(&b.role, &b.table)));
    Ok(Report { roles, organizations: orgs.len(), results, unverified_tables })
}

fn read_tables(tx: &mut postgres::Transaction<'_>, options: &Options) -> Result<Vec<Table>, postgres::Error> {
    // The tables, their columns and foreign keys as the compiler reads them; then what only the
    // verifier needs: defaults, generated columns, values an enum or a CHECK suggests, sharing.
    let schemas = crate::lint::audited_schemas(tx, &options.schemas)?;
    let (catalog, _) = crate::live::read(tx, &schemas)?;
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
        let extra: BTreeMap<String, (bool, bool, Option<String>, Option<String>)> = tx
            .query(
                "SELECT a.attname::text, a.atthasdef OR a.attidentity <> '', a.attgenerated <> '',
                        (SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = a.atttypid ORDER BY e.enumsortorder LIMIT 1),
                        (SELECT string_agg(pg_get_constraintdef(k.oid), ' ') FROM pg_constraint k
                          WHERE k.conrelid = a.attrelid AND k.contype = 'c' AND k.conkey = ARRAY[a.attnum])
                   FROM pg_attribute a
                  WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[&name],
            )?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect();
        let id_column: Option<String> = facts.get(1);
        let level: Option<String> = tx
            .query_opt(
                "SELECT substring(obj_description(p.oid, 'pg_policy') FROM '^level: ([a-z]+)')
                   FROM pg_policy p WHERE p.polrelid = $1::text::regclass AND p.polname = 'tenancy_select'",
                &[&name],
            )?
            .and_then(|r| r.get(0));
        let tenant = level.is_some()
            || table
                .column(&options.tenant_column)
                .is_some_and(|c| crate::model::TenantKey::of_type(&c.data_type).is_some());
        let columns = table
            .columns
            .into_iter()
            .map(|c| {
                let (has_default, generated, label, check) = extra.get(&c.name).cloned().unwrap_or_default();
                // An enum's first label, or a value a CHECK constraint lists.
                let suggested = label.or_else(|| check.as_deref().and_then(check_literal));
                Column { name: c.name, sql_type: c.data_type, not_null: c.not_null, has_default, generated, suggested }
            })
            .collect();
        tables.push(Table {
            name,
            owner: facts.get(3),
            kind: match (tenant, &id_column) {
                (false, _) => Kind::Global,
                (true, None) => Kind::Tenant,
                (true, Some(_)) => Kind::Shareable,
            },
            columns,
            foreign_keys: table.foreign_keys,
            id_column,
            visibility_column: facts.get(2),
            level,
        });
    }
    Ok(order_by_dependencies(tables))
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
        let ready = tables.iter().position(|t| {
            t.foreign_keys.iter().all(|fk| {
                let references = fk.references.to_string();
                references == t.name
                    || ordered.iter().any(|o| o.name == references)
                    || !tables.iter().any(|o| o.name == references)
            })
        });
        // A cycle: take the first table; its foreign keys into the cycle stay NULL if they can.
        ordered.push(tables.remove(ready.unwrap_or(0)));
    }
    ordered
}

fn app_roles(
    tx: &mut postgres::Transaction<'_>,
    options: &Options,
    tables: &[Table],
) -> Result<Vec<String>, postgres::Error> {
    if !options.app_roles.is_empty() {
        return Ok(options.app_roles.clone());
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

fn create_orgs(tx: &mut postgres::Transaction<'_>) -> Result<Vec<Org>, postgres::Error> {
    // An unlimited plan if there is one, so that quotas do not stop the fixtures.
    let plan: String = tx
        .query_one(
            "SELECT coalesce((SELECT p.name FROM tenancy.plans p WHERE NOT EXISTS (
                 SELECT FROM tenancy.plan_limits l WHERE l.plan = p.name AND l.quota IS NOT NULL) ORDER BY p.name LIMIT 1), 'free')",
            &[],
        )?
        .get(0);
    let tag: String = tx.query_one("SELECT substr(md5(random()::text), 1, 8)", &[])?.get(0);
    let mut orgs = Vec::new();
    for letter in ["a", "b"] {
        let user = format!("tenancy-verify-{letter}");
        let id: String = tx
            .query_one(
                "SELECT tenancy.create_organization($1, $2, $3, $4)::text",
                &[&format!("Verify {letter}"), &format!("tenancy-verify-{tag}-{letter}"), &user, &plan],
            )?
            .get(0);
        orgs.push(Org { id, user });
    }
    Ok(orgs)
}

/// The variants of fixture rows per table: a private row, and for shareable tables a row shared
/// for reading, one shared for writing and (with a visibility column) a public one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Variant {
    Private,
    SharedRead,
    SharedWrite,
    Public,
}

type Fixtures = BTreeMap<(String, usize), Vec<(Variant, Fixture)>>;

/// The INSERT for one generated row of `table` owned by `orgs[org]`, with foreign keys pointing
/// at `parents_of`'s fixture rows (normally the same organization).
#[allow(clippy::too_many_arguments)]
fn insert_sql(
    table: &Table,
    orgs: &[Org],
    tenant_column: &str,
    org: usize,
    parents_of: usize,
    variant: Variant,
    fixtures: &Fixtures,
    counter: &mut u64,
) -> Result<String, String> {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for column in &table.columns {
        if column.generated {
            continue;
        }
        *counter += 1;
        let typed = |v: &str| format!("{}::{}", literal(v), column.sql_type);
        let value = if table.kind != Kind::Global && column.name == tenant_column {
            Some(typed(&orgs[org].id))
        } else if Some(&column.name) == table.visibility_column.as_ref() {
            Some(typed(if variant == Variant::Public { "public" } else { "private" }))
        } else if let Some(fk) = table.foreign_keys.iter().find(|fk| fk.columns.contains(&column.name)) {
            let i = fk.columns.iter().position(|c| *c == column.name).unwrap();
            let referred = fk.referred[i].clone();
            let references = fk.references.to_string();
            if references == "tenancy.organizations" {
                Some(typed(&orgs[org].id))
            } else if let Some(parent) =
                fixtures.get(&(references.clone(), parents_of)).and_then(|rows| rows.first().map(|r| &r.1))
            {
                match parent.values.get(&referred) {
                    Some(Value::Null) | None => None,
                    Some(Value::String(s)) => Some(typed(s)),
                    Some(v) => Some(typed(&v.to_string())),
                }
            } else if column.not_null && !column.has_default {
                Some(format!("(SELECT {} FROM {} LIMIT 1)", quote_ident(&referred), references))
            } else {
                None
            }
        } else if column.not_null && !column.has_default {
            Some(generate(column, *counter).ok_or_else(|| {
                format!("cannot generate a value of type {} for column {}", column.sql_type, column.name)
            })?)
        } else {
            None
        };
        if let Some(v) = value {
            names.push(quote_ident(&column.name));
            values.push(v);
        }
    }
    Ok(if names.is_empty() {
        format!("INSERT INTO {} AS t DEFAULT VALUES", table.name)
    } else {
        format!("INSERT INTO {} AS t ({}) VALUES ({})", table.name, names.join(", "), values.join(", "))
    })
}

/// A value for a required column without a default.
fn generate(column: &Column, n: u64) -> Option<String> {
    let t = column.sql_type.as_str();
    let cast = |v: String| Some(format!("{}::{t}", literal(&v)));
    if let Some(s) = &column.suggested {
        return cast(s.clone());
    }
    // The type without its modifiers (`timestamp(3) without time zone`) or its schema
    // (`public.citext`).
    let mut base = String::new();
    let mut depth = 0;
    for ch in t.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => base.push(ch),
            _ => {}
        }
    }
    let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
    let base = base.rsplit('.').next().unwrap_or(&base).trim_matches('"');
    match base {
        "uuid" => Some("gen_random_uuid()".into()),
        "text" | "character varying" | "character" | "name" | "citext" => cast(format!("v{n}")),
        "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision" => cast((n % 30000).to_string()),
        "boolean" => Some("false".into()),
        "timestamp with time zone" | "timestamp without time zone" => Some(format!("now()::{t}")),
        "date" => Some("current_date".into()),
        "time without time zone" | "time with time zone" => cast("12:00".into()),
        "interval" => cast("1 hour".into()),
        "json" | "jsonb" => cast("{}".into()),
        "bytea" => cast("\\x00".into()),
        "inet" | "cidr" => cast("127.0.0.1".into()),
        _ if t.ends_with("[]") => cast("{}".into()),
        _ => None,
    }
}

fn write_fixtures(
    tx: &mut postgres::Transaction<'_>,
    tables: &[Table],
    orgs: &[Org],
    tenant_column: &str,
) -> Result<(Fixtures, Vec<(String, String)>), postgres::Error> {
    let mut fixtures: Fixtures = BTreeMap::new();
    let mut unverified = Vec::new();
    let mut counter = 0u64;
    for table in tables {
        let variants: &[Variant] = match table.kind {
            Kind::Global => &[Variant::Private],
            Kind::Tenant => &[Variant::Private],
            Kind::Shareable if table.visibility_column.is_some() => {
                &[Variant::Private, Variant::SharedRead, Variant::SharedWrite, Variant::Public]
            }
            Kind::Shareable => &[Variant::Private, Variant::SharedRead, Variant::SharedWrite],
        };
        if let Some(level) = &table.level {
            // Neither a leak nor global: its rows belong to projects or organizations of a
            // two-level set, which the verifier's organization contexts do not model yet.
            unverified.push((
                table.name.clone(),
                format!("{level}-level table of a two-level policy set: verify does not create projects yet"),
            ));
            continue;
        }
        if let Some(c) = table.columns.iter().find(|c| c.name == tenant_column && c.sql_type != "uuid") {
            if table.kind != Kind::Global {
                // Its rows hold the application's key of an organization, which the verifier's
                // own organizations do not have yet.
                unverified.push((
                    table.name.clone(),
                    format!("its tenant column is {}: verify writes rows for uuid tenant columns only", c.sql_type),
                ));
                continue;
            }
        }
        let per_org = if table.kind == Kind::Global { 1 } else { orgs.len() };
        if table.kind == Kind::Global {
            // Reference data: rows that exist are enough to try to change.
            let has_rows = as_owner(tx, table, &format!("SELECT EXISTS (SELECT FROM {})::text", table.name))?.get(0, 0)
                == Some("true");
            if has_rows {
                // Marks the table as not empty (see `check_table`).
                fixtures.entry((table.name.clone(), usize::MAX)).or_default();
                continue;
            }
        }
        'orgs: for org in 0..per_org {
            for &variant in variants {
                let sql = match insert_sql(table, orgs, tenant_column, org, org, variant, &fixtures, &mut counter) {
                    Ok(sql) => sql,
                    Err(reason) => {
                        unverified.push((table.name.clone(), reason));
                        break 'orgs;
                    }
                };
                let context =
                    format!("SELECT tenancy.set_context({}, {})", literal(&orgs[org].id), literal(&orgs[org].user));
                let result = attempt(tx, |tx| {
                    tx.batch_execute(&context)?;
                    as_owner(tx, table, &format!("{sql} RETURNING ctid::text, to_jsonb(t)::text"))
                })?;
                let written = result.and_then(|outcome| match (outcome.get(0, 0), outcome.get(0, 1)) {
                    (Some(ctid), Some(values)) => Ok((ctid.to_string(), values.to_string())),
                    _ => Err("the INSERT wrote no row (a trigger skipped it)".to_string()),
                });
                match written {
                    Ok((ctid, values)) => {
                        let values: serde_json::Map<String, Value> = serde_json::from_str(&values).unwrap_or_default();
                        fixtures
                            .entry((table.name.clone(), org))
                            .or_default()
                            .push((variant, Fixture { ctid, values }));
                    }
                    // An empty reference table is still checked: its writes must be refused.
                    Err(_) if table.kind == Kind::Global => break 'orgs,
                    Err(e) => {
                        unverified.push((table.name.clone(), format!("could not write a row: {e}")));
                        break 'orgs;
                    }
                }
            }
        }
    }
    tx.batch_execute("SELECT tenancy.clear_context()")?;
    Ok((fixtures, unverified))
}

fn share_fixtures(
    tx: &mut postgres::Transaction<'_>,
    tables: &[Table],
    orgs: &[Org],
    fixtures: &Fixtures,
) -> Result<(), postgres::Error> {
    for table in tables.iter().filter(|t| t.kind == Kind::Shareable) {
        let id_column = table.id_column.as_deref().unwrap_or("id");
        for (o, org) in orgs.iter().enumerate() {
            let other = &orgs[(o + 1) % orgs.len()];
            for (variant, row) in fixtures.get(&(table.name.clone(), o)).into_iter().flatten() {
                let permissions = match variant {
                    Variant::SharedRead => "{read}",
                    Variant::SharedWrite => "{read,write}",
                    _ => continue,
                };
                let id = match row.values.get(id_column) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => continue,
                };
                tx.batch_execute(&format!(
                    "SELECT tenancy.set_context({}, {}); SELECT tenancy.share({}::regclass, {}::text, {}, {});",
                    literal(&org.id),
                    literal(&org.user),
                    literal(&table.name),
                    literal(&id),
                    literal(&other.id),
                    literal(permissions)
                ))?;
            }
        }
    }
    tx.batch_execute("SELECT tenancy.clear_context()")?;
    Ok(())
}

/// For each table and organization: the rows outside it that it may read, by ctid, each
/// `shared` (with it) or `public`, and those it may write (shared with it for writing), by
/// their values as JSON (an UPDATE returns the new row version, whose ctid differs).
type Allowed = (BTreeMap<String, &'static str>, BTreeSet<String>);

/// [`Allowed`] for every shareable table and organization, read while the fixtures are in place:
/// the shares from pg_tenancy's catalog, the rows by the table's owner.
fn visible_rows(
    tx: &mut postgres::Transaction<'_>,
    tables: &[Table],
    orgs: &[Org],
    tenant_column: &str,
) -> Result<BTreeMap<(String, usize), Allowed>, postgres::Error> {
    let mut out = BTreeMap::new();
    for table in tables.iter().filter(|t| t.kind == Kind::Shareable) {
        let id = quote_ident(table.id_column.as_deref().unwrap_or("id"));
        let tc = quote_ident(tenant_column);
        let public = table
            .visibility_column
            .as_ref()
            .map_or("false".to_string(), |v| format!("t.{} = 'public'", quote_ident(v)));
        let rows = as_owner(
            tx,
            table,
            &format!(
                "SELECT t.ctid::text, to_jsonb(t)::text, t.{tc}::text, t.{id}::text, ({public})::text FROM {} t",
                table.name
            ),
        )?
        .rows;
        for (x, org) in orgs.iter().enumerate() {
            let shares: BTreeMap<(String, String), bool> = tx
                .query(
                    "SELECT s.owner_org::text, s.row_id, s.can_write FROM tenancy.shares s
                      WHERE s.relation = $1::text::regclass AND s.grantee_org = $2::text::uuid",
                    &[&table.name, &org.id],
                )?
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                .collect();
            let mut read = BTreeMap::new();
            let mut write = BTreeSet::new();
            let column = |row: &[Option<String>], i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            for row in rows.iter().filter(|r| column(r, 2) != org.id) {
                match shares.get(&(column(row, 2), column(row, 3))) {
                    Some(can_write) => {
                        read.insert(column(row, 0), "shared");
                        if *can_write {
                            write.insert(column(row, 1));
                        }
                    }
                    None if column(row, 4) == "true" => {
                        read.insert(column(row, 0), "public");
                    }
                    None => {}
                }
            }
            out.insert((table.name.clone(), x), (read, write));
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn check_table(
    tx: &mut postgres::Transaction<'_>,
    role: &str,
    table: &Table,
    tenant_column: &str,
    orgs: &[Org],
    x: usize,
    org: &Org,
    fixtures: &Fixtures,
    (may_read, may_write): Allowed,
    cells: &mut BTreeMap<&'static str, Cell>,
) -> Result<(), postgres::Error> {
    let tc = quote_ident(tenant_column);
    let name = &table.name;
    let y = (x + 1) % orgs.len();
    let me = format!("{} acting for organization {}", role, letter(x));
    let mut counter = 1_000_000u64 + x as u64 * 1000;

    if table.kind == Kind::Global {
        let select = as_role(tx, role, Some(org), &format!("SELECT 'x' FROM {name} LIMIT 1"))?;
        cells.get_mut("select").unwrap().reach.insert(if select.is_ok() { "all" } else { "denied" });
        let first = table.columns.iter().find(|c| !c.generated).map(|c| quote_ident(&c.name));
        // Rows were there before the verifier came, or it wrote one (the owner looked).
        let empty = !fixtures.contains_key(&(name.clone(), usize::MAX)) && !fixtures.contains_key(&(name.clone(), 0));
        let writes = [
            ("insert", insert_sql(table, orgs, tenant_column, 0, 0, Variant::Private, fixtures, &mut counter).ok()),
            ("update", first.as_ref().map(|c| format!("UPDATE {name} SET {c} = {c}"))),
            ("delete", Some(format!("DELETE FROM {name}"))),
        ];
        for (command, sql) in writes {
            let cell = cells.get_mut(command).unwrap();
            let Some(sql) = sql else {
                cell.reach.insert("denied");
                continue;
            };
            match as_role(tx, role, Some(org), &sql)?.map(|o| o.processed) {
                Ok(n) if n > 0 => cell.leaks.push(format!("{me} changed {n} row(s) of global table {name}: {sql}")),
                Ok(_) if empty => cell
                    .unverified
                    .push(format!("{name} is empty and no row could be generated for it, so `{sql}` proves nothing")),
                // Privileges and row-level security are checked before constraints: a
                // constraint error means the write got past both.
                Err(e) if !e.ends_with("(42501)") => cell.leaks.push(format!(
                    "{me} got past privileges and policies of global table {name}, stopped only by: {e}"
                )),
                _ => {
                    cell.reach.insert("denied");
                }
            }
        }
        return Ok(());
    }

    let own: BTreeSet<String> =
        fixtures.get(&(name.clone(), x)).into_iter().flatten().map(|(_, f)| f.ctid.clone()).collect();
    let x_id = org.id.clone();

    // SELECT: every foreign row seen must be public or shared with this organization.
    let seen = as_role(tx, role, Some(org), &format!("SELECT ctid::text, {tc}::text FROM {name} LIMIT 100000"))?;
    let cell = cells.get_mut("select").unwrap();
    match seen {
        Err(e) if is_denied(&e) => {
            cell.reach.insert("denied");
        }
        Err(e) => cell.unverified.push(format!("{me}: {e}")),
        Ok(seen) => {
            let leaked = classify(&seen.rows, &x_id, cell, |ctid| may_read.get(ctid).copied());
            if leaked > 0 {
                cell.leaks.push(format!(
                    "{me} sees {leaked} row(s) of other organizations that are neither shared with it nor public"
                ));
            }
            if cell.reach.is_empty() {
                cell.reach.insert("none");
            }
        }
    }

    // INSERT: into its own organization (allowed or not), never into another one, and never
    // pointing into another organization's rows.
    let cell = cells.get_mut("insert").unwrap();
    let tries = [
        ("own", insert_sql(table, orgs, tenant_column, x, x, Variant::Private, fixtures, &mut counter)),
        ("other", insert_sql(table, orgs, tenant_column, y, y, Variant::Private, fixtures, &mut counter)),
        ("cross", insert_sql(table, orgs, tenant_column, x, y, Variant::Private, fixtures, &mut counter)),
    ];
    let has_tenant_parent = table.foreign_keys.iter().any(|fk| {
        let references = fk.references.to_string();
        references != "tenancy.organizations" && fixtures.contains_key(&(references, y))
    });
    for (what, sql) in tries {
        let sql = match sql {
            Ok(sql) => sql,
            Err(e) => {
                cell.unverified.push(e);
                continue;
            }
        };
        if what == "cross" && !has_tenant_parent {
            continue;
        }
        // No RETURNING: it would apply the SELECT policy to the new row and hide a leaky INSERT.
        let result = as_role(tx, role, Some(org), &sql)?;
        match (what, result) {
            ("own", Ok(_)) => {
                cell.reach.insert("own");
            }
            ("own", Err(e)) if is_denied(&e) => {
                cell.reach.insert("denied");
            }
            ("own", Err(e)) => cell.unverified.push(format!("{me}: insert failed: {e}")),
            ("other", Ok(_)) => cell.leaks.push(format!("{me} inserted a row into organization {}", letter(y))),
            ("other", Err(e)) if !e.ends_with("(42501)") => {
                cell.unverified.push(format!("{me}: inserting into organization {} failed otherwise: {e}", letter(y)))
            }
            ("cross", Ok(_)) => cell.leaks.push(format!(
                "{me} inserted a row that points at organization {}'s rows through a foreign key",
                letter(y)
            )),
            _ => {}
        }
    }

    // UPDATE: own rows (if allowed), rows shared for writing, nothing else; never moving a row
    // to another organization.
    let cell = cells.get_mut("update").unwrap();
    let updated = as_role(
        tx,
        role,
        Some(org),
        &format!("UPDATE {name} t SET {tc} = t.{tc} RETURNING to_jsonb(t)::text, {tc}::text"),
    )?;
    match updated {
        Err(e) if is_denied(&e) => {
            cell.reach.insert("denied");
        }
        Err(e) => cell.unverified.push(format!("{me}: {e}")),
        Ok(updated) => {
            let rows = updated.rows;
            let leaked = classify(&rows, &x_id, cell, |row| may_write.contains(row).then_some("shared"));
            if leaked > 0 {
                cell.leaks.push(format!(
                    "{me} updated {leaked} row(s) of other organizations not shared with it for writing"
                ));
            }
            if rows.is_empty() {
                cell.reach.insert("denied");
            }
        }
    }
    if let Some(ctid) = own.iter().next() {
        let moved = as_role(
            tx,
            role,
            Some(org),
            &format!("UPDATE {name} SET {tc} = {}::uuid WHERE ctid = {}::tid", literal(&orgs[y].id), literal(ctid)),
        )?;
        if let Ok(moved) = moved {
            if moved.processed > 0 {
                cell.leaks.push(format!("{me} moved its row into organization {}", letter(y)));
            }
        }
    }

    // DELETE: own rows (if allowed), never another organization's, shared or not.
    let cell = cells.get_mut("delete").unwrap();
    let deleted = as_role(tx, role, Some(org), &format!("DELETE FROM {name} RETURNING {tc}::text"))?;
    match deleted {
        Err(e) if is_denied(&e) => {
            cell.reach.insert("denied");
        }
        Err(e) => cell.unverified.push(format!("{me}: {e}")),
        Ok(deleted) => {
            let rows = deleted.rows;
            let foreign =
                rows.iter().filter(|r| r.first().cloned().flatten().as_deref() != Some(x_id.as_str())).count();
            if foreign > 0 {
                cell.leaks.push(format!("{me} deleted {foreign} row(s) of other organizations"));
            }
            cell.reach.insert(if rows.len() > foreign { "own" } else { "denied" });
        }
    }
    Ok(())
}

/// Sorts the rows a command reached, each (key, organization), into the organization's own, those
/// `allowed` names (shared, public) and leaks; notes the first two in `cell` and returns the
/// number of leaks.
fn classify(
    rows: &[Vec<Option<String>>],
    org: &str,
    cell: &mut Cell,
    allowed: impl Fn(&str) -> Option<&'static str>,
) -> usize {
    let mut leaked = 0;
    for r in rows {
        let key = r.first().cloned().flatten().unwrap_or_default();
        let owner = r.get(1).cloned().flatten();
        if owner.as_deref() == Some(org) {
            cell.reach.insert("own");
        } else if let Some(reach) = allowed(&key) {
            cell.reach.insert(reach);
        } else {
            leaked += 1;
        }
    }
    leaked
}

/// Without a context: no rows of a tenant table are visible and nothing is written.
fn check_without_context(
    tx: &mut postgres::Transaction<'_>,
    role: &str,
    table: &Table,
    tenant_column: &str,
    orgs: &[Org],
    fixtures: &Fixtures,
    cell: &mut Cell,
) -> Result<(), postgres::Error> {
    if table.kind == Kind::Global {
        cell.reach.insert("closed");
        return Ok(());
    }
    let name = &table.name;
    let seen = as_role(tx, role, None, &format!("SELECT count(*)::text FROM {name}"))?;
    if let Ok(seen) = seen {
        let n: u64 = seen.get(0, 0).and_then(|n| n.parse().ok()).unwrap_or(0);
        if n > 0 {
            cell.leaks.push(format!("{role} without a context sees {n} row(s)"));
        }
    }
    let mut counter = 2_000_000u64;
    if let Ok(sql) = insert_sql(table, orgs, tenant_column, 0, 0, Variant::Private, fixtures, &mut counter) {
        if as_role(tx, role, None, &sql)?.is_ok() {
            cell.leaks.push(format!("{role} without a context inserted a row"));
        }
    }
    for (what, sql) in [
        ("updated", format!("UPDATE {name} t SET {0} = t.{0}", quote_ident(tenant_column))),
        ("deleted", format!("DELETE FROM {name}")),
    ] {
        if let Ok(done) = as_role(tx, role, None, &sql)? {
            let n = done.processed;
            if n > 0 {
                cell.leaks.push(format!("{role} without a context {what} {n} row(s)"));
            }
        }
    }
    if cell.leaks.is_empty() {
        cell.reach.insert("closed");
    }
    Ok(())
}

fn letter(i: usize) -> char {
    (b'A' + i as u8) as char
}

/// The matrix, one block per role, then every leak and everything not verified.
pub fn render_human(report: &Report) -> String {
    let mut out = String::new();
    let width = report.results.iter().map(|r| r.table.len()).max().unwrap_or(5).max(5);
    for role in &report.roles {
        out.push_str(&format!("\nrole {role}, acting for each of {} organizations:\n\n", report.organizations));
        out.push_str(&format!("  {:<width$}  {:<9}", "table", "kind"));
        for c in COMMANDS {
            out.push_str(&format!("  {c:<20}"));
        }
        out.push('\n');
        for r in report.results.iter().filter(|r| &r.role == role) {
            let kind = match r.kind {
                Kind::Tenant => "tenant",
                Kind::Shareable => "shareable",
                Kind::Global => "global",
            };
            out.push_str(&format!("  {:<width$}  {kind:<9}", r.table));
            for c in COMMANDS {
                out.push_str(&format!("  {:<20}", r.cells[c].text()));
            }
            out.push('\n');
        }
    }
    let leaks: Vec<String> = report
        .results
        .iter()
        .flat_map(|r| {
            r.cells.iter().flat_map(move |(c, cell)| cell.leaks.iter().map(move |l| format!("{} {c}: {l}", r.table)))
        })
        .collect();
    let unverified: Vec<String> = report
        .unverified_tables
        .iter()
        .map(|(t, why)| format!("{t}: {why}"))
        .chain(report.results.iter().flat_map(|r| {
            r.cells
                .iter()
                .flat_map(move |(c, cell)| cell.unverified.iter().map(move |u| format!("{} {c}: {u}", r.table)))
        }))
        .collect();
    out.push('\n');
    for l in &leaks {
        out.push_str(&format!("LEAK {l}\n"));
    }
    for u in &unverified {
        out.push_str(&format!("not verified: {u}\n"));
    }
    let cells = report.results.len() * COMMANDS.len();
    if leaks.is_empty() && unverified.is_empty() {
        out.push_str(&format!(
            "ok: no leaks ({} table{} x {} commands x {} role{} x {} organizations; everything was rolled back)\n",
            report.results.len() / report.roles.len().max(1),
            if report.results.len() / report.roles.len().max(1) == 1 { "" } else { "s" },
            COMMANDS.len(),
            report.roles.len(),
            if report.roles.len() == 1 { "" } else { "s" },
            report.organizations
        ));
    } else {
        out.push_str(&format!(
            "error: {} leak{}, {} check{} not verified, in {cells} checks (everything was rolled back)\n",
            leaks.len(),
            if leaks.len() == 1 { "" } else { "s" },
            unverified.len(),
            if unverified.len() == 1 { "" } else { "s" },
        ));
    }
    out
}
