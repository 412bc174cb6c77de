//! Sharing rules on the example's shareable table `app.documents`: own rows, rows shared with the
//! current organization (read, write, reshare), public rows; who may share; what a grantee may
//! never do; and that shares follow the exact row they were made for.

use pg_tenancy_e2e::*;

const INITECH: &str = "c1000000-0000-0000-0000-000000000003";

/// A test database with a third organization, INITECH (owner ian).
fn db() -> TestDb {
    let db = TestDb::new();
    db.admin()
        .batch_execute(&format!("SELECT tenancy.create_organization('Initech', 'initech', 'ian', id => '{INITECH}')"))
        .unwrap();
    db
}

/// Runs `sql` in one committed transaction as `user` of `org`.
fn as_member(db: &TestDb, org: &str, user: &str, sql: &str) -> Result<(), DbError> {
    let mut c = db.app();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{org}', '{user}')")).unwrap();
    tx.batch_execute(sql).map_err(|e| DbError::of(&e))?;
    tx.commit().unwrap();
    Ok(())
}

fn share(db: &TestDb, org: &str, user: &str, doc: &str, to: &str, permissions: &str) -> Result<(), DbError> {
    as_member(db, org, user, &format!("SELECT tenancy.share('app.documents', '{doc}', '{to}', '{permissions}')"))
}

/// The titles of the documents `user` of `org` sees, sorted.
fn titles(db: &TestDb, org: &str, user: &str) -> Vec<String> {
    let mut c = db.app_in(org, user);
    c.query("SELECT title FROM app.documents ORDER BY title", &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

/// Rows affected by `sql` as `user` of `org`, rolled back; Err(SQLSTATE) when it fails.
fn attempt(db: &TestDb, org: &str, user: &str, sql: &str) -> Result<u64, String> {
    let mut c = db.app();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{org}', '{user}')")).unwrap();
    tx.execute(sql, &[]).map_err(|e| e.code().map(|c| c.code().to_string()).unwrap_or_default())
}

#[test]
fn an_org_sees_its_own_rows_public_rows_and_rows_shared_with_it() {
    let db = db();
    assert_eq!(titles(&db, ACME, "gus"), ["Acme handbook", "Acme plan"]);
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Globex plan"]);
    assert_eq!(titles(&db, INITECH, "ian"), ["Acme handbook"]);
    share(&db, ACME, "bob", ACME_DOC, GLOBEX, "{read}").unwrap();
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Acme plan", "Globex plan"]);
    assert_eq!(titles(&db, INITECH, "ian"), ["Acme handbook"], "a share is for one organization");
    // Without a context: nothing, public rows included.
    assert_eq!(count(&mut db.app(), "app.documents"), 0);
    // What the policies read: only the shares the current organization received.
    assert_eq!(count(&mut db.app_in(GLOBEX, "gina"), "tenancy.received_shares"), 1);
    assert_eq!(count(&mut db.app_in(INITECH, "ian"), "tenancy.received_shares"), 0);
    assert_eq!(count(&mut db.app_in(ACME, "alice"), "tenancy.received_shares"), 0);
    assert_eq!(count(&mut db.app(), "tenancy.received_shares"), 0);
    // The shared row reads like an own row, by id, for every member role of the grantee.
    let mut c = db.app_in(GLOBEX, "sam");
    assert_eq!(
        text(&mut c, &format!("SELECT title FROM app.documents WHERE id = '{ACME_DOC}'")).as_deref(),
        Some("Acme plan")
    );
}

#[test]
fn a_read_share_never_writes_and_no_grantee_deletes_or_writes_public_rows() {
    let db = db();
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read}").unwrap();
    for (doc, what) in [(ACME_DOC, "shared for reading"), (ACME_PUBLIC_DOC, "public")] {
        for sql in [
            format!("UPDATE app.documents SET title = 'mine' WHERE id = '{doc}'"),
            format!("DELETE FROM app.documents WHERE id = '{doc}'"),
        ] {
            assert_eq!(attempt(&db, GLOBEX, "gina", &sql), Ok(0), "{what}: {sql}");
        }
    }
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read,write}").unwrap();
    let delete = format!("DELETE FROM app.documents WHERE id = '{ACME_DOC}'");
    assert_eq!(attempt(&db, GLOBEX, "gina", &delete), Ok(0), "write never includes delete");
    assert_eq!(count(&mut db.admin(), "app.documents"), 3);
}

