//! Attacks by a hostile application: arbitrary SQL as `app_user` or `app_readonly` (an SQL
//! injection), or as a migration role with CREATE on a schema, with full knowledge of the code.
//! Each test runs an attack that worked against pg_tenancy 0.1.0 and asserts that it fails, and,
//! where existence is at stake, that it fails the same way for a real and a missing target.

use pg_tenancy_e2e::*;

/// The error of `sql` in a transaction as `user` of `org` (rolled back); panics if it succeeds.
fn error_as(db: &TestDb, org: &str, user: &str, sql: &str) -> DbError {
    let mut c = db.app();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{org}', '{user}')")).unwrap();
    match tx.batch_execute(sql) {
        Ok(()) => panic!("expected an error from: {sql}"),
        Err(e) => DbError::of(&e),
    }
}

/// A schema `mig` owned by a migration role (CREATE on its own schema, nothing else), with a
/// table `mig.items` (org_id, n) that `app_user` may read and write under its context.
fn migration_schema(db: &TestDb) -> TempRole {
    let migrator = TempRole::new(db, "migrator", "NOSUPERUSER NOCREATEROLE NOCREATEDB");
    let m = &migrator.name;
    db.admin()
        .batch_execute(&format!(
            "CREATE SCHEMA mig AUTHORIZATION {m};
             GRANT USAGE ON SCHEMA mig TO app_user;"
        ))
        .unwrap();
    migrator
        .connect()
        .batch_execute(
            "CREATE TABLE mig.items (org_id uuid NOT NULL, n bigint NOT NULL DEFAULT 1);
             ALTER TABLE mig.items ENABLE ROW LEVEL SECURITY;
             ALTER TABLE mig.items FORCE ROW LEVEL SECURITY;
             CREATE POLICY own ON mig.items TO app_user
                 USING (org_id = (SELECT tenancy.current_org())) WITH CHECK (org_id = (SELECT tenancy.current_org()));
             GRANT SELECT, INSERT, UPDATE, DELETE ON mig.items TO app_user;",
        )
        .unwrap();
    migrator
}

#[test]
fn the_application_role_cannot_create_tables_to_attach_triggers_to() {
    let db = TestDb::new();
    let e = error_of(&mut db.app(), "CREATE TEMP TABLE t (org_id uuid)");
    assert_eq!(e.code, "42501", "{}", e.message);
    assert!(e.message.contains("permission denied to create temporary tables"), "{}", e.message);
    let e = error_of(&mut db.connect_as("app_readonly"), "CREATE TEMP TABLE t (org_id uuid)");
    assert_eq!(e.code, "42501", "{}", e.message);
}

#[test]
fn trigger_functions_cannot_be_attached_by_a_table_owner() {
    let db = TestDb::new();
    let migrator = migration_schema(&db);
    let mut m = migrator.connect();
    for function in [
        "quota_trigger('projects', 'org_id', '')",
        "usage_trigger('api_calls', 'org_id', '')",
        "require_context('member', 'member', 'member')",
        "protect_shared_row('org_id', 'n', '')",
        "limits_changed_trigger()",
        "membership_changed_trigger()",
        "forget_shares('org_id', 'n')",
    ] {
        let name = function.split('(').next().unwrap();
        let e = error_of(
            &mut m,
            &format!("CREATE TRIGGER t AFTER INSERT ON mig.items FOR EACH ROW EXECUTE FUNCTION tenancy.{function}"),
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("42501", format!("permission denied for function tenancy.{name}").as_str()),
            "{function}"
        );
    }
}

#[test]
fn trigger_functions_refuse_tables_nobody_registered() {
    let db = TestDb::new();
    let _migrator = migration_schema(&db);
    // Even a superuser's CREATE TRIGGER does not register a table: only the enable_* functions do.
    db.admin()
        .batch_execute(
            "CREATE TRIGGER q AFTER INSERT ON mig.items FOR EACH ROW
                 EXECUTE FUNCTION tenancy.quota_trigger('projects', 'org_id', '');",
        )
        .unwrap();
    let e = error_as(&db, ACME, "alice", "INSERT INTO mig.items (org_id) VALUES (tenancy.current_org())");
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("42501", "tenancy.quota_trigger() is not registered for table mig.items")
    );
    assert_eq!(e.detail.as_deref(), Some("Its triggers work only on tables registered by tenancy.enable_quota()."));
    let mut admin = db.admin();
    admin
        .batch_execute(
            "DROP TRIGGER q ON mig.items;
             CREATE TRIGGER u AFTER INSERT ON mig.items FOR EACH ROW
                 EXECUTE FUNCTION tenancy.usage_trigger('api_calls', 'org_id', 'n');",
        )
        .unwrap();
    let e = error_as(&db, GLOBEX, "gina", "INSERT INTO mig.items (org_id, n) VALUES (tenancy.current_org(), 1000)");
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("42501", "tenancy.usage_trigger() is not registered for table mig.items")
    );
    admin
        .batch_execute(
            "DROP TRIGGER u ON mig.items;
             CREATE TRIGGER l AFTER INSERT ON mig.items FOR EACH STATEMENT EXECUTE FUNCTION tenancy.limits_changed_trigger();",
        )
        .unwrap();
    let e = error_as(&db, GLOBEX, "gina", "INSERT INTO mig.items (org_id) VALUES (tenancy.current_org())");
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("42501", "tenancy.limits_changed_trigger() is not registered for table mig.items")
    );
    // A table registered for one quota does not lend its registration to another.
    admin
        .batch_execute(
            "DROP TRIGGER l ON mig.items;
             SELECT tenancy.enable_quota('custom_domains', 'mig.items');
             CREATE TRIGGER q AFTER INSERT ON mig.items FOR EACH ROW
                 EXECUTE FUNCTION tenancy.quota_trigger('projects', 'org_id', '');",
        )
        .unwrap();
    let e = error_as(&db, ACME, "alice", "INSERT INTO mig.items (org_id) VALUES (tenancy.current_org())");
    assert_eq!(e.message, "tenancy.quota_trigger() is not registered for table mig.items");
}

/// The counter rebuild reads the table the quota counts. Planning that read runs code the table's
/// owner controls (here an IMMUTABLE function in the CHECK of an inheritance child, folded by
/// constraint exclusion): it must run as that owner, not as the catalog owner (a superuser).
#[test]
fn rebuilding_a_counter_runs_the_tables_code_as_its_owner() {
    let db = TestDb::new();
    let migrator = migration_schema(&db);
    let m = &migrator.name;
    migrator
        .connect()
        .batch_execute(&format!(
            "CREATE TABLE mig.ran (who text, what text);
             CREATE FUNCTION mig.escalate() RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO mig.ran VALUES (current_user, 'ran');
                 BEGIN
                     ALTER ROLE {m} SUPERUSER;
                     INSERT INTO mig.ran VALUES (current_user, 'became superuser');
                 EXCEPTION WHEN OTHERS THEN
                     INSERT INTO mig.ran VALUES (current_user, 'refused');
                 END;
                 RETURN true;
             END $$;
             CREATE FUNCTION mig.looks_immutable() RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
             BEGIN RETURN mig.escalate(); END $$;
             CREATE TABLE mig.items_child (CHECK (mig.looks_immutable())) INHERITS (mig.items);"
        ))
        .unwrap();
    db.admin().batch_execute("SELECT tenancy.enable_quota('custom_domains', 'mig.items')").unwrap();
    let mut c = db.app_in(ACME, "alice");
    c.batch_execute("INSERT INTO mig.items (org_id) VALUES (tenancy.current_org())").unwrap();
    let mut admin = db.admin();
    let ran: Vec<(String, String)> =
        admin.query("SELECT who, what FROM mig.ran", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(!ran.is_empty(), "the table's code did not run during the rebuild: the attack was not exercised");
    assert!(ran.iter().all(|(who, what)| who == m && what != "became superuser"), "{ran:?}");
    assert_eq!(
        text(&mut admin, &format!("SELECT rolsuper FROM pg_roles WHERE rolname = '{m}'")).as_deref(),
        Some("false")
    );
    // The count is right: the child's CHECK is true, so its (no) rows count too.
    assert_eq!(
        text(&mut c, &format!("SELECT used FROM tenancy.quota('{ACME}', 'custom_domains')")).as_deref(),
        Some("1")
    );
}

/// A role with CREATE on a schema defines functions and operators that shadow pg_catalog's under
/// its search_path; nothing pg_tenancy runs with elevated rights may resolve to them.
#[test]
fn a_hostile_search_path_reaches_nothing_the_extension_runs() {
    let db = TestDb::new();
    db.admin().batch_execute("CREATE SCHEMA scratch; GRANT USAGE, CREATE ON SCHEMA scratch TO app_user;").unwrap();
    let mut c = db.app();
    c.batch_execute(
        "CREATE FUNCTION scratch.array_to_string(text[], text) RETURNS text LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'hijacked array_to_string as %', current_user; END $$;
         CREATE FUNCTION scratch.string_agg(text, text) RETURNS text LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'hijacked string_agg as %', current_user; END $$;
         CREATE FUNCTION scratch.uuid_eq(uuid, uuid) RETURNS boolean LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'hijacked = as %', current_user; END $$;
         CREATE FUNCTION scratch.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'hijacked = as %', current_user; END $$;
         CREATE OPERATOR scratch.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = scratch.uuid_eq);
         CREATE OPERATOR scratch.= (LEFTARG = text, RIGHTARG = text, FUNCTION = scratch.text_eq);",
    )
    .unwrap();
    // Once with the normal search_path (statements kept per backend are prepared), then with the
    // hostile one first.
    for search_path in ["\"$user\", public", "scratch, pg_catalog"] {
        c.batch_execute(&format!(
            "SET search_path = {search_path};
             BEGIN;
             SELECT tenancy.set_context('{ACME}', 'carol');
             SELECT tenancy.record_usage('api_calls');
             SELECT * FROM tenancy.quotas('{ACME}');
             INSERT INTO app.projects (name) VALUES ('p');
             COMMIT;
             BEGIN; SELECT tenancy.set_user_context('carol'); SELECT * FROM tenancy.user_organizations();
             SELECT tenancy.org_id('acme'); COMMIT;"
        ))
        .unwrap_or_else(|e| panic!("with search_path {search_path}: {}", DbError::of(&e).message));
        c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'carol')")).unwrap();
        assert_eq!(text(&mut c, "SELECT tenancy.has_permission('members.manage')").as_deref(), Some("false"));
        assert_eq!(text(&mut c, "SELECT tenancy.current_member_role()").as_deref(), Some("member"));
        c.batch_execute("COMMIT").unwrap();
    }
}

