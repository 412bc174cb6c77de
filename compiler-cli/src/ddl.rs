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

/// What reading a schema file skipped: statements that define nothing the compiler needs
/// (functions, sequences, grants, comments, `SET`, psql meta-commands, ...), counted by kind.
#[derive(Debug, Default)]
pub struct Skipped(pub std::collections::BTreeMap<String, usize>);

impl Skipped {
    /// "skipped 12 statements it does not need: 4 SET, 3 CREATE FUNCTION, ..." (None: none).
    pub fn note(&self, file: &str) -> Option<String> {
        let total: usize = self.0.values().sum();
        if total == 0 {
            return None;
        }
        let mut kinds: Vec<(&String, &usize)> = self.0.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        Some(format!(
            "{file}: skipped {total} statement{} that define no tables, columns, keys, indexes or views ({})",
            if total == 1 { "" } else { "s" },
            list.join(", ")
        ))
    }
}

/// Parses `text` (the contents of `source`) into `catalog`, or returns the syntax error of a
/// statement it needs. Reads what `pg_dump --schema-only` and Rails' `structure.sql` contain:
/// the file is cut into statements first (quotes, dollar quotes and comments respected), each
/// statement that defines tables, columns, keys, indexes or views is parsed, and the others are
/// skipped and counted.
pub fn read(sources: &Sources, source: SourceId, catalog: &mut Catalog) -> Result<Skipped, Diagnostic> {
    let text = &sources.get(source).text;
    let mut skipped = Skipped::default();
    for piece in split(text) {
        if let Some(link) = partition_link(piece.text) {
            add_partition(catalog, link, source, piece.start..piece.start + piece.text.len());
            continue;
        }
        let Some(kind) = needed(piece.text) else {
            let kind = kind_of(piece.text);
            if kind == "CREATE TYPE" {
                if let Some(name) = enum_type_name(piece.text) {
                    catalog.enum_types.insert(name);
                }
            }
            // Schemas are known from their tables: not worth a note.
            if kind != "CREATE SCHEMA" {
                *skipped.0.entry(kind).or_default() += 1;
            }
            continue;
        };
        let sql = adapt(piece.text, kind);
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, &sql).map_err(|e| {
            let message = e.to_string();
            let offset = location_in(&message).map_or(piece.start, |(l, c)| piece.start + offset_in(&sql, l, c));
            let clean = message
                .trim_start_matches("sql parser error: ")
                .split(" at Line:")
                .next()
                .unwrap_or(&message)
                .to_string();
            Diagnostic::error("tenancy::ddl-syntax", format!("cannot parse schema: {}", clean.to_lowercase()))
                .label(source, offset..offset + 1, "here")
                .help("the schema files must be valid PostgreSQL DDL")
        })?;
        for statement in statements {
            let span = statement.span();
            let range = piece.start + offset_in(&sql, span.start.line as usize, span.start.column as usize)
                ..piece.start + offset_in(&sql, span.end.line as usize, span.end.column as usize);
            add_statement(catalog, statement, source, range);
        }
    }
    Ok(skipped)
}

fn add_statement(catalog: &mut Catalog, statement: Statement, source: SourceId, range: std::ops::Range<usize>) {
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
                        if let Some(index) = constraint_index(&c) {
                            if index.primary {
                                for key in index.columns.iter().flatten() {
                                    if let Some(col) = table.columns.iter_mut().find(|col| &col.name == key) {
                                        col.not_null = true;
                                    }
                                }
                            }
                            table.indexes.push(index);
                        }
                        table.foreign_keys.extend(constraint_foreign_key(&c));
                    }
                }
            }
        }
        _ => {}
    }
}

/// A partition and its parent, from `CREATE TABLE child PARTITION OF parent ...` (created) or
/// `ALTER TABLE [ONLY] parent ATTACH PARTITION child ...` (attached), which sqlparser does not
/// read.
enum PartitionLink {
    Created { child: QualifiedName, parent: QualifiedName },
    Attached { child: QualifiedName, parent: QualifiedName },
}

