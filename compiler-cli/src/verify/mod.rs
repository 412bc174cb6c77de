//! `tenancy verify`: proves isolation on a live database by trying to break it. Inside one
//! transaction that is always rolled back, it creates two organizations with an owner each (with
//! two levels, projects in them too), writes rows into every table of the audited schemas
//! (generating values for required columns and foreign keys), shares and publishes rows of
//! shareable tables, and then, as each application role acting in each organization or project,
//! tries every command against every tenant's rows. Anything beyond the tenant's own rows, the
//! rows shared with it, public rows and global rows is a leak.
//!
//! Given the policy files, it knows what they declare (each table's tenant column, kind and
//! level, the application's own organizations, memberships and projects, which it creates rows
//! in the way the application does); without them it audits by lint's heuristics, for a
//! database pg_tenancy never touched.
//!
//! [`catalog`] reads the tables, [`fixtures`] makes the tenants and rows, [`probes`] tries the
//! commands, [`report`] prints the matrix.

mod catalog;
mod fixtures;
mod probes;
mod report;

use crate::model::Compiled;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub use report::render_human;

/// What to verify: the same as what `lint` audits. Without application roles, verify acts as
/// the roles of the policy files, else as the members of `tenancy_writer` and `tenancy_reader`
/// (except superusers, table owners and the caller): the roles the DBA marked as application
/// roles, which `tenancy apply` does.
pub use crate::lint::Options;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Tenant,
    Shareable,
    /// Rows belong to a tenant through a parent table's row.
    Child,
    /// The application's users: each user's own row.
    Identity,
    Global,
    /// Application-wide by the policy files' declaration (with a reason): not probed.
    Unscoped,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::Shareable => "shareable",
            Kind::Child => "child",
            Kind::Identity => "identity",
            Kind::Global => "global",
            Kind::Unscoped => "unscoped",
        }
    }
}

/// The result of one command on one table for one role.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cell {
    /// What the role reached without leaking: `own`, `shared`, `public`, `global`, `all`,
    /// `refused` (its own rows, by the application's triggers or constraints: see `notes`),
    /// `none`, `denied` or `closed`.
    pub reach: BTreeSet<&'static str>,
    /// Every leak, described.
    pub leaks: Vec<String>,
    /// Why (part of) this check could not run.
    pub unverified: Vec<String>,
    /// What refused the tenant's own rows besides privileges and policies (`refused`).
    pub notes: Vec<String>,
}

