//! `tenancy plan`: what `apply` would change, as SQL, tried in a transaction that is rolled back.

use crate::cli::load::{compile_live, connect, describe_db_error, origin, policy_paths, summary};
use crate::cli::options::PolicyArgs;
use crate::cli::Failure;
use crate::emit;
use crate::model::Compiled;

pub fn run(policies: PolicyArgs, database_url: String, concurrent_indexes: bool) -> Result<(), Failure> {
    let paths = policy_paths(&policies)?;
    let (compiled, planned) = plan_in(&policies, &database_url, false)?;
    if concurrent_indexes {
        print!("{}", concurrent_index_script(&planned));
        return Ok(());
    }
    if planned.is_empty() {
        println!("-- nothing to change: the database matches {} ({})", origin(&paths), summary(&compiled));
    } else {
        let n = crate::plan::changes(&planned);
        println!(
            "-- {n} change{} to apply from {} ({}); run `tenancy apply` to apply exactly this.",
            if n == 1 { "" } else { "s" },
            origin(&paths),
            summary(&compiled)
        );
        print!("BEGIN;\n\n{}COMMIT;\n", emit::render(&planned));
    }
    Ok(())
}

/// Reads, checks and plans in one transaction (what was checked is what is changed); commits
/// the plan when `commit`, else rolls it back.
pub fn plan_in(policies: &PolicyArgs, url: &str, commit: bool) -> Result<(Compiled, Vec<emit::Block>), Failure> {
    let mut client = connect(url)?;
    let mut tx = client.transaction().map_err(|e| Failure::Database(describe_db_error(&e)))?;
    let compiled = compile_live(policies, &mut tx)?;
    let planned = crate::plan::plan(&mut tx, &emit::blocks(&compiled)).map_err(|e| {
        let mut message = format!("applying the policies failed, nothing was changed: {}", describe_db_error(&e.error));
        if let Some(unit) = &e.unit {
            message.push_str(&format!("\n  while running:\n    {}", unit.replace('\n', "\n    ")));
            if unit.contains(" SET NOT NULL;") && e.error.code() == Some(&postgres::error::SqlState::NOT_NULL_VIOLATION) {
                message.push_str(
                    "\n  hint: the tenant column holds NULLs, which belong to no organization: say what those rows are \
                     in the table's policy (global_rows = true: every organization reads them; user_rows = \"<column>\": \
                     a user's own), or give them an organization or delete them",
                );
            }
        }
        Failure::Database(message)
    })?;
    let end = if commit { tx.commit() } else { tx.rollback() };
    end.map_err(|e| Failure::Database(describe_db_error(&e)))?;
    Ok((compiled, planned))
}

/// The plan's new indexes as `CREATE INDEX CONCURRENTLY` statements, each a transaction of its
/// own (PostgreSQL refuses CONCURRENTLY inside a transaction block).
pub fn concurrent_index_script(planned: &[emit::Block]) -> String {
    const PLAIN: &str = "CREATE INDEX IF NOT EXISTS ";
    let statements: Vec<String> = planned
        .iter()
        .flat_map(|b| &b.units)
        .flatten()
        .filter_map(|s| s.strip_prefix(PLAIN).map(|rest| format!("CREATE INDEX CONCURRENTLY IF NOT EXISTS {rest}")))
        .collect();
    if statements.is_empty() {
        return "-- no index to build: the plan adds none\n".to_string();
    }
    let mut out = format!(
        "-- {} index{} to build before `tenancy apply`, without blocking writes. Run outside a transaction\n\
         -- (psql -f FILE, not psql -1); `tenancy apply` then finds them built. A build that fails\n\
         -- leaves an INVALID index behind: DROP INDEX CONCURRENTLY it, then plan again.\n",
        statements.len(),
        if statements.len() == 1 { "" } else { "es" }
    );
    for s in statements {
        out.push_str(&s);
        out.push('\n');
    }
    out
}