fn partition_link(sql: &str) -> Option<PartitionLink> {
    use sqlparser::keywords::Keyword;
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(sql).ok()?;
    if p.parse_keyword(Keyword::CREATE) {
        let _ = p.parse_keyword(Keyword::UNLOGGED);
        if !p.parse_keyword(Keyword::TABLE) {
            return None;
        }
        let _ = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let child = p.parse_object_name(false).ok()?;
        if !p.parse_keywords(&[Keyword::PARTITION, Keyword::OF]) {
            return None;
        }
        let parent = p.parse_object_name(false).ok()?;
        return Some(PartitionLink::Created { child: qualified(&child), parent: qualified(&parent) });
    }
    if p.parse_keywords(&[Keyword::ALTER, Keyword::TABLE]) {
        let _ = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let _ = p.parse_keyword(Keyword::ONLY);
        let parent = p.parse_object_name(false).ok()?;
        if !p.parse_keywords(&[Keyword::ATTACH, Keyword::PARTITION]) {
            return None;
        }
        let child = p.parse_object_name(false).ok()?;
        return Some(PartitionLink::Attached { child: qualified(&child), parent: qualified(&parent) });
    }
    None
}

/// Records a partition: a created one has its parent's columns, keys and indexes.
fn add_partition(catalog: &mut Catalog, link: PartitionLink, source: SourceId, span: std::ops::Range<usize>) {
    match link {
        PartitionLink::Created { child, parent } => {
            let Some(of) = catalog.tables.get(&parent) else { return };
            let table = Table {
                name: child.clone(),
                columns: of.columns.clone(),
                indexes: of.indexes.iter().map(|i| Index { name: None, ..i.clone() }).collect(),
                foreign_keys: of.foreign_keys.clone(),
                origin: Origin::Ddl { source, span },
                partition_of: Some(parent),
            };
            catalog.tables.insert(child, table);
        }
        PartitionLink::Attached { child, parent } => {
            if let Some(table) = catalog.tables.get_mut(&child) {
                table.partition_of = Some(parent);
            }
        }
    }
}

/// One statement of a file, and the byte offset it starts at.
struct Piece<'a> {
    text: &'a str,
    start: usize,
}

/// Cuts a file into statements at the semicolons outside quotes ('...', E'...', "..."), dollar
/// quotes ($tag$...$tag$) and comments (--, nested /* */). A line that starts with a backslash
/// where a statement would start is a psql meta-command (`\connect`, pg_dump's `\restrict`):
/// skipped.
fn split(text: &str) -> Vec<Piece<'_>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // Between statements: whitespace, comments and meta-commands.
        match b[i] {
            c if c.is_ascii_whitespace() || c == b';' => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = line_end(b, i);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = block_comment_end(b, i);
                continue;
            }
            b'\\' => {
                i = line_end(b, i);
                continue;
            }
            _ => {}
        }
        let start = i;
        while i < b.len() && b[i] != b';' {
            i = match b[i] {
                b'\'' => {
                    let escapes =
                        start < i && matches!(b[i - 1], b'e' | b'E') && !is_word(b.get(i.wrapping_sub(2)).copied());
                    quoted_end(b, i, b'\'', escapes)
                }
                b'"' => quoted_end(b, i, b'"', false),
                b'-' if b.get(i + 1) == Some(&b'-') => line_end(b, i),
                b'/' if b.get(i + 1) == Some(&b'*') => block_comment_end(b, i),
                b'$' if i == start || !is_word(Some(b[i - 1])) => dollar_end(b, i).unwrap_or(i + 1),
                _ => i + 1,
            };
        }
        let end = (i + 1).min(b.len());
        out.push(Piece { text: &text[start..end], start });
        i = end;
    }
    out
}

fn is_word(c: Option<u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
}

fn line_end(b: &[u8], i: usize) -> usize {
    b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1)
}

