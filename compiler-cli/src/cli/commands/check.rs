//! `tenancy check`: the policy files against the schema, every problem reported.

use crate::cli::load::{compile, summary};
use crate::cli::options::{Format, SchemaArgs};
use crate::cli::Failure;

pub fn run(args: SchemaArgs) -> Result<(), Failure> {
    let (compiled, _) = compile(&args)?;
    if args.policies.format == Format::Json {
        println!("[]");
    } else {
        eprintln!("ok: the policies cover {}", summary(&compiled));
    }
    Ok(())
}
