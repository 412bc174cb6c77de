//! `tenancy lint` against live databases: the compiled example is clean, and a schema with every
//! mistake the linter knows produces every rule, each with a fix.

use pg_tenancy_compiler::diagnostics::Severity;
use pg_tenancy_compiler::lint::{self, Options, RULES};
use pg_tenancy_e2e::*;
use std::collections::BTreeSet;

fn options(schemas: &[&str]) -> Options {
    Options {
        schemas: schemas.iter().map(|s| s.to_string()).collect(),
        tenant_column: "org_id".into(),
        app_roles: vec![],
    }
}

#[test]
fn the_compiled_example_lints_clean() {
    let db = TestDb::new();
    let (findings, tables) = lint::lint(&mut db.admin(), &options(&[])).unwrap();
    assert_eq!(findings, vec![], "{findings:#?}");
    assert_eq!(tables, 5);
    assert!(tenancy(&["lint", "--database-url", &admin_url(&db.name)]).is_ok());
}

#[test]
fn every_rule_fires_on_a_schema_with_every_mistake() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE lint_app LOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             CREATE SCHEMA bad;
             CREATE TABLE bad.loose (id uuid PRIMARY KEY, org_id uuid);
             CREATE TABLE bad.parent (org_id uuid NOT NULL, id uuid NOT NULL, PRIMARY KEY (org_id, id));
             ALTER TABLE bad.parent ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY p ON bad.parent FOR SELECT TO lint_app USING (org_id = tenancy.current_org() AND tenancy.has_role('member'));
             CREATE TABLE bad.child (org_id uuid NOT NULL, id uuid NOT NULL, loose_id uuid REFERENCES bad.loose (id),
                                     PRIMARY KEY (org_id, id));
             ALTER TABLE bad.child ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             ALTER TABLE bad.child OWNER TO lint_app;
             CREATE VIEW bad.v AS SELECT * FROM bad.parent;
             CREATE MATERIALIZED VIEW bad.mv AS SELECT * FROM bad.parent;
             CREATE STATISTICS bad.parent_pairs (mcv) ON org_id, id FROM bad.parent;
             CREATE FUNCTION bad.peek() RETURNS bigint SECURITY DEFINER LANGUAGE sql AS 'SELECT count(*) FROM bad.parent';
             GRANT SELECT ON pg_catalog.pg_stat_activity, pg_catalog.pg_stat_user_tables TO lint_app;
             GRANT EXECUTE ON FUNCTION pg_catalog.lo_create(oid) TO lint_app;
             -- Safe as they are: a random uuid primary key, a unique index with the tenant column.
             CREATE TABLE bad.fine (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL, email text);
             CREATE UNIQUE INDEX fine_email ON bad.fine (org_id, email);
             ALTER TABLE bad.fine ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             -- Unsafe: a partial unique index and an exclusion constraint without the tenant column.
             CREATE UNIQUE INDEX fine_default ON bad.fine (email) WHERE email <> '';
             ALTER TABLE bad.fine ADD CONSTRAINT fine_no_twins EXCLUDE USING btree (email WITH =);
             ALTER TABLE bad.fine ADD COLUMN code text,
                 ADD CONSTRAINT fine_code UNIQUE NULLS NOT DISTINCT (code) DEFERRABLE INITIALLY DEFERRED;
             -- A key declared globally unique, as tenancy apply records it.
             CREATE TABLE bad.keys (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL, digest text UNIQUE);
             ALTER TABLE bad.keys ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE INDEX ON bad.keys (org_id);
             INSERT INTO tenancy.unique_waivers VALUES ('bad.keys', 'digest', 'looked up before the tenant is known');
             -- A materialized view declared read whole, as tenancy apply records it (no columns).
             CREATE MATERIALIZED VIEW bad.report AS SELECT org_id, count(*) FROM bad.parent GROUP BY org_id;
             INSERT INTO tenancy.unique_waivers VALUES ('bad.report', '', 'a nightly job reads every organization''s totals');
             -- An unscoped table, as tenancy apply leaves one.
             CREATE TABLE bad.audit (at timestamptz NOT NULL DEFAULT now(), message text);
             ALTER TABLE bad.audit ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY tenancy_select ON bad.audit USING (true);
             COMMENT ON POLICY tenancy_select ON bad.audit IS 'unscoped: the audit log of every organization';
             -- A row pointing into another organization.
             INSERT INTO bad.loose VALUES ('e1000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-000000000001');
             INSERT INTO bad.child VALUES ('b0000000-0000-0000-0000-000000000002', 'e2000000-0000-0000-0000-000000000001', 'e1000000-0000-0000-0000-000000000001');",
        )
        .unwrap();
    // What `tenancy apply` took from PUBLIC in the template, given back to this role alone.
    admin.batch_execute(&format!("GRANT TEMPORARY ON DATABASE {} TO lint_app", db.name)).unwrap();
    let (findings, tables) = lint::lint(&mut admin, &options(&["bad"])).unwrap();
    assert_eq!(tables, 5);
    let fired: BTreeSet<&str> = findings.iter().map(|f| f.rule).collect();
    // A run that finds no tenant table at all is the next test's.
    let all: BTreeSet<&str> = RULES.iter().map(|r| r.0).filter(|r| *r != "no-tenant-tables").collect();
    assert_eq!(fired, all, "{findings:#?}");
    assert!(findings.iter().all(|f| !f.fix.is_empty() && !f.object.is_empty()));
    assert_eq!(findings[0].severity, Severity::Error, "errors come first");
    let per_row = findings.iter().find(|f| f.rule == "policy-per-row-function").unwrap();
    assert_eq!(per_row.object, "policy p on bad.parent");
    assert!(
        per_row.message.contains("tenancy.has_role()") && !per_row.message.contains("current_org"),
        "{}",
        per_row.message
    );
    let unique: BTreeSet<&str> =
        findings.iter().filter(|f| f.rule == "unique-not-tenant-scoped").map(|f| f.object.as_str()).collect();
    assert_eq!(
        unique,
        BTreeSet::from([
            "index fine_code on bad.fine",
            "index fine_default on bad.fine",
            "index fine_no_twins on bad.fine",
            "index loose_pkey on bad.loose"
        ]),
        "a random uuid primary key and a key with the tenant column are safe"
    );
    let partial = findings.iter().find(|f| f.object == "index fine_default on bad.fine").unwrap();
    assert!(
        partial.fix.contains("(org_id, email) WHERE (email <> ''::text)"),
        "the fix keeps the predicate: {}",
        partial.fix
    );
    // A constraint's fix keeps what else it says, and runs as printed.
    let code = findings.iter().find(|f| f.object == "index fine_code on bad.fine").unwrap();
    admin.batch_execute(&code.fix).unwrap();
    assert_eq!(
        text(&mut admin, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'fine_code'").as_deref(),
        Some("UNIQUE NULLS NOT DISTINCT (org_id, code) DEFERRABLE INITIALLY DEFERRED"),
        "{}",
        code.fix
    );
    // A key that foreign keys reference cannot be dropped before they move: the fix says so.
    let pkey = findings.iter().find(|f| f.object == "index loose_pkey on bad.loose").unwrap();
    assert!(
        pkey.fix.starts_with("-- 1 foreign key references it (bad.child.child_loose_id_fkey): `tenancy migrate-keys`"),
        "{}",
        pkey.fix
    );
    let crossing = findings.iter().find(|f| f.rule == "fk-cross-tenant-rows").unwrap();
    assert!(crossing.message.starts_with("1 row of bad.child points at a row of bad.loose"), "{}", crossing.message);
    let listed = text(&mut admin, &format!("SELECT count(*) FROM ({}) x", crossing.fix.split(';').next().unwrap()));
    assert_eq!(listed.as_deref(), Some("1"), "the fix lists the row: {}", crossing.fix);
    let forced = findings.iter().find(|f| f.rule == "rls-not-forced").unwrap();
    assert_eq!(forced.fix, "ALTER TABLE bad.loose FORCE ROW LEVEL SECURITY;");
    // The CLI exits non-zero (1) when any error is found.
    let failure =
        tenancy(&["lint", "--database-url", &admin_url(&db.name), "--schema", "bad", "--format", "json"]).unwrap_err();
    assert!(matches!(failure, pg_tenancy_compiler::cli::Failure::LintErrors));
    admin.batch_execute("DROP SCHEMA bad CASCADE").unwrap();
}

