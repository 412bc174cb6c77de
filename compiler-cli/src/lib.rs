//! The pg_tenancy policy compiler: reads declarative policy files and the application schema,
//! and emits row-level security policies, indexes, defaults, triggers and grants for every table.
//!
//! Pipeline: [`policy`] (TOML with spans) → [`check`] against a [`schema::Catalog`] read by
//! [`ddl`] or [`live`] → [`emit`] SQL; [`hardening`] is what application roles may do besides the
//! tables, emitted by compile and audited by lint. Problems are [`diagnostics::Diagnostic`]s with spans.
//! [`lint`] audits a live database whatever produced it; [`plan`] finds what `apply` would change;
//! [`verify`] proves isolation on a live database by trying to break it.

pub mod check;
pub mod cli;
pub mod ddl;
pub mod diagnostics;
pub mod emit;
pub mod hardening;
pub mod lint;
pub mod live;
pub mod migrate;
pub mod model;
pub mod plan;
pub mod policy;
pub mod predicate;
pub mod rules;
pub mod schema;
pub mod verify;
