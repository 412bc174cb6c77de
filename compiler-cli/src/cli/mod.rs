//! The `tenancy` command line: [`options`] (subcommands, arguments, exit codes), one module per
//! command under [`commands`], what they all load ([`load`]) and how a command fails ([`Failure`]).

pub mod commands;
mod failure;
mod load;
pub mod options;

pub use commands::plan::{concurrent_index_script, plan_in};
pub use failure::Failure;
pub use load::{connect, describe_db_error};
pub use options::{exit, AuditArgs, Cli, Command, Format, LintArgs, MigrateArgs, PolicyArgs, SchemaArgs, VerifyArgs};

/// Runs one command.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Check(args) => commands::check::run(args),
        Command::Compile { args, output } => commands::compile::run(args, output),
        Command::Lint(args) => commands::lint::run(args),
        Command::MigrateKeys(args) => commands::migrate_keys::run(args),
        Command::Plan { policies, database_url, concurrent_indexes } => {
            commands::plan::run(policies, database_url, concurrent_indexes)
        }
        Command::Apply { policies, database_url } => commands::apply::run(policies, database_url),
        Command::Verify(args) => commands::verify::run(args),
    }
}