/// One transaction may not hold reservations on every quota counter (a role can only reach
/// counters of organizations it has a context for, and sign-up gives it as many as it likes).
#[test]
fn one_transaction_cannot_fill_the_quota_counters() {
    let db = TestDb::new();
    let mut c = db.app();
    c.batch_execute("BEGIN").unwrap();
    let mut refused = None;
    for i in 0..70 {
        let org =
            text(&mut c, &format!("SELECT tenancy.create_organization('Shell {i}', 'shell-{i}', 'mallory')")).unwrap();
        c.batch_execute(&format!("SELECT tenancy.set_context('{org}', 'mallory')")).unwrap();
        if let Err(e) = c.batch_execute("INSERT INTO app.projects (name) VALUES ('p')") {
            refused = Some((i, DbError::of(&e)));
            break;
        }
    }
    let (i, e) = refused.expect("70 organizations' counters in one transaction were accepted");
    assert_eq!(i, 64, "the 65th counter is refused");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("53400", "too many quota counters in one transaction"));
    c.batch_execute("ROLLBACK").unwrap();
    // Other transactions are unaffected.
    db.app_in(GLOBEX, "gina").batch_execute("INSERT INTO app.projects (name) VALUES ('fine')").unwrap();
}

/// EXPLAIN's counts, timings and estimates tell about rows the policies hide (an index probe on
/// a slug or user id runs before the organization check): the application roles may not
/// EXPLAIN anything row-level security applies to, and the refusal is the same whether or not a
/// matching row exists.
#[test]
fn explain_cannot_probe_for_other_organizations_rows() {
    let db = TestDb::new();
    let mut c = db.app();
    let probes = [
        ("EXPLAIN (ANALYZE) SELECT * FROM tenancy.organizations WHERE slug = '{}'", "globex", "no-such-slug"),
        ("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM tenancy.members WHERE user_id = '{}'", "gina", "nobody"),
        ("EXPLAIN SELECT * FROM tenancy.organizations WHERE id = '{}'", GLOBEX, NOWHERE),
        ("EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM app.projects WHERE country = '{}'", "DE", "XX"),
        ("EXPLAIN (ANALYZE) SELECT * FROM tenancy.shares WHERE owner_org = '{}'", GLOBEX, NOWHERE),
        ("EXPLAIN (ANALYZE) SELECT * FROM tenancy.received_shares WHERE owner_org = '{}'", GLOBEX, NOWHERE),
        ("EXPLAIN (ANALYZE) SELECT * FROM tenancy.usage_events WHERE org_id = '{}'", GLOBEX, NOWHERE),
        ("EXPLAIN (ANALYZE) SELECT * FROM app.open_tasks WHERE org_id = '{}'", GLOBEX, NOWHERE),
    ];
    for (with_context, mut client) in [(false, db.app()), (true, db.app_in(ACME, "alice"))] {
        for (template, real, missing) in probes {
            let [a, b] = [real, missing].map(|v| error_of(&mut client, &template.replace("{}", v)));
            assert_eq!(
                (a.code.as_str(), a.message.as_str()),
                ("42501", "EXPLAIN is not allowed on queries that row-level security applies to"),
                "{template} (context: {with_context})"
            );
            assert_eq!(
                (a.message, a.detail, a.hint),
                (b.message, b.detail, b.hint),
                "{template}: real and missing differ"
            );
        }
    }
    // Nor through a prepared statement, or inside a function.
    c.batch_execute("PREPARE p AS SELECT * FROM tenancy.organizations WHERE slug = 'globex'").unwrap();
    assert_eq!(error_of(&mut c, "EXPLAIN (ANALYZE) EXECUTE p").code, "42501");
    let e = error_of(
        &mut c,
        "DO $$ DECLARE l text; BEGIN FOR l IN EXECUTE 'EXPLAIN ANALYZE SELECT * FROM tenancy.members WHERE user_id = ''gina''' LOOP END LOOP; END $$",
    );
    assert_eq!(e.code, "42501");
    // Plans that hide nothing stay available, and a DBA sees every plan.
    c.batch_execute("EXPLAIN (ANALYZE) SELECT * FROM app.countries; EXPLAIN SELECT 1").unwrap();
    db.admin().batch_execute("EXPLAIN (ANALYZE) SELECT * FROM tenancy.members WHERE user_id = 'gina'").unwrap();
    // Only a superuser may allow it.
    let e = error_of(&mut c, "SET tenancy.allow_explain = on");
    assert_eq!(e.code, "42501", "{}", e.message);
}

/// `debug_print_plan` (which any role may set) prints the plan tree to a client that asks for
/// LOG messages, with the planner's row estimates: they come from statistics of every
/// organization's rows, so stepping `id <= X` through them finds another organization's ids and
/// values (found by an attack round). Refused like EXPLAIN, whether or not the row exists.
#[test]
fn debug_print_plan_cannot_read_the_planners_estimates() {
    let db = TestDb::new();
    db.admin().batch_execute("ANALYZE app.projects, tenancy.organizations").unwrap();
    let probes = [
        ("SELECT * FROM app.projects WHERE id <= '{}'", ROWS[0].2, NOWHERE),
        ("SELECT * FROM tenancy.organizations WHERE slug <= '{}'", "globex", "no-such-slug"),
        // A security-barrier view over a table without row-level security.
        ("SELECT * FROM tenancy.received_shares WHERE owner_org = '{}'", GLOBEX, NOWHERE),
    ];
    for (with_context, mut client) in [(false, db.app()), (true, db.app_in(ACME, "alice"))] {
        client.batch_execute("SET debug_print_plan = on; SET client_min_messages = log").unwrap();
        for (template, real, missing) in probes {
            let [a, b] = [real, missing].map(|v| error_of(&mut client, &template.replace("{}", v)));
            assert_eq!(
                (a.code.as_str(), a.message.as_str()),
                ("42501", "debug_print_plan is not allowed on queries that row-level security applies to"),
                "{template} (context: {with_context})"
            );
            assert_eq!((a.message, a.detail, a.hint), (b.message, b.detail, b.hint), "{template}");
        }
        // Nor inside a function, whose statements are planned there.
        let e = error_of(
            &mut client,
            "DO $$ BEGIN PERFORM count(*) FROM app.projects WHERE id <= 'c0000000-0000-0000-0000-000000000000'; END $$",
        );
        assert_eq!(e.code, "42501", "{}", e.message);
        // Plans that hide nothing are printed; without the setting, the query runs.
        client.batch_execute("SELECT 1; SELECT count(*) FROM app.countries").unwrap();
        client.batch_execute("SET debug_print_plan = off; SELECT count(*) FROM app.projects").unwrap();
    }
    db.admin()
        .batch_execute("SET debug_print_plan = on; SELECT count(*) FROM app.projects; RESET debug_print_plan")
        .unwrap();
}

/// The planner's statistics are built from every organization's rows, and PostgreSQL uses them
/// under row-level security for leakproof operators (`=`, `<`, `^@` on text and uuids): a plan's
/// cost then depends on another organization's values, and the cost shows without EXPLAIN (JIT
/// above `jit_above_cost`, a prepared statement's generic plan): an attack round read another
/// organization's texts and ids that way. For tables row-level security applies to, the planner
/// now gets no value-dependent statistics: the estimates (seen here as a DBA would, through
/// EXPLAIN as the role) are the same for another organization's value and a missing one.
#[test]
fn the_planners_estimates_do_not_depend_on_other_organizations_values() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(&format!(
            "INSERT INTO app.tasks (org_id, project_id, title)
                  SELECT '{GLOBEX}', '{}', 'globex secret plan' FROM generate_series(1, 300);
             INSERT INTO app.tasks (org_id, project_id, title)
                  SELECT '{ACME}', '{}', 'acme task ' || g FROM generate_series(1, 300) g;
             ANALYZE app.tasks;",
            ROWS[0].2, ROWS[0].1
        ))
        .unwrap();
    let rows = |admin: &mut postgres::Client, as_app: bool, condition: &str| -> f64 {
        let mut tx = admin.transaction().unwrap();
        if as_app {
            tx.batch_execute(&format!(
                "SET LOCAL tenancy.allow_explain = on; SET LOCAL ROLE app_user; SELECT tenancy.set_context('{ACME}', 'alice')"
            ))
            .unwrap();
        }
        // The top node's estimate: `... (cost=... rows=N width=...)`.
        let plan: String =
            tx.query(&format!("EXPLAIN SELECT * FROM app.tasks WHERE {condition}"), &[]).unwrap()[0].get(0);
        let rows = plan.split(" rows=").nth(1).and_then(|r| r.split(' ').next()).unwrap();
        rows.parse().unwrap()
    };
    // As a DBA, the statistics are there: the other organization's title is a common value.
    assert!(rows(&mut admin, false, "title = 'globex secret plan'") > 100.0);
    for (theirs, missing) in [
        ("title = 'globex secret plan'", "title = 'no such title'"),
        ("title < 'globex secret plan'", "title < 'globex secret plam'"),
        ("title ^@ 'globex secret'", "title ^@ 'globex secres'"),
        (&format!("org_id = '{GLOBEX}'") as &str, &format!("org_id = '{NOWHERE}'")),
    ] {
        let [a, b] = [theirs, missing].map(|c| rows(&mut admin, true, c));
        assert_eq!(a, b, "{theirs} vs {missing}");
    }
    // Nor on what the organization writes itself: a value another organization holds, written
    // and analyzed, moved the distinct count less than a new one (a join's estimate showed it).
    let join = |admin: &mut postgres::Client, title: &str| -> String {
        admin
            .batch_execute(&format!(
                "DELETE FROM app.tasks WHERE assignee = 'probe';
                 INSERT INTO app.tasks (org_id, project_id, title, assignee) VALUES ('{ACME}', '{}', '{title}', 'probe');
                 ANALYZE app.tasks;",
                ROWS[0].1
            ))
            .unwrap();
        let mut tx = admin.transaction().unwrap();
        tx.batch_execute(&format!(
            "SET LOCAL tenancy.allow_explain = on; SET LOCAL ROLE app_user; SELECT tenancy.set_context('{ACME}', 'alice')"
        ))
        .unwrap();
        let plan: String =
            tx.query("EXPLAIN SELECT * FROM app.tasks a JOIN app.tasks b ON a.title = b.title", &[]).unwrap()[0].get(0);
        plan
    };
    assert_eq!(join(&mut admin, "globex secret plan"), join(&mut admin, "no such title"));
}

