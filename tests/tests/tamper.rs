//! The application role cannot set or change the tenant context except through
//! tenancy.set_context(), and the context lives exactly as long as it should.

use pg_tenancy_e2e::*;

fn assert_refused(e: DbError, what: &str) {
    assert_eq!(e.code, "42501", "{what}: {}", e.message);
    assert!(e.message.contains("permission denied to set parameter \"tenancy.org_id\""), "{what}: {}", e.message);
}

#[test]
fn set_and_set_local_are_refused() {
    let db = TestDb::new();
    let mut c = db.app();
    assert_refused(error_of(&mut c, &format!("SET tenancy.org_id = '{ACME}'")), "SET");
    assert_refused(error_of(&mut c, &format!("BEGIN; SET LOCAL tenancy.org_id = '{ACME}'")), "SET LOCAL");
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!(count(&mut c, "app.projects"), 0);
}

#[test]
fn set_config_is_refused_for_session_and_transaction() {
    let db = TestDb::new();
    let mut c = db.app();
    for local in ["false", "true"] {
        let e = error_of(&mut c, &format!("SELECT set_config('tenancy.org_id', '{ACME}', {local})"));
        assert_refused(e, "set_config");
    }
    for setting in ["tenancy.user_id", "tenancy.membership"] {
        let e = error_of(&mut c, &format!("SELECT set_config('{setting}', 'owner', false)"));
        assert_eq!(e.code, "42501", "{setting}");
    }
}

#[test]
fn reset_of_the_setting_is_refused_and_reset_all_only_clears() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "alice");
    assert_refused(error_of(&mut c, "RESET tenancy.org_id"), "RESET");
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()").as_deref(), Some(ACME));
    // RESET ALL / DISCARD ALL (what connection poolers send) may only drop the context: fail closed.
    c.batch_execute("RESET ALL").unwrap();
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()"), None);
    assert_eq!(count(&mut c, "app.projects"), 0);
    let mut c = db.app_in(ACME, "alice");
    c.batch_execute("DISCARD ALL").unwrap();
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()"), None);
}

#[test]
fn alter_role_and_alter_database_set_are_refused() {
    let db = TestDb::new();
    let mut c = db.app();
    let e = error_of(&mut c, &format!("ALTER ROLE app_user SET tenancy.org_id = '{ACME}'"));
    assert_eq!(e.code, "42501", "{}", e.message);
    let e = error_of(&mut c, &format!("ALTER ROLE CURRENT_USER SET tenancy.org_id = '{ACME}'"));
    assert_eq!(e.code, "42501", "{}", e.message);
    let e = error_of(&mut c, &format!("ALTER DATABASE {} SET tenancy.org_id = '{ACME}'", db.name));
    assert_eq!(e.code, "42501", "{}", e.message);
    // Even as the database's owner, a superuser-only setting cannot be attached to it.
    let mut admin = db.admin();
    admin.batch_execute(&format!("ALTER DATABASE {} OWNER TO app_user", db.name)).unwrap();
    let e = error_of(&mut c, &format!("ALTER DATABASE {} SET tenancy.org_id = '{ACME}'", db.name));
    assert_eq!(e.code, "42501", "{}", e.message);
    admin.batch_execute(&format!("ALTER DATABASE {} OWNER TO postgres", db.name)).unwrap();
}

#[test]
fn look_alike_placeholder_settings_are_refused() {
    let db = TestDb::new();
    let mut c = db.app();
    for sql in ["SET tenancy.org = 'x'", "SET tenancy.orgid = 'x'", "SELECT set_config('tenancy.anything', 'x', false)"]
    {
        let e = error_of(&mut c, sql);
        assert_eq!(e.code, "42602", "{sql}: {}", e.message);
        assert_eq!(e.detail.as_deref(), Some("\"tenancy\" is a reserved prefix."));
    }
}

/// Were `pg_tenancy` dropped from `shared_preload_libraries` after installation, nothing would
/// reserve the `tenancy.` prefix in a session that has not loaded the library, and any role
/// could `SET tenancy.org_id` as a placeholder. The readers that policies call are C functions:
/// calling one loads the library, whose `_PG_init` refuses to run unless preloaded, so such a
/// placeholder is never read. An inlined SQL reader would read it.
#[test]
fn context_readers_load_the_library() {
    let db = TestDb::new();
    let mut c = db.app();
    for f in ["current_org", "current_user_id", "current_member_role", "has_role", "has_permission"] {
        let lang = text(
            &mut c,
            &format!(
                "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                  WHERE p.oid = 'tenancy.{f}'::regproc"
            ),
        );
        assert_eq!(lang.as_deref(), Some("c"), "tenancy.{f}() must be a C function");
    }
}

