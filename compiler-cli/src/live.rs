//! Reads the application schema, and the application roles' attributes, from a live database.

use crate::schema::{Catalog, Column, ForeignKey, Index, Origin, QualifiedName, Table, View};
use std::collections::BTreeMap;

/// What the compiler must know about a database role to refuse unsafe application roles.
#[derive(Clone, Debug)]
pub struct RoleInfo {
    pub superuser: bool,
    pub bypass_rls: bool,
}

/// Facts about the live database besides its tables.
#[derive(Clone, Debug, Default)]
pub struct LiveFacts {
    pub roles: BTreeMap<String, RoleInfo>,
    pub table_owners: BTreeMap<QualifiedName, String>,
    pub extension_installed: bool,
    /// The installed extension's version (empty without it).
    pub extension_version: String,
    /// Names in `tenancy.resources` (empty without the extension).
    pub resources: Vec<String>,
}

/// Loads every ordinary and partitioned table in `schemas`.
pub fn read(
    client: &mut impl postgres::GenericClient,
    schemas: &[String],
) -> Result<(Catalog, LiveFacts), postgres::Error> {
    let mut catalog = Catalog::default();
    let mut facts = LiveFacts::default();
    let columns = client.query(
        "SELECT n.nspname::text, c.relname::text, pg_get_userbyid(c.relowner)::text,
                a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                lower(pg_get_expr(d.adbin, d.adrelid))
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1)
          ORDER BY 1, 2, a.attnum",
        &[&schemas],
    )?;
    for row in columns {
        let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        facts.table_owners.insert(name.clone(), row.get(2));
        let table = catalog.tables.entry(name.clone()).or_insert_with(|| Table {
            name,
            columns: vec![],
            indexes: vec![],
            foreign_keys: vec![],
            origin: Origin::Live,
            partition_of: None,
        });
        if let Some(column) = row.get::<_, Option<String>>(3) {
            table.columns.push(Column {
                name: column,
                data_type: row.get(4),
                not_null: row.get(5),
                default: row.get(6),
            });
        }
    }
    // Spelled as format_type() spells the columns' types in this same session.
    for row in client.query("SELECT format_type(t.oid, NULL) FROM pg_type t WHERE t.typtype = 'e'", &[])? {
        catalog.enum_types.insert(row.get(0));
    }
    let indexes = client.query(
        "SELECT n.nspname::text, c.relname::text, i.relname::text,
                -- An exclusion constraint's conflicts reveal values as a unique key's do.
                x.indisunique OR x.indisexclusion, x.indisprimary,
                ARRAY(SELECT a.attname::text
                        FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                       WHERE k.ord <= x.indnkeyatts
                       ORDER BY k.ord),
                x.indisvalid, x.indnullsnotdistinct
           FROM pg_index x
           JOIN pg_class c ON c.oid = x.indrelid
           JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = ANY($1)
          ORDER BY 1, 2, 3",
        &[&schemas],
    )?;
    for row in indexes {
        let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        if let Some(table) = catalog.tables.get_mut(&name) {
            // An invalid index (a CREATE INDEX CONCURRENTLY that failed) serves no query and
            // enforces nothing: only its name counts (no index the compiler adds may take it).
            let valid: bool = row.get(6);
            table.indexes.push(Index {
                name: Some(row.get(2)),
                columns: if valid { row.get::<_, Vec<Option<String>>>(5) } else { vec![] },
                unique: valid && row.get::<_, bool>(3),
                primary: valid && row.get::<_, bool>(4),
                nulls_not_distinct: row.get(7),
            });
        }
    }
    let foreign_keys = client.query(
        "SELECT n.nspname::text, c.relname::text, k.conname::text, tn.nspname::text, t.relname::text,
                ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
                ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
                        JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
           FROM pg_constraint k
           JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_class t ON t.oid = k.confrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
          WHERE k.contype = 'f' AND n.nspname = ANY($1)
          ORDER BY 1, 2, 3",
        &[&schemas],
    )?;
    for row in foreign_keys {
        let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        if let Some(table) = catalog.tables.get_mut(&name) {
            table.foreign_keys.push(ForeignKey {
                name: Some(row.get(2)),
                references: QualifiedName::new(row.get::<_, String>(3), row.get::<_, String>(4)),
                columns: row.get(5),
                referred: row.get(6),
            });
        }
    }
    // Views (in any schema) that read tables of the governed schemas.
    for row in client.query(
        "SELECT DISTINCT vn.nspname::text, v.relname::text, v.relkind = 'm', tn.nspname::text, t.relname::text
           FROM pg_depend d
           JOIN pg_rewrite w ON w.oid = d.objid AND d.classid = 'pg_rewrite'::regclass
           JOIN pg_class v ON v.oid = w.ev_class AND v.relkind IN ('v', 'm')
           JOIN pg_namespace vn ON vn.oid = v.relnamespace
           JOIN pg_class t ON t.oid = d.refobjid AND d.refclassid = 'pg_class'::regclass AND t.oid <> v.oid
           JOIN pg_namespace tn ON tn.oid = t.relnamespace
          WHERE tn.nspname = ANY($1)
          ORDER BY 1, 2, 4, 5",
        &[&schemas],
    )? {
        let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        let view =
            catalog.views.entry(name.clone()).or_insert_with(|| View { name, reads: vec![], materialized: row.get(2) });
        view.reads.push(QualifiedName::new(row.get::<_, String>(3), row.get::<_, String>(4)));
    }
    for row in client.query("SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles", &[])? {
        facts.roles.insert(row.get(0), RoleInfo { superuser: row.get(1), bypass_rls: row.get(2) });
    }
    let version = client.query_opt("SELECT extversion::text FROM pg_extension WHERE extname = 'pg_tenancy'", &[])?;
    facts.extension_installed = version.is_some();
    facts.extension_version = version.map(|r| r.get(0)).unwrap_or_default();
    for row in client.query(
        "SELECT n.nspname::text, c.relname::text, pn.nspname::text, p.relname::text
           FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid AND c.relispartition
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_class p ON p.oid = i.inhparent
           JOIN pg_namespace pn ON pn.oid = p.relnamespace
          WHERE n.nspname = ANY($1)",
        &[&schemas],
    )? {
        let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        if let Some(table) = catalog.tables.get_mut(&name) {
            table.partition_of = Some(QualifiedName::new(row.get::<_, String>(2), row.get::<_, String>(3)));
        }
    }
    if facts.extension_installed {
        for row in client.query("SELECT name FROM tenancy.resources ORDER BY name", &[])? {
            facts.resources.push(row.get(0));
        }
    }
    Ok((catalog, facts))
}
