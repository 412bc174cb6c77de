//! Reads the application schema from DDL files with sqlparser's PostgreSQL dialect. Statements
//! that do not define tables, columns or indexes (comments, functions, inserts) are skipped.

use crate::diagnostics::{Diagnostic, SourceId, Sources};
use crate::schema::{Catalog, Column, ForeignKey, Index, Origin, QualifiedName, Table, View};
use sqlparser::ast::{
    AlterTableOperation, ColumnOption, CreateIndex, CreateTable, Expr, Ident, ObjectName, ObjectNamePart, Spanned,
    Statement, TableConstraint, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Folds an identifier as PostgreSQL does: unquoted names are lowercased.
fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn qualified(name: &ObjectName) -> QualifiedName {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => fold(i),
        })
        .collect();
    match parts.as_slice() {
        [table] => QualifiedName::new("public", table.clone()),
        [.., schema, table] => QualifiedName::new(schema.clone(), table.clone()),
        [] => QualifiedName::new("public", ""),
    }
}

/// Parses `text` (the contents of `source`) into `catalog`, or returns its syntax error.
pub fn read(sources: &Sources, source: SourceId, catalog: &mut Catalog) -> Result<(), Diagnostic> {
    let text = &sources.get(source).text;
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, text).map_err(|e| {
        let message = e.to_string();
        let offset = location_in(&message).map_or(0, |(l, c)| sources.offset_of(source, l, c));
        let clean =
            message.trim_start_matches("sql parser error: ").split(" at Line:").next().unwrap_or(&message).to_string();
        Diagnostic::error("tenancy::ddl-syntax", format!("cannot parse schema: {}", clean.to_lowercase()))
            .label(source, offset..offset + 1, "here")
            .help("the schema files must be valid PostgreSQL DDL")
    })?;
    for statement in statements {
        let span = statement.span();
        let range = sources.offset_of(source, span.start.line as usize, span.start.column as usize)
            ..sources.offset_of(source, span.end.line as usize, span.end.column as usize);
        match statement {
            Statement::CreateTable(create) => add_table(catalog, create, source, range),
            Statement::CreateIndex(index) => add_index(catalog, index),
            Statement::CreateView { name, query, materialized, .. } => {
                let mut reads = Relations(vec![]);
                let _ = query.visit(&mut reads);
                let name = qualified(&name);
                catalog.views.insert(name.clone(), View { name, reads: reads.0, materialized });
            }
            Statement::AlterTable { name, operations, .. } => {
                let name = qualified(&name);
                for op in operations {
                    if let AlterTableOperation::AddConstraint(c) = op {
                        if let Some(table) = catalog.tables.get_mut(&name) {
                            table.indexes.extend(constraint_index(&c));
                            table.foreign_keys.extend(constraint_foreign_key(&c));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every relation a query names.
struct Relations(Vec<QualifiedName>);

impl Visitor for Relations {
    type Break = ();
    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.0.push(qualified(relation));
        ControlFlow::Continue(())
    }
}

fn location_in(message: &str) -> Option<(usize, usize)> {
    let rest = message.split("Line: ").nth(1)?;
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

fn constraint_index(c: &TableConstraint) -> Option<Index> {
    match c {
        TableConstraint::PrimaryKey { name, columns, .. } | TableConstraint::Unique { name, columns, .. } => {
            Some(Index {
                name: name.as_ref().map(fold),
                columns: columns.iter().map(|c| Some(fold(c))).collect(),
                unique: true,
                primary: matches!(c, TableConstraint::PrimaryKey { .. }),
            })
        }
        _ => None,
    }
}

fn constraint_foreign_key(c: &TableConstraint) -> Option<ForeignKey> {
    match c {
        TableConstraint::ForeignKey { name, columns, foreign_table, referred_columns, .. } => Some(ForeignKey {
            name: name.as_ref().map(fold),
            columns: columns.iter().map(fold).collect(),
            references: qualified(foreign_table),
            referred: referred_columns.iter().map(fold).collect(),
        }),
        _ => None,
    }
}

fn add_table(catalog: &mut Catalog, create: CreateTable, source: SourceId, span: std::ops::Range<usize>) {
    let name = qualified(&create.name);
    let mut table = Table {
        name: name.clone(),
        columns: vec![],
        indexes: vec![],
        foreign_keys: vec![],
        origin: Origin::Ddl { source, span },
    };
    for col in &create.columns {
        let column_name = fold(&col.name);
        let mut not_null = false;
        for opt in &col.options {
            match &opt.option {
                ColumnOption::NotNull => not_null = true,
                ColumnOption::Unique { is_primary, .. } => {
                    not_null |= *is_primary;
                    table.indexes.push(Index {
                        name: None,
                        columns: vec![Some(column_name.clone())],
                        unique: true,
                        primary: *is_primary,
                    });
                }
                ColumnOption::ForeignKey { foreign_table, referred_columns, .. } => {
                    table.foreign_keys.push(ForeignKey {
                        name: None,
                        columns: vec![column_name.clone()],
                        references: qualified(foreign_table),
                        referred: referred_columns.iter().map(fold).collect(),
                    });
                }
                _ => {}
            }
        }
        table.columns.push(Column { name: column_name, data_type: col.data_type.to_string().to_lowercase(), not_null });
    }
    for c in &create.constraints {
        table.foreign_keys.extend(constraint_foreign_key(c));
        if let Some(index) = constraint_index(c) {
            if matches!(c, TableConstraint::PrimaryKey { .. }) {
                for key in index.columns.iter().flatten() {
                    if let Some(col) = table.columns.iter_mut().find(|col| &col.name == key) {
                        col.not_null = true;
                    }
                }
            }
            table.indexes.push(index);
        }
    }
    catalog.tables.insert(name, table);
}

fn add_index(catalog: &mut Catalog, index: CreateIndex) {
    let name = qualified(&index.table_name);
    let Some(table) = catalog.tables.get_mut(&name) else { return };
    let columns = index
        .columns
        .iter()
        .map(|c| match &c.expr {
            Expr::Identifier(i) => Some(fold(i)),
            _ => None,
        })
        .collect();
    table.indexes.push(Index {
        name: index.name.as_ref().map(|n| qualified(n).name),
        columns,
        unique: index.unique,
        primary: false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(sql: &str) -> Result<Catalog, Diagnostic> {
        let mut sources = Sources::default();
        let id = sources.add("schema.sql", sql);
        let mut c = Catalog::default();
        read(&sources, id, &mut c).map(|_| c)
    }

    #[test]
    fn tables_columns_and_indexes_are_read() {
        let c = catalog(
            "CREATE SCHEMA app;
             CREATE TABLE app.Projects (id uuid PRIMARY KEY, \"OrgId\" uuid NOT NULL, name text);
             CREATE INDEX ON app.projects (\"OrgId\", name);",
        )
        .unwrap();
        let t = &c.tables[&QualifiedName::new("app", "projects")];
        assert_eq!(t.columns.len(), 3);
        assert!(t.column("OrgId").unwrap().not_null);
        assert!(t.column("id").unwrap().not_null);
        assert!(t.has_index_leading_with("OrgId"));
        assert!(t.has_index_leading_with("id"));
        assert!(!t.has_index_leading_with("name"));
    }

    #[test]
    fn syntax_errors_point_at_their_line() {
        let err = catalog("CREATE TABLE a (id int);\nCREATE TABLE (oops);").unwrap_err();
        assert_eq!(err.code, "tenancy::ddl-syntax");
        assert!(err.labels[0].span.start >= 25, "{:?}", err.labels[0].span);
    }
}
