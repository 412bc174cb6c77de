//! `tenancy plan` and `tenancy apply`: the difference between the policy files and the live
//! database, found by trying. Inside one transaction, each unit of the compiled SQL runs under
//! a savepoint; if the catalog state of its object (policies, indexes, triggers, grants,
//! defaults, RLS flags, options) is the same afterwards, the unit changes nothing and is rolled
//! back. What remains is the plan: `plan` shows it and rolls back, `apply` commits it, and
//! applying twice changes nothing the second time.

use crate::emit::{Block, Object};

/// The catalog state a unit can change, for one table or view.
const RELATION_STATE: &str = "
SELECT concat_ws(E'\\n',
    (SELECT relrowsecurity::text || relforcerowsecurity::text || coalesce(relacl::text, '') || coalesce(reloptions::text, '')
       FROM pg_class WHERE oid = $1::text::regclass),
    (SELECT string_agg(polname::text || polcmd::text || polpermissive::text
                       || (SELECT coalesce(string_agg(r::regrole::text, ',' ORDER BY r::regrole::text), '') FROM unnest(polroles) r)
                       || coalesce(pg_get_expr(polqual, polrelid), '') || '|' || coalesce(pg_get_expr(polwithcheck, polrelid), '')
                       || '|' || coalesce(obj_description(oid, 'pg_policy'), ''),
                       ';' ORDER BY polname)
       FROM pg_policy WHERE polrelid = $1::text::regclass),
    (SELECT string_agg(pg_get_indexdef(indexrelid), ';' ORDER BY pg_get_indexdef(indexrelid)) FROM pg_index WHERE indrelid = $1::text::regclass),
    (SELECT string_agg(pg_get_triggerdef(oid), ';' ORDER BY pg_get_triggerdef(oid)) FROM pg_trigger
      WHERE tgrelid = $1::text::regclass AND NOT tgisinternal),
    (SELECT string_agg(attname::text || attnotnull::text || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ';' ORDER BY attnum)
       FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped),
    (SELECT string_agg(resource || tenant_column || coalesce(sum_column, ''), ';' ORDER BY resource)
       FROM tenancy.quota_sources WHERE relation = $1::text::regclass),
    (SELECT concat_ws('|', tenant_column, id_column, id_type, visibility_column, share_permission)
       FROM tenancy.shareable_tables WHERE relation = $1::text::regclass),
    (SELECT string_agg(columns || ':' || reason, ';' ORDER BY columns)
       FROM tenancy.unique_waivers WHERE relation = $1::text::regclass))";

/// What the sync of the application's organizations and memberships can change: its functions
/// and triggers, and the rows of tenancy.organizations and tenancy.members (as digests).
const SYNC_STATE: &str = "
SELECT concat_ws(E'\\n',
    (SELECT string_agg(pg_get_functiondef(p.oid) || coalesce(p.proacl::text, ''), ';' ORDER BY p.oid)
       FROM pg_proc p WHERE p.proname LIKE 'tenancy\\_sync\\_%' OR p.proname LIKE 'tenancy\\_lookup\\_%'),
    (SELECT string_agg(pg_get_triggerdef(t.oid), ';' ORDER BY t.oid) FROM pg_trigger t WHERE t.tgname = 'tenancy_sync'),
    (SELECT md5(coalesce(string_agg(id::text || '|' || coalesce(key, '') || '|' || slug || '|' || name || '|' || status || '|' || coalesce(parent_id::text, ''), ',' ORDER BY id), ''))
       FROM tenancy.organizations),
    (SELECT md5(coalesce(string_agg(org_id::text || '|' || user_id || '|' || role, ',' ORDER BY org_id, user_id), ''))
       FROM tenancy.members))";

/// The rows of tenancy.project_members (as a digest), which the sync of `[project_memberships]`
/// writes.
const PROJECT_MEMBERS_STATE: &str = "
SELECT md5(coalesce(string_agg(project_id::text || '|' || user_id || '|' || coalesce(role, ''), ',' ORDER BY project_id, user_id), ''))
  FROM tenancy.project_members";

const SCHEMA_STATE: &str = "SELECT coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = $1";

fn state(tx: &mut postgres::Transaction<'_>, object: &Object) -> Result<String, postgres::Error> {
    let row = match object {
        Object::Database => tx.query_one(crate::hardening::DATABASE_STATE, &[])?,
        Object::Schema(s) => tx.query_one(SCHEMA_STATE, &[s])?,
        Object::Relation(r) => tx.query_one(RELATION_STATE, &[r])?,
        Object::Sync => {
            let mut state = tx.query_one(SYNC_STATE, &[])?.get::<_, Option<String>>(0).unwrap_or_default();
            // Projects' roles (0.6.0 and later).
            if tx.query_one("SELECT to_regclass('tenancy.project_members') IS NOT NULL", &[])?.get::<_, bool>(0) {
                let digest: Option<String> = tx.query_one(PROJECT_MEMBERS_STATE, &[])?.get(0);
                state.push('\n');
                state.push_str(&digest.unwrap_or_default());
            }
            return Ok(state);
        }
    };
    Ok(row.get::<_, Option<String>>(0).unwrap_or_default())
}

/// A unit that failed, and why.
#[derive(Debug)]
pub struct PlanError {
    pub error: postgres::Error,
    /// The SQL of the unit that failed (None: reading the catalog state failed).
    pub unit: Option<String>,
}

impl From<postgres::Error> for PlanError {
    fn from(error: postgres::Error) -> PlanError {
        PlanError { error, unit: None }
    }
}

/// Runs every unit of `blocks` in `tx`, keeping only those that change something; returns the
/// kept units, grouped as blocks. A unit that fails is an error (the transaction is then useless).
pub fn plan(tx: &mut postgres::Transaction<'_>, blocks: &[Block]) -> Result<Vec<Block>, PlanError> {
    let mut planned = Vec::new();
    for block in blocks {
        let mut kept = Vec::new();
        for unit in &block.units {
            let before = state(tx, &block.object)?;
            tx.batch_execute("SAVEPOINT tenancy_plan_unit")?;
            let sql = unit.join("\n");
            tx.batch_execute(&sql).map_err(|error| PlanError { error, unit: Some(sql.clone()) })?;
            if state(tx, &block.object)? == before {
                tx.batch_execute("ROLLBACK TO SAVEPOINT tenancy_plan_unit")?;
            } else {
                tx.batch_execute("RELEASE SAVEPOINT tenancy_plan_unit")?;
                kept.push(unit.clone());
            }
        }
        if !kept.is_empty() {
            planned.push(Block { header: block.header.clone(), object: block.object.clone(), units: kept });
        }
    }
    Ok(planned)
}

/// The number of units in a plan.
pub fn changes(blocks: &[Block]) -> usize {
    blocks.iter().map(|b| b.units.len()).sum()
}
