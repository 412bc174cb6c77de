//! `tenancy lint`: audits a live database, whatever produced its schema, for what lets one
//! tenant see or touch another's rows, or makes row-level security slow. Every finding has a
//! stable rule id, a severity, the object, and the SQL that fixes it.

use crate::diagnostics::Severity;
use crate::schema::quote_ident;
use serde::Serialize;
use sqlparser::ast::Expr;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::collections::{BTreeMap, BTreeSet};

/// Every rule, with its severity and what it checks (for `--help`, README and JSON consumers).
pub const RULES: &[(&str, Severity, &str)] = &[
    ("rls-disabled", Severity::Error, "a table with a tenant column has row-level security disabled"),
    ("rls-not-forced", Severity::Error, "row-level security is not forced, so the table's owner bypasses it"),
    ("nullable-tenant-column", Severity::Error, "the tenant column allows NULL (rows that belong to no organization)"),
    ("app-role-bypasses-rls", Severity::Error, "an application role is SUPERUSER or BYPASSRLS"),
    ("app-role-owns-table", Severity::Error, "an application role owns a tenant table (and can disable its policies)"),
    ("no-tenant-tables", Severity::Error, "no table has the tenant column: nothing was audited (the likely columns are suggested)"),
    ("unique-not-tenant-scoped", Severity::Error, "a PRIMARY KEY, UNIQUE constraint or index, or EXCLUDE constraint without the tenant column, other than a random uuid the server generates (values leak across tenants through unique violations)"),
    ("fk-not-tenant-scoped", Severity::Error, "a foreign key between tenant tables without the tenant column that the policies do not check (a row can point into another tenant)"),
    ("fk-cross-tenant-rows", Severity::Error, "rows whose foreign key points at another tenant's row (the rows are listed by the fix)"),
    ("view-not-security-invoker", Severity::Error, "a view over a tenant table runs with its owner's rights, bypassing policies"),
    ("extended-statistics-on-tenant-table", Severity::Error, "extended statistics (CREATE STATISTICS) on a tenant table: the planner uses their most common values under row-level security, so plan costs depend on other tenants' values"),
    ("materialized-view-of-tenant-table", Severity::Error, "a materialized view copies tenant rows out of reach of row-level security"),
    ("policy-per-row-function", Severity::Warning, "a policy calls a context function per row instead of once per statement"),
    ("missing-tenant-index", Severity::Warning, "no index leads with the tenant column"),
    ("fk-missing-index", Severity::Warning, "no index leads with a foreign key's columns"),
    ("security-definer-reads-tenant-table", Severity::Warning, "a SECURITY DEFINER function mentions a tenant table (it runs with its owner's rights)"),
    ("app-role-temporary", Severity::Error, "an application role may create temporary tables (their rows outlive a context on a pooled connection)"),
    ("app-role-reads-activity", Severity::Error, "an application role sees other sessions' statements in pg_stat_activity (every tenant runs as that role)"),
    ("app-role-large-objects", Severity::Error, "an application role may create and read large objects (they belong to the role, which every tenant shares)"),
    ("unique-waived", Severity::Warning, "a unique key without the tenant column that the policy files declare unique across organizations on purpose (listed with the reason)"),
    ("materialized-view-declared", Severity::Warning, "a materialized view of tenant tables that the policy files declare read whole by the application roles on purpose (listed with its reason)"),
    ("unscoped-table", Severity::Warning, "an application-wide table the policy files declare unscoped: every application role reads it whatever the context (listed with its reason)"),
    ("app-role-reads-statistics", Severity::Warning, "an application role reads table statistics (rows and writes of every organization together)"),
];

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub object: String,
    pub message: String,
    pub fix: String,
}

/// What to audit.
#[derive(Debug, Clone)]
pub struct Options {
    /// Schemas to audit; empty: every schema except the system ones and `tenancy`.
    pub schemas: Vec<String>,
    pub tenant_column: String,
    /// Application roles; empty: found in the database (each command says how).
    pub app_roles: Vec<String>,
}

fn finding(rule: &'static str, object: String, message: String, fix: String) -> Finding {
    let severity = RULES.iter().find(|r| r.0 == rule).map_or(Severity::Error, |r| r.1);
    Finding { rule, severity, object, message, fix }
}

struct TenantTable {
    oid: u32,
    name: String,
    owner: String,
    rls: bool,
    forced: bool,
    not_null: bool,
    tenant_attnum: i16,
    /// Its tenant column: the one lint was given, or with two levels the one its SELECT policy
    /// names.
    tenant_column: String,
    /// Its SELECT policy reads NULL-keyed rows as global (`global_rows = true`).
    global_rows: bool,
    /// Leading key columns (attnums) of every index.
    indexes: Vec<Vec<i16>>,
}