#[test]
fn the_organization_switcher_answers_only_for_the_contexts_user() {
    let db = TestDb::new();
    let mut c = db.app();
    for sql in ["SELECT * FROM tenancy.user_organizations('{}')", "SELECT tenancy.org_id('globex', '{}')"] {
        let [real, missing] = ["gina", "nobody"].map(|u| error_of(&mut c, &sql.replace("{}", u)));
        assert_eq!(real.code, "42501", "{sql}: {}", real.message);
        assert_eq!((real.message, real.detail, real.hint), (missing.message, missing.detail, missing.hint), "{sql}");
    }
    // Without a context, nothing (no user to answer for).
    assert_eq!(count(&mut c, "tenancy.user_organizations()"), 0);
    assert_eq!(text(&mut c, "SELECT tenancy.org_id('globex')"), None);
    // A context for gina answers for gina only.
    c.batch_execute("BEGIN; SELECT tenancy.set_user_context('gina')").unwrap();
    assert_eq!(count(&mut c, "tenancy.user_organizations()"), 1);
    assert_eq!(error_of(&mut c, "SELECT * FROM tenancy.user_organizations('sam')").code, "42501");
}

#[test]
fn sharing_with_a_missing_organization_answers_like_sharing_with_a_real_one() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "alice");
    for org in [GLOBEX, NOWHERE] {
        c.batch_execute(&format!("SELECT tenancy.share('app.documents', '{ACME_DOC}', '{org}')")).unwrap();
    }
    let listed: Vec<String> = c
        .query(&format!("SELECT org_id::text FROM tenancy.shares_of('app.documents', '{ACME_DOC}') ORDER BY 1"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(listed, [GLOBEX, NOWHERE]);
    // The share reaches nobody, and an organization created later with that id does not inherit it.
    db.admin()
        .batch_execute(&format!("SELECT tenancy.create_organization('Late', 'late', 'lou', id => '{NOWHERE}')"))
        .unwrap();
    assert_eq!(count(&mut db.app_in(NOWHERE, "lou"), &format!("app.documents WHERE id = '{ACME_DOC}'")), 0);
    assert_eq!(count(&mut c, &format!("tenancy.shares_of('app.documents', '{ACME_DOC}')")), 1);
}

/// Removing, demoting or suspending takes effect in sessions that set their context before, by
/// their next statement.
#[test]
fn a_session_context_loses_what_was_taken_away() {
    let db = TestDb::new();
    let mut bob = db.app_in(ACME, "bob");
    let mut carol = db.app_in(ACME, "carol");
    let mut gina = db.app_in(GLOBEX, "gina");
    let mut sam = db.app();
    sam.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'sam')")).unwrap();
    for c in [&mut bob, &mut carol, &mut gina, &mut sam] {
        assert_eq!(count(c, "app.projects"), 1);
    }
    let mut admin = db.admin();
    admin
        .batch_execute(&format!(
            "SELECT tenancy.remove_member('{ACME}', 'bob');
             SELECT tenancy.update_member('{ACME}', 'carol', 'guest');
             SELECT tenancy.set_organization_status('{GLOBEX}', 'suspended');
             SELECT tenancy.remove_member('{ACME}', 'sam');"
        ))
        .unwrap();
    // bob was an admin: no context any more, and he cannot add himself back.
    assert_eq!(text(&mut bob, "SELECT tenancy.current_org()"), None);
    assert_eq!(count(&mut bob, "app.projects"), 0);
    assert_eq!(error_of(&mut bob, "INSERT INTO app.projects (name) VALUES ('x')").message, "no tenant context");
    let e = error_of(&mut bob, &format!("SELECT tenancy.add_member('{ACME}', 'bob', 'owner')"));
    assert_eq!(e.code, "42501", "{}", e.message);
    // carol is a guest now.
    assert_eq!(text(&mut carol, "SELECT tenancy.current_member_role()").as_deref(), Some("guest"));
    let e = error_of(&mut carol, "INSERT INTO app.projects (name) VALUES ('x')");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("42501", "permission denied to INSERT on app.projects"));
    // globex is suspended.
    assert_eq!(count(&mut gina, "app.projects"), 0);
    // Within an open transaction too (its next statement).
    assert_eq!(count(&mut sam, "app.projects"), 0);
    sam.batch_execute("COMMIT").unwrap();
    // Coming back needs a new context; the old one stays gone.
    admin.batch_execute(&format!("SELECT tenancy.add_member('{ACME}', 'bob', 'member')")).unwrap();
    assert_eq!(count(&mut bob, "app.projects"), 0);
    bob.batch_execute(&format!("SELECT tenancy.set_session_context('{ACME}', 'bob')")).unwrap();
    assert_eq!(count(&mut bob, "app.projects"), 1);
    assert_eq!(text(&mut bob, "SELECT tenancy.current_member_role()").as_deref(), Some("member"));
}

/// What backends remember of memberships (each its own, and all of them together in shared
/// memory) is what was committed: a role given in a transaction that rolled back is not kept,
/// in that session or any other, and a change committed in one session reaches a connection
/// that remembered the old role and a new connection alike.
#[test]
fn only_committed_memberships_are_remembered() {
    let db = TestDb::new();
    let role_in = |c: &mut postgres::Client| -> Option<String> {
        c.batch_execute(&format!("BEGIN; SET LOCAL ROLE app_user; SELECT tenancy.set_context('{ACME}', 'carol')"))
            .unwrap();
        let role = text(c, "SELECT tenancy.current_member_role()");
        c.batch_execute("COMMIT").unwrap();
        role
    };
    let mut admin = db.admin();
    admin
        .batch_execute(&format!(
            "BEGIN;
             UPDATE tenancy.members SET role = 'owner' WHERE org_id = '{ACME}' AND user_id = 'carol';
             SET LOCAL ROLE app_user;
             SELECT tenancy.set_context('{ACME}', 'carol');"
        ))
        .unwrap();
    assert_eq!(text(&mut admin, "SELECT tenancy.current_member_role()").as_deref(), Some("owner"));
    admin.batch_execute("ROLLBACK").unwrap();
    assert_eq!(role_in(&mut admin).as_deref(), Some("member"), "the session that rolled back");
    assert_eq!(role_in(&mut db.admin()).as_deref(), Some("member"), "a new connection");
    // Committed: a connection that remembers carol as a member and a new one both see the change.
    let mut warm = db.admin();
    assert_eq!(role_in(&mut warm).as_deref(), Some("member"));
    admin.batch_execute(&format!("SELECT tenancy.update_member('{ACME}', 'carol', 'guest')")).unwrap();
    assert_eq!(role_in(&mut warm).as_deref(), Some("guest"));
    assert_eq!(role_in(&mut db.admin()).as_deref(), Some("guest"));
    admin.batch_execute(&format!("SELECT tenancy.remove_member('{ACME}', 'carol')")).unwrap();
    for mut c in [warm, db.admin()] {
        let e =
            error_of(&mut c, &format!("BEGIN; SET LOCAL ROLE app_user; SELECT tenancy.set_context('{ACME}', 'carol')"));
        assert_eq!(e.code, "42501", "{}", e.message);
    }
}

/// Attack (round 10): a member added, or an organization created by sign-up, in a transaction
/// that then set a context there and rolled back, was remembered for every later connection (at
/// a generation the rollback never moved): an owner who never existed, in an organization that
/// never existed.
#[test]
fn a_membership_that_never_committed_gives_no_context_anywhere() {
    let db = TestDb::new();
    let mut alice = db.app();
    alice
        .batch_execute(&format!(
            "BEGIN;
             SELECT tenancy.set_context('{ACME}', 'alice');
             SELECT tenancy.add_member('{ACME}', 'ghost', 'owner');
             SELECT tenancy.set_context('{ACME}', 'ghost');"
        ))
        .unwrap();
    assert_eq!(text(&mut alice, "SELECT tenancy.current_member_role()").as_deref(), Some("owner"));
    alice.batch_execute("ROLLBACK").unwrap();
    let mut mallory = db.app();
    mallory.batch_execute("BEGIN").unwrap();
    let phantom = text(&mut mallory, "SELECT tenancy.create_organization('Phantom', 'phantom', 'phil')").unwrap();
    mallory.batch_execute(&format!("SELECT tenancy.set_context('{phantom}', 'phil'); ROLLBACK")).unwrap();
    for mut c in [alice, mallory, db.app()] {
        for (org, user) in [(ACME, "ghost"), (phantom.as_str(), "phil")] {
            let e = error_of(&mut c, &format!("BEGIN READ ONLY; SELECT tenancy.set_context('{org}', '{user}')"));
            assert_eq!(e.code, "42501", "{user}: {}", e.message);
            c.batch_execute("ROLLBACK").unwrap();
        }
    }
}

