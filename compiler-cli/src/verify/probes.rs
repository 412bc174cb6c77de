//! The probes: as an application role, in each tenant's context and in none, every command
//! against every tenant's rows. Anything beyond the tenant's own rows, the rows shared with it,
//! public rows and global rows is a leak.

use super::catalog::Table;
use super::fixtures::{Allowed, Fixtures, Row, Tenants, Writer, NO_TENANT};
use super::{as_role, is_denied, literal, Cell, Kind};
use crate::schema::quote_ident;
use std::collections::{BTreeMap, BTreeSet};

pub(super) struct Probe<'a, 'w> {
    pub role: &'a str,
    pub table: &'a Table,
    pub writer: &'a mut Writer<'w>,
}

impl<'w> Probe<'_, 'w> {
    fn tenants(&self) -> &'w Tenants {
        self.writer.tenants
    }

    fn fixtures(&self) -> &Fixtures {
        &self.writer.fixtures
    }

    /// Tenant `x`'s probes of a tenant, shareable or child table.
    pub fn tenant_table(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        x: usize,
        (may_read, may_write): Allowed,
        cells: &mut BTreeMap<&'static str, Cell>,
    ) -> Result<(), postgres::Error> {
        let table = self.table;
        let name = &table.name;
        let tenant = &self.tenants().list[x];
        let context = Some(tenant.context.as_str());
        let me = format!("{} acting for {}", self.role, self.tenants().describe(x));
        let own = self.tenants().owner(table, x).map(str::to_string);
        let writer = self.tenants().writer(table, x);
        let owner_sql = table.owner_sql_as(&tenant.user, own.as_deref());
        // What it reaches as its own (its projects' project memberships, in an organization's
        // context), and the other tenants beyond.
        let reached = self.tenants().reached(table, x);
        let others: Vec<(usize, String)> =
            self.tenants().others(table, x).into_iter().filter(|(_, o)| !reached.contains(o)).collect();
        let global_ok = table.global_rows;
        let own_rows: Vec<String> = writer
            .and_then(|w| self.fixtures().get(&(name.clone(), w)))
            .into_iter()
            .flatten()
            .map(|(_, f)| f.ctid.clone())
            .collect();

        // SELECT: every foreign row seen must be public, global or shared with this tenant.
        let seen =
            as_role(tx, self.role, context, &format!("SELECT t.ctid::text, {owner_sql} FROM {name} t LIMIT 100000"))?;
        let cell = cells.get_mut("select").unwrap();
        let reader = table.readers.as_ref().is_some_and(|r| r.iter().any(|r| r == self.role));
        match seen {
            Err(e) if is_denied(&e) && reader && !own_rows.is_empty() => {
                // The policy files let it read its own rows: refused, nothing else proves anything.
                cell.unverified.push(format!("{me} may read the table by the policy files, and was refused: {e}"));
            }
            Err(e) if is_denied(&e) => {
                cell.reach.insert("denied");
            }
            Err(e) => cell.unverified.push(format!("{me}: {e}")),
            Ok(seen) => {
                let leaked = classify(&seen.rows, &reached, global_ok, cell, |ctid| may_read.get(ctid).copied());
                let own_seen = seen.rows.iter().filter(|r| r.get(1).cloned().flatten() == own && own.is_some()).count();
                if own_seen == 0 && !own_rows.is_empty() {
                    // "No leaks" means something only when the tenant's own access works.
                    cell.unverified.push(format!(
                        "{me} read none of its own {} row(s): its legitimate access does not work, so no other check of it proves anything",
                        own_rows.len()
                    ));
                }
                if leaked > 0 {
                    cell.leaks.push(format!(
                        "{me} sees {leaked} row(s) of other {} that are neither shared with it nor public",
                        self.tenants().noun()
                    ));
                }
                if cell.reach.is_empty() {
                    cell.reach.insert("none");
                }
            }
        }

        // INSERT: into its own tenant (allowed or not), never into another one, never a global
        // row, and never pointing into another tenant's rows.
        let mut tries: Vec<(String, Result<String, String>)> = Vec::new();
        if own.is_some() {
            tries.push(("own".into(), self.writer.insert_sql(table, &Row::new(own.as_deref(), x))));
        }
        for (y, owner) in &others {
            let mut row = Row::new(Some(owner), *y);
            row.users_of = Some(x);
            tries.push((format!("other {y}"), self.writer.insert_sql(table, &row)));
        }
        if let (true, Some(tc)) = (global_ok, &table.tenant) {
            // NULL said outright: the tenant column's default is the context's tenant.
            let mut row = Row::new(None, x);
            row.given.insert(tc.clone(), "NULL".into());
            tries.push(("global".into(), self.writer.insert_sql(table, &row)));
        }
        if let (Some(uc), Some(tc), Some(c)) =
            (&table.user_rows, &table.tenant, table.user_rows.as_ref().and_then(|u| table.column(u)))
        {
            // A row of its own user (allowed), and of the other tenants' users (never).
            let user_row = |user: &str| {
                let mut row = Row::new(None, x);
                row.given.insert(tc.clone(), "NULL".into());
                row.given.insert(uc.clone(), format!("{}::{}", literal(user), c.sql_type));
                row
            };
            tries.push(("own".into(), self.writer.insert_sql(table, &user_row(&tenant.user))));
            for (y, _) in &others {
                let theirs = &self.tenants().list[*y].user;
                if *theirs != tenant.user {
                    tries.push((format!("user {y}"), self.writer.insert_sql(table, &user_row(theirs))));
                }
            }
        }
        if let (true, Some(given)) = (own.is_some(), self.writer.global_parent(table)) {
            // A child row under a global parent row: as global as its parent.
            let mut row = Row::new(None, x);
            row.given = given;
            tries.push(("global".into(), self.writer.insert_sql(table, &row)));
        }
        if own.is_some() {
            // Each foreign key besides the tenant column (and a child's parent key) in turn, to a
            // row of the other tenant, the rest pointing at its own rows.
            let skip: Vec<&String> = table.tenant.iter().chain(table.parent.iter().flat_map(|p| &p.columns)).collect();
            for (y, _) in &others {
                for fk in &table.foreign_keys {
                    let references = fk.references.to_string();
                    let target_kind = self.writer.tables.iter().find(|t| t.name == references).map(|t| t.kind);
                    if fk.columns.iter().any(|c| skip.contains(&c))
                        || references == "tenancy.organizations"
                        || target_kind == Some(Kind::Identity)
                    {
                        continue;
                    }
                    let (Some(theirs), mine) =
                        (self.writer.parent_row(&references, *y), self.writer.parent_row(&references, x))
                    else {
                        continue;
                    };
                    if mine.map(|f| &f.ctid) == Some(&theirs.ctid) {
                        continue; // a row of no tenant both may point at
                    }
                    let mut given = BTreeMap::new();
                    for (c, r) in fk.columns.iter().zip(&fk.referred) {
                        let (Some(v), Some(col)) = (theirs.value(r), table.column(c)) else { continue };
                        given.insert(c.clone(), format!("{}::{}", literal(&v), col.sql_type));
                    }
                    if given.len() != fk.columns.len() {
                        continue;
                    }
                    let mut row = Row::new(own.as_deref(), x);
                    row.users_of = Some(x);
                    row.given = given;
                    tries.push((format!("cross {y}"), self.writer.insert_sql(table, &row)));
                }
            }
        }
        let cell = cells.get_mut("insert").unwrap();
        for (what, sql) in tries {
            let sql = match sql {
                Ok(sql) => sql,
                Err(e) => {
                    cell.unverified.push(e);
                    continue;
                }
            };
            // No RETURNING: it would apply the SELECT policy to the new row and hide a leaky INSERT.
            let result = as_role(tx, self.role, context, &sql)?;
            let (what, y) = what.split_once(' ').map_or((what.as_str(), None), |(w, y)| (w, y.parse::<usize>().ok()));
            let them = y.map(|y| self.tenants().describe(y)).unwrap_or_default();
            match (what, result) {
                ("own", Err(e)) if e.ends_with("(23505)") && !own_rows.is_empty() => {
                    // A key the tenant's fixture row holds already (one row per project, say):
                    // the same INSERT with that row out of the way.
                    let first = super::First {
                        table,
                        clear: Some(format!("DELETE FROM {name} WHERE ctid IN ({})", tids(&own_rows))),
                        write: None,
                    };
                    let again = super::as_role_after(tx, Some(&first), self.role, context, &sql)?.unwrap_or(Err(e));
                    own_outcome(cell, &me, again.map(|_| super::Outcome { processed: 1, rows: vec![] }))
                }
                ("own", result) => {
                    own_outcome(cell, &me, result.map(|_| super::Outcome { processed: 1, rows: vec![] }))
                }
                ("other", Ok(_)) => cell.leaks.push(format!("{me} inserted a row into {them}")),
                ("other", Err(e)) if !e.ends_with("(42501)") => {
                    cell.unverified.push(format!("{me}: inserting into {them} failed otherwise: {e}"))
                }
                ("global", Ok(_)) => cell.leaks.push(format!("{me} inserted a global row (NULL tenant)")),
                ("user", Ok(_)) => cell.leaks.push(format!("{me} inserted a row of {them}'s user")),
                ("cross", Ok(_)) => {
                    cell.leaks.push(format!("{me} inserted a row that points at {them}'s rows through a foreign key"))
                }
                _ => {}
            }
        }

        // UPDATE: own rows (if allowed), rows shared for writing, nothing else; never moving a
        // row to another tenant or making it global.
        let cell = cells.get_mut("update").unwrap();
        let touch = table.touch_column().map(|c| quote_ident(&c)).unwrap_or_default();
        let mine = match reached.as_slice() {
            [] => "false".into(),
            [o] => format!("{owner_sql} IS NOT DISTINCT FROM {}", literal(o)),
            all => format!(
                "coalesce({owner_sql} IN ({}), false)",
                all.iter().map(|o| literal(o)).collect::<Vec<_>>().join(", ")
            ),
        };
        // Every row but its own (which a trigger or constraint of the application may guard, like
        // the last owner of an organization), then its own.
        let updated = as_role(
            tx,
            self.role,
            context,
            &format!(
                "UPDATE {name} t SET {touch} = t.{touch} WHERE NOT ({mine}) RETURNING to_jsonb(t)::text, {owner_sql}"
            ),
        )?;
        match updated {
            Err(e) if is_denied(&e) => {
                cell.reach.insert("denied");
            }
            Err(e) => cell.unverified.push(format!("{me}: updating other rows failed otherwise: {e}")),
            Ok(updated) => {
                let leaked =
                    classify(&updated.rows, &reached, false, cell, |row| may_write.contains(row).then_some("shared"));
                if leaked > 0 {
                    cell.leaks.push(format!(
                        "{me} updated {leaked} row(s) of other {} not shared with it for writing",
                        self.tenants().noun()
                    ));
                }
            }
        }
        if own.is_some() {
            let sql = format!("UPDATE {name} t SET {touch} = t.{touch} WHERE {mine}");
            own_outcome(cell, &me, as_role(tx, self.role, context, &sql)?);
        }
        if let Some(ctid) = own_rows.first() {
            let mut moves: Vec<(String, String)> = Vec::new();
            for (y, owner) in &others {
                let them = self.tenants().describe(*y);
                if let Some(c) = &table.tenant {
                    moves.push((
                        format!("moved its row into {them}"),
                        format!("{} = {}", quote_ident(c), literal(owner)),
                    ));
                } else if let Some(p) = &table.parent {
                    // Re-parented onto the other tenant's row.
                    if let Some(parent) = self.writer.parent_row(&p.target, *y) {
                        let set: Vec<String> = p
                            .columns
                            .iter()
                            .zip(&p.target_columns)
                            .filter_map(|(c, tc)| {
                                parent.value(tc).map(|v| format!("{} = {}", quote_ident(c), literal(&v)))
                            })
                            .collect();
                        if set.len() == p.columns.len() {
                            moves.push((format!("moved its row under {them}'s rows"), set.join(", ")));
                        }
                    }
                }
            }
            if let (true, Some(c)) = (global_ok, &table.tenant) {
                moves.push(("made its row global (NULL tenant)".into(), format!("{} = NULL", quote_ident(c))));
            }
            if let (Some(uc), Some(tc)) = (&table.user_rows, &table.tenant) {
                for (y, _) in &others {
                    let theirs = &self.tenants().list[*y].user;
                    if *theirs != tenant.user {
                        moves.push((
                            format!("gave its row to {}'s user", self.tenants().describe(*y)),
                            format!("{} = NULL, {} = {}", quote_ident(tc), quote_ident(uc), literal(theirs)),
                        ));
                    }
                }
                // Its own user's rows are every context's of that user: an organization's row
                // made one would reach the user's other organizations.
                moves.push((
                    "made its row its user's (NULL tenant), out of the organization".into(),
                    format!("{} = NULL, {} = {}", quote_ident(tc), quote_ident(uc), literal(&tenant.user)),
                ));
            }
            if let Some(given) = self.writer.global_parent(table) {
                let set: Vec<String> = given.iter().map(|(c, v)| format!("{} = {v}", quote_ident(c))).collect();
                moves.push(("moved its row under a global row (made it global)".into(), set.join(", ")));
            }
            for (what, set) in moves {
                let sql = format!("UPDATE {name} SET {set} WHERE ctid = {}::tid", literal(ctid));
                if let Ok(moved) = as_role(tx, self.role, context, &sql)? {
                    if moved.processed > 0 {
                        cell.leaks.push(format!("{me} {what}"));
                    }
                }
            }
        }

        // DELETE: own rows (if allowed), never another tenant's, shared or global.
        let cell = cells.get_mut("delete").unwrap();
        let deleted =
            as_role(tx, self.role, context, &format!("DELETE FROM {name} t WHERE NOT ({mine}) RETURNING {owner_sql}"))?;
        match deleted {
            Err(e) if is_denied(&e) => {
                cell.reach.insert("denied");
            }
            Err(e) => cell.unverified.push(format!("{me}: deleting other rows failed otherwise: {e}")),
            Ok(deleted) => {
                if !deleted.rows.is_empty() {
                    cell.leaks.push(format!(
                        "{me} deleted {} row(s) of other {}",
                        deleted.rows.len(),
                        self.tenants().noun()
                    ));
                }
            }
        }
        if own.is_some() {
            let sql = format!("DELETE FROM {name} t WHERE {mine}");
            let mut outcome = as_role(tx, self.role, context, &sql)?;
            if let (Err(e), false) = (&outcome, own_rows.is_empty()) {
                if !e.ends_with("(42501)") {
                    // Its rows are referenced (by the other fixtures) or guarded: a row of its own
                    // that nothing references yet, written first, deleted as the role.
                    let fixtures = tids(&own_rows);
                    if let Ok(fresh) = self.writer.insert_sql(table, &Row::new(own.as_deref(), x)) {
                        let sql = format!("DELETE FROM {name} t WHERE {mine} AND t.ctid <> ALL (ARRAY[{fixtures}])");
                        // Its fixture rows out of the way first (a key they hold, one row per
                        // organization, would refuse the fresh row), unless the fresh row points
                        // at them (a reference to its own table): then beside them.
                        let mut first = super::First {
                            table,
                            clear: Some(format!("DELETE FROM {name} WHERE ctid IN ({fixtures})")),
                            write: Some(fresh),
                        };
                        let mut again = super::as_role_after(tx, Some(&first), self.role, context, &sql)?;
                        if again.is_none() {
                            first.clear = None;
                            again = super::as_role_after(tx, Some(&first), self.role, context, &sql)?;
                        }
                        if let Some(again) = again {
                            if again.as_ref().is_ok_and(|o| o.processed > 0) || again.is_err() {
                                outcome = again;
                            }
                        }
                    }
                }
            }
            own_outcome(cell, &me, outcome);
        }
        Ok(())
    }

    /// Tenant `x`'s probes of a global table: every row read, none written.
    pub fn global_table(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        x: usize,
        cells: &mut BTreeMap<&'static str, Cell>,
    ) -> Result<(), postgres::Error> {
        let table = self.table;
        let name = &table.name;
        let context = Some(self.tenants().list[x].context.clone());
        let context = context.as_deref();
        let me = format!("{} acting for {}", self.role, self.tenants().describe(x));
        let select = as_role(tx, self.role, context, &format!("SELECT 'x' FROM {name} LIMIT 1"))?;
        cells.get_mut("select").unwrap().reach.insert(if select.is_ok() { "all" } else { "denied" });
        let first = table.columns.iter().find(|c| !c.generated).map(|c| quote_ident(&c.name));
        // Rows were there before the verifier came, or it wrote one (the owner looked).
        let empty = !self.fixtures().contains_key(&(name.clone(), NO_TENANT))
            && !self.fixtures().contains_key(&(name.clone(), 0));
        let writes = [
            ("insert", self.writer.insert_sql(table, &Row::new(None, x)).ok()),
            ("update", first.as_ref().map(|c| format!("UPDATE {name} SET {c} = {c}"))),
            ("delete", Some(format!("DELETE FROM {name}"))),
        ];
        for (command, sql) in writes {
            let cell = cells.get_mut(command).unwrap();
            let Some(sql) = sql else {
                cell.reach.insert("denied");
                continue;
            };
            match as_role(tx, self.role, context, &sql)?.map(|o| o.processed) {
                Ok(n) if n > 0 => cell.leaks.push(format!("{me} changed {n} row(s) of global table {name}: {sql}")),
                Ok(_) if empty => cell
                    .unverified
                    .push(format!("{name} is empty and no row could be generated for it, so `{sql}` proves nothing")),
                // Privileges and row-level security are checked before constraints: a
                // constraint error means the write got past both.
                Err(e) if !e.ends_with("(42501)") => cell.leaks.push(format!(
                    "{me} got past privileges and policies of global table {name}, stopped only by: {e}"
                )),
                _ => {
                    cell.reach.insert("denied");
                }
            }
        }
        Ok(())
    }

    /// Tenant `x`'s probes of an identity table: the user's own row (and, by design, its
    /// organization's members'), never another user's.
    pub fn identity_table(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        x: usize,
        cells: &mut BTreeMap<&'static str, Cell>,
    ) -> Result<(), postgres::Error> {
        let table = self.table;
        let name = &table.name;
        let tenant = &self.tenants().list[x];
        let user = tenant.user.clone();
        // The verifier's organizations have one member each.
        let members: BTreeSet<String> =
            self.tenants().list.iter().filter(|t| t.org == tenant.org).map(|t| t.user.clone()).collect();
        let context = Some(tenant.context.clone());
        let context = context.as_deref();
        let me = format!("{} acting for {} as user {user}", self.role, self.tenants().describe(x));
        let Some(column) = table.identity.as_ref().map(|c| quote_ident(c)) else { return Ok(()) };
        // Other users' rows first, then the user's own (which the application's triggers or
        // constraints may guard, like a cascade to the last owner's membership).
        let others_only = format!("WHERE t.{column}::text IS DISTINCT FROM {}", literal(&user));
        for (command, sql) in [
            ("select", format!("SELECT t.{column}::text FROM {name} t LIMIT 100000")),
            ("update", format!("UPDATE {name} t SET {column} = t.{column} {others_only} RETURNING t.{column}::text")),
            ("delete", format!("DELETE FROM {name} t {others_only} RETURNING t.{column}::text")),
        ] {
            let cell = cells.get_mut(command).unwrap();
            match as_role(tx, self.role, context, &sql)? {
                Err(e) if is_denied(&e) => {
                    cell.reach.insert("denied");
                }
                Err(e) => cell.unverified.push(format!("{me}: {e}")),
                Ok(rows) => {
                    let mut others = 0;
                    for id in rows.rows.iter().map(|r| r.first().cloned().flatten().unwrap_or_default()) {
                        if id == user || (command == "select" && members.contains(&id)) {
                            cell.reach.insert("own");
                        } else {
                            others += 1;
                        }
                    }
                    if others > 0 {
                        cell.leaks.push(format!("{me}: {command} reached {others} row(s) of other users"));
                    }
                    if command == "select"
                        && !rows.rows.iter().any(|r| r.first().cloned().flatten() == Some(user.clone()))
                    {
                        cell.unverified.push(format!(
                            "{me} did not read its own row: its legitimate access does not work, so no other check of it proves anything"
                        ));
                    }
                    if command != "select" {
                        let own = format!("WHERE t.{column}::text = {}", literal(&user));
                        let sql = if command == "update" {
                            format!("UPDATE {name} t SET {column} = t.{column} {own}")
                        } else {
                            format!("DELETE FROM {name} t {own}")
                        };
                        own_outcome(cell, &me, as_role(tx, self.role, context, &sql)?);
                    }
                    if cell.reach.is_empty() {
                        cell.reach.insert("none");
                    }
                }
            }
        }
        // INSERT: a row for another user is refused.
        let cell = cells.get_mut("insert").unwrap();
        let id_type = table.identity.as_deref().and_then(|c| table.column(c)).map(|c| c.sql_type.clone());
        let mut row = Row::new(None, x);
        if let (Some(c), Some(t)) = (&table.identity, id_type) {
            let value = if crate::model::TenantKey::of_type(&t) == Some(crate::model::TenantKey::Uuid) {
                format!("gen_random_uuid()::{t}")
            } else {
                format!("{}::{t}", literal(&format!("tenancy-verify-intruder-{x}")))
            };
            row.given.insert(c.clone(), value);
        }
        match self.writer.insert_sql(table, &row) {
            Err(e) => cell.unverified.push(e),
            Ok(sql) => match as_role(tx, self.role, context, &sql)? {
                Ok(_) => cell.leaks.push(format!("{me} inserted a row for another user")),
                Err(_) => {
                    cell.reach.insert("denied");
                }
            },
        }
        Ok(())
    }

    /// Without a context: no rows of a tenant, child or identity table are visible and nothing
    /// is written.
    pub fn without_context(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        cell: &mut Cell,
    ) -> Result<(), postgres::Error> {
        let table = self.table;
        let role = self.role;
        if table.kind == Kind::Global {
            cell.reach.insert("closed");
            return Ok(());
        }
        let name = &table.name;
        // Global rows are every tenant's, and no tenant's: readable without a context too.
        let filter =
            if table.global_rows { format!(" WHERE {} IS NOT NULL", table.owner_sql()) } else { String::new() };
        let seen = as_role(tx, role, None, &format!("SELECT count(*)::text FROM {name} t{filter}"))?;
        if let Ok(seen) = seen {
            let n: u64 = seen.get(0, 0).and_then(|n| n.parse().ok()).unwrap_or(0);
            if n > 0 {
                cell.leaks.push(format!("{role} without a context sees {n} row(s)"));
            }
        }
        let owner = self.tenants().owner(table, 0).map(str::to_string);
        if let Ok(sql) = self.writer.insert_sql(table, &Row::new(owner.as_deref(), 0)) {
            if as_role(tx, role, None, &sql)?.is_ok() {
                cell.leaks.push(format!("{role} without a context inserted a row"));
            }
        }
        if let Some(touch) = table.touch_column().map(|c| quote_ident(&c)) {
            for (what, sql) in [
                ("updated", format!("UPDATE {name} t SET {touch} = t.{touch}")),
                ("deleted", format!("DELETE FROM {name}")),
            ] {
                if let Ok(done) = as_role(tx, role, None, &sql)? {
                    let n = done.processed;
                    if n > 0 {
                        cell.leaks.push(format!("{role} without a context {what} {n} row(s)"));
                    }
                }
            }
        }
        if cell.leaks.is_empty() {
            cell.reach.insert("closed");
        }
        Ok(())
    }
}

