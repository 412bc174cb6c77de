//! The SQL API as the application role and as a DBA: organizations, members, the catalog's own
//! isolation, and a clear error for every bad input.

use pg_tenancy_e2e::*;

#[test]
fn catalog_shows_only_the_current_org_and_nothing_without_context() {
    let db = TestDb::new();
    let mut c = db.app();
    assert_eq!(count(&mut c, "tenancy.organizations"), 0);
    assert_eq!(count(&mut c, "tenancy.members"), 0);
    let mut c = db.app_in(ACME, "gus");
    assert_eq!(text(&mut c, "SELECT string_agg(slug, ',') FROM tenancy.organizations").as_deref(), Some("acme"));
    assert_eq!(count(&mut c, "tenancy.members"), 5);
    assert_eq!(count(&mut c, &format!("tenancy.members WHERE org_id = '{GLOBEX}'")), 0);
    assert_eq!(count(&mut c, "tenancy.roles"), 4, "roles are reference data");
}

#[test]
fn the_app_role_cannot_write_the_catalog_directly() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "alice");
    for sql in [
        format!("INSERT INTO tenancy.members (org_id, user_id, role) VALUES ('{GLOBEX}', 'alice', 'owner')"),
        "UPDATE tenancy.members SET role = 'owner' WHERE user_id = 'gus'".to_string(),
        "UPDATE tenancy.organizations SET status = 'active'".to_string(),
        "DELETE FROM tenancy.roles".to_string(),
    ] {
        let e = error_of(&mut c, &sql);
        assert_eq!(e.code, "42501", "{sql}");
    }
}

#[test]
fn admins_manage_members_under_context() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "bob");
    c.batch_execute(&format!("SELECT tenancy.add_member('{ACME}', 'dave')")).unwrap();
    c.batch_execute(&format!("SELECT tenancy.update_member('{ACME}', 'dave', 'admin')")).unwrap();
    assert_eq!(text(&mut c, "SELECT role FROM tenancy.members WHERE user_id = 'dave'").as_deref(), Some("admin"));
    c.batch_execute(&format!("SELECT tenancy.remove_member('{ACME}', 'dave')")).unwrap();
    assert_eq!(count(&mut c, "tenancy.members WHERE user_id = 'dave'"), 0);
}

#[test]
fn an_admin_cannot_create_or_demote_an_owner() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "bob");
    for sql in [
        format!("SELECT tenancy.add_member('{ACME}', 'mallory', 'owner')"),
        format!("SELECT tenancy.update_member('{ACME}', 'carol', 'owner')"),
        format!("SELECT tenancy.update_member('{ACME}', 'alice', 'member')"),
        format!("SELECT tenancy.remove_member('{ACME}', 'alice')"),
    ] {
        let e = error_of(&mut c, &sql);
        assert_eq!(e.code, "42501", "{sql}: {}", e.message);
    }
}

#[test]
fn members_and_guests_cannot_manage_members_but_can_leave() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "carol");
    let e = error_of(&mut c, &format!("SELECT tenancy.add_member('{ACME}', 'eve')"));
    assert_eq!(e.code, "42501");
    assert_eq!(e.message, format!("permission denied to manage members of organization {ACME}"));
    let e = error_of(&mut c, &format!("SELECT tenancy.remove_member('{ACME}', 'gus')"));
    assert_eq!(e.code, "42501");
    c.batch_execute(&format!("SELECT tenancy.remove_member('{ACME}', 'carol')")).unwrap();
    let mut admin = db.admin();
    assert_eq!(count(&mut admin, &format!("tenancy.members WHERE org_id = '{ACME}' AND user_id = 'carol'")), 0);
}

#[test]
fn managing_another_or_a_missing_org_is_refused_identically() {
    let db = TestDb::new();
    let mut c = db.app_in(ACME, "alice");
    let other = error_of(&mut c, &format!("SELECT tenancy.add_member('{GLOBEX}', 'eve')"));
    let missing = error_of(&mut c, &format!("SELECT tenancy.add_member('{NOWHERE}', 'eve')"));
    assert_eq!(other.code, "42501");
    assert_eq!(other.message.replace(GLOBEX, "X"), missing.message.replace(NOWHERE, "X"));
    let mut no_context = db.app();
    let e = error_of(&mut no_context, &format!("SELECT tenancy.add_member('{ACME}', 'eve')"));
    assert_eq!(e.code, "42501");
}