/// The schemas `lint` and `verify` look at: those given, or every schema except the system ones
/// and `tenancy`.
pub fn audited_schemas(
    client: &mut impl postgres::GenericClient,
    given: &[String],
) -> Result<Vec<String>, postgres::Error> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    Ok(client
        .query(
            "SELECT nspname::text FROM pg_namespace
              WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'tenancy', 'pg_toast')
                AND nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%'",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Runs every rule; returns the findings (errors first, in a stable order) and the number of
/// tenant tables audited.
pub fn lint(
    client: &mut impl postgres::GenericClient,
    options: &Options,
) -> Result<(Vec<Finding>, usize), postgres::Error> {
    let schemas = audited_schemas(client, &options.schemas)?;
    let mut tables: BTreeMap<u32, TenantTable> = BTreeMap::new();
    for row in client.query(
        "SELECT c.oid::int8, format('%s.%s', quote_ident(n.nspname), quote_ident(c.relname)),
                pg_get_userbyid(c.relowner)::text, c.relrowsecurity, c.relforcerowsecurity,
                a.attnotnull, a.attnum,
                ARRAY(SELECT x.indkey[0] FROM pg_index x WHERE x.indrelid = c.oid),
                EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenancy_select'
                          AND pg_get_expr(p.polqual, p.polrelid) LIKE '%' || quote_ident(coalesce(lv.tenant_column, $2)) || ' IS NULL%'),
                a.attname::text
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           -- With two levels, the SELECT policy names each table's tenant column (its level).
           LEFT JOIN LATERAL (SELECT substring(obj_description(p.oid, 'pg_policy') FROM '^level: [a-z]+, tenant column: (.+)$') AS tenant_column
                                FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenancy_select') lv ON true
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = coalesce(lv.tenant_column, $2) AND NOT a.attisdropped
          WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1)
            AND a.atttypid IN ('uuid'::regtype, 'text'::regtype, 'varchar'::regtype, 'int2'::regtype, 'int4'::regtype, 'int8'::regtype)
            -- A table the policy files declare unscoped (lint_unscoped lists it) or an identity
            -- table is no tenant table, as to tenancy check.
            AND NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenancy_select'
                              AND (obj_description(p.oid, 'pg_policy') LIKE 'unscoped: %'
                                   OR obj_description(p.oid, 'pg_policy') LIKE 'identity: %'))
          ORDER BY 2",
        &[&schemas, &options.tenant_column],
    )? {
        let oid = row.get::<_, i64>(0) as u32;
        tables.insert(
            oid,
            TenantTable {
                oid,
                name: row.get(1),
                owner: row.get(2),
                rls: row.get(3),
                forced: row.get(4),
                not_null: row.get(5),
                tenant_attnum: row.get(6),
                indexes: row.get::<_, Vec<i16>>(7).into_iter().map(|c| vec![c]).collect(),
                global_rows: row.get(8),
                tenant_column: row.get(9),
            },
        );
    }
    let col = quote_ident(&options.tenant_column);
    let mut out = Vec::new();
    if tables.is_empty() {
        out.push(no_tenant_tables(client, &schemas, &options.tenant_column)?);
    }
    for t in tables.values() {
        if !t.rls {
            out.push(finding(
                "rls-disabled",
                t.name.clone(),
                format!("table {} has tenant column {col} but row-level security is disabled", t.name),
                format!("ALTER TABLE {} ENABLE ROW LEVEL SECURITY; -- then add policies (tenancy compile)", t.name),
            ));
        }
        if !t.forced {
            out.push(finding(
                "rls-not-forced",
                t.name.clone(),
                format!("row-level security on {} is not forced: its owner `{}` bypasses it", t.name, t.owner),
                format!("ALTER TABLE {} FORCE ROW LEVEL SECURITY;", t.name),
            ));
        }
        if !t.not_null && !t.global_rows {
            out.push(finding(
                "nullable-tenant-column",
                format!("{}.{col}", t.name),
                format!("tenant column {col} of {} allows NULL", t.name),
                format!("ALTER TABLE {} ALTER COLUMN {col} SET NOT NULL;", t.name),
            ));
        }
        if !t.indexes.iter().any(|i| i.first() == Some(&t.tenant_attnum)) {
            out.push(finding(
                "missing-tenant-index",
                t.name.clone(),
                format!("no index of {} leads with {col}: every tenant-filtered query scans the table", t.name),
                format!("CREATE INDEX ON {} ({col});", t.name),
            ));
        }
    }
    lint_roles(client, options, &tables, &mut out)?;
    lint_policies(client, &tables, &mut out)?;
    let inside = lint_constraints(client, &tables, &col, &mut out)?;
    lint_unique_keys(client, &tables, &options.tenant_column, &col, &inside, &mut out)?;
    lint_views(client, &tables, &mut out)?;
    lint_extended_statistics(client, &tables, &mut out)?;
    lint_security_definers(client, &tables, &mut out)?;
    lint_unscoped(client, &schemas, &mut out)?;
    out.sort_by(|a, b| (a.severity, &a.object, a.rule).cmp(&(b.severity, &b.object, b.rule)));
    out.dedup();
    Ok((out, tables.len()))
}

/// Extended statistics on tenant tables: pg_tenancy keeps the value-dependent parts of a tenant
/// table's column statistics from the planner, but PostgreSQL has no hook for extended ones.
fn lint_extended_statistics(
    client: &mut impl postgres::GenericClient,
    tables: &BTreeMap<u32, TenantTable>,
    out: &mut Vec<Finding>,
) -> Result<(), postgres::Error> {
    for row in client.query(
        "SELECT format('%s.%s', quote_ident(n.nspname), quote_ident(s.stxname)), s.stxrelid::regclass::text
           FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
          WHERE s.stxrelid::int8 = ANY($1) ORDER BY 1",
        &[&oids(tables)],
    )? {
        let (name, table): (String, String) = (row.get(0), row.get(1));
        out.push(finding(
            "extended-statistics-on-tenant-table",
            name.clone(),
            format!("extended statistics {name} on tenant table {table}: their most common values and dependencies span every organization's rows, and the planner uses them under row-level security"),
            format!("DROP STATISTICS {name};"),
        ));
    }
    Ok(())
}

fn oids(tables: &BTreeMap<u32, TenantTable>) -> Vec<i64> {
    tables.keys().map(|&o| i64::from(o)).collect()
}

