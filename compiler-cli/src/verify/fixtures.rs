//! The verifier's tenants and rows: two organizations, each with an owner (and with two levels,
//! projects: two in the first organization, one in the second), created the way the policy
//! files say the application creates them (rows of its own organizations, memberships and
//! projects tables, which the sync turns into pg_tenancy's), then rows in every table for each
//! of them.

use super::catalog::Table;
use super::{as_owner, attempt, literal, Kind, VerifyError};
use crate::model::{Compiled, TenantKey};
use crate::schema::quote_ident;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// An organization the verifier created.
pub(super) struct Org {
    /// pg_tenancy's id.
    pub id: String,
    /// What the text and integer tenant columns of organization-level tables hold: the
    /// application's key (uuid ones hold `id`).
    pub key: String,
}

/// A context the verifier acts in: an organization, or a project of one.
pub(super) struct Tenant {
    /// `A`, `B`; with two levels `A1`, `A2`, `B1` for projects and `A`, `B` for organizations.
    pub label: String,
    pub org: usize,
    /// The project's key: what the tenant columns of project-level tables hold (text and
    /// integer ones; uuid ones hold `project_id`).
    pub project: Option<String>,
    pub project_id: Option<String>,
    pub user: String,
    /// The statement that starts the context.
    pub context: String,
}

pub(super) struct Tenants {
    pub orgs: Vec<Org>,
    pub list: Vec<Tenant>,
}

impl Tenants {
    /// What the tenants are: `organizations`, or `organizations or projects`.
    pub fn noun(&self) -> &'static str {
        if self.list.iter().any(|t| t.project.is_some()) {
            "organizations or projects"
        } else {
            "organizations"
        }
    }

    /// `organization A`, `project A1 of organization A`.
    pub fn describe(&self, x: usize) -> String {
        let t = &self.list[x];
        let org = if t.org == 0 { "A" } else { "B" };
        match &t.project {
            Some(_) => format!("project {} of organization {org}", t.label),
            None => format!("organization {org}"),
        }
    }

    /// What the rows of `table` that tenant `x` owns hold in their tenant column (or their
    /// parent's): none for project-level tables in an organization context.
    pub fn owner(&self, table: &Table, x: usize) -> Option<&str> {
        let t = &self.list[x];
        let org = &self.orgs[t.org];
        match (table.project_level, table.uuid_key) {
            (true, false) => t.project.as_deref(),
            (true, true) => t.project_id.as_deref(),
            (false, false) => Some(org.key.as_str()),
            (false, true) => Some(org.id.as_str()),
        }
    }

    /// What tenant `x` reaches in `table` as its own: its owner, and in an organization's
    /// context, on the application's project memberships (which the organization's admins
    /// manage), its projects' too.
    pub fn reached(&self, table: &Table, x: usize) -> Vec<String> {
        let t = &self.list[x];
        let mut out: Vec<String> = self.owner(table, x).map(str::to_string).into_iter().collect();
        if table.org_admins && t.project.is_none() {
            for y in (0..self.list.len()).filter(|&y| self.list[y].org == t.org && self.list[y].project.is_some()) {
                out.extend(self.owner(table, y).map(str::to_string));
            }
        }
        out
    }

    /// The first tenant owning what `x` owns in `table`: the one whose fixtures hold those rows.
    pub fn writer(&self, table: &Table, x: usize) -> Option<usize> {
        let own = self.owner(table, x)?;
        (0..self.list.len()).find(|&i| self.owner(table, i) == Some(own))
    }

    /// The other tenants' distinct owners in `table`, each with its writer.
    pub fn others(&self, table: &Table, x: usize) -> Vec<(usize, String)> {
        let own = self.owner(table, x);
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for y in 0..self.list.len() {
            if let Some(o) = self.owner(table, y) {
                if Some(o) != own && seen.insert(o.to_string()) {
                    out.push((y, o.to_string()));
                }
            }
        }
        out
    }
}

/// The variants of fixture rows per table: a private row, for shareable tables a row shared
/// for reading, one shared for writing and (with a visibility column) a public one, and for
/// tables with global rows a NULL-keyed one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Variant {
    Private,
    SharedRead,
    SharedWrite,
    Public,
    Global,
    /// A `user_rows` table's row of a user (NULL tenant column).
    UserRow,
}

/// A row the verifier wrote: its ctid and values.
#[derive(Clone)]
pub(super) struct Fixture {
    pub ctid: String,
    pub values: serde_json::Map<String, Value>,
}

impl Fixture {
    pub fn value(&self, column: &str) -> Option<String> {
        match self.values.get(column) {
            Some(Value::Null) | None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => Some(v.to_string()),
        }
    }
}

/// Rows per (table, writer tenant); `NO_TENANT` holds rows of no tenant (global rows, reference
/// data).
pub(super) type Fixtures = BTreeMap<(String, usize), Vec<(Variant, Fixture)>>;
pub(super) const NO_TENANT: usize = usize::MAX;

/// One row to write: whose it is and what its foreign keys point at.
pub(super) struct Row<'a> {
    /// The tenant column's value (None: NULL, or left to its default).
    pub owner: Option<&'a str>,
    /// The tenant whose rows the foreign keys point at (normally the row's own).
    pub parents_of: usize,
    pub variant: Variant,
    /// The tenant whose user foreign keys to identity tables point at (`parents_of` if None):
    /// a writer names itself, whichever tenant's rows it writes.
    pub users_of: Option<usize>,
    /// Values given as SQL, by column.
    pub given: BTreeMap<String, String>,
}