#[test]
fn a_write_share_edits_content_but_never_moves_renames_or_publishes_the_row() {
    let db = db();
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read,write}").unwrap();
    let edit = format!("UPDATE app.documents SET title = 'Acme plan (edited by Globex)' WHERE id = '{ACME_DOC}'");
    as_member(&db, GLOBEX, "gina", &edit).unwrap();
    assert_eq!(
        text(&mut db.admin(), &format!("SELECT title || ' @ ' || org_id FROM app.documents WHERE id = '{ACME_DOC}'")),
        Some(format!("Acme plan (edited by Globex) @ {ACME}"))
    );
    let steal = format!("UPDATE app.documents SET org_id = '{GLOBEX}' WHERE id = '{ACME_DOC}'");
    let e = as_member(&db, GLOBEX, "gina", &steal).unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("42501", "rows of shareable table app.documents cannot change their organization")
    );
    let rename = format!("UPDATE app.documents SET id = gen_random_uuid() WHERE id = '{ACME_DOC}'");
    let e = as_member(&db, GLOBEX, "gina", &rename).unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("42501", "rows of shareable table app.documents cannot change their id")
    );
    let publish = format!("UPDATE app.documents SET visibility = 'public' WHERE id = '{ACME_DOC}'");
    let e = as_member(&db, GLOBEX, "gina", &publish).unwrap_err();
    assert_eq!(e.code, "42501");
    assert_eq!(e.message, "only the organization that owns a row of app.documents may change its visibility");
    // The owner still may; and a member below the table's update role may not, even when shared.
    as_member(&db, ACME, "carol", &publish).unwrap();
    let guest_edit = format!("UPDATE app.documents SET title = 'guest' WHERE id = '{ACME_DOC}'");
    assert_eq!(attempt(&db, ACME, "gus", &guest_edit), Err("42501".into()));
    // A guest of the grantee is a guest there too: sam is an admin of GLOBEX, so he may edit.
    assert_eq!(attempt(&db, GLOBEX, "sam", &edit), Ok(1));
}

#[test]
fn only_admins_or_holders_of_the_share_permission_share() {
    let db = db();
    let e = share(&db, ACME, "carol", ACME_DOC, GLOBEX, "{read}").unwrap_err();
    assert_eq!(e.code, "42501");
    assert_eq!(e.message, "permission denied to share rows of app.documents");
    assert_eq!(e.detail.as_deref(), Some("Sharing needs the admin role or the documents.share permission."));
    db.admin()
        .batch_execute(
            "UPDATE tenancy.roles SET permissions = permissions || '{documents.share}' WHERE name = 'member'",
        )
        .unwrap();
    share(&db, ACME, "carol", ACME_DOC, GLOBEX, "{read}").unwrap();
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Acme plan", "Globex plan"]);
}

#[test]
fn a_grantee_reshares_only_when_allowed_and_never_more_than_it_was_given() {
    let db = db();
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read}").unwrap();
    let e = share(&db, GLOBEX, "gina", ACME_DOC, INITECH, "{read}").unwrap_err();
    assert_eq!(e.code, "42501");
    assert_eq!(e.detail.as_deref(), Some("It was shared with your organization without the reshare permission."));
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read,reshare}").unwrap();
    let e = share(&db, GLOBEX, "gina", ACME_DOC, INITECH, "{read,write}").unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("42501", format!("permission denied to grant write on row {ACME_DOC} of app.documents").as_str())
    );
    share(&db, GLOBEX, "gina", ACME_DOC, INITECH, "{read}").unwrap();
    assert_eq!(titles(&db, INITECH, "ian"), ["Acme handbook", "Acme plan"]);
    // The owner sees every share of its row; the others, the shares that concern them.
    let shares = |org: &str, user: &str| {
        let mut c = db.app_in(org, user);
        c.query(
            "SELECT org_id::text, array_to_string(permissions, ',') FROM tenancy.shares_of('app.documents') ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect::<Vec<_>>()
    };
    let both = vec![(GLOBEX.to_string(), "read,reshare".to_string()), (INITECH.to_string(), "read".to_string())];
    assert_eq!(shares(ACME, "alice"), both);
    assert_eq!(shares(GLOBEX, "gina"), both);
    assert_eq!(shares(INITECH, "ian"), vec![(INITECH.to_string(), "read".to_string())]);
    // Taking the reshare right away ends what GLOBEX passed on.
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read}").unwrap();
    assert_eq!(titles(&db, INITECH, "ian"), ["Acme handbook"]);
}