impl Cell {
    fn text(&self) -> String {
        if !self.leaks.is_empty() {
            return "LEAK".into();
        }
        if !self.unverified.is_empty() {
            return "not verified".into();
        }
        let order = ["own", "shared", "public", "global", "all", "refused", "none", "denied", "closed"];
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
    /// One per [`COMMANDS`] entry, over every tenant.
    pub cells: BTreeMap<&'static str, Cell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub roles: Vec<String>,
    pub organizations: usize,
    /// The contexts acted in: `A`, `B`, and with two levels the projects `A1`, `B1`, `A2`.
    pub tenants: Vec<String>,
    /// Whether the policy files said what each table is (else lint's heuristics did).
    pub from_policies: bool,
    pub results: Vec<TableResult>,
    /// Tables no row could be written to, with the reason: their rows were not checked.
    pub unverified_tables: Vec<(String, String)>,
    /// Tables the policy files declare application-wide, with their reason: not probed.
    pub unscoped: Vec<(String, String)>,
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

/// Runs `sql` as `role` in a tenant's `context` (the statement that starts it; None: without a
/// context), always rolled back.
fn as_role(
    tx: &mut postgres::Transaction<'_>,
    role: &str,
    context: Option<&str>,
    sql: &str,
) -> Result<Result<Outcome, String>, postgres::Error> {
    Ok(as_role_after(tx, None, role, context, sql)?.unwrap_or_else(|| Err("no first step".into())))
}

/// What runs as a table's owner before a probe, in the probe's savepoint: `clear` with the
/// database's triggers off (`session_replication_role = replica`, as the superuser verify is:
/// the tenant's fixture rows go though other fixtures reference them), then `write` with them on.
struct First<'a> {
    table: &'a catalog::Table,
    clear: Option<String>,
    write: Option<String>,
}

/// [`as_role`], after `first` ran as its table's owner in the same context (rows moved out of
/// the way, or one written to be deleted), rolled back with the rest; None when `first` failed.
fn as_role_after(
    tx: &mut postgres::Transaction<'_>,
    first: Option<&First<'_>>,
    role: &str,
    context: Option<&str>,
    sql: &str,
) -> Result<Option<Result<Outcome, String>>, postgres::Error> {
    tx.batch_execute("SAVEPOINT tenancy_verify_as")?;
    let mut prepared = tx.batch_execute(context.unwrap_or("SELECT tenancy.clear_context()"));
    if let (Ok(()), Some(f)) = (&prepared, first) {
        if let Some(clear) = &f.clear {
            prepared = tx
                .batch_execute("SET LOCAL session_replication_role = replica")
                .and_then(|()| as_owner(tx, f.table, clear).map(|_| ()))
                .and_then(|()| tx.batch_execute("SET LOCAL session_replication_role = origin"));
        }
        if let (Ok(()), Some(write)) = (&prepared, &f.write) {
            prepared = as_owner(tx, f.table, write).map(|_| ());
        }
    }
    let result = match prepared {
        Ok(()) => Some(restricted(tx, role, false, sql).map_err(|e| error_text(&e))),
        Err(e) if e.as_db_error().is_some() && first.is_some() => None,
        Err(e) => Some(Err(error_text(&e))),
    };
    tx.batch_execute("ROLLBACK TO SAVEPOINT tenancy_verify_as; RELEASE SAVEPOINT tenancy_verify_as")?;
    Ok(result)
}

/// Runs `sql` as `table`'s owner, past FORCE ROW LEVEL SECURITY (see [`restricted`]): the
/// table's code runs with its owner's rights only.
fn as_owner(tx: &mut postgres::Transaction<'_>, table: &catalog::Table, sql: &str) -> Result<Outcome, postgres::Error> {
    restricted(tx, &table.owner, true, sql)
}

fn is_denied(error: &str) -> bool {
    // Refusals: privileges, row-level security, the extension's guards, foreign keys, checks.
    ["(42501)", "(23503)", "(23514)", "(P0001)", "(53400)", "(23502)"].iter().any(|c| error.ends_with(c))
}

/// Verifies every table of the audited schemas, knowing what `compiled` (the policy files,
/// checked against this database) declares when given. Everything happens in one transaction
/// that is rolled back, whatever happens.
pub fn verify(
    client: &mut postgres::Client,
    options: &Options,
    compiled: Option<&Compiled>,
) -> Result<Report, VerifyError> {
    let mut tx = client.transaction()?;
    let report = run(&mut tx, options, compiled);
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

fn run(
    tx: &mut postgres::Transaction<'_>,
    options: &Options,
    compiled: Option<&Compiled>,
) -> Result<Report, VerifyError> {
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
    let schemas = match compiled {
        Some(c) if options.schemas.is_empty() => c.schemas.clone(),
        _ => crate::lint::audited_schemas(tx, &options.schemas)?,
    };
    let tables = catalog::read_tables(tx, &schemas, &options.tenant_column, compiled)?;
    if tables.is_empty() {
        return Err(VerifyError::Unusable("no tables to verify in the audited schemas".into()));
    }
    let roles = catalog::app_roles(tx, &options.app_roles, compiled, &tables)?;
    if roles.is_empty() {
        return Err(VerifyError::Unusable(
            "no application role: no role other than superusers and the tables' owners is a member of tenancy_writer or tenancy_reader (tenancy apply grants them to the roles of the policy files; or pass --app-role)".into(),
        ));
    }
    // Every check's constraints are checked by its own statement: a deferred trigger cannot fire
    // inside the security-restricted operations the checks run in (and would hide its outcome).
    tx.batch_execute("SET CONSTRAINTS ALL IMMEDIATE")?;
    let (tenants, fixtures) = fixtures::create_tenants(tx, &tables, compiled)?;
    // The fixtures are written and read back by each table's owner, past FORCE ROW LEVEL
    // SECURITY (all of it is rolled back); the probes below run as the application roles.
    let mut unverified_tables: Vec<(String, String)> = tables
        .iter()
        .filter(|t| t.kind != Kind::Unscoped)
        .filter_map(|t| Some((t.name.clone(), t.reason.clone()?)))
        .collect();
    let mut writer =
        fixtures::Writer { tables: &tables, tenants: &tenants, fixtures, counter: 0, repairs: BTreeMap::new() };
    writer.write_fixtures(tx, &mut unverified_tables)?;
    fixtures::share_fixtures(tx, &tables, &tenants, &writer.fixtures)?;
    let visible = fixtures::visible_rows(tx, &tables, &tenants)?;
    writer.counter = 1_000_000;

    let mut results = Vec::new();
    for role in &roles {
        for table in &tables {
            if table.kind == Kind::Unscoped || unverified_tables.iter().any(|(t, _)| *t == table.name) {
                continue;
            }
            let mut cells: BTreeMap<&'static str, Cell> = COMMANDS.iter().map(|c| (*c, Cell::default())).collect();
            let mut probe = probes::Probe { role, table, writer: &mut writer };
            for x in 0..tenants.list.len() {
                match table.kind {
                    Kind::Global => probe.global_table(tx, x, &mut cells)?,
                    Kind::Identity => probe.identity_table(tx, x, &mut cells)?,
                    _ => {
                        let allowed = visible.get(&(table.name.clone(), x)).cloned().unwrap_or_default();
                        probe.tenant_table(tx, x, allowed, &mut cells)?
                    }
                }
            }
            probe.without_context(tx, cells.get_mut("no context").unwrap())?;
            results.push(TableResult { table: table.name.clone(), kind: table.kind, role: role.clone(), cells });
        }
    }
    results.sort_by(|a, b| (&a.role, &a.table).cmp(&(&b.role, &b.table)));
    let unscoped = tables
        .iter()
        .filter(|t| t.kind == Kind::Unscoped)
        .map(|t| (t.name.clone(), t.reason.clone().unwrap_or_default()))
        .collect();
    Ok(Report {
        roles,
        organizations: tenants.orgs.len(),
        tenants: tenants.list.iter().map(|t| t.label.clone()).collect(),
        from_policies: compiled.is_some(),
        results,
        unverified_tables,
        unscoped,
    })
}
