//! Least privilege, proven: who may execute each function of schema `tenancy`, compared with the
//! allow-list kept in `tests/fixtures/function_privileges.txt`. A new function must be granted
//! on purpose (`extension/sql/privileges.sql`) and listed there, or this test fails. After an
//! intended change, `UPDATE_GOLDEN=1` rewrites the list; review its diff.

use pg_tenancy_e2e::*;

/// `tenancy.f(args): grantee, ...` for every function, sorted; the owner (who may always
/// execute) is left out, so "superusers only" means nobody else.
fn function_privileges(c: &mut postgres::Client) -> String {
    let rows = c
        .query(
            "SELECT p.oid::regprocedure::text,
                    coalesce((SELECT string_agg(g.name, ', ' ORDER BY g.name)
                                FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a,
                                     LATERAL (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                                          ELSE a.grantee::regrole::text END AS name) g
                               WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner),
                             '(superusers only)')
               FROM pg_proc p
              WHERE p.pronamespace = 'tenancy'::regnamespace
              ORDER BY 1",
            &[],
        )
        .unwrap();
    rows.iter().map(|r| format!("{}: {}\n", r.get::<_, String>(0), r.get::<_, String>(1))).collect()
}

#[test]
fn every_function_has_exactly_the_grants_of_the_allow_list() {
    let db = TestDb::new();
    let actual = function_privileges(&mut db.admin());
    let file = repo_root().join("tests/fixtures/function_privileges.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&file, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&file).unwrap_or_default();
    let missing: Vec<&str> = expected.lines().filter(|l| !actual.lines().any(|a| a == *l)).collect();
    let unexpected: Vec<&str> = actual.lines().filter(|l| !expected.lines().any(|e| e == *l)).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "function privileges differ from {}:\n  installed, not listed:\n    {}\n  listed, not installed:\n    {}",
        file.display(),
        unexpected.join("\n    "),
        missing.join("\n    ")
    );
    // The PUBLIC functions store no ACL (PostgreSQL's default): reading a stored one costs about
    // 1,000 instructions at every call site, once per statement in every policy.
    let stored = text(
        &mut db.admin(),
        "SELECT string_agg(oid::regprocedure::text, ', ') FROM pg_proc WHERE oid IN ('tenancy.current_org()'::regprocedure, 'tenancy.set_context(uuid, text)'::regprocedure, 'tenancy.has_role(text)'::regprocedure) AND proacl IS NOT NULL",
    );
    assert_eq!(stored, None);
}

#[test]
fn trigger_and_internal_functions_are_executable_by_superusers_only() {
    let db = TestDb::new();
    let open: Vec<String> = db
        .admin()
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
              WHERE p.pronamespace = 'tenancy'::regnamespace
                AND (p.prorettype = 'trigger'::regtype OR p.proname LIKE '\\_%' OR p.proname LIKE 'enable\\_%'
                     OR p.proname IN ('disable_sharing', 'keep_quotas', 'run_restricted'))
                AND (has_function_privilege('app_user', p.oid, 'EXECUTE')
                     OR has_function_privilege('app_readonly', p.oid, 'EXECUTE')
                     OR has_function_privilege('tenancy_admin', p.oid, 'EXECUTE'))
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(open.is_empty(), "executable by an application role or tenancy_admin: {open:?}");
}
