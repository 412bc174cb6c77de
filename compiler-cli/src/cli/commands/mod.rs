//! One module per subcommand; each `run` takes that command's options.

pub mod apply;
pub mod check;
pub mod compile;
pub mod lint;
pub mod migrate_keys;
pub mod plan;
pub mod verify;