fn lint_roles(
    client: &mut impl postgres::GenericClient,
    options: &Options,
    tables: &BTreeMap<u32, TenantTable>,
    out: &mut Vec<Finding>,
) -> Result<(), postgres::Error> {
    let roles: Vec<String> = if options.app_roles.is_empty() {
        client
            .query(
                "SELECT DISTINCT r.rolname::text FROM pg_policy p, unnest(p.polroles) AS pr(oid)
                   JOIN pg_roles r ON r.oid = pr.oid
                  WHERE p.polrelid::int8 = ANY($1) ORDER BY 1",
                &[&oids(tables)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        options.app_roles.clone()
    };
    for role in roles {
        let Some(row) = client.query_opt("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", &[&role])?
        else {
            continue;
        };
        let (superuser, bypass): (bool, bool) = (row.get(0), row.get(1));
        if superuser || bypass {
            out.push(finding(
                "app-role-bypasses-rls",
                format!("role {}", quote_ident(&role)),
                format!(
                    "application role {} is {}: no policy applies to it",
                    quote_ident(&role),
                    if superuser { "SUPERUSER" } else { "BYPASSRLS" }
                ),
                format!("ALTER ROLE {} NOSUPERUSER NOBYPASSRLS;", quote_ident(&role)),
            ));
        }
        lint_role_privileges(client, &role, out)?;
        for t in tables.values().filter(|t| t.owner == role) {
            out.push(finding(
                "app-role-owns-table",
                t.name.clone(),
                format!(
                    "application role {} owns {} and can disable its row-level security",
                    quote_ident(&role),
                    t.name
                ),
                format!("ALTER TABLE {} OWNER TO <a migration role>;", t.name),
            ));
        }
    }
    Ok(())
}

/// What an application role may use besides the tables (see [`crate::hardening`]); the fixes are
/// the statements `tenancy apply` runs.
fn lint_role_privileges(
    client: &mut impl postgres::GenericClient,
    role: &str,
    out: &mut Vec<Finding>,
) -> Result<(), postgres::Error> {
    let row = client.query_one(
        "SELECT has_database_privilege($1, current_database(), 'TEMPORARY'),
                has_table_privilege($1, 'pg_catalog.pg_stat_activity', 'SELECT')
                    OR has_function_privilege($1, 'pg_catalog.pg_stat_get_activity(integer)', 'EXECUTE'),
                has_function_privilege($1, 'pg_catalog.lo_create(oid)', 'EXECUTE')
                    OR has_function_privilege($1, 'pg_catalog.lo_open(oid, integer)', 'EXECUTE'),
                has_table_privilege($1, 'pg_catalog.pg_stat_user_tables', 'SELECT')
                    OR has_function_privilege($1, 'pg_catalog.pg_stat_get_live_tuples(oid)', 'EXECUTE')",
        &[&role],
    )?;
    let object = format!("role {}", quote_ident(role));
    let roles = [role.to_string()];
    let checks: [(bool, &'static str, String, String); 4] = [
        (
            row.get(0),
            "app-role-temporary",
            format!("application role {} may create temporary tables", quote_ident(role)),
            crate::hardening::revoke_temporary(&roles),
        ),
        (
            row.get(1),
            "app-role-reads-activity",
            format!(
                "application role {} reads pg_stat_activity: other tenants' statements and their literals",
                quote_ident(role)
            ),
            crate::hardening::RESTRICT_STATISTICS.to_string(),
        ),
        (
            row.get(2),
            "app-role-large-objects",
            format!("application role {} may create and read large objects", quote_ident(role)),
            crate::hardening::REVOKE_LARGE_OBJECTS.to_string(),
        ),
        (
            row.get(3),
            "app-role-reads-statistics",
            format!(
                "application role {} reads table statistics (pg_stat_user_tables and its functions)",
                quote_ident(role)
            ),
            crate::hardening::RESTRICT_STATISTICS.to_string(),
        ),
    ];
    for (found, rule, message, fix) in checks {
        if found {
            out.push(finding(rule, object.clone(), message, fix));
        }
    }
    Ok(())
}

/// The context calls a policy expression makes per row, i.e. outside any sub-SELECT (empty if
/// the expression cannot be parsed).
pub fn per_row_calls(expression: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let Ok(expr) = Parser::new(&PostgreSqlDialect {}).try_with_sql(expression).and_then(|mut p| p.parse_expr()) else {
        return found;
    };
    crate::predicate::visit_outside_subqueries(&expr, |e| {
        if let Expr::Function(f) = e {
            let name = f.name.to_string();
            let last = name.rsplit('.').next().unwrap_or(&name).trim_matches('"').to_lowercase();
            // `tenancy.current_org()` itself is the exception (and its key readers): in a
            // policy's condition, pg_tenancy's planner hook makes it a parameter set once per
            // statement.
            let no_args = match &f.args {
                sqlparser::ast::FunctionArguments::None => true,
                sqlparser::ast::FunctionArguments::List(list) => list.args.is_empty(),
                sqlparser::ast::FunctionArguments::Subquery(_) => false,
            };
            let once = matches!(
                last.as_str(),
                "current_org"
                    | "current_org_key"
                    | "current_org_bigint"
                    | "current_project"
                    | "current_project_key"
                    | "current_project_bigint"
            ) && no_args;
            if !once && (last == "current_setting" || crate::predicate::TENANCY_FUNCTIONS.contains(&last.as_str())) {
                found.insert(format!("{name}()"));
            }
        }
    });
    found
}

fn lint_policies(
    client: &mut impl postgres::GenericClient,
    tables: &BTreeMap<u32, TenantTable>,
    out: &mut Vec<Finding>,
) -> Result<(), postgres::Error> {
    for row in client.query(
        "SELECT p.polrelid::int8, p.polname::text, pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
           FROM pg_policy p WHERE p.polrelid::int8 = ANY($1) ORDER BY 1, 2",
        &[&oids(tables)],
    )? {
        let table = &tables[&(row.get::<_, i64>(0) as u32)];
        let name: String = row.get(1);
        for expr in [row.get::<_, Option<String>>(2), row.get::<_, Option<String>>(3)].into_iter().flatten() {
            let calls = per_row_calls(&expr);
            if !calls.is_empty() {
                let list: Vec<String> = calls.iter().cloned().collect();
                out.push(finding(
                    "policy-per-row-function",
                    format!("policy {} on {}", quote_ident(&name), table.name),
                    format!("policy {} calls {} once per row", quote_ident(&name), list.join(", ")),
                    format!("wrap each call in a sub-SELECT, e.g. ({}) instead of {}, so it runs once per statement", format_args!("SELECT {}", list[0]), list[0]),
                ));
            }
        }
    }
    Ok(())
}

/// Per table (oid), its foreign keys to tenant tables without global rows: their columns (the
/// tenant column left out), and whether they keep rows inside their organization already.
type TenantForeignKeys = BTreeMap<u32, Vec<(Vec<String>, bool)>>;

/// Foreign-key rules. Returns, per table, the column lists of its foreign keys to tenant tables
/// without global rows (the tenant column left out), each with whether it keeps every row's
/// reference inside its organization already (composite, or checked by policies), for
/// [`lint_unique_keys`].
fn lint_constraints(
    client: &mut impl postgres::GenericClient,
    tables: &BTreeMap<u32, TenantTable>,
    col: &str,
    out: &mut Vec<Finding>,
) -> Result<TenantForeignKeys, postgres::Error> {
    let mut inside = TenantForeignKeys::new();
    // Full index key prefixes, for the foreign-key index rule.
    let mut index_keys: BTreeMap<u32, Vec<Vec<i16>>> = BTreeMap::new();
    for row in client
        .query("SELECT indrelid::int8, indkey::int2[] FROM pg_index WHERE indrelid::int8 = ANY($1)", &[&oids(tables)])?
    {
        index_keys.entry(row.get::<_, i64>(0) as u32).or_default().push(row.get(1));
    }
    // Rows that cross organizations are counted only by a role that sees them all.
    let sees_all: bool =
        client.query_one("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user", &[])?.get(0);
    for row in client.query(
        "SELECT c.conrelid::int8, c.conname::text, c.contype::text, c.conkey, c.confrelid::int8, c.confkey,
                ARRAY(SELECT quote_ident(a.attname) FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                ARRAY(SELECT quote_ident(a.attname) FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i),
                ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i)
           FROM pg_constraint c
          WHERE c.conrelid::int8 = ANY($1) AND c.contype = 'f'
          ORDER BY 1, 2",
        &[&oids(tables)],
    )? {
        let table = &tables[&(row.get::<_, i64>(0) as u32)];
        let name: String = row.get(1);
        let keys: Vec<i16> = row.get(3);
        let key_names: Vec<String> = row.get(6);
        let object = format!("constraint {} on {}", quote_ident(&name), table.name);
        let target = row.get::<_, i64>(4) as u32;
        let target_keys: Vec<i16> = row.get::<_, Option<Vec<i16>>>(5).unwrap_or_default();
        let target_names: Vec<String> = row.get(7);
        if let Some(parent) = tables.get(&target) {
            let scoped = keys.first() == Some(&table.tenant_attnum)
                && target_keys.first() == Some(&parent.tenant_attnum)
                || keys.iter().zip(&target_keys).any(|(k, f)| *k == table.tenant_attnum && *f == parent.tenant_attnum);
            let checked = checked_by_policies(client, table.oid, target)?;
            if parent.not_null && !parent.global_rows {
                let raw: Vec<String> = row.get(8);
                let columns =
                    keys.iter().zip(raw).filter(|(k, _)| **k != table.tenant_attnum).map(|(_, n)| n).collect();
                inside.entry(table.oid).or_default().push((columns, scoped || checked));
            }
            if !scoped && !checked {
                out.push(finding(
                    "fk-not-tenant-scoped",
                    object.clone(),
                    format!(
                        "foreign key ({}) of {} references {} ({}) without {col}",
                        key_names.join(", "),
                        table.name,
                        parent.name,
                        target_names.join(", ")
                    ),
                    format!(
                        "tenancy apply (its INSERT and UPDATE policies on {t} require the referenced row to be the organization's); or composite keys: ALTER TABLE {t} DROP CONSTRAINT {c}, ADD CONSTRAINT {c} FOREIGN KEY ({col}, {k}) REFERENCES {p} ({col}, {pk}); -- needs UNIQUE ({col}, {pk}) on {p}",
                        t = table.name,
                        c = quote_ident(&name),
                        k = key_names.join(", "),
                        p = parent.name,
                        pk = target_names.join(", ")
                    ),
                ));
            }
            if !scoped && sees_all {
                cross_tenant_rows(client, table, parent, &key_names, &target_names, &object, out)?;
            }
        }
        let wanted: BTreeSet<i16> = keys.iter().copied().collect();
        let indexed = index_keys.get(&table.oid).is_some_and(|all| {
            all.iter().any(|idx| {
                idx.len() >= keys.len() && idx[..keys.len()].iter().copied().collect::<BTreeSet<_>>() == wanted
            })
        });
        if !indexed {
            out.push(finding(
                "fk-missing-index",
                object,
                format!("no index of {} leads with the foreign key's columns ({})", table.name, key_names.join(", ")),
                format!("CREATE INDEX ON {} ({});", table.name, key_names.join(", ")),
            ));
        }
    }
    Ok(inside)
}

/// The finding for a tenant column that no table has, with the columns that look like one:
/// uuid, text or integer columns named like an organization, tenant, account, team, workspace,
/// company or project id, by how many tables have them.
fn no_tenant_tables(
    client: &mut impl postgres::GenericClient,
    schemas: &[String],
    tenant_column: &str,
) -> Result<Finding, postgres::Error> {
    let likely: Vec<String> = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, NULL), count(DISTINCT c.oid)
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p')
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
                AND a.attname ~ '(org|organi[sz]ation|tenant|account|team|workspace|company|project)_?id$'
                AND a.atttypid IN ('uuid'::regtype, 'text'::regtype, 'varchar'::regtype, 'int2'::regtype, 'int4'::regtype, 'int8'::regtype)
              GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 5",
            &[&schemas],
        )?
        .iter()
        .map(|r| {
            let n: i64 = r.get(2);
            format!("{} ({}, {n} table{})", r.get::<_, String>(0), r.get::<_, String>(1), if n == 1 { "" } else { "s" })
        })
        .collect();
    let message = format!(
        "no table in {} has a tenant column {} (uuid, text or integer): nothing was audited",
        schemas.join(", "),
        quote_ident(tenant_column)
    );
    let fix = match likely.first() {
        Some(_) => format!(
            "tenancy lint --tenant-column <column> (columns that look like tenant columns: {})",
            likely.join(", ")
        ),
        None => "tenancy lint --tenant-column <the column that holds the organization id>".to_string(),
    };
    Ok(finding("no-tenant-tables", "database".into(), message, fix))
}

/// True when every policy of `table` that lets rows in (INSERT, UPDATE, ALL) reads `target`:
/// what `tenancy apply` compiles for a foreign key without the tenant column (the referenced row
/// must be the organization's). Read from the policies' dependencies.
fn checked_by_policies(
    client: &mut impl postgres::GenericClient,
    table: u32,
    target: u32,
) -> Result<bool, postgres::Error> {
    let row = client.query_one(
        "SELECT count(*) > 0 AND bool_and(EXISTS (
                    SELECT FROM pg_depend d
                     WHERE d.classid = 'pg_policy'::regclass AND d.objid = p.oid
                       AND d.refclassid = 'pg_class'::regclass AND d.refobjid::int8 = $2))
           FROM pg_policy p
          WHERE p.polrelid::int8 = $1 AND p.polcmd IN ('a', 'w', '*') AND p.polpermissive",
        &[&i64::from(table), &i64::from(target)],
    )?;
    Ok(row.get::<_, Option<bool>>(0).unwrap_or(false))
}