#[test]
fn unsharing_ends_access_and_every_share_passed_on() {
    let db = db();
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read,reshare}").unwrap();
    share(&db, GLOBEX, "gina", ACME_DOC, INITECH, "{read}").unwrap();
    let unshare = |org: &str, user: &str, to: &str| -> Option<String> {
        let mut c = db.app_in(org, user);
        text(&mut c, &format!("tenancy.unshare('app.documents', '{ACME_DOC}'::uuid, '{to}')"))
    };
    assert_eq!(unshare(INITECH, "ian", INITECH), Some("false".into()), "a grantee ends only shares it granted");
    assert_eq!(unshare(ACME, "alice", GLOBEX), Some("true".into()));
    assert_eq!(unshare(ACME, "alice", GLOBEX), Some("false".into()));
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Globex plan"]);
    assert_eq!(titles(&db, INITECH, "ian"), ["Acme handbook"]);
    assert_eq!(count(&mut db.admin(), "tenancy.shares"), 0);
}

#[test]
fn another_orgs_row_and_a_missing_row_are_refused_identically() {
    let db = db();
    let other = share(&db, ACME, "alice", GLOBEX_DOC, INITECH, "{read}").unwrap_err();
    let missing = share(&db, ACME, "alice", "d9000000-0000-0000-0000-000000000009", INITECH, "{read}").unwrap_err();
    assert_eq!(other.code, "P0002");
    assert_eq!(other.message, format!("row {GLOBEX_DOC} of app.documents does not exist"));
    assert_eq!(missing.message, "row d9000000-0000-0000-0000-000000000009 of app.documents does not exist");
    assert_eq!((other.detail, other.hint), (missing.detail, missing.hint));
    // A public row is readable, not the public's to share.
    let e = share(&db, GLOBEX, "gina", ACME_PUBLIC_DOC, INITECH, "{read}").unwrap_err();
    assert_eq!(e.code, "P0002");
}

