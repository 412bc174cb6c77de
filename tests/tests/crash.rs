//! Quotas and usage survive a crash: after an immediate shutdown (no checkpoint), committed usage
//! is all there and the quota counters are rebuilt from the tables, exact. Its own test binary, because it restarts the
//! cluster that other tests use.

use pg_tenancy_e2e::*;

#[test]
fn quotas_and_usage_are_exact_after_a_crash_and_restart() {
    let db = TestDb::new();
    db.admin().batch_execute(&format!("SELECT tenancy.set_quota('{GLOBEX}', 'projects', 5)")).unwrap();
    let mut c = db.app_in(GLOBEX, "gina");
    c.batch_execute("INSERT INTO app.projects (name) SELECT 'p' || g FROM generate_series(1, 3) g").unwrap();
    // An open transaction's reservation dies with the crash.
    c.batch_execute("SELECT tenancy.record_usage('api_calls', 7); SELECT tenancy.record_usage('api_calls', 3);")
        .unwrap();
    let mut open = db.app_in(GLOBEX, "sam");
    open.batch_execute(
        "BEGIN; INSERT INTO app.projects (name) VALUES ('lost'); SELECT tenancy.record_usage('api_calls', 100);",
    )
    .unwrap();
    drop(c);
    let out = std::process::Command::new(repo_root().join("scripts/cluster.sh"))
        .args(["crash", "test"])
        .output()
        .expect("run scripts/cluster.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(open);
    let mut c = db.app_in(GLOBEX, "gina");
    assert_eq!(count(&mut c, "app.projects"), 4, "the fixture's project plus the 3 committed ones");
    let calls: i64 =
        c.query_one(&format!("SELECT tenancy.usage('{GLOBEX}', 'api_calls')::bigint"), &[]).unwrap().get(0);
    assert_eq!(calls, 10, "every committed increment survives; the uncommitted one does not");
    c.batch_execute("INSERT INTO app.projects (name) VALUES ('fifth')").unwrap();
    let e = error_of(&mut c, "INSERT INTO app.projects (name) VALUES ('sixth')");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("53400", "project limit reached (5)"));
}

#[test]
fn create_extension_without_shared_preload_libraries_says_what_to_do() {
    let cluster = |cmd: &str| {
        let out =
            std::process::Command::new(repo_root().join("scripts/cluster.sh")).args([cmd, "plain"]).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    cluster("start");
    let url = cluster("admin-url");
    let result = std::panic::catch_unwind(|| {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let e = error_of(&mut c, "CREATE EXTENSION pg_tenancy");
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("55000", "pg_tenancy must be loaded via shared_preload_libraries")
        );
        assert!(e.hint.unwrap().contains("shared_preload_libraries"));
    });
    cluster("destroy");
    result.unwrap();
}