fn block_comment_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The end of a quoted string or identifier starting at `i` (doubled quotes stay inside; with
/// `escapes`, so do backslash-escaped characters).
fn quoted_end(b: &[u8], mut i: usize, quote: u8, escapes: bool) -> usize {
    i += 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The end of a dollar-quoted string starting at `i` ($$...$$ or $tag$...$tag$), or None when
/// `$` starts no dollar quote there (a parameter such as `$1`).
fn dollar_end(b: &[u8], i: usize) -> Option<usize> {
    let tag_len = b[i + 1..].iter().position(|&c| c == b'$')?;
    let tag = &b[i..i + tag_len + 2];
    if !tag[1..tag.len() - 1].iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
        || tag.get(1).is_some_and(u8::is_ascii_digit)
    {
        return None;
    }
    let body = i + tag.len();
    let close = b[body..].windows(tag.len()).position(|w| w == tag)?;
    Some(body + close + tag.len())
}

/// The first words of a statement, uppercased, comments skipped: `CREATE UNIQUE INDEX`.
fn words(sql: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in sql.lines() {
        let line = line.split("--").next().unwrap_or("");
        for w in line.split(|c: char| c.is_whitespace() || c == '(') {
            if !w.is_empty() {
                out.push(w.to_uppercase());
                if out.len() == n {
                    return out;
                }
            }
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Needed {
    Table,
    Index,
    View,
    MaterializedView,
    AlterTable,
}

/// Whether the compiler needs the statement (it defines tables, columns, keys, indexes or views).
fn needed(sql: &str) -> Option<Needed> {
    let w = words(sql, 6);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    let rest = match w.as_slice() {
        ["CREATE", "OR", "REPLACE", rest @ ..] => rest,
        ["CREATE", rest @ ..] => rest,
        // Only constraints matter (keys, foreign keys); pg_dump's OWNER TO, SET DEFAULT,
        // ATTACH PARTITION, ... define nothing the compiler reads.
        ["ALTER", "TABLE", ..] => {
            let all = words(sql, usize::MAX);
            let adds = all.windows(2).any(|p| {
                p[0] == "ADD" && matches!(p[1].as_str(), "CONSTRAINT" | "PRIMARY" | "UNIQUE" | "FOREIGN" | "EXCLUDE")
            });
            return adds.then_some(Needed::AlterTable);
        }
        _ => return None,
    };
    match rest {
        ["TABLE", ..] | ["UNLOGGED", "TABLE", ..] => Some(Needed::Table),
        ["INDEX", ..] | ["UNIQUE", "INDEX", ..] => Some(Needed::Index),
        ["VIEW", ..] | ["RECURSIVE", "VIEW", ..] | ["TEMP" | "TEMPORARY", "VIEW", ..] => Some(Needed::View),
        ["MATERIALIZED", "VIEW", ..] => Some(Needed::MaterializedView),
        _ => None,
    }
}

/// What a skipped statement is, for the note: `CREATE FUNCTION`, `SET`, `\restrict`, ...
/// The name of the enum type `CREATE TYPE name AS ENUM (...)` creates, lowercased as column
/// types are (`"Role"` → `"role"`); None for any other statement.
fn enum_type_name(sql: &str) -> Option<String> {
    let rest = sql.trim_start().get("CREATE TYPE".len()..)?.trim_start();
    let end = rest.find(|c: char| c.is_whitespace())?;
    let (name, after) = rest.split_at(end);
    let mut words = after.split_whitespace().map(str::to_ascii_uppercase);
    (words.next().as_deref() == Some("AS") && words.next().is_some_and(|w| w.starts_with("ENUM")))
        .then(|| name.to_lowercase())
}

fn kind_of(sql: &str) -> String {
    let w = words(sql, 3);
    let two_word_type = |x: &String| matches!(x.as_str(), "MATERIALIZED" | "UNIQUE" | "UNLOGGED" | "FOREIGN" | "EVENT");
    let take = match w.first().map(String::as_str) {
        Some("CREATE") if w.get(1).is_some_and(|x| x == "OR") => 4,
        Some("CREATE" | "ALTER" | "DROP") if w.get(1).is_some_and(two_word_type) => 3,
        Some("CREATE" | "ALTER" | "DROP" | "COMMENT") => 2,
        _ => 1,
    };
    let w = words(sql, take);
    w.join(" ")
}

/// The statement in a form sqlparser reads: pg_dump ends a materialized view with `WITH [NO]
/// DATA`, and writes a partitioned table's indexes `ON ONLY` the table, neither of which changes
/// anything the compiler reads. (`ONLY` becomes spaces, so that positions in errors still hold.)
fn adapt(sql: &str, kind: Needed) -> std::borrow::Cow<'_, str> {
    if kind == Needed::Index {
        let mut out = sql.to_string();
        if let Some(at) = sql.to_ascii_uppercase().find(" ON ONLY ") {
            out.replace_range(at + 4..at + 8, "    ");
        }
        blank_operator_classes(&mut out);
        if out != sql {
            return out.into();
        }
    }
    if kind == Needed::MaterializedView {
        let body = sql.trim_end().trim_end_matches(';').trim_end();
        let upper = body.to_uppercase();
        for tail in ["WITH NO DATA", "WITH DATA"] {
            if upper.ends_with(tail) {
                return format!("{};", &body[..body.len() - tail.len()]).into();
            }
        }
    }
    sql.into()
}

/// Blanks the operator classes of an index's columns (`external_id public.gin_trgm_ops`), which
/// sqlparser does not read and the compiler does not need: a word ending in `_ops`, optionally
/// schema-qualified, that follows a column or an expression and ends the column's entry.
fn blank_operator_classes(sql: &mut String) {
    let bytes = sql.as_bytes().to_vec();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'"';
    let mut i = 0;
    let mut blanks = Vec::new();
    while i < bytes.len() {
        if !word(bytes[i]) || (i > 0 && word(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && word(bytes[i]) {
            i += 1;
        }
        let token = &sql[start..i];
        let before = bytes[..start].iter().rev().find(|b| !b.is_ascii_whitespace()).copied();
        let after = bytes[i..].iter().find(|b| !b.is_ascii_whitespace()).copied();
        let follows_column =
            before.is_some_and(|b| word(b) || b == b')') && start > 0 && bytes[start - 1].is_ascii_whitespace();
        let ends_entry = matches!(after, Some(b',' | b')')) || {
            let rest = sql[i..].trim_start().to_ascii_uppercase();
            rest.starts_with("ASC") || rest.starts_with("DESC") || rest.starts_with("NULLS")
        };
        if token.to_ascii_lowercase().trim_matches('"').ends_with("_ops") && follows_column && ends_entry {
            blanks.push(start..i);
        }
    }
    for range in blanks {
        let len = range.len();
        sql.replace_range(range, &" ".repeat(len));
    }
}

/// The byte offset of (1-based) `line`, `column` (in characters) in `text`.
fn offset_in(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (n, l) in text.split_inclusive('\n').enumerate() {
        if n + 1 == line {
            return offset + l.char_indices().nth(column.saturating_sub(1)).map_or(l.len(), |(i, _)| i);
        }
        offset += l.len();
    }
    text.len()
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
                nulls_not_distinct: matches!(
                    c,
                    TableConstraint::Unique { nulls_distinct: sqlparser::ast::NullsDistinctOption::NotDistinct, .. }
                ),
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
        partition_of: None,
    };
    for col in &create.columns {
        let column_name = fold(&col.name);
        let mut not_null = false;
        let mut default = None;
        for opt in &col.options {
            match &opt.option {
                ColumnOption::NotNull => not_null = true,
                ColumnOption::Default(expr) => default = Some(expr.to_string().to_lowercase()),
                ColumnOption::Unique { is_primary, .. } => {
                    not_null |= *is_primary;
                    table.indexes.push(Index {
                        name: None,
                        columns: vec![Some(column_name.clone())],
                        unique: true,
                        primary: *is_primary,
                        nulls_not_distinct: false,
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
        table.columns.push(Column {
            name: column_name,
            data_type: col.data_type.to_string().to_lowercase(),
            not_null,
            default,
        });
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
        nulls_not_distinct: index.nulls_distinct == Some(false),
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
    fn enum_types_are_known_as_their_columns_spell_them() {
        let c = catalog(
            "CREATE TYPE public.\"Role\" AS ENUM ('OWNER', 'MEMBER');
             CREATE TYPE public.pair AS (a int, b int);
             CREATE TABLE public.m (role public.\"Role\" NOT NULL, p public.pair);",
        )
        .unwrap();
        let m = &c.tables[&QualifiedName::new("public", "m")];
        assert!(c.enum_types.contains(&m.columns[0].data_type), "{:?} {:?}", c.enum_types, m.columns[0].data_type);
        assert!(!c.enum_types.contains(&m.columns[1].data_type));
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
    fn statements_are_cut_outside_quotes_dollar_quotes_and_comments() {
        let sql = "\\restrict abc\nSET x = 'a;b';\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS $f$ SELECT 1; $f$;\n\
                   /* one; /* nested; */ still; */ SELECT E'it\\'s; here', \"odd;name\", $1;\n-- a; comment\nCREATE TABLE t (id int);";
        let pieces: Vec<&str> = split(sql).into_iter().map(|p| p.text.trim()).collect();
        assert_eq!(
            pieces,
            vec![
                "SET x = 'a;b';",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $f$ SELECT 1; $f$;",
                "SELECT E'it\\'s; here', \"odd;name\", $1;",
                "CREATE TABLE t (id int);"
            ]
        );
    }

    #[test]
    fn pg_dump_output_is_read_and_what_it_does_not_need_skipped() {
        let mut sources = Sources::default();
        let id = sources.add(
            "dump.sql",
            "\\restrict xyz\nSET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\
             CREATE SEQUENCE app.s START WITH 1 INCREMENT BY 1 NO MINVALUE NO MAXVALUE CACHE 1;\n\
             CREATE TABLE app.t (id uuid NOT NULL, org_id uuid NOT NULL);\n\
             ALTER TABLE app.t OWNER TO postgres;\n\
             CREATE MATERIALIZED VIEW app.m AS SELECT org_id FROM app.t WITH NO DATA;\n\
             ALTER TABLE ONLY app.t ADD CONSTRAINT t_pkey PRIMARY KEY (org_id, id);\n\
             ALTER TABLE ONLY app.p ATTACH PARTITION app.t FOR VALUES FROM (1) TO (2);\n\
             CREATE INDEX p_org_idx ON ONLY app.p USING btree (org_id);\n\
             CREATE INDEX t_trgm ON app.t USING gin (org_id, name public.gin_trgm_ops, x_ops);\n\
             DROP MATERIALIZED VIEW IF EXISTS app.old;\n\\unrestrict xyz\n",
        );
        let mut c = Catalog::default();
        let skipped = read(&sources, id, &mut c).unwrap();
        let t = &c.tables[&QualifiedName::new("app", "t")];
        assert!(t.indexes.iter().any(|i| i.primary && i.columns == vec![Some("org_id".into()), Some("id".into())]));
        assert!(c.views[&QualifiedName::new("app", "m")].materialized);
        let note = skipped.note("dump.sql").unwrap();
        assert_eq!(t.partition_of, Some(QualifiedName::new("app", "p")), "ATTACH PARTITION is read");
        assert!(note.starts_with("dump.sql: skipped 5 statements"), "{note}");
        assert!(
            note.contains("1 ALTER TABLE")
                && note.contains("1 CREATE SEQUENCE")
                && note.contains("1 DROP MATERIALIZED VIEW"),
            "{note}"
        );
    }

    #[test]
    fn syntax_errors_point_at_their_line() {
        let err = catalog("CREATE TABLE a (id int);\nCREATE TABLE (oops);").unwrap_err();
        assert_eq!(err.code, "tenancy::ddl-syntax");
        assert!(err.labels[0].span.start >= 25, "{:?}", err.labels[0].span);
    }
}
