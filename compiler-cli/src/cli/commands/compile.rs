//! `tenancy compile`: the policy files to SQL, on stdout or into a file.

use crate::cli::load::{compile, origin};
use crate::cli::options::SchemaArgs;
use crate::cli::Failure;
use crate::emit;
use std::path::PathBuf;

pub fn run(args: SchemaArgs, output: Option<PathBuf>) -> Result<(), Failure> {
    let (compiled, paths) = compile(&args)?;
    let sql = emit::script(&compiled, &origin(&paths));
    match output {
        Some(path) => {
            std::fs::write(&path, sql).map_err(|e| Failure::Io(format!("cannot write `{}`: {e}", path.display())))
        }
        None => {
            print!("{sql}");
            Ok(())
        }
    }
}
