//! `tenancy migrate-keys`: the migration to composite foreign keys, printed in the order it runs.

use crate::cli::load::{connect, describe_db_error};
use crate::cli::options::MigrateArgs;
use crate::cli::Failure;

pub fn run(MigrateArgs { audit: args }: MigrateArgs) -> Result<(), Failure> {
    let mut client = connect(&args.database_url)?;
    let sql = crate::migrate::migration(&mut client, &args.options())
        .map_err(|e| Failure::Database(format!("cannot read the database: {}", describe_db_error(&e))))?;
    print!("{sql}");
    Ok(())
}
