//! The `tenancy` command line: options, subcommands and exit codes.

use crate::check::{self, Compiled, ParsedFile};
use crate::diagnostics::{self, Diagnostic, Sources};
use crate::emit;
use crate::schema::Catalog;
use crate::{ddl, live};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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
    /// DDL files with the application schema: CREATE TABLE, CREATE INDEX, ... (pg_dump
    /// --schema-only output and Rails' structure.sql too; statements that define no tables,
    /// keys, indexes or views are skipped with a note)
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
    /// Name of the uuid column that marks a tenant table
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
    fn options(&self) -> crate::lint::Options {
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
}

const VERIFY_HELP: &str = "\
Inside one transaction that is always rolled back, verify creates two organizations with an
owner each, writes rows into every table (generating values for required columns and foreign
keys), shares and publishes rows of shareable tables, and then, as each application role acting
for each organization, runs SELECT, INSERT, UPDATE and DELETE against both organizations' rows,
and the same without a context. Everything that touches the audited tables runs as their owner
or the application role in a security-restricted operation (tenancy.run_restricted()), so the
tables' own code never runs with the superuser's rights. A leak is any row of another
organization seen or changed beyond what is public or shared with the organization, a row
written into or pointing at another organization, or anything seen or written without a context.

Cells: own, shared, public (rows reached), denied (refused: allowed by design), closed (nothing
without a context), LEAK, not verified (a row could not be generated; the reason is printed).";

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

/// A failure that ends the command, with its exit code.
#[derive(Debug)]
pub enum Failure {
    Diagnostics(Sources, Vec<Diagnostic>, Format),
    Io(String),
    Database(String),
    Usage(String),
    /// `lint` found errors (already printed).
    LintErrors,
    /// `verify` found a leak or could not verify something (already printed).
    VerifyFailed,
}

impl Failure {
    /// The codes of the diagnostics, if the failure is about the policies or the schema.
    pub fn diagnostic_codes(&self) -> Vec<&'static str> {
        match self {
            Failure::Diagnostics(_, diags, _) => diags.iter().map(|d| d.code).collect(),
            _ => vec![],
        }
    }

    /// Prints the failure (diagnostics to stderr, or JSON to stdout) and returns the exit code.
    pub fn report(self) -> u8 {
        match self {
            Failure::Diagnostics(sources, diags, Format::Json) => {
                println!("{}", diagnostics::render_json(&sources, &diags));
                exit::POLICY_ERRORS
            }
            Failure::Diagnostics(sources, diags, Format::Human) => {
                let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                eprint!("{}", diagnostics::render_human(&sources, &diags, color));
                let n = diags.len();
                eprintln!("error: {n} problem{} found", if n == 1 { "" } else { "s" });
                exit::POLICY_ERRORS
            }
            Failure::Io(m) => {
                eprintln!("error: {m}");
                exit::IO
            }
            Failure::Database(m) => {
                eprintln!("error: {m}");
                exit::DATABASE
            }
            Failure::Usage(m) => {
                eprintln!("error: {m}");
                exit::USAGE
            }
            Failure::LintErrors | Failure::VerifyFailed => exit::POLICY_ERRORS,
        }
    }
}

/// Lists the policy files named on the command line (directories expand to their *.toml files).
fn policy_paths(args: &PolicyArgs) -> Result<Vec<PathBuf>, Failure> {
    let given = if args.policies.is_empty() { vec![PathBuf::from("policies")] } else { args.policies.clone() };
    let mut paths = Vec::new();
    for p in given {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&p)
                .map_err(|e| Failure::Io(format!("cannot read directory `{}`: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Failure::Io(format!("no *.toml policy files in `{}`", p.display())));
            }
            paths.extend(found);
        } else {
            paths.push(p);
        }
    }
    Ok(paths)
}

fn read_file(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Io(format!("cannot read `{}`: {e}", path.display())))
}

/// Reads and parses the policy files; syntax errors in any of them end the command.
fn load_policies(args: &PolicyArgs, sources: &mut Sources) -> Result<Vec<ParsedFile>, Failure> {
    let mut parsed = Vec::new();
    let mut diags = Vec::new();
    for path in policy_paths(args)? {
        let text = read_file(&path)?;
        let id = sources.add(path.display().to_string(), text);
        match check::parse(sources, id) {
            Ok(p) => parsed.push(p),
            Err(d) => diags.push(d),
        }
    }
    if diags.is_empty() {
        Ok(parsed)
    } else {
        Err(Failure::Diagnostics(sources.clone(), diags, args.format))
    }
}

