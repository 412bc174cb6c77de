//! `tenancy verify` against live databases: the compiled example is proven isolated, with the
//! reach each role has per table and command; a schema the verifier has never seen, with
//! hand-written policies, gets every one of its leaks found, and nothing is left behind.

use pg_tenancy_compiler::verify::{self, Kind, Options, Report};
use pg_tenancy_e2e::*;

fn options(schemas: &[&str], roles: &[&str]) -> Options {
    Options {
        schemas: schemas.iter().map(|s| s.to_string()).collect(),
        tenant_column: "org_id".into(),
        app_roles: roles.iter().map(|s| s.to_string()).collect(),
    }
}

/// The cell text for (role, table, command).
fn cell(report: &Report, role: &str, table: &str, command: &str) -> String {
    let r =
        report.results.iter().find(|r| r.role == role && r.table == table).unwrap_or_else(|| panic!("{role} {table}"));
    let c = &r.cells[command];
    if !c.leaks.is_empty() {
        return format!("LEAK: {}", c.leaks.join("; "));
    }
    c.reach.iter().copied().collect::<Vec<_>>().join(",")
}

#[test]
fn the_compiled_example_is_isolated_for_every_role_table_and_command() {
    let db = TestDb::new();
    let report = verify::verify(&mut db.admin(), &options(&[], &[]), None).unwrap();
    // Knowing the policy file, the same matrix.
    let knowing = verify_with_policy(&db, &example_policy(), &[]);
    assert!(knowing.from_policies && !report.from_policies);
    for (a, b) in report.results.iter().zip(&knowing.results) {
        assert_eq!((&a.role, &a.table, a.kind), (&b.role, &b.table, b.kind));
        for c in verify::COMMANDS {
            assert_eq!(a.cells[c].reach, b.cells[c].reach, "{} {} {c}", a.role, a.table);
        }
    }
    assert_eq!(
        report.results.len(),
        knowing.results.len(),
        "{}\n{}",
        verify::render_human(&report),
        verify::render_human(&knowing)
    );
    assert_eq!(report.roles, ["app_readonly", "app_user"]);
    assert_eq!(report.organizations, 2);
    assert_eq!(report.leaks(), 0, "{}", verify::render_human(&report));
    assert_eq!(report.unverified(), 0, "{}", verify::render_human(&report));
    let expected = [
        ("app_user", "app.documents", ["own,public,shared", "own", "own,shared", "own", "closed"]),
        ("app_user", "app.comments", ["own", "own", "denied", "own", "closed"]),
        ("app_user", "app.countries", ["all", "denied", "denied", "denied", "closed"]),
        ("app_readonly", "app.projects", ["own", "denied", "denied", "denied", "closed"]),
        ("app_readonly", "app.documents", ["own,public,shared", "denied", "denied", "denied", "closed"]),
    ];
    for (role, table, cells) in expected {
        for (command, want) in verify::COMMANDS.iter().zip(cells) {
            assert_eq!(cell(&report, role, table, command), want, "{role} {table} {command}");
        }
    }
    assert_eq!(report.results.iter().find(|r| r.table == "app.documents").unwrap().kind, Kind::Shareable);
    // Everything was rolled back: no organization, row or share is left.
    let mut admin = db.admin();
    assert_eq!(count(&mut admin, "tenancy.organizations WHERE slug LIKE 'tenancy-verify-%'"), 0);
    assert_eq!(count(&mut admin, "tenancy.shares"), 0);
    assert_eq!(count(&mut admin, "app.documents"), 3);
    assert!(tenancy(&["verify", "--database-url", &admin_url(&db.name)]).is_ok());
    // What --format json prints.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["organizations"], 2);
    let documents = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["table"] == "app.documents" && r["role"] == "app_user")
        .unwrap();
    assert_eq!(documents["kind"], "shareable");
    assert_eq!(documents["cells"]["update"]["reach"], serde_json::json!(["own", "shared"]));
    assert_eq!(documents["cells"]["select"]["leaks"], serde_json::json!([]));
}

