//! Sharing rows with other organizations. The catalog and the SQL API (`tenancy.share()`,
//! `unshare()`, `shares_of()`, `enable_sharing()`) are in `sql/sharing.sql`; the compiled
//! policies read `tenancy.shares` directly, so reading shared rows costs no function call per
//! row. This module holds the row trigger that keeps a shared row where its shares point, and
//! the check of who owns a row, which reads the application table as the table's owner.

use crate::catalog::{arg, count_latest, latest};
use crate::context::current_org;
use crate::error::TenancyError;
use crate::privilege::{as_catalog_owner, as_table_owner};
use crate::registry;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A shareable table as `tenancy.enable_sharing()` registered it.
struct Shareable {
    /// `schema.table`, quoted.
    name: String,
    id_column: String,
    /// Written by enable_sharing() with format_type() (schema-qualified where needed).
    id_type: String,
    tenant_column: String,
}

fn shareable(relation: pg_sys::Oid) -> Shareable {
    as_catalog_owner(|| {
        Spi::connect(|client| {
            let t = client.select(
                "SELECT s.id_column, s.id_type, s.tenant_column, n.nspname::pg_catalog.text, c.relname::pg_catalog.text
                   FROM tenancy.shareable_tables s
                   JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.relation
                   JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                  WHERE s.relation OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
                Some(1),
                &[relation.into()],
            )?;
            let Some(row) = t.into_iter().next() else { return Ok(None) };
            let text = |i| row.get::<String>(i).map(Option::unwrap_or_default);
            Ok::<_, pgrx::spi::Error>(Some(Shareable {
                id_column: text(1)?,
                id_type: text(2)?,
                tenant_column: text(3)?,
                name: format!("{}.{}", quote_ident(&text(4)?), quote_ident(&text(5)?)),
            }))
        })
        .unwrap_or_else(|e| pgrx::error!("pg_tenancy: {e}"))
    })
    .unwrap_or_else(|| {
        TenancyError::InvalidArgument {
            param: "relation",
            reason: format!("relation {} is not shareable", relation.to_u32()),
            hint: Some("Declare it with kind = \"shareable\" in the policy files and apply them.".into()),
        }
        .raise()
    })
}

/// For `tenancy.share()` and `unshare()` (never called by applications; not executable by
/// PUBLIC): the canonical text of `id` as an id of the shareable table `relation`, and whether
/// organization `org` owns a row with that id. Both are computed by the table's owner in a
/// security-restricted operation: casting to the id's type and reading the table may run code
/// the table's owner wrote (a domain's CHECK, an index expression), never as the catalog owner.
#[pg_extern(volatile, parallel_unsafe)]
fn _own_row(
    relation: pg_sys::Oid,
    id: &str,
    org: pgrx::Uuid,
) -> TableIterator<'static, (name!(id, Option<String>), name!(owned, bool))> {
    let t = shareable(relation);
    let id_type = &t.id_type;
    let sql = format!(
        "SELECT ($1::{id_type})::pg_catalog.text,
                EXISTS (SELECT FROM {} t WHERE t.{} OPERATOR(pg_catalog.=) $1::{id_type} AND t.{} OPERATOR(pg_catalog.=) $2)",
        t.name,
        quote_ident(&t.id_column),
        quote_ident(&t.tenant_column)
    );
    let row = as_table_owner(relation, || {
        Spi::connect(|client| {
            let t = client.select(&sql, Some(1), &[id.into(), org.into()])?;
            let row = t.first();
            Ok::<_, pgrx::spi::Error>((row.get::<String>(1)?, row.get::<bool>(2)?.unwrap_or(false)))
        })
        .unwrap_or_else(|e| pgrx::error!("pg_tenancy: {e}"))
    });
    TableIterator::once(row)
}

/// `tenancy.canonical_id()`, which `shares_of()` uses: the canonical text of `id` as an id of the
/// shareable table `relation`, cast by the table's owner in a security-restricted operation (the
/// id's type may be a domain whose CHECK runs code its owner wrote: never as the caller, who may
/// be a superuser).
#[pg_extern(stable, parallel_safe)]
fn canonical_id(relation: pg_sys::Oid, id: &str) -> Option<String> {
    let t = shareable(relation);
    let sql = format!("SELECT ($1::{})::pg_catalog.text", t.id_type);
    as_table_owner(relation, || {
        Spi::connect(|client| client.select(&sql, Some(1), &[id.into()])?.first().get::<String>(1))
            .unwrap_or_else(|e| pgrx::error!("pg_tenancy: {e}"))
    })
}

