//! Plans and quotas: refused past the limit with a clear error, exact under concurrency, freed
//! by aborts and deletes, never making different organizations wait.

use pg_tenancy_e2e::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn insert_project(c: &mut impl postgres::GenericClient) -> Result<u64, DbError> {
    c.execute("INSERT INTO app.projects (name) VALUES ('q')", &[]).map_err(|e| DbError::of(&e))
}

fn projects_of(db: &TestDb, org: &str) -> i64 {
    count(&mut db.admin(), &format!("app.projects WHERE org_id = '{org}'"))
}

fn set_quota(db: &TestDb, org: &str, resource: &str, quota: &str) {
    db.admin().batch_execute(&format!("SELECT tenancy.set_quota('{org}', '{resource}', {quota})")).unwrap();
}

#[test]
fn row_count_quota_refuses_past_the_plan_limit_with_a_clear_error() {
    let db = TestDb::new();
    let mut c = db.app_in(GLOBEX, "gina");
    for _ in 0..9 {
        insert_project(&mut c).unwrap();
    }
    let e = insert_project(&mut c).unwrap_err();
    assert_eq!(e.code, "53400");
    assert_eq!(e.message, "project limit reached (10)");
    assert_eq!(
        e.detail.as_deref(),
        Some(&*format!("Organization globex ({GLOBEX}) uses 10 of 10 for resource \"projects\"."))
    );
    assert_eq!(e.hint.as_deref(), Some("Upgrade the plan to get more projects."));
    assert_eq!(projects_of(&db, GLOBEX), 10);
}

#[test]
fn exactly_the_limit_commits_when_many_clients_insert_at_once() {
    let db = Arc::new(TestDb::new());
    set_quota(&db, GLOBEX, "projects", "25");
    let committed: i32 = concurrently(&db, 16, GLOBEX, "gina", |c| {
        let mut ok = 0;
        for _ in 0..6 {
            let mut tx = c.transaction().unwrap();
            match insert_project(&mut tx) {
                Ok(_) => {
                    tx.commit().unwrap();
                    ok += 1;
                }
                Err(e) => assert_eq!(e.code, "53400", "{}", e.message),
            }
        }
        ok
    })
    .into_iter()
    .sum();
    assert_eq!(committed, 24, "the fixture's 1 project plus exactly 24 new ones");
    assert_eq!(projects_of(&db, GLOBEX), 25);
}

#[test]
fn aborted_inserts_and_rolled_back_savepoints_free_their_reservation() {
    let db = TestDb::new();
    set_quota(&db, GLOBEX, "projects", "2");
    let mut c = db.app_in(GLOBEX, "gina");
    c.batch_execute("BEGIN; INSERT INTO app.projects (name) VALUES ('gone'); ROLLBACK;").unwrap();
    c.batch_execute("BEGIN; SAVEPOINT s; INSERT INTO app.projects (name) VALUES ('gone'); ROLLBACK TO SAVEPOINT s;")
        .unwrap();
    insert_project(&mut c).unwrap();
    c.batch_execute("COMMIT").unwrap();
    assert_eq!(projects_of(&db, GLOBEX), 2);
    assert_eq!(insert_project(&mut c).unwrap_err().code, "53400");
}

#[test]
fn an_in_flight_insert_holds_its_place_without_making_anyone_wait() {
    let db = TestDb::new();
    set_quota(&db, GLOBEX, "projects", "2");
    let mut a = db.app_in(GLOBEX, "gina");
    let mut b = db.app_in(GLOBEX, "sam");
    b.batch_execute("SET statement_timeout = '5s'").unwrap();
    a.batch_execute("BEGIN; INSERT INTO app.projects (name) VALUES ('in flight');").unwrap();
    let started = Instant::now();
    let e = insert_project(&mut b).unwrap_err();
    assert_eq!(e.code, "53400", "the in-flight row counts: {}", e.message);
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not after waiting");
    a.batch_execute("ROLLBACK").unwrap();
    insert_project(&mut b).unwrap();
}

#[test]
fn different_organizations_never_wait_for_each_other() {
    let db = TestDb::new();
    set_quota(&db, GLOBEX, "projects", "2");
    set_quota(&db, ACME, "projects", "2");
    let mut a = db.app_in(ACME, "alice");
    let mut g = db.app_in(GLOBEX, "gina");
    g.batch_execute("SET lock_timeout = '1s'; SET statement_timeout = '5s'").unwrap();
    a.batch_execute("BEGIN; INSERT INTO app.projects (name) VALUES ('held open');").unwrap();
    let started = Instant::now();
    insert_project(&mut g).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    a.batch_execute("COMMIT").unwrap();
    assert_eq!(projects_of(&db, ACME), 2);
}