#[test]
fn every_leak_of_an_unseen_schema_is_found() {
    let db = TestDb::new();
    db.admin()
        .batch_execute(&std::fs::read_to_string(repo_root().join("tests/fixtures/verify_crm.sql")).unwrap())
        .unwrap();
    let report = verify::verify(&mut db.admin(), &options(&["crm"], &["crm_app"]), None).unwrap();
    let text = verify::render_human(&report);
    assert_eq!(report.roles, ["crm_app"], "{text}");
    assert_eq!(report.unverified(), 0, "{text}");
    // Isolated, with generated serial ids, enum, CHECK IN (...), jsonb, numeric and date values.
    for command in verify::COMMANDS {
        assert!(!cell(&report, "crm_app", "crm.accounts", command).starts_with("LEAK"), "{text}");
    }
    let leaks = [
        ("crm.contacts", "insert", "points at organization"),
        ("crm.deals", "select", "sees 1 row(s) of other organizations"),
        ("crm.invoices", "insert", "inserted a row into organization"),
        ("crm.notes", "select", "sees"),
        ("crm.notes", "update", "updated"),
        ("crm.notes", "delete", "deleted"),
        ("crm.notes", "no context", "without a context sees"),
    ];
    for (table, command, what) in leaks {
        let c = cell(&report, "crm_app", table, command);
        assert!(c.starts_with("LEAK") && c.contains(what), "{table} {command}: {c}\n{text}");
    }
    assert!(text.contains("error: "), "{text}");
    let url = admin_url(&db.name);
    let failure = tenancy(&["verify", "--database-url", &url, "--schema", "crm", "--app-role", "crm_app"]).unwrap_err();
    assert_eq!(failure.report(), 1);
}