/// One attribute of `tuple`: its number, and whether the old and new values are the same.
///
/// # Safety
/// `desc`, `old` and `new` must be the trigger's valid tuple descriptor and tuples.
unsafe fn same_value(desc: pg_sys::TupleDesc, old: pg_sys::HeapTuple, new: pg_sys::HeapTuple, column: &str) -> bool {
    let natts = (*desc).natts as usize;
    let attrs = (*desc).attrs.as_slice(natts);
    let Some((index, attr)) = attrs
        .iter()
        .enumerate()
        .find(|(_, a)| !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()).to_bytes() == column.as_bytes())
    else {
        pgrx::error!("pg_tenancy: shared table has no column \"{column}\" (run tenancy.enable_sharing() again)");
    };
    let attno = (index + 1) as i32;
    let (mut old_null, mut new_null) = (false, false);
    let a = pg_sys::heap_getattr(old, attno, desc, &mut old_null);
    let b = pg_sys::heap_getattr(new, attno, desc, &mut new_null);
    match (old_null, new_null) {
        (true, true) => true,
        (false, false) => same_image(a, b, attr.attbyval, attr.attlen),
        _ => false,
    }
}

/// Whether two values of one type have the same binary image (what `datum_image_eq()` does in
/// PostgreSQL; equal images mean equal values for the types used as ids and visibility).
///
/// # Safety
/// `a` and `b` must be valid, non-null values of a type with this `byval` and `len`.
unsafe fn same_image(a: pg_sys::Datum, b: pg_sys::Datum, byval: bool, len: i16) -> bool {
    use pgrx::varlena::{vardata_any, varsize_any_exhdr};
    let bytes = |p: *const u8, n: usize| std::slice::from_raw_parts(p, n);
    if byval {
        a == b
    } else if len > 0 {
        bytes(a.cast_mut_ptr(), len as usize) == bytes(b.cast_mut_ptr(), len as usize)
    } else if len == -1 {
        let x = pg_sys::pg_detoast_datum_packed(a.cast_mut_ptr());
        let y = pg_sys::pg_detoast_datum_packed(b.cast_mut_ptr());
        let (nx, ny) = (varsize_any_exhdr(x), varsize_any_exhdr(y));
        nx == ny && bytes(vardata_any(x).cast(), nx) == bytes(vardata_any(y).cast(), ny)
    } else {
        CStr::from_ptr(a.cast_mut_ptr()) == CStr::from_ptr(b.cast_mut_ptr())
    }
}

/// Statement trigger of shareable tables (AFTER DELETE, with the deleted rows as transition
/// table `tenancy_gone`, and AFTER TRUNCATE), with (tenant column, id column), installed on the
/// table and its partitions by `tenancy.enable_sharing()`: deleted rows take their shares with
/// them, so an id used again is not shared by accident. The deleted rows' ids are turned into
/// the text shares store by the table's owner, in a security-restricted operation (the id's type
/// and its cast to text belong to the owner); the shares are deleted as the catalog owner with
/// the latest snapshot, so that shares committed since a REPEATABLE READ transaction began go too.
#[pg_trigger]
fn forget_shares<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
    let relation = registry::require(registry::Kind::Forget, trigger);
    if matches!(trigger.op()?, pgrx::PgTriggerOperation::Truncate) {
        as_catalog_owner(|| {
            latest(
                "DELETE FROM tenancy.shares WHERE relation OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
                &[arg(relation)],
            )
        });
        return Ok(None);
    }
    let args = trigger.extra_args()?;
    let (Some(tenant_column), Some(id_column)) = (args.first(), args.get(1)) else {
        pgrx::error!("tenancy.forget_shares() needs (tenant column, id column)");
    };
    let data = trigger.trigger_data();
    // SAFETY: the trigger manager passes valid trigger data; the transition table's name is the
    // one its CREATE TRIGGER gave (REFERENCING OLD TABLE AS ...).
    let gone = unsafe {
        let name = (*data.tg_trigger).tgoldtable;
        if name.is_null() {
            pgrx::error!("tenancy.forget_shares() needs REFERENCING OLD TABLE (run tenancy.enable_sharing() again)");
        }
        CStr::from_ptr(name).to_string_lossy().into_owned()
    };
    let sql = format!(
        "SELECT g.{}, (g.{})::pg_catalog.text FROM {} g",
        quote_ident(tenant_column),
        quote_ident(id_column),
        quote_ident(&gone)
    );
    let (orgs, ids): (Vec<Option<pgrx::Uuid>>, Vec<Option<String>>) = as_table_owner(relation, || {
        Spi::connect(|client| {
            // SAFETY: registers this trigger's transition tables with the SPI connection just
            // opened, as PL/pgSQL does for its triggers.
            unsafe {
                pg_sys::SPI_register_trigger_data(data as *const pg_sys::TriggerData as *mut pg_sys::TriggerData)
            };
            let rows = client.select(&sql, None, &[])?;
            let mut pairs = (Vec::new(), Vec::new());
            for row in rows {
                pairs.0.push(row.get::<pgrx::Uuid>(1)?);
                pairs.1.push(row.get::<String>(2)?);
            }
            Ok::<_, pgrx::spi::Error>(pairs)
        })
        .unwrap_or_else(|e| pgrx::error!("pg_tenancy: reading the deleted rows failed: {e}"))
    });
    if !orgs.is_empty() {
        as_catalog_owner(|| {
            latest(
                "DELETE FROM tenancy.shares s
                  USING ROWS FROM (pg_catalog.unnest($2::pg_catalog.uuid[]), pg_catalog.unnest($3::pg_catalog.text[])) AS g(o, i)
                  WHERE s.relation OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
                    AND s.owner_org OPERATOR(pg_catalog.=) g.o AND s.row_id OPERATOR(pg_catalog.=) g.i",
                &[arg(relation), arg(orgs), arg(ids)],
            )
        });
    }
    Ok(None)
}

