//! Turns a [`Compiled`] policy set into SQL a DBA can read, review and re-run: deterministic order,
//! idempotent statements, one commented block per object, in units that `tenancy plan` applies or
//! skips together.
//!
//! Every context function in a policy is wrapped as `(SELECT tenancy.f())`, which PostgreSQL
//! plans as an InitPlan: evaluated once per statement, not once per row, and the tenant column
//! comparison stays indexable.

use crate::hardening;
use crate::model::{
    Compiled, CompiledKind, CompiledLookup, CompiledRule, CompiledTable, Level, MembershipsSync, OrganizationsSync,
    ProjectMembershipsSync, ProjectsSync, Reference, Sharing, SyncMaps, TenantKey, UserReference,
};
use crate::policy::Command;
use crate::schema::{quote_ident, QualifiedName};
use std::fmt::Write;

/// Names of the policies we own on each table; other policies are left alone.
pub fn policy_name(command: Command) -> String {
    format!("tenancy_{}", command.key())
}

fn role_list(roles: &[String]) -> String {
    roles.iter().map(|r| quote_ident(r)).collect::<Vec<_>>().join(", ")
}

/// The row predicate for a tenant table command: every part of its rule, each context call
/// wrapped to run once per statement. On a shareable table, SELECT also reaches rows shared with
/// the current organization and public rows, and UPDATE rows shared with it for writing.
fn predicate(
    table: &QualifiedName,
    (column, key, level): (&str, TenantKey, Option<Level>),
    rule: &CompiledRule,
    sharing: Option<&Sharing>,
    command: Command,
    null_rows: NullRows,
) -> String {
    // `tenancy.current_org()` without a sub-SELECT of its own: the extension's planner hook runs
    // it once per statement (a parameter set when the statement starts), and a policy without a
    // sublink keeps PostgreSQL from walking the statement again at every reuse of its plan. The
    // project readers (project-level tables) are taken out of plans the same way.
    let own = format!("{} = {}", quote_ident(column), key.reader_at(level));
    // NULL-keyed rows are global: every organization reads them (under a context), nobody
    // writes them but DBAs.
    let global = format!("({} IS NULL AND tenancy.current_org() IS NOT NULL)", quote_ident(column));
    let global_rows = matches!(null_rows, NullRows::Global);
    let reach = match (sharing, command) {
        (None, Command::Select) if global_rows => format!("({own}\n        OR {global})"),
        (Some(sharing), Command::Select) => {
            let mut arms = vec![own];
            if global_rows {
                arms.push(global);
            }
            if let Some(v) = &sharing.visibility_column {
                arms.push(format!("({} = 'public' AND tenancy.current_org() IS NOT NULL)", quote_ident(v)));
            }
            arms.push(shared_arm(table, column, sharing, false));
            format!("({})", arms.join("\n        OR "))
        }
        (Some(sharing), Command::Update) => format!("({own}\n        OR {})", shared_arm(table, column, sharing, true)),
        _ => own,
    };
    let mut parts = vec![reach];
    parts.extend(rule_parts(rule, level));
    let own_rows = parts.join(" AND ");
    match null_rows {
        // A user's own rows: reached by that user, for every command, in any organization's
        // context or a user-only one; never another user's. The role rule is the organization's,
        // so it does not apply to them.
        NullRows::User(user, data_type) => {
            let user = if data_type == "text" { quote_ident(user) } else { format!("{}::text", quote_ident(user)) };
            format!(
                "(({own_rows})\n        OR ({} IS NULL AND {user} = (SELECT tenancy.current_user_id())))",
                quote_ident(column)
            )
        }
        NullRows::Global | NullRows::None => own_rows,
    }
}

/// On a `user_rows` table, a row never changes between an organization's and a user's: the
/// policies see each row's before and after apart, so without this a member could carry an
/// organization's row out as their own (NULL tenant column), then into another organization.
/// The table's owner and DBAs may (migrations). One trigger function per schema, told the
/// tenant column by its argument.
fn user_rows_stay(table: &QualifiedName, column: &str, user_rows: bool) -> Vec<String> {
    let name = table.to_string();
    let mut unit = vec![format!("DROP TRIGGER IF EXISTS tenancy_user_rows_stay ON {name};")];
    if !user_rows {
        return unit;
    }
    let f = format!("{}.tenancy_user_rows_stay", quote_ident(&table.schema));
    unit.push(format!(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger\n    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
BEGIN\n\
    IF ((to_jsonb(OLD) ->> TG_ARGV[0]) IS NULL) <> ((to_jsonb(NEW) ->> TG_ARGV[0]) IS NULL)\n\
       AND NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')\n\
       AND NOT pg_has_role(current_user, 'tenancy_admin', 'USAGE') THEN\n\
        RAISE EXCEPTION 'a row of %.% cannot move between an organization and a user', TG_TABLE_SCHEMA, TG_TABLE_NAME\n\
            USING ERRCODE = '42501', DETAIL = format('UPDATE would change %I between NULL (a user''s row) and an organization.', TG_ARGV[0]),\n\
                  HINT = 'Insert a new row instead.';\n\
    END IF;\n\
    RETURN NEW;\n\
END\n$tenancy$;"
    ));
    unit.push(format!("REVOKE ALL ON FUNCTION {f}() FROM PUBLIC;"));
    unit.push(format!(
        "CREATE TRIGGER tenancy_user_rows_stay BEFORE UPDATE OF {} ON {name}\n    FOR EACH ROW EXECUTE FUNCTION {f}({});",
        quote_ident(column),
        literal(column)
    ));
    unit
}

/// An identity table's user column as text, to compare with `tenancy.current_user_id()` and the
/// members' user ids.
fn user_text(this: &str, column: &str, text: bool) -> String {
    let c = format!("{this}.{}", quote_ident(column));
    if text {
        c
    } else {
        format!("{c}::text")
    }
}

/// The row predicate of an identity table: the user's own row, for every command; for SELECT
/// (with `co_members`) also the rows of the current organization's members (one probe of
/// `tenancy.members`' primary key per row, which the application roles may read for their own
/// organization only).
fn identity_predicate(table: &QualifiedName, column: &str, text: bool, co_members: bool, command: Command) -> String {
    let user = user_text(&quote_ident(&table.name), column, text);
    let own = format!("{user} = (SELECT tenancy.current_user_id())");
    if command == Command::Select && co_members {
        format!(
            "({own}\n        OR EXISTS (SELECT FROM tenancy.members m WHERE m.org_id = (SELECT tenancy.current_org()) AND m.user_id = {user}))"
        )
    } else {
        own
    }
}

/// The policies of an identity table (or a partition of it, `this`), one unit per command.
fn identity_policies(
    table: &CompiledTable,
    this: &QualifiedName,
    column: &str,
    text: bool,
    co_members: bool,
) -> Vec<Vec<String>> {
    let name = this.to_string();
    let mut units = Vec::new();
    for command in Command::ALL {
        let mut unit = vec![format!("DROP POLICY IF EXISTS {} ON {name};", policy_name(command))];
        let roles = table.roles_for(command);
        if !roles.is_empty() {
            let p = identity_predicate(this, column, text, co_members, command);
            unit.push(policy_sql(&name, command, &roles, &p, &p));
            if command == Command::Select {
                // lint tells identity tables from tenant tables by this.
                unit.push(format!(
                    "COMMENT ON POLICY {} ON {name} IS {};",
                    policy_name(command),
                    literal(&format!("identity: {column}"))
                ));
            }
        }
        units.push(unit);
    }
    units
}

/// The trigger that checks a governed table's foreign keys to identity tables as the writer
/// ([`UserReference`]): a changed value must name a user the writer sees, else the foreign key's
/// own error, word for word. The table's owner and DBAs are not checked (migrations, backfills).
/// One trigger function per schema; each reference is six arguments.
fn user_references(table: &QualifiedName, references: &[UserReference]) -> Vec<String> {
    let name = table.to_string();
    let mut unit = vec![format!("DROP TRIGGER IF EXISTS tenancy_user_references ON {name};")];
    if references.is_empty() {
        return unit;
    }
    let f = format!("{}.tenancy_user_references", quote_ident(&table.schema));
    unit.push(format!(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger\n    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
DECLARE\n\
    new_row jsonb;\n\
    old_row jsonb;\n\
    value text;\n\
    seen boolean;\n\
BEGIN\n\
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')\n\
       OR pg_has_role(current_user, 'tenancy_admin', 'USAGE') THEN\n\
        RETURN NEW;\n\
    END IF;\n\
    new_row := to_jsonb(NEW);\n\
    IF TG_OP = 'UPDATE' THEN\n\
        old_row := to_jsonb(OLD);\n\
    END IF;\n\
    FOR i IN 0 .. TG_NARGS - 1 BY 6 LOOP\n\
        value := new_row ->> TG_ARGV[i];\n\
        CONTINUE WHEN value IS NULL OR value IS NOT DISTINCT FROM old_row ->> TG_ARGV[i];\n\
        EXECUTE format('SELECT EXISTS (SELECT FROM %s t WHERE t.%I = $1::%s)', TG_ARGV[i + 2], TG_ARGV[i + 3], TG_ARGV[i + 4])\n\
            INTO seen USING value;\n\
        IF NOT seen THEN\n\
            RAISE EXCEPTION 'insert or update on table \"%\" violates foreign key constraint \"%\"', TG_TABLE_NAME, TG_ARGV[i + 1]\n\
                USING ERRCODE = '23503', CONSTRAINT = TG_ARGV[i + 1], TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,\n\
                      DETAIL = format('Key (%s)=(%s) is not present in table \"%s\".', TG_ARGV[i], value, TG_ARGV[i + 5]);\n\
        END IF;\n\
    END LOOP;\n\
    RETURN NEW;\n\
END\n$tenancy$;"
    ));
    unit.push(format!("REVOKE ALL ON FUNCTION {f}() FROM PUBLIC;"));
    let columns: Vec<String> = references.iter().map(|r| quote_ident(&r.column)).collect();
    let args: Vec<String> = references
        .iter()
        .flat_map(|r| {
            [
                literal(&r.column),
                literal(&r.constraint),
                literal(&r.target.to_string()),
                literal(&r.target_column),
                literal(&r.target_type),
                literal(&r.target.name),
            ]
        })
        .collect();
    unit.push(format!(
        "CREATE TRIGGER tenancy_user_references BEFORE INSERT OR UPDATE OF {} ON {name}\n    FOR EACH ROW EXECUTE FUNCTION {f}({});",
        columns.join(", "),
        args.join(", ")
    ));
    unit
}

/// What the NULL-keyed rows of a tenant table are.
#[derive(Clone, Copy)]
enum NullRows<'a> {
    /// None: the tenant column is NOT NULL (or its NULL rows are the DBA's alone).
    None,
    /// Global rows (`global_rows`): every organization reads them.
    Global,
    /// A user's rows (`user_rows`): the user column and its type.
    User(&'a str, &'a str),
}

impl<'a> NullRows<'a> {
    fn of(global_rows: bool, user_rows: &'a Option<(String, String)>) -> Self {
        match (global_rows, user_rows) {
            (_, Some((column, data_type))) => NullRows::User(column, data_type),
            (true, None) => NullRows::Global,
            (false, None) => NullRows::None,
        }
    }
}

/// The parts of a command's rule besides where the row belongs: role, permission, owner, check.
/// Organization-level tables check the organization role (`has_org_role`): a project's override,
/// which may be higher, never raises rights over the organization's rows.
fn rule_parts(rule: &CompiledRule, level: Option<Level>) -> Vec<String> {
    let (has_role, has_permission) = match level {
        Some(Level::Organization) => ("tenancy.has_org_role", "tenancy.has_org_permission"),
        None | Some(Level::Project) => ("tenancy.has_role", "tenancy.has_permission"),
    };
    let mut parts = Vec::new();
    if !rule.role.is_lowest() {
        parts.push(format!("(SELECT {has_role}({}))", literal(&rule.role.0)));
    }
    if let Some(p) = &rule.permission {
        parts.push(format!("(SELECT {has_permission}({}))", literal(p)));
    }
    if let Some(o) = &rule.owner {
        parts.push(format!("{} = (SELECT tenancy.current_user_id())", quote_ident(o)));
    }
    if let Some(c) = &rule.check {
        parts.push(format!("({c})"));
    }
    parts
}