/// Rows of `table` whose foreign key (`keys`, to `parent`'s `target_keys`) points at a row of
/// another organization (the caller counts them only as a role that bypasses row-level
/// security: any other sees its own rows at most).
#[allow(clippy::too_many_arguments)]
fn cross_tenant_rows(
    client: &mut impl postgres::GenericClient,
    table: &TenantTable,
    parent: &TenantTable,
    keys: &[String],
    target_keys: &[String],
    object: &str,
    out: &mut Vec<Finding>,
) -> Result<(), postgres::Error> {
    // Two levels: a project's row pointing at its organization's compares another column, and is
    // not a cross-tenant pointer by itself (the policies check the level).
    if table.tenant_column != parent.tenant_column {
        return Ok(());
    }
    let own = quote_ident(&table.tenant_column);
    let col = own.as_str();
    let join: Vec<String> = keys.iter().zip(target_keys).map(|(k, t)| format!("p.{t} = c.{k}")).collect();
    let listing = format!(
        "SELECT c.* FROM {} c JOIN {} p ON {} WHERE p.{col} IS DISTINCT FROM c.{col}",
        table.name,
        parent.name,
        join.join(" AND ")
    );
    let n: i64 = client.query_one(&format!("SELECT count(*) FROM ({listing}) x"), &[])?.get(0);
    if n > 0 {
        out.push(finding(
            "fk-cross-tenant-rows",
            object.to_string(),
            format!(
                "{n} row{} of {} point{} at a row of {} that belongs to another organization",
                if n == 1 { "" } else { "s" },
                table.name,
                if n == 1 { "s" } else { "" },
                parent.name
            ),
            format!("{listing}; -- then UPDATE or DELETE each of these rows"),
        ));
    }
    Ok(())
}