#[test]
fn bad_share_calls_get_clear_errors() {
    let db = db();
    let cases: [(&str, &str, &str); 7] = [
        (&format!("'app.documents', '{ACME_DOC}', NULL"), "22023", "invalid argument: org_id must not be null"),
        (&format!("'app.documents', NULL, '{GLOBEX}'"), "22023", "invalid argument: row_id must not be null"),
        (
            &format!("'app.documents', '{ACME_DOC}', '{GLOBEX}', '{{read,admin}}'"),
            "22023",
            "unknown share permission \"admin\"",
        ),
        (
            &format!("'app.documents', '{ACME_DOC}', '{GLOBEX}', '{{}}'"),
            "22023",
            "invalid argument: permissions must not be null or empty",
        ),
        (
            &format!("'app.documents', '{ACME_DOC}', '{ACME}'"),
            "22023",
            &format!("row {ACME_DOC} of app.documents cannot be shared with the organization that owns it"),
        ),
        (&format!("'app.projects', '{ACME_DOC}', '{GLOBEX}'"), "42809", "table app.projects is not shareable"),
        (
            &format!("'app.documents', 'not-a-uuid', '{GLOBEX}'"),
            "22P02",
            "invalid input syntax for type uuid: \"not-a-uuid\"",
        ),
    ];
    for (args, code, message) in cases {
        let e = as_member(&db, ACME, "alice", &format!("SELECT tenancy.share({args})")).unwrap_err();
        assert_eq!((e.code.as_str(), e.message.as_str()), (code, message), "share({args})");
    }
    let e = error_of(&mut db.app(), &format!("SELECT tenancy.share('app.documents', '{ACME_DOC}', '{GLOBEX}')"));
    assert_eq!((e.code.as_str(), e.message.as_str()), ("42501", "no tenant context"));
    assert_eq!(e.detail.as_deref(), Some("sharing a row requires a tenant context, and none is set."));
    let e = error_of(&mut db.app(), &format!("SELECT tenancy.unshare('app.documents', '{ACME_DOC}', '{GLOBEX}')"));
    assert_eq!(e.detail.as_deref(), Some("unsharing a row requires a tenant context, and none is set."));
    let e = as_member(&db, ACME, "alice", &format!("SELECT tenancy.unshare('app.documents', '{ACME_DOC}', NULL)"))
        .unwrap_err();
    assert_eq!((e.code.as_str(), e.message.as_str()), ("22023", "invalid argument: org_id must not be null"));
    let e =
        as_member(&db, ACME, "carol", &format!("SELECT tenancy.unshare('app.documents', '{ACME_DOC}', '{GLOBEX}')"))
            .unwrap_err();
    assert_eq!((e.code.as_str(), e.message.as_str()), ("42501", "permission denied to unshare rows of app.documents"));
    assert_eq!(count(&mut db.admin(), "tenancy.shares"), 0);
    // Nobody writes the shares directly.
    let e =
        as_member(&db, ACME, "alice", &format!("DELETE FROM tenancy.shares WHERE owner_org = '{ACME}'")).unwrap_err();
    assert_eq!(e.code, "42501");
}

#[test]
fn a_share_follows_its_exact_row_not_an_id_another_org_reuses() {
    let db = db();
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read,write}").unwrap();
    // INITECH writes a row with the same id: GLOBEX must not see or write it.
    as_member(
        &db,
        INITECH,
        "ian",
        &format!("INSERT INTO app.documents (id, title) VALUES ('{ACME_DOC}', 'Initech copy')"),
    )
    .unwrap();
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Acme plan", "Globex plan"]);
    assert_eq!(
        attempt(&db, GLOBEX, "gina", &format!("UPDATE app.documents SET body = 'x' WHERE id = '{ACME_DOC}'")),
        Ok(1)
    );
    // Deleting the row deletes its shares: a new row with its id is not shared.
    as_member(&db, ACME, "alice", &format!("DELETE FROM app.documents WHERE id = '{ACME_DOC}'")).unwrap();
    assert_eq!(count(&mut db.admin(), "tenancy.shares"), 0);
    as_member(&db, ACME, "alice", &format!("INSERT INTO app.documents (id, title) VALUES ('{ACME_DOC}', 'Acme new')"))
        .unwrap();
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Globex plan"]);
}

#[test]
fn the_shared_and_public_arms_are_index_backed() {
    let db = db();
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read}").unwrap();
    let mut c = db.explaining_in(GLOBEX, "gina");
    c.batch_execute("SET enable_seqscan = off").unwrap();
    let plan: Vec<String> = c
        .query("EXPLAIN (COSTS OFF) SELECT * FROM app.documents ORDER BY created_at DESC LIMIT 20", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    for index in ["documents_org_id_created_at_idx", "documents_public_idx", "documents_id_idx"] {
        assert!(plan.contains(index), "{index} not used:\n{plan}");
    }
    assert!(!plan.contains("Seq Scan on documents"), "{plan}");
}

