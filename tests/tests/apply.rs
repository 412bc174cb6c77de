//! `tenancy apply` against live databases: idempotent, all-or-nothing, and refusing what would
//! leave a table open or an application role able to bypass the policies.

use pg_tenancy_e2e::*;

fn apply(db: &TestDb, policy: &str) -> Result<(), pg_tenancy_compiler::cli::Failure> {
    tenancy(&["apply", &path(policy), "--database-url", &admin_url(&db.name)])
}

#[test]
fn applying_twice_leaves_the_same_policies() {
    let db = TestDb::new();
    let mut admin = db.admin();
    let snapshot = |c: &mut postgres::Client| {
        text(c, "SELECT string_agg(tablename || '.' || policyname || ':' || cmd || ':' || coalesce(qual, '') || coalesce(with_check, ''), E'\\n' ORDER BY tablename, policyname) FROM pg_policies WHERE schemaname = 'app'")
    };
    let before = snapshot(&mut admin);
    apply(&db, "policies/app.toml").unwrap();
    apply(&db, "policies/app.toml").unwrap();
    assert_eq!(snapshot(&mut admin), before);
    let forced = text(&mut admin, "SELECT bool_and(relrowsecurity AND relforcerowsecurity) FROM pg_class WHERE relnamespace = 'app'::regnamespace AND relkind = 'r'");
    assert_eq!(forced.as_deref(), Some("true"));
}

#[test]
fn a_new_uncovered_table_makes_apply_fail_and_change_nothing() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute("CREATE TABLE app.secrets (id uuid PRIMARY KEY, org_id uuid NOT NULL)").unwrap();
    admin.batch_execute("DROP POLICY tenancy_select ON app.projects").unwrap();
    let failure = apply(&db, "policies/app.toml").unwrap_err();
    assert_eq!(failure.diagnostic_codes(), vec!["tenancy::uncovered-table"]);
    assert_eq!(count(&mut admin, "pg_policies WHERE tablename = 'projects' AND policyname = 'tenancy_select'"), 0);
}

#[test]
fn unsafe_or_unknown_application_roles_and_unknown_resources_are_refused() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE app_bypass LOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
        )
        .unwrap();
    let unsafe_policy = example_policy()
        .replace("read_only = [\"app_readonly\"]", "read_only = [\"app_bypass\", \"ghost\"]")
        .replace("projects = { table = \"projects\" }", "widgets = { table = \"projects\" }");
    let failure = try_apply_policy(&db, &unsafe_policy).unwrap_err();
    assert_eq!(
        failure.diagnostic_codes(),
        vec!["tenancy::unsafe-app-role", "tenancy::unknown-app-role", "tenancy::unknown-resource"]
    );
}

#[test]
fn apply_without_the_extension_says_how_to_install_it() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute("DROP EXTENSION pg_tenancy CASCADE").unwrap();
    let failure = apply(&db, "policies/app.toml").unwrap_err();
    assert!(failure.diagnostic_codes().contains(&"tenancy::extension-missing"), "{failure:?}");
}

fn plan(db: &TestDb) -> Vec<pg_tenancy_compiler::emit::Block> {
    let policies = pg_tenancy_compiler::cli::PolicyArgs {
        policies: vec![path("policies/app.toml").into()],
        format: pg_tenancy_compiler::cli::Format::Human,
    };
    pg_tenancy_compiler::cli::plan_in(&policies, &admin_url(&db.name), false).expect("plan").1
}

#[test]
fn a_database_that_matches_the_policies_has_an_empty_plan() {
    let db = TestDb::new();
    assert_eq!(pg_tenancy_compiler::plan::changes(&plan(&db)), 0);
    assert!(tenancy(&["plan", &path("policies/app.toml"), "--database-url", &admin_url(&db.name)]).is_ok());
}

#[test]
fn the_plan_holds_exactly_what_drifted_and_apply_fixes_it() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(
            "DROP POLICY tenancy_delete ON app.projects;
             GRANT TRUNCATE ON app.tasks TO app_user;
             ALTER TABLE app.files NO FORCE ROW LEVEL SECURITY;",
        )
        .unwrap();
    let planned = plan(&db);
    let sql = pg_tenancy_compiler::emit::render(&planned);
    assert_eq!(pg_tenancy_compiler::plan::changes(&planned), 3, "{sql}");
    assert!(sql.contains("CREATE POLICY tenancy_delete ON app.projects"), "{sql}");
    assert!(sql.contains("REVOKE ALL ON TABLE app.tasks"), "{sql}");
    assert!(sql.contains("ALTER TABLE app.files FORCE ROW LEVEL SECURITY;"), "{sql}");
    // plan changed nothing
    assert_eq!(count(&mut admin, "pg_policies WHERE tablename = 'projects' AND policyname = 'tenancy_delete'"), 0);
    apply(&db, "policies/app.toml").unwrap();
    assert_eq!(count(&mut admin, "pg_policies WHERE tablename = 'projects' AND policyname = 'tenancy_delete'"), 1);
    assert_eq!(pg_tenancy_compiler::plan::changes(&plan(&db)), 0, "applying again changes nothing");
}

#[test]
fn a_tenant_table_made_global_loses_its_write_guard() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute("CREATE TABLE app.labels (org_id uuid NOT NULL, id uuid NOT NULL, name text NOT NULL, PRIMARY KEY (org_id, id))")
        .unwrap();
    let guards = |c: &mut postgres::Client| {
        count(c, "pg_trigger WHERE tgrelid = 'app.labels'::regclass AND tgname = 'tenancy_require_context'")
    };
    let tenant = example_policy() + "\n[tables.labels]\nkind = \"tenant\"\n";
    apply_policy(&db, &tenant);
    assert_eq!(guards(&mut admin), 1);
    apply_policy(&db, &tenant.replace("[tables.labels]\nkind = \"tenant\"", "[tables.labels]\nkind = \"global\""));
    assert_eq!(guards(&mut admin), 0, "a global table has no tenant write guard");
    let policies = text(&mut admin, "SELECT string_agg(policyname || ':' || cmd, ',' ORDER BY policyname) FROM pg_policies WHERE tablename = 'labels'");
    assert_eq!(policies.as_deref(), Some("tenancy_select:SELECT"));
}