#[test]
fn the_read_only_role_cannot_write_through_the_api() {
    let db = TestDb::new();
    let mut c = db.connect_as("app_readonly");
    c.batch_execute(&format!("SELECT tenancy.set_session_context('{ACME}', 'alice')")).unwrap();
    for (sql, function) in [
        (format!("SELECT tenancy.share('app.documents', '{ACME_DOC}', '{GLOBEX}', '{{read,write}}')"), "share"),
        (format!("SELECT tenancy.unshare('app.documents', '{ACME_DOC}', '{GLOBEX}')"), "unshare"),
        (format!("SELECT tenancy.add_member('{ACME}', 'mallory', 'owner')"), "add_member"),
        (format!("SELECT tenancy.update_member('{ACME}', 'gus', 'owner')"), "update_member"),
        (format!("SELECT tenancy.remove_member('{ACME}', 'bob')"), "remove_member"),
        (format!("SELECT tenancy.set_organization_status('{ACME}', 'suspended')"), "set_organization_status"),
        ("SELECT tenancy.record_usage('api_calls', 5)".into(), "record_usage"),
        ("SELECT tenancy.try_record_usage('api_calls', 5)".into(), "try_record_usage"),
        ("SELECT tenancy.create_organization('Mine', 'mine', 'alice')".into(), "create_organization"),
    ] {
        let e = error_of(&mut c, &sql);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("42501", format!("permission denied for function {function}").as_str())
        );
    }
    // It still reads.
    assert_eq!(count(&mut c, "app.projects"), 1);
    assert_eq!(count(&mut c, &format!("tenancy.quotas('{ACME}')")), 9);
    assert_eq!(count(&mut db.admin(), "tenancy.shares"), 0);
}

#[test]
fn amounts_that_would_overflow_are_refused_and_reports_never_fail() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "alice");
    c.batch_execute("SELECT tenancy.record_usage('api_calls', 1)").unwrap();
    for f in ["record_usage", "try_record_usage"] {
        let e = error_of(&mut c, &format!("SELECT tenancy.{f}('api_calls', 9223372036854775807)"));
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("22003", "value 9223372036854775807 is out of range for usage of metric \"api_calls\"")
        );
        assert_eq!(e.detail.as_deref(), Some("Each row or call counts 0 to 1000000000000000."));
    }
    assert_eq!(text(&mut c, &format!("SELECT tenancy.usage('{ACME}', 'api_calls')")).as_deref(), Some("1"));
    // A row summed by a quota (storage, 1 GB on globex's plan) and metered by [usage].
    let mut g = db.app_in(GLOBEX, "gina");
    let e = error_of(&mut g, "INSERT INTO app.files (name, size_bytes) VALUES ('huge', 9223372036854775807)");
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("22003", "value 9223372036854775807 is out of range for column \"size_bytes\" counted by quota \"storage\"")
    );
    let e =
        error_of(&mut g, &format!("UPDATE app.files SET size_bytes = 9223372036854775807 WHERE id = '{}'", ROWS[3].2));
    assert_eq!(e.code, "22003");
    // Usage that passes a bigint (rows written by a DBA) is summed as numeric: every report works.
    let mut admin = db.admin();
    admin
        .batch_execute(&format!(
            "INSERT INTO tenancy.usage_events (org_id, metric, amount)
             SELECT '{ACME}', 'compute_ms', 4000000000000000000 FROM generate_series(1, 3)"
        ))
        .unwrap();
    assert_eq!(
        text(
            &mut admin,
            &format!("SELECT amount FROM tenancy.usage_report() WHERE org_id = '{ACME}' AND metric = 'compute_ms'")
        )
        .as_deref(),
        Some("12000000000000000000")
    );
    assert_eq!(count(&mut admin, "tenancy.usage_report()"), 10);
    assert_eq!(
        text(&mut c, &format!("SELECT tenancy.usage('{ACME}', 'compute_ms')")).as_deref(),
        Some("12000000000000000000")
    );
    assert_eq!(
        text(&mut c, &format!("SELECT used FROM tenancy.quota('{ACME}', 'compute_ms')")).as_deref(),
        Some("9223372036854775807"),
        "quota() shows at most a bigint"
    );
    assert_eq!(count(&mut g, &format!("tenancy.quotas('{GLOBEX}')")), 9);
}

/// `[usage]` meters what an update adds to the amount column, ON CONFLICT DO UPDATE included.
#[test]
fn updates_cannot_bypass_metering() {
    let db = TestDb::new();
    let mut g = db.app_in(GLOBEX, "gina");
    let bandwidth = |c: &mut postgres::Client| text(c, &format!("SELECT tenancy.usage('{GLOBEX}', 'bandwidth_bytes')"));
    let before: i64 = bandwidth(&mut g).unwrap().parse().unwrap();
    let id = "b4000000-0000-0000-0000-0000000000ff";
    g.batch_execute(&format!("INSERT INTO app.files (id, name, size_bytes) VALUES ('{id}', 'empty', 0)")).unwrap();
    assert_eq!(bandwidth(&mut g).unwrap().parse::<i64>().unwrap(), before);
    g.batch_execute(&format!("UPDATE app.files SET size_bytes = 500 WHERE id = '{id}'")).unwrap();
    assert_eq!(bandwidth(&mut g).unwrap().parse::<i64>().unwrap(), before + 500);
    g.batch_execute(&format!(
        "INSERT INTO app.files (id, name, size_bytes) VALUES ('{id}', 'empty', 800)
         ON CONFLICT (org_id, id) DO UPDATE SET size_bytes = excluded.size_bytes"
    ))
    .unwrap();
    assert_eq!(bandwidth(&mut g).unwrap().parse::<i64>().unwrap(), before + 800);
    // Lowering gives nothing back; the storage quota follows the row exactly.
    g.batch_execute(&format!("UPDATE app.files SET size_bytes = 100 WHERE id = '{id}'")).unwrap();
    assert_eq!(bandwidth(&mut g).unwrap().parse::<i64>().unwrap(), before + 800);
    assert_eq!(text(&mut g, &format!("SELECT used FROM tenancy.quota('{GLOBEX}', 'storage')")).as_deref(), Some("200"));
}

#[test]
fn other_sessions_and_statistics_are_out_of_sight() {
    let db = TestDb::new();
    let mut watcher = db.app();
    let _busy = db.app_in(GLOBEX, "gina");
    for sql in [
        "SELECT query FROM pg_stat_activity",
        "SELECT * FROM pg_stat_get_activity(NULL)",
        "SELECT n_live_tup FROM pg_stat_user_tables",
        "SELECT pg_stat_get_live_tuples('app.projects'::regclass)",
        "SELECT pg_stat_get_tuples_inserted('app.projects'::regclass)",
        "SELECT * FROM pg_statio_user_tables",
    ] {
        let e = error_of(&mut watcher, sql);
        assert_eq!(e.code, "42501", "{sql}: {}", e.message);
    }
    // Large objects: every tenant is the same role, which would own them all.
    for sql in ["SELECT lo_create(0)", "SELECT lo_from_bytea(0, 'secret')", "SELECT lo_get(1)"] {
        let e = error_of(&mut watcher, sql);
        assert_eq!(e.code, "42501", "{sql}: {}", e.message);
    }
    // Monitoring keeps them.
    let monitor = TempRole::new(&db, "monitor", "IN ROLE pg_monitor");
    let mut m = monitor.connect();
    assert!(count(&mut m, "pg_stat_activity") >= 1);
    m.batch_execute("SELECT n_live_tup FROM pg_stat_user_tables").unwrap();
}

#[test]
fn a_holdable_cursor_does_not_cross_into_another_context() {
    let db = TestDb::new();
    let mut c = db.app();
    // Over rows the policies hide, none at all: after COMMIT its rows are read without the
    // executor (FETCH, cursor_to_xml(), PL/pgSQL) by whoever has the connection.
    c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'sam')")).unwrap();
    let e = error_of(&mut c, "DECLARE acme_rows CURSOR WITH HOLD FOR SELECT name FROM app.projects");
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("42501", "WITH HOLD cursors are not allowed on queries that row-level security applies to")
    );
    c.batch_execute("ROLLBACK").unwrap();
    c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'sam')")).unwrap();
    assert_eq!(
        error_of(
            &mut c,
            "DECLARE d CURSOR WITH HOLD FOR SELECT * FROM (SELECT name FROM app.projects) p JOIN app.countries ON true"
        )
        .code,
        "42501"
    );
    c.batch_execute("ROLLBACK").unwrap();
    // Over reference data it may be held, and still no other context starts while it is open.
    c.batch_execute(&format!(
        "BEGIN; SELECT tenancy.set_context('{ACME}', 'sam');
         DECLARE acme_rows CURSOR WITH HOLD FOR SELECT * FROM app.countries;
         COMMIT;"
    ))
    .unwrap();
    let e = error_of(&mut c, &format!("BEGIN; SELECT tenancy.set_context('{GLOBEX}', 'sam')"));
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("55000", "cannot start a tenant context while cursor \"acme_rows\" from another context is open")
    );
    assert_eq!(e.hint.as_deref(), Some("CLOSE acme_rows (or CLOSE ALL) first."));
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!(error_of(&mut c, "SELECT tenancy.set_user_context('gina')").code, "55000");
    // The same context may go on reading it; closing it lets another start.
    c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'sam'); FETCH ALL acme_rows; COMMIT;"))
        .unwrap();
    c.batch_execute("CLOSE acme_rows").unwrap();
    c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{GLOBEX}', 'sam'); COMMIT;")).unwrap();
    // DISCARD ALL (a pooler's reset) closes them too.
    c.batch_execute(&format!(
        "BEGIN; SELECT tenancy.set_context('{ACME}', 'sam');
         DECLARE again CURSOR WITH HOLD FOR SELECT * FROM app.countries; COMMIT;"
    ))
    .unwrap();
    c.batch_execute("DISCARD ALL").unwrap();
    c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{GLOBEX}', 'sam'); COMMIT;")).unwrap();
}