#[test]
fn a_row_is_found_by_any_spelling_of_its_id_and_the_own_row_wins_over_a_namesake() {
    let db = db();
    // INITECH has a row with the same id as ACME's: ACME shares its own row.
    as_member(
        &db,
        INITECH,
        "ian",
        &format!("INSERT INTO app.documents (id, title) VALUES ('{ACME_DOC}', 'Initech copy')"),
    )
    .unwrap();
    share(&db, ACME, "alice", &ACME_DOC.to_uppercase(), GLOBEX, "{read}").unwrap();
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Acme plan", "Globex plan"]);
    let mut c = db.app_in(ACME, "alice");
    let spelled = format!("{{{}}}", ACME_DOC.to_uppercase());
    assert_eq!(count(&mut c, &format!("tenancy.shares_of('app.documents', '{spelled}')")), 1);
    assert_eq!(
        text(&mut c, &format!("tenancy.unshare('app.documents', '{spelled}', '{GLOBEX}')")).as_deref(),
        Some("true")
    );
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Globex plan"]);
}

#[test]
fn the_enable_functions_name_what_is_wrong() {
    let db = db();
    let mut admin = db.admin();
    let cases = [
        (
            "SELECT tenancy.enable_sharing('app.tasks', visibility_column => 'done')",
            "42703",
            "table app.tasks has no text column \"done\"",
        ),
        (
            "SELECT tenancy.enable_sharing('app.tasks', id_column => 'nope')",
            "42703",
            "table app.tasks has no column \"nope\"",
        ),
        (
            "SELECT tenancy.enable_quota('projects', 'app.countries')",
            "42703",
            "table app.countries has no uuid, text or integer column \"org_id\"",
        ),
        (
            "SELECT tenancy.enable_usage('bandwidth_bytes', 'app.files', amount_column => 'name')",
            "42703",
            "table app.files has no integer column \"name\"",
        ),
        ("SELECT tenancy.enable_usage('projects', 'app.files')", "22023", "unknown metric \"projects\""),
        ("SELECT tenancy.disable_sharing(NULL)", "22023", "invalid argument: relation must not be null"),
        ("SELECT tenancy.keep_quotas(NULL)", "22023", "invalid argument: relation and keep must not be null"),
        (
            "SELECT tenancy.keep_quotas('app.projects', NULL)",
            "22023",
            "invalid argument: relation and keep must not be null",
        ),
    ];
    for (sql, code, message) in cases {
        let e = error_of(&mut admin, sql);
        assert_eq!((e.code.as_str(), e.message.as_str()), (code, message), "{sql}");
    }
    // Only superusers call them: the application role, and members of tenancy_admin (who manage
    // organizations, not schemas), get a plain permission error naming the function.
    let e = as_member(&db, ACME, "alice", "SELECT tenancy.enable_sharing('app.tasks')").unwrap_err();
    assert_eq!(e.code, "42501");
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE schema_helper LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT tenancy_admin TO schema_helper;
             GRANT USAGE ON SCHEMA app TO schema_helper;",
        )
        .unwrap();
    let mut helper = db.connect_as("schema_helper");
    for (function, sql) in [
        ("enable_sharing", "SELECT tenancy.enable_sharing('app.tasks')"),
        ("disable_sharing", "SELECT tenancy.disable_sharing('app.documents')"),
        ("enable_quota", "SELECT tenancy.enable_quota('projects', 'app.projects')"),
        ("enable_usage", "SELECT tenancy.enable_usage('bandwidth_bytes', 'app.files', amount_column => 'size_bytes')"),
    ] {
        let e = error_of(&mut helper, sql);
        assert_eq!(e.code, "42501", "{sql}");
        assert_eq!(e.message, format!("permission denied for function {function}"), "{sql}");
    }
}

