//! What every command starts from: the policy files, the schema (DDL files or a live
//! database) and the connection.

use super::options::{Format, PolicyArgs, SchemaArgs};
use super::Failure;
use crate::check::{self, ParsedFile};
use crate::diagnostics::Sources;
use crate::model::Compiled;
use crate::schema::Catalog;
use crate::{ddl, live};
use std::path::{Path, PathBuf};

/// Lists the policy files named on the command line (directories expand to their *.toml files).
pub(crate) fn policy_paths(args: &PolicyArgs) -> Result<Vec<PathBuf>, Failure> {
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

pub(crate) fn read_file(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Io(format!("cannot read `{}`: {e}", path.display())))
}

/// Reads and parses the policy files; syntax errors in any of them end the command.
pub(crate) fn load_policies(args: &PolicyArgs, sources: &mut Sources) -> Result<Vec<ParsedFile>, Failure> {
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
pub(crate) fn governed_schemas(files: &[ParsedFile]) -> Vec<String> {
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
pub(crate) fn compile_live(
    policies: &PolicyArgs,
    client: &mut impl postgres::GenericClient,
) -> Result<Compiled, Failure> {
    let mut sources = Sources::default();
    let files = load_policies(policies, &mut sources)?;
    let (catalog, facts) = live::read(client, &governed_schemas(&files))
        .map_err(|e| Failure::Database(format!("cannot read the schema: {}", describe_db_error(&e))))?;
    check::check(&sources, files, &catalog, Some(&facts))
        .map_err(|diags| Failure::Diagnostics(sources, diags, policies.format))
}

/// Loads policies and schema (files or database) and checks them.
pub(crate) fn compile(args: &SchemaArgs) -> Result<(Compiled, Vec<PathBuf>), Failure> {
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

/// "5 tables in app": what a successful check or apply covered.
pub(crate) fn summary(compiled: &Compiled) -> String {
    let n = compiled.tables.len();
    format!("{n} table{} in {}", if n == 1 { "" } else { "s" }, compiled.schemas.join(", "))
}

pub(crate) fn origin(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
