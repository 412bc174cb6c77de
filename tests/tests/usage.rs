//! Usage metering: transactional, exact against monthly limits under concurrency, never losing
//! concurrent increments, and readable per organization and for invoices.

use pg_tenancy_e2e::*;
use std::sync::Arc;

fn usage(c: &mut impl postgres::GenericClient, org: &str, metric: &str) -> i64 {
    // usage() is numeric (a sum never fails for want of range); these fit a bigint.
    c.query_one(&format!("SELECT tenancy.usage('{org}', '{metric}')::bigint"), &[]).unwrap().get(0)
}

/// Runs `per_client` calls of `sql` from `clients` connections at once as GLOBEX's gina, each in
/// its own transaction; returns how many returned true (a 53400 counts as false).
fn hammer(db: &Arc<TestDb>, clients: usize, per_client: usize, sql: &'static str) -> usize {
    concurrently(db, clients, GLOBEX, "gina", move |c| {
        (0..per_client)
            .filter(|_| {
                let mut tx = c.transaction().unwrap();
                let ok = match tx.query_one(sql, &[]) {
                    Ok(row) => row.try_get::<_, bool>(0).unwrap_or(true),
                    Err(e) => {
                        assert_eq!(DbError::of(&e).code, "53400");
                        false
                    }
                };
                tx.commit().unwrap();
                ok
            })
            .count()
    })
    .into_iter()
    .sum()
}

#[test]
fn usage_is_recorded_per_organization_and_only_when_committed() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "alice");
    c.batch_execute("SELECT tenancy.record_usage('api_calls'); SELECT tenancy.record_usage('api_calls', 5);").unwrap();
    c.batch_execute("BEGIN; SELECT tenancy.record_usage('api_calls', 100); ROLLBACK;").unwrap();
    c.batch_execute(
        "BEGIN; SAVEPOINT s; SELECT tenancy.record_usage('api_calls', 100); ROLLBACK TO SAVEPOINT s; COMMIT;",
    )
    .unwrap();
    assert_eq!(usage(&mut c, ACME, "api_calls"), 6);
    assert_eq!(usage(&mut c, GLOBEX, "api_calls"), 0, "another organization's usage reads as nothing");
    assert_eq!(usage(&mut db.admin(), GLOBEX, "api_calls"), 0);
    let before = usage(&mut db.admin(), ACME, "bandwidth_bytes");
    c.batch_execute("SELECT tenancy.record_usage('bandwidth_bytes', 4096)").unwrap();
    assert_eq!(usage(&mut db.admin(), ACME, "bandwidth_bytes"), before + 4096);
}

#[test]
fn usage_declared_in_the_policy_is_recorded_by_the_inserting_statement() {
    // policies/app.toml: [usage] bandwidth_bytes = { table = "files", sum = "size_bytes" }
    let db = TestDb::new();
    let mut c = db.app_in(GLOBEX, "gina");
    // The fixture's file (100 bytes) was recorded when it was inserted.
    assert_eq!(usage(&mut c, GLOBEX, "bandwidth_bytes"), 100);
    c.batch_execute("INSERT INTO app.files (name, size_bytes) VALUES ('a.bin', 4000), ('b.bin', 0)").unwrap();
    c.batch_execute("BEGIN; INSERT INTO app.files (name, size_bytes) VALUES ('c.bin', 7); ROLLBACK;").unwrap();
    assert_eq!(usage(&mut c, GLOBEX, "bandwidth_bytes"), 4100, "rolled back rows record nothing");
    assert_eq!(usage(&mut db.app_in(ACME, "alice"), ACME, "bandwidth_bytes"), 100, "per organization");
    // Past the monthly limit the row is refused, with the quota error, and not written.
    db.admin().batch_execute(&format!("SELECT tenancy.set_quota('{GLOBEX}', 'bandwidth_bytes', 5000)")).unwrap();
    let e = error_of(&mut c, "INSERT INTO app.files (name, size_bytes) VALUES ('big.bin', 901)");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("53400", "transferred byte limit reached (5000 bytes)"));
    assert_eq!(count(&mut c, "app.files WHERE name = 'big.bin'"), 0);
    c.batch_execute("INSERT INTO app.files (name, size_bytes) VALUES ('fits.bin', 900)").unwrap();
    assert_eq!(usage(&mut c, GLOBEX, "bandwidth_bytes"), 5000);
}

