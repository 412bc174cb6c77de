//! Rules beyond a minimum role (tests/fixtures/rules.toml applied over the example): an owner
//! column, a permission, and row predicates, enforced for the application role.

use pg_tenancy_e2e::*;

fn with_rules() -> TestDb {
    let db = TestDb::new();
    tenancy(&["apply", &path("tests/fixtures/rules.toml"), "--database-url", &admin_url(&db.name)])
        .expect("apply rules");
    db
}

#[test]
fn only_the_creator_may_update_a_project() {
    let db = with_rules();
    let mut carol = db.app_in(ACME, "carol");
    carol.batch_execute("INSERT INTO app.projects (name) VALUES ('carol''s')").unwrap();
    assert_eq!(affected(&mut carol, "UPDATE app.projects SET name = name || '!' WHERE name = 'carol''s'"), 1);
    assert_eq!(
        affected(&mut carol, "UPDATE app.projects SET name = 'x' WHERE name = 'Acme launch'"),
        0,
        "created by someone else"
    );
    let mut bob = db.app_in(ACME, "bob");
    assert_eq!(
        affected(&mut bob, "UPDATE app.projects SET name = 'x' WHERE name = 'carol''s!'"),
        0,
        "even for an admin"
    );
    let e = error_of(&mut carol, "UPDATE app.projects SET created_by = 'bob' WHERE name = 'carol''s!'");
    assert_eq!(e.code, "42501", "a row cannot be handed to someone else");
}

#[test]
fn a_permission_gates_deletes_with_a_clear_error() {
    let db = with_rules();
    let mut carol = db.app_in(ACME, "carol");
    let e = error_of(&mut carol, "DELETE FROM app.projects");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("42501", "permission denied to DELETE on app.projects"));
    assert_eq!(
        e.detail.as_deref(),
        Some("DELETE on app.projects requires permission \"members.manage\", which member role \"member\" does not have.")
    );
    let mut bob = db.app_in(ACME, "bob");
    assert_eq!(affected(&mut bob, "DELETE FROM app.projects"), 1);
}

#[test]
fn predicates_filter_rows_and_run_context_calls_once_per_statement() {
    let db = with_rules();
    let mut admin = db.admin();
    admin
        .batch_execute(&format!(
            "INSERT INTO app.projects (org_id, name, created_by) VALUES ('{ACME}', 'archived:old', 'seed');
             INSERT INTO app.tasks (org_id, project_id, title, assignee) VALUES
                 ('{ACME}', '{p}', 'for bob', 'bob'), ('{ACME}', '{p}', 'for carol', 'carol');",
            p = ROWS[0].1
        ))
        .unwrap();
    let mut carol = db.app_in(ACME, "carol");
    assert_eq!(text(&mut carol, "SELECT string_agg(name, ',') FROM app.projects").as_deref(), Some("Acme launch"));
    assert_eq!(
        text(&mut carol, "SELECT string_agg(title, ',' ORDER BY title) FROM app.tasks").as_deref(),
        Some("Acme task,for carol"),
        "unassigned and own tasks only"
    );
    let plan: Vec<String> = db
        .explaining_in(ACME, "carol")
        .query("EXPLAIN (COSTS OFF) SELECT * FROM app.tasks", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    // current_org() is a parameter of the statement, current_user_id() an InitPlan: each once.
    assert!(plan.contains("InitPlan") && !plan.contains("current_org"), "once per statement each:\n{plan}");
    assert!(!plan.contains("tenancy.current_user_id()) OR"), "no per-row call:\n{plan}");
}

#[test]
fn a_table_can_be_read_only_for_every_application_role() {
    let db = with_rules();
    let mut alice = db.app_in(ACME, "alice");
    assert_eq!(count(&mut alice, "app.comments"), 1);
    let e = error_of(&mut alice, &format!("INSERT INTO app.comments (task_id, body) VALUES ('{}', 'x')", ROWS[1].1));
    assert_eq!(e.code, "42501");
    assert!(e.message.contains("permission denied for table comments"), "{}", e.message);
}