/// The row predicate of a table without a tenant column: its parent row (by the foreign key) is
/// the current organization's (one probe of the parent's key index), and the rule's parts hold. A
/// row whose key is NULL belongs to no organization: nobody sees it. With a parent that has global
/// rows, their children are global too (read by every organization).
fn child_predicate(table: &QualifiedName, parent: &Reference, rule: &CompiledRule, command: Command) -> String {
    let this = quote_ident(&table.name);
    let matches: Vec<String> = parent
        .columns
        .iter()
        .zip(&parent.target_columns)
        .map(|(c, t)| format!("t.{} = {this}.{}", quote_ident(t), quote_ident(c)))
        .collect();
    let tenant = quote_ident(&parent.target_tenant);
    let reader = parent.target_key.reader_at(parent.target_level);
    let owned = if parent.target_global && command == Command::Select {
        format!(
            "(t.{tenant} = (SELECT {reader}) OR (t.{tenant} IS NULL AND (SELECT tenancy.current_org()) IS NOT NULL))"
        )
    } else {
        format!("t.{tenant} = (SELECT {reader})")
    };
    let mut parts =
        vec![format!("EXISTS (SELECT FROM {} t WHERE {} AND {owned})", parent.target, matches.join(" AND "))];
    parts.extend(rule_parts(rule, parent.target_level));
    parts.join(" AND ")
}

/// The roles a command's policy is for and its rule; None when no role may run it.
fn allowed<'a>(
    compiled: &CompiledTable,
    commands: &'a std::collections::BTreeMap<Command, Option<CompiledRule>>,
    command: Command,
) -> Option<(Vec<String>, &'a CompiledRule)> {
    let roles = compiled.roles_for(command);
    let rule = commands.get(&command)?.as_ref()?;
    (!roles.is_empty()).then_some((roles, rule))
}

/// The CREATE POLICY of one command of a table without a tenant column (None: not allowed).
fn child_policy(
    name: &str,
    table: &QualifiedName,
    compiled: &CompiledTable,
    (parent, references): (&Reference, &[Reference]),
    commands: &std::collections::BTreeMap<Command, Option<CompiledRule>>,
    command: Command,
) -> Option<String> {
    let (roles, rule) = allowed(compiled, commands, command)?;
    let p = child_predicate(table, parent, rule, command);
    let (checked, helpers) = with_references(compiled, table, &p, references, command);
    Some(helpers + &policy_sql(name, command, &roles, &p, &checked))
}

/// `predicate` and the check of each [`Reference`] (the rows a new row points at are the current
/// organization's), with the functions a self-reference needs ([`self_reference`]).
fn with_references(
    compiled: &CompiledTable,
    this: &QualifiedName,
    predicate: &str,
    references: &[Reference],
    command: Command,
) -> (String, String) {
    let mut checked = predicate.to_string();
    let mut helpers = String::new();
    for r in references {
        checked.push_str("\n        AND ");
        match self_reference(&compiled.name, r) {
            Some((function, sql)) => {
                let column = quote_ident(&r.columns[0]);
                let this = quote_ident(&this.name);
                checked.push_str(&format!("({this}.{column} IS NULL OR {function}({this}.{column}))"));
                if matches!(command, Command::Insert | Command::Update) {
                    helpers.push_str(&sql);
                    helpers.push('\n');
                }
            }
            None => checked.push_str(&reference_check(this, r)),
        }
    }
    (checked, helpers)
}

/// The CREATE POLICY of one command of a tenant table (`this` names the table, or a partition of
/// it, in the expressions; None: not allowed). New rows may only point at rows of the current
/// organization ([`reference_check`]).
#[allow(clippy::too_many_arguments)]
fn tenant_policy(
    name: &str,
    this: &QualifiedName,
    compiled: &CompiledTable,
    tenant: (&str, TenantKey, Option<Level>),
    commands: &std::collections::BTreeMap<Command, Option<CompiledRule>>,
    (sharing, org_admins): (Option<&Sharing>, Option<&OrgAdmins>),
    references: &[Reference],
    null_rows: NullRows,
    command: Command,
) -> Option<String> {
    let (roles, rule) = allowed(compiled, commands, command)?;
    let mut p = predicate(this, tenant, rule, sharing, command, null_rows);
    if let Some(a) = org_admins {
        p = format!("(({p})\n        OR {})", org_admins_arm(a, rule));
    }
    let (checked, helpers) = with_references(compiled, this, &p, references, command);
    Some(helpers + &policy_sql(name, command, &roles, &p, &checked))
}

/// The application's project memberships table (`[project_memberships]`), which its
/// organization's admins manage from the organization's context too (an organization settings
/// page), besides the project's own admins in the project's context.
pub(crate) struct OrgAdmins<'a> {
    pub projects: &'a crate::model::ProjectsSync,
    /// The memberships' column holding the project's id.
    pub column: &'a str,
}

/// The organization's arm of a project membership's policy: in the organization's context (no
/// project), a row of one of the organization's projects (the application's projects table, read
/// under its own policies), for members whose organization role is the command's, and at least
/// admin. The projects are an array computed once per statement, so that both arms are index
/// conditions on the project column (a BitmapOr), never a scan of every organization's rows.
fn org_admins_arm(a: &OrgAdmins, rule: &CompiledRule) -> String {
    let role = if rule.role.0 == crate::policy::MEMBER_ROLES[0] { rule.role.0.as_str() } else { "admin" };
    let p = a.projects;
    // The rule's other parts (a permission, an owner column, a check) hold here too, with the
    // organization's role and permissions.
    let lowest = crate::policy::MEMBER_ROLES[crate::policy::MEMBER_ROLES.len() - 1];
    let rest = rule_parts(
        &CompiledRule { role: crate::model::MinRole(lowest.into()), ..rule.clone() },
        Some(Level::Organization),
    );
    let arm = format!(
        "{} = ANY (ARRAY(SELECT p.{} FROM {} p WHERE p.{} = (SELECT {})\n            AND (SELECT tenancy.current_project()) IS NULL AND (SELECT tenancy.has_org_role({}))))",
        quote_ident(a.column),
        quote_ident(&p.id),
        p.table,
        quote_ident(&p.organization),
        p.organization_key.reader_at(Some(Level::Organization)),
        literal(role)
    );
    if rest.is_empty() {
        arm
    } else {
        format!("({arm} AND {})", rest.join(" AND "))
    }
}

/// A one-column foreign key of `table` to itself (a key created by another key, a comment
/// replying to another): its check cannot read the table inside the table's own policy
/// (PostgreSQL refuses a policy that reads its own relation: "infinite recursion detected"), so
/// it reads it in a function of its own, which PostgreSQL plans as a query of its own, as the
/// writer and under the table's policies. Returns the function's name and its CREATE.
fn self_reference(table: &QualifiedName, r: &Reference) -> Option<(String, String)> {
    // The table itself, or (a foreign key to one of its own `parent` tables' rows) through
    // itself: the check of its child row reads the table again.
    let reads_itself = r.target == *table || r.via.as_ref().is_some_and(|v| v.target == *table);
    if !reads_itself || r.columns.len() != 1 {
        return None;
    }
    let function = format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&fit(&format!("tenancy_refers_{}_{}", table.name, r.columns[0]), ""))
    );
    let owned = referenced_row_owned(r);
    let sql = format!(
        "CREATE OR REPLACE FUNCTION {function}(v anyelement) RETURNS boolean\n    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
BEGIN\n\
    -- The row `v` names exists in the current organization, read as the writer.\n\
    RETURN EXISTS (SELECT FROM {} t WHERE t.{} = v AND {owned});\n\
END\n$tenancy$;",
        r.target,
        quote_ident(&r.target_columns[0])
    );
    Some((function, sql))
}

/// `CREATE POLICY tenancy_<command> ON name ... TO roles`, with `using` for the rows a command
/// reaches and `check` for the rows it writes.
fn policy_sql(name: &str, command: Command, roles: &[String], using: &str, check: &str) -> String {
    let clause = match command {
        Command::Select | Command::Delete => format!("USING ({using})"),
        Command::Insert => format!("WITH CHECK ({check})"),
        Command::Update => format!("USING ({using})\n    WITH CHECK ({check})"),
    };
    format!(
        "CREATE POLICY {} ON {name} AS PERMISSIVE FOR {} TO {}\n    {clause};",
        policy_name(command),
        command.sql(),
        role_list(roles)
    )
}

/// `ALTER TABLE ... SET DEFAULT tenancy.current_user_id()` for each owner column.
fn owner_defaults(name: &str, owner_columns: &[String]) -> Vec<Vec<String>> {
    owner_columns
        .iter()
        .map(|owner| {
            vec![format!(
                "ALTER TABLE {name} ALTER COLUMN {} SET DEFAULT tenancy.current_user_id();",
                quote_ident(owner)
            )]
        })
        .collect()
}

/// `CREATE INDEX IF NOT EXISTS` for each column list, named by `names`.
fn index_units(names: &mut IndexNames, table: &QualifiedName, name: &str, indexes: &[Vec<String>]) -> Vec<Vec<String>> {
    indexes
        .iter()
        .map(|columns| {
            let index = quote_ident(&names.next(table, &columns.join("_")));
            let list = columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
            vec![format!("CREATE INDEX IF NOT EXISTS {index} ON {name} ({list});")]
        })
        .collect()
}

/// What makes a [`Reference`] safe: the referenced row exists in the current
/// organization (or the foreign key's columns hold a NULL, which references nothing). One probe
/// of the target's unique index on its key; the target's own policies apply too. Another
/// organization's key fails exactly as a missing one does, before the foreign key is checked.
fn reference_check(table: &QualifiedName, r: &Reference) -> String {
    let this = quote_ident(&table.name);
    let nulls: Vec<String> = r.columns.iter().map(|c| format!("{this}.{} IS NULL", quote_ident(c))).collect();
    let matches: Vec<String> = r
        .columns
        .iter()
        .zip(&r.target_columns)
        .map(|(c, t)| format!("t.{} = {this}.{}", quote_ident(t), quote_ident(c)))
        .collect();
    format!(
        "({} OR EXISTS (SELECT FROM {} t WHERE {} AND {}))",
        nulls.join(" OR "),
        r.target,
        matches.join(" AND "),
        referenced_row_owned(r)
    )
}

/// That the referenced row `t` of [`Reference`] `r` is the current organization's (or project's)
/// (or, for a target with global rows, global). The target's level decides the reader: an
/// organization-level row is referenced from any project of the organization, a project-level
/// one only from its project.
fn referenced_row_owned(r: &Reference) -> String {
    let tenant = quote_ident(&r.target_tenant);
    let reader = r.target_key.reader_at(r.target_level);
    let (owner, lookup) = match &r.via {
        // A child row: its parent row `p` is the organization's.
        Some(via) => ("p", {
            let matches: Vec<String> = via
                .columns
                .iter()
                .zip(&via.target_columns)
                .map(|(c, tc)| format!("p.{} = t.{}", quote_ident(tc), quote_ident(c)))
                .collect();
            Some((via.target.to_string(), matches.join(" AND ")))
        }),
        None => ("t", None),
    };
    let owned = if r.target_global {
        format!("({owner}.{tenant} = (SELECT {reader}) OR {owner}.{tenant} IS NULL)")
    } else {
        format!("{owner}.{tenant} = (SELECT {reader})")
    };
    match lookup {
        Some((target, matches)) => format!("EXISTS (SELECT FROM {target} p WHERE {matches} AND {owned})"),
        None => owned,
    }
}

