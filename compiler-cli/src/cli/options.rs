//! The command line's options: the subcommands, their arguments, `--help` and the exit codes.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Exit codes, documented in `--help` and README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The policy files or the schema have errors, `lint` found errors, or `verify` found a leak
    /// or could not verify something (all printed).
    pub const POLICY_ERRORS: u8 = 1;
    /// The command line is wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// A file could not be read or written.
    pub const IO: u8 = 3;
    /// The database could not be reached, or refused a statement.
    pub const DATABASE: u8 = 4;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the policy files or the schema have errors; lint found errors; verify found a
     leak or could not verify a table
  2  the command line is wrong
  3  a file could not be read or written
  4  the database could not be reached or refused a statement

Examples:
  tenancy check policies/ --schema sql/schema.sql
  tenancy compile policies/app.toml --schema sql/schema.sql -o policies.sql
  DATABASE_URL=postgresql://postgres@localhost/app tenancy plan policies/
  DATABASE_URL=postgresql://postgres@localhost/app tenancy apply policies/
  tenancy lint --database-url postgresql://postgres@localhost/app --format json
  tenancy verify --database-url postgresql://postgres@localhost/app";

#[derive(Parser, Debug)]
#[command(name = "tenancy", version, about = "Compile pg_tenancy policy files into row-level security for PostgreSQL", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check policy files against the schema and report every problem
    Check(SchemaArgs),
    /// Compile policy files to SQL (stdout, or -o FILE)
    Compile {
        #[command(flatten)]
        args: SchemaArgs,
        /// Write the SQL to this file instead of stdout
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Audit a live database for cross-tenant leaks and slow policies (exit 1 on any error)
    Lint(LintArgs),
    /// Print the migration from foreign keys without the tenant column to composite keys (the
    /// strict option), in the order it must run; changes nothing
    MigrateKeys(MigrateArgs),
    /// Show what apply would change in a live database (policies, indexes, grants, what the
    /// application roles may use besides the tables, how they start a tenant context, ...), as SQL
    Plan {
        #[command(flatten)]
        policies: PolicyArgs,
        /// libpq URL of the database, as a superuser (it tries each change, then rolls back)
        #[arg(long, env = "DATABASE_URL", value_name = "URL")]
        database_url: String,
        /// Print only the indexes the plan adds, as CREATE INDEX CONCURRENTLY statements to run
        /// (outside a transaction, e.g. `psql -f`) before `apply`, so that building them on
        /// large tables never blocks writes; `apply` then finds them built
        #[arg(long)]
        concurrent_indexes: bool,
    },
    /// Prove isolation: as each application role and organization, try every command on every
    /// table, in a transaction that is rolled back (exit 1 on any leak)
    Verify(VerifyArgs),
    /// Apply exactly the plan, in one transaction (nothing when the database already matches)
    Apply {
        #[command(flatten)]
        policies: PolicyArgs,
        /// libpq URL of the database, as a superuser (it grants roles and takes privileges from
        /// PUBLIC)
        #[arg(long, env = "DATABASE_URL", value_name = "URL")]
        database_url: String,
    },
}

#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// Policy files, or directories whose *.toml files are read [default: policies/]
    #[arg(value_name = "POLICY")]
    pub policies: Vec<PathBuf>,
    /// How to print problems
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct SchemaArgs {
    #[command(flatten)]
    pub policies: PolicyArgs,
    /// A DDL file with the application schema, once per file (`--schema a.sql --schema b.sql`):
    /// CREATE TABLE, CREATE INDEX, ... (pg_dump --schema-only output and Rails' structure.sql
    /// too; other statements are skipped with a note, so a schema made by a chain of
    /// migrations that alter and drop tables reads best from the database: --database-url)
    #[arg(long = "schema", value_name = "FILE", conflicts_with = "database_url")]
    pub schema: Vec<PathBuf>,
    /// Read the schema from this database instead [env: DATABASE_URL, used when no --schema]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// What `lint` and `verify` look at in a live database.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// libpq URL of the database (verify: as a superuser)
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: String,
    /// Schemas to look at [default: all but the system schemas and tenancy]
    #[arg(long = "schema", value_name = "SCHEMA")]
    pub schemas: Vec<String>,
    /// Name of the column (uuid, text, varchar, smallint, integer or bigint) that marks a tenant table
    #[arg(long, default_value = "org_id", value_name = "COLUMN")]
    pub tenant_column: String,
    /// Application roles [default: lint: the roles named in policies on tenant tables; verify:
    /// the members of tenancy_writer and tenancy_reader (tenancy apply grants them), except
    /// superusers and owners; verify runs the tables' code as each role it acts as]
    #[arg(long = "app-role", value_name = "ROLE")]
    pub app_roles: Vec<String>,
    /// How to print the findings or the matrix
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

impl AuditArgs {
    pub(crate) fn options(&self) -> crate::lint::Options {
        crate::lint::Options {
            schemas: self.schemas.clone(),
            tenant_column: self.tenant_column.clone(),
            app_roles: self.app_roles.clone(),
        }
    }
}

#[derive(Args, Debug)]
#[command(after_help = lint_rules_help())]
pub struct LintArgs {
    #[command(flatten)]
    pub audit: AuditArgs,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub audit: AuditArgs,
}

#[derive(Args, Debug)]
#[command(after_help = VERIFY_HELP)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub audit: AuditArgs,
    /// The policy files applied to the database, or directories of them, once per path
    /// (`--policies policies/`): verify then knows each table's tenant column, kind and level,
    /// and creates organizations (and projects) in the application's own tables. Without them,
    /// it audits by lint's heuristics (--tenant-column), for a database pg_tenancy never touched
    #[arg(long = "policies", value_name = "PATH")]
    pub policies: Vec<PathBuf>,
}

const VERIFY_HELP: &str = "\
Inside one transaction that is always rolled back, verify creates two organizations with an
owner each (given policy files with [organizations], [memberships] and [projects]: as rows of
the application's own tables, which the sync copies; with two levels, projects A1 and A2 of
organization A and B1 of B), writes rows into every table (generating values for required
columns and foreign keys), shares and publishes rows of shareable tables, and then, as each
application role acting in each organization and project, runs SELECT, INSERT, UPDATE and
DELETE against every tenant's rows, and the same without a context. Everything that touches the audited tables runs as their owner
or the application role in a security-restricted operation (tenancy.run_restricted()), so the
tables' own code never runs with the superuser's rights. A leak is any row of another
organization seen or changed beyond what is public or shared with the organization, a row
written into or pointing at another organization, or anything seen or written without a context.

Cells: own, shared, public, global (rows reached), all (a global table), none (nothing to
reach), denied (refused: allowed by design), refused (the tenant's own rows, by the
application's constraints or triggers: printed with the error, not a failure), closed (nothing
without a context), LEAK, not verified (a row could not be generated, a check could not run, or
the tenant could not read its own rows; the reason is printed). verify exits 1 on a leak or
anything not verified. Tables the policy files declare unscoped are listed with their reason,
not probed.";

fn lint_rules_help() -> String {
    let mut s = String::from("Rules:\n");
    for (id, severity, what) in crate::lint::RULES {
        let level = if *severity == crate::diagnostics::Severity::Error { "error" } else { "warning" };
        s.push_str(&format!("  {id:<38} {level:<8} {what}\n"));
    }
    s
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}