#[test]
fn a_monthly_limit_holds_exactly_under_concurrency() {
    let db = Arc::new(TestDb::new());
    db.admin().batch_execute(&format!("SELECT tenancy.set_quota('{GLOBEX}', 'api_calls', 50)")).unwrap();
    let granted = hammer(&db, 8, 12, "SELECT tenancy.try_record_usage('api_calls')");
    assert_eq!(granted, 50);
    let mut c = db.app_in(GLOBEX, "gina");
    assert_eq!(usage(&mut c, GLOBEX, "api_calls"), 50);
    let e = error_of(&mut c, "SELECT tenancy.record_usage('api_calls')");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("53400", "api call limit reached (50)"));
    assert_eq!(text(&mut c, "SELECT tenancy.try_record_usage('api_calls')").as_deref(), Some("false"));
}

#[test]
fn concurrent_increments_to_one_hot_organization_are_never_lost() {
    let db = Arc::new(TestDb::new());
    db.admin().batch_execute(&format!("SELECT tenancy.set_plan('{GLOBEX}', 'enterprise')")).unwrap();
    let done = hammer(&db, 8, 50, "SELECT true FROM tenancy.record_usage('compute_ms', 3)");
    assert_eq!(done, 400);
    assert_eq!(usage(&mut db.admin(), GLOBEX, "compute_ms"), 1200);
}

#[test]
fn active_users_are_counted_once_per_month_when_they_set_a_context() {
    let db = TestDb::new();
    for user in ["alice", "bob", "alice", "carol"] {
        let mut c = db.app();
        c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', '{user}'); COMMIT;")).unwrap();
    }
    assert_eq!(usage(&mut db.admin(), ACME, "active_users"), 3);
    assert_eq!(usage(&mut db.admin(), GLOBEX, "active_users"), 0);
    // Each connection above was a new backend: alice's second one found her row and wrote none
    // (a new connection's first context is a read, not a write).
    assert_eq!(
        count(&mut db.admin(), &format!("tenancy.active_users WHERE org_id = '{ACME}' AND user_id = 'alice'")),
        1
    );
}

/// Attack: a savepoint rolled back took the active user's row with it while the connection kept
/// the user as counted, so `ROLLBACK TO` once per pooled connection left its users uncounted.
#[test]
fn a_rolled_back_savepoint_does_not_leave_a_user_uncounted() {
    let db = TestDb::new();
    let mut c = db.app();
    c.batch_execute(&format!(
        "BEGIN; SAVEPOINT a; SELECT tenancy.set_context('{ACME}', 'carol'); ROLLBACK TO a; COMMIT;"
    ))
    .unwrap();
    assert_eq!(usage(&mut db.admin(), ACME, "active_users"), 0, "the savepoint took the row");
    c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'carol'); COMMIT;")).unwrap();
    assert_eq!(usage(&mut db.admin(), ACME, "active_users"), 1, "the same connection counts carol again");
}