#[test]
fn deleting_frees_quota_when_the_delete_commits() {
    let db = TestDb::new();
    set_quota(&db, GLOBEX, "projects", "1");
    let mut c = db.app_in(GLOBEX, "gina");
    assert_eq!(insert_project(&mut c).unwrap_err().code, "53400");
    c.batch_execute("BEGIN; DELETE FROM app.projects;").unwrap();
    let mut other = db.app_in(GLOBEX, "sam");
    assert_eq!(insert_project(&mut other).unwrap_err().code, "53400", "not freed before commit");
    c.batch_execute("COMMIT").unwrap();
    insert_project(&mut other).unwrap();
}

#[test]
fn lowering_a_limit_blocks_new_rows_and_deletes_nothing() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "alice");
    insert_project(&mut c).unwrap();
    set_quota(&db, ACME, "projects", "0");
    let e = insert_project(&mut c).unwrap_err();
    assert_eq!((e.code.as_str(), e.message.as_str()), ("53400", "project limit reached (0)"));
    assert_eq!(projects_of(&db, ACME), 2);
    set_quota(&db, ACME, "projects", "NULL");
    insert_project(&mut c).unwrap();
    db.admin().batch_execute(&format!("SELECT tenancy.set_plan('{ACME}', 'free')")).unwrap();
    assert_eq!(
        text(&mut c, "SELECT quota FROM tenancy.quota(tenancy.current_org(), 'projects')").as_deref(),
        Some("10")
    );
}

#[test]
fn sum_quota_follows_inserts_updates_and_deletes() {
    let db = TestDb::new();
    set_quota(&db, GLOBEX, "storage", "1000");
    let mut c = db.app_in(GLOBEX, "gina");
    c.batch_execute("INSERT INTO app.files (name, size_bytes) VALUES ('a', 900)").unwrap();
    let e = error_of(&mut c, "INSERT INTO app.files (name, size_bytes) VALUES ('b', 1)");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("53400", "storage limit reached (1000 bytes)"));
    c.batch_execute("UPDATE app.files SET size_bytes = 800 WHERE name = 'a'").unwrap();
    c.batch_execute("INSERT INTO app.files (name, size_bytes) VALUES ('b', 100)").unwrap();
    let e = error_of(&mut c, "UPDATE app.files SET size_bytes = 101 WHERE name = 'b'");
    assert_eq!(e.code, "53400");
    c.batch_execute("DELETE FROM app.files WHERE name = 'a'").unwrap();
    assert_eq!(
        text(&mut c, "SELECT used FROM tenancy.quota(tenancy.current_org(), 'storage')").as_deref(),
        Some("200")
    );
}

#[test]
fn the_members_quota_limits_add_member() {
    let db = TestDb::new();
    let mut c = db.app_in(GLOBEX, "gina");
    for user in ["u1", "u2", "u3"] {
        c.batch_execute(&format!("SELECT tenancy.add_member('{GLOBEX}', '{user}')")).unwrap();
    }
    let e = error_of(&mut c, &format!("SELECT tenancy.add_member('{GLOBEX}', 'u4')"));
    assert_eq!((e.code.as_str(), e.message.as_str()), ("53400", "member limit reached (5)"));
    assert_eq!(count(&mut db.admin(), &format!("tenancy.members WHERE org_id = '{GLOBEX}'")), 5);
}

#[test]
fn quotas_are_readable_for_the_own_org_and_managed_by_dbas() {
    let db = TestDb::new();
    let mut c = db.app_in(GLOBEX, "gina");
    let rows =
        c.query(&format!("SELECT resource, quota, used, remaining FROM tenancy.quotas('{GLOBEX}')"), &[]).unwrap();
    let projects = rows.iter().find(|r| r.get::<_, String>(0) == "projects").unwrap();
    assert_eq!(
        (projects.get::<_, Option<i64>>(1), projects.get::<_, i64>(2), projects.get::<_, Option<i64>>(3)),
        (Some(10), 1, Some(9))
    );
    let users = rows.iter().find(|r| r.get::<_, String>(0) == "users").unwrap();
    assert_eq!(users.get::<_, i64>(2), 2);
    for sql in [
        format!("SELECT * FROM tenancy.quotas('{ACME}')"),
        format!("SELECT tenancy.set_plan('{GLOBEX}', 'enterprise')"),
        format!("SELECT tenancy.set_quota('{GLOBEX}', 'projects', 1000)"),
    ] {
        assert_eq!(error_of(&mut c, &sql).code, "42501", "{sql}");
    }
    let mut dba = db.admin();
    let e = error_of(&mut dba, &format!("SELECT tenancy.set_quota('{GLOBEX}', 'widgets', 1)"));
    assert_eq!((e.code.as_str(), e.message.as_str()), ("22023", "unknown resource \"widgets\""));
    assert!(e.detail.unwrap().starts_with(
        "Valid resources are: active_users, api_calls, bandwidth_bytes, compute_ms, custom_domains, projects"
    ));
    let e = error_of(&mut dba, &format!("SELECT tenancy.set_quota('{GLOBEX}', 'projects', -1)"));
    assert_eq!(e.code, "22023");
    let e = error_of(&mut dba, &format!("SELECT tenancy.set_plan('{GLOBEX}', 'gold')"));
    assert_eq!((e.code.as_str(), e.message.as_str()), ("22023", "unknown plan \"gold\""));
    // A plan change applies to the very next statement of a session that already cached limits.
    dba.batch_execute(&format!("SELECT tenancy.set_plan('{GLOBEX}', 'enterprise')")).unwrap();
    assert_eq!(text(&mut c, &format!("SELECT quota FROM tenancy.quota('{GLOBEX}', 'projects')")), None);
}