#[test]
fn a_reshare_chain_of_any_depth_is_revoked() {
    let db = TestDb::new();
    // 1,000 organizations, each passing ACME's document on to the next (written directly).
    db.admin()
        .batch_execute(&format!(
            "INSERT INTO tenancy.shares (relation, owner_org, row_id, grantee_org, can_reshare, granted_by_org, granted_by)
             SELECT 'app.documents'::regclass, '{ACME}', '{ACME_DOC}',
                    ('e0000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, true,
                    CASE WHEN g = 1 THEN '{ACME}'::uuid ELSE ('e0000000-0000-0000-0000-' || lpad((g - 1)::text, 12, '0'))::uuid END,
                    'seed'
               FROM generate_series(1, 1000) g"
        ))
        .unwrap();
    let mut c = db.app_in(ACME, "alice");
    let first = "e0000000-0000-0000-0000-000000000001";
    assert_eq!(
        text(&mut c, &format!("SELECT tenancy.unshare('app.documents', '{ACME_DOC}', '{first}')")).as_deref(),
        Some("true")
    );
    assert_eq!(count(&mut db.admin(), "tenancy.shares"), 0);
}

#[test]
fn sign_up_has_limits_and_dbas_can_turn_it_off() {
    let db = TestDb::new();
    let mut c = db.app();
    let e = error_of(&mut c, "SELECT tenancy.create_organization(repeat('x', 10 * 1024 * 1024), 'big', 'u')");
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("22023", "invalid value for parameter \"name\": is 10485760 characters long")
    );
    let e = error_of(&mut c, "SELECT tenancy.create_organization('Ok', 'ok', repeat('u', 300))");
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("22023", "invalid value for parameter \"owner_user_id\": is 300 bytes long")
    );
    let e = error_of(&mut c, &format!("SELECT tenancy.set_context('{ACME}', repeat('u', 300))"));
    assert_eq!(e.code, "22023");
    let mut admin = db.admin();
    admin.batch_execute(&format!("ALTER DATABASE {} SET tenancy.allow_signup = off", db.name)).unwrap();
    let e = error_of(&mut db.app(), "SELECT tenancy.create_organization('Later', 'later', 'u')");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("42501", "permission denied to create an organization"));
    assert_eq!(e.detail.as_deref(), Some("Sign-up is turned off here: tenancy.allow_signup is off."));
    let e = error_of(&mut db.app(), "SET tenancy.allow_signup = on");
    assert_eq!(e.code, "42501", "{}", e.message);
    assert!(text(&mut db.admin(), "SELECT tenancy.create_organization('Later', 'later', 'u')").is_some());
}

/// An error raised inside SPI crosses pgrx's boundary; the test server runs with RUST_BACKTRACE
/// set, and no backtrace may reach the client.
#[test]
fn errors_carry_no_rust_backtrace() {
    let db = TestDb::new();
    // Another membership change of the organization in progress holds its row.
    let mut lock = db.admin();
    lock.batch_execute(&format!("BEGIN; SELECT FROM tenancy.organizations WHERE id = '{ACME}' FOR NO KEY UPDATE"))
        .unwrap();
    let mut c = db.app();
    let e = error_of(
        &mut c,
        &format!(
            "BEGIN; SET LOCAL lock_timeout = '50ms'; SELECT tenancy.set_context('{ACME}', 'alice');
             SELECT tenancy.add_member('{ACME}', 'zed', 'guest')"
        ),
    );
    assert_eq!((e.code.as_str(), e.message.as_str()), ("55P03", "canceling statement due to lock timeout"));
    let detail = e.detail.unwrap_or_default();
    assert!(!detail.contains("pgrx") && !detail.contains("backtrace") && !detail.contains(".rs"), "DETAIL: {detail}");
    lock.batch_execute("ROLLBACK").unwrap();
}

/// Every organization's rows are in the same tables: a table lock that blocks writes would stop
/// every other organization.
#[test]
fn the_application_cannot_lock_a_shared_table_against_writes() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "alice");
    for mode in ["SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"] {
        let e = error_of(&mut c, &format!("BEGIN; LOCK TABLE app.projects IN {mode} MODE"));
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("42501", "LOCK TABLE in a mode that blocks writes is not allowed on table \"projects\""),
            "{mode}"
        );
        c.batch_execute("ROLLBACK").unwrap();
    }
    // What ordinary writes take anyway stays allowed; DBAs lock what they need.
    c.batch_execute("BEGIN; LOCK TABLE app.projects IN ROW EXCLUSIVE MODE; ROLLBACK").unwrap();
    db.admin().batch_execute("BEGIN; LOCK TABLE app.projects IN ACCESS EXCLUSIVE MODE; ROLLBACK").unwrap();
}

/// The owner of a shareable table gives its id column a type of its own with a cast to text:
/// forgetting a deleted row's shares casts the ids, and must do it as that owner.
#[test]
fn forgetting_shares_runs_the_tables_cast_as_its_owner() {
    let db = TestDb::new();
    let migrator = migration_schema(&db);
    let m = &migrator.name;
    let mut owner = migrator.connect();
    owner
        .batch_execute(
            "CREATE TABLE mig.notes (org_id uuid NOT NULL DEFAULT tenancy.current_org(),
                                     id uuid NOT NULL DEFAULT gen_random_uuid(), body text, PRIMARY KEY (org_id, id));
             ALTER TABLE mig.notes ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON mig.notes TO app_user
                 USING (org_id = (SELECT tenancy.current_org())) WITH CHECK (org_id = (SELECT tenancy.current_org()));
             GRANT SELECT, INSERT, DELETE ON mig.notes TO app_user;",
        )
        .unwrap();
    db.admin().batch_execute("SELECT tenancy.enable_sharing('mig.notes', 'id', 'org_id')").unwrap();
    let mut alice = db.app_in(ACME, "alice");
    alice
        .batch_execute(&format!(
            "INSERT INTO mig.notes (id, body) VALUES ('aaaaaaaa-0000-0000-0000-000000000001', 'n');
             SELECT tenancy.share('mig.notes', 'aaaaaaaa-0000-0000-0000-000000000001', '{GLOBEX}');"
        ))
        .unwrap();
    owner
        .batch_execute(&format!(
            "CREATE TABLE mig.ran (who text, superuser boolean);
             CREATE TYPE mig.nid AS (v uuid);
             CREATE FUNCTION mig.nid_text(mig.nid) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO mig.ran SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
                 BEGIN ALTER ROLE {m} SUPERUSER; EXCEPTION WHEN OTHERS THEN NULL; END;
                 RETURN ($1).v::text;
             END $$;
             CREATE CAST (mig.nid AS text) WITH FUNCTION mig.nid_text(mig.nid);
             ALTER TABLE mig.notes ALTER COLUMN id DROP DEFAULT;
             ALTER TABLE mig.notes ALTER COLUMN id TYPE mig.nid USING row(id)::mig.nid;
             DELETE FROM mig.notes;"
        ))
        .unwrap();
    let mut admin = db.admin();
    let ran: Vec<(String, bool)> =
        admin.query("SELECT who, superuser FROM mig.ran", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(!ran.is_empty(), "the cast did not run: the attack was not exercised");
    assert!(ran.iter().all(|(who, superuser)| who == m && !superuser), "{ran:?}");
    assert_eq!(
        text(&mut admin, &format!("SELECT rolsuper FROM pg_roles WHERE rolname = '{m}'")).as_deref(),
        Some("false")
    );
    assert_eq!(count(&mut admin, "tenancy.shares"), 0, "the deleted row's share went with it");
}

/// Code the extension runs as a table's owner (an index expression, while the counter rebuild
/// plans its count) changes a setting for the session: the change must not outlive that code and
/// reach the caller (here a search_path that would make `=` the owner's own operator).
#[test]
fn a_tables_code_cannot_change_the_callers_settings() {
    let db = TestDb::new();
    let migrator = migration_schema(&db);
    let m = &migrator.name;
    // Only when it runs as the owner (as the extension runs it); anyone writing to the table runs
    // its index expressions too, in their own session, which is PostgreSQL's and not ours.
    migrator
        .connect()
        .batch_execute(&format!(
            "CREATE TABLE mig.ran (what text);
             CREATE FUNCTION mig.note() RETURNS int LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO mig.ran VALUES (current_user); RETURN 1; END $$;
             CREATE FUNCTION mig.hijack() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
             BEGIN
                 IF current_user = '{m}' THEN
                     PERFORM pg_catalog.set_config('search_path', 'mig, pg_catalog', false);
                     RETURN mig.note();
                 END IF;
                 RETURN 1;
             END $$;
             CREATE INDEX items_hijack ON mig.items ((mig.hijack() + n));"
        ))
        .unwrap();
    let mut admin = db.admin();
    admin.batch_execute("SELECT tenancy.enable_quota('custom_domains', 'mig.items')").unwrap();
    admin.batch_execute("DELETE FROM mig.ran").unwrap(); // the index build ran it, as the owner
                                                         // A backend evaluates a table's index expressions once, when it first needs them: here the
                                                         // counter rebuild of quota() (as the table's owner) is the first, in a fresh session.
    let mut c = db.app_in(ACME, "alice");
    let before = text(&mut c, "SELECT current_setting('search_path')");
    c.batch_execute(&format!("SELECT * FROM tenancy.quota('{ACME}', 'custom_domains')")).unwrap();
    assert_eq!(
        text(&mut admin, "SELECT string_agg(DISTINCT what, ',') FROM mig.ran").as_deref(),
        Some(m.as_str()),
        "the index expression did not run as the owner: the attack was not exercised"
    );
    assert_eq!(text(&mut c, "SELECT current_setting('search_path')"), before, "the application kept its search_path");
    // A DBA reading quotas (a rebuild, after TRUNCATE) keeps its own too.
    migrator.connect().batch_execute("TRUNCATE mig.items").unwrap();
    let mut dba = db.admin();
    let before = text(&mut dba, "SELECT current_setting('search_path')");
    dba.batch_execute(&format!("SELECT * FROM tenancy.quotas('{ACME}')")).unwrap();
    assert_eq!(text(&mut dba, "SELECT current_setting('search_path')"), before, "the DBA kept its search_path");
}

