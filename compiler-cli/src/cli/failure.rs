//! A failure that ends a command: how it is printed and its exit code.

use super::options::{exit, Format};
use crate::diagnostics::{self, Diagnostic, Sources};
use std::io::IsTerminal;

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