/// Unique keys of tenant tables: primary keys, unique constraints and unique indexes (partial
/// ones too), and exclusion constraints, whose conflicts tell one organization that another has
/// a value. Safe: with the tenant column, one uuid column the server fills at random, or every
/// column of a foreign key that keeps rows inside their organization ([`crate::rules`], the rule
/// `tenancy check` applies).
fn lint_unique_keys(
    client: &mut impl postgres::GenericClient,
    tables: &BTreeMap<u32, TenantTable>,
    tenant: &str,
    col: &str,
    inside: &TenantForeignKeys,
    out: &mut Vec<Finding>,
) -> Result<(), postgres::Error> {
    // What `tenancy apply` recorded from the policy files' `globally_unique` (a database without
    // the extension, or an older one, has none).
    let mut waivers: BTreeMap<(u32, String), String> = BTreeMap::new();
    let recorded: bool = client.query_one("SELECT to_regclass('tenancy.unique_waivers') IS NOT NULL", &[])?.get(0);
    if recorded {
        for row in client.query("SELECT relation::oid::int8, columns, reason FROM tenancy.unique_waivers", &[])? {
            waivers.insert((row.get::<_, i64>(0) as u32, row.get(1)), row.get(2));
        }
    }
    for row in client.query(
        "SELECT x.indrelid::int8, i.relname::text, coalesce(c.contype::text, ''), x.indisprimary, x.indisexclusion,
                ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, o)
                        LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n
                       WHERE k.o <= x.indnkeyatts ORDER BY k.o),
                ARRAY(SELECT coalesce(format_type(a.atttypid, a.atttypmod), '') FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, o)
                        LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n
                       WHERE k.o <= x.indnkeyatts ORDER BY k.o),
                ARRAY(SELECT coalesce(lower(pg_get_expr(d.adbin, d.adrelid)), '') FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, o)
                        LEFT JOIN pg_attrdef d ON d.adrelid = x.indrelid AND d.adnum = k.n
                       WHERE k.o <= x.indnkeyatts ORDER BY k.o),
                pg_get_indexdef(x.indexrelid), x.indpred IS NOT NULL, x.indnullsnotdistinct,
                ARRAY(SELECT coalesce(a.attnotnull, false) FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, o)
                        LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n
                       WHERE k.o <= x.indnkeyatts ORDER BY k.o),
                coalesce(pg_get_constraintdef(c.oid), ''),
                ARRAY(SELECT f.conrelid::regclass::text || '.' || quote_ident(f.conname) FROM pg_constraint f
                       WHERE f.contype = 'f' AND f.conindid = x.indexrelid ORDER BY 1)
           FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid
           LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
          WHERE x.indrelid::int8 = ANY($1) AND (x.indisunique OR x.indisexclusion)
          ORDER BY 1, 2",
        &[&oids(tables)],
    )? {
        let table = &tables[&(row.get::<_, i64>(0) as u32)];
        // Each table's own tenant column (two levels: the project's or the organization's).
        let own = quote_ident(&table.tenant_column);
        let (tenant, col) = if table.tenant_column == tenant { (tenant, col) } else { (table.tenant_column.as_str(), own.as_str()) };
        let (name, contype, primary, exclusion): (String, String, bool, bool) = (row.get(1), row.get(2), row.get(3), row.get(4));
        let names: Vec<Option<String>> = row.get(5);
        let types: Vec<String> = row.get(6);
        let defaults: Vec<String> = row.get(7);
        let (definition, partial): (String, bool) = (row.get(8), row.get(9));
        let not_null: Vec<bool> = row.get(11);
        let (constraint, referenced_by): (String, Vec<String>) = (row.get(12), row.get(13));
        let key = crate::rules::Key {
            columns: names
                .iter()
                .zip(types.iter().zip(&defaults))
                .zip(&not_null)
                .map(|((n, (t, d)), nn)| crate::rules::KeyColumn {
                    name: n.as_deref(),
                    data_type: t,
                    default: (!d.is_empty()).then_some(d.as_str()),
                    not_null: *nn,
                })
                .collect(),
            nulls_not_distinct: row.get(10),
        };
        let shown: Vec<String> = names.iter().map(|n| n.as_deref().map_or("<expression>".into(), quote_ident)).collect();
        let waived = waivers.get(&(table.oid, crate::rules::waiver_key(names.iter().map(|n| n.as_deref().unwrap_or("<expression>")))));
        let fks = inside.get(&table.oid).map_or(&[][..], Vec::as_slice);
        let references: Vec<Vec<String>> = fks.iter().filter(|(_, done)| *done).map(|(c, _)| c.clone()).collect();
        match crate::rules::unique_key(&key, tenant, &references, waived.map(String::as_str)) {
            crate::rules::UniqueKey::Unsafe => {}
            crate::rules::UniqueKey::Waived(reason) => {
                out.push(finding(
                    "unique-waived",
                    format!("index {} on {}", quote_ident(&name), table.name),
                    format!("({}) of {} is unique across organizations on purpose: {reason}", shown.join(", "), table.name),
                    "-- review: a unique violation tells one organization that another has the value".to_string(),
                ));
                continue;
            }
            _ => continue,
        }
        let what = match (contype.as_str(), primary, exclusion) {
            (_, true, _) => "PRIMARY KEY",
            (_, _, true) => "EXCLUDE constraint",
            ("u", ..) => "UNIQUE constraint",
            _ if partial => "partial unique index",
            _ => "unique index",
        };
        // Once `tenancy apply` checks its foreign keys in the policies, the key would be safe.
        let all: Vec<Vec<String>> = fks.iter().map(|(c, _)| c.clone()).collect();
        let after_apply = match crate::rules::unique_key(&key, tenant, &all, None) {
            crate::rules::UniqueKey::ScopedByReference(c) => Some(c),
            _ => None,
        };
        let fix = if let Some(columns) = after_apply {
            format!(
                "tenancy apply: its policies on {} check the foreign key ({}), so no row references another organization's and this key is per organization",
                table.name,
                columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
            )
        } else if contype.is_empty() {
            // An index: build the tenant-scoped one first, then drop the old one.
            let scoped = definition.replacen(" (", &format!(" ({col}, "), 1);
            let scoped = scoped.replacen(&format!("INDEX {} ON", quote_ident(&name)), &format!("INDEX CONCURRENTLY {} ON", quote_ident(&format!("{name}_scoped"))), 1);
            format!("{scoped}; DROP INDEX CONCURRENTLY {};", quote_ident(&name))
        } else if exclusion {
            format!("-- add {col} WITH = to the constraint: {definition}")
        } else if !referenced_by.is_empty() {
            // Foreign keys depend on the constraint: it cannot be dropped before they move.
            format!(
                "-- {n} foreign key{s} reference{v} it ({list}): `tenancy migrate-keys` moves them to a new UNIQUE ({col}, {k}); then: ALTER TABLE {t} DROP CONSTRAINT {c}; -- or, if the values are meant to be unique across organizations, declare the key in the policy file: globally_unique",
                n = referenced_by.len(),
                s = if referenced_by.len() == 1 { "" } else { "s" },
                v = if referenced_by.len() == 1 { "s" } else { "" },
                list = referenced_by.join(", "),
                t = table.name,
                c = quote_ident(&name),
                k = shown.join(", ")
            )
        } else {
            format!(
                "ALTER TABLE {t} DROP CONSTRAINT {c}, ADD CONSTRAINT {c} {scoped}; -- or, if the values are meant to be unique across organizations, declare the key in the policy file: globally_unique",
                t = table.name,
                c = quote_ident(&name),
                scoped = scoped_constraint(&constraint, col, primary, &shown)
            )
        };
        // A uuid or text primary key without a default: the application may fill it with random ids.
        // (Every primary key's fix ends in a comment, so the SQL before it still runs as printed.)
        let fix = if crate::rules::is_application_id(&key, primary) {
            format!(
                "{fix}; or, if the application fills {} with random ids (Django's UUIDField(default=uuid.uuid4), Prisma's @default(uuid()) or @default(cuid())), say so once in the policy file: random_ids = \"why\"",
                shown.join(", ")
            )
        } else {
            fix
        };
        out.push(finding(
            "unique-not-tenant-scoped",
            format!("index {} on {}", quote_ident(&name), table.name),
            format!("{what} ({}) of {} does not include {col}", shown.join(", "), table.name),
            fix,
        ));
    }
    Ok(())
}