/// Every organization's sessions run as the application role: a setting or password it gave
/// itself would break all of them.
#[test]
fn an_application_role_cannot_change_itself() {
    let db = TestDb::new();
    for (mut c, role) in [(db.app(), "app_user"), (db.connect_as("app_readonly"), "app_readonly")] {
        for sql in [
            format!("ALTER ROLE {role} SET default_transaction_read_only = on"),
            "ALTER ROLE CURRENT_USER SET statement_timeout = '1ms'".to_string(),
            format!("ALTER ROLE {role} IN DATABASE {} SET row_security = off", db.name),
            format!("ALTER ROLE {role} PASSWORD 'mine now'"),
            format!("ALTER ROLE {role} RESET ALL"),
        ] {
            let e = error_of(&mut c, &sql);
            assert_eq!(
                (e.code.as_str(), e.message.as_str()),
                (
                    "42501",
                    format!("permission denied to alter role \"{role}\": an application role may not change itself")
                        .as_str()
                ),
                "{sql}"
            );
        }
    }
    // Other roles may still change their own settings.
    let human = TempRole::new(&db, "human", "NOSUPERUSER");
    human.connect().batch_execute(&format!("ALTER ROLE {} SET work_mem = '8MB'", human.name)).unwrap();
}

#[test]
fn sign_up_chooses_only_self_service_plans() {
    let db = TestDb::new();
    let mut c = db.app();
    for sql in [
        "SELECT tenancy.create_organization('Rich', 'rich', 'eve', 'enterprise')".to_string(),
        format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'alice'); SELECT tenancy.create_organization('Sub', 'sub', 'alice', 'pro', parent_id => '{ACME}')"),
    ] {
        let e = error_of(&mut c, &sql);
        assert_eq!(e.code, "42501", "{sql}: {}", e.message);
        assert!(e.message.starts_with("permission denied to choose plan"), "{sql}: {}", e.message);
        assert_eq!(e.detail.as_deref(), Some("Sign-up may choose the plans marked self_service in tenancy.plans: free."));
        c.batch_execute("ROLLBACK").unwrap();
    }
    assert!(text(&mut c, "SELECT tenancy.create_organization('Free', 'free-one', 'eve')").is_some());
    assert!(text(&mut db.admin(), "SELECT tenancy.create_organization('Rich', 'rich', 'eve', 'enterprise')").is_some());
}

/// add_member and remove_member count under the organization's row lock: with the latest
/// snapshot, so REPEATABLE READ transactions cannot pass the members quota or remove the last
/// owner together.
#[test]
fn membership_limits_hold_for_concurrent_repeatable_read_transactions() {
    let db = TestDb::new();
    // Each transaction takes its snapshot first; then they all try at once.
    let race = |sessions: Vec<(postgres::Client, String)>| -> usize {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(sessions.len()));
        let handles: Vec<_> = sessions
            .into_iter()
            .map(|(mut c, sql)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let ok = c.batch_execute(&format!("{sql}; COMMIT")).is_ok();
                    if !ok {
                        c.batch_execute("ROLLBACK").unwrap();
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count()
    };
    let session = |org: &str, user: &str, sql: String| {
        let mut c = db.app();
        c.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT tenancy.set_context('{org}', '{user}');
             SELECT count(*) FROM tenancy.members;"
        ))
        .unwrap();
        (c, sql)
    };
    // GLOBEX is on the free plan (5 members) and has 2.
    let adds =
        (0..6).map(|i| session(GLOBEX, "gina", format!("SELECT tenancy.add_member('{GLOBEX}', 'new{i}')"))).collect();
    assert_eq!(race(adds), 3);
    assert_eq!(count(&mut db.admin(), &format!("tenancy.members WHERE org_id = '{GLOBEX}'")), 5);
    // Two owners leaving at once: one stays.
    db.admin().batch_execute(&format!("SELECT tenancy.update_member('{ACME}', 'bob', 'owner')")).unwrap();
    let leaves = ["alice", "bob"]
        .into_iter()
        .map(|u| session(ACME, u, format!("SELECT tenancy.remove_member('{ACME}', '{u}')")))
        .collect();
    assert_eq!(race(leaves), 1);
    assert_eq!(count(&mut db.admin(), &format!("tenancy.members WHERE org_id = '{ACME}' AND role = 'owner'")), 1);
}

#[test]
fn settings_in_postgresql_conf_reach_the_extension() {
    // scripts/cluster.sh writes tenancy.max_counters = 70000 for the test cluster.
    let db = TestDb::new();
    assert_eq!(text(&mut db.admin(), "SELECT current_setting('tenancy.max_counters')").as_deref(), Some("70000"));
}

/// A shareable partitioned table: deleting or truncating a partition directly takes the shares
/// of its rows too.
#[test]
fn deleting_from_a_partition_forgets_its_rows_shares() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(
            "CREATE SCHEMA part;
             CREATE TABLE part.docs (org_id uuid NOT NULL DEFAULT tenancy.current_org(), id uuid NOT NULL,
                                     title text NOT NULL, PRIMARY KEY (org_id, id)) PARTITION BY HASH (org_id);
             CREATE TABLE part.docs_0 PARTITION OF part.docs FOR VALUES WITH (MODULUS 2, REMAINDER 0);
             CREATE TABLE part.docs_1 PARTITION OF part.docs FOR VALUES WITH (MODULUS 2, REMAINDER 1);
             ALTER TABLE part.docs ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON part.docs TO app_user
                 USING (org_id = (SELECT tenancy.current_org())) WITH CHECK (org_id = (SELECT tenancy.current_org()));
             GRANT USAGE ON SCHEMA part TO app_user;
             GRANT SELECT, INSERT ON part.docs TO app_user;
             SELECT tenancy.enable_sharing('part.docs', 'id', 'org_id');",
        )
        .unwrap();
    let mut alice = db.app_in(ACME, "alice");
    for id in ["aaaaaaaa-0000-0000-0000-000000000001", "aaaaaaaa-0000-0000-0000-000000000002"] {
        alice
            .batch_execute(&format!(
                "INSERT INTO part.docs (id, title) VALUES ('{id}', 'd');
                 SELECT tenancy.share('part.docs', '{id}', '{GLOBEX}');"
            ))
            .unwrap();
    }
    assert_eq!(count(&mut admin, "tenancy.shares"), 2);
    let partition =
        text(&mut admin, &format!("SELECT tableoid::regclass FROM part.docs WHERE org_id = '{ACME}' LIMIT 1")).unwrap();
    admin.batch_execute(&format!("DELETE FROM {partition} WHERE id = 'aaaaaaaa-0000-0000-0000-000000000001'")).unwrap();
    assert_eq!(count(&mut admin, "tenancy.shares"), 1);
    admin.batch_execute(&format!("TRUNCATE {partition}")).unwrap();
    assert_eq!(count(&mut admin, "tenancy.shares"), 0);
}

/// A migration role plants code in its table that tries to become the superuser `tenancy
/// verify` connects as (`RESET ROLE`), and grants the table to roles it would like to act as:
/// verify runs the table's code in a security-restricted operation, and only as the application
/// roles the DBA marked. Sequences keep their values through verify's rollback, so they tell what
/// the code did.
#[test]
fn verify_runs_the_audited_tables_code_without_the_superusers_rights() {
    let db = TestDb::new();
    let migrator = migration_schema(&db);
    let ops = TempRole::new(&db, "ops", "NOSUPERUSER");
    let (m, o) = (&migrator.name, &ops.name);
    migrator
        .connect()
        .batch_execute(&format!(
            "CREATE SEQUENCE mig.ran; CREATE SEQUENCE mig.escaped; CREATE SEQUENCE mig.other;
             GRANT USAGE ON SEQUENCE mig.ran, mig.escaped, mig.other TO PUBLIC;
             GRANT USAGE ON SCHEMA mig TO {o}, tenancy_admin;
             GRANT SELECT, INSERT, UPDATE, DELETE ON mig.items TO {o}, tenancy_admin;
             CREATE FUNCTION mig.trap() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM nextval('mig.ran');
                 IF current_user NOT IN ('{m}', 'app_user', 'app_readonly') THEN PERFORM nextval('mig.other'); END IF;
                 BEGIN RESET ROLE; EXCEPTION WHEN OTHERS THEN NULL; END;
                 BEGIN SET SESSION AUTHORIZATION DEFAULT; EXCEPTION WHEN OTHERS THEN NULL; END;
                 IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                     PERFORM nextval('mig.escaped');
                 END IF;
                 RETURN coalesce(NEW, OLD);
             END $$;
             CREATE TRIGGER trap BEFORE INSERT OR UPDATE OR DELETE ON mig.items
                 FOR EACH ROW EXECUTE FUNCTION mig.trap();"
        ))
        .unwrap();
    let options = pg_tenancy_compiler::verify::Options {
        schemas: vec!["mig".into()],
        tenant_column: "org_id".into(),
        app_roles: vec![],
    };
    let report = pg_tenancy_compiler::verify::verify(&mut db.admin(), &options, None).expect("verify runs");
    assert_eq!(report.roles, ["app_readonly", "app_user"], "the members of tenancy_writer and tenancy_reader");
    let mut admin = db.admin();
    assert_eq!(text(&mut admin, "SELECT is_called FROM mig.ran").as_deref(), Some("true"), "the trap never ran");
    assert_eq!(
        text(&mut admin, "SELECT is_called FROM mig.escaped").as_deref(),
        Some("false"),
        "the trap became superuser"
    );
    assert_eq!(text(&mut admin, "SELECT is_called FROM mig.other").as_deref(), Some("false"), "verify acted as {o}");
}