#[test]
fn startup_packet_options_cannot_carry_a_context() {
    let db = TestDb::new();
    let url = app_url(&db.name);
    let mut config: postgres::Config = url.parse().unwrap();
    config.options(&format!("-c tenancy.org_id={ACME}"));
    let err = config.connect(postgres::NoTls).err().expect("connection with a forged context must fail");
    let db_err = err.as_db_error().expect("a server error");
    assert_eq!(db_err.code().code(), "42501");
    assert!(db_err.message().contains("tenancy.org_id"));
}

#[test]
fn a_function_with_a_set_clause_cannot_carry_a_context() {
    let db = TestDb::new();
    let mut c = db.app();
    let e = error_of(
        &mut c,
        &format!(
            "CREATE FUNCTION pg_temp.forge() RETURNS bigint LANGUAGE sql
               SET tenancy.org_id = '{ACME}' AS 'SELECT count(*) FROM app.projects'"
        ),
    );
    assert_eq!(e.code, "42501", "{}", e.message);
}

#[test]
fn non_member_and_unknown_org_are_refused_with_the_same_error() {
    let db = TestDb::new();
    let mut c = db.app();
    let foreign = error_of(&mut c, &format!("SELECT tenancy.set_context('{GLOBEX}', 'alice')"));
    let missing = error_of(&mut c, &format!("SELECT tenancy.set_context('{NOWHERE}', 'alice')"));
    assert_eq!(foreign.code, "42501");
    assert_eq!((foreign.code, foreign.message, foreign.hint), (missing.code, missing.message, missing.hint));
    assert_eq!(foreign.detail.unwrap().replace(GLOBEX, "X"), missing.detail.unwrap().replace(NOWHERE, "X"));
}

#[test]
fn suspended_org_refuses_new_contexts() {
    let db = TestDb::new();
    db.admin().batch_execute(&format!("SELECT tenancy.set_organization_status('{ACME}', 'suspended')")).unwrap();
    let e = error_of(&mut db.app(), &format!("SELECT tenancy.set_context('{ACME}', 'alice')"));
    assert_eq!(e.message, "permission denied to set tenant context");
}

#[test]
fn transaction_context_ends_at_commit_and_rollback() {
    let db = TestDb::new();
    let mut c = db.app();
    for end in ["COMMIT", "ROLLBACK"] {
        c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'alice');")).unwrap();
        assert_eq!(count(&mut c, "app.projects"), 1);
        c.batch_execute(end).unwrap();
        assert_eq!(text(&mut c, "SELECT tenancy.current_org()"), None, "after {end}");
        assert_eq!(count(&mut c, "app.projects"), 0, "after {end}");
    }
}

#[test]
fn rollback_to_savepoint_restores_the_earlier_context() {
    let db = TestDb::new();
    let mut c = db.app();
    c.batch_execute(&format!(
        "BEGIN; SELECT tenancy.set_context('{ACME}', 'sam'); SAVEPOINT s;
         SELECT tenancy.set_context('{GLOBEX}', 'sam');"
    ))
    .unwrap();
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()").as_deref(), Some(GLOBEX));
    c.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()").as_deref(), Some(ACME));
    assert_eq!(text(&mut c, "SELECT tenancy.current_member_role()").as_deref(), Some("member"));
    c.batch_execute("COMMIT").unwrap();
}

#[test]
fn context_set_outside_a_transaction_warns_and_lasts_one_statement() {
    let db = TestDb::new();
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = notices.clone();
    let mut config: postgres::Config = app_url(&db.name).parse().unwrap();
    config.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_string()));
    let mut c = config.connect(postgres::NoTls).unwrap();
    c.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
    assert_eq!(
        notices.lock().unwrap().as_slice(),
        ["tenant context set outside a transaction block lasts only for this statement"]
    );
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()"), None);
}

#[test]
fn session_context_persists_until_cleared_and_transaction_context_overrides_it() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "sam");
    c.batch_execute("BEGIN; COMMIT;").unwrap();
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()").as_deref(), Some(ACME));
    c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{GLOBEX}', 'sam');")).unwrap();
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()").as_deref(), Some(GLOBEX));
    c.batch_execute("COMMIT").unwrap();
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()").as_deref(), Some(ACME), "back to the session's");
    c.batch_execute("SELECT tenancy.clear_context()").unwrap();
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()"), None);
    assert_eq!(count(&mut c, "app.projects"), 0);
}

#[test]
fn null_and_empty_arguments_are_refused() {
    let db = TestDb::new();
    let mut c = db.app();
    let e = error_of(&mut c, "SELECT tenancy.set_context(NULL, 'alice')");
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("22023", "invalid value for parameter \"org_id\": must not be null")
    );
    let e = error_of(&mut c, &format!("SELECT tenancy.set_context('{ACME}', '  ')"));
    assert_eq!(e.code, "22023");
    let e = error_of(&mut c, "SELECT tenancy.set_context('not-a-uuid', 'alice')");
    assert_eq!(e.code, "22P02");
}
