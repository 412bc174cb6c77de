//! Quota counters survive a crash: after an immediate shutdown (no checkpoint), the counters
//! are rebuilt from the tables and stay exact. Its own test binary, because it restarts the
//! cluster that other tests use.

use pg_tenancy_e2e::*;

#[test]
fn quota_counters_are_exact_after_a_crash_and_restart() {
    let db = TestDb::new();
    db.admin().batch_execute(&format!("SELECT tenancy.set_quota('{GLOBEX}', 'projects', 5)")).unwrap();
    let mut c = db.app_in(GLOBEX, "gina");
    c.batch_execute("INSERT INTO app.projects (name) SELECT 'p' || g FROM generate_series(1, 3) g").unwrap();
    // An open transaction's reservation dies with the crash.
    let mut open = db.app_in(GLOBEX, "sam");
    open.batch_execute("BEGIN; INSERT INTO app.projects (name) VALUES ('lost');").unwrap();
    drop(c);
    let out = std::process::Command::new(repo_root().join("scripts/cluster.sh"))
        .args(["crash", "test"])
        .output()
        .expect("run scripts/cluster.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(open);
    let mut c = db.app_in(GLOBEX, "gina");
    assert_eq!(count(&mut c, "app.projects"), 4, "the fixture's project plus the 3 committed ones");
    c.batch_execute("INSERT INTO app.projects (name) VALUES ('fifth')").unwrap();
    let e = error_of(&mut c, "INSERT INTO app.projects (name) VALUES ('sixth')");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("53400", "project limit reached (5)"));
}
