//! Row predicates written in policy files (`check = "..."`): parsed with sqlparser's PostgreSQL
//! dialect, every column checked against the table, every `tenancy.` function checked against
//! the extension's API, and every context-function call rewritten to `(SELECT tenancy.f())` so
//! that PostgreSQL evaluates it once per statement, not once per row.

use crate::schema::Table;
use sqlparser::ast::{visit_expressions_mut, Expr, Query, Spanned, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Location;
use std::ops::{ControlFlow, Range};

/// The extension's functions a predicate may call.
pub const TENANCY_FUNCTIONS: &[&str] = &[
    "current_org",
    "current_org_key",
    "current_org_bigint",
    "current_user_id",
    "current_member_role",
    "has_role",
    "has_permission",
    "is_admin",
    // Two levels (`[projects]`, extension 0.6.0).
    "current_project",
    "current_project_key",
    "current_project_bigint",
    "has_org_role",
    "has_org_permission",
];

/// A mistake in a predicate, with its byte range inside the predicate's text.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
    pub range: Range<usize>,
    pub help: Option<String>,
}

fn offset(text: &str, at: Location) -> usize {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i + 1 == at.line as usize {
            return offset
                + line.char_indices().nth((at.column as usize).saturating_sub(1)).map_or(line.len(), |(b, _)| b);
        }
        offset += line.len();
    }
    text.len()
}

/// Calls `f` on every expression of `expr` that is not inside a sub-SELECT (where names refer
/// to other tables, and calls run as often as the subquery does).
pub fn visit_outside_subqueries(expr: &Expr, f: impl FnMut(&Expr)) {
    struct Outside<F> {
        depth: usize,
        f: F,
    }
    impl<F: FnMut(&Expr)> Visitor for Outside<F> {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if self.depth == 0 {
                (self.f)(expr);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = expr.visit(&mut Outside { depth: 0, f });
}

struct Names<'a> {
    text: &'a str,
    table: &'a Table,
    problems: Vec<Problem>,
    /// Columns of the table the predicate names (outside sub-SELECTs), in order of appearance.
    columns: Vec<String>,
}

impl Names<'_> {
    fn range(&self, span: sqlparser::tokenizer::Span) -> Range<usize> {
        let start = offset(self.text, span.start);
        start..offset(self.text, span.end).max(start + 1)
    }

    fn check(&mut self, expr: &Expr) {
        let column = match expr {
            Expr::Identifier(ident) => Some(ident),
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => parts.last(),
            _ => None,
        };
        if let Some(ident) = column {
            let name = if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() };
            if self.table.column(&name).is_some() {
                if !self.columns.contains(&name) {
                    self.columns.push(name.clone());
                }
            } else {
                let columns: Vec<String> = self.table.columns.iter().map(|c| format!("`{}`", c.name)).collect();
                self.problems.push(Problem {
                    code: "tenancy::unknown-column",
                    message: format!("table `{}` has no column `{name}`", self.table.name),
                    range: self.range(ident.span),
                    help: Some(format!("its columns are {}", columns.join(", "))),
                });
            }
        }
        if let Expr::Function(f) = expr {
            let parts: Vec<String> = f.name.0.iter().map(|p| p.to_string().to_lowercase()).collect();
            if let [schema, name] = parts.as_slice() {
                if schema == "tenancy" && !TENANCY_FUNCTIONS.contains(&name.as_str()) {
                    self.problems.push(Problem {
                        code: "tenancy::unknown-function",
                        message: format!("the extension has no function `tenancy.{name}`"),
                        range: self.range(f.name.span()),
                        help: Some(format!(
                            "predicates may call {}",
                            TENANCY_FUNCTIONS.iter().map(|f| format!("`tenancy.{f}()`")).collect::<Vec<_>>().join(", ")
                        )),
                    });
                }
            }
        }
    }
}

/// A checked predicate: the SQL to put in the policy and the table's columns it names.
#[derive(Debug, PartialEq, Eq)]
pub struct Compiled {
    pub sql: String,
    pub columns: Vec<String>,
}

