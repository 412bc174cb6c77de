//! `tenancy verify` against live databases: the compiled example is proven isolated, with the
//! reach each role has per table and command; a schema the verifier has never seen, with
//! hand-written policies, gets every one of its leaks found, and nothing is left behind.

use pg_tenancy_compiler::verify::{self, Kind, Options, Report};
use pg_tenancy_e2e::*;

fn options(schemas: &[&str], roles: &[&str]) -> Options {
    Options {
        schemas: schemas.iter().map(|s| s.to_string()).collect(),
        tenant_column: "org_id".into(),
        app_roles: roles.iter().map(|s| s.to_string()).collect(),
    }
}

/// The cell text for (role, table, command).
fn cell(report: &Report, role: &str, table: &str, command: &str) -> String {
    let r =
        report.results.iter().find(|r| r.role == role && r.table == table).unwrap_or_else(|| panic!("{role} {table}"));
    let c = &r.cells[command];
    if !c.leaks.is_empty() {
        return format!("LEAK: {}", c.leaks.join("; "));
    }
    c.reach.iter().copied().collect::<Vec<_>>().join(",")
}

#[test]
fn the_compiled_example_is_isolated_for_every_role_table_and_command() {
    let db = TestDb::new();
    let report = verify::verify(&mut db.admin(), &options(&[], &[])).unwrap();
    assert_eq!(report.roles, ["app_readonly", "app_user"]);
    assert_eq!(report.organizations, 2);
    assert_eq!(report.leaks(), 0, "{}", verify::render_human(&report));
    assert_eq!(report.unverified(), 0, "{}", verify::render_human(&report));
    let expected = [
        ("app_user", "app.documents", ["own,public,shared", "own", "own,shared", "own", "closed"]),
        ("app_user", "app.comments", ["own", "own", "denied", "own", "closed"]),
        ("app_user", "app.countries", ["all", "denied", "denied", "denied", "closed"]),
        ("app_readonly", "app.projects", ["own", "denied", "denied", "denied", "closed"]),
        ("app_readonly", "app.documents", ["own,public,shared", "denied", "denied", "denied", "closed"]),
    ];
    for (role, table, cells) in expected {
        for (command, want) in verify::COMMANDS.iter().zip(cells) {
            assert_eq!(cell(&report, role, table, command), want, "{role} {table} {command}");
        }
    }
    assert_eq!(report.results.iter().find(|r| r.table == "app.documents").unwrap().kind, Kind::Shareable);
    // Everything was rolled back: no organization, row or share is left.
    let mut admin = db.admin();
    assert_eq!(count(&mut admin, "tenancy.organizations WHERE slug LIKE 'tenancy-verify-%'"), 0);
    assert_eq!(count(&mut admin, "tenancy.shares"), 0);
    assert_eq!(count(&mut admin, "app.documents"), 3);
    assert!(tenancy(&["verify", "--database-url", &admin_url(&db.name)]).is_ok());
    // What --format json prints.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["organizations"], 2);
    let documents = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["table"] == "app.documents" && r["role"] == "app_user")
        .unwrap();
    assert_eq!(documents["kind"], "shareable");
    assert_eq!(documents["cells"]["update"]["reach"], serde_json::json!(["own", "shared"]));
    assert_eq!(documents["cells"]["select"]["leaks"], serde_json::json!([]));
}