/// `shares_of()` canonicalises the id it is given by casting it to the id column's type, a
/// domain here whose CHECK is the table owner's code: it runs as that owner, whoever calls.
#[test]
fn shares_of_casts_ids_as_the_tables_owner() {
    let db = TestDb::new();
    let migrator = migration_schema(&db);
    let m = &migrator.name;
    migrator
        .connect()
        .batch_execute(
            "CREATE TABLE mig.ran (who text, superuser boolean);
             GRANT INSERT ON mig.ran TO PUBLIC;
             CREATE FUNCTION mig.trap(bigint) RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO mig.ran SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
                 RETURN true;
             END $$;
             CREATE DOMAIN mig.myid AS bigint CHECK (mig.trap(VALUE));
             CREATE TABLE mig.docs (org_id uuid NOT NULL, id mig.myid NOT NULL, PRIMARY KEY (org_id, id));
             ALTER TABLE mig.docs ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON mig.docs TO app_user USING (org_id = (SELECT tenancy.current_org()));
             GRANT SELECT ON mig.docs TO app_user;",
        )
        .unwrap();
    let mut admin = db.admin();
    admin.batch_execute("SELECT tenancy.enable_sharing('mig.docs', 'id', 'org_id')").unwrap();
    admin.batch_execute("SELECT * FROM tenancy.shares_of('mig.docs', '5')").unwrap();
    db.app_in(ACME, "alice").batch_execute("SELECT * FROM tenancy.shares_of('mig.docs', '6')").unwrap();
    let ran: Vec<(String, bool)> =
        admin.query("SELECT who, superuser FROM mig.ran", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(ran.len(), 2, "the domain's check did not run for each call: {ran:?}");
    assert!(ran.iter().all(|(who, superuser)| who == m && !superuser), "{ran:?}");
}

/// Deleting counted rows holds a counter too (its release is in flight, so it cannot be
/// evicted): releases count toward the per-transaction cap like reservations.
#[test]
fn releasing_counters_counts_toward_the_transactions_cap() {
    let db = TestDb::new();
    let mut c = db.app();
    let mut orgs = Vec::new();
    for i in 0..70 {
        let org =
            text(&mut c, &format!("SELECT tenancy.create_organization('Shell {i}', 'shell-{i}', 'mallory')")).unwrap();
        c.batch_execute(&format!(
            "BEGIN; SELECT tenancy.set_context('{org}', 'mallory'); INSERT INTO app.projects (name) VALUES ('p'); COMMIT;"
        ))
        .unwrap();
        orgs.push(org);
    }
    c.batch_execute("BEGIN").unwrap();
    let mut refused = None;
    for (i, org) in orgs.iter().enumerate() {
        c.batch_execute(&format!("SELECT tenancy.set_context('{org}', 'mallory')")).unwrap();
        if let Err(e) = c.batch_execute("DELETE FROM app.projects") {
            refused = Some((i, DbError::of(&e)));
            break;
        }
    }
    let (i, e) = refused.expect("releases on 70 counters in one transaction were accepted");
    assert_eq!(i, 64, "the 65th counter is refused");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("53400", "too many quota counters in one transaction"));
    c.batch_execute("ROLLBACK").unwrap();
}

/// A grantee passing a share on is checked at commit, with a lock on the share it received
/// held for that moment. Checking it early (SET CONSTRAINTS ... IMMEDIATE) would hold that lock
/// for the rest of its transaction, and the owner's unshare() would wait as long: refused.
#[test]
fn a_grantee_cannot_check_its_reshare_early_to_hold_up_the_owner() {
    let db = TestDb::new();
    let third = text(&mut db.admin(), "SELECT tenancy.create_organization('Initech', 'initech', 'ian')").unwrap();
    db.app_in(ACME, "alice")
        .batch_execute(&format!("SELECT tenancy.share('app.documents', '{ACME_DOC}', '{GLOBEX}', '{{read,reshare}}')"))
        .unwrap();
    let mut gina = db.app();
    gina.batch_execute(&format!(
        "BEGIN; SELECT tenancy.set_context('{GLOBEX}', 'gina');
         SELECT tenancy.share('app.documents', '{ACME_DOC}', '{third}', '{{read}}');"
    ))
    .unwrap();
    for statement in ["SET CONSTRAINTS ALL IMMEDIATE", "SET CONSTRAINTS tenancy.reshare_still_allowed IMMEDIATE"] {
        gina.batch_execute("SAVEPOINT s").unwrap();
        let e = error_of(&mut gina, statement);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("55000", "SET CONSTRAINTS ... IMMEDIATE is not allowed after passing a share on in this transaction"),
            "{statement}"
        );
        gina.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    }
    // Other constraints may be checked early.
    gina.batch_execute("SET CONSTRAINTS app.documents_pkey IMMEDIATE").ok();
    gina.batch_execute("ROLLBACK").unwrap();
    // Without a pending reshare (the owner's own shares queue no check), it is allowed.
    db.app()
        .batch_execute(&format!(
            "BEGIN; SELECT tenancy.set_context('{ACME}', 'alice');
             SELECT tenancy.share('app.documents', '{ACME_DOC}', '{third}', '{{read}}');
             SET CONSTRAINTS ALL IMMEDIATE; COMMIT;"
        ))
        .unwrap();
}

/// A REPEATABLE READ transaction keeps its snapshot, where an ended share still shows: it may go
/// on reading the row as of that snapshot (as for every change, under MVCC), but writing it after
/// the share ended or lost `write` fails with a serialization failure (retry): the write is
/// checked against the shares as they are now.
#[test]
fn an_ended_share_stops_writes_of_transactions_that_began_before() {
    let db = TestDb::new();
    let share = |permissions: &str| {
        db.app_in(ACME, "alice")
            .batch_execute(&format!("SELECT tenancy.share('app.documents', '{ACME_DOC}', '{GLOBEX}', '{permissions}')"))
            .unwrap()
    };
    let unshare = || {
        db.app_in(ACME, "alice")
            .batch_execute(&format!("SELECT tenancy.unshare('app.documents', '{ACME_DOC}', '{GLOBEX}')"))
            .unwrap()
    };
    let seen = format!("app.documents WHERE id = '{ACME_DOC}'");
    let write = |body: &str| format!("UPDATE app.documents SET body = '{body}' WHERE id = '{ACME_DOC}'");
    let refused =
        "could not serialize access: the share that lets your organization write this row of app.documents has ended";
    let mut gina = db.app();
    for (end, what) in [(None, "unshare"), (Some("{read}"), "narrowed to read")] {
        share("{read,write}");
        gina.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT tenancy.set_context('{GLOBEX}', 'gina')"
        ))
        .unwrap();
        assert_eq!(count(&mut gina, &seen), 1);
        gina.batch_execute(&write("while shared")).unwrap();
        match end {
            None => unshare(),
            Some(permissions) => share(permissions),
        }
        let e = error_of(&mut gina, &write("written after revocation"));
        assert_eq!((e.code.as_str(), e.message.as_str()), ("40001", refused), "{what}");
        gina.batch_execute("ROLLBACK").unwrap();
    }
    let body = text(&mut db.admin(), &format!("SELECT body FROM {seen}"));
    assert_ne!(body.as_deref(), Some("written after revocation"));
    // In READ COMMITTED the next statement sees the share gone.
    unshare();
    gina.batch_execute(&format!("SELECT tenancy.set_session_context('{GLOBEX}', 'gina')")).unwrap();
    assert_eq!(count(&mut gina, &seen), 0);
}

/// EXPLAIN ANALYZE of a query that reads nothing hidden itself, but calls functions that do, or
/// runs a cursor opened before it: their queries' buffer counts tell what the policies hide (an
/// existing shared row costs one more page than a missing one). Refused, the same way for a real
/// and a missing target.
#[test]
fn explain_cannot_probe_through_the_functions_a_query_calls() {
    let db = TestDb::new();
    db.app_in(ACME, "alice")
        .batch_execute(&format!("SELECT tenancy.share('app.documents', '{ACME_DOC}', '{GLOBEX}')"))
        .unwrap();
    let third = text(&mut db.admin(), "SELECT tenancy.create_organization('Initech', 'initech', 'ian')").unwrap();
    let mut ian = db.app_in(&third, "ian");
    let refused = ("42501", "EXPLAIN is not allowed on queries that row-level security applies to");
    let probes = [
        "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM tenancy.shares_of('app.documents', '{}')",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT query_to_xml('SELECT * FROM app.documents WHERE id = ''{}''', true, false, '')",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT tenancy.org_id('{}', 'ian')",
    ];
    for template in probes {
        let [a, b] = [ACME_DOC, NOWHERE].map(|v| error_of(&mut ian, &template.replace("{}", v)));
        assert_eq!((a.code.as_str(), a.message.as_str()), refused, "{template}");
        assert_eq!((a.message, a.detail, a.hint), (b.message, b.detail, b.hint), "{template}: real and missing differ");
    }
    let [a, b] = [ACME_DOC, NOWHERE].map(|v| {
        ian.batch_execute(&format!("BEGIN; DECLARE c CURSOR FOR SELECT 1 FROM app.documents WHERE id = '{v}'"))
            .unwrap();
        let e = error_of(&mut ian, "EXPLAIN (ANALYZE, BUFFERS) SELECT cursor_to_xml('c', 100, false, false, '')");
        ian.batch_execute("ROLLBACK").unwrap();
        e
    });
    assert_eq!((a.code.as_str(), a.message.as_str()), refused, "a cursor run by the explained query");
    assert_eq!((a.message, a.detail, a.hint), (b.message, b.detail, b.hint));
    // What reads nothing hidden stays available.
    ian.batch_execute(
        "EXPLAIN (ANALYZE, BUFFERS) SELECT tenancy.current_org(); EXPLAIN (ANALYZE) SELECT * FROM app.countries",
    )
    .unwrap();
}