/// A PRIMARY KEY or UNIQUE constraint's definition (as `pg_get_constraintdef` prints it) with
/// the tenant column first, keeping what else it says (`NULLS NOT DISTINCT`, `INCLUDE`,
/// `DEFERRABLE`, the index's storage parameters and tablespace).
fn scoped_constraint(definition: &str, column: &str, primary: bool, shown: &[String]) -> String {
    match definition.find('(') {
        Some(open) => format!("{}({column}, {}", &definition[..open], &definition[open + 1..]),
        None => format!("{} ({column}, {})", if primary { "PRIMARY KEY" } else { "UNIQUE" }, shown.join(", ")),
    }
}

/// Tables the policy files declare unscoped (`tenancy apply` puts the reason on their SELECT
/// policy), listed for review with the reason.
fn lint_unscoped(
    client: &mut impl postgres::GenericClient,
    schemas: &[String],
    out: &mut Vec<Finding>,
) -> Result<(), postgres::Error> {
    for row in client.query(
        "SELECT p.polrelid::regclass::text, substr(obj_description(p.oid, 'pg_policy'), 11)
           FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE p.polname = 'tenancy_select' AND n.nspname = ANY($1)
            AND obj_description(p.oid, 'pg_policy') LIKE 'unscoped: %'
          ORDER BY 1",
        &[&schemas],
    )? {
        let (table, reason): (String, String) = (row.get(0), row.get(1));
        out.push(finding(
            "unscoped-table",
            table.clone(),
            format!("{table} is unscoped: {reason}"),
            format!(
                "-- review: every application role reads {table} whatever the context; or make it kind = \"tenant\""
            ),
        ));
    }
    Ok(())
}

