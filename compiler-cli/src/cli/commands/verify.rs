//! `tenancy verify`: the isolation matrix, proven against a live database.

use crate::cli::load::{compile_live, connect, describe_db_error};
use crate::cli::options::{Format, PolicyArgs, VerifyArgs};
use crate::cli::Failure;
use crate::model::Compiled;
use crate::verify::{self, VerifyError};
use std::path::PathBuf;

pub fn run(VerifyArgs { audit: args, policies }: VerifyArgs) -> Result<(), Failure> {
    let mut client = connect(&args.database_url)?;
    let compiled = if policies.is_empty() { None } else { Some(compile(&mut client, policies, args.format)?) };
    let report = verify::verify(&mut client, &args.options(), compiled.as_ref()).map_err(|e| match e {
        VerifyError::Database(e) => Failure::Database(format!("cannot verify the database: {}", describe_db_error(&e))),
        VerifyError::Unusable(m) => Failure::Usage(m),
    })?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
        Format::Human => print!("{}", verify::render_human(&report)),
    }
    if report.leaks() > 0 || report.unverified() > 0 {
        return Err(Failure::VerifyFailed);
    }
    Ok(())
}

/// The policy files, checked against the database (in a transaction rolled back).
pub fn compile(client: &mut postgres::Client, policies: Vec<PathBuf>, format: Format) -> Result<Compiled, Failure> {
    let mut tx = client.transaction().map_err(|e| Failure::Database(describe_db_error(&e)))?;
    let compiled = compile_live(&PolicyArgs { policies, format }, &mut tx)?;
    tx.rollback().map_err(|e| Failure::Database(describe_db_error(&e)))?;
    Ok(compiled)
}
