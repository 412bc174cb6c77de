//! Two organizations kept apart by the compiled example policies: every table, every command,
//! every member role, as the application role over real connections.

use pg_tenancy_e2e::*;

/// The minimum member role per command in policies/app.toml: (table, select, insert, update, delete).
const MATRIX: [(&str, &str, &str, &str, &str); 4] = [
    ("projects", "guest", "member", "member", "admin"),
    ("tasks", "guest", "member", "member", "member"),
    ("comments", "guest", "member", "none", "member"),
    ("files", "guest", "member", "member", "admin"),
];

const RANKS: [(&str, u8); 4] = [("owner", 4), ("admin", 3), ("member", 2), ("guest", 1)];

fn rank(role: &str) -> u8 {
    RANKS.iter().find(|r| r.0 == role).map_or(u8::MAX, |r| r.1)
}

fn acme_id(table: &str) -> &'static str {
    ROWS.iter().find(|r| r.0 == table).unwrap().1
}

fn globex_id(table: &str) -> &'static str {
    ROWS.iter().find(|r| r.0 == table).unwrap().2
}

/// An INSERT into `table` that is valid for ACME (it references ACME's parent rows).
fn insert_sql(table: &str) -> String {
    match table {
        "projects" => "INSERT INTO app.projects (name) VALUES ('new')".into(),
        "tasks" => format!("INSERT INTO app.tasks (project_id, title) VALUES ('{}', 'new')", acme_id("projects")),
        "comments" => format!("INSERT INTO app.comments (task_id, body) VALUES ('{}', 'new')", acme_id("tasks")),
        "files" => "INSERT INTO app.files (name, size_bytes) VALUES ('new.txt', 1)".into(),
        _ => unreachable!(),
    }
}

fn set_column(table: &str) -> &'static str {
    match table {
        "projects" => "name = name || '!'",
        "tasks" => "done = true",
        "comments" => "body = body || '!'",
        "files" => "name = name || '!'",
        _ => unreachable!(),
    }
}

/// Runs `sql` in a transaction as `user` of `org` and rolls back: Ok(rows affected) or Err(SQLSTATE).
fn attempt(db: &TestDb, org: &str, user: &str, sql: &str) -> Result<u64, String> {
    let mut client = db.app();
    let mut tx = client.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{org}', '{user}')")).unwrap();
    let result = tx.execute(sql, &[]).map_err(|e| e.code().map(|c| c.code().to_string()).unwrap_or_default());
    drop(tx);
    result
}

#[test]
fn every_table_command_and_role_gets_exactly_what_the_policy_allows() {
    let db = TestDb::new();
    let members: Vec<(&str, &str)> =
        MEMBERS.iter().filter(|m| m.0 == ACME && m.1 != "sam").map(|m| (m.1, m.2)).collect();
    assert_eq!(members.len(), 4, "one acme member per role");
    for (table, select, insert, update, delete) in MATRIX {
        for (user, role) in &members {
            let allowed = |min: &str| min != "none" && rank(role) >= rank(min);
            let id = acme_id(table);
            let cases = [
                ("select", select, format!("SELECT * FROM app.{table} WHERE id = '{id}'")),
                ("insert", insert, insert_sql(table)),
                ("update", update, format!("UPDATE app.{table} SET {} WHERE id = '{id}'", set_column(table))),
                ("delete", delete, format!("DELETE FROM app.{table} WHERE id = '{id}'")),
            ];
            for (command, min, sql) in cases {
                let got = attempt(&db, ACME, user, &sql);
                if allowed(min) {
                    assert_eq!(got, Ok(1), "{role} {user} should {command} {table}");
                } else if command == "select" {
                    assert_eq!(got, Ok(0), "{role} should see no {table} rows");
                } else {
                    assert_eq!(got, Err("42501".into()), "{role} must be refused {command} on {table}");
                }
            }
        }
    }
}

#[test]
fn each_org_sees_only_its_own_rows_in_every_table() {
    let db = TestDb::new();
    for (org, user) in [(ACME, "carol"), (GLOBEX, "gina")] {
        let mut c = db.app_in(org, user);
        for (table, acme, globex) in ROWS {
            let own = if org == ACME { acme } else { globex };
            let rows = c.query(&format!("SELECT id::text, org_id::text FROM app.{table}"), &[]).unwrap();
            assert_eq!(rows.len(), 1, "{user} sees exactly one {table} row");
            assert_eq!(rows[0].get::<_, String>(0), own);
            assert_eq!(rows[0].get::<_, String>(1), org);
        }
    }
}