fn lint_views(
    client: &mut impl postgres::GenericClient,
    tables: &BTreeMap<u32, TenantTable>,
    out: &mut Vec<Finding>,
) -> Result<(), postgres::Error> {
    for row in client.query(
        "SELECT DISTINCT format('%s.%s', quote_ident(n.nspname), quote_ident(v.relname)), v.relkind::text,
                coalesce('security_invoker=true' = ANY(v.reloptions) OR 'security_invoker=on' = ANY(v.reloptions), false)
           FROM pg_depend d
           JOIN pg_rewrite w ON w.oid = d.objid AND d.classid = 'pg_rewrite'::regclass
           JOIN pg_class v ON v.oid = w.ev_class
           JOIN pg_namespace n ON n.oid = v.relnamespace
          WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid::int8 = ANY($1) AND v.oid::int8 <> ALL($1)
          ORDER BY 1",
        &[&oids(tables)],
    )? {
        let (name, kind, invoker): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        if kind == "m" {
            // Declared in the policy files (`[materialized_views]`): `tenancy apply` recorded the
            // reason with the declared unique keys, under no columns.
            let recorded: bool = client.query_one("SELECT to_regclass('tenancy.unique_waivers') IS NOT NULL", &[])?.get(0);
            let reason: Option<String> = if recorded {
                client
                    .query_opt(
                        "SELECT reason FROM tenancy.unique_waivers WHERE relation = $1::text::regclass AND columns = ''",
                        &[&name],
                    )?
                    .map(|r| r.get(0))
            } else {
                None
            };
            if let Some(reason) = reason {
                out.push(finding(
                    "materialized-view-declared",
                    name.clone(),
                    format!("materialized view {name} is read whole by the application roles, as the policy files declare: {reason}"),
                    format!("-- review: every application role reads all of {name}, every organization's rows; or replace it with a view"),
                ));
                continue;
            }
            out.push(finding(
                "materialized-view-of-tenant-table",
                name.clone(),
                format!("materialized view {name} copies rows of tenant tables; row-level security does not apply to it"),
                format!("DROP MATERIALIZED VIEW {name}; -- or REVOKE ALL ON {name} FROM the application roles"),
            ));
        } else if !invoker {
            out.push(finding(
                "view-not-security-invoker",
                name.clone(),
                format!("view {name} reads tenant tables with its owner's rights, bypassing their policies"),
                format!("ALTER VIEW {name} SET (security_invoker = true);"),
            ));
        }
    }
    Ok(())
}