/// Notes what a command on the tenant's own rows did: `own` when it changed some, `denied` when
/// privileges or policies refused it or it changed none, `refused` (with the reason, in
/// `notes`) when anything else refused it: the application's triggers, its constraints, or a
/// row the verifier could not make valid.
/// Row addresses as an SQL list of `tid`s.
fn tids(ctids: &[String]) -> String {
    ctids.iter().map(|c| format!("{}::tid", literal(c))).collect::<Vec<_>>().join(", ")
}

fn own_outcome(cell: &mut Cell, me: &str, result: Result<super::Outcome, String>) {
    match result {
        Ok(o) if o.processed > 0 => {
            cell.reach.insert("own");
        }
        Err(e) if !e.ends_with("(42501)") => {
            cell.reach.insert("refused");
            cell.notes.push(format!("{me}, on its own rows: {e}"));
        }
        _ => {
            cell.reach.insert("denied");
        }
    }
}

/// Sorts the rows a command reached, each (key, tenant), into the tenant's own, global ones
/// (NULL tenant, when `global_ok`), those `allowed` names (shared, public) and leaks; notes the
/// first ones in `cell` and returns the number of leaks.
fn classify(
    rows: &[Vec<Option<String>>],
    own: &[String],
    global_ok: bool,
    cell: &mut Cell,
    allowed: impl Fn(&str) -> Option<&'static str>,
) -> usize {
    let mut leaked = 0;
    for r in rows {
        let key = r.first().cloned().flatten().unwrap_or_default();
        let owner = r.get(1).cloned().flatten();
        if owner.as_ref().is_some_and(|o| own.contains(o)) {
            cell.reach.insert("own");
        } else if owner.is_none() && global_ok {
            cell.reach.insert("global");
        } else if let Some(reach) = allowed(&key) {
            cell.reach.insert(reach);
        } else {
            leaked += 1;
        }
    }
    leaked
}
