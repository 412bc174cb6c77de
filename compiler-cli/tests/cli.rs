//! Runs the `tenancy` binary as a user would: golden compiled SQL for the example, the exact
//! diagnostic each sample in `policies/invalid/` must produce, exit codes and JSON output.
//! Set `UPDATE_GOLDEN=1` to rewrite the golden files after an intended change.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn tenancy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run tenancy")
}

fn golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("missing golden file {} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

#[test]
fn example_compiles_to_the_checked_in_sql() {
    let out = tenancy(&["compile", "policies/app.toml", "--schema", "sql/schema.sql"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    golden(&root().join("sql/app.compiled.sql"), &String::from_utf8(out.stdout).unwrap());
}

#[test]
fn a_two_level_schema_compiles_to_the_checked_in_sql() {
    let dir = "compiler-cli/tests/fixtures/two_levels";
    let out = tenancy(&["compile", &format!("{dir}/policy.toml"), "--schema", &format!("{dir}/schema.sql")]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let sql = String::from_utf8(out.stdout).unwrap();
    // Project-level rows are the project's, organization-level rows the organization's, checked
    // with the organization's role; each guard says its level.
    for needle in [
        "USING (project_id = tenancy.current_project_key());",
        "USING (org_id = tenancy.current_org_key() AND (SELECT tenancy.has_org_role('admin')));",
        "tenancy.require_context('member', 'member', 'admin', 'project');",
        "tenancy.require_context('admin|api_keys.create', 'member', 'admin', 'organization');",
        "t.project_id = (SELECT tenancy.current_project_key())",
        "PERFORM tenancy.set_project_member(new_project, new_user, new_role);",
    ] {
        assert!(sql.contains(needle), "missing {needle}");
    }
    assert!(!sql.contains("has_org_role('member')) AND (SELECT tenancy.has_role"));
    golden(&root().join(format!("{dir}/compiled.sql")), &sql);
}

#[test]
fn compiling_twice_gives_identical_output() {
    let a = tenancy(&["compile", "policies/", "--schema", "sql/schema.sql"]);
    let b = tenancy(&["compile", "policies/", "--schema", "sql/schema.sql"]);
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn compile_writes_to_a_file_with_output() {
    let dir = std::env::temp_dir().join(format!("tenancy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("out.sql");
    let out = tenancy(&["compile", "policies/app.toml", "--schema", "sql/schema.sql", "-o", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let sql = std::fs::read_to_string(&file).unwrap();
    assert!(sql.contains("CREATE POLICY tenancy_select ON app.projects"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn check_reports_ok_for_the_example() {
    let out = tenancy(&["check", "policies/app.toml", "--schema", "sql/schema.sql"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "ok: the policies cover 6 tables in app\n");
}

#[test]
fn every_invalid_sample_fails_with_its_expected_diagnostic() {
    let dir = root().join("policies/invalid");
    let mut samples: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 15, "the invalid corpus shrank: {}", samples.len());
    let mut codes = std::collections::BTreeSet::new();
    for sample in samples {
        let rel = sample.strip_prefix(root()).unwrap().to_str().unwrap().to_string();
        let mut args = vec!["check".to_string(), rel.clone(), "--schema".into(), "sql/schema.sql".into()];
        let extra = sample.with_extension("sql");
        if extra.exists() {
            args.push("--schema".into());
            args.push(extra.strip_prefix(root()).unwrap().to_str().unwrap().into());
        }
        let out = tenancy(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(1), "{rel} must fail with exit code 1");
        let stderr = String::from_utf8(out.stderr).unwrap();
        golden(&sample.with_extension("expected"), &stderr);
        let code = stderr.split_whitespace().next().unwrap_or_default().to_string();
        assert!(code.starts_with("tenancy::"), "{rel}: no diagnostic code in {stderr}");
        codes.insert(code);
    }
    // Each sample shows a different mistake.
    assert!(codes.len() >= 15, "{codes:?}");
}

#[test]
fn a_setting_made_in_two_files_of_a_policy_set_is_refused() {
    let out = tenancy(&["check", "policies/invalid/duplicate_setting", "--schema", "sql/schema.sql"]);
    assert_eq!(out.status.code(), Some(1));
    golden(&root().join("policies/invalid/duplicate_setting/expected"), &String::from_utf8(out.stderr).unwrap());
}

#[test]
fn json_diagnostics_carry_file_line_and_column() {
    let out =
        tenancy(&["check", "policies/invalid/unknown_table.toml", "--schema", "sql/schema.sql", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v[0];
    assert_eq!(d["code"], "tenancy::unknown-table");
    assert_eq!(d["file"], "policies/invalid/unknown_table.toml");
    assert_eq!(d["line"], 23);
    assert_eq!(d["column"], 9);
    assert_eq!(d["help"], "did you mean `projects`?");
}

#[test]
fn missing_files_exit_with_io_code() {
    let out = tenancy(&["check", "policies/nope.toml", "--schema", "sql/schema.sql"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read `policies/nope.toml`"));
}

#[test]
fn no_schema_source_is_a_usage_error() {
    let out = tenancy(&["check", "policies/app.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --schema FILE"));
}

#[test]
fn unreachable_database_exits_with_database_code() {
    let out = tenancy(&[
        "apply",
        "policies/app.toml",
        "--database-url",
        "postgresql://nobody@/nodb?host=/nonexistent&port=1",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to the database"));
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let out = tenancy(&["--help"]);
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in ["check", "compile", "apply", "Exit codes:", "4  the database"] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn foreign_keys_without_an_index_get_one() {
    let dir = std::env::temp_dir().join(format!("tenancy-fk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("shop.sql"),
        "CREATE SCHEMA shop;
         CREATE TABLE shop.customers (id uuid, org_id uuid NOT NULL, PRIMARY KEY (org_id, id));
         CREATE TABLE shop.orders (id uuid, org_id uuid NOT NULL, customer_id uuid, PRIMARY KEY (org_id, id),
                                   FOREIGN KEY (org_id, customer_id) REFERENCES shop.customers (org_id, id));",
    )
    .unwrap();
    std::fs::write(
        dir.join("shop.toml"),
        "schemas = [\"shop\"]\n[roles]\nread_write = [\"app_user\"]\n[tables.customers]\nkind = \"tenant\"\n[tables.orders]\nkind = \"tenant\"\n",
    )
    .unwrap();
    let out = tenancy(&[
        "compile",
        dir.join("shop.toml").to_str().unwrap(),
        "--schema",
        dir.join("shop.sql").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let sql = String::from_utf8(out.stdout).unwrap();
    assert!(
        sql.contains("CREATE INDEX IF NOT EXISTS orders_org_id_customer_id_idx ON shop.orders (org_id, customer_id);"),
        "{sql}"
    );
    assert!(!sql.contains("customers_org_id_idx"), "the primary key already leads with org_id");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn columns_that_rules_filter_on_get_tenant_leading_indexes() {
    let out = tenancy(&["compile", "tests/fixtures/rules.toml", "--schema", "sql/schema.sql"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let sql = String::from_utf8(out.stdout).unwrap();
    for index in [
        "CREATE INDEX IF NOT EXISTS projects_org_id_created_by_idx ON app.projects (org_id, created_by);",
        "CREATE INDEX IF NOT EXISTS tasks_org_id_assignee_idx ON app.tasks (org_id, assignee);",
    ] {
        assert!(sql.contains(index), "missing {index}\n{sql}");
    }
    assert!(!sql.contains("(org_id, org_id)"));
}

#[test]
fn implicit_tenant_tables_covers_the_tables_with_the_tenant_column_and_no_others() {
    let dir = std::env::temp_dir().join(format!("tenancy-implicit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("shop.sql"),
        "CREATE SCHEMA shop;
         CREATE TABLE shop.customers (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL);
         CREATE TABLE shop.orders (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL,
                                   customer_id uuid NOT NULL REFERENCES shop.customers (id));
         CREATE TABLE shop.audit (id bigint PRIMARY KEY, message text);",
    )
    .unwrap();
    let policy = |extra: &str| {
        std::fs::write(
            dir.join("shop.toml"),
            format!(
                "schemas = [\"shop\"]\nimplicit_tenant_tables = true\n[roles]\nread_write = [\"app_user\"]\n{extra}"
            ),
        )
        .unwrap();
        tenancy(&[
            "compile",
            dir.join("shop.toml").to_str().unwrap(),
            "--schema",
            dir.join("shop.sql").to_str().unwrap(),
        ])
    };
    // A table without the tenant column is not a tenant table by default: it must be listed.
    let out = policy("");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("table `shop.audit` is in a governed schema but no policy covers it"), "{stderr}");
    assert!(!stderr.contains("shop.customers") && !stderr.contains("shop.orders"), "{stderr}");
    // Listed, it compiles; the other two are tenant tables with the defaults.
    let out = policy("[tables.audit]\nkind = \"unscoped\"\nreason = \"the application's log\"\n[tables.orders]\nkind = \"tenant\"\ndelete = \"admin\"\n");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let sql = String::from_utf8(out.stdout).unwrap();
    assert!(sql.contains("ALTER TABLE shop.customers FORCE ROW LEVEL SECURITY;"), "{sql}");
    assert!(sql.contains("CREATE POLICY tenancy_delete ON shop.orders"), "{sql}");
    assert!(sql.contains("(SELECT tenancy.has_role('admin'))"), "the listed table keeps its own rules");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_materialized_view_of_a_tenant_table_needs_a_declared_reason() {
    let dir = std::env::temp_dir().join(format!("tenancy-matview-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("shop.sql"),
        "CREATE SCHEMA shop;
         CREATE TABLE shop.events (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL);
         CREATE MATERIALIZED VIEW shop.recent AS SELECT org_id, count(*) FROM shop.events GROUP BY org_id WITH NO DATA;",
    )
    .unwrap();
    let check = |extra: &str| {
        std::fs::write(
            dir.join("shop.toml"),
            format!("schemas = [\"shop\"]\n[roles]\nread_write = [\"app_user\"]\n[tables.events]\nkind = \"tenant\"\n{extra}"),
        )
        .unwrap();
        let out = tenancy(&[
            "check",
            dir.join("shop.toml").to_str().unwrap(),
            "--schema",
            dir.join("shop.sql").to_str().unwrap(),
        ]);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check("");
    assert_eq!(code, Some(1));
    assert!(err.contains("tenancy::materialized-view") && err.contains("[materialized_views]"), "{err}");
    let (code, err) =
        check("[materialized_views]\nrecent = \"a job's count per organization, read by the admin dashboard\"\n");
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check("[materialized_views]\nrecnt = \"typo\"\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("tenancy::unknown-materialized-view") && err.contains("tenancy::materialized-view"), "{err}");
    let (code, err) = check("[materialized_views]\nrecent = \" \"\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("tenancy::missing-reason"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn two_level_mistakes_are_refused_with_their_codes() {
    let fixture = root().join("compiler-cli/tests/fixtures/two_levels");
    let policy = std::fs::read_to_string(fixture.join("policy.toml")).unwrap();
    let dir = std::env::temp_dir().join(format!("tenancy-levels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to, code) in [
        ("organization_column = \"org_id\"", "", "tenancy::missing-organization-column"),
        ("NONE = \"none\"", "NONE = \"nobody\"", "tenancy::unknown-project-role"),
    ] {
        let file = dir.join("policy.toml");
        std::fs::write(&file, policy.replace(from, to)).unwrap();
        let schema = fixture.join("schema.sql");
        let out = tenancy(&["check", file.to_str().unwrap(), "--schema", schema.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(code),
            "{code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(dir).ok();
}
