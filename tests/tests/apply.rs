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
fn a_failing_statement_is_named_with_what_to_do() {
    let db = TestDb::new();
    let mut admin = db.admin();
    // An organization-level row in a table the policy makes a plain tenant table: its tenant
    // column becomes NOT NULL, which the row refuses.
    admin.batch_execute("ALTER TABLE app.files DROP CONSTRAINT files_pkey; ALTER TABLE app.files ALTER COLUMN org_id DROP NOT NULL; INSERT INTO app.files (id, org_id, name, size_bytes) VALUES (gen_random_uuid(), NULL, 'x', 1)").unwrap();
    let failure = apply(&db, "policies/app.toml").unwrap_err();
    let pg_tenancy_compiler::cli::Failure::Database(message) = &failure else { panic!("{failure:?}") };
    assert!(message.starts_with("applying the policies failed, nothing was changed: column \"org_id\" of relation \"files\" contains null values (SQLSTATE 23502)"), "{message}");
    assert!(
        message.contains("while running:\n    ALTER TABLE app.files ALTER COLUMN org_id SET NOT NULL;"),
        "{message}"
    );
    assert!(message.contains("global_rows = true"), "{message}");
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

#[test]
fn long_index_names_fit_never_collide_and_build_concurrently_before_apply() {
    let db = TestDb::new();
    let mut admin = db.admin();
    // A table whose name has PostgreSQL's longest 63 bytes: `<table>_org_id_idx` cut to 63 bytes
    // is the table's own name (CREATE INDEX IF NOT EXISTS would skip it with a notice), and a
    // table whose natural index name an index on another column already has.
    let long = "a_table_whose_name_has_the_sixty_three_bytes_postgres_allows_xy";
    assert_eq!(long.len(), 63);
    admin
        .batch_execute(&format!(
            "CREATE TABLE app.{long} (id uuid NOT NULL, org_id uuid NOT NULL, PRIMARY KEY (id, org_id));
             CREATE TABLE app.notes (id uuid NOT NULL, org_id uuid NOT NULL, body text, PRIMARY KEY (id, org_id));
             CREATE INDEX notes_org_id_idx ON app.notes (body);"
        ))
        .unwrap();
    let policy =
        format!("{}\n[tables.{long}]\nkind = \"tenant\"\n\n[tables.notes]\nkind = \"tenant\"\n", example_policy());
    let dir = std::env::temp_dir().join(format!("tenancy-concurrent-{}-{}", std::process::id(), db.name));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.toml"), &policy).unwrap();
    let args = pg_tenancy_compiler::cli::PolicyArgs {
        policies: vec![dir.join("app.toml")],
        format: pg_tenancy_compiler::cli::Format::Human,
    };
    let (_, planned) = pg_tenancy_compiler::cli::plan_in(&args, &admin_url(&db.name), false).expect("plan");
    let script = pg_tenancy_compiler::cli::concurrent_index_script(&planned);
    let statements: Vec<&str> = script.lines().filter(|l| l.starts_with("CREATE INDEX CONCURRENTLY")).collect();
    assert_eq!(statements.len(), 2, "{script}");
    for statement in &statements {
        // Each in a transaction of its own, as psql -f runs them: CONCURRENTLY refuses a block.
        admin.batch_execute(statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let names = |c: &mut postgres::Client| {
        text(c, &format!("SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY indexrelid::regclass::text) FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0] WHERE x.indrelid IN ('app.{long}'::regclass, 'app.notes'::regclass) AND a.attname = 'org_id'"))
            .unwrap_or_default()
    };
    let built = names(&mut admin);
    let built: Vec<&str> = built.split(',').collect();
    assert_eq!(built.len(), 2, "{built:?}");
    assert!(built.iter().all(|n| n.trim_start_matches("app.").len() <= 63), "{built:?}");
    assert!(built.contains(&"app.notes_org_id2_idx"), "{built:?}");
    try_apply_policy(&db, &policy).unwrap();
    assert_eq!(names(&mut admin).split(',').count(), 2, "apply found the indexes built and added none");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn check_reads_a_pg_dump_of_the_database() {
    let db = TestDb::new();
    let mut admin = db.admin();
    // What real dumps carry besides tables: a sequence, an enum, a function whose body has
    // semicolons, a materialized view (WITH NO DATA), a trigger, comments with quotes.
    admin
        .batch_execute(
            "CREATE SCHEMA extra;
             CREATE SEQUENCE extra.tickets START 1 NO MINVALUE NO MAXVALUE;
             CREATE TYPE extra.status AS ENUM ('open', 'closed');
             CREATE TABLE extra.log (at timestamp(6) without time zone NOT NULL, status extra.status);
             CREATE FUNCTION extra.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.at := now(); RETURN NEW; END $$;
             CREATE TRIGGER touch BEFORE INSERT ON extra.log FOR EACH ROW EXECUTE FUNCTION extra.touch();
             CREATE MATERIALIZED VIEW extra.statuses AS SELECT DISTINCT status FROM extra.log WITH NO DATA;
             COMMENT ON TABLE app.projects IS 'projects; the ''main'' table';",
        )
        .unwrap();
    let dump = std::process::Command::new("/usr/lib/postgresql/15/bin/pg_dump")
        .args(["--schema-only", "--dbname", &admin_url(&db.name)])
        .output()
        .expect("pg_dump runs");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let file = std::env::temp_dir().join(format!("tenancy-dump-{}-{}.sql", std::process::id(), db.name));
    std::fs::write(&file, &dump.stdout).unwrap();
    let checked = tenancy(&["check", &path("policies/app.toml"), "--schema", file.to_str().unwrap()]);
    std::fs::remove_file(&file).ok();
    checked.expect("the policies check against the dump");
}