#[test]
fn verify_needs_a_superuser_and_says_so() {
    let db = TestDb::new();
    let failure = tenancy(&["verify", "--database-url", &app_url(&db.name)]).unwrap_err();
    assert_eq!(failure.report(), 2);
    let e = verify::verify(&mut db.app(), &options(&[], &[]), None).unwrap_err();
    match e {
        verify::VerifyError::Unusable(m) => assert!(m.contains("is not a superuser"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// The verifier runs as a superuser, but a table's own code (its triggers, here one that would
/// run a program) must run with its owner's rights: the verifier writes and reads fixtures as
/// the table's owner. A sequence (not rolled back with the verifier's transaction) records who
/// ran the trigger.
#[test]
fn the_verifier_runs_a_tables_code_as_its_owner_not_as_a_superuser() {
    let db = TestDb::new();
    let owner = TempRole::new(&db, "schema_owner", "NOSUPERUSER");
    let o = &owner.name;
    db.admin()
        .batch_execute(&format!("CREATE SCHEMA own AUTHORIZATION {o}; GRANT USAGE ON SCHEMA own TO app_user;"))
        .unwrap();
    owner
        .connect()
        .batch_execute(
            "CREATE TABLE own.items (org_id uuid NOT NULL DEFAULT tenancy.current_org(), id uuid NOT NULL DEFAULT gen_random_uuid(),
                                     name text NOT NULL, PRIMARY KEY (org_id, id));
             ALTER TABLE own.items ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY own_rows ON own.items TO app_user
                 USING (org_id = (SELECT tenancy.current_org())) WITH CHECK (org_id = (SELECT tenancy.current_org()));
             GRANT SELECT, INSERT, UPDATE, DELETE ON own.items TO app_user;
             CREATE SEQUENCE own.who MINVALUE 0 START 0;
             GRANT UPDATE ON SEQUENCE own.who TO PUBLIC;
             CREATE FUNCTION own.spy() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM setval('own.who', CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                                                THEN 666 ELSE greatest(currval('own.who'), 1) END, true);
                 RETURN NEW;
             EXCEPTION WHEN object_not_in_prerequisite_state THEN
                 PERFORM setval('own.who', CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                                                THEN 666 ELSE 1 END, true);
                 RETURN NEW;
             END $$;
             CREATE TRIGGER spy BEFORE INSERT ON own.items FOR EACH ROW EXECUTE FUNCTION own.spy();",
        )
        .unwrap();
    let report = verify::verify(&mut db.admin(), &options(&["own"], &["app_user"]), None).unwrap();
    assert_eq!(report.leaks(), 0, "{}", verify::render_human(&report));
    let who: i64 = db.admin().query_one("SELECT last_value FROM own.who", &[]).unwrap().get(0);
    assert_ne!(who, 0, "the table's trigger did not run: the verifier wrote no row");
    assert_ne!(who, 666, "the table's trigger ran as a superuser");
    // The table is as it was.
    assert_eq!(
        text(&mut db.admin(), "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'own.items'::regclass").as_deref(),
        Some("true")
    );
}

const KINDS: &str = "
CREATE SCHEMA lib;
CREATE TABLE lib.templates (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid, name text NOT NULL);
CREATE INDEX ON lib.templates (org_id);
CREATE TABLE lib.papers (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL,
                         template_id uuid REFERENCES lib.templates (id), title text NOT NULL);
CREATE INDEX ON lib.papers (template_id);
CREATE TABLE lib.page_notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                             paper_id uuid NOT NULL REFERENCES lib.papers (id), body text NOT NULL,
                             see_also uuid REFERENCES lib.papers (id));
CREATE INDEX ON lib.page_notes (paper_id);
CREATE INDEX ON lib.page_notes (see_also);
CREATE TABLE lib.audit_log (at timestamptz NOT NULL DEFAULT now(), actor text, message text NOT NULL);
CREATE TABLE lib.users (id text PRIMARY KEY, email text NOT NULL UNIQUE, display_name text NOT NULL);
CREATE TABLE lib.issues (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL,
                         title text NOT NULL, created_by text NOT NULL REFERENCES lib.users (id));
CREATE INDEX ON lib.issues (org_id);
-- A child of a table with global rows: the built-in template's sections are global too.
CREATE TABLE lib.sections (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                           template_id uuid NOT NULL REFERENCES lib.templates (id), heading text NOT NULL);
CREATE INDEX ON lib.sections (template_id);
-- One row per organization: a second one is a unique violation.
CREATE TABLE lib.settings (org_id uuid PRIMARY KEY, theme text NOT NULL);
-- One row per organization that other rows reference: neither deleted nor written again beside.
CREATE TABLE lib.profiles (org_id uuid PRIMARY KEY, motto text NOT NULL);
CREATE TABLE lib.profile_links (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL,
                                profile_id uuid NOT NULL REFERENCES lib.profiles (org_id), url text NOT NULL);
CREATE INDEX ON lib.profile_links (org_id);
CREATE INDEX ON lib.profile_links (profile_id);
-- A cycle, named so that the table written last sorts first.
CREATE TABLE lib.z_plans (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL, first_step_id uuid);
CREATE INDEX ON lib.z_plans (org_id);
CREATE TABLE lib.a_steps (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL,
                          plan_id uuid NOT NULL REFERENCES lib.z_plans (id));
CREATE INDEX ON lib.a_steps (org_id);
CREATE INDEX ON lib.a_steps (plan_id);
ALTER TABLE lib.z_plans ADD FOREIGN KEY (first_step_id) REFERENCES lib.a_steps (id);
CREATE INDEX ON lib.z_plans (first_step_id);
-- CHECK constraints a generated row must satisfy: exactly one parent, columns a kind requires,
-- a non-empty array; and a unique bytea.
CREATE TABLE lib.rates (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL,
                        plan_id uuid REFERENCES lib.z_plans (id), paper_id uuid REFERENCES lib.papers (id),
                        kind text NOT NULL DEFAULT 'legacy', amount integer, tags text[] NOT NULL DEFAULT '{}',
                        digest bytea NOT NULL UNIQUE,
                        CONSTRAINT one_parent CHECK ((plan_id IS NULL) <> (paper_id IS NULL)),
                        CONSTRAINT legacy_amount CHECK (kind <> 'legacy' OR amount IS NOT NULL),
                        CONSTRAINT tagged CHECK (cardinality(tags) > 0));
CREATE INDEX ON lib.rates (org_id);
CREATE INDEX ON lib.rates (plan_id);
CREATE INDEX ON lib.rates (paper_id);
-- A user's personal rows (NULL org_id) beside the organization's.
CREATE TABLE lib.tokens (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid,
                         user_id text NOT NULL REFERENCES lib.users (id), name text NOT NULL);
CREATE INDEX ON lib.tokens (org_id);
CREATE INDEX ON lib.tokens (user_id);
GRANT USAGE ON SCHEMA lib TO app_user, app_readonly;
INSERT INTO lib.templates (name) VALUES ('Built-in');
INSERT INTO lib.sections (template_id, heading) SELECT id, 'Introduction' FROM lib.templates;
";

const KINDS_POLICY: &str = r#"
[tables.templates]
kind = "tenant"
global_rows = true

[tables.papers]
kind = "tenant"

[tables.page_notes]
kind = "tenant"
parent = "paper_id"

[tables.sections]
kind = "tenant"
parent = "template_id"

[tables.settings]
kind = "tenant"

[tables.profiles]
kind = "tenant"

[tables.profile_links]
kind = "tenant"

[tables.z_plans]
kind = "tenant"

[tables.a_steps]
kind = "tenant"

[tables.rates]
kind = "tenant"
globally_unique = { digest = "a content hash" }

[tables.tokens]
kind = "tenant"
user_rows = "user_id"

[tables.audit_log]
kind = "unscoped"
reason = "the application's audit trail, written before the tenant is known"

[tables.users]
kind = "identity"
globally_unique = { email = "one account per address" }

[tables.issues]
kind = "tenant"
"#;

/// Given the policy files, verify proves each kind of table as the policies declare it: rows
/// that belong through a parent row, users who see themselves, NULL-keyed global rows every
/// organization reads and none writes, and unscoped tables listed with their reason. Each broken
/// policy is a leak it names.
#[test]
fn every_kind_of_table_is_proven_as_the_policy_files_declare_it() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(KINDS).unwrap();
    let policy = example_policy().replace("schemas = [\"app\"]", "schemas = [\"app\", \"lib\"]") + KINDS_POLICY;
    apply_policy(&db, &policy);
    let report = verify_with_policy(&db, &policy, &["app_user"]);
    let text = verify::render_human(&report);
    assert_eq!((report.leaks(), report.unverified()), (0, 0), "{text}");
    let kind = |t: &str| report.results.iter().find(|r| r.table == t).map(|r| r.kind);
    assert_eq!(kind("lib.page_notes"), Some(Kind::Child));
    assert_eq!(kind("lib.users"), Some(Kind::Identity));
    assert_eq!(kind("lib.audit_log"), None, "unscoped tables are not probed");
    assert_eq!(
        report.unscoped,
        [(
            "lib.audit_log".to_string(),
            "the application's audit trail, written before the tenant is known".to_string()
        )]
    );
    assert!(text.contains("unscoped (not probed, as the policy files declare): lib.audit_log"), "{text}");
    for (table, command, want) in [
        ("lib.page_notes", "select", "own"),
        ("lib.page_notes", "insert", "own"),
        ("lib.users", "select", "own"),
        ("lib.users", "insert", "denied"),
        ("lib.templates", "select", "global, own"),
        ("lib.issues", "insert", "own"),
        ("lib.sections", "select", "global, own"),
        ("lib.sections", "insert", "own"),
        // Its own row out of the way first: one row per organization.
        ("lib.settings", "insert", "own"),
        // ... and when other rows reference it (it is put out of the way with triggers off);
        // deleting it stays refused: a fresh row has the same key, which those rows reference.
        ("lib.profiles", "insert", "own"),
        ("lib.profiles", "delete", "refused"),
        ("lib.a_steps", "insert", "own"),
        ("lib.rates", "select", "own"),
        ("lib.rates", "insert", "own"),
        // Its rows are referenced by page notes: a row of its own nothing references is deleted.
        ("lib.papers", "delete", "own"),
        ("lib.tokens", "select", "own"),
        ("lib.tokens", "insert", "own"),
        ("lib.tokens", "update", "own"),
    ] {
        assert_eq!(cell(&report, "app_user", table, command).replace(',', ", "), want, "{table} {command}\n{text}");
    }

    // One policy changed, verify run, the policy put back (verify's connection must not wait
    // on a lock the change holds).
    let leaks_after = |admin: &mut postgres::Client, table: &str, policy_name: &str, change: &str| {
        let was = admin
            .query_one(
                "SELECT pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) FROM pg_policy
                  WHERE polrelid = $1::text::regclass AND polname = $2",
                &[&table, &policy_name],
            )
            .unwrap();
        let restore: Vec<String> = [("USING", was.get::<_, Option<String>>(0)), ("WITH CHECK", was.get(1))]
            .into_iter()
            .filter_map(|(k, e)| e.map(|e| format!("{k} ({e})")))
            .collect();
        admin.batch_execute(&format!("ALTER POLICY {policy_name} ON {table} {change}")).unwrap();
        let report = verify_with_policy(&db, &policy, &["app_user"]);
        admin.batch_execute(&format!("ALTER POLICY {policy_name} ON {table} {}", restore.join(" "))).unwrap();
        report.results.iter().flat_map(|r| r.cells.values()).flat_map(|c| c.leaks.clone()).collect::<Vec<_>>()
    };
    // Each sabotage is a leak verify names (and only with it: the same database passed above).
    for (table, policy_name, sabotage, leak) in [
        ("lib.page_notes", "tenancy_select", "USING (true)", "sees 1 row(s) of other organizations"),
        ("lib.users", "tenancy_select", "USING (true)", "select reached 1 row(s) of other users"),
        ("lib.sections", "tenancy_insert", "WITH CHECK (true)", "inserted a global row"),
        // A child's other foreign key left unchecked.
        (
            "lib.page_notes",
            "tenancy_insert",
            "WITH CHECK (EXISTS (SELECT FROM lib.papers t WHERE t.id = page_notes.paper_id AND t.org_id = tenancy.current_org()))",
            "inserted a row that points at organization B's rows",
        ),
        // A user's rows that any user reaches.
        ("lib.tokens", "tenancy_select", "USING (org_id = tenancy.current_org() OR org_id IS NULL)", "sees 1 row(s)"),
        ("lib.sections", "tenancy_update", "USING (true) WITH CHECK (true)", "moved its row under a global row"),
        (
            "lib.templates",
            "tenancy_insert",
            "WITH CHECK (org_id IS NULL OR org_id = tenancy.current_org())",
            "inserted a global row (NULL tenant)",
        ),
        (
            "lib.templates",
            "tenancy_update",
            "USING (true) WITH CHECK (true)",
            "row(s) of other organizations not shared with it for writing",
        ),
    ] {
        let leaks = leaks_after(&mut admin, table, policy_name, sabotage);
        assert!(leaks.iter().any(|l| l.contains(leak)), "{table} {sabotage}: {leaks:#?}");
    }
    // A policy that hides every row leaks nothing, and proves nothing: verify says so, and fails.
    let was: String = admin
        .query_one(
            "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy
              WHERE polrelid = 'lib.issues'::regclass AND polname = 'tenancy_select'",
            &[],
        )
        .unwrap()
        .get(0);
    admin.batch_execute("ALTER POLICY tenancy_select ON lib.issues USING (false)").unwrap();
    let report = verify_with_policy(&db, &policy, &["app_user"]);
    admin.batch_execute(&format!("ALTER POLICY tenancy_select ON lib.issues USING ({was})")).unwrap();
    let text = verify::render_human(&report);
    assert_eq!(report.leaks(), 0, "{text}");
    assert!(report.unverified() > 0, "{text}");
    assert!(text.contains("lib.issues") && text.contains("read none of its own 1 row(s)"), "{text}");

    // Nor does a grant taken away: the policy files say the role reads the table.
    admin.batch_execute("REVOKE SELECT ON lib.issues FROM app_user").unwrap();
    let report = verify_with_policy(&db, &policy, &["app_user"]);
    admin.batch_execute("GRANT SELECT ON lib.issues TO app_user").unwrap();
    let text = verify::render_human(&report);
    assert!(report.unverified() > 0, "{text}");
    assert!(text.contains("may read the table by the policy files, and was refused"), "{text}");

    let report = verify_with_policy(&db, &policy, &["app_user"]);
    assert_eq!((report.leaks(), report.unverified()), (0, 0), "every policy was put back");
}

/// Columns and constraints of real schemas, each of which once kept verify from writing a row:
/// types with modifiers, domains with CHECKs, ranges under an exclusion constraint, bit strings,
/// generated and identity columns, CHECK constraints on values and lengths, and a partitioned
/// table.
const TYPES: &str = "
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE SCHEMA kit;
CREATE DOMAIN kit.email AS text CHECK (VALUE ~ '@');
CREATE DOMAIN kit.percent AS numeric(5,2) CHECK (VALUE BETWEEN 0 AND 100);
CREATE TYPE kit.status AS ENUM ('open', 'closed');
CREATE TABLE kit.bookings (
    id bigint GENERATED ALWAYS AS IDENTITY,
    org_id uuid NOT NULL,
    contact kit.email NOT NULL,
    discount kit.percent NOT NULL,
    code varchar(3) NOT NULL CHECK (length(code) >= 2),
    price numeric(6,2) NOT NULL CHECK (price > 0),
    flags bit(4) NOT NULL,
    seats int4range NOT NULL,
    during tstzrange NOT NULL,
    days daterange NOT NULL,
    address inet NOT NULL,
    network cidr NOT NULL,
    wait interval NOT NULL,
    extra jsonb NOT NULL,
    blob bytea NOT NULL,
    status kit.status NOT NULL,
    labels text[] NOT NULL CHECK (cardinality(labels) > 0),
    at timestamp(3) with time zone NOT NULL,
    total numeric GENERATED ALWAYS AS (price * 2) STORED,
    PRIMARY KEY (org_id, id),
    EXCLUDE USING gist (org_id WITH =, during WITH &&)
);
CREATE INDEX ON kit.bookings (org_id);
CREATE TABLE kit.events (org_id uuid NOT NULL, at date NOT NULL, what text NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE kit.events_old PARTITION OF kit.events FOR VALUES FROM (MINVALUE) TO ('2000-01-01');
CREATE TABLE kit.events_new PARTITION OF kit.events FOR VALUES FROM ('2000-01-01') TO (MAXVALUE);
CREATE INDEX ON kit.events (org_id);
GRANT USAGE ON SCHEMA kit TO app_user, app_readonly;
";

#[test]
fn rows_are_made_for_every_kind_of_column_and_constraint() {
    let db = TestDb::new();
    db.admin().batch_execute(TYPES).unwrap();
    let policy = example_policy().replace("schemas = [\"app\"]", "schemas = [\"app\", \"kit\"]")
        + "\n[tables.bookings]\nkind = \"tenant\"\n\n[tables.events]\nkind = \"tenant\"\n";
    apply_policy(&db, &policy);
    let report = verify_with_policy(&db, &policy, &["app_user"]);
    let text = verify::render_human(&report);
    assert_eq!((report.leaks(), report.unverified()), (0, 0), "{text}");
    for table in ["kit.bookings", "kit.events"] {
        for command in ["select", "insert", "update", "delete"] {
            assert_eq!(cell(&report, "app_user", table, command), "own", "{table} {command}\n{text}");
        }
    }
}
