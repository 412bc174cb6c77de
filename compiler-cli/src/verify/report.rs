//! The matrix as people read it.

use super::{Report, COMMANDS};

/// The matrix, one block per role, then every leak and everything not verified.
pub fn render_human(report: &Report) -> String {
    let mut out = String::new();
    let width = report.results.iter().map(|r| r.table.len()).max().unwrap_or(5).max(5);
    for role in &report.roles {
        out.push_str(&format!("\nrole {role}, acting in each of {}:\n\n", contexts(report)));
        out.push_str(&format!("  {:<width$}  {:<9}", "table", "kind"));
        for c in COMMANDS {
            out.push_str(&format!("  {c:<20}"));
        }
        out.push('\n');
        for r in report.results.iter().filter(|r| &r.role == role) {
            let kind = r.kind.name();
            out.push_str(&format!("  {:<width$}  {kind:<9}", r.table));
            for c in COMMANDS {
                out.push_str(&format!("  {:<20}", r.cells[c].text()));
            }
            out.push('\n');
        }
    }
    let leaks: Vec<String> = report
        .results
        .iter()
        .flat_map(|r| {
            r.cells.iter().flat_map(move |(c, cell)| cell.leaks.iter().map(move |l| format!("{} {c}: {l}", r.table)))
        })
        .collect();
    let unverified: Vec<String> = report
        .unverified_tables
        .iter()
        .map(|(t, why)| format!("{t}: {why}"))
        .chain(report.results.iter().flat_map(|r| {
            r.cells
                .iter()
                .flat_map(move |(c, cell)| cell.unverified.iter().map(move |u| format!("{} {c}: {u}", r.table)))
        }))
        .collect();
    out.push('\n');
    for (t, why) in &report.unscoped {
        out.push_str(&format!("unscoped (not probed, as the policy files declare): {t}: {why}\n"));
    }
    for r in &report.results {
        for (c, cell) in &r.cells {
            // The same refusal in every context: once, with how many more.
            if let Some(first) = cell.notes.first() {
                let more = match cell.notes.len() - 1 {
                    0 => String::new(),
                    n => format!(" (and in {n} more context{})", if n == 1 { "" } else { "s" }),
                };
                out.push_str(&format!("refused: {} {c}: {first}{more}\n", r.table));
            }
        }
    }
    for l in &leaks {
        out.push_str(&format!("LEAK {l}\n"));
    }
    for u in &unverified {
        out.push_str(&format!("not verified: {u}\n"));
    }
    let cells = report.results.len() * COMMANDS.len();
    if leaks.is_empty() && unverified.is_empty() {
        out.push_str(&format!(
            "ok: no leaks ({} table{} x {} commands x {} role{} x {}; everything was rolled back)\n",
            report.results.len() / report.roles.len().max(1),
            if report.results.len() / report.roles.len().max(1) == 1 { "" } else { "s" },
            COMMANDS.len(),
            report.roles.len(),
            if report.roles.len() == 1 { "" } else { "s" },
            contexts(report)
        ));
    } else {
        out.push_str(&format!(
            "error: {} leak{}, {} check{} not verified, in {cells} checks (everything was rolled back)\n",
            leaks.len(),
            if leaks.len() == 1 { "" } else { "s" },
            unverified.len(),
            if unverified.len() == 1 { "" } else { "s" },
        ));
    }
    out
}

/// `2 organizations` or `2 organizations and 3 projects (A1, B1, A2)`.
fn contexts(report: &Report) -> String {
    let projects: Vec<&str> = report.tenants.iter().map(String::as_str).filter(|t| t.len() > 1).collect();
    if projects.is_empty() {
        format!("{} organizations", report.organizations)
    } else {
        format!("{} organizations and {} projects ({})", report.organizations, projects.len(), projects.join(", "))
    }
}