/// The governed schemas named in the parsed files (to know what to read from a database).
fn governed_schemas(files: &[ParsedFile]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| f.file.schemas.as_ref())
        .flat_map(|s| s.get_ref().iter().map(|x| x.get_ref().clone()))
        .collect()
}

pub fn connect(url: &str) -> Result<postgres::Client, Failure> {
    postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| Failure::Database(format!("cannot connect to the database: {}", describe_db_error(&e))))
}

/// A database error with its SQLSTATE, DETAIL and HINT, as psql would show it.
pub fn describe_db_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("\n  detail: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("\n  hint: {h}"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// Loads the policies and checks them against the live schema read through `client` (a
/// transaction, for `apply`, so that what is checked is what is changed).
fn compile_live(policies: &PolicyArgs, client: &mut impl postgres::GenericClient) -> Result<Compiled, Failure> {
    let mut sources = Sources::default();
    let files = load_policies(policies, &mut sources)?;
    let (catalog, facts) = live::read(client, &governed_schemas(&files))
        .map_err(|e| Failure::Database(format!("cannot read the schema: {}", describe_db_error(&e))))?;
    check::check(&sources, files, &catalog, Some(&facts))
        .map_err(|diags| Failure::Diagnostics(sources, diags, policies.format))
}

/// Loads policies and schema (files or database) and checks them.
fn compile(args: &SchemaArgs) -> Result<(Compiled, Vec<PathBuf>), Failure> {
    let paths = policy_paths(&args.policies)?;
    let url = args.database_url.clone().or_else(|| {
        if args.schema.is_empty() {
            std::env::var("DATABASE_URL").ok()
        } else {
            None
        }
    });
    if args.schema.is_empty() {
        let Some(url) = url else {
            return Err(Failure::Usage(
                "no schema to check against: give --schema FILE (DDL) or --database-url URL (or set DATABASE_URL)"
                    .into(),
            ));
        };
        return compile_live(&args.policies, &mut connect(&url)?).map(|c| (c, paths));
    }
    let mut sources = Sources::default();
    let files = load_policies(&args.policies, &mut sources)?;
    let compiled = {
        let mut catalog = Catalog::default();
        let mut diags = Vec::new();
        for path in &args.schema {
            let text = read_file(path)?;
            let id = sources.add(path.display().to_string(), text);
            match ddl::read(&sources, id, &mut catalog) {
                Ok(skipped) => {
                    if let (Some(note), Format::Human) =
                        (skipped.note(&path.display().to_string()), args.policies.format)
                    {
                        eprintln!("note: {note}");
                    }
                }
                Err(d) => diags.push(d),
            }
        }
        if !diags.is_empty() {
            return Err(Failure::Diagnostics(sources, diags, args.policies.format));
        }
        check::check(&sources, files, &catalog, None)
    };
    compiled.map(|c| (c, paths)).map_err(|diags| Failure::Diagnostics(sources, diags, args.policies.format))
}

/// Reads, checks and plans in one transaction (what was checked is what is changed); commits
/// the plan when `commit`, else rolls it back.
pub fn plan_in(policies: &PolicyArgs, url: &str, commit: bool) -> Result<(Compiled, Vec<emit::Block>), Failure> {
    let mut client = connect(url)?;
    let mut tx = client.transaction().map_err(|e| Failure::Database(describe_db_error(&e)))?;
    let compiled = compile_live(policies, &mut tx)?;
    let planned = crate::plan::plan(&mut tx, &emit::blocks(&compiled)).map_err(|e| {
        Failure::Database(format!("applying the policies failed, nothing was changed: {}", describe_db_error(&e)))
    })?;
    let end = if commit { tx.commit() } else { tx.rollback() };
    end.map_err(|e| Failure::Database(describe_db_error(&e)))?;
    Ok((compiled, planned))
}

/// The plan's new indexes as `CREATE INDEX CONCURRENTLY` statements, each a transaction of its
/// own (PostgreSQL refuses CONCURRENTLY inside a transaction block).
pub fn concurrent_index_script(planned: &[emit::Block]) -> String {
    const PLAIN: &str = "CREATE INDEX IF NOT EXISTS ";
    let statements: Vec<String> = planned
        .iter()
        .flat_map(|b| &b.units)
        .flatten()
        .filter_map(|s| s.strip_prefix(PLAIN).map(|rest| format!("CREATE INDEX CONCURRENTLY IF NOT EXISTS {rest}")))
        .collect();
    if statements.is_empty() {
        return "-- no index to build: the plan adds none\n".to_string();
    }
    let mut out = format!(
        "-- {} index{} to build before `tenancy apply`, without blocking writes. Run outside a transaction\n\
         -- (psql -f FILE, not psql -1); `tenancy apply` then finds them built. A build that fails\n\
         -- leaves an INVALID index behind: DROP INDEX CONCURRENTLY it, then plan again.\n",
        statements.len(),
        if statements.len() == 1 { "" } else { "es" }
    );
    for s in statements {
        out.push_str(&s);
        out.push('\n');
    }
    out
}

/// "5 tables in app": what a successful check or apply covered.
fn summary(compiled: &Compiled) -> String {
    let n = compiled.tables.len();
    format!("{n} table{} in {}", if n == 1 { "" } else { "s" }, compiled.schemas.join(", "))
}

fn origin(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Check(args) => {
            let (compiled, _) = compile(&args)?;
            if args.policies.format == Format::Json {
                println!("[]");
            } else {
                eprintln!("ok: the policies cover {}", summary(&compiled));
            }
            Ok(())
        }
        Command::Compile { args, output } => {
            let (compiled, paths) = compile(&args)?;
            let sql = emit::script(&compiled, &origin(&paths));
            match output {
                Some(path) => std::fs::write(&path, sql)
                    .map_err(|e| Failure::Io(format!("cannot write `{}`: {e}", path.display()))),
                None => {
                    print!("{sql}");
                    Ok(())
                }
            }
        }
        Command::Verify(VerifyArgs { audit: args }) => {
            let mut client = connect(&args.database_url)?;
            let report = crate::verify::verify(&mut client, &args.options()).map_err(|e| match e {
                crate::verify::VerifyError::Database(e) => {
                    Failure::Database(format!("cannot verify the database: {}", describe_db_error(&e)))
                }
                crate::verify::VerifyError::Unusable(m) => Failure::Usage(m),
            })?;
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
                Format::Human => print!("{}", crate::verify::render_human(&report)),
            }
            if report.leaks() > 0 || report.unverified() > 0 {
                return Err(Failure::VerifyFailed);
            }
            Ok(())
        }
        Command::MigrateKeys(MigrateArgs { audit: args }) => {
            let mut client = connect(&args.database_url)?;
            let sql = crate::migrate::migration(&mut client, &args.options())
                .map_err(|e| Failure::Database(format!("cannot read the database: {}", describe_db_error(&e))))?;
            print!("{sql}");
            Ok(())
        }
        Command::Lint(LintArgs { audit: args }) => {
            let mut client = connect(&args.database_url)?;
            let (findings, tables) = crate::lint::lint(&mut client, &args.options())
                .map_err(|e| Failure::Database(format!("cannot audit the database: {}", describe_db_error(&e))))?;
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&findings).unwrap_or_else(|_| "[]".into())),
                Format::Human => print!("{}", crate::lint::render_human(&findings, tables)),
            }
            if findings.iter().any(|f| f.severity == crate::diagnostics::Severity::Error) {
                Err(Failure::LintErrors)
            } else {
                Ok(())
            }
        }
        Command::Plan { policies, database_url, concurrent_indexes } => {
            let paths = policy_paths(&policies)?;
            let (compiled, planned) = plan_in(&policies, &database_url, false)?;
            if concurrent_indexes {
                print!("{}", concurrent_index_script(&planned));
                return Ok(());
            }
            if planned.is_empty() {
                println!("-- nothing to change: the database matches {} ({})", origin(&paths), summary(&compiled));
            } else {
                println!(
                    "-- {} change{} to apply from {} ({}); run `tenancy apply` to apply exactly this.",
                    crate::plan::changes(&planned),
                    if crate::plan::changes(&planned) == 1 { "" } else { "s" },
                    origin(&paths),
                    summary(&compiled)
                );
                print!("BEGIN;\n\n{}COMMIT;\n", emit::render(&planned));
            }
            Ok(())
        }
        Command::Apply { policies, database_url } => {
            let (compiled, planned) = plan_in(&policies, &database_url, true)?;
            let n = crate::plan::changes(&planned);
            if n == 0 {
                eprintln!("nothing to change: the database matches the policies ({})", summary(&compiled));
            } else {
                eprintln!(
                    "applied: {n} change{} ({}; one transaction)",
                    if n == 1 { "" } else { "s" },
                    summary(&compiled)
                );
            }
            Ok(())
        }
    }
}
