//! Two levels of tenants: organizations and their projects, as a Langfuse-like application
//! defines them (text ids, its own organizations, projects, memberships and per-project
//! memberships that override the organization role, including no access). Organization-level
//! tables are the organization's in any of its projects, with the organization's role;
//! project-level tables are one project's only; NULL-keyed rows are global. Everything runs as
//! the application role, and the attacks are the application's own SQL.

use pg_tenancy_e2e::*;

const TWO_LEVELS: &str = "
CREATE SCHEMA two;
CREATE TABLE two.organizations (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE two.organization_memberships (
    org_id   text NOT NULL REFERENCES two.organizations (id) ON DELETE CASCADE,
    user_id  text NOT NULL,
    role     text NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE TABLE two.projects (
    id          text PRIMARY KEY,
    org_id      text NOT NULL REFERENCES two.organizations (id) ON DELETE CASCADE,
    name        text NOT NULL,
    deleted_at  timestamptz
);
CREATE INDEX ON two.projects (org_id);
CREATE TABLE two.project_memberships (
    project_id  text NOT NULL REFERENCES two.projects (id) ON DELETE CASCADE,
    user_id     text NOT NULL,
    role        text NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE TABLE two.api_keys (
    id      text PRIMARY KEY,
    org_id  text NOT NULL REFERENCES two.organizations (id),
    note    text NOT NULL,
    -- The key that created this one (Langfuse's created_by_api_key_id): a table referencing itself.
    created_by  text REFERENCES two.api_keys (id)
);
CREATE INDEX ON two.api_keys (created_by);
CREATE INDEX ON two.api_keys (org_id);
CREATE TABLE two.traces (
    id          text PRIMARY KEY,
    project_id  text NOT NULL REFERENCES two.projects (id),
    name        text NOT NULL
);
CREATE INDEX ON two.traces (project_id);
CREATE TABLE two.observations (
    id        text PRIMARY KEY,
    trace_id  text NOT NULL REFERENCES two.traces (id) ON DELETE CASCADE,
    body      text NOT NULL
);
CREATE INDEX ON two.observations (trace_id);
-- NULL project_id: models every project reads.
CREATE TABLE two.models (
    id          text PRIMARY KEY,
    project_id  text REFERENCES two.projects (id),
    name        text NOT NULL
);
CREATE INDEX ON two.models (project_id);
INSERT INTO two.organizations VALUES ('org_acme', 'Acme'), ('org_globex', 'Globex');
INSERT INTO two.organization_memberships VALUES
    ('org_acme', 'alice', 'OWNER'), ('org_acme', 'bob', 'MEMBER'), ('org_acme', 'carol', 'VIEWER'),
    ('org_globex', 'gina', 'OWNER');
INSERT INTO two.projects (id, org_id, name) VALUES
    ('prj_a1', 'org_acme', 'Acme one'), ('prj_a2', 'org_acme', 'Acme two'), ('prj_g1', 'org_globex', 'Globex one');
INSERT INTO two.project_memberships VALUES ('prj_a1', 'bob', 'ADMIN'), ('prj_a2', 'bob', 'NONE');
INSERT INTO two.api_keys VALUES ('key_acme', 'org_acme', 'acme key', NULL), ('key_globex', 'org_globex', 'globex key', NULL);
INSERT INTO two.traces VALUES ('tr_a1', 'prj_a1', 'a1 trace'), ('tr_a2', 'prj_a2', 'a2 trace'), ('tr_g1', 'prj_g1', 'g1 trace');
INSERT INTO two.observations VALUES ('ob_a1', 'tr_a1', 'a1'), ('ob_g1', 'tr_g1', 'g1');
INSERT INTO two.models VALUES ('m_global', NULL, 'gpt'), ('m_a1', 'prj_a1', 'a1 model'), ('m_g1', 'prj_g1', 'g1 model');
INSERT INTO tenancy.resources (name, kind, label) VALUES ('traces', 'count', 'Trace');
INSERT INTO tenancy.plan_limits (plan, resource, quota) VALUES ('free', 'traces', 2);
";

const POLICY: &str = r#"
schemas = ["two"]
tenant_column = "project_id"
organization_column = "org_id"
random_ids = "the application fills every id with a cuid"

[roles]
read_write = ["app_user"]
read_only = ["app_readonly"]

[defaults]
select = "guest"
insert = "member"
update = "member"
delete = "admin"

[organizations]
table = "two.organizations"
id = "id"
name = "name"

[memberships]
table = "two.organization_memberships"
organization = "org_id"
user = "user_id"
role = "role"
roles = { OWNER = "owner", ADMIN = "admin", MEMBER = "member", VIEWER = "guest" }

[projects]
table = "two.projects"
id = "id"
organization = "org_id"
name = "name"
active = "deleted_at IS NULL"

[project_memberships]
table = "two.project_memberships"
project = "project_id"
user = "user_id"
role = "role"
roles = { OWNER = "owner", ADMIN = "admin", MEMBER = "member", VIEWER = "guest", NONE = "none" }

[tables."two.organizations"]
kind = "tenant"
level = "organization"
tenant_column = "id"
insert = "none"
update = "admin"
delete = "owner"

[tables."two.organization_memberships"]
kind = "tenant"
level = "organization"
insert = "admin"
update = "admin"
delete = "admin"

[tables."two.projects"]
kind = "tenant"
level = "organization"
insert = "admin"
update = "admin"
delete = "owner"

[tables."two.project_memberships"]
kind = "tenant"
insert = "admin"
update = "admin"
delete = "admin"

[tables."two.api_keys"]
kind = "tenant"
level = "organization"
select = "admin"
insert = "admin"
update = "admin"
delete = "admin"

[tables."two.traces"]
kind = "tenant"

[tables."two.observations"]
kind = "tenant"
parent = "trace_id"

[tables."two.models"]
kind = "tenant"
global_rows = true

[quotas]
traces = { table = "two.traces" }
"#;

fn project(key: &str, user: &str) -> String {
    format!("SELECT tenancy.set_project_context_key('{key}', '{user}')")
}

fn org(key: &str, user: &str) -> String {
    format!("SELECT tenancy.set_context_key('{key}', '{user}')")
}

fn ids(c: &mut postgres::Client, start: &str, table: &str) -> Vec<String> {
    in_context(c, start, &format!("SELECT id FROM {table} ORDER BY id")).unwrap()
}

/// The error of `sql` in a transaction started with `start` (rolled back).
fn refused(c: &mut postgres::Client, start: &str, sql: &str) -> DbError {
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(start).unwrap();
    match tx.batch_execute(sql) {
        Ok(()) => panic!("{sql} succeeded under {start}"),
        Err(e) => DbError::of(&e),
    }
}

#[test]
fn projects_keep_their_rows_and_organizations_keep_theirs_with_the_organization_role() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(TWO_LEVELS).unwrap();
    apply_policy(&db, POLICY);
    let mut c = db.app();
    // lint reads each table's own tenant column (a project's or its organization's): no error,
    // whichever column it is given (it compared one column across levels, and failed).
    for column in ["project_id", "org_id"] {
        let url = admin_url(&db.name);
        let linted = tenancy(&["lint", "--database-url", &url, "--schema", "two", "--tenant-column", column]);
        assert!(linted.is_ok(), "lint --tenant-column {column}: {linted:?}");
    }

    // The sync made each project a child of its organization, under the uuid of its key.
    assert_eq!(
        text(
            &mut admin,
            "SELECT string_agg(p.key || '<' || o.key, ',' ORDER BY p.key) FROM tenancy.organizations p
               JOIN tenancy.organizations o ON o.id = p.parent_id"
        )
        .as_deref(),
        Some("prj_a1<org_acme,prj_a2<org_acme,prj_g1<org_globex")
    );

    // Project-level rows: one project's only; global rows in every project.
    assert_eq!(ids(&mut c, &project("prj_a1", "alice"), "two.traces"), ["tr_a1"]);
    assert_eq!(ids(&mut c, &project("prj_a2", "alice"), "two.traces"), ["tr_a2"]);
    assert_eq!(ids(&mut c, &project("prj_a1", "alice"), "two.observations"), ["ob_a1"]);
    assert_eq!(ids(&mut c, &project("prj_a1", "alice"), "two.models"), ["m_a1", "m_global"]);
    assert_eq!(ids(&mut c, &project("prj_g1", "gina"), "two.models"), ["m_g1", "m_global"]);
    // Organization-level rows: the organization's, in any of its projects and in the
    // organization's own context.
    assert_eq!(ids(&mut c, &project("prj_a2", "alice"), "two.api_keys"), ["key_acme"]);
    assert_eq!(ids(&mut c, &org("org_acme", "alice"), "two.api_keys"), ["key_acme"]);
    assert_eq!(ids(&mut c, &org("org_acme", "alice"), "two.projects"), ["prj_a1", "prj_a2"]);
    // A table that references itself is written under its policies (a policy that read its own
    // table failed: "infinite recursion"), and only ever points at the organization's rows.
    in_context(
        &mut c,
        &org("org_acme", "alice"),
        "INSERT INTO two.api_keys (id, note, created_by) VALUES ('key_acme2', 'second', 'key_acme') RETURNING id",
    )
    .unwrap();
    in_context(
        &mut c,
        &org("org_acme", "alice"),
        "UPDATE two.api_keys SET note = 'renamed' WHERE id = 'key_acme2' RETURNING id",
    )
    .unwrap();
    let other = refused(
        &mut c,
        &org("org_acme", "alice"),
        "INSERT INTO two.api_keys (id, note, created_by) VALUES ('key_x', 'x', 'key_globex')",
    );
    let missing = refused(
        &mut c,
        &org("org_acme", "alice"),
        "INSERT INTO two.api_keys (id, note, created_by) VALUES ('key_x', 'x', 'key_nope')",
    );
    assert_eq!((other.code.as_str(), other.message.as_str()), (missing.code.as_str(), missing.message.as_str()));
    assert_eq!(other.code, "42501", "{other:?}");
    // An organization context reads no project's rows, and writes none.
    assert!(ids(&mut c, &org("org_acme", "alice"), "two.traces").is_empty());
    let e = refused(&mut c, &org("org_acme", "alice"), "INSERT INTO two.traces VALUES ('tr_x', 'prj_a1', 'x')");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("42501", "no project context"), "{e:?}");

    // The read-only role reads a project and writes nothing, not even project roles.
    let mut ro = db.connect_as("app_readonly");
    assert_eq!(ids(&mut ro, &project("prj_a1", "alice"), "two.traces"), ["tr_a1"]);
    let e = refused(&mut ro, &project("prj_a1", "alice"), "INSERT INTO two.traces VALUES ('tr_ro', 'prj_a1', 'x')");
    assert_eq!(e.code, "42501", "{e:?}");
    let e = refused(
        &mut ro,
        &project("prj_a1", "alice"),
        "SELECT tenancy.set_project_member(tenancy.org_key_id('prj_a1'), 'bob', 'owner')",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    // Without a context nothing is visible, the project readers are NULL, and no role can be set.
    assert_eq!(count(&mut c, "two.traces"), 0);
    assert_eq!(text(&mut c, "SELECT coalesce(tenancy.current_project_key(), 'none')").as_deref(), Some("none"));
    let e = error_of(&mut c, "SELECT tenancy.set_project_member(tenancy.org_key_id('prj_a1'), 'bob', 'owner')");
    assert_eq!(e.code, "42501", "{e:?}");
    // The role in a project: bob is a member of Acme, admin of prj_a1, and has no access to
    // prj_a2; the refusal reads exactly as for another organization's project and for none.
    assert_eq!(
        in_context(
            &mut c,
            &project("prj_a1", "bob"),
            "SELECT tenancy.current_member_role() || '/' || tenancy.has_org_role('admin')::text"
        )
        .unwrap(),
        ["admin/false"]
    );
    let details: Vec<(String, String)> = ["prj_a2", "prj_g1", "prj_nope"]
        .iter()
        .map(|p| {
            let e = error_of(&mut c, &project(p, "bob"));
            assert_eq!((e.code.as_str(), e.message.as_str()), ("42501", "permission denied to set tenant context"));
            (e.detail.unwrap_or_default().replace(p, "P"), e.hint.unwrap_or_default())
        })
        .collect();
    assert!(details.windows(2).all(|w| w[0] == w[1]), "{details:?}");
    // A project is no organization: set_context refuses it as it refuses a stranger.
    let e = error_of(&mut c, &org("prj_a1", "alice"));
    assert_eq!(e.code, "42501");

    // Organization-level rules use the organization role: a project admin who is a member of
    // the organization does not see or write the organization's API keys or memberships.
    assert!(ids(&mut c, &project("prj_a1", "bob"), "two.api_keys").is_empty());
    let e = refused(
        &mut c,
        &project("prj_a1", "bob"),
        "INSERT INTO two.organization_memberships VALUES ('org_acme', 'mallory', 'OWNER')",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    let e = refused(
        &mut c,
        &project("prj_a1", "bob"),
        "SELECT tenancy.add_member(tenancy.org_key_id('org_acme'), 'mallory', 'admin')",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    // Nor through the sync's own helpers, which any read-write role may call (found by an
    // attack: a project admin renamed the organization).
    let e = refused(
        &mut c,
        &project("prj_a1", "bob"),
        "SELECT two.tenancy_sync_organizations_checked('UPDATE', tenancy.org_key_id('org_acme'),
             tenancy.org_key_id('org_acme'), 'org_acme', 'acme-hijacked', 'Pwned', true)",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    // A project's admin neither locks an organization owner out of the project nor plants a
    // role for someone outside the organization.
    let e = refused(
        &mut c,
        &project("prj_a1", "bob"),
        "SELECT tenancy.set_project_member(tenancy.org_key_id('prj_a1'), 'alice', NULL)",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    let e = refused(
        &mut c,
        &project("prj_a1", "bob"),
        "SELECT tenancy.set_project_member(tenancy.org_key_id('prj_a1'), 'gina', 'member')",
    );
    assert_eq!(e.code, "42704", "{e:?}");
    // Nor does a project's owner who is a viewer of the organization (a second attack round):
    // organization roles rank over project ones.
    in_context(
        &mut c,
        &org("org_acme", "alice"),
        "SELECT tenancy.set_project_member(tenancy.org_key_id('prj_a2'), 'carol', 'owner')::text",
    )
    .unwrap();
    let e = refused(
        &mut c,
        &project("prj_a2", "carol"),
        "SELECT tenancy.set_project_member(tenancy.org_key_id('prj_a2'), 'alice', NULL)",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    let e = refused(
        &mut c,
        &project("prj_a2", "carol"),
        "INSERT INTO two.project_memberships VALUES ('prj_a2', 'alice', 'NONE')",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    // A blank role is a mistake, not no access.
    let e = refused(
        &mut c,
        &org("org_acme", "alice"),
        "SELECT tenancy.set_project_member(tenancy.org_key_id('prj_a2'), 'bob', ' ')",
    );
    assert_eq!(e.code, "22023", "{e:?}");
    // A member who leaves the organization leaves its project roles: none comes back on rejoining.
    in_context(
        &mut c,
        &org("org_acme", "alice"),
        "DELETE FROM two.organization_memberships WHERE user_id = 'carol' RETURNING user_id",
    )
    .unwrap();
    in_context(
        &mut c,
        &org("org_acme", "alice"),
        "INSERT INTO two.organization_memberships VALUES ('org_acme', 'carol', 'VIEWER') RETURNING user_id",
    )
    .unwrap();
    assert_eq!(
        in_context(&mut c, &project("prj_a2", "carol"), "SELECT tenancy.current_member_role()").unwrap(),
        ["guest"]
    );
    // A project is created for a member of its organization only.
    let e = refused(
        &mut c,
        &org("org_acme", "alice"),
        "SELECT tenancy.create_organization('P', 'p-x', 'gina', 'free', NULL, tenancy.org_key_id('org_acme'))",
    );
    assert_eq!(e.code, "42704", "{e:?}");
    // A parallel worker reads the project context as its leader does.
    assert_eq!(
        in_context(
            &mut c,
            &format!("{}; SET LOCAL force_parallel_mode = on", project("prj_a1", "bob")),
            "SELECT tenancy.current_project_key() || '/' || tenancy.has_org_role('admin')::text"
        )
        .unwrap(),
        ["prj_a1/false"]
    );
    // ... but does administer the project.
    in_context(
        &mut c,
        &project("prj_a1", "bob"),
        "INSERT INTO two.traces VALUES ('tr_bob', 'prj_a1', 'bob') RETURNING id",
    )
    .unwrap();
    // Not above their own role, and not in another project.
    let e = refused(
        &mut c,
        &project("prj_a1", "bob"),
        "INSERT INTO two.project_memberships VALUES ('prj_a1', 'carol', 'OWNER')",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    let e = refused(
        &mut c,
        &project("prj_a1", "bob"),
        "INSERT INTO two.project_memberships VALUES ('prj_a2', 'bob', 'ADMIN')",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    let e = refused(
        &mut c,
        &project("prj_a1", "bob"),
        "SELECT tenancy.set_project_member(tenancy.org_key_id('prj_a2'), 'bob', 'admin')",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    // Rows cannot be moved into another project or point at another project's rows: the
    // foreign key's error reads as for a row that does not exist.
    let e =
        refused(&mut c, &project("prj_a1", "alice"), "UPDATE two.traces SET project_id = 'prj_a2' WHERE id = 'tr_a1'");
    assert_eq!(e.code, "42501", "{e:?}");
    let missing =
        refused(&mut c, &project("prj_a1", "alice"), "INSERT INTO two.observations VALUES ('ob_x', 'tr_nope', 'x')");
    let other =
        refused(&mut c, &project("prj_a1", "alice"), "INSERT INTO two.observations VALUES ('ob_x', 'tr_g1', 'x')");
    assert_eq!(
        (other.code.as_str(), other.message.replace("tr_g1", "T")),
        (missing.code.as_str(), missing.message.replace("tr_nope", "T"))
    );
    // Global rows are read by all and written by none.
    assert!(in_context(
        &mut c,
        &project("prj_a1", "alice"),
        "UPDATE two.models SET name = 'mine' WHERE id = 'm_global' RETURNING id"
    )
    .unwrap()
    .is_empty());
    let e = refused(&mut c, &project("prj_a1", "alice"), "INSERT INTO two.models VALUES ('m_new', NULL, 'mine')");
    assert_eq!(e.code, "42501", "{e:?}");
    assert_eq!(affected(&mut admin, "SELECT FROM two.models WHERE id = 'm_global' AND name = 'gpt'"), 1);

    // The application manages projects through its own tables: an owner creates one in the
    // organization's context, and may then enter it; a member may not create one, nor anyone
    // one in another organization.
    in_context(
        &mut c,
        &org("org_acme", "alice"),
        "INSERT INTO two.projects (id, org_id, name) VALUES ('prj_a3', 'org_acme', 'Acme three') RETURNING id",
    )
    .unwrap();
    assert!(ids(&mut c, &project("prj_a3", "alice"), "two.traces").is_empty());
    let e = refused(
        &mut c,
        &org("org_acme", "bob"),
        "INSERT INTO two.projects (id, org_id, name) VALUES ('prj_b', 'org_acme', 'b')",
    );
    assert_eq!(e.code, "42501", "{e:?}");
    let e = refused(
        &mut c,
        &org("org_acme", "alice"),
        "INSERT INTO two.projects (id, org_id, name) VALUES ('prj_x', 'org_globex', 'x')",
    );
    assert_eq!(e.code, "42501", "{e:?}");

    // A project override written by the application takes access away from a session that is
    // in the project already, by its next statement.
    let mut carol = db.app();
    carol.batch_execute("SELECT tenancy.set_session_project_context_key('prj_a1', 'carol')").unwrap();
    assert_eq!(count(&mut carol, "two.traces"), 2);
    in_context(
        &mut c,
        &project("prj_a1", "alice"),
        "INSERT INTO two.project_memberships VALUES ('prj_a1', 'carol', 'NONE') RETURNING user_id",
    )
    .unwrap();
    assert_eq!(count(&mut carol, "two.traces"), 0);
    assert_eq!(error_of(&mut carol, &project("prj_a1", "carol")).code, "42501");
    // A project deleted by the application (soft: deleted_at) closes it.
    in_context(
        &mut c,
        &org("org_acme", "alice"),
        "UPDATE two.projects SET deleted_at = now() WHERE id = 'prj_a3' RETURNING id",
    )
    .unwrap();
    assert_eq!(error_of(&mut c, &project("prj_a3", "alice")).code, "42501");

    // Quotas count per project, against the organization's plan (free: 2 traces).
    in_context(
        &mut c,
        &project("prj_a2", "alice"),
        "INSERT INTO two.traces VALUES ('tr_a2b', 'prj_a2', 'x') RETURNING id",
    )
    .unwrap();
    let e = refused(&mut c, &project("prj_a2", "alice"), "INSERT INTO two.traces VALUES ('tr_a2c', 'prj_a2', 'x')");
    assert_eq!(e.code, "53400", "{e:?}");
    in_context(
        &mut c,
        &project("prj_g1", "gina"),
        "INSERT INTO two.traces VALUES ('tr_g1b', 'prj_g1', 'x') RETURNING id",
    )
    .unwrap();
    assert_eq!(
        in_context(
            &mut c,
            &project("prj_a2", "alice"),
            "SELECT used || '/' || quota FROM tenancy.quotas(tenancy.current_project()) WHERE resource = 'traces'"
        )
        .unwrap(),
        ["2/2"]
    );

    // The plan compares the project column with a parameter: no InitPlan, no call per row.
    let mut explain = db.admin();
    explain
        .batch_execute(
            "SET tenancy.allow_explain = on; SET enable_seqscan = off; SET ROLE app_user; BEGIN;
             SELECT tenancy.set_project_context_key('prj_a1', 'alice');",
        )
        .unwrap();
    let plan: Vec<String> = explain
        .query("EXPLAIN (COSTS OFF) SELECT id FROM two.traces WHERE name = 'x'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("(project_id = $0)") && !plan.contains("InitPlan"), "{plan}");
}

/// `tenancy verify`, given the policy files, creates the organizations, owners and projects as
/// rows of the application's own tables (the sync copies them), acts in each project and each
/// organization, and proves every table of the two levels; a policy that lets a project read its
/// organization's other projects' rows is a leak it names. Without the policy files it cannot
/// know the projects, and says so.
#[test]
fn verify_proves_both_levels_from_the_policy_files() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(TWO_LEVELS).unwrap();
    apply_policy(&db, POLICY);
    let report = verify_with_policy(&db, POLICY, &["app_user"]);
    let text = pg_tenancy_compiler::verify::render_human(&report);
    assert_eq!(report.tenants, ["A1", "B1", "A2", "A", "B"], "{text}");
    assert_eq!((report.leaks(), report.unverified()), (0, 0), "{text}");
    assert_eq!(report.results.len(), 8, "{text}");
    let reach = |table: &str, command: &str| {
        let r = report.results.iter().find(|r| r.table == table).unwrap_or_else(|| panic!("{table}\n{text}"));
        r.cells[command].reach.iter().copied().collect::<Vec<_>>().join(",")
    };
    assert_eq!(reach("two.traces", "select"), "own");
    assert_eq!(reach("two.observations", "insert"), "own");
    assert_eq!(reach("two.models", "select"), "global,own", "NULL-keyed rows are every project's");
    assert_eq!(reach("two.api_keys", "update"), "own");
    assert_eq!(reach("two.traces", "no context"), "closed");
    // Its own rows that other rows reference are reported as what refused them, not as a
    // policy; a row of its own that nothing references yet is deleted (a membership that is not
    // the last owner's).
    assert_eq!(reach("two.organizations", "delete"), "refused", "{text}");
    assert!(text.contains("violates foreign key constraint \"api_keys_org_id_fkey\""), "{text}");
    assert_eq!(reach("two.organization_memberships", "delete"), "own", "{text}");
    // Nothing is left behind.
    assert_eq!(count(&mut admin, "two.projects WHERE name LIKE 'Verify %'"), 0);
    assert_eq!(count(&mut admin, "tenancy.organizations WHERE name LIKE 'Verify %'"), 0);

    // A project that reads its organization's other projects' traces.
    admin
        .batch_execute("ALTER POLICY tenancy_select ON two.traces USING (project_id IN (SELECT id FROM two.projects))")
        .unwrap();
    let report = verify_with_policy(&db, POLICY, &["app_user"]);
    let text = pg_tenancy_compiler::verify::render_human(&report);
    let leaks: Vec<&String> = report.results.iter().flat_map(|r| r.cells.values()).flat_map(|c| &c.leaks).collect();
    assert!(leaks.iter().any(|l| l.contains("acting for project A1 of organization A sees 1 row(s)")), "{text}");
    assert!(leaks.iter().all(|l| !l.contains("B1")), "organization B's own project is alone: {text}");

    // Without the policy files, the two-level tables cannot be written: said, not passed.
    let report = pg_tenancy_compiler::verify::verify(
        &mut db.admin(),
        &pg_tenancy_compiler::verify::Options {
            schemas: vec!["two".into()],
            tenant_column: "project_id".into(),
            app_roles: vec!["app_user".into()],
        },
        None,
    )
    .unwrap();
    assert!(report.unverified_tables.len() >= 6, "{report:?}");
    assert!(report.unverified_tables.iter().all(|(_, why)| why.contains("--policies")), "{report:?}");
}

/// A lookup on a project-level table (a project's API token, looked up before any context)
/// returns the project and its organization, which start that project's context; an unknown
/// key returns nothing.
#[test]
fn a_lookup_on_a_project_level_table_finds_the_project_and_its_organization() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(TWO_LEVELS).unwrap();
    admin
        .batch_execute(
            "CREATE TABLE two.trace_tokens (token text PRIMARY KEY, project_id text NOT NULL REFERENCES two.projects (id),
                                            created_by text NOT NULL);
             CREATE INDEX ON two.trace_tokens (project_id);
             INSERT INTO two.trace_tokens VALUES ('tok_a1', 'prj_a1', 'bob'), ('tok_g1', 'prj_g1', 'gina');",
        )
        .unwrap();
    let policy = POLICY.to_string()
        + r#"
[tables."two.trace_tokens"]
kind = "tenant"
globally_unique = { token = "looked up before the project is known" }

[lookups]
trace_token = { table = "two.trace_tokens", key = "token", user = "created_by" }
"#;
    apply_policy(&db, &policy);
    let mut c = db.app();
    // As the application role, without a context; the ids' keys read back as the DBA.
    let found = |c: &mut postgres::Client, admin: &mut postgres::Client, token: &str| {
        let rows = c
            .query("SELECT org_id::text, project_id::text, user_id FROM two.tenancy_lookup_trace_token($1)", &[&token])
            .unwrap();
        rows.iter()
            .map(|r| {
                let mut key = |id: String| {
                    admin
                        .query_one("SELECT key FROM tenancy.organizations WHERE id = $1::text::uuid", &[&id])
                        .unwrap()
                        .get::<_, String>(0)
                };
                (key(r.get(0)), key(r.get(1)), r.get::<_, String>(2))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(found(&mut c, &mut admin, "tok_a1"), [("org_acme".into(), "prj_a1".into(), "bob".into())]);
    assert_eq!(found(&mut c, &mut admin, "tok_g1"), [("org_globex".into(), "prj_g1".into(), "gina".into())]);
    assert!(found(&mut c, &mut admin, "tok_missing").is_empty());
    // What it returns starts the project's context.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(
        "SELECT tenancy.set_project_context(l.project_id, l.user_id) FROM two.tenancy_lookup_trace_token('tok_a1') l",
    )
    .unwrap();
    assert_eq!(text(&mut tx, "SELECT string_agg(id, ',') FROM two.traces").as_deref(), Some("tr_a1"));
}

/// The organization's admins manage its projects' memberships from the organization's context
/// (an organization settings page), as the project's admins do from the project's: an
/// organization member who is no admin reaches none of them there, and nobody reaches another
/// organization's projects, whose ids are refused like ids that do not exist.
#[test]
fn organization_admins_manage_project_memberships_from_the_organizations_context() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(TWO_LEVELS).unwrap();
    apply_policy(&db, POLICY);
    let mut c = db.app();
    let memberships = "SELECT project_id || ':' || user_id || ':' || role FROM two.project_memberships ORDER BY 1";
    let rows = |c: &mut postgres::Client, start: &str| -> Vec<String> {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(start).unwrap();
        tx.query(memberships, &[]).unwrap().iter().map(|r| r.get(0)).collect()
    };
    let alice = org("org_acme", "alice");
    assert_eq!(rows(&mut c, &alice), ["prj_a1:bob:ADMIN", "prj_a2:bob:NONE"]);
    // An owner adds, changes and removes a project role from the organization's context, and the
    // sync keeps tenancy.project_members.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&alice).unwrap();
    tx.batch_execute("INSERT INTO two.project_memberships VALUES ('prj_a2', 'carol', 'MEMBER')").unwrap();
    tx.commit().unwrap();
    let role_of = |admin: &mut postgres::Client, user: &str| {
        text(
            admin,
            &format!(
                "SELECT role FROM tenancy.project_members WHERE user_id = '{user}'
                    AND project_id = tenancy.org_key_id('prj_a2')"
            ),
        )
    };
    assert_eq!(role_of(&mut admin, "carol").as_deref(), Some("member"));
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&alice).unwrap();
    assert_eq!(affected(&mut tx, "UPDATE two.project_memberships SET role = 'ADMIN' WHERE user_id = 'carol'"), 1);
    tx.commit().unwrap();
    assert_eq!(role_of(&mut admin, "carol").as_deref(), Some("admin"));
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&alice).unwrap();
    assert_eq!(affected(&mut tx, "DELETE FROM two.project_memberships WHERE user_id = 'carol'"), 1);
    tx.commit().unwrap();
    assert_eq!(role_of(&mut admin, "carol"), None);
    // An organization member who is no admin (bob is a project admin, in the project only).
    let bob = org("org_acme", "bob");
    assert!(rows(&mut c, &bob).is_empty());
    assert_eq!(
        refused(&mut c, &bob, "INSERT INTO two.project_memberships VALUES ('prj_a2', 'carol', 'MEMBER')").code,
        "42501"
    );
    assert_eq!(rows(&mut c, &project("prj_a1", "bob")), ["prj_a1:bob:ADMIN"]);
    // Another organization's project reads like one that does not exist.
    let [foreign, missing] = ["prj_g1", "prj_missing"].map(|p| {
        refused(&mut c, &alice, &format!("INSERT INTO two.project_memberships VALUES ('{p}', 'carol', 'MEMBER')"))
    });
    assert_eq!(foreign.code, "42501", "{}", foreign.message);
    assert_eq!((foreign.code, foreign.message), (missing.code, missing.message));
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&org("org_globex", "gina")).unwrap();
    assert_eq!(affected(&mut tx, "UPDATE two.project_memberships SET role = role"), 0);
    assert_eq!(affected(&mut tx, "DELETE FROM two.project_memberships"), 0);
}

/// A member who leaves the organization leaves its project roles; joining again, through the
/// application's memberships, brings back the project roles the application's table still
/// shows, a project closed to them included (an attack round re-added a member, by deleting
/// and inserting their row, to open such a project).
#[test]
fn a_member_who_joins_again_gets_the_project_roles_the_application_shows() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(TWO_LEVELS).unwrap();
    apply_policy(&db, POLICY);
    let mut c = db.app();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&org("org_acme", "alice")).unwrap();
    tx.batch_execute(
        "DELETE FROM two.organization_memberships WHERE user_id = 'bob';
         INSERT INTO two.organization_memberships VALUES ('org_acme', 'bob', 'MEMBER');",
    )
    .unwrap();
    tx.commit().unwrap();
    // prj_a2 is still closed to bob (NONE), and he is still prj_a1's admin.
    let mut tx = c.transaction().unwrap();
    let e = error_of(&mut tx, &project("prj_a2", "bob"));
    assert_eq!(e.code, "42501", "{}", e.message);
    drop(tx);
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&project("prj_a1", "bob")).unwrap();
    assert_eq!(text(&mut tx, "SELECT tenancy.current_member_role()").as_deref(), Some("admin"));
}

/// A project made with tenancy.create_organization(..., parent_id) gets its owner the project's
/// owner role: an admin of the organization makes themselves its owner, not another member (an
/// attack round had an admin hand a project's owner role out that way, above their own role);
/// an owner of the organization may make anyone.
#[test]
fn an_organization_admin_does_not_make_another_member_a_projects_owner() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(TWO_LEVELS).unwrap();
    apply_policy(&db, POLICY);
    admin.batch_execute("UPDATE two.organization_memberships SET role = 'ADMIN' WHERE user_id = 'carol'").unwrap();
    let mut c = db.app();
    let create = |owner: &str, slug: &str| {
        format!("SELECT tenancy.create_organization('p', '{slug}', '{owner}', 'free', NULL, tenancy.current_org())")
    };
    let e = refused(&mut c, &org("org_acme", "carol"), &create("bob", "by-carol-for-bob"));
    assert_eq!(e.code, "42501", "{}", e.message);
    assert!(e.message.contains("owner of a new project"), "{}", e.message);
    for (user, owner, slug) in [("carol", "carol", "by-carol"), ("alice", "bob", "by-alice-for-bob")] {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&org("org_acme", user)).unwrap();
        tx.batch_execute(&create(owner, slug)).unwrap_or_else(|e| panic!("{user} making {owner} an owner: {e}"));
        tx.commit().unwrap();
    }
}