#[test]
fn truncate_makes_the_counters_rebuild_from_the_table() {
    let db = TestDb::new();
    set_quota(&db, GLOBEX, "storage", "1000");
    let mut c = db.app_in(GLOBEX, "gina");
    c.batch_execute("INSERT INTO app.files (name, size_bytes) VALUES ('a', 900)").unwrap();
    db.admin().batch_execute("TRUNCATE app.files").unwrap();
    c.batch_execute("INSERT INTO app.files (name, size_bytes) VALUES ('b', 1000)").unwrap();
    assert_eq!(error_of(&mut c, "INSERT INTO app.files (name, size_bytes) VALUES ('c', 1)").code, "53400");
}

#[test]
fn tenancy_admins_add_plans_and_resources_and_metered_use_is_reported() {
    let db = TestDb::new();
    let mut dba = db.admin();
    dba.batch_execute(
        "DO $$ BEGIN CREATE ROLE billing_admin LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         GRANT tenancy_admin TO billing_admin;",
    )
    .unwrap();
    let mut billing = db.connect_as("billing_admin");
    billing
        .batch_execute(&format!(
            "INSERT INTO tenancy.plans (name, description) VALUES ('startup', 'Startup plan');
             INSERT INTO tenancy.resources (name, kind, label) VALUES ('seats', 'members', 'Seat');
             INSERT INTO tenancy.plan_limits (plan, resource, quota) VALUES ('startup', 'projects', 3), ('startup', 'api_calls', 20);
             SELECT tenancy.set_plan('{GLOBEX}', 'startup');"
        ))
        .unwrap();
    let mut c = db.app_in(GLOBEX, "gina");
    c.batch_execute("SELECT tenancy.record_usage('api_calls', 4)").unwrap();
    let row = c
        .query_one(&format!("SELECT quota, used, remaining FROM tenancy.quota('{GLOBEX}', 'api_calls')"), &[])
        .unwrap();
    assert_eq!(
        (row.get::<_, Option<i64>>(0), row.get::<_, i64>(1), row.get::<_, Option<i64>>(2)),
        (Some(20), 4, Some(16))
    );
    insert_project(&mut c).unwrap();
    insert_project(&mut c).unwrap();
    assert_eq!(insert_project(&mut c).unwrap_err().message, "project limit reached (3)");
    let e = error_of(&mut c, "INSERT INTO tenancy.plans (name) VALUES ('free-forever')");
    assert_eq!(e.code, "42501", "only tenancy admins change plans");
}

/// The quota triggers on `table`, by name.
fn quota_triggers(db: &TestDb, table: &str) -> Vec<String> {
    db.admin()
        .query(
            &format!(
                "SELECT tgname::text FROM pg_trigger WHERE tgrelid = '{table}'::regclass
                   AND tgname ~ '^tenancy_(quota|usage)_' ORDER BY 1"
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn a_quota_removed_from_the_policy_files_or_moved_stops_being_counted_there() {
    let db = TestDb::new();
    let counted = ["tenancy_quota_projects", "tenancy_quota_projects_truncate"];
    assert_eq!(quota_triggers(&db, "app.projects"), counted);
    let policy = example_policy();
    let line = "projects = { table = \"projects\" }\n";
    assert!(policy.contains(line), "policies/app.toml changed: update this test");
    apply_policy(&db, &policy.replace(line, ""));
    assert!(quota_triggers(&db, "app.projects").is_empty(), "the removed quota's triggers went");
    assert_eq!(count(&mut db.admin(), "tenancy.quota_sources WHERE resource = 'projects'"), 0);
    // Globex's plan allows 10 projects; without the quota nothing counts them.
    let mut c = db.app_in(GLOBEX, "gina");
    for _ in 0..12 {
        insert_project(&mut c).unwrap();
    }
    apply_policy(&db, &policy);
    assert_eq!(quota_triggers(&db, "app.projects"), counted, "applied again, it counts again");
    // Moved to another table: the old table stops counting toward it.
    db.admin().batch_execute("SELECT tenancy.enable_quota('projects', 'app.tasks')").unwrap();
    assert!(quota_triggers(&db, "app.projects").is_empty());
    assert_eq!(quota_triggers(&db, "app.tasks"), counted);
    // The other quotas and the metric on app.files were kept throughout.
    assert_eq!(
        quota_triggers(&db, "app.files"),
        ["tenancy_quota_storage", "tenancy_quota_storage_truncate", "tenancy_usage_bandwidth_bytes"]
    );
}