#[test]
fn another_orgs_rows_look_exactly_like_missing_ones() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "alice");
    for (table, _, globex) in ROWS {
        assert_eq!(count(&mut c, &format!("app.{table} WHERE id = '{globex}'")), 0);
        if table != "comments" {
            // (comments are immutable: no UPDATE at all)
            assert_eq!(affected(&mut c, &format!("UPDATE app.{table} SET id = id WHERE id = '{globex}'")), 0);
        }
        assert_eq!(affected(&mut c, &format!("DELETE FROM app.{table} WHERE id = '{globex}'")), 0);
    }
    // A foreign key to another organization's project fails exactly like one to a missing project.
    let foreign = error_of(
        &mut c,
        &format!("INSERT INTO app.tasks (project_id, title) VALUES ('{}', 'probe')", globex_id("projects")),
    );
    let missing = error_of(&mut c, &format!("INSERT INTO app.tasks (project_id, title) VALUES ('{NOWHERE}', 'probe')"));
    assert_eq!(foreign.code, "23503");
    assert_eq!(foreign.code, missing.code);
    assert_eq!(foreign.message, missing.message);
}

#[test]
fn writing_into_or_moving_rows_to_another_org_is_refused() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "alice");
    let e = error_of(&mut c, &format!("INSERT INTO app.projects (org_id, name) VALUES ('{GLOBEX}', 'sneaky')"));
    assert_eq!(e.code, "42501");
    assert!(e.message.contains("row-level security"), "{}", e.message);
    let e =
        error_of(&mut c, &format!("UPDATE app.projects SET org_id = '{GLOBEX}' WHERE id = '{}'", acme_id("projects")));
    assert_eq!(e.code, "42501");
    // Nothing moved: globex still has exactly its own project.
    let mut admin = db.admin();
    assert_eq!(count(&mut admin, &format!("app.projects WHERE org_id = '{GLOBEX}'")), 1);
}

#[test]
fn the_tenant_column_defaults_to_the_current_org() {
    let db = TestDb::new();
    let mut c = db.app_in(GLOBEX, "gina");
    let row =
        c.query_one("INSERT INTO app.projects (name) VALUES ('auto') RETURNING org_id::text, created_by", &[]).unwrap();
    assert_eq!(row.get::<_, String>(0), GLOBEX);
    assert_eq!(row.get::<_, String>(1), "gina");
}

#[test]
fn without_context_nothing_is_visible_and_writes_are_refused_clearly() {
    let db = TestDb::new();
    let mut c = db.app();
    for (table, acme, _) in ROWS {
        assert_eq!(count(&mut c, &format!("app.{table}")), 0, "{table} must look empty");
        let e = error_of(&mut c, &format!("DELETE FROM app.{table} WHERE id = '{acme}'"));
        assert_eq!(e.code, "42501");
        assert_eq!(e.message, "no tenant context");
        assert!(e.hint.unwrap().contains("tenancy.set_context"));
    }
    let e = error_of(&mut c, &insert_sql("projects"));
    assert_eq!((e.code.as_str(), e.message.as_str()), ("42501", "no tenant context"));
    let e = error_of(&mut c, "UPDATE app.files SET size_bytes = 0");
    assert_eq!(e.detail.as_deref(), Some("UPDATE on app.files requires a tenant context, and none is set."));
}

#[test]
fn global_tables_are_readable_by_every_org_and_writable_by_none() {
    let db = TestDb::new();
    for (org, user) in [(ACME, "alice"), (GLOBEX, "gina")] {
        let mut c = db.app_in(org, user);
        assert_eq!(count(&mut c, "app.countries"), 2);
        for sql in [
            "INSERT INTO app.countries VALUES ('FR', 'France')",
            "UPDATE app.countries SET name = 'X'",
            "DELETE FROM app.countries",
        ] {
            let e = error_of(&mut c, sql);
            assert_eq!(e.code, "42501", "{sql}");
            assert!(e.message.contains("permission denied for table countries"), "{}", e.message);
        }
    }
}