/// Checks `text` against `table` and returns the SQL to put in the policy.
pub fn compile(text: &str, table: &Table) -> Result<Compiled, Vec<Problem>> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|e| vec![syntax(text, &e.to_string())])?;
    let mut expr = parser.parse_expr().map_err(|e| vec![syntax(text, &e.to_string())])?;
    if let Ok(extra) = parser.parse_expr() {
        let start = offset(text, extra.span().start);
        return Err(vec![Problem {
            code: "tenancy::predicate-syntax",
            message: "a predicate is one SQL expression".into(),
            range: start..text.len().max(start + 1),
            help: Some("combine conditions with AND / OR".into()),
        }]);
    }
    let mut names = Names { text, table, problems: vec![], columns: vec![] };
    visit_outside_subqueries(&expr, |e| names.check(e));
    if !names.problems.is_empty() {
        return Err(names.problems);
    }
    let _ = visit_expressions_mut(&mut expr, |e| {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_lowercase();
            if name.starts_with("tenancy.") {
                let wrapped = format!("(SELECT {e})");
                if let Ok(sub) = Parser::new(&dialect).try_with_sql(&wrapped).and_then(|mut p| p.parse_expr()) {
                    *e = sub;
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(Compiled { sql: expr.to_string(), columns: names.columns })
}

fn syntax(text: &str, message: &str) -> Problem {
    let clean = message.trim_start_matches("sql parser error: ");
    let (message, at) = match clean.split_once(" at Line: ") {
        Some((m, rest)) => {
            let (line, rest) = rest.split_once(", Column: ").unwrap_or(("1", "1"));
            let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (m.to_string(), Location::new(line.trim().parse().unwrap_or(1), col.parse().unwrap_or(1)))
        }
        None => (clean.to_string(), Location::new(1, text.chars().count() as u64 + 1)),
    };
    let start = offset(text, at).min(text.len());
    Problem {
        code: "tenancy::predicate-syntax",
        message: format!("cannot parse predicate: {}", message.to_lowercase()),
        range: start..start + 1,
        help: Some("a predicate is a SQL boolean expression over the row's columns".into()),
    }
}

/// Where the text of a TOML string value starts, relative to the value's span start.
pub fn content_start(file: &str, value_start: usize) -> usize {
    let rest = &file[value_start.min(file.len())..];
    if rest.starts_with("\"\"\"") || rest.starts_with("'''") {
        // A newline right after the opening delimiter is not part of the string.
        if rest[3..].starts_with('\n') {
            4
        } else if rest[3..].starts_with("\r\n") {
            5
        } else {
            3
        }
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, Origin, QualifiedName};

    fn table() -> Table {
        Table {
            name: QualifiedName::new("app", "docs"),
            columns: ["org_id", "created_by", "status"]
                .iter()
                .map(|c| Column { name: c.to_string(), data_type: "text".into(), not_null: true, default: None })
                .collect(),
            indexes: vec![],
            foreign_keys: vec![],
            origin: Origin::Live,
            partition_of: None,
        }
    }

    #[test]
    fn context_calls_are_wrapped_once_per_statement() {
        let compiled = compile("created_by = tenancy.current_user_id() OR status = 'public'", &table()).unwrap();
        assert_eq!(compiled.sql, "created_by = (SELECT tenancy.current_user_id()) OR status = 'public'");
        assert_eq!(compiled.columns, vec!["created_by", "status"]);
    }

    #[test]
    fn unknown_columns_are_reported_at_their_position() {
        let problems = compile("status = 'x' AND owner = 'y'", &table()).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].code, "tenancy::unknown-column");
        assert_eq!(problems[0].range, 17..22);
    }

    #[test]
    fn unknown_extension_functions_and_bad_syntax_are_refused() {
        let problems = compile("created_by = tenancy.current_usr()", &table()).unwrap_err();
        assert_eq!(problems[0].code, "tenancy::unknown-function");
        let problems = compile("status = = 'x'", &table()).unwrap_err();
        assert_eq!(problems[0].code, "tenancy::predicate-syntax");
        assert!(compile("(SELECT count(*) FROM other WHERE other.x = 1) > 0", &table()).is_ok());
    }
}