fn lint_security_definers(
    client: &mut impl postgres::GenericClient,
    tables: &BTreeMap<u32, TenantTable>,
    out: &mut Vec<Finding>,
) -> Result<(), postgres::Error> {
    // Function bodies can be in any language, so this rule reads their text: a word equal to a
    // tenant table's name is reported for a person to review.
    let names: BTreeMap<String, &TenantTable> = tables
        .values()
        .map(|t| (t.name.rsplit('.').next().unwrap_or(&t.name).trim_matches('"').to_lowercase(), t))
        .collect();
    for row in client.query(
        "SELECT p.oid::regprocedure::text, p.prosrc
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenancy')
            -- What `tenancy apply` generates (owned by the superuser who applied it): the sync
            -- of the application's organizations and memberships, and the lookups.
            AND NOT ((p.proname LIKE 'tenancy\\_sync\\_%' OR p.proname LIKE 'tenancy\\_lookup\\_%')
                     AND (SELECT r.rolsuper FROM pg_roles r WHERE r.oid = p.proowner))
          ORDER BY 1",
        &[],
    )? {
        let (function, body): (String, String) = (row.get(0), row.get(1));
        let words: BTreeSet<String> =
            body.split(|c: char| !(c.is_alphanumeric() || c == '_')).map(str::to_lowercase).collect();
        for (word, table) in &names {
            if words.contains(word) {
                out.push(finding(
                    "security-definer-reads-tenant-table",
                    format!("function {function}"),
                    format!("SECURITY DEFINER function {function} mentions {}: it reads with its owner's rights", table.name),
                    format!("ALTER FUNCTION {function} SECURITY INVOKER; -- or make sure it filters by tenancy.current_org()"),
                ));
            }
        }
    }
    Ok(())
}

/// Renders findings for people.
pub fn render_human(findings: &[Finding], tables: usize) -> String {
    let mut s = String::new();
    for f in findings {
        let level = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        s.push_str(&format!("{level}[{}] {}: {}\n  fix: {}\n", f.rule, f.object, f.message, f.fix));
    }
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    let warnings = findings.len() - errors;
    s.push_str(&format!(
        "lint: {errors} error{}, {warnings} warning{} in {tables} tenant table{}\n",
        if errors == 1 { "" } else { "s" },
        if warnings == 1 { "" } else { "s" },
        if tables == 1 { "" } else { "s" }
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::per_row_calls;

    #[test]
    fn wrapped_context_calls_are_once_per_statement() {
        assert!(per_row_calls("(org_id = ( SELECT tenancy.current_org() AS current_org))").is_empty());
        assert!(per_row_calls("((org_id = ( SELECT tenancy.current_org() AS current_org)) AND ( SELECT tenancy.has_role('admin'::text) AS has_role))").is_empty());
    }

    #[test]
    fn bare_context_calls_are_per_row() {
        let found = per_row_calls("(org_id = tenancy.current_org() AND tenancy.has_role('admin'::text))");
        assert_eq!(found.into_iter().collect::<Vec<_>>(), vec!["tenancy.has_role()"]);
        let found = per_row_calls("(org_id = (current_setting('app.org'::text))::uuid)");
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn current_org_is_a_parameter_of_the_statement() {
        assert!(per_row_calls("(org_id = tenancy.current_org())").is_empty());
        assert!(per_row_calls("((org_id IS NULL) AND (tenancy.current_org() IS NOT NULL))").is_empty());
        assert!(per_row_calls("(project_id = tenancy.current_org_key())").is_empty());
        assert!(per_row_calls("(account_id = tenancy.current_org_bigint())").is_empty());
        assert!(per_row_calls("(project_id = tenancy.current_project_key())").is_empty());
        assert!(!per_row_calls("(org_id = tenancy.current_org() AND tenancy.has_org_role('admin'::text))").is_empty());
    }
}

#[cfg(test)]
mod scoped_constraint_tests {
    use super::scoped_constraint;

    #[test]
    fn the_tenant_column_goes_first_and_the_rest_of_the_constraint_stays() {
        let s = |d: &str| scoped_constraint(d, "org_id", false, &["code".into()]);
        assert_eq!(s("UNIQUE (code)"), "UNIQUE (org_id, code)");
        assert_eq!(s("UNIQUE NULLS NOT DISTINCT (code, kind)"), "UNIQUE NULLS NOT DISTINCT (org_id, code, kind)");
        assert_eq!(
            s("UNIQUE (code) INCLUDE (name) DEFERRABLE INITIALLY DEFERRED"),
            "UNIQUE (org_id, code) INCLUDE (name) DEFERRABLE INITIALLY DEFERRED"
        );
        assert_eq!(scoped_constraint("PRIMARY KEY (id)", "org_id", true, &["id".into()]), "PRIMARY KEY (org_id, id)");
        assert_eq!(s(""), "UNIQUE (org_id, code)", "without a definition, the columns");
    }
}