/// Rows shared with the current organization (for writing, with `write`). The array is computed
/// once per statement and drives an index scan on the id column; the correlated check then
/// makes sure the row's organization is the one that shared it. It runs only for rows whose id
/// is in the array, so it is one index probe per such row: `OFFSET 0` keeps the planner from
/// hashing every share of the organization instead, which costs more than the probes it saves
/// (measured: about 3.5 µs per statement on a lookup, see bench/rls.sh).
fn shared_arm(table: &QualifiedName, column: &str, sharing: &Sharing, write: bool) -> String {
    let shares = format!(
        "FROM tenancy.received_shares s WHERE s.relation = {}::regclass{}",
        literal(&table.to_string()),
        if write { " AND s.can_write" } else { "" }
    );
    let this = quote_ident(&table.name);
    let id = quote_ident(&sharing.id_column);
    format!(
        "({id} = ANY (ARRAY(SELECT s.row_id::{} {shares}))\n            AND EXISTS (SELECT {shares} AND s.owner_org = {this}.{} AND s.row_id = {this}.{id}::text OFFSET 0))",
        sharing.id_type,
        quote_ident(column)
    )
}

/// What a block of statements changes, so `tenancy plan` can tell whether it changes anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// The database as a whole: role memberships and what PUBLIC may use.
    Database,
    Schema(String),
    /// A table or a view, as SQL (`app.projects`).
    Relation(String),
    /// The application's organizations and memberships kept in `tenancy.organizations` and
    /// `tenancy.members`: the sync functions, their triggers and the rows.
    Sync,
}

/// Statements about one object, in units that are applied (or skipped) together: a policy's
/// `DROP POLICY IF EXISTS` and `CREATE POLICY`, a table's `REVOKE` and `GRANT`s, one `ALTER`.
#[derive(Debug, Clone)]
pub struct Block {
    pub header: Option<String>,
    pub object: Object,
    pub units: Vec<Vec<String>>,
}

/// The whole script: `BEGIN`, a check that the extension is installed, each table, `COMMIT`.
pub fn script(compiled: &Compiled, origin: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "-- Generated by tenancy {} from {origin}.", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "-- Do not edit: change the policy files and compile again.");
    out.push_str("BEGIN;\n\n");
    out.push_str(
        "DO $$\nBEGIN\n    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_tenancy') THEN\n        RAISE EXCEPTION 'the pg_tenancy extension is not installed in this database'\n            USING HINT = 'Run CREATE EXTENSION pg_tenancy as a superuser first.';\n    END IF;\nEND\n$$;\n\n",
    );
    out.push_str(&render(&blocks(compiled)));
    out.push_str("COMMIT;\n");
    out
}

/// Renders blocks as SQL: each block's header, its statements, a blank line.
pub fn render(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        if let Some(h) = &block.header {
            let _ = writeln!(out, "{h}");
        }
        for unit in &block.units {
            for statement in unit {
                let _ = writeln!(out, "{statement}");
            }
        }
        out.push('\n');
    }
    out
}

/// Every statement, grouped by object, in a deterministic order.
pub fn blocks(compiled: &Compiled) -> Vec<Block> {
    let mut out = Vec::new();
    let all_roles = compiled.app_roles();
    if !all_roles.is_empty() {
        out.push(database_block(compiled, &all_roles));
    }
    if !all_roles.is_empty() {
        for schema in &compiled.schemas {
            out.push(Block {
                header: None,
                object: Object::Schema(schema.clone()),
                units: vec![vec![format!(
                    "GRANT USAGE ON SCHEMA {} TO {};",
                    quote_ident(schema),
                    role_list(&all_roles)
                )]],
            });
        }
    }
    let mut names = IndexNames::new(compiled);
    for table in &compiled.tables {
        // The quotas and metrics the policies count from this table; any other goes.
        let counted: Vec<&str> = compiled
            .quotas
            .iter()
            .chain(&compiled.usage)
            .filter(|q| q.table == table.name)
            .map(|q| q.resource.as_str())
            .collect();
        // The application's organizations table is keyed by the organization itself: its ids
        // come from the application (or the DBA), never from the current context.
        let org_root = compiled.sync.organizations.as_ref().is_some_and(|o| o.table == table.name);
        // The application's project memberships: its organization's admins manage them from the
        // organization's context too.
        let org_admins = match (&compiled.sync.project_memberships, &compiled.sync.projects) {
            // Only on the project-level table whose tenant column is the project column: the arm
            // replaces the tenant predicate, so it must say the same thing in another way.
            (Some(m), Some(projects))
                if m.table == table.name
                    && matches!(&table.kind, CompiledKind::Tenant { column, level: Some(Level::Project), .. }
                        if *column == m.project) =>
            {
                Some(OrgAdmins { projects, column: &m.project })
            }
            _ => None,
        };
        out.push(table_block(table, &all_roles, &counted, &mut names, (org_root, org_admins.as_ref())));
        for partition in &table.partitions {
            out.push(partition_block(table, partition, &all_roles));
        }
    }
    out.extend(sync_blocks(&compiled.sync));
    if let (Some(p), Some(o)) = (&compiled.sync.projects, &compiled.sync.organizations) {
        out.push(projects_block(p, o));
    }
    if let Some(m) = &compiled.sync.project_memberships {
        out.push(project_memberships_block(m));
    }
    for lookup in &compiled.lookups {
        out.push(lookup_block(lookup, &all_roles));
    }
    for view in &compiled.views {
        let mut units = vec![vec![format!("ALTER VIEW {view} SET (security_invoker = true);")]];
        if !all_roles.is_empty() {
            units.push(vec![format!("GRANT SELECT ON {view} TO {};", role_list(&all_roles))]);
        }
        out.push(Block {
            header: Some(format!(
                "-- {view}: a view over governed tables runs with the caller's rights, so their policies apply"
            )),
            object: Object::Relation(view.to_string()),
            units,
        });
    }
    for (view, reason) in &compiled.materialized_views {
        // Recorded for lint with the exceptions to row-level security's reach that the policy
        // files declare: a unique key there names its columns, a materialized view none.
        out.push(Block {
            header: Some(format!(
                "-- {view}: a materialized view the application roles read whole, as the policy files declare"
            )),
            object: Object::Relation(view.to_string()),
            units: vec![vec![format!(
                "INSERT INTO tenancy.unique_waivers (relation, columns, reason) VALUES ({}, '', {})\n    ON CONFLICT (relation, columns) DO UPDATE SET reason = EXCLUDED.reason WHERE unique_waivers.reason <> EXCLUDED.reason;",
                literal(&view.to_string()),
                literal(reason)
            )]],
        });
    }
    for q in &compiled.quotas {
        let sum = q.sum_column.as_ref().map_or(String::new(), |c| format!(", sum_column => {}", literal(c)));
        out.push(Block {
            header: Some(format!("-- quota `{}` counted from {} (exact under concurrency)", q.resource, q.table)),
            object: Object::Relation(q.table.to_string()),
            units: vec![vec![format!(
                "SELECT tenancy.enable_quota({}, {}, {}{sum});",
                literal(&q.resource),
                literal(&q.table.to_string()),
                literal(&q.tenant_column)
            )]],
        });
    }
    for u in &compiled.usage {
        let sum = u.sum_column.as_ref().map_or(String::new(), |c| format!(", amount_column => {}", literal(c)));
        out.push(Block {
            header: Some(format!(
                "-- usage `{}` recorded from {} as rows are inserted (no extra statement)",
                u.resource, u.table
            )),
            object: Object::Relation(u.table.to_string()),
            units: vec![vec![format!(
                "SELECT tenancy.enable_usage({}, {}, {}{sum});",
                literal(&u.resource),
                literal(&u.table.to_string()),
                literal(&u.tenant_column)
            )]],
        });
    }
    out
}

/// What the application roles may do besides using the governed tables (see
/// [`crate::hardening`]): the writing functions for read-write roles only; no temporary tables,
/// other sessions' activity, table statistics or large objects for any of them.
fn database_block(compiled: &Compiled, all_roles: &[String]) -> Block {
    let mut units = Vec::new();
    if !compiled.read_write.is_empty() {
        units.push(vec![hardening::grant_writer(&compiled.read_write)]);
    }
    for role in compiled.read_only.iter().filter(|r| !compiled.read_write.contains(r)) {
        units.push(hardening::read_only(role));
    }
    for role in all_roles {
        units.push(hardening::context_settings(
            role,
            compiled.token_only.contains(role),
            compiled.session.contains(role),
        ));
    }
    units.push(vec![hardening::revoke_temporary(all_roles)]);
    // Who may act as which service (tenancy.set_service_context()).
    let names: Vec<String> = compiled.services.iter().map(|(n, _, _)| literal(n)).collect();
    let mut services = Vec::new();
    for (name, role, roles) in &compiled.services {
        let roles: Vec<String> = roles.iter().map(|r| literal(r)).collect();
        services.push(format!(
            "INSERT INTO tenancy.services (name, member_role, db_roles) VALUES ({}, {}, ARRAY[{}]::name[])\n    ON CONFLICT (name) DO UPDATE SET member_role = EXCLUDED.member_role, db_roles = EXCLUDED.db_roles\n    WHERE (services.member_role, services.db_roles) IS DISTINCT FROM (EXCLUDED.member_role, EXCLUDED.db_roles);",
            literal(name),
            literal(role),
            roles.join(", ")
        ));
    }
    services.push(format!("DELETE FROM tenancy.services WHERE name <> ALL (ARRAY[{}]::text[]);", names.join(", ")));
    units.push(services);
    // New tables in these schemas are closed at once (the extension's event trigger).
    let schemas: Vec<String> = compiled.schemas.iter().map(|s| literal(s)).collect();
    units.push(vec![
        format!(
            "INSERT INTO tenancy.governed_schemas (schema_name) SELECT unnest(ARRAY[{}]::name[]) ON CONFLICT DO NOTHING;",
            schemas.join(", ")
        ),
        format!("DELETE FROM tenancy.governed_schemas WHERE schema_name <> ALL (ARRAY[{}]::name[]);", schemas.join(", ")),
    ]);
    units.push(vec![hardening::RESTRICT_STATISTICS.to_string()]);
    units.push(vec![hardening::REVOKE_LARGE_OBJECTS.to_string()]);
    Block {
        header: Some(
            "-- application roles: the writing functions (tenancy_writer) for read-write roles only, tenancy_reader\n\
             -- for read-only ones; how each starts a tenant context (signed tokens only? a session context?);\n\
             -- no temporary tables, other sessions' activity, table statistics or large objects (PUBLIC's\n\
             -- rights to them go; monitoring keeps the statistics through pg_read_all_stats)"
                .to_string(),
        ),
        object: Object::Database,
        units,
    }
}

/// The uuid of the organization whose application id is `value` (of key type `key`): the value
/// itself when it is a uuid, else `tenancy.org_key_id()` of its text.
fn org_id_of(value: &str, key: TenantKey) -> String {
    match key {
        TenantKey::Uuid => value.to_string(),
        TenantKey::Text | TenantKey::Integer => format!("tenancy.org_key_id({value}::text)"),
    }
}

/// What `tenancy.organizations` takes from application row `r`, as plain values (computed with
/// the rights of whoever writes the row): id, key (the application's id when it is not a uuid),
/// the slug the application gives (lowercased; the helper decides whether tenancy can use it),
/// name, and whether it is active.
fn organization_values(sync: &OrganizationsSync) -> String {
    let slug = sync.slug.as_ref().map_or("NULL::text".to_string(), |s| format!("lower(r.{}::text)", quote_ident(s)));
    let active = sync.active.as_ref().map_or("true".to_string(), |a| format!("coalesce(({a}), false)"));
    let id = format!("r.{}", quote_ident(&sync.id));
    let key = match sync.key {
        TenantKey::Uuid => "NULL::text".to_string(),
        TenantKey::Text | TenantKey::Integer => format!("{id}::text"),
    };
    format!(
        "{}, {key}, {slug}, nullif(btrim(left(r.{}::text, 200)), ''), {active}",
        org_id_of(&id, sync.key),
        quote_ident(&sync.name)
    )
}

/// Lets the owner of `table` and DBAs (`tenancy_admin`) run `function`: the sync writes for them
/// without the checks a tenant context's rights need.
fn grant_to_owner(function: &str, args: &str, table: &QualifiedName) -> String {
    format!(
        "DO $tenancy$ BEGIN EXECUTE format('GRANT EXECUTE ON FUNCTION {function}{args} TO %I, tenancy_admin', (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = {}::regclass)); END $tenancy$;",
        literal(&table.to_string())
    )
}