/// For `tenancy.share()` and `unshare()` (not executable by PUBLIC): after a grantee's share of
/// a row shrinks or ends, what it passed on shrinks or ends with it, and what was passed on from
/// there. Level by level, each level its own statement with the latest snapshot: a REPEATABLE
/// READ caller reaches reshares committed since it began, and a level waits for a reshare being
/// written (its row lock) and then sees it. Iterative, so no chain is too deep to revoke; the
/// shares of one row form a tree (one share per grantee), so each level is new.
#[pg_extern(volatile, parallel_unsafe)]
fn _revoke_reshares(
    relation: pg_sys::Oid,
    owner: pgrx::Uuid,
    row_id: &str,
    grantee: pgrx::Uuid,
    may_write: bool,
    may_reshare: bool,
) {
    if may_write && may_reshare {
        return;
    }
    let sql = if may_reshare {
        "UPDATE tenancy.shares x SET can_write = false
          WHERE x.relation OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND x.owner_org OPERATOR(pg_catalog.=) $2
            AND x.row_id OPERATOR(pg_catalog.=) $3 AND x.granted_by_org OPERATOR(pg_catalog.=) ANY ($4) AND x.can_write
          RETURNING x.grantee_org"
    } else {
        "DELETE FROM tenancy.shares x
          WHERE x.relation OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND x.owner_org OPERATOR(pg_catalog.=) $2
            AND x.row_id OPERATOR(pg_catalog.=) $3 AND x.granted_by_org OPERATOR(pg_catalog.=) ANY ($4)
          RETURNING x.grantee_org"
    };
    let mut frontier = vec![Some(grantee)];
    as_catalog_owner(|| {
        while !frontier.is_empty() {
            frontier = latest(sql, &[arg(relation), arg(owner), arg(row_id), arg(frontier.clone())]);
        }
    });
}

/// The share that lets organization $4 write row $3 of relation $1, owned by $2: what a
/// grantee's write is checked against, as it writes and as it commits.
macro_rules! write_share {
    () => {
        "FROM tenancy.shares s
          WHERE s.relation OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
            AND s.owner_org OPERATOR(pg_catalog.=) $2 AND s.row_id OPERATOR(pg_catalog.=) $3
            AND s.grantee_org OPERATOR(pg_catalog.=) $4 AND s.can_write"
    };
}

/// BEFORE UPDATE row trigger of shareable tables, with (tenant column, id column, visibility
/// column or ''). A row never moves to another organization and keeps its id (shares name it by
/// organization and id); only its own organization changes its visibility, so an organization
/// it is shared with for writing cannot publish it.
#[pg_trigger]
fn protect_shared_row<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let relation = registry::require(registry::Kind::Sharing, trigger);
    let args = trigger.extra_args()?;
    let (Some(tenant_column), Some(id_column)) = (args.first(), args.get(1)) else {
        pgrx::error!("tenancy.protect_shared_row() needs (tenant column, id column, visibility column)");
    };
    let visibility_column = args.get(2).filter(|c| !c.is_empty());
    let data = trigger.trigger_data();
    if data.tg_newtuple.is_null() || data.tg_trigtuple.is_null() {
        return Ok(trigger.new());
    }
    let table =
        || format!("{}.{}", trigger.table_schema().unwrap_or_default(), trigger.table_name().unwrap_or_default());
    // SAFETY: the trigger manager passes a valid relation and both tuples of an UPDATE.
    let same =
        |column: &str| unsafe { same_value((*data.tg_relation).rd_att, data.tg_trigtuple, data.tg_newtuple, column) };
    for (column, what) in [(tenant_column, "organization"), (id_column, "id")] {
        if !same(column) {
            TenancyError::PermissionDenied {
                message: format!("rows of shareable table {} cannot change their {what}", table()),
                detail: Some(format!("Column \"{column}\" is fixed once a row is written: shares refer to it.")),
                hint: Some("Insert a new row and delete the old one instead.".into()),
            }
            .raise()
        }
    }
    let owner = trigger.old().and_then(|t| t.get_by_name::<pgrx::Uuid>(tenant_column).ok().flatten());
    let cur = current_org();
    if let Some(column) = visibility_column {
        if cur.is_some() && owner != cur && !same(column) {
            TenancyError::PermissionDenied {
                message: format!("only the organization that owns a row of {} may change its visibility", table()),
                detail: Some(format!("Column \"{column}\" of a row shared with your organization.")),
                hint: None,
            }
            .raise()
        }
    }
    // Another organization writes the row: the share that allows it must hold now, not only in
    // the statement's snapshot (a REPEATABLE READ transaction keeps the one it began with).
    if let (Some(cur), Some(owner)) = (cur, owner) {
        if cur != owner {
            // SAFETY: the trigger manager passes a valid relation and old tuple.
            let id = unsafe { column_text((*data.tg_relation).rd_att, data.tg_trigtuple, id_column) };
            let id = id.and_then(|id| canonical_id(relation, &id));
            let shares = as_catalog_owner(|| {
                count_latest(
                    concat!("SELECT pg_catalog.count(*) ", write_share!()),
                    &[arg(relation), arg(owner), arg(id.clone()), arg(cur)],
                )
            });
            if shares == 0 {
                TenancyError::ShareEndedMeanwhile { table: table() }.raise()
            }
            recheck_at_commit(relation, owner, id, cur, table());
        }
    }
    Ok(trigger.new())
}