#[test]
fn every_leak_of_an_unseen_schema_is_found() {
    let db = TestDb::new();
    db.admin()
        .batch_execute(&std::fs::read_to_string(repo_root().join("tests/fixtures/verify_crm.sql")).unwrap())
        .unwrap();
    let report = verify::verify(&mut db.admin(), &options(&["crm"], &["crm_app"])).unwrap();
    let text = verify::render_human(&report);
    assert_eq!(report.roles, ["crm_app"], "{text}");
    assert_eq!(report.unverified(), 0, "{text}");
    // Isolated, with generated serial ids, enum, CHECK IN (...), jsonb, numeric and date values.
    for command in verify::COMMANDS {
        assert!(!cell(&report, "crm_app", "crm.accounts", command).starts_with("LEAK"), "{text}");
    }
    let leaks = [
        ("crm.contacts", "insert", "points at organization"),
        ("crm.deals", "select", "sees 1 row(s) of other organizations"),
        ("crm.invoices", "insert", "inserted a row into organization"),
        ("crm.notes", "select", "sees"),
        ("crm.notes", "update", "updated"),
        ("crm.notes", "delete", "deleted"),
        ("crm.notes", "no context", "without a context sees"),
    ];
    for (table, command, what) in leaks {
        let c = cell(&report, "crm_app", table, command);
        assert!(c.starts_with("LEAK") && c.contains(what), "{table} {command}: {c}\n{text}");
    }
    assert!(text.contains("error: "), "{text}");
    let url = admin_url(&db.name);
    let failure = tenancy(&["verify", "--database-url", &url, "--schema", "crm", "--app-role", "crm_app"]).unwrap_err();
    assert_eq!(failure.report(), 1);
}

#[test]
fn verify_needs_a_superuser_and_says_so() {
    let db = TestDb::new();
    let failure = tenancy(&["verify", "--database-url", &app_url(&db.name)]).unwrap_err();
    assert_eq!(failure.report(), 2);
    let e = verify::verify(&mut db.app(), &options(&[], &[])).unwrap_err();
    match e {
        verify::VerifyError::Unusable(m) => assert!(m.contains("is not a superuser"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// The verifier runs as a superuser, but a table's own code (its triggers, here one that would
/// run a program) must run with its owner's rights: the verifier writes and reads fixtures as
/// the table's owner. A sequence (not rolled back with the verifier's transaction) records who
/// ran the trigger.
#[test]
fn the_verifier_runs_a_tables_code_as_its_owner_not_as_a_superuser() {
    let db = TestDb::new();
    let owner = TempRole::new(&db, "schema_owner", "NOSUPERUSER");
    let o = &owner.name;
    db.admin()
        .batch_execute(&format!("CREATE SCHEMA own AUTHORIZATION {o}; GRANT USAGE ON SCHEMA own TO app_user;"))
        .unwrap();
    owner
        .connect()
        .batch_execute(
            "CREATE TABLE own.items (org_id uuid NOT NULL DEFAULT tenancy.current_org(), id uuid NOT NULL DEFAULT gen_random_uuid(),
                                     name text NOT NULL, PRIMARY KEY (org_id, id));
             ALTER TABLE own.items ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY own_rows ON own.items TO app_user
                 USING (org_id = (SELECT tenancy.current_org())) WITH CHECK (org_id = (SELECT tenancy.current_org()));
             GRANT SELECT, INSERT, UPDATE, DELETE ON own.items TO app_user;
             CREATE SEQUENCE own.who MINVALUE 0 START 0;
             GRANT UPDATE ON SEQUENCE own.who TO PUBLIC;
             CREATE FUNCTION own.spy() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM setval('own.who', CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                                                THEN 666 ELSE greatest(currval('own.who'), 1) END, true);
                 RETURN NEW;
             EXCEPTION WHEN object_not_in_prerequisite_state THEN
                 PERFORM setval('own.who', CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                                                THEN 666 ELSE 1 END, true);
                 RETURN NEW;
             END $$;
             CREATE TRIGGER spy BEFORE INSERT ON own.items FOR EACH ROW EXECUTE FUNCTION own.spy();",
        )
        .unwrap();
    let report = verify::verify(&mut db.admin(), &options(&["own"], &["app_user"])).unwrap();
    assert_eq!(report.leaks(), 0, "{}", verify::render_human(&report));
    let who: i64 = db.admin().query_one("SELECT last_value FROM own.who", &[]).unwrap().get(0);
    assert_ne!(who, 0, "the table's trigger did not run: the verifier wrote no row");
    assert_ne!(who, 666, "the table's trigger ran as a superuser");
    // The table is as it was.
    assert_eq!(
        text(&mut db.admin(), "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'own.items'::regclass").as_deref(),
        Some("true")
    );
}