/// The member role of application membership row `r` (NULL: no membership).
fn member_role_expr(sync: &MembershipsSync) -> String {
    match &sync.role {
        None => literal(&sync.default_role),
        Some(column) if sync.roles.is_empty() => {
            let roles: Vec<String> = crate::policy::MEMBER_ROLES.iter().map(|r| literal(r)).collect();
            format!("CASE WHEN r.{c}::text IN ({}) THEN r.{c}::text END", roles.join(", "), c = quote_ident(column))
        }
        Some(column) => {
            let arms: Vec<String> = sync
                .roles
                .iter()
                .map(|(value, role)| format!("WHEN {} THEN {}", literal(value), literal(role)))
                .collect();
            format!("CASE r.{}::text {} END", quote_ident(column), arms.join(" "))
        }
    }
}

/// Whether application membership row `r` is a membership: active, with a member role and a user
/// id tenancy accepts.
fn membership_holds(sync: &MembershipsSync) -> String {
    let user = format!("r.{}::text", quote_ident(&sync.user));
    let mut parts = vec![
        format!("r.{} IS NOT NULL", quote_ident(&sync.organization)),
        format!("btrim({user}) <> '' AND octet_length({user}) <= 256 AND {user} NOT LIKE 'service:%'"),
        format!("({}) IS NOT NULL", member_role_expr(sync)),
    ];
    if let Some(a) = &sync.active {
        parts.push(format!("({a})"));
    }
    parts.join(" AND ")
}

/// The sync of `[organizations]` and `[memberships]`: backfills, then triggers that keep
/// `tenancy.organizations` and `tenancy.members` right as the application writes its own rows.
/// Organizations are copied as they are (row-level security on the application's table already
/// limits who writes which). Memberships written by an application role go through
/// `tenancy.add_member()`, `update_member()` and `remove_member()`, so the rights of that role's
/// context apply (only owners make owners, nobody removes the last owner); the table's owner
/// and DBAs (migrations, cascades) write `tenancy.members` directly.
fn sync_blocks(sync: &SyncMaps) -> Vec<Block> {
    let mut out = Vec::new();
    if let Some(o) = &sync.organizations {
        let t = &o.table;
        let schema = quote_ident(&t.schema);
        // With projects, the organization role (a project's override is not the organization's).
        let has_role = if sync.projects.is_some() { "tenancy.has_org_role" } else { "tenancy.has_role" };
        let f = format!("{schema}.tenancy_sync_organizations");
        let direct = format!("{schema}.tenancy_sync_organizations_direct");
        let checked = format!("{schema}.tenancy_sync_organizations_checked");
        let args = "(text, uuid, uuid, text, text, text, boolean)";
        // Before 0.5.0 the functions had no key argument.
        let drop_old = |f: &str| format!("DROP FUNCTION IF EXISTS {f}(text, uuid, uuid, text, text, boolean);");
        let id = quote_ident(&o.id);
        let old_id = org_id_of(&format!("OLD.{id}"), o.key);
        let values = organization_values(o);
        // Plain values only: nothing the table's owner defines (types, casts, operators) runs
        // with the definer's rights.
        let direct_fn = format!(
            "CREATE OR REPLACE FUNCTION {direct}(p_op text, p_old_id uuid, p_id uuid, p_key text, p_slug text, p_name text, p_active boolean) RETURNS void\n    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
    DELETE FROM tenancy.organizations WHERE id = p_old_id AND (p_op = 'DELETE' OR p_old_id IS DISTINCT FROM p_id);\n\
    INSERT INTO tenancy.organizations (id, key, slug, name, status)\n\
    SELECT p_id, p_key, s.slug, coalesce(p_name, s.slug), CASE WHEN p_active THEN 'active' ELSE 'suspended' END\n\
      FROM (SELECT CASE WHEN p_slug ~ '^[a-z0-9]([a-z0-9-]{{0,61}}[a-z0-9])?$'\n\
                         AND NOT EXISTS (SELECT FROM tenancy.organizations o WHERE o.slug = p_slug AND o.id <> p_id)\n\
                         AND (p_slug !~ '^org-[0-9a-f]{{32}}$' OR p_slug = 'org-' || replace(p_id::text, '-', ''))\n\
                        THEN p_slug ELSE 'org-' || replace(p_id::text, '-', '') END AS slug) s\n\
     WHERE p_op <> 'DELETE'\n\
    ON CONFLICT (id) DO UPDATE SET slug = EXCLUDED.slug, name = EXCLUDED.name, status = EXCLUDED.status, updated_at = now()\n\
     WHERE (organizations.slug, organizations.name, organizations.status) IS DISTINCT FROM (EXCLUDED.slug, EXCLUDED.name, EXCLUDED.status);\n$tenancy$;"
        );
        let checked_fn = format!(
            "CREATE OR REPLACE FUNCTION {checked}(p_op text, p_old_id uuid, p_id uuid, p_key text, p_slug text, p_name text, p_active boolean) RETURNS void\n    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
DECLARE\n\
    current_status text;\n\
    current_key text;\n\
BEGIN\n\
    -- Callable by any read-write application role, so it trusts no argument: it changes the\n\
    -- context's own organization only, which must exist and keep its id and key (row-level\n\
    -- security on the application's table let the row through on the same terms). Admins\n\
    -- rename it; owners delete, suspend or reactivate it. Organizations are created by DBAs or\n\
    -- with tenancy.create_organization(), and never re-created here (with their plan, quotas\n\
    -- and usage gone). The slugs tenancy reserves (org-<id>) stay their organizations'.\n\
    IF p_op IS NULL OR p_op NOT IN ('UPDATE', 'DELETE') OR p_old_id IS NULL OR p_old_id IS DISTINCT FROM tenancy.current_org()\n\
       OR (p_op = 'UPDATE' AND (p_id IS DISTINCT FROM p_old_id OR p_active IS NULL)) THEN\n\
        RAISE EXCEPTION 'permission denied to % this organization', coalesce(lower(p_op), 'change')\n\
            USING ERRCODE = '42501', HINT = 'Organizations are created by DBAs or with tenancy.create_organization(), and never change their id.';\n\
    END IF;\n\
    -- Locked, so that a concurrent transaction deleting it is waited for and then seen.\n\
    SELECT status, key INTO current_status, current_key FROM tenancy.organizations WHERE id = p_old_id FOR UPDATE;\n\
    IF NOT FOUND THEN\n\
        RAISE EXCEPTION 'permission denied to % this organization', lower(p_op)\n\
            USING ERRCODE = '42501', HINT = 'Organizations are created by DBAs or with tenancy.create_organization().';\n\
    END IF;\n\
    IF NOT {has_role}(CASE WHEN p_op = 'DELETE' OR current_status IS DISTINCT FROM CASE WHEN p_active THEN 'active' ELSE 'suspended' END\n\
                                 THEN 'owner' ELSE 'admin' END) THEN\n\
        RAISE EXCEPTION 'permission denied to % this organization', CASE WHEN p_op = 'DELETE' THEN 'delete' ELSE 'suspend or reactivate' END\n\
            USING ERRCODE = '42501', HINT = 'Owners delete, suspend and reactivate an organization; admins and owners rename it.';\n\
    END IF;\n\
    PERFORM {direct}(p_op, p_old_id, p_id, current_key, p_slug, p_name, p_active);\n\
END\n$tenancy$;"
        );
        let function = format!(
            "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger\n    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
DECLARE\n\
    new_id uuid; new_key text; new_slug text; new_name text; new_active boolean; old_id uuid;\n\
BEGIN\n\
    IF TG_OP <> 'INSERT' THEN\n\
        old_id := {old_id};\n\
    END IF;\n\
    IF TG_OP <> 'DELETE' THEN\n\
        SELECT {values} INTO new_id, new_key, new_slug, new_name, new_active FROM (SELECT NEW.*) r;\n\
    END IF;\n\
    -- The table's owner (migrations, cascades) and DBAs copy the row as it is; anyone else with\n\
    -- the rights of their tenant context.\n\
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')\n\
       OR pg_has_role(current_user, 'tenancy_admin', 'USAGE') THEN\n\
        PERFORM {direct}(TG_OP, old_id, new_id, new_key, new_slug, new_name, new_active);\n\
    ELSE\n\
        PERFORM {checked}(TG_OP, old_id, new_id, new_key, new_slug, new_name, new_active);\n\
    END IF;\n\
    RETURN NULL;\n\
END\n$tenancy$;"
        );
        out.push(Block {
            header: Some(format!("-- {t}: the application's organizations, kept in tenancy.organizations")),
            object: Object::Sync,
            units: vec![
                vec![
                    drop_old(&checked),
                    drop_old(&direct),
                    direct_fn,
                    format!("REVOKE ALL ON FUNCTION {direct}{args} FROM PUBLIC;"),
                    grant_to_owner(&direct, args, t),
                ],
                vec![
                    checked_fn,
                    format!("REVOKE ALL ON FUNCTION {checked}{args} FROM PUBLIC;"),
                    format!("GRANT EXECUTE ON FUNCTION {checked}{args} TO tenancy_writer;"),
                ],
                vec![function, format!("REVOKE ALL ON FUNCTION {f}() FROM PUBLIC;")],
                vec![format!(
                    "CREATE OR REPLACE TRIGGER tenancy_sync AFTER INSERT OR UPDATE OR DELETE ON {t}\n    FOR EACH ROW EXECUTE FUNCTION {f}();"
                )],
                vec![format!(
                    "SELECT {direct}('INSERT', NULL, v.id, v.key, v.slug, v.name, v.active)\n  FROM (SELECT {values} FROM {t} r ORDER BY r.{id}) AS v(id, key, slug, name, active);",
                )],
            ],
        });
    }
    if let Some(m) = &sync.memberships {
        let t = &m.table;
        let schema = quote_ident(&t.schema);
        let f = format!("{schema}.tenancy_sync_memberships");
        let direct = format!("{schema}.tenancy_sync_memberships_direct");
        let user = quote_ident(&m.user);
        // The organization's uuid in tenancy, from the membership row `r`.
        let org = org_id_of(&format!("r.{}", quote_ident(&m.organization)), m.organization_key);
        let role = member_role_expr(m);
        let holds = membership_holds(m);
        let helper = format!(
            "CREATE OR REPLACE FUNCTION {direct}(old_org uuid, old_user text, new_org uuid, new_user text, new_role text) RETURNS void\n    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
    DELETE FROM tenancy.members\n\
     WHERE org_id = old_org AND user_id = old_user\n\
       AND (new_org IS DISTINCT FROM old_org OR new_user IS DISTINCT FROM old_user OR new_role IS NULL);\n\
    INSERT INTO tenancy.members (org_id, user_id, role)\n\
    SELECT new_org, new_user, new_role\n\
     WHERE new_role IS NOT NULL AND EXISTS (SELECT FROM tenancy.organizations o WHERE o.id = new_org)\n\
    ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()\n\
     WHERE members.role IS DISTINCT FROM EXCLUDED.role;\n$tenancy$;"
        );
        let grant_owner = grant_to_owner(&direct, "(uuid, text, uuid, text, text)", t);
        // A member who left an organization left its project roles (tenancy.project_members):
        // on joining again, they are the application's again, as its table shows them (a
        // project closed to them stays closed).
        let rejoin = match &sync.project_memberships {
            Some(pm) => format!(
                "    IF new_org IS NOT NULL AND (old_org IS DISTINCT FROM new_org OR old_user IS DISTINCT FROM new_user) THEN\n\
        PERFORM {}.tenancy_sync_project_memberships_of(new_org, new_user);\n\
    END IF;\n",
                quote_ident(&pm.table.schema)
            ),
            None => String::new(),
        };
        let function = format!(
            "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger\n    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
DECLARE\n\
    old_org uuid; old_user text; old_role text; new_org uuid; new_user text; new_role text;\n\
BEGIN\n\
    IF TG_OP <> 'INSERT' THEN\n\
        SELECT {org}, r.{user}::text, {role} INTO old_org, old_user, old_role FROM (SELECT OLD.*) r WHERE {holds};\n\
    END IF;\n\
    IF TG_OP <> 'DELETE' THEN\n\
        SELECT {org}, r.{user}::text, {role} INTO new_org, new_user, new_role FROM (SELECT NEW.*) r WHERE {holds};\n\
    END IF;\n\
    IF (old_org, old_user, old_role) IS NOT DISTINCT FROM (new_org, new_user, new_role) THEN\n\
        RETURN NULL;\n\
    END IF;\n\
    -- The table's owner (migrations, cascades) and DBAs copy the row as it is.\n\
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')\n\
       OR pg_has_role(current_user, 'tenancy_admin', 'USAGE') THEN\n\
        PERFORM {direct}(old_org, old_user, new_org, new_user, new_role);\n\
        RETURN NULL;\n\
    END IF;\n\
    -- Anyone else, with the rights of their tenant context. A row that moved, or stopped being a\n\
    -- membership, is removed; one that is a membership now is added or updated.\n\
    IF old_org IS NOT NULL AND (new_org IS DISTINCT FROM old_org OR new_user IS DISTINCT FROM old_user) THEN\n\
        BEGIN\n\
            PERFORM tenancy.remove_member(old_org, old_user);\n\
        EXCEPTION WHEN undefined_object THEN\n\
            -- The context's own organization is gone: this transaction deleted it (with its\n\
            -- members), and the application's cascade is deleting its memberships now.\n\
            IF old_org IS DISTINCT FROM tenancy.current_org() THEN\n\
                RAISE;\n\
            END IF;\n\
        END;\n\
    END IF;\n\
    IF new_org IS NOT NULL THEN\n\
        IF new_org IS NOT DISTINCT FROM old_org AND new_user IS NOT DISTINCT FROM old_user THEN\n\
            PERFORM tenancy.update_member(new_org, new_user, new_role);\n\
        ELSE\n\
            BEGIN\n\
                PERFORM tenancy.add_member(new_org, new_user, new_role);\n\
            EXCEPTION WHEN unique_violation THEN\n\
                PERFORM tenancy.update_member(new_org, new_user, new_role);\n\
            END;\n\
        END IF;\n\
    END IF;\n\
{rejoin}    RETURN NULL;\n\
END\n$tenancy$;"
        );
        let orgs_of = match &sync.organizations {
            Some(o) => format!("SELECT {} FROM {} r", org_id_of(&format!("r.{}", quote_ident(&o.id)), o.key), o.table),
            None => format!("SELECT {org} FROM {t} r"),
        };
        out.push(Block {
            header: Some(format!("-- {t}: the application's memberships, kept in tenancy.members")),
            object: Object::Sync,
            units: vec![
                vec![helper, format!("REVOKE ALL ON FUNCTION {direct}(uuid, text, uuid, text, text) FROM PUBLIC;"), grant_owner],
                vec![function, format!("REVOKE ALL ON FUNCTION {f}() FROM PUBLIC;")],
                vec![format!(
                    "CREATE OR REPLACE TRIGGER tenancy_sync AFTER INSERT OR UPDATE OR DELETE ON {t}\n    FOR EACH ROW EXECUTE FUNCTION {f}();"
                )],
                vec![
                    format!(
                        "INSERT INTO tenancy.members (org_id, user_id, role)\nSELECT DISTINCT ON ({org}, r.{user}::text) {org}, r.{user}::text, {role}\n  FROM {t} r\n WHERE {holds} AND EXISTS (SELECT FROM tenancy.organizations o WHERE o.id = {org})\n ORDER BY {org}, r.{user}::text\nON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()\n WHERE members.role IS DISTINCT FROM EXCLUDED.role;"
                    ),
                    format!(
                        "DELETE FROM tenancy.members m\n WHERE m.org_id IN ({orgs_of})\n   AND NOT EXISTS (SELECT FROM {t} r WHERE {org} = m.org_id AND r.{user}::text = m.user_id AND {holds});"
                    ),
                ],
            ],
        });
    }
    out
}

