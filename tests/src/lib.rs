//! Harness for end-to-end tests against a real cluster (started by `make test-e2e`).
//!
//! Each test gets its own database, cloned from a per-process template that has the extension,
//! the example schema (`sql/schema.sql`), the example policies applied with the real
//! `tenancy apply` code path, and a fixture of two organizations with data.

use postgres::{Client, Config, NoTls};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub const ACME: &str = "a0000000-0000-0000-0000-000000000001";
pub const GLOBEX: &str = "b0000000-0000-0000-0000-000000000002";
/// An id no organization has.
pub const NOWHERE: &str = "c0000000-0000-0000-0000-000000000003";

/// Fixture rows: (table, acme row id, globex row id).
pub const ROWS: [(&str, &str, &str); 4] = [
    ("projects", "a1000000-0000-0000-0000-000000000001", "b1000000-0000-0000-0000-000000000001"),
    ("tasks", "a2000000-0000-0000-0000-000000000001", "b2000000-0000-0000-0000-000000000001"),
    ("comments", "a3000000-0000-0000-0000-000000000001", "b3000000-0000-0000-0000-000000000001"),
    ("files", "a4000000-0000-0000-0000-000000000001", "b4000000-0000-0000-0000-000000000001"),
];

/// Documents (a shareable table): ACME's private and public ones, GLOBEX's private one.
pub const ACME_DOC: &str = "d1000000-0000-0000-0000-000000000001";
pub const ACME_PUBLIC_DOC: &str = "d1000000-0000-0000-0000-000000000002";
pub const GLOBEX_DOC: &str = "d2000000-0000-0000-0000-000000000001";

/// Members: (org, user, role). Sam is in both organizations.
pub const MEMBERS: [(&str, &str, &str); 7] = [
    (ACME, "alice", "owner"),
    (ACME, "bob", "admin"),
    (ACME, "carol", "member"),
    (ACME, "gus", "guest"),
    (ACME, "sam", "member"),
    (GLOBEX, "gina", "owner"),
    (GLOBEX, "sam", "admin"),
];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn env_config(var: &str) -> Config {
    let url = std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run these tests with `make test-e2e`, which starts a cluster"));
    Config::from_str(&url).unwrap_or_else(|e| panic!("{var} is not a valid URL: {e}"))
}

fn connect(mut config: Config, db: &str) -> Client {
    config.dbname(db);
    config.connect(NoTls).unwrap_or_else(|e| panic!("connect to {db}: {e}"))
}

fn seed_sql() -> String {
    let mut sql = String::from("INSERT INTO app.countries VALUES ('DE', 'Germany'), ('US', 'United States');\n");
    // ACME is on the pro plan, GLOBEX on free (5 members, 10 projects, 1 GB).
    for (org, slug, owner, plan) in [(ACME, "acme", "alice", "pro"), (GLOBEX, "globex", "gina", "free")] {
        sql.push_str(&format!(
            "SELECT tenancy.create_organization(initcap('{slug}'), '{slug}', '{owner}', '{plan}', id => '{org}');\n"
        ));
    }
    for (org, user, role) in MEMBERS.iter().filter(|m| m.2 != "owner") {
        sql.push_str(&format!("SELECT tenancy.add_member('{org}', '{user}', '{role}');\n"));
    }
    for (org, i) in [(ACME, 0), (GLOBEX, 1)] {
        let id = |t: usize| if i == 0 { ROWS[t].1 } else { ROWS[t].2 };
        let p = if i == 0 { "Acme" } else { "Globex" };
        sql.push_str(&format!(
            "INSERT INTO app.projects (id, org_id, name, created_by) VALUES ('{}', '{org}', '{p} launch', 'seed');
             INSERT INTO app.tasks (id, org_id, project_id, title) VALUES ('{}', '{org}', '{}', '{p} task');
             INSERT INTO app.comments (id, org_id, task_id, author, body) VALUES ('{}', '{org}', '{}', 'seed', '{p} comment');
             INSERT INTO app.files (id, org_id, project_id, name, size_bytes) VALUES ('{}', '{org}', '{}', '{p}.pdf', 100);\n",
            id(0), id(1), id(0), id(2), id(1), id(3), id(0)
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO app.documents (id, org_id, title, visibility, created_by) VALUES
             ('{ACME_DOC}', '{ACME}', 'Acme plan', 'private', 'seed'),
             ('{ACME_PUBLIC_DOC}', '{ACME}', 'Acme handbook', 'public', 'seed'),
             ('{GLOBEX_DOC}', '{GLOBEX}', 'Globex plan', 'private', 'seed');\n"
    ));
    sql
}

/// Creates the template database once per test process and returns its name.
fn template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name = format!("e2e_tpl_{}", std::process::id());
        let mut admin = connect(env_config("TENANCY_TEST_ADMIN_URL"), "postgres");
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let mut db = connect(env_config("TENANCY_TEST_ADMIN_URL"), &name);
        db.batch_execute("CREATE EXTENSION pg_tenancy").unwrap();
        db.batch_execute(&std::fs::read_to_string(repo_root().join("sql/schema.sql")).unwrap()).unwrap();
        drop(db);
        let url = admin_url(&name);
        tenancy(&["apply", &path("policies/app.toml"), "--database-url", &url]).expect("tenancy apply of the example");
        let mut db = connect(env_config("TENANCY_TEST_ADMIN_URL"), &name);
        db.batch_execute(&seed_sql()).unwrap();
        name
    })
}

