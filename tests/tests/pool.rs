//! Contexts behind a real PgBouncer in transaction mode, with fewer server connections than
//! clients: many short transactions alternating organizations from concurrent clients (with
//! `set_context()` and with `set_context_token()`), probe clients that set no context, and a
//! session context left by a session role: no transaction sees another organization's rows or
//! inherits a context, and a role that is not a session role cannot leave one behind.
//!
//! PgBouncer 1.18 (Debian 12's) has no protocol-level prepared statements, so every statement
//! here goes through the simple query protocol, as it must through such a pool.

use jsonwebtoken::{encode, EncodingKey, Header};
use pg_tenancy_e2e::*;
use std::path::PathBuf;
use std::process::{Child, Command};

const SECRET: &str = "a-pool-test-secret-of-thirty-two-bytes";
const CLIENTS: usize = 6;
const TRANSACTIONS: usize = 60;

/// A PgBouncer in front of the test cluster, for one database; stopped when dropped.
struct Bouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Bouncer {
    fn start(db: &TestDb, users: &[&str]) -> Bouncer {
        let backend: postgres::Config = app_url(&db.name).parse().unwrap();
        let host = match &backend.get_hosts()[0] {
            postgres::config::Host::Unix(path) => path.display().to_string(),
            postgres::config::Host::Tcp(host) => host.clone(),
        };
        let backend_port = backend.get_ports().first().copied().unwrap_or(5432);
        let port = 29000 + (std::process::id() % 1000) as u16;
        let dir = std::env::temp_dir().join(format!("tenancy-pgbouncer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(dir.join("users.txt"), auth).unwrap();
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n{db} = host={host} port={backend_port} dbname={db}\n\n\
                 [pgbouncer]\nlisten_addr =\nlisten_port = {port}\nunix_socket_dir = {dir}\n\
                 auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
                 default_pool_size = 2\nmax_client_conn = 100\n\
                 server_reset_query = SELECT tenancy.clear_context()\nserver_reset_query_always = 1\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                db = db.name,
                dir = dir.display(),
            ),
        )
        .unwrap();
        let ini = dir.join("pgbouncer.ini").display().to_string();
        // PgBouncer refuses to run as root: run it as the cluster's OS user then.
        let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        let child = if root {
            Command::new("chown").args(["-R", "postgres:", &dir.display().to_string()]).status().unwrap();
            Command::new("runuser").args(["-u", "postgres", "--", "pgbouncer", &ini]).spawn()
        } else {
            Command::new("pgbouncer").arg(&ini).spawn()
        }
        .expect("pgbouncer (scripts/setup.sh installs it)");
        let socket = dir.join(format!(".s.PGSQL.{port}"));
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            socket.exists(),
            "pgbouncer did not start: {}",
            std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
        );
        Bouncer { child, dir, port }
    }

    fn connect(&self, db: &TestDb, user: &str) -> postgres::Client {
        let mut config = postgres::Config::new();
        config.host_path(&self.dir).port(self.port).user(user).dbname(&db.name);
        config.connect(postgres::NoTls).unwrap()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first column of the first row of a simple query.
fn value(c: &mut postgres::Client, sql: &str) -> Option<String> {
    c.simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .flatten()
}

fn token(user: &str, org: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let claims = serde_json::json!({"sub": user, "org_id": org, "exp": exp});
    let header = Header { kid: Some("pool".into()), ..Default::default() };
    encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap()).unwrap()
}

#[test]
fn a_transaction_pool_never_hands_a_context_or_a_row_to_another_organization() {
    let db = TestDb::new();
    // Pooled: app_user is no session role in this database (the example policy declares none).
    db.admin()
        .batch_execute(&format!(
            "ALTER ROLE app_user IN DATABASE {0} RESET tenancy.session_context;
             INSERT INTO tenancy.token_keys (kid, algorithm, key) VALUES ('pool', 'HS256', '{SECRET}');",
            db.name
        ))
        .unwrap();
    let session = TempRole::new(&db, "sess", "NOSUPERUSER NOBYPASSRLS");
    let policy = example_policy()
        .replace("read_write = [\"app_user\"]", &format!("read_write = [\"app_user\", \"{}\"]", session.name))
        .replace("session = []", &format!("session = [\"{}\"]", session.name));
    apply_policy(&db, &policy);
    let bouncer = std::sync::Arc::new(Bouncer::start(&db, &["app_user", &session.name]));
    let db = std::sync::Arc::new(db);

    // A role that is not a session role cannot leave a context on a pooled server connection.
    let mut c = bouncer.connect(&db, "app_user");
    let e = c.simple_query(&format!("SELECT tenancy.set_session_context('{ACME}', 'alice')")).unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("42501"), "{e}");
    drop(c);

    let mut workers = Vec::new();
    for client in 0..CLIENTS {
        let (db, bouncer) = (db.clone(), bouncer.clone());
        workers.push(std::thread::spawn(move || {
            let mut c = bouncer.connect(&db, "app_user");
            let mut leaks = 0;
            for i in 0..TRANSACTIONS {
                let (org, user) = if (client + i) % 2 == 0 { (ACME, "alice") } else { (GLOBEX, "gina") };
                let set = if i % 3 == 0 {
                    format!("SELECT tenancy.set_context_token('{}')", token(user, org))
                } else {
                    format!("SELECT tenancy.set_context('{org}', '{user}')")
                };
                c.simple_query(&format!("BEGIN; {set}")).unwrap();
                let foreign = value(&mut c, &format!("SELECT count(*) FROM app.projects WHERE org_id <> '{org}'"));
                let own = value(&mut c, "SELECT count(*) FROM app.projects");
                let context = value(&mut c, "SELECT tenancy.current_org()::text");
                c.simple_query("COMMIT").unwrap();
                if foreign.as_deref() != Some("0") || own.as_deref() == Some("0") || context.as_deref() != Some(org) {
                    leaks += 1;
                }
            }
            leaks
        }));
    }
    // Probe clients with no context of their own: as app_user, on the workers' two server
    // connections, and as a session role, on the server connections where another client of that
    // role keeps setting a session context: the reset query (tenancy.clear_context()) takes it
    // away before anyone else gets the connection.
    let mut probes = Vec::new();
    for user in ["app_user".to_string(), session.name.clone(), session.name.clone()] {
        let (db, bouncer) = (db.clone(), bouncer.clone());
        probes.push(std::thread::spawn(move || {
            let mut c = bouncer.connect(&db, &user);
            let mut inherited = 0;
            for _ in 0..TRANSACTIONS {
                let rows = value(&mut c, "SELECT count(*) FROM app.projects");
                let context =
                    value(&mut c, "SELECT coalesce(tenancy.current_org()::text, tenancy.current_user_id(), 'none')");
                if rows.as_deref() != Some("0") || context.as_deref() != Some("none") {
                    inherited += 1;
                }
            }
            inherited
        }));
    }
    {
        let mut c = bouncer.connect(&db, &session.name);
        for _ in 0..TRANSACTIONS {
            c.simple_query(&format!("SELECT tenancy.set_session_context('{ACME}', 'alice')")).unwrap();
        }
    }
    let leaks: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let inherited: usize = probes.into_iter().map(|p| p.join().unwrap()).sum();
    assert_eq!(leaks, 0, "transactions that saw another organization's rows or context");
    assert_eq!(inherited, 0, "probe statements that inherited a context");
}
