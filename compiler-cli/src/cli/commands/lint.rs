//! `tenancy lint`: any database audited for cross-tenant leaks and slow policies.

use crate::cli::load::{connect, describe_db_error};
use crate::cli::options::{Format, LintArgs};
use crate::cli::Failure;
use crate::diagnostics::Severity;
use crate::lint;

pub fn run(LintArgs { audit: args }: LintArgs) -> Result<(), Failure> {
    let mut client = connect(&args.database_url)?;
    let (findings, tables) = lint::lint(&mut client, &args.options())
        .map_err(|e| Failure::Database(format!("cannot audit the database: {}", describe_db_error(&e))))?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&findings).unwrap_or_else(|_| "[]".into())),
        Format::Human => print!("{}", lint::render_human(&findings, tables)),
    }
    if findings.iter().any(|f| f.severity == Severity::Error) {
        Err(Failure::LintErrors)
    } else {
        Ok(())
    }
}
