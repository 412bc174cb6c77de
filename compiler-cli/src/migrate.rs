//! `tenancy migrate-keys`: the migration from foreign keys without the tenant column (which the
//! policies make safe) to composite keys, the strict option, which the database itself enforces
//! whoever writes. It only prints SQL, in the order it must run:
//!
//! 1. for each referenced key without the tenant column, a unique index on (tenant column, key),
//!    built `CONCURRENTLY` (outside a transaction, writes go on);
//! 2. per foreign key, one transaction: that index becomes a constraint (`USING INDEX`), the new
//!    foreign key (tenant column first) is added `NOT VALID` with the old one's actions (`ON
//!    DELETE SET NULL` nulls only the key's own columns), deferrability and match type, then
//!    validated, the old one dropped and the new one given its name.

use crate::lint::{audited_schemas, Options};
use crate::schema::quote_ident;

/// One foreign key to move.
struct Move {
    table: String,
    name: String,
    columns: Vec<String>,
    target: String,
    target_key: Vec<String>,
    definition: String,
    tenant: String,
    target_tenant: String,
}

/// The migration's SQL for every foreign key between tenant tables (those with the tenant column)
/// that leaves the tenant column out; a comment when there is none.
pub fn migration(client: &mut impl postgres::GenericClient, options: &Options) -> Result<String, postgres::Error> {
    let schemas = audited_schemas(client, &options.schemas)?;
    let rows = client.query(
        "SELECT c.conrelid::regclass::text, c.conname::text,
                ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                c.confrelid::regclass::text,
                ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i),
                pg_get_constraintdef(c.oid)
           FROM pg_constraint c
           JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
          WHERE c.contype = 'f' AND n.nspname = ANY($1)
            AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attname = $2 AND NOT a.attisdropped)
            AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.confrelid AND a.attname = $2 AND NOT a.attisdropped)
            AND NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attname = $2 AND a.attnum = ANY (c.conkey))
          ORDER BY 1, 2",
        &[&schemas, &options.tenant_column],
    )?;
    let moves: Vec<Move> = rows
        .iter()
        .map(|r| Move {
            table: r.get(0),
            name: r.get(1),
            columns: r.get(2),
            target: r.get(3),
            target_key: r.get(4),
            definition: r.get(5),
            tenant: options.tenant_column.clone(),
            target_tenant: options.tenant_column.clone(),
        })
        .collect();
    if moves.is_empty() {
        return Ok("-- no foreign key between tenant tables leaves the tenant column out: nothing to migrate\n".into());
    }
    let list = |cols: &[String]| cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
    let index_name = |m: &Move| {
        let table = m.target.rsplit('.').next().unwrap_or(&m.target).trim_matches('"');
        crate::emit::fit(&format!("{table}_{}_{}", m.target_tenant, m.target_key.join("_")), "_key")
    };
    let mut out = String::from(
        "-- Composite keys: run this file with psql -f (not psql -1). Step 1 builds indexes without\n\
         -- blocking writes; step 2 moves each foreign key in a transaction of its own. Rows that point\n\
         -- into another organization make VALIDATE fail: `tenancy lint` lists them (fk-cross-tenant-rows).\n\n\
         -- 1. A unique key on (tenant column, key) for each referenced key.\n",
    );
    let mut built: Vec<String> = Vec::new();
    for m in &moves {
        let index = index_name(m);
        if built.contains(&format!("{}:{index}", m.target)) {
            continue;
        }
        built.push(format!("{}:{index}", m.target));
        out.push_str(&format!(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({}, {});\n",
            quote_ident(&index),
            m.target,
            quote_ident(&m.target_tenant),
            list(&m.target_key)
        ));
    }
    out.push_str("\n-- 2. Each foreign key, with the tenant column first and its actions kept.\n");
    let mut constrained: Vec<String> = Vec::new();
    for m in &moves {
        let index = index_name(m);
        let new_name = crate::emit::fit(&m.name, "_tenant");
        let definition = composite(&m.definition, &m.columns, &m.tenant, &m.target_key, &m.target_tenant);
        out.push_str("BEGIN;\n");
        if !constrained.contains(&format!("{}:{index}", m.target)) {
            constrained.push(format!("{}:{index}", m.target));
            out.push_str(&format!(
                "ALTER TABLE {} ADD CONSTRAINT {} UNIQUE USING INDEX {};\n",
                m.target,
                quote_ident(&index),
                quote_ident(&index)
            ));
        }
        out.push_str(&format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {definition} NOT VALID;\n",
            m.table,
            quote_ident(&new_name)
        ));
        out.push_str(&format!("ALTER TABLE {} VALIDATE CONSTRAINT {};\n", m.table, quote_ident(&new_name)));
        out.push_str(&format!("ALTER TABLE {} DROP CONSTRAINT {};\n", m.table, quote_ident(&m.name)));
        out.push_str(&format!(
            "ALTER TABLE {} RENAME CONSTRAINT {} TO {};\nCOMMIT;\n",
            m.table,
            quote_ident(&new_name),
            quote_ident(&m.name)
        ));
    }
    Ok(out)
}

/// `definition` (as `pg_get_constraintdef` prints a foreign key) with the tenant columns first on
/// both sides; `SET NULL` and `SET DEFAULT` get the key's own columns (PostgreSQL 15), so that a
/// delete never nulls the tenant column.
fn composite(definition: &str, columns: &[String], tenant: &str, key: &[String], target_tenant: &str) -> String {
    let list = |cols: &[String]| cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
    let old_local = format!("FOREIGN KEY ({})", list(columns));
    let new_local = format!("FOREIGN KEY ({}, {})", quote_ident(tenant), list(columns));
    let mut out = definition.replacen(&old_local, &new_local, 1);
    let old_target = format!("({})", list(key));
    if let Some(at) = out.find(" REFERENCES ") {
        if let Some(open) = out[at..].find(&old_target).map(|i| at + i) {
            out.replace_range(
                open..open + old_target.len(),
                &format!("({}, {})", quote_ident(target_tenant), list(key)),
            );
        }
    }
    // (PostgreSQL 15 takes column lists for ON DELETE only.)
    for action in ["ON DELETE SET NULL", "ON DELETE SET DEFAULT"] {
        if out.contains(action) && !out.contains(&format!("{action} (")) {
            out = out.replacen(action, &format!("{action} ({})", list(columns)), 1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::composite;

    #[test]
    fn the_tenant_column_goes_first_and_actions_stay() {
        let c = |d: &str| composite(d, &["project_id".into()], "org_id", &["id".into()], "org_id");
        assert_eq!(
            c("FOREIGN KEY (project_id) REFERENCES app.projects(id) ON DELETE CASCADE"),
            "FOREIGN KEY (org_id, project_id) REFERENCES app.projects(org_id, id) ON DELETE CASCADE"
        );
        assert_eq!(
            c("FOREIGN KEY (project_id) REFERENCES app.projects(id) ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED"),
            "FOREIGN KEY (org_id, project_id) REFERENCES app.projects(org_id, id) ON DELETE SET NULL (project_id) DEFERRABLE INITIALLY DEFERRED"
        );
    }
}