#[test]
fn a_user_in_two_orgs_sees_each_orgs_rows_after_switching() {
    let db = TestDb::new();
    let mut c = db.app();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'sam')")).unwrap();
    assert_eq!(text(&mut tx, "SELECT string_agg(name, ',') FROM app.projects").as_deref(), Some("Acme launch"));
    tx.batch_execute(&format!("SELECT tenancy.set_context('{GLOBEX}', 'sam')")).unwrap();
    assert_eq!(text(&mut tx, "SELECT string_agg(name, ',') FROM app.projects").as_deref(), Some("Globex launch"));
    assert_eq!(text(&mut tx, "SELECT tenancy.current_member_role()").as_deref(), Some("admin"));
}

#[test]
fn read_only_role_reads_its_org_and_cannot_write() {
    let db = TestDb::new();
    let mut c = db.connect_as("app_readonly");
    c.batch_execute(&format!("SELECT tenancy.set_session_context('{ACME}', 'carol')")).unwrap();
    assert_eq!(count(&mut c, "app.projects"), 1);
    let e = error_of(&mut c, &insert_sql("projects"));
    assert_eq!(e.code, "42501");
    assert!(e.message.contains("permission denied for table projects"));
}

#[test]
fn policies_are_index_backed_and_evaluate_context_once_per_statement() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(
            "INSERT INTO tenancy.organizations (id, slug, name, plan)
             SELECT ('d0000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'org-' || g, 'Org ' || g, 'enterprise'
               FROM generate_series(1, 200) g;
             INSERT INTO app.projects (org_id, name, created_by)
             SELECT ('d0000000-0000-0000-0000-' || lpad((g % 200 + 1)::text, 12, '0'))::uuid, 'p' || g, 'seed'
               FROM generate_series(1, 20000) g;
             ANALYZE app.projects;",
        )
        .unwrap();
    // With many tenants, one tenant's rows are a sliver of the table: the planner must use the
    // tenant-leading index even though the org id is only known when the statement runs.
    let mut c = db.explaining_in(ACME, "alice");
    let plan: Vec<String> = c
        .query("EXPLAIN (COSTS OFF) SELECT * FROM app.projects ORDER BY created_at DESC LIMIT 20", &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let plan = plan.join("\n");
    // The organization is a parameter of the statement ($0), set once when it runs: neither a
    // call per row nor an InitPlan.
    assert!(plan.contains("(org_id = $"), "context must be a parameter (once per statement):\n{plan}");
    assert!(!plan.contains("current_org") && !plan.contains("InitPlan"), "no call, no InitPlan:\n{plan}");
    assert!(plan.contains("Index"), "tenant filter must use an index:\n{plan}");
}

/// `rows` more projects, half ACME's and half GLOBEX's (both on the enterprise plan, which has
/// room for them), analysed.
fn projects_of_both(db: &TestDb, rows: u32) {
    db.admin()
        .batch_execute(&format!(
            "SELECT tenancy.set_plan('{ACME}', 'enterprise'), tenancy.set_plan('{GLOBEX}', 'enterprise');
             INSERT INTO app.projects (org_id, name, created_by)
             SELECT CASE WHEN g % 2 = 0 THEN '{ACME}'::uuid ELSE '{GLOBEX}'::uuid END, 'p' || g, 'seed'
               FROM generate_series(1, {rows}) g;
             ANALYZE app.projects;"
        ))
        .unwrap();
}

/// The plan of `sql` as the application role in ACME's context (EXPLAIN allowed by a DBA).
fn plan_of(db: &TestDb, sql: &str) -> String {
    let rows = db.explaining_in(ACME, "alice").query(&format!("EXPLAIN (COSTS OFF, VERBOSE) {sql}"), &[]);
    rows.unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_statement_shape_reads_the_organization_once() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(&format!(
            "SELECT tenancy.set_plan('{ACME}', 'enterprise');
             INSERT INTO app.projects (org_id, name, created_by)
             SELECT '{ACME}', 'p' || g, 'seed' FROM generate_series(1, 60) g;
             INSERT INTO app.tasks (org_id, project_id, title)
             SELECT '{ACME}', '{p}', 't' || g FROM generate_series(1, 60) g;",
            p = ROWS[0].1
        ))
        .unwrap();
    // Calls of tenancy.current_org() through the function manager, counted by PostgreSQL: a
    // per-row call would count once for each of the 60 rows.
    admin
        .batch_execute(&format!(
            "SET track_functions = 'all'; SET tenancy.session_context = on; SET ROLE app_user;
             SELECT tenancy.set_session_context('{ACME}', 'alice')"
        ))
        .unwrap();
    // Where policies end up: scans of every kind, joins, sublinks, CTEs, subqueries in FROM,
    // views, and the WITH CHECK of writes.
    for sql in [
        "SELECT * FROM app.projects",
        "SELECT * FROM app.projects WHERE id = gen_random_uuid()",
        "SELECT * FROM app.tasks t JOIN app.projects p ON p.org_id = t.org_id AND p.id = t.project_id",
        "SELECT * FROM app.projects WHERE id IN (SELECT project_id FROM app.tasks)",
        "SELECT (SELECT count(*) FROM app.tasks), EXISTS (SELECT FROM app.comments)",
        "WITH t AS MATERIALIZED (SELECT * FROM app.tasks) SELECT * FROM t",
        "SELECT * FROM (SELECT DISTINCT title FROM app.tasks) t",
        "SELECT * FROM app.open_tasks",
        "UPDATE app.tasks SET title = title || '!'",
        "DELETE FROM app.tasks WHERE title LIKE 'none%'",
        &format!("INSERT INTO app.tasks (org_id, project_id, title) SELECT '{ACME}', project_id, title FROM app.tasks"),
        &format!(
            "INSERT INTO app.tasks (org_id, project_id, title) SELECT '{ACME}', '{p}', 'n' || g FROM generate_series(1, 60) g
             RETURNING (SELECT count(*) FROM app.projects)",
            p = ROWS[0].1
        ),
    ] {
        let mut tx = admin.transaction().unwrap();
        tx.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        // Read as the DBA: pg_tenancy takes the statistics functions from the application.
        tx.batch_execute("RESET ROLE").unwrap();
        let calls: Option<i64> = tx
            .query_one("SELECT pg_stat_get_xact_function_calls('tenancy.current_org()'::regprocedure)", &[])
            .unwrap()
            .get(0);
        assert!(calls.unwrap_or(0) <= 1, "{sql}: tenancy.current_org() called {calls:?} times");
        tx.rollback().unwrap();
        admin.batch_execute("SET ROLE app_user").unwrap();
    }
    // And a plan shows the parameter, neither a call nor an InitPlan.
    let plan = plan_of(&db, "SELECT * FROM app.projects p JOIN app.tasks t ON t.project_id = p.id");
    assert!(plan.contains("org_id = $") && !plan.contains("current_org") && !plan.contains("InitPlan"), "{plan}");
}

#[test]
fn the_organization_parameter_follows_the_context_of_each_execution() {
    let db = TestDb::new();
    projects_of_both(&db, 3000);
    let mut c = db.app();
    // A generic plan, made once and reused: the parameter is set again at each execution.
    c.batch_execute("SET plan_cache_mode = force_generic_plan").unwrap();
    let listing = c.prepare("SELECT count(*), count(DISTINCT org_id) FROM app.projects").unwrap();
    for (org, user, expected) in [(ACME, "alice", 1501), (GLOBEX, "gina", 1501), (ACME, "bob", 1501)] {
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT tenancy.set_context($1::text::uuid, $2)", &[&org, &user]).unwrap();
        let row = tx.query_one(&listing, &[]).unwrap();
        assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (expected, 1), "{org}");
        tx.commit().unwrap();
    }
    let row = c.query_one(&listing, &[]).unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "no context, no rows");

    // A cursor reads the context it was first fetched under for all its fetches.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!(
        "SELECT tenancy.set_context('{ACME}', 'alice');
         DECLARE cur NO SCROLL CURSOR FOR SELECT org_id::text FROM app.projects"
    ))
    .unwrap();
    let first: Vec<String> = tx.query("FETCH 10 FROM cur", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    let rest: Vec<String> = tx.query("FETCH ALL FROM cur", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(first.len() + rest.len(), 1501);
    assert!(first.iter().chain(&rest).all(|o| o == ACME));
    tx.rollback().unwrap();

    // Parallel workers get the leader's value.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL max_parallel_workers_per_gather = 2; SET LOCAL parallel_setup_cost = 0;
         SET LOCAL parallel_tuple_cost = 0; SET LOCAL min_parallel_table_scan_size = 0;
         SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_indexonlyscan = off;
         SELECT tenancy.set_context('{GLOBEX}', 'gina');"
    ))
    .unwrap();
    let row = tx.query_one("SELECT count(*), min(org_id::text) FROM app.projects", &[]).unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, String>(1)), (1501, GLOBEX.to_string()));
}