/// Runs the `tenancy` CLI in-process, as `tenancy ARGS...`; pass absolute paths (see [`path`]).
pub fn tenancy(args: &[&str]) -> Result<(), pg_tenancy_compiler::cli::Failure> {
    use clap::Parser;
    let cli = pg_tenancy_compiler::cli::Cli::try_parse_from(std::iter::once("tenancy").chain(args.iter().copied()))
        .expect("valid arguments");
    pg_tenancy_compiler::cli::run(cli)
}

/// The example's policy file, `policies/app.toml`.
pub fn example_policy() -> String {
    std::fs::read_to_string(repo_root().join("policies/app.toml")).unwrap()
}

/// Runs `tenancy apply` with `policy` (the text of a policy file) on the test database.
pub fn try_apply_policy(db: &TestDb, policy: &str) -> Result<(), pg_tenancy_compiler::cli::Failure> {
    let dir = std::env::temp_dir().join(format!("tenancy-policy-{}-{}", std::process::id(), db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("app.toml");
    std::fs::write(&file, policy).unwrap();
    let result = tenancy(&["apply", file.to_str().unwrap(), "--database-url", &admin_url(&db.name)]);
    std::fs::remove_dir_all(dir).ok();
    result
}

/// Runs `tenancy verify` on the test database knowing `policy` (the text of a policy file, as
/// `--policies` gives it), acting as `roles` (none: the policy's roles); panics if it cannot run.
pub fn verify_with_policy(db: &TestDb, policy: &str, roles: &[&str]) -> pg_tenancy_compiler::verify::Report {
    let dir = std::env::temp_dir().join(format!("tenancy-verify-{}-{}", std::process::id(), db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("app.toml");
    std::fs::write(&file, policy).unwrap();
    let mut admin = db.admin();
    let compiled = pg_tenancy_compiler::cli::commands::verify::compile(
        &mut admin,
        vec![file],
        pg_tenancy_compiler::cli::options::Format::Human,
    )
    .unwrap_or_else(|e| panic!("the policy does not compile: {e:?}"));
    std::fs::remove_dir_all(dir).ok();
    let options = pg_tenancy_compiler::verify::Options {
        schemas: vec![],
        tenant_column: "org_id".into(),
        app_roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    pg_tenancy_compiler::verify::verify(&mut admin, &options, Some(&compiled)).expect("verify runs")
}

/// Applies `policy` (the text of a policy file) to the test database; panics if apply fails.
pub fn apply_policy(db: &TestDb, policy: &str) {
    try_apply_policy(db, policy).expect("tenancy apply");
}

/// Absolute path of a file in the repository.
pub fn path(relative: &str) -> String {
    repo_root().join(relative).display().to_string()
}

/// A libpq URL for the superuser on database `db`.
pub fn admin_url(db: &str) -> String {
    url_for("TENANCY_TEST_ADMIN_URL", db)
}

/// A libpq URL for the application role on database `db`.
pub fn app_url(db: &str) -> String {
    url_for("TENANCY_TEST_APP_URL", db)
}

fn url_for(var: &str, db: &str) -> String {
    let url = std::env::var(var).unwrap();
    let (before, after) = url.split_once('?').unwrap_or((&url, ""));
    let base = before.rsplit_once('/').map_or(before, |(b, _)| b);
    format!("{base}/{db}?{after}")
}

/// One test's own database, dropped at the end of the test.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let template = template();
        let name = format!("e2e_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let mut admin = connect(env_config("TENANCY_TEST_ADMIN_URL"), "postgres");
        // A database's own privileges (`tenancy apply` took TEMPORARY from PUBLIC) are not
        // copied from its template.
        admin.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}")).unwrap();
        admin
            .batch_execute(&format!("REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC, app_user, app_readonly"))
            .unwrap();
        // Many tests keep a session context as the application roles (`app_in`): in this
        // database only, they are session roles (the example policy declares none).
        admin
            .batch_execute(&format!(
                "ALTER ROLE app_user IN DATABASE {name} SET tenancy.session_context = on;
                 ALTER ROLE app_readonly IN DATABASE {name} SET tenancy.session_context = on"
            ))
            .unwrap();
        TestDb { name }
    }

    /// A connection as the superuser (the DBA).
    pub fn admin(&self) -> Client {
        connect(env_config("TENANCY_TEST_ADMIN_URL"), &self.name)
    }

    /// A connection as the application role `app_user`.
    pub fn app(&self) -> Client {
        connect(env_config("TENANCY_TEST_APP_URL"), &self.name)
    }

    /// A connection as another login role.
    pub fn connect_as(&self, role: &str) -> Client {
        let mut config = env_config("TENANCY_TEST_APP_URL");
        config.user(role);
        connect(config, &self.name)
    }

    /// A connection that is the application role with a session context, as a DBA would get one
    /// to look at plans: a superuser that allowed EXPLAIN for itself (`tenancy.allow_explain`),
    /// then became the application role (`SET ROLE`). The application role itself may not
    /// EXPLAIN queries under row-level security.
    pub fn explaining_in(&self, org: &str, user: &str) -> Client {
        let mut c = self.admin();
        c.batch_execute(&format!(
            "SET tenancy.allow_explain = on; SET tenancy.session_context = on; SET ROLE app_user;
             SELECT tenancy.set_session_context('{org}', '{user}');"
        ))
        .unwrap();
        c
    }

    /// A connection as the application role that has set a session context.
    pub fn app_in(&self, org: &str, user: &str) -> Client {
        let mut c = self.app();
        c.batch_execute(&format!("SELECT tenancy.set_session_context('{org}', '{user}')")).unwrap();
        c
    }
}

/// A login role of one test (roles are cluster-wide: its name is made from the test database's),
/// dropped with everything it owns when the guard drops. Declare it after the [`TestDb`], so that
/// it drops first.
pub struct TempRole {
    pub name: String,
    db: String,
}

impl TempRole {
    /// Creates `LOGIN` role `<base>_<test database>` with `attributes` (`NOSUPERUSER ...`).
    pub fn new(db: &TestDb, base: &str, attributes: &str) -> TempRole {
        let name = format!("{base}_{}", db.name);
        db.admin().batch_execute(&format!("CREATE ROLE {name} LOGIN {attributes}")).unwrap();
        TempRole { name, db: db.name.clone() }
    }

    /// A connection to the test database as this role.
    pub fn connect(&self) -> Client {
        let mut config = env_config("TENANCY_TEST_APP_URL");
        config.user(&self.name);
        connect(config, &self.db)
    }
}

impl Drop for TempRole {
    fn drop(&mut self) {
        if let Ok(mut admin) = env_config("TENANCY_TEST_ADMIN_URL").dbname(&self.db).connect(NoTls) {
            let _ = admin.batch_execute(&format!("REASSIGN OWNED BY {0} TO postgres; DROP OWNED BY {0}", self.name));
        }
        // The role is cluster-wide: drop it even when its database went first (what it owned
        // there went with it).
        if let Ok(mut admin) = env_config("TENANCY_TEST_ADMIN_URL").dbname("postgres").connect(NoTls) {
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name));
        }
    }
}

/// Runs `f` on `clients` connections at once (released together by a barrier), each the
/// application role with a session context for `org` and `user`; returns their results.
pub fn concurrently<T: Send + 'static>(
    db: &std::sync::Arc<TestDb>,
    clients: usize,
    org: &'static str,
    user: &'static str,
    f: impl Fn(&mut Client) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(clients));
    let f = std::sync::Arc::new(f);
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (db, barrier, f) = (db.clone(), barrier.clone(), f.clone());
            std::thread::spawn(move || {
                let mut c = db.app_in(org, user);
                barrier.wait();
                f(&mut c)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("client thread")).collect()
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = env_config("TENANCY_TEST_ADMIN_URL").dbname("postgres").connect(NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// The database error a statement must raise: (SQLSTATE, message, detail, hint).
#[derive(Debug)]
pub struct DbError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl DbError {
    /// The server's error; panics for client-side errors (lost connections, bad parameters).
    pub fn of(e: &postgres::Error) -> DbError {
        let db = e.as_db_error().unwrap_or_else(|| panic!("not a database error: {e}"));
        DbError {
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        }
    }
}

/// The first column (as text) of each row of `sql`, in a transaction that `start` begins (a
/// context function, say) and that commits after it.
pub fn in_context(c: &mut Client, start: &str, sql: &str) -> Result<Vec<String>, DbError> {
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(start).map_err(|e| DbError::of(&e))?;
    let rows = tx.query(sql, &[]).map_err(|e| DbError::of(&e))?;
    let out = rows.iter().map(|r| r.try_get::<_, Option<String>>(0).ok().flatten().unwrap_or_default()).collect();
    tx.commit().map_err(|e| DbError::of(&e))?;
    Ok(out)
}

/// Runs `sql` and returns its error; panics if it succeeds.
pub fn error_of(client: &mut impl postgres::GenericClient, sql: &str) -> DbError {
    match client.batch_execute(sql) {
        Ok(()) => panic!("expected an error from: {sql}"),
        Err(e) => DbError::of(&e),
    }
}

/// The first column of the first row, as text.
pub fn text(client: &mut impl postgres::GenericClient, sql: &str) -> Option<String> {
    client.query_one(&format!("SELECT ({sql})::text"), &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Number of rows a statement affected.
pub fn affected(client: &mut impl postgres::GenericClient, sql: &str) -> u64 {
    client.execute(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Count of rows the query returns.
pub fn count(client: &mut impl postgres::GenericClient, from: &str) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM {from}"), &[]).unwrap_or_else(|e| panic!("{from}: {e}")).get(0)
}