#[test]
fn users_who_only_read_are_counted_too_without_their_reads_writing() {
    let db = TestDb::new();
    // gus reads in read-only transactions, from two connections, many times; sam reads as
    // app_readonly with default_transaction_read_only.
    for _ in 0..2 {
        let mut ro = db.app();
        for _ in 0..20 {
            ro.batch_execute(&format!("BEGIN READ ONLY; SELECT tenancy.set_context('{ACME}', 'gus'); SELECT count(*) FROM app.projects; COMMIT;")).unwrap();
        }
    }
    let mut reader = db.connect_as("app_readonly");
    reader
        .batch_execute(&format!(
            "SET default_transaction_read_only = on; BEGIN; SELECT tenancy.set_context('{GLOBEX}', 'sam'); COMMIT;"
        ))
        .unwrap();
    // A background worker records them, shortly after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while (usage(&mut db.admin(), ACME, "active_users"), usage(&mut db.admin(), GLOBEX, "active_users")) != (1, 1) {
        assert!(std::time::Instant::now() < deadline, "read-only users were not recorded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Once per backend at most: two connections, forty read-only transactions.
    let rows = count(&mut db.admin(), &format!("tenancy.active_users WHERE org_id = '{ACME}' AND user_id = 'gus'"));
    assert!((1..=2).contains(&rows), "{rows} rows for gus");
}

#[test]
fn the_usage_report_has_a_row_per_organization_and_metric() {
    let db = TestDb::new();
    db.app_in(ACME, "alice").batch_execute("SELECT tenancy.record_usage('api_calls', 7)").unwrap();
    let mut dba = db.admin();
    let rows = dba.query("SELECT slug, metric, amount::bigint, quota FROM tenancy.usage_report()", &[]).unwrap();
    assert_eq!(rows.len(), 2 * 5, "two organizations x five metrics");
    let acme_calls =
        rows.iter().find(|r| r.get::<_, String>(0) == "acme" && r.get::<_, String>(1) == "api_calls").unwrap();
    assert_eq!((acme_calls.get::<_, i64>(2), acme_calls.get::<_, Option<i64>>(3)), (7, Some(100_000)));
    let acme_active =
        rows.iter().find(|r| r.get::<_, String>(0) == "acme" && r.get::<_, String>(1) == "active_users").unwrap();
    assert_eq!(acme_active.get::<_, i64>(2), 1);
    let last_month = dba
        .query_one("SELECT sum(amount)::bigint FROM tenancy.usage_report(date_trunc('month', now(), 'UTC') - interval '1 month')", &[])
        .unwrap()
        .get::<_, Option<i64>>(0);
    assert_eq!(last_month, Some(0));
}

#[test]
fn bad_usage_calls_get_clear_errors() {
    let db = TestDb::new();
    let mut none = db.app();
    let e = error_of(&mut none, "SELECT tenancy.record_usage('api_calls')");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("42501", "no tenant context"));
    let mut c = db.app_in(ACME, "alice");
    for (sql, code, message) in [
        ("SELECT tenancy.record_usage('widgets')", "22023", "unknown resource \"widgets\""),
        (
            "SELECT tenancy.record_usage('projects')",
            "22023",
            "invalid value for parameter \"metric\": resource \"projects\" is a count quota, not a metered metric",
        ),
        (
            "SELECT tenancy.record_usage('api_calls', 0)",
            "22023",
            "invalid value for parameter \"amount\": must be positive",
        ),
        (
            "SELECT tenancy.record_usage('active_users')",
            "22023",
            "invalid value for parameter \"metric\": active_users is counted automatically when a context is set",
        ),
        ("SELECT tenancy.usage(tenancy.current_org(), 'nope')", "22023", "unknown metric \"nope\""),
    ] {
        let e = error_of(&mut c, sql);
        assert_eq!((e.code.as_str(), e.message.as_str()), (code, message), "{sql}");
    }
    let e = error_of(&mut c, &format!("SELECT tenancy.record_usage_for('{GLOBEX}', 'api_calls')"));
    assert_eq!(e.code, "42501");
    let e = error_of(&mut db.admin(), &format!("SELECT tenancy.record_usage_for('{NOWHERE}', 'api_calls')"));
    assert_eq!(e.code, "42704");
    db.admin().batch_execute(&format!("SELECT tenancy.record_usage_for('{GLOBEX}', 'api_calls', 2)")).unwrap();
    assert_eq!(usage(&mut db.admin(), GLOBEX, "api_calls"), 2);
}