#[test]
fn only_tenancy_current_org_itself_becomes_the_parameter() {
    let db = TestDb::new();
    // A function of the same name and type elsewhere (not inlined: PL/pgSQL) keeps its own
    // value, called in a policy directly or through a sub-SELECT.
    db.admin()
        .batch_execute(&format!(
            "CREATE SCHEMA other;
             CREATE FUNCTION other.current_org() RETURNS uuid LANGUAGE plpgsql STABLE
                 AS $$ BEGIN RETURN '{GLOBEX}'; END $$;
             GRANT USAGE ON SCHEMA other TO app_user;
             CREATE TABLE other.bare (org_id uuid, n int);
             CREATE TABLE other.sub (org_id uuid, n int);
             INSERT INTO other.bare VALUES ('{ACME}', 1), ('{GLOBEX}', 2);
             INSERT INTO other.sub VALUES ('{ACME}', 1), ('{GLOBEX}', 2);
             ALTER TABLE other.bare ENABLE ROW LEVEL SECURITY;
             ALTER TABLE other.sub ENABLE ROW LEVEL SECURITY;
             CREATE POLICY p ON other.bare USING (org_id = other.current_org());
             CREATE POLICY p ON other.sub USING (org_id = (SELECT other.current_org()));
             GRANT SELECT ON other.bare, other.sub TO app_user;"
        ))
        .unwrap();
    let mut c = db.app_in(ACME, "alice");
    assert_eq!(text(&mut c, "SELECT string_agg(n::text, ',') FROM other.bare").as_deref(), Some("2"));
    assert_eq!(text(&mut c, "SELECT string_agg(n::text, ',') FROM other.sub").as_deref(), Some("2"));
    assert!(plan_of(&db, "SELECT * FROM other.sub").contains("InitPlan"), "left as PostgreSQL planned it");
}