#[test]
fn a_tenant_column_that_matches_nothing_is_an_error_that_names_the_likely_columns() {
    let db = TestDb::new();
    let mut o = options(&["app"]);
    o.tenant_column = "organization_id".into();
    let (findings, tables) = lint::lint(&mut db.admin(), &o).unwrap();
    assert_eq!(tables, 0);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].rule, "no-tenant-tables");
    assert_eq!(findings[0].severity, Severity::Error);
    assert!(findings[0].fix.contains("org_id (uuid, 5 tables)"), "{}", findings[0].fix);
}

/// A materialized view of tenant tables is an error to lint, until the policy files declare it
/// read whole on purpose: `tenancy apply` records the reason, and lint lists it as a warning with
/// that reason, kept up to date when the reason changes.
#[test]
fn a_materialized_view_the_policy_files_declare_is_listed_with_its_reason() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(
            "CREATE MATERIALIZED VIEW app.task_counts AS SELECT org_id, count(*) AS n FROM app.tasks GROUP BY org_id",
        )
        .unwrap();
    let rules = |admin: &mut postgres::Client| {
        let (findings, _) = lint::lint(admin, &options(&[])).unwrap();
        findings
            .into_iter()
            .filter(|f| f.object == "app.task_counts")
            .map(|f| (f.rule, f.severity, f.message))
            .collect::<Vec<_>>()
    };
    let before = rules(&mut admin);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!((before[0].0, before[0].1), ("materialized-view-of-tenant-table", Severity::Error));
    for reason in ["the nightly report reads every organization's totals", "the billing job reads them"] {
        apply_policy(&db, &(example_policy() + &format!("\n[materialized_views]\ntask_counts = \"{reason}\"\n")));
        let after = rules(&mut admin);
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!((after[0].0, after[0].1), ("materialized-view-declared", Severity::Warning));
        assert!(after[0].2.ends_with(reason), "{}", after[0].2);
    }
}