/// The slug tenancy gives organization or project `p_id` from the one the application gives
/// (`p_slug`): the application's when tenancy can use it (a DNS label nobody else has, and not
/// a reserved `org-<hex>` of another id), else `org-<hex of the id>`.
const SLUG_RULE: &str = "(SELECT CASE WHEN p_slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'\n\
                         AND NOT EXISTS (SELECT FROM tenancy.organizations o WHERE o.slug = p_slug AND o.id <> p_id)\n\
                         AND (p_slug !~ '^org-[0-9a-f]{32}$' OR p_slug = 'org-' || replace(p_id::text, '-', ''))\n\
                        THEN p_slug ELSE 'org-' || replace(p_id::text, '-', '') END AS slug) s";

/// What `tenancy.organizations` takes from application project row `r`: id, key, parent (the
/// organization's uuid), slug, name, whether it is active.
fn project_values(p: &ProjectsSync, o: &OrganizationsSync) -> String {
    let slug = p.slug.as_ref().map_or("NULL::text".to_string(), |s| format!("lower(r.{}::text)", quote_ident(s)));
    let active = p.active.as_ref().map_or("true".to_string(), |a| format!("coalesce(({a}), false)"));
    let id = format!("r.{}", quote_ident(&p.id));
    let key = match p.key {
        TenantKey::Uuid => "NULL::text".to_string(),
        TenantKey::Text | TenantKey::Integer => format!("{id}::text"),
    };
    format!(
        "{}, {key}, {}, {slug}, nullif(btrim(left(r.{}::text, 200)), ''), {active}",
        org_id_of(&id, p.key),
        org_id_of(&format!("r.{}", quote_ident(&p.organization)), o.key),
        quote_ident(&p.name)
    )
}

/// The sync of `[projects]`: a backfill, then a trigger keeping the projects in
/// `tenancy.organizations` as rows whose `parent_id` is their organization. The table's owner
/// and DBAs write through the direct helper, which upserts but never moves a project to another
/// organization; anyone else through the checked helper, which trusts no argument and changes
/// only projects of the context's own organization, with the organization's role.
fn projects_block(p: &ProjectsSync, o: &OrganizationsSync) -> Block {
    let t = &p.table;
    let schema = quote_ident(&t.schema);
    let f = format!("{schema}.tenancy_sync_projects");
    let direct = format!("{schema}.tenancy_sync_projects_direct");
    let checked = format!("{schema}.tenancy_sync_projects_checked");
    let args = "(text, uuid, uuid, text, uuid, text, text, boolean)";
    let params =
        "p_op text, p_old_id uuid, p_id uuid, p_key text, p_parent uuid, p_slug text, p_name text, p_active boolean";
    let id = quote_ident(&p.id);
    let old_id = org_id_of(&format!("OLD.{id}"), p.key);
    let old_parent = org_id_of(&format!("OLD.{}", quote_ident(&p.organization)), o.key);
    let values = project_values(p, o);
    let moved = "RAISE EXCEPTION 'permission denied to move this project to another organization'\n\
            USING ERRCODE = '42501', HINT = 'A project keeps the organization it was created in: create a new project in the other organization.';";
    let direct_fn = format!(
        "CREATE OR REPLACE FUNCTION {direct}({params}) RETURNS void\n    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
DECLARE\n\
    stored_parent uuid;\n\
BEGIN\n\
    -- Plain values only: nothing the table's owner defines runs with the definer's rights. Only\n\
    -- projects (rows with a parent) are ever deleted here, never an organization.\n\
    IF p_op = 'DELETE' OR p_old_id IS DISTINCT FROM p_id THEN\n\
        DELETE FROM tenancy.organizations WHERE id = p_old_id AND parent_id IS NOT NULL;\n\
    END IF;\n\
    IF p_op = 'DELETE' OR p_id IS NULL THEN\n\
        RETURN;\n\
    END IF;\n\
    -- A project never changes organization (parent_id is set once), and never takes the id of\n\
    -- an organization (a key both tables use).\n\
    SELECT parent_id INTO stored_parent FROM tenancy.organizations WHERE id = p_id FOR UPDATE;\n\
    IF FOUND AND stored_parent IS DISTINCT FROM p_parent THEN\n\
        {moved}\n\
    END IF;\n\
    -- A project of an organization tenancy does not know is skipped, like its memberships.\n\
    INSERT INTO tenancy.organizations (id, key, parent_id, slug, name, status)\n\
    SELECT p_id, p_key, p_parent, s.slug, coalesce(p_name, s.slug), CASE WHEN p_active THEN 'active' ELSE 'suspended' END\n\
      FROM {SLUG_RULE}\n\
     WHERE EXISTS (SELECT FROM tenancy.organizations o WHERE o.id = p_parent AND o.parent_id IS NULL)\n\
    ON CONFLICT (id) DO UPDATE SET slug = EXCLUDED.slug, name = EXCLUDED.name, status = EXCLUDED.status, updated_at = now()\n\
     WHERE (organizations.slug, organizations.name, organizations.status) IS DISTINCT FROM (EXCLUDED.slug, EXCLUDED.name, EXCLUDED.status);\n\
END\n$tenancy$;"
    );
    let denied = "RAISE EXCEPTION 'permission denied to % this project', coalesce(lower(p_op), 'change')\n\
            USING ERRCODE = '42501', HINT = 'Projects are created, changed and deleted in their organization''s context, by its admins and owners.';";
    let checked_fn = format!(
        "CREATE OR REPLACE FUNCTION {checked}({params}) RETURNS void\n    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
DECLARE\n\
    stored_parent uuid;\n\
    stored_status text;\n\
    stored_key text;\n\
BEGIN\n\
    -- Callable by any read-write application role, so it trusts no argument: it creates and\n\
    -- changes projects of the context's own organization only, with the organization's role\n\
    -- (a project's override never counts). Admins create and rename projects; owners delete,\n\
    -- suspend or reactivate them, as for the organization itself: a deleted project takes its\n\
    -- rows' access with it. The same error whether the project is another organization's or\n\
    -- does not exist.\n\
    IF p_op IS NULL OR p_op NOT IN ('INSERT', 'UPDATE', 'DELETE') THEN\n\
        {denied}\n\
    END IF;\n\
    IF p_op = 'INSERT' THEN\n\
        IF p_id IS NULL OR p_active IS NULL OR p_parent IS NULL OR p_parent IS DISTINCT FROM tenancy.current_org()\n\
           OR (p_key IS NOT NULL AND p_id IS DISTINCT FROM tenancy.org_key_id(p_key))\n\
           OR NOT tenancy.has_org_role('admin') THEN\n\
            {denied}\n\
        END IF;\n\
        -- Locked, then checked: an id tenancy has already (another organization's project, or an\n\
        -- organization) is refused, never taken over.\n\
        PERFORM FROM tenancy.organizations WHERE id = p_id FOR UPDATE;\n\
        IF FOUND THEN\n\
            {denied}\n\
        END IF;\n\
        PERFORM {direct}('INSERT', NULL, p_id, p_key, p_parent, p_slug, p_name, p_active);\n\
        RETURN;\n\
    END IF;\n\
    IF p_old_id IS NULL OR (p_op = 'UPDATE' AND (p_id IS DISTINCT FROM p_old_id OR p_active IS NULL)) THEN\n\
        {denied}\n\
    END IF;\n\
    -- Locked, so that a concurrent transaction deleting it is waited for and then seen: a\n\
    -- deleted project is never re-created here.\n\
    SELECT parent_id, status, key INTO stored_parent, stored_status, stored_key\n\
      FROM tenancy.organizations WHERE id = p_old_id FOR UPDATE;\n\
    IF NOT FOUND AND p_op = 'DELETE' AND p_parent IS NOT DISTINCT FROM tenancy.current_org()\n\
       AND NOT EXISTS (SELECT FROM tenancy.organizations o WHERE o.id = p_parent) THEN\n\
        -- The context's own organization is gone: this transaction deleted it (with its\n\
        -- projects), and the application's cascade is deleting its projects now.\n\
        RETURN;\n\
    END IF;\n\
    IF NOT FOUND OR stored_parent IS NULL OR stored_parent IS DISTINCT FROM tenancy.current_org() THEN\n\
        {denied}\n\
    END IF;\n\
    IF p_op = 'UPDATE' AND p_parent IS DISTINCT FROM stored_parent THEN\n\
        {moved}\n\
    END IF;\n\
    IF NOT tenancy.has_org_role(CASE WHEN p_op = 'DELETE' OR stored_status IS DISTINCT FROM CASE WHEN p_active THEN 'active' ELSE 'suspended' END\n\
                                     THEN 'owner' ELSE 'admin' END) THEN\n\
        RAISE EXCEPTION 'permission denied to % this project', CASE WHEN p_op = 'DELETE' THEN 'delete' ELSE 'suspend or reactivate' END\n\
            USING ERRCODE = '42501', HINT = 'The organization''s owners delete, suspend and reactivate a project; admins and owners rename it.';\n\
    END IF;\n\
    PERFORM {direct}(p_op, p_old_id, p_id, stored_key, stored_parent, p_slug, p_name, p_active);\n\
END\n$tenancy$;"
    );
    let function = format!(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger\n    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
DECLARE\n\
    new_id uuid; new_key text; new_parent uuid; new_slug text; new_name text; new_active boolean; old_id uuid;\n\
BEGIN\n\
    IF TG_OP <> 'INSERT' THEN\n\
        old_id := {old_id};\n\
    END IF;\n\
    IF TG_OP <> 'DELETE' THEN\n\
        SELECT {values} INTO new_id, new_key, new_parent, new_slug, new_name, new_active FROM (SELECT NEW.*) r;\n\
    ELSE\n\
        new_parent := {old_parent};\n\
    END IF;\n\
    -- The table's owner (migrations, cascades) and DBAs copy the row as it is; anyone else with\n\
    -- the rights of their tenant context.\n\
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')\n\
       OR pg_has_role(current_user, 'tenancy_admin', 'USAGE') THEN\n\
        PERFORM {direct}(TG_OP, old_id, new_id, new_key, new_parent, new_slug, new_name, new_active);\n\
    ELSE\n\
        PERFORM {checked}(TG_OP, old_id, new_id, new_key, new_parent, new_slug, new_name, new_active);\n\
    END IF;\n\
    RETURN NULL;\n\
END\n$tenancy$;"
    );
    Block {
        header: Some(format!(
            "-- {t}: the application's projects, kept in tenancy.organizations under their organization (parent_id)"
        )),
        object: Object::Sync,
        units: vec![
            vec![
                direct_fn,
                format!("REVOKE ALL ON FUNCTION {direct}{args} FROM PUBLIC;"),
                grant_to_owner(&direct, args, t),
            ],
            vec![
                checked_fn,
                format!("REVOKE ALL ON FUNCTION {checked}{args} FROM PUBLIC;"),
                format!("GRANT EXECUTE ON FUNCTION {checked}{args} TO tenancy_writer;"),
            ],
            vec![function, format!("REVOKE ALL ON FUNCTION {f}() FROM PUBLIC;")],
            vec![format!(
                "CREATE OR REPLACE TRIGGER tenancy_sync AFTER INSERT OR UPDATE OR DELETE ON {t}\n    FOR EACH ROW EXECUTE FUNCTION {f}();"
            )],
            vec![format!(
                "SELECT {direct}('INSERT', NULL, v.id, v.key, v.parent, v.slug, v.name, v.active)\n  FROM (SELECT {values} FROM {t} r ORDER BY r.{id}) AS v(id, key, parent, slug, name, active);",
            )],
        ],
    }
}