/// A grantee's write to check again when its transaction commits: (relation, owner, row id,
/// grantee, table name).
type GranteeWrite = (pg_sys::Oid, pgrx::Uuid, Option<String>, pgrx::Uuid, String);

thread_local! {
    /// The writes of the transaction whose local id is the first field.
    static GRANTEE_WRITES: std::cell::RefCell<(u32, Vec<GranteeWrite>)> = const { std::cell::RefCell::new((0, Vec::new())) };
}

/// Checks the share behind a grantee's write once more as the transaction commits, locking it
/// (`FOR KEY SHARE`) for that moment: an `unshare()` that committed while the write was open
/// makes the commit fail (40001), and one still running waits for the commit, never the other
/// way round; the lock is held only while committing, so a grantee cannot keep the owner from
/// revoking.
fn recheck_at_commit(relation: pg_sys::Oid, owner: pgrx::Uuid, id: Option<String>, grantee: pgrx::Uuid, table: String) {
    // SAFETY: MyProc is this backend's PGPROC.
    let lxid = unsafe { (*pg_sys::MyProc).lxid };
    let first = GRANTEE_WRITES.with(|w| {
        let mut w = w.borrow_mut();
        let first = w.0 != lxid;
        if first {
            *w = (lxid, Vec::new());
        }
        if !w.1.iter().any(|(r, o, i, g, _)| *r == relation && *o == owner && *i == id && *g == grantee) {
            w.1.push((relation, owner, id, grantee, table));
        }
        first
    });
    if first {
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::PreCommit, || {
            let writes = GRANTEE_WRITES.with(|w| std::mem::take(&mut w.borrow_mut().1));
            for (relation, owner, id, grantee, table) in writes {
                let held = as_catalog_owner(|| {
                    latest(
                        concat!("SELECT s.grantee_org ", write_share!(), " FOR KEY SHARE OF s"),
                        &[arg(relation), arg(owner), arg(id), arg(grantee)],
                    )
                });
                if held.is_empty() {
                    TenancyError::ShareEndedMeanwhile { table }.raise()
                }
            }
        });
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, || {
            GRANTEE_WRITES.with(|w| w.borrow_mut().1.clear());
        });
    }
}

/// The value of `column` of `tuple` in its type's text form (the type's output function: for
/// the types ids have, PostgreSQL's own), or None when it is null.
///
/// # Safety
/// `desc` and `tuple` must be a valid tuple descriptor and a tuple of it.
unsafe fn column_text(desc: pg_sys::TupleDesc, tuple: pg_sys::HeapTuple, column: &str) -> Option<String> {
    unsafe {
        let natts = (*desc).natts as usize;
        let attrs = (*desc).attrs.as_slice(natts);
        let (index, attr) = attrs.iter().enumerate().find(|(_, a)| {
            !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()).to_bytes() == column.as_bytes()
        })?;
        let mut is_null = false;
        let datum = pg_sys::heap_getattr(tuple, (index + 1) as i32, desc, &mut is_null);
        if is_null {
            return None;
        }
        let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
        pg_sys::getTypeOutputInfo(attr.atttypid, &mut output, &mut varlena);
        let text = pg_sys::OidOutputFunctionCall(output, datum);
        Some(CStr::from_ptr(text).to_string_lossy().into_owned())
    }
}