#[test]
fn a_table_made_unshareable_loses_its_shares_and_sharing_again_brings_none_back() {
    let db = db();
    share(&db, ACME, "bob", ACME_DOC, GLOBEX, "{read}").unwrap();
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Acme plan", "Globex plan"]);
    let shareable = "kind = \"shareable\"\nvisibility_column = \"visibility\"   # 'public' rows are readable by every organization\nshare_permission = \"documents.share\"\n";
    let policy = example_policy();
    assert!(policy.contains(shareable), "policies/app.toml changed: update this test");
    apply_policy(&db, &policy.replace(shareable, "kind = \"tenant\"\n"));
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Globex plan"], "a tenant table: own rows only");
    let mut admin = db.admin();
    assert_eq!(count(&mut admin, "tenancy.shares"), 0, "the shares went with the sharing");
    assert_eq!(count(&mut admin, "tenancy.shareable_tables"), 0);
    assert_eq!(
        count(&mut admin, "pg_trigger WHERE tgrelid = 'app.documents'::regclass AND tgname LIKE 'tenancy_%shar%'"),
        0,
        "the sharing triggers went too"
    );
    // Shared again: public rows are back, the old grant is not.
    apply_policy(&db, &policy);
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Globex plan"]);
    assert_eq!(
        text(&mut admin, "SELECT tenancy.disable_sharing('app.tasks')::text").as_deref(),
        Some("false"),
        "nothing to undo on a table that was never shareable"
    );
}

#[test]
fn rows_with_integer_ids_are_shared_too() {
    let db = db();
    db.admin()
        .batch_execute(
            "CREATE TABLE app.notes (
                 org_id uuid NOT NULL REFERENCES tenancy.organizations (id),
                 id bigint GENERATED ALWAYS AS IDENTITY,
                 body text NOT NULL,
                 PRIMARY KEY (org_id, id))",
        )
        .unwrap();
    apply_policy(&db, &(example_policy() + "\n[tables.notes]\nkind = \"shareable\"\n"));
    as_member(&db, ACME, "alice", "INSERT INTO app.notes (body) VALUES ('first'), ('second')").unwrap();
    let id: i64 = db.app_in(ACME, "alice").query_one("SELECT max(id) FROM app.notes", &[]).unwrap().get(0);
    as_member(&db, ACME, "alice", &format!("SELECT tenancy.share('app.notes', {id}::bigint, '{GLOBEX}')")).unwrap();
    let mut c = db.app_in(GLOBEX, "gina");
    let bodies: Vec<String> = c.query("SELECT body FROM app.notes", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(bodies, ["second"]);
    assert_eq!(count(&mut c, &format!("tenancy.shares_of('app.notes', {id})")), 1);
}

#[test]
fn public_rows_under_a_role_check_need_the_role_and_a_context() {
    let db = db();
    let policy = example_policy();
    let shareable = "share_permission = \"documents.share\"\n";
    assert!(policy.contains(shareable), "policies/app.toml changed: update this test");
    apply_policy(&db, &policy.replacen(shareable, &format!("{shareable}select = \"member\"\n"), 1));
    assert_eq!(titles(&db, INITECH, "ian"), ["Acme handbook"], "a member of another org reads the public row");
    assert_eq!(titles(&db, GLOBEX, "gina"), ["Acme handbook", "Globex plan"]);
    assert!(titles(&db, ACME, "gus").is_empty(), "a guest, below the rule's role, reads nothing, public rows included");
    assert_eq!(count(&mut db.app(), "app.documents"), 0, "without a context: nothing, public rows included");
}