impl<'a> Row<'a> {
    pub fn new(owner: Option<&'a str>, parents_of: usize) -> Row<'a> {
        Row { owner, parents_of, variant: Variant::Private, users_of: None, given: BTreeMap::new() }
    }
}

pub(super) struct Writer<'a> {
    pub tables: &'a [Table],
    pub tenants: &'a Tenants,
    pub fixtures: Fixtures,
    pub counter: u64,
    /// What rows of a table must do to satisfy its CHECK constraints, found by writing its
    /// fixtures: by (table, whether the row is global), each column filled or left NULL.
    pub repairs: BTreeMap<(String, bool), BTreeMap<String, Repair>>,
}

/// A column a table's CHECK constraints need filled (with a generated value or its foreign key's
/// row) or NULL.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Repair {
    Fill,
    Null,
    /// Filled with another value ([`generate_as`]).
    Other(u8),
}

/// The CHECK constraint an error names (`violates check constraint "x"`).
fn violated_check(error: &str) -> Option<&str> {
    let rest = error.split_once("violates check constraint \"")?.1;
    rest.split_once('"').map(|(name, _)| name)
}

impl Writer<'_> {
    fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// A fixture row of `table` that tenant `x` may point at: its own, else a row of no tenant.
    pub fn parent_row(&self, table: &str, x: usize) -> Option<&Fixture> {
        let target = self.table(table)?;
        // Before the tenants exist (their organizations' rows), only rows of no tenant.
        let tenant = self.tenants.list.get(x);
        let writer = match tenant {
            None => None,
            Some(tenant) if target.kind == Kind::Identity => {
                Some(self.tenants.list.iter().position(|t| t.org == tenant.org).unwrap_or(x))
            }
            Some(_) if target.tenant.is_some() || target.parent.is_some() => self.tenants.writer(target, x),
            Some(_) => None,
        };
        writer
            .and_then(|w| self.fixtures.get(&(table.to_string(), w)))
            .or_else(|| self.fixtures.get(&(table.to_string(), 0)).filter(|_| target.kind == Kind::Global))
            .or_else(|| self.fixtures.get(&(table.to_string(), NO_TENANT)))
            .and_then(|rows| {
                rows.iter()
                    .find(|(v, _)| *v != Variant::Global && *v != Variant::UserRow)
                    .or_else(|| rows.iter().find(|(v, _)| *v == Variant::Global))
            })
            .map(|(_, f)| f)
    }

    /// A child table's parent columns set to a global row of its parent (whose tenant column is
    /// NULL), as SQL by column: a global child row.
    pub fn global_parent(&self, table: &Table) -> Option<BTreeMap<String, String>> {
        let p = table.parent.as_ref().filter(|p| p.target_global)?;
        let target = self.table(&p.target)?;
        let (_, row) =
            self.fixtures.get(&(p.target.clone(), NO_TENANT))?.iter().find(|(v, _)| *v == Variant::Global)?;
        p.columns
            .iter()
            .zip(&p.target_columns)
            .map(|(c, tc)| {
                let ty = &target.column(tc)?.sql_type;
                Some((c.clone(), format!("{}::{ty}", literal(&row.value(tc)?))))
            })
            .collect()
    }

    /// Whether `row` of `table` is a global one (its repairs may differ from the tenants' rows).
    fn is_global(table: &Table, row: &Row<'_>) -> bool {
        row.variant == Variant::Global || (table.tenant.is_some() && row.owner.is_none())
    }

    /// The INSERT for one generated row of `table`.
    pub fn insert_sql(&mut self, table: &Table, row: &Row<'_>) -> Result<String, String> {
        let mut names = Vec::new();
        let mut values = Vec::new();
        let repairs = self.repairs.get(&(table.name.clone(), Self::is_global(table, row))).cloned().unwrap_or_default();
        for column in &table.columns {
            if column.generated {
                continue;
            }
            self.counter += 1;
            let typed = |v: &str| format!("{}::{}", literal(v), column.sql_type);
            let repair = repairs.get(&column.name).copied();
            let value = if let Some(v) = row.given.get(&column.name) {
                Some(v.clone())
            } else if repair == Some(Repair::Null) {
                Some("NULL".into())
            } else if table.tenant.as_deref() == Some(column.name.as_str()) {
                row.owner.map(typed)
            } else if Some(&column.name) == table.visibility_column.as_ref() {
                Some(typed(if row.variant == Variant::Public { "public" } else { "private" }))
            } else if let Some(fk) = table.foreign_keys.iter().find(|fk| fk.columns.contains(&column.name)) {
                let i = fk.columns.iter().position(|c| *c == column.name).unwrap();
                let referred = fk.referred[i].clone();
                let references = fk.references.to_string();
                let org = self.tenants.list.get(row.parents_of).map(|t| &self.tenants.orgs[t.org]);
                if let (true, Some(org)) = (references == "tenancy.organizations", org) {
                    Some(typed(&org.id))
                } else if let Some(parent) = self.parent_row(
                    &references,
                    match self.table(&references).map(|t| t.kind) {
                        Some(Kind::Identity) => row.users_of.unwrap_or(row.parents_of),
                        _ => row.parents_of,
                    },
                ) {
                    parent.value(&referred).map(|v| typed(&v))
                } else if column.not_null && !column.has_default {
                    Some(format!("(SELECT {} FROM {} LIMIT 1)", quote_ident(&referred), references))
                } else {
                    None
                }
            } else if let Some(Repair::Other(k)) = repair {
                Some(generate_as(column, self.counter, Some(k)).ok_or_else(|| {
                    format!("cannot generate a value of type {} for column {}", column.sql_type, column.name)
                })?)
            } else if (column.not_null && !column.has_default) || repair == Some(Repair::Fill) {
                Some(generate(column, self.counter).ok_or_else(|| {
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

    /// Writes `row` into `table` as its owner, in `context` (a statement, or none), and returns
    /// the row written. A row its CHECK constraints refuse is written again with the columns of
    /// the constraint filled, one of them filled and the others NULL ("exactly one parent"), or
    /// all NULL, up to three constraints deep; what worked holds for the table's later rows.
    fn write(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        table: &Table,
        row: &Row<'_>,
        context: Option<&str>,
    ) -> Result<Result<Fixture, String>, postgres::Error> {
        let first = self.write_once(tx, table, row, context)?;
        match first {
            Err(e) if violated_check(&e).is_some() => self.repair(tx, table, row, context, e, 3),
            first => Ok(first),
        }
    }

    fn repair(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        table: &Table,
        row: &Row<'_>,
        context: Option<&str>,
        error: String,
        depth: u32,
    ) -> Result<Result<Fixture, String>, postgres::Error> {
        let check = violated_check(&error).and_then(|name| {
            table.checks.iter().find(|(n, _)| n == name).cloned().or_else(|| {
                // A domain's CHECK: the columns of that domain.
                let domain = error.split_once("value for domain ")?.1.split_once(' ')?.0;
                let last = |t: &str| t.rsplit('.').next().unwrap_or(t).trim_matches('"').to_string();
                let columns: Vec<String> = table
                    .columns
                    .iter()
                    .filter(|c| c.base_type.is_some() && last(&c.sql_type) == last(domain))
                    .map(|c| c.name.clone())
                    .collect();
                (!columns.is_empty()).then(|| (name.to_string(), columns))
            })
        });
        let Some((name, columns)) = check.filter(|_| depth > 0) else { return Ok(Err(error)) };
        // Never the columns that say whose the row is.
        let keep: Vec<&str> = table
            .tenant
            .iter()
            .chain(table.parent.iter().flat_map(|p| &p.columns))
            .chain(table.identity.iter())
            .map(String::as_str)
            .collect();
        let free: Vec<&String> = columns.iter().filter(|c| !keep.contains(&c.as_str())).collect();
        let nullable = |c: &String| table.column(c).is_some_and(|c| !c.not_null);
        let mut candidates: Vec<BTreeMap<String, Repair>> =
            vec![free.iter().map(|c| ((*c).clone(), Repair::Fill)).collect()];
        for one in &free {
            candidates.push(
                free.iter()
                    .filter(|c| *c == one || nullable(c))
                    .map(|c| ((*c).clone(), if c == one { Repair::Fill } else { Repair::Null }))
                    .collect(),
            );
        }
        candidates.push(free.iter().filter(|c| nullable(c)).map(|c| ((*c).clone(), Repair::Null)).collect());
        // Other values: a number or a text the first ones were outside of.
        for k in 0..2 {
            candidates.push(free.iter().map(|c| ((*c).clone(), Repair::Other(k))).collect());
        }
        let key = (table.name.clone(), Self::is_global(table, row));
        let base = self.repairs.get(&key).cloned().unwrap_or_default();
        // What this constraint's columns had from earlier rows, undone first.
        let mut undone = base.clone();
        undone.retain(|c, _| !columns.contains(c));
        candidates.insert(0, BTreeMap::new());
        for candidate in candidates {
            let mut merged = undone.clone();
            merged.extend(candidate);
            if merged == base {
                continue;
            }
            self.repairs.insert(key.clone(), merged);
            match self.write_once(tx, table, row, context)? {
                Ok(f) => return Ok(Ok(f)),
                Err(e) if violated_check(&e).is_some_and(|other| other != name) => {
                    if let Ok(f) = self.repair(tx, table, row, context, e, depth - 1)? {
                        return Ok(Ok(f));
                    }
                }
                Err(_) => {}
            }
        }
        self.repairs.insert(key, base);
        Ok(Err(error))
    }

    fn write_once(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        table: &Table,
        row: &Row<'_>,
        context: Option<&str>,
    ) -> Result<Result<Fixture, String>, postgres::Error> {
        let sql = match self.insert_sql(table, row) {
            Ok(sql) => sql,
            Err(e) => return Ok(Err(e)),
        };
        let context = context.unwrap_or("SELECT tenancy.clear_context()").to_string();
        let result = attempt(tx, |tx| {
            tx.batch_execute(&context)?;
            as_owner(tx, table, &format!("{sql} RETURNING ctid::text, to_jsonb(t)::text"))
        })?;
        Ok(result.and_then(|outcome| match (outcome.get(0, 0), outcome.get(0, 1)) {
            (Some(ctid), Some(values)) => {
                Ok(Fixture { ctid: ctid.to_string(), values: serde_json::from_str(values).unwrap_or_default() })
            }
            _ => Err("the INSERT wrote no row (a trigger skipped it)".to_string()),
        }))
    }

    /// For the rows written before the tenants exist (the application's organizations): a row
    /// in each table of no tenant (unscoped, global) that a required foreign key of `table`
    /// points at, when that table is empty.
    fn write_required_parents(&mut self, tx: &mut postgres::Transaction<'_>, table: &Table) -> Result<(), VerifyError> {
        self.write_required_parents_of(tx, table, &mut Vec::new())
    }

    /// [`Writer::write_required_parents`], `seen` the tables on the way (a cycle of required
    /// foreign keys between empty tables stops there: its rows cannot be written one by one).
    fn write_required_parents_of(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        table: &Table,
        seen: &mut Vec<String>,
    ) -> Result<(), VerifyError> {
        if seen.contains(&table.name) {
            return Ok(());
        }
        seen.push(table.name.clone());
        for fk in &table.foreign_keys {
            let required = fk.columns.iter().all(|c| table.column(c).is_some_and(|c| c.not_null && !c.has_default));
            let references = fk.references.to_string();
            let tables = self.tables;
            let Some(target) = tables.iter().find(|t| t.name == references && t.tenant.is_none() && t.parent.is_none())
            else {
                continue;
            };
            if !required || references == table.name || self.fixtures.contains_key(&(references.clone(), NO_TENANT)) {
                continue;
            }
            let empty = as_owner(tx, target, &format!("SELECT (NOT EXISTS (SELECT FROM {references}))::text"))?
                .get(0, 0)
                == Some("true");
            if empty {
                self.write_required_parents_of(tx, target, seen)?;
                let f = self.write(tx, target, &Row::new(None, 0), None)?.map_err(|e| {
                    VerifyError::Unusable(format!(
                        "{} needs a row in {references} (foreign key {}), which could not be written: {e}",
                        table.name,
                        fk.name.as_deref().unwrap_or("")
                    ))
                })?;
                self.fixtures.entry((references, NO_TENANT)).or_default().push((Variant::Private, f));
            }
        }
        Ok(())
    }

    /// Writes the rows of every table the tenants own, parents first.
    pub fn write_fixtures(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        unverified: &mut Vec<(String, String)>,
    ) -> Result<(), postgres::Error> {
        let tables = self.tables;
        for table in tables {
            if table.kind == Kind::Unscoped || table.reason.is_some() {
                continue;
            }
            if table.kind == Kind::Global {
                // Reference data: rows that exist are enough to try to change.
                let has_rows = as_owner(tx, table, &format!("SELECT EXISTS (SELECT FROM {})::text", table.name))?
                    .get(0, 0)
                    == Some("true");
                if has_rows {
                    // Marks the table as not empty (see the probes).
                    self.fixtures.entry((table.name.clone(), NO_TENANT)).or_default();
                } else {
                    // An empty reference table is still checked: its writes must be refused.
                    let context = self.tenants.list[0].context.clone();
                    if let Ok(f) = self.write(tx, table, &Row::new(None, 0), Some(&context))? {
                        self.fixtures.entry((table.name.clone(), 0)).or_default().push((Variant::Private, f));
                    }
                }
                continue;
            }
            if table.kind == Kind::Identity {
                // The users' own rows, written with the organizations; a second identity table
                // gets a row per user with the same id.
                let column = table.identity.clone().unwrap_or_default();
                for x in 0..self.tenants.list.len() {
                    let first = self.tenants.list.iter().position(|t| t.org == self.tenants.list[x].org) == Some(x);
                    if !first || self.fixtures.contains_key(&(table.name.clone(), x)) {
                        continue;
                    }
                    let Some(c) = table.column(&column) else { continue };
                    let mut row = Row::new(None, x);
                    row.given
                        .insert(column.clone(), format!("{}::{}", literal(&self.tenants.list[x].user), c.sql_type));
                    match self.write(tx, table, &row, None)? {
                        Ok(f) => self.fixtures.entry((table.name.clone(), x)).or_default().push((Variant::Private, f)),
                        Err(e) => {
                            unverified.push((table.name.clone(), format!("could not write a user's row: {e}")));
                            break;
                        }
                    }
                }
                continue;
            }
            let mut variants = vec![Variant::Private];
            if table.kind == Kind::Shareable {
                variants.extend([Variant::SharedRead, Variant::SharedWrite]);
                if table.visibility_column.is_some() {
                    variants.push(Variant::Public);
                }
            }
            'tenants: for x in 0..self.tenants.list.len() {
                if self.tenants.writer(table, x) != Some(x) || self.fixtures.contains_key(&(table.name.clone(), x)) {
                    continue;
                }
                let owner = self.tenants.owner(table, x).map(str::to_string);
                let context = self.tenants.list[x].context.clone();
                for &variant in &variants {
                    let mut row = Row::new(owner.as_deref(), x);
                    row.variant = variant;
                    match self.write(tx, table, &row, Some(&context))? {
                        Ok(f) => self.fixtures.entry((table.name.clone(), x)).or_default().push((variant, f)),
                        Err(e) => {
                            unverified.push((table.name.clone(), format!("could not write a row: {e}")));
                            break 'tenants;
                        }
                    }
                }
            }
            if table.global_rows {
                // A global row, as a DBA writes it.
                let mut row = Row::new(None, 0);
                row.variant = Variant::Global;
                if table.parent.is_some() {
                    let Some(given) = self.global_parent(table) else {
                        unverified.push((table.name.clone(), "its parent has no global row to write under".into()));
                        continue;
                    };
                    row.given = given;
                }
                match self.write(tx, table, &row, None)? {
                    Ok(f) => {
                        self.fixtures.entry((table.name.clone(), NO_TENANT)).or_default().push((Variant::Global, f))
                    }
                    Err(e) => unverified.push((table.name.clone(), format!("could not write a global row: {e}"))),
                }
            }
            if let (Some(uc), Some(tc)) = (&table.user_rows, &table.tenant) {
                // Each user's own row (NULL tenant column), as the table's owner writes it.
                let Some(c) = table.column(uc) else { continue };
                let mut done = BTreeSet::new();
                for x in 0..self.tenants.list.len() {
                    let user = self.tenants.list[x].user.clone();
                    if !done.insert(user.clone()) {
                        continue;
                    }
                    let mut row = Row::new(None, x);
                    row.variant = Variant::UserRow;
                    row.given.insert(tc.clone(), "NULL".into());
                    row.given.insert(uc.clone(), format!("{}::{}", literal(&user), c.sql_type));
                    match self.write(tx, table, &row, None)? {
                        Ok(f) => self
                            .fixtures
                            .entry((table.name.clone(), NO_TENANT))
                            .or_default()
                            .push((Variant::UserRow, f)),
                        Err(e) => {
                            unverified.push((table.name.clone(), format!("could not write a user's row: {e}")));
                            break;
                        }
                    }
                }
            }
        }
        tx.batch_execute("SELECT tenancy.clear_context()")?;
        Ok(())
    }
}

/// A value for a required column without a default.
pub(super) fn generate(column: &super::catalog::Column, n: u64) -> Option<String> {
    generate_as(column, n, None)
}

/// [`generate`], or (`alternative` 0, 1) other values for CHECK constraints the first broke:
/// numbers 1 and 100 (`amount > 0`, `BETWEEN 1 AND 5`), texts longer and of one letter
/// (`length(x) >= 3`, `x ~ '^[a-z]'`).
pub(super) fn generate_as(column: &super::catalog::Column, n: u64, alternative: Option<u8>) -> Option<String> {
    let t = column.sql_type.as_str();
    let cast = |v: String| Some(format!("{}::{t}", literal(&v)));
    if let (Some(s), None) = (&column.suggested, alternative) {
        return cast(s.clone());
    }
    // A domain's values are its base type's (cast to the domain, whose CHECK constraints hold).
    let chosen = column.base_type.as_deref().unwrap_or(t);
    // The type without its modifiers (`timestamp(3) without time zone`) or its schema
    // (`public.citext`).
    let mut base = String::new();
    let mut depth = 0;
    for ch in chosen.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => base.push(ch),
            _ => {}
        }
    }
    // The type's modifiers: `character varying(20)`: [20], `numeric(10,2)`: [10, 2].
    let modifiers: Vec<u32> = chosen
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(m, _)| m.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
    let base = base.rsplit('.').next().unwrap_or(&base).trim_matches('"');
    let number = |v: u64| match alternative {
        Some(0) => 1,
        Some(_) => 100,
        None => v,
    };
    let text = || match alternative {
        Some(0) => format!("verify{n}value"),
        Some(_) => "v".to_string(),
        None => format!("v{n}"),
    };
    match base {
        "uuid" => Some(format!("gen_random_uuid()::{t}")),
        "text" | "name" | "citext" => cast(text()),
        // Within the length (`varchar(2)`): the value's last characters, which differ most.
        "character varying" | "character" => {
            let v = text();
            let keep = modifiers.first().map_or(v.len(), |&m| m.max(1) as usize);
            cast(v[v.len().saturating_sub(keep)..].to_string())
        }
        // Within the precision (`numeric(4,2)`: under 100).
        "numeric" if !modifiers.is_empty() => {
            let digits = modifiers[0].saturating_sub(modifiers.get(1).copied().unwrap_or(0));
            cast((number(n) % 10u64.pow(digits.min(5)).max(1)).to_string())
        }
        "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision" => {
            cast(number(n % 30000).to_string())
        }
        "boolean" => cast((alternative == Some(0)).to_string()),
        "timestamp with time zone" | "timestamp without time zone" => Some(format!("now()::{t}")),
        "date" => Some(format!("current_date::{t}")),
        "time without time zone" | "time with time zone" => cast("12:00".into()),
        "interval" => cast("1 hour".into()),
        "json" | "jsonb" => cast("{}".into()),
        // Distinct values, for unique keys and exclusion constraints.
        "bytea" => cast(format!("\\x{n:08x}")),
        "inet" | "cidr" => cast(format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)),
        "bit" | "bit varying" => cast("1".repeat(modifiers.first().copied().unwrap_or(1).max(1) as usize)),
        "int4range" | "int8range" | "numrange" => cast(format!("[{},{})", n % 1_000_000, n % 1_000_000 + 1)),
        "daterange" => Some(format!("daterange(current_date + {d}, current_date + {d} + 1)::{t}", d = n % 100_000)),
        "tsrange" | "tstzrange" => Some(format!(
            "{base}(now()::timestamp + interval '1 minute' * {m}, now()::timestamp + interval '1 minute' * ({m} + 1))::{t}",
            m = n % 10_000_000
        )),
        // One element, for `cardinality(x) > 0`, where the element type is text.
        _ if t.ends_with("[]") && ["text[]", "character varying[]", "citext[]"].contains(&base) => {
            cast(format!("{{{}}}", text()))
        }
        _ if t.ends_with("[]") => cast("{}".into()),
        _ => None,
    }
}

/// A fresh value for a key column of `key`'s type, or None to leave it to its default.
fn fresh_key(table: &Table, column: &str, key: TenantKey, text: &str, number: u64) -> Option<String> {
    let c = table.column(column)?;
    // An integer key's default may be a sequence behind rows written with explicit ids; one
    // generated always takes none.
    if c.identity_always || (c.has_default && key != TenantKey::Integer) {
        return None;
    }
    Some(match key {
        TenantKey::Uuid => format!("gen_random_uuid()::{}", c.sql_type),
        TenantKey::Text => format!("{}::{}", literal(text), c.sql_type),
        TenantKey::Integer => format!("{}::{}", literal(&number.to_string()), c.sql_type),
    })
}

/// The id of the organization (`parent` None) or project (of organization `parent`) the sync
/// made in pg_tenancy of the row verify wrote into the application's `table` with `key`.
fn synced_id(
    tx: &mut postgres::Transaction<'_>,
    table: &Table,
    key: &str,
    parent: Option<&str>,
) -> Result<String, VerifyError> {
    let id: Option<String> = tx
        .query_opt(
            "SELECT id::text FROM tenancy.organizations
              WHERE parent_id IS NOT DISTINCT FROM $1::text::uuid AND (id::text = $2 OR key = $2)",
            &[&parent, &key],
        )?
        .map(|r| r.get(0));
    let noun = if parent.is_some() { "project" } else { "organization" };
    id.ok_or_else(|| {
        VerifyError::Unusable(format!(
            "the {noun} verify wrote into {} ({key}): the sync made no pg_tenancy {noun} of it (does it meet the `active` condition?)",
            table.name
        ))
    })
}

/// Creates the organizations, their owners and (with two levels) projects, and the contexts the
/// verifier acts in.
pub(super) fn create_tenants(
    tx: &mut postgres::Transaction<'_>,
    writer_tables: &[Table],
    compiled: Option<&Compiled>,
) -> Result<(Tenants, Fixtures), VerifyError> {
    // An unlimited plan if there is one, so that quotas do not stop the fixtures.
    let plan: String = tx
        .query_one(
            "SELECT coalesce((SELECT p.name FROM tenancy.plans p WHERE NOT EXISTS (
                 SELECT FROM tenancy.plan_limits l WHERE l.plan = p.name AND l.quota IS NOT NULL) ORDER BY p.name LIMIT 1), 'free')",
            &[],
        )?
        .get(0);
    let tag: String = tx.query_one("SELECT substr(md5(random()::text), 1, 8)", &[])?.get(0);
    let number: u64 =
        tx.query_one("SELECT (900000000 + floor(random() * 90000000))::bigint", &[])?.get::<_, i64>(0) as u64;
    let sync = compiled.map(|c| &c.sync);
    let mut w = Writer {
        tables: writer_tables,
        tenants: &Tenants { orgs: vec![], list: vec![] },
        fixtures: Fixtures::new(),
        counter: 0,
        repairs: BTreeMap::new(),
    };
    let find = |name: &crate::schema::QualifiedName| writer_tables.iter().find(|t| t.name == name.to_string());
    // Rows written before the tenants exist, registered as fixtures once they do: (table, org, row).
    let mut written: Vec<(String, usize, Fixture)> = Vec::new();
    let fail = |what: String, e: String| VerifyError::Unusable(format!("{what}: {e}"));

    // The users: rows of the table the memberships' user column references, or of the identity
    // table, when there is one (the context's user id is then that row's id).
    let user_source: Option<(&Table, String)> = sync
        .and_then(|s| s.memberships.as_ref())
        .and_then(|m| {
            let t = find(&m.table)?;
            let fk = t.foreign_keys.iter().find(|fk| fk.columns == [m.user.clone()])?;
            Some((writer_tables.iter().find(|x| x.name == fk.references.to_string())?, fk.referred[0].clone()))
        })
        .or_else(|| {
            writer_tables.iter().find(|t| t.kind == Kind::Identity).map(|t| (t, t.identity.clone().unwrap_or_default()))
        });
    let mut users = Vec::new();
    for (o, letter) in ["a", "b"].into_iter().enumerate() {
        let default = format!("tenancy-verify-{letter}");
        let Some((table, column)) = &user_source else {
            // An id of the memberships' user column's type.
            let user_type = sync
                .and_then(|s| s.memberships.as_ref())
                .and_then(|m| find(&m.table)?.column(&m.user))
                .and_then(|c| TenantKey::of_type(&c.sql_type));
            users.push(match user_type {
                Some(TenantKey::Integer) => (number + 30 + o as u64).to_string(),
                Some(TenantKey::Uuid) => tx.query_one("SELECT gen_random_uuid()::text", &[])?.get(0),
                _ => default,
            });
            continue;
        };
        let mut row = Row::new(None, 0);
        if let Some(c) = table.column(column) {
            let text = TenantKey::of_type(&c.sql_type) == Some(TenantKey::Text);
            if text || !c.has_default {
                let key = TenantKey::of_type(&c.sql_type).unwrap_or(TenantKey::Text);
                if let Some(v) = fresh_key(table, column, key, &format!("{default}-{tag}"), number + o as u64) {
                    row.given.insert(column.clone(), v);
                }
            }
        }
        let f =
            w.write(tx, table, &row, None)?.map_err(|e| fail(format!("cannot write a user into {}", table.name), e))?;
        let id =
            f.value(column).ok_or_else(|| fail(format!("the user written into {}", table.name), "has no id".into()))?;
        written.push((table.name.clone(), o, f));
        users.push(id);
    }

    let mut orgs = Vec::new();
    for (o, letter) in ["a", "b"].into_iter().enumerate() {
        let name = format!("Verify {}", letter.to_uppercase());
        let slug = format!("tenancy-verify-{tag}-{letter}");
        let user = users[o].clone();
        let Some(s) = sync.and_then(|s| s.organizations.as_ref()) else {
            let id: String = tx
                .query_one("SELECT tenancy.create_organization($1, $2, $3, $4)::text", &[&name, &slug, &user, &plan])?
                .get(0);
            orgs.push(Org { key: id.clone(), id });
            continue;
        };
        // The application's own organization: the sync makes pg_tenancy's.
        let table =
            find(&s.table).ok_or_else(|| fail(format!("{} is not audited", s.table), "add its schema".into()))?;
        w.write_required_parents(tx, table)?;
        let mut row = Row::new(None, 0);
        if let Some(v) = fresh_key(table, &s.id, s.key, &slug, number + 10 + o as u64) {
            row.given.insert(s.id.clone(), v);
        }
        for (column, value) in [(Some(&s.name), &name), (s.slug.as_ref(), &slug)] {
            if let Some(c) = column.and_then(|c| table.column(c)) {
                row.given.insert(c.name.clone(), format!("{}::{}", literal(value), c.sql_type));
            }
        }
        let f = w
            .write(tx, table, &row, None)?
            .map_err(|e| fail(format!("cannot write an organization into {}", table.name), e))?;
        let key = f.value(&s.id).unwrap_or_default();
        let id = synced_id(tx, table, &key, None)?;
        written.push((table.name.clone(), o, f));
        // Its owner: a row of the application's memberships, which the sync copies.
        if let Some(m) = sync.and_then(|s| s.memberships.as_ref()) {
            let table =
                find(&m.table).ok_or_else(|| fail(format!("{} is not audited", m.table), "add its schema".into()))?;
            w.write_required_parents(tx, table)?;
            let mut row = Row::new(Some(&key), 0);
            let typed = |column: &str, v: &str| {
                table.column(column).map(|c| format!("{}::{}", literal(v), c.sql_type)).unwrap_or_default()
            };
            row.given.insert(m.organization.clone(), typed(&m.organization, &key));
            row.given.insert(m.user.clone(), typed(&m.user, &user));
            if let Some(role) = &m.role {
                let value = if m.roles.is_empty() {
                    Some("owner".to_string())
                } else {
                    m.roles.iter().find(|(_, r)| r == "owner").map(|(v, _)| v.clone())
                };
                if let Some(v) = value {
                    row.given.insert(role.clone(), typed(role, &v));
                }
            }
            let f = w
                .write(tx, table, &row, None)?
                .map_err(|e| fail(format!("cannot write the owner's membership into {}", table.name), e))?;
            written.push((table.name.clone(), o, f));
        }
        // The verifier acts as the owner, whatever the membership's role and active condition.
        tx.execute(
            "INSERT INTO tenancy.members (org_id, user_id, role) VALUES ($1::text::uuid, $2, 'owner')
             ON CONFLICT (org_id, user_id) DO UPDATE SET role = 'owner'",
            &[&id, &user],
        )?;
        orgs.push(Org { id, key });
    }

    // Projects: two in the first organization, one in the second.
    let mut list = Vec::new();
    let projects = sync.and_then(|s| s.projects.as_ref());
    if let Some(p) = projects {
        let table =
            find(&p.table).ok_or_else(|| fail(format!("{} is not audited", p.table), "add its schema".into()))?;
        let mut made = Vec::new();
        for (o, n) in [(0usize, 1), (1, 1), (0, 2)] {
            let label = format!("{}{n}", if o == 0 { "A" } else { "B" });
            let slug = format!("tenancy-verify-{tag}-{}", label.to_lowercase());
            let mut row = Row::new(Some(&orgs[o].key), 0);
            row.given.insert(
                p.organization.clone(),
                table
                    .column(&p.organization)
                    .map(|c| format!("{}::{}", literal(&orgs[o].key), c.sql_type))
                    .unwrap_or_default(),
            );
            if let Some(v) = fresh_key(table, &p.id, p.key, &slug, number + 20 + made.len() as u64) {
                row.given.insert(p.id.clone(), v);
            }
            for (column, value) in [(Some(&p.name), &format!("Verify {label}")), (p.slug.as_ref(), &slug)] {
                if let Some(c) = column.and_then(|c| table.column(c)) {
                    row.given.insert(c.name.clone(), format!("{}::{}", literal(value), c.sql_type));
                }
            }
            let context = format!("SELECT tenancy.set_context({}, {})", literal(&orgs[o].id), literal(&users[o]));
            let f = w
                .write(tx, table, &row, Some(&context))?
                .map_err(|e| fail(format!("cannot write a project into {}", table.name), e))?;
            let key = f.value(&p.id).unwrap_or_default();
            let id = synced_id(tx, table, &key, Some(&orgs[o].id))?;
            written.push((table.name.clone(), o, f));
            list.push(Tenant {
                label,
                org: o,
                project: Some(key),
                project_id: Some(id.clone()),
                user: users[o].clone(),
                context: format!("SELECT tenancy.set_project_context({}, {})", literal(&id), literal(&users[o])),
            });
            made.push(id);
        }
    }
    for (o, org) in orgs.iter().enumerate() {
        list.push(Tenant {
            label: if o == 0 { "A" } else { "B" }.into(),
            org: o,
            project: None,
            project_id: None,
            user: users[o].clone(),
            context: format!("SELECT tenancy.set_context({}, {})", literal(&org.id), literal(&users[o])),
        });
    }
    let tenants = Tenants { orgs, list };
    // The rows written on the way are the fixtures of their tables for their organization.
    let mut fixtures = Fixtures::new();
    for (name, o, f) in written {
        let Some(table) = writer_tables.iter().find(|t| t.name == name) else { continue };
        let x = tenants.list.iter().position(|t| t.org == o).unwrap_or(0);
        let key = match table.kind {
            Kind::Identity => x,
            Kind::Tenant | Kind::Shareable | Kind::Child => match tenants.writer(table, x) {
                Some(w) => w,
                None => continue,
            },
            Kind::Global | Kind::Unscoped => NO_TENANT,
        };
        fixtures.entry((name, key)).or_default().push((Variant::Private, f));
    }
    tx.batch_execute("SELECT tenancy.clear_context()")?;
    Ok((tenants, fixtures))
}

