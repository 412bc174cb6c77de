use clap::Parser;
use pg_tenancy_compiler::cli::{self, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::from(cli::exit::OK),
        Err(failure) => ExitCode::from(failure.report()),
    }
}
