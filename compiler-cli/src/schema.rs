//! The application schema the policies are compiled against: tables, their columns and the
//! indexes that exist. Read from DDL files ([`crate::ddl`]) or a live database ([`crate::live`]).

use crate::diagnostics::SourceId;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

/// A schema-qualified name, already folded as PostgreSQL folds identifiers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        QualifiedName { schema: schema.into(), name: name.into() }
    }
}

impl fmt::Display for QualifiedName {
    /// As SQL: each part quoted only when it has to be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Where a table was defined, for diagnostics.
#[derive(Clone, Debug)]
pub enum Origin {
    Ddl { source: SourceId, span: Range<usize> },
    Live,
}

#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    /// The type as written (DDL) or as `format_type` prints it (live), lowercased.
    pub data_type: String,
    pub not_null: bool,
    /// The default expression, lowercased (`gen_random_uuid()`), if any.
    pub default: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Index {
    pub name: Option<String>,
    /// Key columns in order; expressions are recorded as `None`.
    pub columns: Vec<Option<String>>,
    pub unique: bool,
    pub primary: bool,
    /// `NULLS NOT DISTINCT`: NULLs conflict with each other.
    pub nulls_not_distinct: bool,
}

/// A foreign key; `referred` is empty when it references the target's primary key implicitly.
#[derive(Clone, Debug)]
pub struct ForeignKey {
    pub name: Option<String>,
    pub columns: Vec<String>,
    pub references: QualifiedName,
    pub referred: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub name: QualifiedName,
    pub columns: Vec<Column>,
    pub indexes: Vec<Index>,
    pub foreign_keys: Vec<ForeignKey>,
    pub origin: Origin,
    /// The partitioned table this table is a partition of.
    pub partition_of: Option<QualifiedName>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// True when some index's leading key columns are exactly `columns` (in any order).
    pub fn has_index_leading_with_all(&self, columns: &[String]) -> bool {
        let mut wanted: Vec<&str> = columns.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        self.indexes.iter().any(|i| {
            if i.columns.len() < wanted.len() {
                return false;
            }
            let mut lead: Vec<&str> = i.columns[..wanted.len()].iter().flatten().map(String::as_str).collect();
            lead.sort_unstable();
            lead == wanted
        })
    }

    /// True when some unique index (or key) has exactly `columns`, in any order.
    pub fn has_unique_key_on(&self, columns: &[String]) -> bool {
        let mut wanted: Vec<&str> = columns.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        self.indexes.iter().filter(|i| i.unique || i.primary).any(|i| {
            let mut have: Vec<&str> = i.columns.iter().flatten().map(String::as_str).collect();
            have.sort_unstable();
            have.len() == i.columns.len() && have == wanted
        })
    }

    /// True when some index's first key column is `column`, so lookups by it are indexed.
    pub fn has_index_leading_with(&self, column: &str) -> bool {
        self.indexes.iter().any(|i| i.columns.first().and_then(|c| c.as_deref()) == Some(column))
    }

    /// The primary key's columns (empty without one, or with expressions).
    pub fn primary_key(&self) -> Vec<String> {
        self.indexes.iter().find(|i| i.primary).map_or(vec![], |i| i.columns.iter().flatten().cloned().collect())
    }
}

/// A view (or materialized view) and the relations it reads.
#[derive(Clone, Debug)]
pub struct View {
    pub name: QualifiedName,
    pub reads: Vec<QualifiedName>,
    pub materialized: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub tables: BTreeMap<QualifiedName, Table>,
    pub views: BTreeMap<QualifiedName, View>,
    /// Enum types, spelled as columns' `data_type` spells them: their values read as text with
    /// a built-in cast (an application's roles are often one, Prisma's `enum Role`).
    pub enum_types: std::collections::BTreeSet<String>,
}

impl Catalog {
    pub fn tables_in_schema<'a>(&'a self, schema: &'a str) -> impl Iterator<Item = &'a Table> + 'a {
        self.tables.values().filter(move |t| t.name.schema == schema)
    }

    pub fn has_schema(&self, schema: &str) -> bool {
        self.tables.keys().any(|k| k.schema == schema)
    }
}

/// The type a column's values have, for casts: `serial` columns hold integers.
pub fn storage_type(data_type: &str) -> String {
    match data_type {
        "serial" | "serial4" => "integer".into(),
        "bigserial" | "serial8" => "bigint".into(),
        "smallserial" | "serial2" => "smallint".into(),
        other => other.into(),
    }
}

/// Types a generated function compares or returns (lookups, the sync) and tenant columns may
/// have: built in, so that the function (which reads the table with the DBA's rights) runs no
/// operator or cast the table's owner defined. Varchar is `text`, a serial its integer type;
/// lengths are dropped.
pub fn builtin_type(data_type: &str) -> Option<&'static str> {
    match storage_type(data_type.split('(').next().unwrap_or("").trim()).as_str() {
        "text" => Some("text"),
        "character varying" | "varchar" => Some("text"),
        "uuid" => Some("uuid"),
        "bytea" => Some("bytea"),
        "smallint" | "int2" => Some("smallint"),
        "integer" | "int" | "int4" => Some("integer"),
        "bigint" | "int8" => Some("bigint"),
        _ => None,
    }
}

/// Words that must be quoted when used as identifiers (PostgreSQL's reserved keywords).
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// Quotes an identifier for SQL unless it is a plain lowercase word.
pub fn quote_ident(ident: &str) -> String {
    let plain = !ident.is_empty()
        && ident.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && ident.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&ident);
    if plain {
        ident.to_string()
    } else {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_types_as_generated_functions_and_tenant_keys_read_them() {
        assert_eq!(builtin_type("character varying(64)"), Some("text"));
        assert_eq!(builtin_type("bigserial"), Some("bigint"), "a serial in a schema file is its integer type");
        assert_eq!(builtin_type("int4"), Some("integer"));
        assert_eq!(builtin_type("citext"), None);
        assert_eq!(crate::model::TenantKey::of_type("serial"), Some(crate::model::TenantKey::Integer));
        assert_eq!(crate::model::TenantKey::of_type("varchar(30)"), Some(crate::model::TenantKey::Text));
        assert_eq!(crate::model::TenantKey::of_type("bytea"), None);
    }

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        assert_eq!(quote_ident("projects"), "projects");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("Mixed"), "\"Mixed\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