#[test]
fn the_last_owner_can_never_be_removed_or_demoted() {
    let db = TestDb::new();
    let mut dba = db.admin();
    let e = error_of(&mut dba, &format!("SELECT tenancy.remove_member('{ACME}', 'alice')"));
    assert_eq!((e.code.as_str(), e.hint.as_deref()), ("55000", Some("Make another member an owner first.")));
    let e = error_of(&mut dba, &format!("SELECT tenancy.update_member('{ACME}', 'alice', 'admin')"));
    assert_eq!(e.code, "55000");
    let mut owner = db.app_in(ACME, "alice");
    let e = error_of(&mut owner, &format!("SELECT tenancy.remove_member('{ACME}', 'alice')"));
    assert_eq!(e.message, format!("cannot remove the last owner of organization {ACME}"));
}

#[test]
fn tenancy_admin_members_manage_without_context() {
    let db = TestDb::new();
    let mut dba = db.admin();
    dba.batch_execute(
        "DO $$ BEGIN CREATE ROLE support_desk LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                       GRANT tenancy_admin TO support_desk;",
    )
    .unwrap();
    let mut support = db.connect_as("support_desk");
    support.batch_execute(&format!("SELECT tenancy.add_member('{GLOBEX}', 'helper', 'guest')")).unwrap();
    assert_eq!(count(&mut support, "tenancy.organizations"), 2, "a tenancy_admin sees every organization");
}

#[test]
fn bad_inputs_get_clear_errors_and_change_nothing() {
    let db = TestDb::new();
    let mut dba = db.admin();
    let cases: [(String, &str, &str); 9] = [
        (
            "SELECT tenancy.create_organization('X', 'Bad Slug', 'u')".into(),
            "22023",
            "invalid value for parameter \"slug\": \"Bad Slug\" is not a valid slug",
        ),
        (
            "SELECT tenancy.create_organization('X', 'acme', 'u')".into(),
            "23505",
            "organization slug \"acme\" is already taken",
        ),
        (
            "SELECT tenancy.create_organization('', 'new', 'u')".into(),
            "22023",
            "invalid value for parameter \"name\": must not be null or empty",
        ),
        ("SELECT tenancy.create_organization('X', 'new', 'u', 'gold')".into(), "22023", "unknown plan \"gold\""),
        (
            format!("SELECT tenancy.create_organization('X', 'new', 'u', id => '{ACME}')"),
            "23505",
            &*Box::leak(format!("organization id {ACME} is already in use").into_boxed_str()),
        ),
        (format!("SELECT tenancy.add_member('{ACME}', 'zed', 'wizard')"), "22023", "unknown role \"wizard\""),
        (
            format!("SELECT tenancy.add_member('{ACME}', 'carol')"),
            "23505",
            "user \"carol\" is already a member of organization a0000000-0000-0000-0000-000000000001",
        ),
        (
            format!("SELECT tenancy.update_member('{ACME}', 'nobody', 'guest')"),
            "42704",
            "user \"nobody\" is not a member of organization a0000000-0000-0000-0000-000000000001",
        ),
        (
            format!("SELECT tenancy.add_member('{NOWHERE}', 'zed')"),
            "42704",
            "organization c0000000-0000-0000-0000-000000000003 does not exist",
        ),
    ];
    let before = count(&mut dba, "tenancy.members");
    for (sql, code, message) in cases {
        let e = error_of(&mut dba, &sql);
        assert_eq!((e.code.as_str(), e.message.as_str()), (code, message), "{sql}");
    }
    assert_eq!(count(&mut dba, "tenancy.members"), before);
    assert_eq!(count(&mut dba, "tenancy.organizations"), 2);
    let e = error_of(&mut dba, &format!("SELECT tenancy.add_member('{ACME}', 'zed', 'wizard')"));
    assert_eq!(e.detail.as_deref(), Some("Valid roles are: owner, admin, member, guest."));
}