#[test]
fn context_functions_are_correct_inside_parallel_workers() {
    let db = TestDb::new();
    projects_of_both(&db, 4000);
    let mut c = db.explaining_in(GLOBEX, "gina");
    c.batch_execute(
        "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
         SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
         SET enable_indexscan = off; SET enable_bitmapscan = off;",
    )
    .unwrap();
    // The context readers sit below the Gather, so the workers evaluate them (a scan of the
    // table: the planner's estimate of the organization's share of it is its default, not the
    // statistics, under row-level security).
    let query = "SELECT count(*) FROM app.projects
                  WHERE tenancy.current_user_id() = 'gina' AND tenancy.has_role('owner')
                    AND tenancy.current_member_role() = 'owner'";
    let plan: String = c
        .query(&format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {query}"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("Workers Launched: 2"), "expected parallel workers:\n{plan}");
    assert!(plan.contains("Parallel Seq Scan"), "{plan}");
    let n: i64 = c.query_one(query, &[]).unwrap().get(0);
    assert_eq!(n, 2001, "the workers see globex's context: its 2000 rows plus the fixture's one");
}

#[test]
fn views_over_tenant_tables_show_each_org_only_its_rows() {
    let db = TestDb::new();
    let options: String = text(
        &mut db.admin(),
        "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'app.open_tasks'::regclass",
    )
    .unwrap_or_default();
    assert_eq!(options, "security_invoker=true");
    for (org, user, title) in [(ACME, "carol", "Acme task"), (GLOBEX, "gina", "Globex task")] {
        let mut c = db.app_in(org, user);
        assert_eq!(text(&mut c, "SELECT string_agg(title, ',') FROM app.open_tasks").as_deref(), Some(title));
    }
    assert_eq!(count(&mut db.app(), "app.open_tasks"), 0, "and nothing without a context");
}