/// Shares rows of shareable tables: each organization shares its shared-for-reading row and its
/// shared-for-writing row with the next organization.
pub(super) fn share_fixtures(
    tx: &mut postgres::Transaction<'_>,
    tables: &[Table],
    tenants: &Tenants,
    fixtures: &Fixtures,
) -> Result<(), postgres::Error> {
    for table in tables.iter().filter(|t| t.kind == Kind::Shareable) {
        let id_column = table.id_column.as_deref().unwrap_or("id");
        for x in 0..tenants.list.len() {
            let org = tenants.list[x].org;
            let other = &tenants.orgs[(org + 1) % tenants.orgs.len()];
            for (variant, row) in fixtures.get(&(table.name.clone(), x)).into_iter().flatten() {
                let permissions = match variant {
                    Variant::SharedRead => "{read}",
                    Variant::SharedWrite => "{read,write}",
                    _ => continue,
                };
                let Some(id) = row.value(id_column) else { continue };
                tx.batch_execute(&format!(
                    "{}; SELECT tenancy.share({}::regclass, {}::text, {}, {});",
                    tenants.list[x].context,
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

/// For each table and tenant: the rows outside it that it may read, by ctid, each `shared`
/// (with it) or `public`, and those it may write (shared with it for writing), by their values
/// as JSON (an UPDATE returns the new row version, whose ctid differs).
pub(super) type Allowed = (BTreeMap<String, &'static str>, BTreeSet<String>);

/// [`Allowed`] for every shareable table and tenant, read while the fixtures are in place: the
/// shares from pg_tenancy's catalog, the rows by the table's owner.
pub(super) fn visible_rows(
    tx: &mut postgres::Transaction<'_>,
    tables: &[Table],
    tenants: &Tenants,
) -> Result<BTreeMap<(String, usize), Allowed>, postgres::Error> {
    let mut out = BTreeMap::new();
    for table in tables.iter().filter(|t| t.kind == Kind::Shareable && t.reason.is_none()) {
        let id = quote_ident(table.id_column.as_deref().unwrap_or("id"));
        let public = table
            .visibility_column
            .as_ref()
            .map_or("false".to_string(), |v| format!("t.{} = 'public'", quote_ident(v)));
        let rows = as_owner(
            tx,
            table,
            &format!(
                "SELECT t.ctid::text, to_jsonb(t)::text, {}, t.{id}::text, ({public})::text FROM {} t",
                table.owner_sql(),
                table.name
            ),
        )?
        .rows;
        // Shares name organizations by pg_tenancy's id; rows hold their key, unless uuid.
        let key_of: BTreeMap<&str, &str> = tenants
            .orgs
            .iter()
            .map(|o| (o.id.as_str(), if table.uuid_key { o.id.as_str() } else { o.key.as_str() }))
            .collect();
        for x in 0..tenants.list.len() {
            let org = &tenants.orgs[tenants.list[x].org];
            let shares: BTreeMap<(String, String), bool> = tx
                .query(
                    "SELECT s.owner_org::text, s.row_id, s.can_write FROM tenancy.shares s
                      WHERE s.relation = $1::text::regclass AND s.grantee_org = $2::text::uuid",
                    &[&table.name, &org.id],
                )?
                .iter()
                .map(|r| {
                    let owner: String = r.get(0);
                    ((key_of.get(owner.as_str()).map_or(owner.clone(), |k| k.to_string()), r.get(1)), r.get(2))
                })
                .collect();
            let mut read = BTreeMap::new();
            let mut write = BTreeSet::new();
            let column = |row: &[Option<String>], i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let own = tenants.owner(table, x).unwrap_or_default();
            for row in rows.iter().filter(|r| column(r, 2) != own) {
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
