//! `tenancy verify`: the isolation matrix, proven against a live database.

use crate::cli::load::{connect, describe_db_error};
use crate::cli::options::{Format, VerifyArgs};
use crate::cli::Failure;
use crate::verify::{self, VerifyError};

pub fn run(VerifyArgs { audit: args }: VerifyArgs) -> Result<(), Failure> {
    let mut client = connect(&args.database_url)?;
    let report = verify::verify(&mut client, &args.options()).map_err(|e| match e {
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