/// A cursor opened under one context is not read under another, however it is read.
#[test]
fn a_cursor_is_not_read_under_another_context() {
    let db = TestDb::new();
    let mut sam = db.app();
    // A cursor that has read rows keeps the context from changing until it is closed.
    sam.batch_execute(&format!(
        "BEGIN; SELECT tenancy.set_context('{ACME}', 'sam');
         DECLARE c SCROLL CURSOR FOR SELECT name FROM app.projects; FETCH 1 FROM c;"
    ))
    .unwrap();
    sam.batch_execute("SAVEPOINT s").unwrap();
    let e = error_of(&mut sam, &format!("SELECT tenancy.set_context('{GLOBEX}', 'sam')"));
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("55000", "cannot change the tenant context inside a statement that reads it")
    );
    sam.batch_execute("ROLLBACK TO SAVEPOINT s; FETCH ABSOLUTE 1 FROM c; CLOSE c").unwrap();
    // A cursor declared but not read yet reads the context of its first fetch; one declared
    // under another context and read there is refused under this one.
    sam.batch_execute(&format!(
        "SELECT tenancy.set_context('{GLOBEX}', 'sam'); DECLARE d CURSOR FOR SELECT name FROM app.projects;
         SELECT tenancy.set_context('{ACME}', 'sam');"
    ))
    .unwrap();
    let names: Vec<String> = sam.query("FETCH ALL FROM d", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(names, vec!["Acme launch".to_string()]);
    sam.batch_execute("COMMIT").unwrap();
}

/// EXPLAIN sees what planning adds: an SQL function over a governed table, inlined into the
/// query, is refused like the table itself (its plan would count every organization's rows).
#[test]
fn explain_of_an_inlined_function_over_a_governed_table_is_refused() {
    let db = TestDb::new();
    db.admin()
        .batch_execute(
            "CREATE SCHEMA helpers; GRANT USAGE ON SCHEMA helpers TO app_user;
             CREATE FUNCTION helpers.docs_by_title(t text) RETURNS SETOF app.documents
               LANGUAGE sql STABLE AS $$ SELECT * FROM app.documents d WHERE d.title = t $$;",
        )
        .unwrap();
    let mut c = db.app();
    c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{GLOBEX}', 'gina')")).unwrap();
    for explain in [
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT 1 FROM helpers.docs_by_title('Acme secrets')",
        "EXPLAIN SELECT 1 FROM helpers.docs_by_title('x')",
    ] {
        c.batch_execute("SAVEPOINT s").unwrap();
        let e = error_of(&mut c, explain);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("42501", "EXPLAIN is not allowed on queries that row-level security applies to"),
            "{explain}"
        );
        c.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    }
    // Running it is fine: the policies apply.
    assert_eq!(count(&mut c, "helpers.docs_by_title('Acme secrets')"), 0);
    c.batch_execute("ROLLBACK").unwrap();
}

/// A cursor is read from the snapshot it was opened with: once the membership it was opened for
/// ends, fetching more of it is refused (in the transaction that declared it, whatever its first
/// fetch was, and for a holdable one, later), even after the context itself was cleared.
#[test]
fn a_cursor_stops_when_its_membership_ends() {
    let db = TestDb::new();
    let mut bob = db.app();
    bob.batch_execute(&format!(
        "BEGIN; SELECT tenancy.set_context('{ACME}', 'bob');
         DECLARE c CURSOR FOR SELECT name FROM app.projects CROSS JOIN generate_series(1, 10);
         FETCH 1 FROM c;
         DECLARE m SCROLL CURSOR FOR SELECT name FROM app.projects;
         MOVE ALL IN m;"
    ))
    .unwrap();
    db.app_in(ACME, "alice").batch_execute(&format!("SELECT tenancy.remove_member('{ACME}', 'bob')")).unwrap();
    // A reader notices the removal and clears the context.
    assert_eq!(text(&mut bob, "SELECT tenancy.current_org()"), None);
    for (cursor, fetch) in [("c", "FETCH ALL FROM c"), ("m", "FETCH BACKWARD ALL FROM m")] {
        bob.batch_execute("SAVEPOINT s").unwrap();
        let e = error_of(&mut bob, fetch);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("42501", format!("the tenant context cursor \"{cursor}\" was opened under has ended").as_str())
        );
        bob.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    }
    bob.batch_execute("ROLLBACK").unwrap();
    // A member's cursor reads on.
    let mut carol = db.app();
    carol
        .batch_execute(&format!(
            "BEGIN; SELECT tenancy.set_context('{ACME}', 'carol');
             DECLARE c CURSOR FOR SELECT name FROM app.projects CROSS JOIN generate_series(1, 10);
             FETCH 1 FROM c; FETCH ALL FROM c;
             DECLARE m SCROLL CURSOR FOR SELECT name FROM app.projects; MOVE ALL IN m; FETCH BACKWARD ALL FROM m;
             COMMIT;"
        ))
        .unwrap();
}

#[test]
fn the_context_cannot_change_inside_a_statement_that_reads_it() {
    // Sam is admin in globex and member in acme. A CTE that switches the context before the
    // statement's write would give the write one context's organization and another's role.
    let db = TestDb::new();
    let mut c = db.app();
    for sql in [
        format!(
            "WITH s AS MATERIALIZED (SELECT tenancy.set_context('{GLOBEX}', 'sam') x),
                  d AS (UPDATE app.projects SET name = name || '!' RETURNING org_id)
             SELECT count(*) FROM s, d"
        ),
        format!("SELECT tenancy.set_context('{GLOBEX}', 'sam') FROM app.projects"),
        format!(
            "DO $$ BEGIN PERFORM count(*) FROM app.projects p, LATERAL (SELECT tenancy.set_context('{GLOBEX}', 'sam')) s; END $$"
        ),
        "SELECT tenancy.clear_context() FROM app.projects".to_string(),
        "SELECT tenancy.set_user_context('sam') FROM app.projects".to_string(),
    ] {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'sam')")).unwrap();
        let e = error_of(&mut tx, &sql);
        assert_eq!(e.code, "55000", "{sql}: {}", e.message);
        assert_eq!(e.message, "cannot change the tenant context inside a statement that reads it", "{sql}");
        tx.rollback().unwrap();
    }
    // The read-only role too.
    let mut r = db.connect_as("app_readonly");
    let mut tx = r.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'sam')")).unwrap();
    let e = error_of(&mut tx, &format!("SELECT tenancy.set_context('{GLOBEX}', 'sam') FROM app.projects"));
    assert_eq!(e.code, "55000", "{}", e.message);
    tx.rollback().unwrap();
    // Nor while a cursor that read it is open; once it is closed, the context changes.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!(
        "SELECT tenancy.set_context('{ACME}', 'sam'); DECLARE cur CURSOR FOR SELECT name FROM app.projects; FETCH 1 FROM cur;"
    ))
    .unwrap();
    let e = error_of(&mut tx, &format!("SELECT tenancy.set_context('{GLOBEX}', 'sam')"));
    assert_eq!(e.code, "55000", "{}", e.message);
    tx.rollback().unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!(
        "SELECT tenancy.set_context('{ACME}', 'sam'); DECLARE cur CURSOR FOR SELECT name FROM app.projects;
         FETCH 1 FROM cur; CLOSE cur; SELECT tenancy.set_context('{GLOBEX}', 'sam');"
    ))
    .unwrap();
    assert_eq!(count(&mut tx, "app.projects"), 1, "globex's own project");
    tx.rollback().unwrap();
    // A context that ROLLBACK TO SAVEPOINT brings back under an open cursor is another context,
    // even when the cursor was first read without an organization.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!(
        "SELECT tenancy.set_context('{ACME}', 'sam');
         DECLARE cur CURSOR FOR SELECT g, tenancy.current_member_role() FROM generate_series(1, 3) g;
         SAVEPOINT s1; SELECT tenancy.set_user_context('sam'); FETCH 1 FROM cur;"
    ))
    .unwrap();
    let e = error_of(&mut tx, "ROLLBACK TO s1; FETCH 1 FROM cur");
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("42501", "cursor \"cur\" was opened under another tenant context")
    );
    tx.rollback().unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{GLOBEX}', 'sam')")).unwrap();
    // A statement that failed does not keep the context from changing.
    tx.batch_execute("SAVEPOINT s").unwrap();
    assert!(tx.batch_execute("SELECT 1 / (count(*) - count(*)) FROM app.projects").is_err());
    tx.batch_execute(&format!("ROLLBACK TO s; SELECT tenancy.set_context('{ACME}', 'sam')")).unwrap();
    assert_eq!(count(&mut tx, "app.projects"), 1, "acme's own project");
}

#[test]
fn merge_into_a_governed_table_is_refused_whatever_the_rows() {
    // PostgreSQL 15 checks a MERGE target's UPDATE and DELETE policies as errors: with `ON true`
    // and no target column read, the error would say that another organization has rows.
    let db = TestDb::new();
    for (table, action) in [
        ("projects", "UPDATE SET name = 'x'"),
        ("projects", "DELETE"),
        ("tasks", "UPDATE SET title = 'x'"),
        ("tasks", "DELETE"),
        ("countries", "DELETE"),
    ] {
        let sql = format!("MERGE INTO app.{table} t USING (SELECT 1) s ON true WHEN MATCHED THEN {action}");
        let e = error_as(&db, ACME, "alice", &sql);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            (
                "0A000",
                format!("MERGE is not allowed on table \"{table}\", which row-level security applies to").as_str()
            ),
            "{sql}"
        );
    }
    // The read-only role gets the same refusal, with a context or without one.
    for context in [format!("SELECT tenancy.set_context('{ACME}', 'alice');"), String::new()] {
        let mut c = db.connect_as("app_readonly");
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&context).unwrap();
        let e = error_of(&mut tx, "MERGE INTO app.projects t USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE");
        assert_eq!(e.code, "0A000", "{context}: {}", e.message);
    }
    // A DBA's MERGE works.
    db.admin()
        .batch_execute("MERGE INTO app.tasks t USING (SELECT 1) s ON false WHEN NOT MATCHED THEN DO NOTHING")
        .unwrap();
}