#[test]
fn apps_create_orgs_at_sign_up_but_only_dbas_choose_ids() {
    let db = TestDb::new();
    let mut c = db.app();
    let id = text(&mut c, "SELECT tenancy.create_organization('Initech', 'initech', 'peter')").unwrap();
    c.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{id}', 'peter');")).unwrap();
    assert_eq!(text(&mut c, "SELECT tenancy.current_member_role()").as_deref(), Some("owner"));
    c.batch_execute("COMMIT").unwrap();
    let e = error_of(&mut c, &format!("SELECT tenancy.create_organization('Y', 'y', 'u', id => '{NOWHERE}')"));
    assert_eq!(e.code, "42501");
    let mut dba = db.admin();
    let imported = text(
        &mut dba,
        &format!("SELECT tenancy.create_organization('Imported', 'imported', 'u', 'pro', id => '{NOWHERE}')"),
    );
    assert_eq!(imported.as_deref(), Some(NOWHERE));
}

#[test]
fn org_switcher_lists_a_users_orgs_and_slug_lookup_hides_others() {
    let db = TestDb::new();
    let mut c = db.app();
    // A user-only context (before an organization is chosen) is enough, and only for that user.
    c.batch_execute("BEGIN; SELECT tenancy.set_user_context('sam')").unwrap();
    assert_eq!(
        text(&mut c, "SELECT string_agg(slug || ':' || role, ',' ORDER BY slug) FROM tenancy.user_organizations()")
            .as_deref(),
        Some("acme:member,globex:admin")
    );
    assert_eq!(text(&mut c, "SELECT tenancy.org_id('globex')").as_deref(), Some(GLOBEX));
    assert_eq!(text(&mut c, "SELECT tenancy.org_id('globex', 'sam')").as_deref(), Some(GLOBEX));
    assert_eq!(text(&mut c, "SELECT tenancy.org_id('no-such-org')"), None);
    // Nothing else: no tenant rows, no writes.
    assert_eq!(count(&mut c, "app.projects"), 0);
    assert_eq!(text(&mut c, "SELECT tenancy.current_org()"), None);
    c.batch_execute("COMMIT; BEGIN; SELECT tenancy.set_user_context('alice')").unwrap();
    assert_eq!(text(&mut c, "SELECT tenancy.org_id('globex')"), None, "alice is not in globex");
    assert_eq!(text(&mut c, "SELECT tenancy.org_id('no-such-org')"), None);
    c.batch_execute("COMMIT").unwrap();
    // DBAs may ask about anyone.
    assert_eq!(
        text(&mut db.admin(), "SELECT string_agg(slug, ',' ORDER BY slug) FROM tenancy.user_organizations('gina')")
            .as_deref(),
        Some("globex")
    );
}

#[test]
fn hierarchical_roles_and_permissions_follow_the_member_role() {
    let db = TestDb::new();
    for (user, role, admin, perm) in [
        ("alice", "owner", true, true),
        ("bob", "admin", true, true),
        ("carol", "member", false, false),
        ("gus", "guest", false, false),
    ] {
        let mut c = db.app_in(ACME, user);
        assert_eq!(text(&mut c, "SELECT tenancy.current_member_role()").as_deref(), Some(role));
        assert_eq!(
            text(&mut c, "SELECT tenancy.has_role('admin')").as_deref(),
            Some(if admin { "true" } else { "false" })
        );
        assert_eq!(text(&mut c, "SELECT tenancy.has_role('guest')").as_deref(), Some("true"));
        assert_eq!(
            text(&mut c, "SELECT tenancy.has_permission('members.manage')").as_deref(),
            Some(if perm { "true" } else { "false" })
        );
    }
}

#[test]
fn the_python_example_sees_only_the_users_organization() {
    let db = TestDb::new();
    let python = repo_root().join("target/pyenv/bin/python");
    assert!(python.exists(), "run through `make test-e2e`, which creates target/pyenv");
    let run = |slug: &str, user: &str| {
        std::process::Command::new(&python)
            .arg(repo_root().join("examples/python_app.py"))
            .args([slug, user])
            .env("DATABASE_URL", app_url(&db.name))
            .output()
            .unwrap()
    };
    let ok = run("globex", "sam");
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "Globex launch\nafter commit: 0 rows visible\n");
    let refused = run("globex", "alice");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused: no organization 'globex' for 'alice'"));
}
