//! `tenancy apply`: exactly the plan, in one transaction.

use crate::cli::commands::plan::plan_in;
use crate::cli::load::summary;
use crate::cli::options::PolicyArgs;
use crate::cli::Failure;

pub fn run(policies: PolicyArgs, database_url: String) -> Result<(), Failure> {
    let (compiled, planned) = plan_in(&policies, &database_url, true)?;
    let n = crate::plan::changes(&planned);
    if n == 0 {
        eprintln!("nothing to change: the database matches the policies ({})", summary(&compiled));
    } else {
        eprintln!("applied: {n} change{} ({}; one transaction)", if n == 1 { "" } else { "s" }, summary(&compiled));
    }
    Ok(())
}