/// While GLOBEX passes ACME's document on to INITECH (an open transaction), ACME ends GLOBEX's
/// share: ACME does not wait for GLOBEX, and GLOBEX's reshare fails when it commits. No
/// revocation is lost, and a grantee cannot keep the owner from revoking or deleting.
#[test]
fn a_reshare_in_progress_fails_when_its_share_is_revoked_meanwhile() {
    let db = db();
    for revoke in [
        format!("SELECT tenancy.unshare('app.documents', '{ACME_DOC}', '{GLOBEX}')"),
        format!("SELECT tenancy.share('app.documents', '{ACME_DOC}', '{GLOBEX}', '{{read}}')"),
        format!("DELETE FROM app.documents WHERE id = '{ACME_DOC}'"),
    ] {
        let mut admin = db.admin();
        admin.batch_execute("DELETE FROM tenancy.shares").unwrap();
        share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read,reshare}").unwrap();
        let mut resharing = db.app();
        resharing
            .batch_execute(&format!(
                "BEGIN; SELECT tenancy.set_context('{GLOBEX}', 'gina');
                 SELECT tenancy.share('app.documents', '{ACME_DOC}', '{INITECH}', '{{read}}');"
            ))
            .unwrap();
        // The owner is not kept waiting by the grantee's open transaction (it would time out).
        let mut owner = db.app_in(ACME, "alice");
        owner.batch_execute("SET lock_timeout = '5s'").unwrap();
        owner.batch_execute(&revoke).unwrap_or_else(|e| panic!("{revoke}: {}", DbError::of(&e).message));
        let e = match resharing.batch_execute("COMMIT") {
            Ok(()) => panic!("the reshare committed after {revoke}"),
            Err(e) => DbError::of(&e),
        };
        assert_eq!(e.code, "40001", "{revoke}: {}", e.message);
        assert_eq!(e.hint.as_deref(), Some("Retry the transaction."));
        assert_eq!(titles(&db, INITECH, "ian"), ["Acme handbook"], "{revoke}");
        assert_eq!(count(&mut admin, &format!("tenancy.shares WHERE grantee_org = '{INITECH}'")), 0, "{revoke}");
        admin
            .batch_execute(&format!(
                "INSERT INTO app.documents (id, org_id, title, visibility, created_by)
                 VALUES ('{ACME_DOC}', '{ACME}', 'Acme plan', 'private', 'seed') ON CONFLICT DO NOTHING"
            ))
            .unwrap();
    }
}

/// A grantee's write through a share, still open when the owner revokes the share, does not
/// commit after the revocation; the owner is not kept waiting.
#[test]
fn a_write_in_progress_fails_when_its_share_is_revoked_meanwhile() {
    let db = db();
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read,write}").unwrap();
    let mut writing = db.app();
    writing
        .batch_execute(&format!(
            "BEGIN; SELECT tenancy.set_context('{GLOBEX}', 'gina');
             UPDATE app.documents SET title = 'written by globex' WHERE id = '{ACME_DOC}';"
        ))
        .unwrap();
    let mut owner = db.app_in(ACME, "alice");
    owner.batch_execute("SET lock_timeout = '5s'").unwrap();
    owner.batch_execute(&format!("SELECT tenancy.unshare('app.documents', '{ACME_DOC}', '{GLOBEX}')")).unwrap();
    let e = match writing.batch_execute("COMMIT") {
        Ok(()) => panic!("the write committed after the share ended"),
        Err(e) => DbError::of(&e),
    };
    assert_eq!(e.code, "40001", "{}", e.message);
    assert_eq!(
        text(&mut db.admin(), &format!("SELECT title FROM app.documents WHERE id = '{ACME_DOC}'")).as_deref(),
        Some("Acme plan")
    );
    // While the share holds, the write commits.
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read,write}").unwrap();
    writing
        .batch_execute(&format!(
            "BEGIN; SELECT tenancy.set_context('{GLOBEX}', 'gina');
             UPDATE app.documents SET title = 'written by globex' WHERE id = '{ACME_DOC}'; COMMIT;"
        ))
        .unwrap();
}

/// An owner in a REPEATABLE READ transaction, whose snapshot predates a reshare, still takes the
/// reshare away when it ends the share passed on.
#[test]
fn unshare_in_repeatable_read_reaches_reshares_committed_since() {
    let db = db();
    share(&db, ACME, "alice", ACME_DOC, GLOBEX, "{read,reshare}").unwrap();
    let mut owner = db.app();
    owner
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT tenancy.set_context('{ACME}', 'alice'); SELECT count(*) FROM app.documents;"
        ))
        .unwrap();
    share(&db, GLOBEX, "gina", ACME_DOC, INITECH, "{read}").unwrap();
    assert_eq!(titles(&db, INITECH, "ian"), ["Acme handbook", "Acme plan"]);
    owner
        .batch_execute(&format!("SELECT tenancy.unshare('app.documents', '{ACME_DOC}', '{GLOBEX}'); COMMIT;"))
        .unwrap();
    assert_eq!(titles(&db, INITECH, "ian"), ["Acme handbook"]);
    assert_eq!(count(&mut db.admin(), "tenancy.shares"), 0);
}