/// The project role of application row `r`: a member role, or NULL for a value mapped to
/// `none` (no access to the project).
fn project_role_expr(m: &ProjectMembershipsSync) -> String {
    let c = quote_ident(&m.role);
    if m.roles.is_empty() {
        return format!("nullif(r.{c}::text, 'none')");
    }
    let arms: Vec<String> = m
        .roles
        .iter()
        .filter(|(_, role)| role != "none")
        .map(|(value, role)| format!("WHEN {} THEN {}", literal(value), literal(role)))
        .collect();
    if arms.is_empty() {
        return "NULL::text".to_string();
    }
    format!("CASE r.{c}::text {} END", arms.join(" "))
}

/// Whether application row `r` is an override: active, with a mapped value (a member role or
/// `none`) and a user id tenancy accepts. An unmapped value is no override.
fn project_membership_holds(m: &ProjectMembershipsSync) -> String {
    let user = format!("r.{}::text", quote_ident(&m.user));
    let values: Vec<String> = if m.roles.is_empty() {
        crate::policy::MEMBER_ROLES.iter().chain(&["none"]).map(|r| literal(r)).collect()
    } else {
        m.roles.iter().map(|(value, _)| literal(value)).collect()
    };
    let mut parts = vec![
        format!("r.{} IS NOT NULL", quote_ident(&m.project)),
        format!("btrim({user}) <> '' AND octet_length({user}) <= 256 AND {user} NOT LIKE 'service:%'"),
        format!("r.{}::text IN ({})", quote_ident(&m.role), values.join(", ")),
    ];
    if let Some(a) = &m.active {
        parts.push(format!("({a})"));
    }
    parts.join(" AND ")
}

/// The sync of `[project_memberships]`: a backfill, then a trigger keeping
/// `tenancy.project_members` (a NULL role: no access to the project). The table's owner and
/// DBAs write it directly; anyone else through `tenancy.set_project_member()` and
/// `remove_project_member()`, which check the rights of their context.
fn project_memberships_block(m: &ProjectMembershipsSync) -> Block {
    let t = &m.table;
    let schema = quote_ident(&t.schema);
    let f = format!("{schema}.tenancy_sync_project_memberships");
    let direct = format!("{schema}.tenancy_sync_project_memberships_direct");
    let args = "(uuid, text, uuid, text, boolean, text)";
    let user = quote_ident(&m.user);
    let project = org_id_of(&format!("r.{}", quote_ident(&m.project)), m.project_key);
    let role = project_role_expr(m);
    let holds = project_membership_holds(m);
    let helper = format!(
        "CREATE OR REPLACE FUNCTION {direct}(old_project uuid, old_user text, new_project uuid, new_user text, new_holds boolean, new_role text) RETURNS void\n    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
    DELETE FROM tenancy.project_members\n\
     WHERE project_id = old_project AND user_id = old_user\n\
       AND (new_project IS DISTINCT FROM old_project OR new_user IS DISTINCT FROM old_user OR NOT coalesce(new_holds, false));\n\
    INSERT INTO tenancy.project_members (project_id, user_id, role)\n\
    SELECT new_project, new_user, new_role\n\
     WHERE new_holds AND EXISTS (SELECT FROM tenancy.organizations o WHERE o.id = new_project AND o.parent_id IS NOT NULL)\n\
    ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role\n\
     WHERE project_members.role IS DISTINCT FROM EXCLUDED.role;\n$tenancy$;"
    );
    // One member's project roles in one organization, as the application's table has them (the
    // memberships sync calls it, as the writer, when a member joins again): the rows the
    // application's writers wrote, copied with the DBA's rights like the backfill below, for the
    // organization of the caller's context only (or for the table's owner and DBAs).
    let of_user = format!("{schema}.tenancy_sync_project_memberships_of");
    let of_user_sql = format!(
        "CREATE OR REPLACE FUNCTION {of_user}(p_org uuid, p_user text) RETURNS void\n    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
BEGIN\n\
    IF p_org IS DISTINCT FROM tenancy.current_org()\n\
       AND NOT pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = {tl}::regclass), 'USAGE')\n\
       AND NOT pg_has_role(session_user, 'tenancy_admin', 'USAGE') THEN\n\
        RETURN;\n\
    END IF;\n\
    INSERT INTO tenancy.project_members (project_id, user_id, role)\n\
    SELECT DISTINCT ON ({project}) {project}, r.{user}::text, {role}\n\
      FROM {t} r\n\
     WHERE {holds} AND r.{user}::text = p_user\n\
       AND EXISTS (SELECT FROM tenancy.organizations o WHERE o.id = {project} AND o.parent_id = p_org)\n\
       AND EXISTS (SELECT FROM tenancy.members m WHERE m.org_id = p_org AND m.user_id = p_user)\n\
     ORDER BY {project}\n\
    ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role\n\
     WHERE project_members.role IS DISTINCT FROM EXCLUDED.role;\n\
END\n$tenancy$;",
        tl = literal(&t.to_string())
    );
    let function = format!(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger\n    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
DECLARE\n\
    old_project uuid; old_user text; old_role text; new_project uuid; new_user text; new_role text;\n\
    old_holds boolean := false; new_holds boolean := false;\n\
BEGIN\n\
    IF TG_OP <> 'INSERT' THEN\n\
        SELECT {project}, r.{user}::text, {role}, true INTO old_project, old_user, old_role, old_holds\n\
          FROM (SELECT OLD.*) r WHERE {holds};\n\
    END IF;\n\
    IF TG_OP <> 'DELETE' THEN\n\
        SELECT {project}, r.{user}::text, {role}, true INTO new_project, new_user, new_role, new_holds\n\
          FROM (SELECT NEW.*) r WHERE {holds};\n\
    END IF;\n\
    old_holds := coalesce(old_holds, false);\n\
    new_holds := coalesce(new_holds, false);\n\
    IF (old_holds, old_project, old_user, old_role) IS NOT DISTINCT FROM (new_holds, new_project, new_user, new_role) THEN\n\
        RETURN NULL;\n\
    END IF;\n\
    -- The table's owner (migrations, cascades) and DBAs copy the row as it is.\n\
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')\n\
       OR pg_has_role(current_user, 'tenancy_admin', 'USAGE') THEN\n\
        PERFORM {direct}(old_project, old_user, new_project, new_user, new_holds, new_role);\n\
        RETURN NULL;\n\
    END IF;\n\
    -- Anyone else, with the rights of their tenant context (members.manage in the project, or\n\
    -- the organization's; never above their own role). A row that moved, or stopped being an\n\
    -- override, is removed; one that is an override now is set.\n\
    IF old_holds AND (NOT new_holds OR new_project IS DISTINCT FROM old_project OR new_user IS DISTINCT FROM old_user) THEN\n\
        BEGIN\n\
            PERFORM tenancy.remove_project_member(old_project, old_user);\n\
        EXCEPTION WHEN undefined_object THEN\n\
            -- The project is gone (this transaction deleted it, and its overrides with it): the\n\
            -- application's cascade is deleting its rows now; there is nothing to remove.\n\
            NULL;\n\
        END;\n\
    END IF;\n\
    IF new_holds THEN\n\
        PERFORM tenancy.set_project_member(new_project, new_user, new_role);\n\
    END IF;\n\
    RETURN NULL;\n\
END\n$tenancy$;"
    );
    Block {
        header: Some(format!(
            "-- {t}: the application's project roles, kept in tenancy.project_members (a NULL role: no access)"
        )),
        object: Object::Sync,
        units: vec![
            vec![helper, format!("REVOKE ALL ON FUNCTION {direct}{args} FROM PUBLIC;"), grant_to_owner(&direct, args, t)],
            vec![of_user_sql],
            vec![function, format!("REVOKE ALL ON FUNCTION {f}() FROM PUBLIC;")],
            vec![format!(
                "CREATE OR REPLACE TRIGGER tenancy_sync AFTER INSERT OR UPDATE OR DELETE ON {t}\n    FOR EACH ROW EXECUTE FUNCTION {f}();"
            )],
            vec![
                format!(
                    "INSERT INTO tenancy.project_members (project_id, user_id, role)\nSELECT DISTINCT ON ({project}, r.{user}::text) {project}, r.{user}::text, {role}\n  FROM {t} r\n WHERE {holds}\n   AND EXISTS (SELECT FROM tenancy.organizations o WHERE o.id = {project} AND o.parent_id IS NOT NULL)\n ORDER BY {project}, r.{user}::text\nON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role\n WHERE project_members.role IS DISTINCT FROM EXCLUDED.role;"
                ),
                format!(
                    "DELETE FROM tenancy.project_members pm\n WHERE NOT EXISTS (SELECT FROM {t} r WHERE {project} = pm.project_id AND r.{user}::text = pm.user_id AND {holds});"
                ),
            ],
        ],
    }
}

/// A partition of a covered table: row-level security enabled and forced with the table's
/// policies (own rows only: shares name the partitioned table), and no grants, so that the
/// application reads and writes through the partitioned table; reading a partition directly is
/// refused, and would be governed. Defaults, indexes and row triggers come from the table.
fn partition_block(table: &CompiledTable, partition: &QualifiedName, all_roles: &[String]) -> Block {
    let name = partition.to_string();
    let mut units = vec![
        vec![format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")],
        vec![format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")],
    ];
    for command in Command::ALL {
        let mut unit = vec![format!("DROP POLICY IF EXISTS {} ON {name};", policy_name(command))];
        match &table.kind {
            CompiledKind::Global => {
                let readers = table.readers();
                if command == Command::Select && !readers.is_empty() {
                    unit.push(all_rows_policy(Command::Select, &name, &readers));
                }
            }
            CompiledKind::Unscoped { .. } => {
                let roles = table.roles_for(command);
                if !roles.is_empty() {
                    unit.push(all_rows_policy(command, &name, &roles));
                }
            }
            CompiledKind::Child { parent, references, commands, .. } => {
                unit.extend(child_policy(&name, partition, table, (parent, references), commands, command));
            }
            CompiledKind::Identity { .. } => {} // below, all commands at once
            CompiledKind::Tenant { column, key, level, commands, references, global_rows, user_rows, .. } => {
                // Own rows only: shares name the partitioned table.
                unit.extend(tenant_policy(
                    &name,
                    partition,
                    table,
                    (column, *key, *level),
                    commands,
                    (None, None),
                    references,
                    NullRows::of(*global_rows, user_rows),
                    command,
                ));
            }
        }
        if !matches!(table.kind, CompiledKind::Identity { .. }) {
            units.push(unit);
        }
    }
    if let CompiledKind::Identity { column, text, co_members } = &table.kind {
        units.extend(identity_policies(table, partition, column, *text, *co_members));
    }
    if !all_roles.is_empty() {
        units.push(vec![format!("REVOKE ALL ON TABLE {name} FROM {};", role_list(all_roles))]);
    }
    Block {
        header: Some(format!("-- {name}: partition of {}, governed with it (reached through it)", table.name)),
        object: Object::Relation(name),
        units,
    }
}

/// `tenancy_lookup_<name>(key)`: the organization (and user) of the row whose key column equals
/// `key`, for the moment before any context (an API key). It reads the table with the rights of
/// its owner, the DBA who applied it, and runs nothing of the table's: built-in types only, an
/// equality on one unique column, a fixed search_path.
fn lookup_block(lookup: &CompiledLookup, all_roles: &[String]) -> Block {
    let f =
        format!("{}.{}", quote_ident(&lookup.table.schema), quote_ident(&format!("tenancy_lookup_{}", lookup.name)));
    let user_out = if lookup.user.is_some() { ", user_id text" } else { "" };
    let user_col = lookup.user.as_ref().map_or(String::new(), |u| format!(", r.{}::text", quote_ident(u)));
    // The table and its columns are checked again on every call: were the table's owner to make
    // the table a view or a column a type of their own, the DBA's rights would run their code.
    let columns: Vec<String> = std::iter::once(&lookup.key)
        .chain(lookup.organization.iter())
        .chain(lookup.user.iter())
        .map(|c| literal(c))
        .collect();
    let org = lookup
        .organization
        .as_ref()
        .map_or("NULL::uuid".to_string(), |o| org_id_of(&format!("r.{}", quote_ident(o)), lookup.organization_key));
    // A project-level table's tenant column holds projects: the project, and its organization
    // (a project whose sync has not run yet, or one that is no project, finds nothing).
    let (columns_out, select, join) = if lookup.project {
        (
            format!("org_id uuid, project_id uuid{user_out}"),
            format!("p.parent_id, p.id{user_col}"),
            format!(" JOIN tenancy.organizations p ON p.id = {org} AND p.parent_id IS NOT NULL"),
        )
    } else {
        (format!("org_id uuid{user_out}"), format!("{org}{user_col}"), String::new())
    };
    let function = format!(
        "CREATE OR REPLACE FUNCTION {f}(lookup_key {kt}) RETURNS TABLE ({columns_out})\n    LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $tenancy$\n\
BEGIN\n\
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = {tl}::regclass) NOT IN ('r', 'p')\n\
       OR EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = {tl}::regclass AND a.attname IN ({cols})\n\
                    AND a.atttypid NOT IN ('text'::regtype, 'varchar'::regtype, 'uuid'::regtype, 'bytea'::regtype, 'int2'::regtype, 'int4'::regtype, 'int8'::regtype)) THEN\n\
        RAISE EXCEPTION 'lookup {name} is out of date: {t} changed'\n\
            USING ERRCODE = '55000', HINT = 'Run tenancy apply again (as a DBA).';\n\
    END IF;\n\
    RETURN QUERY SELECT {select} FROM {t} r{join} WHERE r.{key} = lookup_key;\n\
END\n$tenancy$;",
        kt = lookup.key_type,
        t = lookup.table,
        tl = literal(&lookup.table.to_string()),
        cols = columns.join(", "),
        name = lookup.name,
        key = quote_ident(&lookup.key)
    );
    let mut grants = vec![format!("REVOKE ALL ON FUNCTION {f}({}) FROM PUBLIC;", lookup.key_type)];
    if !all_roles.is_empty() {
        grants.push(format!("GRANT EXECUTE ON FUNCTION {f}({}) TO {};", lookup.key_type, role_list(all_roles)));
    }
    Block {
        header: Some(format!(
            "-- lookup {}: the {} of a {} row by its {}, before any context",
            lookup.name,
            if lookup.project { "project and organization" } else { "organization" },
            lookup.table,
            lookup.key
        )),
        object: Object::Sync,
        units: vec![vec![function], grants],
    }
}

/// The statement guard of a tenant table: it refuses writes without a context, or by too low a
/// role or a missing permission, with a clear error. Each argument is `role` or
/// `role|permission`.
/// With two levels, the 4th argument says which: a project-level write needs a project context
/// (checked with the effective role), an organization-level one any context with an
/// organization (checked with the organization's role).
fn require_context_trigger(
    name: &str,
    commands: &std::collections::BTreeMap<Command, Option<CompiledRule>>,
    level: Option<Level>,
) -> String {
    let min_role = |c: Command| match commands.get(&c) {
        Some(Some(rule)) => match &rule.permission {
            Some(p) => literal(&format!("{}|{p}", rule.role.0)),
            None => literal(&rule.role.0),
        },
        _ => "'none'".to_string(),
    };
    format!(
        "CREATE OR REPLACE TRIGGER tenancy_require_context\n    BEFORE INSERT OR UPDATE OR DELETE ON {name}\n    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.require_context({}, {}, {}{});",
        min_role(Command::Insert),
        min_role(Command::Update),
        min_role(Command::Delete),
        level.map_or(String::new(), |l| format!(", {}", literal(l.key())))
    )
}

/// With two levels, the SELECT policy of a tenant or child table says its level (and tenant
/// column), for lint and verify, which read live databases without the policy files.
fn level_comment(name: &str, level: Option<Level>, column: Option<&str>) -> Option<String> {
    let level = level?;
    let text = match column {
        Some(c) => format!("level: {}, tenant column: {c}", level.key()),
        None => format!("level: {}, through its parent", level.key()),
    };
    Some(format!("COMMENT ON POLICY {} ON {name} IS {};", policy_name(Command::Select), literal(&text)))
}

/// A table's grants: everything taken from the application roles, then each command a role's
/// policies allow.
fn table_grants(name: &str, all_roles: &[String], grants: &[(Command, Vec<String>)]) -> Vec<String> {
    let mut unit = vec![format!("REVOKE ALL ON TABLE {name} FROM {};", role_list(all_roles))];
    for role in all_roles {
        let privileges: Vec<&str> =
            grants.iter().filter(|(_, roles)| roles.contains(role)).map(|(c, _)| c.sql()).collect();
        if !privileges.is_empty() {
            unit.push(format!("GRANT {} ON TABLE {name} TO {};", privileges.join(", "), quote_ident(role)));
        }
    }
    unit
}

/// A policy over every row, for these roles: a global table's SELECT, an unscoped table's commands.
fn all_rows_policy(command: Command, name: &str, roles: &[String]) -> String {
    let clause = match command {
        Command::Select | Command::Delete => "USING (true)",
        Command::Insert => "WITH CHECK (true)",
        Command::Update => "USING (true) WITH CHECK (true)",
    };
    format!(
        "CREATE POLICY {} ON {name} AS PERMISSIVE FOR {} TO {} {clause};",
        policy_name(command),
        command.sql(),
        role_list(roles)
    )
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// PostgreSQL's longest identifier, in bytes (NAMEDATALEN - 1); longer names are cut.
const MAX_IDENTIFIER: usize = 63;

/// Names for the indexes the compiler adds, `<table>_<columns>_idx` as PostgreSQL would choose,
/// but each within 63 bytes and unique in its schema: a name PostgreSQL would cut (silently, so
/// that two of them could become one, and `CREATE INDEX IF NOT EXISTS` skip the second) is cut
/// here and ends with a hash of the whole; a name some relation already has gets a number.
struct IndexNames {
    /// Relation name -> the table it indexes (None: not an index of a known table).
    taken: std::collections::BTreeMap<QualifiedName, Option<QualifiedName>>,
}

impl IndexNames {
    fn new(compiled: &Compiled) -> IndexNames {
        IndexNames { taken: compiled.taken_names.clone() }
    }

    /// A fresh name for an index on `table` over `what` (column names joined by `_`).
    fn next(&mut self, table: &QualifiedName, what: &str) -> String {
        let full = format!("{}_{what}", table.name);
        for n in 1.. {
            let suffix = if n == 1 { "_idx".to_string() } else { format!("{n}_idx") };
            let name = fit(&full, &suffix);
            let key = QualifiedName::new(table.schema.clone(), name.clone());
            if let std::collections::btree_map::Entry::Vacant(free) = self.taken.entry(key) {
                free.insert(Some(table.clone()));
                return name;
            }
        }
        unreachable!("an unbounded range ends")
    }

    /// The name of an index the compiler always declares (`CREATE INDEX IF NOT EXISTS`, which
    /// `plan` drops when the index is there): the one `table` already has under the first name
    /// [`Self::next`] would give, else a fresh one.
    fn own(&mut self, table: &QualifiedName, what: &str) -> String {
        let name = fit(&format!("{}_{what}", table.name), "_idx");
        match self.taken.get(&QualifiedName::new(table.schema.clone(), name.clone())) {
            Some(Some(owner)) if owner == table => name,
            _ => self.next(table, what),
        }
    }
}

/// `stem` + `suffix` when that fits in 63 bytes; else the stem cut at a character boundary,
/// followed by 8 hex digits of a hash of the whole stem (FNV-1a: the same on every machine,
/// so `plan` and `apply` name an index the same), then `suffix`.
pub(crate) fn fit(stem: &str, suffix: &str) -> String {
    if stem.len() + suffix.len() <= MAX_IDENTIFIER {
        return format!("{stem}{suffix}");
    }
    let hash = stem.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let tag = format!("_{:08x}", hash as u32);
    let mut cut = MAX_IDENTIFIER - tag.len() - suffix.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tag}{suffix}", &stem[..cut])
}

fn table_block(
    table: &CompiledTable,
    all_roles: &[String],
    counted: &[&str],
    names: &mut IndexNames,
    (org_root, org_admins): (bool, Option<&OrgAdmins>),
) -> Block {
    let name = table.name.to_string();
    let mut units: Vec<Vec<String>> = Vec::new();
    let header;
    match &table.kind {
        CompiledKind::Global => {
            header = format!("-- {name}: global reference table, readable by every organization, written by DBAs");
            units.push(vec![format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")]);
            units.push(vec![format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")]);
            let readers = table.readers();
            for command in Command::ALL {
                let mut unit = vec![format!("DROP POLICY IF EXISTS {} ON {name};", policy_name(command))];
                if command == Command::Select && !readers.is_empty() {
                    unit.push(all_rows_policy(Command::Select, &name, &readers));
                }
                units.push(unit);
            }
            // A table that was a tenant table loses the write guard, which would refuse a DBA
            // without BYPASSRLS for want of a tenant context; `plan` drops it where it is absent.
            units.push(vec![format!("DROP TRIGGER IF EXISTS tenancy_require_context ON {name};")]);
            units.push(user_references(&table.name, &[]));
            let mut grants = vec![format!("REVOKE ALL ON TABLE {name} FROM {};", role_list(all_roles))];
            if !readers.is_empty() {
                grants.push(format!("GRANT SELECT ON TABLE {name} TO {};", role_list(&readers)));
            }
            units.push(grants);
        }
        CompiledKind::Unscoped { reason } => {
            header = format!("-- {name}: unscoped (application-wide): {reason}");
            units.push(vec![format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")]);
            units.push(vec![format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")]);
            let readers = table.readers();
            for command in Command::ALL {
                let roles = table.roles_for(command);
                let mut unit = vec![format!("DROP POLICY IF EXISTS {} ON {name};", policy_name(command))];
                if !roles.is_empty() {
                    unit.push(all_rows_policy(command, &name, &roles));
                    if command == Command::Select {
                        // lint lists unscoped tables with their reason, read from here.
                        unit.push(format!(
                            "COMMENT ON POLICY {} ON {name} IS {};",
                            policy_name(command),
                            literal(&format!("unscoped: {reason}"))
                        ));
                    }
                }
                units.push(unit);
            }
            units.push(vec![format!("DROP TRIGGER IF EXISTS tenancy_require_context ON {name};")]);
            units.push(user_references(&table.name, &[]));
            let mut grants = vec![format!("REVOKE ALL ON TABLE {name} FROM {};", role_list(all_roles))];
            if !readers.is_empty() {
                grants.push(format!("GRANT SELECT ON TABLE {name} TO {};", role_list(&readers)));
            }
            if !table.read_write.is_empty() {
                grants
                    .push(format!("GRANT INSERT, UPDATE, DELETE ON TABLE {name} TO {};", role_list(&table.read_write)));
            }
            units.push(grants);
        }
        CompiledKind::Identity { column, text, co_members } => {
            header = format!(
                "-- {name}: identity table, user column {}: each user reads their own row{}, writes only their own",
                quote_ident(column),
                if *co_members { " and the current organization's members'" } else { "" }
            );
            units.push(vec![format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")]);
            units.push(vec![format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")]);
            units.extend(identity_policies(table, &table.name, column, *text, *co_members));
            // A user signs up under a user-only context, which the statement guard refuses.
            units.push(vec![format!("DROP TRIGGER IF EXISTS tenancy_require_context ON {name};")]);
            units.push(user_references(&table.name, &table.user_references));
            let readers = table.readers();
            let mut grants = vec![format!("REVOKE ALL ON TABLE {name} FROM {};", role_list(all_roles))];
            if !readers.is_empty() {
                grants.push(format!("GRANT SELECT ON TABLE {name} TO {};", role_list(&readers)));
            }
            if !table.read_write.is_empty() {
                grants
                    .push(format!("GRANT INSERT, UPDATE, DELETE ON TABLE {name} TO {};", role_list(&table.read_write)));
            }
            units.push(grants);
        }
        CompiledKind::Child { parent, references, commands, owner_columns, extra_indexes } => {
            header = format!(
                "-- {name}: tenant table through its parent {} ({})",
                parent.target,
                parent.columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
            );
            units.extend(owner_defaults(&name, owner_columns));
            units.push(vec![format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")]);
            units.push(vec![format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")]);
            let mut grants: Vec<(Command, Vec<String>)> = Vec::new();
            for command in Command::ALL {
                let mut unit = vec![format!("DROP POLICY IF EXISTS {} ON {name};", policy_name(command))];
                if let Some(policy) = child_policy(&name, &table.name, table, (parent, references), commands, command) {
                    unit.push(policy);
                    grants.push((command, table.roles_for(command)));
                    if command == Command::Select {
                        unit.extend(level_comment(&name, parent.target_level, None));
                    }
                }
                units.push(unit);
            }
            units.extend(index_units(names, &table.name, &name, extra_indexes));
            units.push(vec![require_context_trigger(&name, commands, parent.target_level)]);
            units.push(user_references(&table.name, &table.user_references));
            units.push(table_grants(&name, all_roles, &grants));
        }
        CompiledKind::Tenant {
            column,
            key,
            level,
            add_index,
            set_not_null,
            commands,
            owner_columns,
            extra_indexes,
            sharing,
            references,
            global_rows,
            user_rows,
        } => {
            let col = quote_ident(column);
            let of_level = level.map_or(String::new(), |l| format!(" ({}-level)", l.key()));
            header = match sharing {
                None => format!("-- {name}: tenant table{of_level}, tenant column {col}"),
                Some(_) => format!("-- {name}: shareable tenant table{of_level}, tenant column {col}"),
            };
            if *set_not_null {
                units.push(vec![format!("ALTER TABLE {name} ALTER COLUMN {col} SET NOT NULL;")]);
            }
            if !org_root {
                units.push(vec![format!(
                    "ALTER TABLE {name} ALTER COLUMN {col} SET DEFAULT {};",
                    key.reader_at(*level)
                )]);
            }
            units.extend(owner_defaults(&name, owner_columns));
            units.push(vec![format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")]);
            units.push(vec![format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")]);
            let mut grants: Vec<(Command, Vec<String>)> = Vec::new();
            for command in Command::ALL {
                let mut unit = vec![format!("DROP POLICY IF EXISTS {} ON {name};", policy_name(command))];
                if let Some(policy) = tenant_policy(
                    &name,
                    &table.name,
                    table,
                    (column, *key, *level),
                    commands,
                    (sharing.as_ref(), org_admins),
                    references,
                    NullRows::of(*global_rows, user_rows),
                    command,
                ) {
                    unit.push(policy);
                    grants.push((command, table.roles_for(command)));
                    if command == Command::Select {
                        unit.extend(level_comment(&name, *level, Some(column)));
                    }
                }
                units.push(unit);
            }
            if *add_index {
                let index = quote_ident(&names.next(&table.name, column));
                units.push(vec![format!("CREATE INDEX IF NOT EXISTS {index} ON {name} ({col});")]);
            }
            // Foreign-key checks and cascades, and policies, look rows up by these columns.
            units.extend(index_units(names, &table.name, &name, extra_indexes));
            if let Some(sharing) = sharing {
                let id = quote_ident(&sharing.id_column);
                if sharing.add_id_index {
                    let index = quote_ident(&names.next(&table.name, &sharing.id_column));
                    units.push(vec![format!("CREATE INDEX IF NOT EXISTS {index} ON {name} ({id});")]);
                }
                if let Some(v) = &sharing.visibility_column {
                    let index = quote_ident(&names.own(&table.name, "public"));
                    units.push(vec![format!(
                        "CREATE INDEX IF NOT EXISTS {index} ON {name} ({id}) WHERE {} = 'public';",
                        quote_ident(v)
                    )]);
                }
                let optional = |v: &Option<String>| v.as_deref().map_or("NULL".to_string(), literal);
                units.push(vec![format!(
                    "SELECT tenancy.enable_sharing({}, id_column => {}, tenant_column => {}, visibility_column => {}, share_permission => {});",
                    literal(&name),
                    literal(&sharing.id_column),
                    literal(column),
                    optional(&sharing.visibility_column),
                    optional(&sharing.share_permission)
                )]);
            }
            if user_rows.is_none() {
                // The project memberships are written in a project's context with the project's
                // role, or in the organization's with the organization's (no level: the effective
                // role), as the policies allow.
                let guard_level = if org_admins.is_some() { None } else { *level };
                units.push(vec![require_context_trigger(&name, commands, guard_level)]);
            } else {
                // A user's own rows are written with a user-only context too, and by members of
                // any role: the policies alone decide (a write without any context reaches no
                // row, and an INSERT is refused by its policy).
                units.push(vec![format!("DROP TRIGGER IF EXISTS tenancy_require_context ON {name};")]);
            }
            units.push(user_rows_stay(&table.name, column, user_rows.is_some()));
            units.push(user_references(&table.name, &table.user_references));
            units.push(table_grants(&name, all_roles, &grants));
        }
    }
    if !matches!(&table.kind, CompiledKind::Tenant { sharing: Some(_), .. }) {
        // Not (or no longer) shareable: sharing left from earlier policies goes, its shares
        // included, so that no old grant comes back if the table is shared again. `plan`
        // drops the call where there is nothing to undo.
        units.push(vec![format!("SELECT tenancy.disable_sharing({});", literal(&name))]);
    }
    // The keys declared globally unique, with their reasons, for lint; others go.
    let kept: Vec<String> = table.waivers.iter().map(|(c, _)| literal(c)).collect();
    let mut waivers = vec![format!(
        "DELETE FROM tenancy.unique_waivers WHERE relation = {}::regclass AND columns <> ALL (ARRAY[{}]::text[]);",
        literal(&name),
        kept.join(", ")
    )];
    for (columns, reason) in &table.waivers {
        waivers.push(format!(
            "INSERT INTO tenancy.unique_waivers (relation, columns, reason) VALUES ({}, {}, {})\n    ON CONFLICT (relation, columns) DO UPDATE SET reason = EXCLUDED.reason WHERE unique_waivers.reason <> EXCLUDED.reason;",
            literal(&name),
            literal(columns),
            literal(reason)
        ));
    }
    units.push(waivers);
    // Quotas and metrics removed from the policy files (or moved to another table) stop being
    // counted here; `plan` drops the call where there is nothing to undo.
    let keep: Vec<String> = counted.iter().map(|r| literal(r)).collect();
    units.push(vec![format!("SELECT tenancy.keep_quotas({}, ARRAY[{}]::text[]);", literal(&name), keep.join(", "))]);
    Block { header: Some(header), object: Object::Relation(name), units }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(taken: &[&str]) -> IndexNames {
        IndexNames {
            taken: taken
                .iter()
                .map(|n| (QualifiedName::new("app", *n), Some(QualifiedName::new("app", "projects"))))
                .collect(),
        }
    }

    #[test]
    fn short_index_names_are_the_ones_postgres_would_choose() {
        let mut n = names(&[]);
        assert_eq!(n.next(&QualifiedName::new("app", "projects"), "org_id"), "projects_org_id_idx");
    }

    #[test]
    fn long_index_names_fit_in_63_bytes_and_never_collide() {
        let mut n = names(&[]);
        let table = QualifiedName::new("app", "a_table_name_long_enough_to_need_cutting_by_postgres");
        let a = n.next(&table, "organization_id_and_some_more");
        let b = n.next(&table, "organization_id_and_some_other");
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with("_idx"));
        // The same input gives the same name on every run (plan and apply agree).
        assert_eq!(names(&[]).next(&table, "organization_id_and_some_more"), a);
        // Multi-byte names are cut at a character boundary.
        let wide = QualifiedName::new("app", "é".repeat(40));
        let w = names(&[]).next(&wide, "org_id");
        assert!(w.len() <= 63 && w.is_char_boundary(w.len()), "{w}");
    }

    #[test]
    fn a_name_a_relation_already_has_gets_a_number() {
        let mut n = names(&["projects_org_id_idx"]);
        let table = QualifiedName::new("app", "projects");
        assert_eq!(n.next(&table, "org_id"), "projects_org_id2_idx");
        assert_eq!(n.next(&table, "org_id"), "projects_org_id3_idx");
        // An index the compiler always declares keeps the name its table has it under.
        let mut n = names(&["projects_public_idx"]);
        assert_eq!(n.own(&table, "public"), "projects_public_idx");
        assert_eq!(n.own(&QualifiedName::new("app", "other"), "public"), "other_public_idx");
    }
}
