//! Adopting an existing application's schema as it is: random uuid primary keys, one-column
//! foreign keys between tenant tables, keys declared globally unique on purpose. Every attack
//! runs as the application role.

use pg_tenancy_e2e::*;

/// A schema the way Rails or Prisma write it: `id uuid PRIMARY KEY DEFAULT gen_random_uuid()`,
/// foreign keys on the id alone (one of them nullable, one `ON DELETE SET NULL`), an API key
/// table whose digest is unique across organizations, `timestamp(6)` columns.
const SCHEMA: &str = "
CREATE SCHEMA crm;
CREATE TABLE crm.customers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL,
    name text NOT NULL,
    created_at timestamp(6) without time zone NOT NULL DEFAULT now()
);
CREATE TABLE crm.deals (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL,
    customer_id uuid NOT NULL REFERENCES crm.customers (id),
    referrer_id uuid REFERENCES crm.customers (id) ON DELETE SET NULL,
    title text NOT NULL
);
CREATE INDEX ON crm.deals (customer_id);
CREATE INDEX ON crm.deals (referrer_id);
CREATE TABLE crm.api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL,
    token_digest text NOT NULL UNIQUE
);
CREATE TABLE crm.customer_tags (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL,
    customer_id uuid NOT NULL REFERENCES crm.customers (id),
    tag text NOT NULL
);
CREATE UNIQUE INDEX customer_tags_once ON crm.customer_tags (customer_id, tag) WHERE tag <> '';
GRANT USAGE ON SCHEMA crm TO app_user, app_readonly;
";

/// The example's policy file, governing `crm` too.
fn policy() -> String {
    example_policy().replace("schemas = [\"app\"]", "schemas = [\"app\", \"crm\"]")
        + r#"
[tables.customers]
kind = "tenant"

[tables.deals]
kind = "tenant"

[tables.customer_tags]
kind = "tenant"

[tables.api_keys]
kind = "tenant"
globally_unique = { token_digest = "API keys are looked up before the tenant is known" }

[lookups]
api_key = { table = "api_keys", key = "token_digest" }
"#
}

const ACME_CUSTOMER: &str = "c1000000-0000-0000-0000-000000000001";
const GLOBEX_CUSTOMER: &str = "c2000000-0000-0000-0000-000000000001";
const MISSING: &str = "c9000000-0000-0000-0000-000000000009";

fn adopted() -> TestDb {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(SCHEMA).unwrap();
    admin
        .batch_execute(&format!(
            "INSERT INTO crm.customers (id, org_id, name) VALUES ('{ACME_CUSTOMER}', '{ACME}', 'Acme customer'),
                                                                ('{GLOBEX_CUSTOMER}', '{GLOBEX}', 'Globex customer');"
        ))
        .unwrap();
    apply_policy(&db, &policy());
    db
}

#[test]
fn random_uuid_keys_and_one_column_foreign_keys_compile_without_schema_changes() {
    let db = adopted();
    let mut admin = db.admin();
    let rls = text(&mut admin, "SELECT string_agg(relname || ':' || relrowsecurity || relforcerowsecurity, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'crm'::regnamespace AND relkind = 'r'");
    assert_eq!(rls.as_deref(), Some("api_keys:truetrue,customer_tags:truetrue,customers:truetrue,deals:truetrue"));
    // The keys are as the application wrote them.
    let keys = text(
        &mut admin,
        "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'crm'::regnamespace",
    );
    assert_eq!(keys.as_deref(), Some("api_keys_pkey,api_keys_token_digest_key,customer_tags_customer_id_fkey,customer_tags_pkey,customers_pkey,deals_customer_id_fkey,deals_pkey,deals_referrer_id_fkey"));
    // lint agrees: the foreign keys are checked by the policies, the random ids are safe, and the
    // key declared globally unique is shown as waived, with the reason apply recorded.
    let options = pg_tenancy_compiler::lint::Options {
        schemas: vec!["crm".into()],
        tenant_column: "org_id".into(),
        app_roles: vec![],
    };
    let (findings, _) = pg_tenancy_compiler::lint::lint(&mut admin, &options).unwrap();
    let found: Vec<(&str, &str)> = findings.iter().map(|f| (f.rule, f.object.as_str())).collect();
    assert_eq!(found, vec![("unique-waived", "index api_keys_token_digest_key on crm.api_keys")], "{findings:#?}");
    assert!(findings[0].message.contains("looked up before the tenant is known"), "{}", findings[0].message);
    // verify proves it: no row of either organization reaches the other.
    tenancy(&["verify", "--database-url", &admin_url(&db.name), "--schema", "crm"]).expect("verify finds no leak");
}

#[test]
fn a_row_cannot_point_at_another_organizations_row_and_the_refusal_reveals_nothing() {
    let db = adopted();
    let mut c = db.app();
    let insert = |c: &mut postgres::Client, customer: &str, referrer: &str| {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
        let r = tx
            .batch_execute(&format!(
                "INSERT INTO crm.deals (customer_id, referrer_id, title) VALUES ('{customer}', {referrer}, 'x')"
            ))
            .map_err(|e| DbError::of(&e));
        if r.is_ok() {
            tx.commit().unwrap();
        }
        r
    };
    insert(&mut c, ACME_CUSTOMER, "NULL").expect("an own customer, no referrer");
    insert(&mut c, ACME_CUSTOMER, &format!("'{ACME_CUSTOMER}'")).expect("an own referrer");
    let foreign = insert(&mut c, GLOBEX_CUSTOMER, "NULL").unwrap_err();
    let missing = insert(&mut c, MISSING, "NULL").unwrap_err();
    assert_eq!(foreign.code, "42501", "{}", foreign.message);
    assert_eq!((foreign.code.as_str(), foreign.message.as_str()), (missing.code.as_str(), missing.message.as_str()));
    let foreign_referrer = insert(&mut c, ACME_CUSTOMER, &format!("'{GLOBEX_CUSTOMER}'")).unwrap_err();
    assert_eq!(foreign_referrer.code, "42501");
    // Moving an own row to point at another organization is refused the same way.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
    let moved = tx
        .batch_execute(&format!("UPDATE crm.deals SET customer_id = '{GLOBEX_CUSTOMER}'"))
        .map_err(|e| DbError::of(&e));
    assert_eq!(moved.unwrap_err().code, "42501");
    drop(tx);
    assert_eq!(
        count(
            &mut db.admin(),
            &format!("crm.deals WHERE customer_id = '{GLOBEX_CUSTOMER}' OR referrer_id = '{GLOBEX_CUSTOMER}'")
        ),
        0
    );
}

#[test]
fn a_random_uuid_primary_key_reveals_nothing_and_other_keys_stay_apart() {
    let db = adopted();
    let mut c = db.app();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
    // The application's own rows get ids from the server, and read back only their own.
    tx.batch_execute("INSERT INTO crm.customers (name) VALUES ('new')").unwrap();
    assert_eq!(count(&mut tx, "crm.customers"), 2);
    tx.commit().unwrap();
}

#[test]
fn a_unique_key_on_a_reference_inside_the_organization_reveals_nothing() {
    let db = adopted();
    db.admin()
        .batch_execute(&format!(
            "INSERT INTO crm.customer_tags (org_id, customer_id, tag) VALUES ('{GLOBEX}', '{GLOBEX_CUSTOMER}', 'vip')"
        ))
        .unwrap();
    // (customer_id, tag) has no tenant column, yet a conflict would need another organization's
    // customer, which the policies refuse first, exactly as a missing one.
    let insert = |customer: &str| {
        let mut c = db.app();
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
        let e = error_of(
            &mut tx,
            &format!("INSERT INTO crm.customer_tags (customer_id, tag) VALUES ('{customer}', 'vip')"),
        );
        (e.code, e.message)
    };
    let (taken, missing) = (insert(GLOBEX_CUSTOMER), insert(MISSING));
    assert_eq!(taken.0, "42501", "{}", taken.1);
    assert_eq!(taken, missing, "another organization's tagged customer looks like a missing one");
    let mut c = db.app();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!(
        "SELECT tenancy.set_context('{ACME}', 'alice');
         INSERT INTO crm.customer_tags (customer_id, tag) VALUES ('{ACME_CUSTOMER}', 'vip');"
    ))
    .expect("the same tag on the organization's own customer");
    let e = error_of(
        &mut tx,
        &format!("INSERT INTO crm.customer_tags (customer_id, tag) VALUES ('{ACME_CUSTOMER}', 'vip')"),
    );
    assert_eq!(e.code, "23505", "the key still holds inside the organization: {}", e.message);
}

#[test]
fn a_reference_scopes_a_key_only_when_no_two_organizations_can_share_its_values() {
    // NULLS NOT DISTINCT on a nullable reference: two organizations' NULLs would conflict.
    let db = TestDb::new();
    db.admin()
        .batch_execute(
            "CREATE TABLE app.labels (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL,
                                      project_id uuid, name text NOT NULL,
                                      FOREIGN KEY (org_id, project_id) REFERENCES app.projects (org_id, id));
             CREATE UNIQUE INDEX labels_once ON app.labels (project_id, name) NULLS NOT DISTINCT;",
        )
        .unwrap();
    let failure = try_apply_policy(&db, &(example_policy() + "\n[tables.labels]\nkind = \"tenant\"\n")).unwrap_err();
    assert_eq!(failure.diagnostic_codes(), vec!["tenancy::unique-not-tenant-scoped"]);
    // With NULLs distinct, the composite reference scopes it.
    db.admin()
        .batch_execute("DROP INDEX app.labels_once; CREATE UNIQUE INDEX labels_once ON app.labels (project_id, name)")
        .unwrap();
    apply_policy(&db, &(example_policy() + "\n[tables.labels]\nkind = \"tenant\"\n"));
}

/// An application with its own organizations and memberships tables: integer role enum,
/// invitations that are not memberships until accepted, soft-deleted organizations, user ids
/// that are bigints, slugs that tenancy would not accept.
const SAAS: &str = "
CREATE SCHEMA saas;
CREATE TABLE saas.organizations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    slug text,
    deleted_at timestamp(6) without time zone
);
CREATE TABLE saas.memberships (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES saas.organizations (id) ON DELETE CASCADE,
    user_id bigint NOT NULL,
    role smallint NOT NULL,       -- Django: PositiveSmallIntegerField choices
    accepted_at timestamp(6) without time zone
);
CREATE INDEX ON saas.memberships (organization_id);
GRANT USAGE ON SCHEMA saas TO app_user, app_readonly;
INSERT INTO saas.organizations (id, name, slug) VALUES
    ('5a000000-0000-0000-0000-000000000001', 'Saas One', 'saas-one'),
    ('5b000000-0000-0000-0000-000000000002', 'Saas Two', 'Not A Slug!');
INSERT INTO saas.memberships (organization_id, user_id, role, accepted_at) VALUES
    ('5a000000-0000-0000-0000-000000000001', 1, 2, now()),
    ('5a000000-0000-0000-0000-000000000001', 2, 0, now()),
    ('5a000000-0000-0000-0000-000000000001', 3, 1, NULL),
    ('5b000000-0000-0000-0000-000000000002', 4, 2, now());
";
const ONE: &str = "5a000000-0000-0000-0000-000000000001";
const TWO: &str = "5b000000-0000-0000-0000-000000000002";

fn saas_policy() -> String {
    example_policy().replace("schemas = [\"app\"]", "schemas = [\"app\", \"saas\"]")
        + r#"
[tables.organizations]
kind = "tenant"
tenant_column = "id"
insert = "none"
update = "admin"
delete = "owner"

[tables.memberships]
kind = "tenant"
tenant_column = "organization_id"
insert = "admin"
update = "admin"
delete = "admin"

[organizations]
table = "organizations"
slug = "slug"
active = "deleted_at IS NULL"

[memberships]
table = "memberships"
organization = "organization_id"
user = "user_id"
role = "role"
roles = { "0" = "member", "1" = "admin", "2" = "owner" }
active = "accepted_at IS NOT NULL"
"#
}

fn members(c: &mut postgres::Client) -> String {
    text(c, "SELECT string_agg(substr(org_id::text, 1, 2) || ':' || user_id || ':' || role, ',' ORDER BY org_id, user_id) FROM tenancy.members WHERE org_id IN (SELECT id FROM saas.organizations UNION SELECT '5b000000-0000-0000-0000-000000000002')")
        .unwrap_or_default()
}

fn in_context(c: &mut postgres::Client, org: &str, user: &str, sql: &str) -> Result<(), DbError> {
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{org}', '{user}')")).map_err(|e| DbError::of(&e))?;
    tx.batch_execute(sql).map_err(|e| DbError::of(&e))?;
    tx.commit().map_err(|e| DbError::of(&e))
}

#[test]
fn the_applications_own_organizations_and_memberships_are_kept_in_sync() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(SAAS).unwrap();
    apply_policy(&db, &saas_policy());
    // The backfill: the application's ids, its slug where tenancy accepts it, accepted members.
    let orgs = text(&mut admin, &format!("SELECT string_agg(slug || ':' || name || ':' || status, ',' ORDER BY id) FROM tenancy.organizations WHERE id IN ('{ONE}', '{TWO}')"));
    assert_eq!(orgs.as_deref(), Some("saas-one:Saas One:active,org-5b000000000000000000000000000002:Saas Two:active"));
    assert_eq!(members(&mut admin), "5a:1:owner,5a:2:member,5b:4:owner");
    // Applying again changes nothing.
    let policies = {
        let dir = std::env::temp_dir().join(format!("tenancy-saas-{}-{}", std::process::id(), db.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("app.toml"), saas_policy()).unwrap();
        pg_tenancy_compiler::cli::PolicyArgs {
            policies: vec![dir.join("app.toml")],
            format: pg_tenancy_compiler::cli::Format::Human,
        }
    };
    let (_, planned) = pg_tenancy_compiler::cli::plan_in(&policies, &admin_url(&db.name), false).unwrap();
    assert_eq!(pg_tenancy_compiler::plan::changes(&planned), 0, "{}", pg_tenancy_compiler::emit::render(&planned));

    // Every existing member can start a context at once, and sees only its organization.
    let mut c = db.app();
    in_context(&mut c, ONE, "1", "SELECT 1").expect("an existing owner");
    let invited = in_context(&mut c, ONE, "3", "SELECT 1").unwrap_err();
    assert_eq!(invited.code, "42501", "an invitation not accepted is no membership");
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ONE}', '1')")).unwrap();
    assert_eq!(count(&mut tx, "saas.organizations"), 1);
    assert_eq!(count(&mut tx, "saas.memberships"), 3);
    drop(tx);

    // The owner accepts an invitation and adds an admin: both become members.
    in_context(&mut c, ONE, "1", "UPDATE saas.memberships SET accepted_at = now() WHERE user_id = 3").unwrap();
    in_context(
        &mut c,
        ONE,
        "1",
        &format!(
            "INSERT INTO saas.memberships (organization_id, user_id, role, accepted_at) VALUES ('{ONE}', 5, 1, now())"
        ),
    )
    .unwrap();
    assert_eq!(members(&mut admin), "5a:1:owner,5a:2:member,5a:3:admin,5a:5:admin,5b:4:owner");
    // A member cannot make themselves an owner; an admin cannot make an owner: the rights of
    // tenancy.update_member() apply to the application's table too.
    let own = in_context(&mut c, ONE, "2", "UPDATE saas.memberships SET role = 2 WHERE user_id = 2").unwrap_err();
    assert_eq!(own.code, "42501", "{}", own.message);
    let by_admin = in_context(&mut c, ONE, "5", "UPDATE saas.memberships SET role = 2 WHERE user_id = 2").unwrap_err();
    assert_eq!(by_admin.code, "42501", "{}", by_admin.message);
    let last_owner = in_context(&mut c, ONE, "1", "DELETE FROM saas.memberships WHERE user_id = 1").unwrap_err();
    assert_eq!(last_owner.code, "55000", "the last owner stays: {}", last_owner.message);
    assert_eq!(members(&mut admin), "5a:1:owner,5a:2:member,5a:3:admin,5a:5:admin,5b:4:owner");
    // The sync's helpers are no way around it: the direct ones are the table owner's and the
    // DBAs', the checked one writes only the context's own organization, as its admin.
    for helper in [
        format!("SELECT saas.tenancy_sync_memberships_direct(NULL, NULL, '{TWO}', '2', 'owner')"),
        format!("SELECT saas.tenancy_sync_organizations_direct('UPDATE', '{TWO}', '{TWO}', NULL, 'x', 'x', false)"),
    ] {
        assert_eq!(in_context(&mut c, ONE, "1", &helper).unwrap_err().code, "42501", "{helper}");
    }
    // Crafted calls of the checked helper (found by an attack round): another organization, an
    // operation it does not know, a NULL one, a new id, an admin suspending with a NULL status,
    // an admin deleting.
    for (user, call) in [
        ("1", format!("'UPDATE', '{TWO}', '{TWO}', NULL, 'x', 'x', false")),
        ("1", format!("'X', '{ONE}', '{TWO}', NULL, 'pwned', 'pwned', false")),
        ("1", format!("NULL, '{ONE}', NULL, NULL, NULL, NULL, true")),
        ("1", format!("'UPDATE', '{ONE}', 'eeeeeeee-0000-0000-0000-00000000000e', 'chosen', 'chosen', 'chosen', true")),
        ("5", format!("'UPDATE', '{ONE}', '{ONE}', NULL, 'saas-one', 'Saas One', NULL")),
        ("5", format!("'DELETE', '{ONE}', NULL, NULL, NULL, NULL, true")),
    ] {
        let e = in_context(&mut c, ONE, user, &format!("SELECT saas.tenancy_sync_organizations_checked({call})"))
            .unwrap_err();
        assert_eq!(e.code, "42501", "{call}: {}", e.message);
    }
    // Nor does it take a slug tenancy reserves for another organization (its ids may be
    // predictable: org_key_id() of the next serial), nor re-create an organization it deleted,
    // which would come back without its plan, quotas and usage (an attack round's findings).
    let reserved = "org-eeeeeeee00000000000000000000000e";
    in_context(
        &mut c,
        ONE,
        "1",
        &format!("SELECT saas.tenancy_sync_organizations_checked('UPDATE', '{ONE}', '{ONE}', NULL, '{reserved}', 'Saas One', true)"),
    )
    .unwrap();
    assert_eq!(count(&mut admin, &format!("tenancy.organizations WHERE slug = '{reserved}'")), 0);
    admin.batch_execute(&format!("UPDATE tenancy.organizations SET slug = 'saas-one' WHERE id = '{ONE}'")).unwrap();
    {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&format!(
            "SELECT tenancy.set_context('{ONE}', '1');
             SELECT saas.tenancy_sync_organizations_checked('DELETE', '{ONE}', NULL, NULL, NULL, NULL, NULL);"
        ))
        .unwrap();
        let again = tx
            .batch_execute(&format!(
                "SELECT saas.tenancy_sync_organizations_checked('UPDATE', '{ONE}', '{ONE}', NULL, 'saas-one', 'Saas One', true)"
            ))
            .unwrap_err();
        assert_eq!(DbError::of(&again).code, "42501", "{again}");
    }
    // Nor does it give the organization a key of the caller's choosing.
    let forged = in_context(
        &mut c,
        ONE,
        "1",
        &format!("SELECT saas.tenancy_sync_organizations_checked('UPDATE', '{ONE}', '{ONE}', 'org_forged', 'saas-one', 'Saas One', true)"),
    );
    assert!(forged.is_err() || count(&mut admin, "tenancy.organizations WHERE key IS NOT NULL") == 0, "{forged:?}");
    assert_eq!(count(&mut admin, "tenancy.organizations WHERE key = 'org_forged'"), 0);
    let orgs = text(
        &mut admin,
        &format!("SELECT string_agg(slug || ':' || status, ',' ORDER BY id) FROM tenancy.organizations WHERE id IN ('{ONE}', '{TWO}', 'eeeeeeee-0000-0000-0000-00000000000e')"),
    );
    assert_eq!(orgs.as_deref(), Some("saas-one:active,org-5b000000000000000000000000000002:active"));
    let suspend =
        in_context(&mut c, ONE, "5", &format!("UPDATE saas.organizations SET deleted_at = now() WHERE id = '{ONE}'"))
            .unwrap_err();
    assert_eq!(suspend.code, "42501", "only owners suspend: {}", suspend.message);
    assert_eq!(members(&mut admin), "5a:1:owner,5a:2:member,5a:3:admin,5a:5:admin,5b:4:owner");
    // Removing a membership removes the member: its context ends at once.
    in_context(&mut c, ONE, "5", "DELETE FROM saas.memberships WHERE user_id = 2").unwrap();
    assert_eq!(in_context(&mut c, ONE, "2", "SELECT 1").unwrap_err().code, "42501");
    // Renaming and soft-deleting an organization reach tenancy.organizations; a DBA's delete
    // cascades through the memberships.
    in_context(&mut c, ONE, "1", &format!("UPDATE saas.organizations SET name = 'Saas Uno' WHERE id = '{ONE}'"))
        .unwrap();
    assert_eq!(
        text(&mut admin, &format!("SELECT name FROM tenancy.organizations WHERE id = '{ONE}'")).as_deref(),
        Some("Saas Uno")
    );
    admin.batch_execute(&format!("UPDATE saas.organizations SET deleted_at = now() WHERE id = '{ONE}'")).unwrap();
    assert_eq!(
        in_context(&mut c, ONE, "1", "SELECT 1").unwrap_err().code,
        "42501",
        "a soft-deleted organization is suspended"
    );
    // Its owner deletes an organization through the application's table: the memberships go with
    // it (the application's cascade), and so does tenancy's organization.
    in_context(&mut c, TWO, "4", &format!("DELETE FROM saas.organizations WHERE id = '{TWO}'")).unwrap();
    assert_eq!(count(&mut admin, &format!("tenancy.organizations WHERE id = '{TWO}'")), 0);
    assert_eq!(count(&mut admin, &format!("tenancy.members WHERE org_id = '{TWO}'")), 0);
}

/// An owner deleting its organization in one transaction and "updating" it in another, at once,
/// does not get it re-created without its plan and quotas (found by an attack round): the
/// update waits for the delete and then finds nothing.
#[test]
fn an_organization_deleted_by_one_transaction_is_not_re_created_by_another() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(SAAS).unwrap();
    apply_policy(&db, &saas_policy());
    // The owner is counted as this month's active user already, so that its next context
    // writes nothing that would wait for the delete.
    in_context(&mut db.app(), TWO, "4", "SELECT 1").unwrap();
    let mut deleting = db.app();
    let mut tx = deleting.transaction().unwrap();
    tx.batch_execute(&format!(
        "SELECT tenancy.set_context('{TWO}', '4');
         SELECT saas.tenancy_sync_organizations_checked('DELETE', '{TWO}', NULL, NULL, NULL, NULL, NULL);"
    ))
    .unwrap();
    let name = db.name.clone();
    let updating = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&app_url(&name), postgres::NoTls).unwrap();
        in_context(
            &mut c,
            TWO,
            "4",
            &format!("SELECT saas.tenancy_sync_organizations_checked('UPDATE', '{TWO}', '{TWO}', NULL, 'back', 'Back', true)"),
        )
    });
    // The update is waiting for the delete's lock on the row.
    std::thread::sleep(std::time::Duration::from_millis(500));
    tx.commit().unwrap();
    let e = updating.join().unwrap().unwrap_err();
    assert_eq!(e.code, "42501", "{}", e.message);
    assert_eq!(count(&mut admin, &format!("tenancy.organizations WHERE id = '{TWO}'")), 0);
}

#[test]
fn new_tables_are_closed_at_once_and_new_partitions_get_their_parents_policies() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(
            "CREATE TABLE app.events (org_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                      at timestamp(6) without time zone NOT NULL, PRIMARY KEY (org_id, id, at))
                 PARTITION BY RANGE (at);
             CREATE TABLE app.events_2026_11 PARTITION OF app.events FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');",
        )
        .unwrap();
    apply_policy(&db, &(example_policy() + "\n[tables.events]\nkind = \"tenant\"\n"));
    let policies = |c: &mut postgres::Client, t: &str| {
        text(c, &format!("SELECT string_agg(polname::text, ',' ORDER BY polname) FROM pg_policy WHERE polrelid = '{t}'::regclass"))
            .unwrap_or_default()
    };
    let all = "tenancy_delete,tenancy_insert,tenancy_select,tenancy_update";
    assert_eq!(policies(&mut admin, "app.events_2026_11"), all, "apply covers the partition with its table");
    // A partition created later (as pg_partman does), and one attached, get the policies at once.
    admin
        .batch_execute(
            "CREATE TABLE app.events_2026_12 PARTITION OF app.events FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
             CREATE TABLE app.events_2027_01 (LIKE app.events);
             ALTER TABLE app.events ATTACH PARTITION app.events_2027_01 FOR VALUES FROM ('2027-01-01') TO ('2027-02-01');
             -- A new table nobody covers yet: closed.
             CREATE TABLE app.later (org_id uuid NOT NULL, secret text);
             INSERT INTO app.later VALUES ('a0000000-0000-0000-0000-000000000001', 'x');
             GRANT SELECT ON app.later TO app_user;",
        )
        .unwrap();
    for t in ["app.events_2026_12", "app.events_2027_01"] {
        assert_eq!(policies(&mut admin, t), all, "{t}");
    }
    let closed = text(&mut admin, "SELECT string_agg(relname || ':' || relrowsecurity || relforcerowsecurity, ',' ORDER BY relname) FROM pg_class WHERE oid IN ('app.later'::regclass, 'app.events_2026_12'::regclass, 'app.events_2027_01'::regclass)");
    assert_eq!(closed.as_deref(), Some("events_2026_12:truetrue,events_2027_01:truetrue,later:truetrue"));
    let mut c = db.app_in(ACME, "alice");
    assert_eq!(count(&mut c, "app.later"), 0, "no policy: no rows, even granted");
    // The application writes and reads through the partitioned table; partitions directly: refused.
    c.batch_execute("INSERT INTO app.events (at) VALUES ('2026-12-24'), ('2027-01-02')").unwrap();
    assert_eq!(count(&mut c, "app.events"), 2);
    assert_eq!(error_of(&mut c, "SELECT * FROM app.events_2026_12").code, "42501");
    // plan has nothing left to do for the partitions created later (the later table is an error
    // until the policy files cover it).
    admin.batch_execute("DROP TABLE app.later").unwrap();
    let dir = std::env::temp_dir().join(format!("tenancy-partitions-{}-{}", std::process::id(), db.name));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.toml"), example_policy() + "\n[tables.events]\nkind = \"tenant\"\n").unwrap();
    let args = pg_tenancy_compiler::cli::PolicyArgs {
        policies: vec![dir.join("app.toml")],
        format: pg_tenancy_compiler::cli::Format::Human,
    };
    let (_, planned) = pg_tenancy_compiler::cli::plan_in(&args, &admin_url(&db.name), false).unwrap();
    let sql = pg_tenancy_compiler::emit::render(&planned);
    assert!(!sql.contains("CREATE POLICY"), "{sql}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_api_key_finds_its_organization_before_any_context_and_nothing_else() {
    let db = adopted();
    db.admin()
        .batch_execute(&format!(
            "INSERT INTO crm.api_keys (org_id, token_digest) VALUES ('{GLOBEX}', 'digest-of-globex-key')"
        ))
        .unwrap();
    let mut c = db.app();
    assert_eq!(count(&mut c, "crm.api_keys"), 0, "no context: the table shows nothing");
    let org = text(&mut c, "SELECT org_id::text FROM crm.tenancy_lookup_api_key('digest-of-globex-key')");
    assert_eq!(org.as_deref(), Some(GLOBEX));
    assert_eq!(count(&mut c, "crm.tenancy_lookup_api_key('digest-of-another-key')"), 0);
    assert_eq!(count(&mut c, "crm.tenancy_lookup_api_key(NULL)"), 0);
    // Only an exact key: no pattern, no listing.
    assert_eq!(count(&mut c, "crm.tenancy_lookup_api_key('digest-of-%')"), 0);
    // Were the table's owner to give the key a type of its own (whose casts and operators would
    // run with the DBA's rights), the lookup refuses until apply runs again.
    db.admin()
        .batch_execute(
            "CREATE DOMAIN crm.digest AS text; ALTER TABLE crm.api_keys ALTER COLUMN token_digest TYPE crm.digest",
        )
        .unwrap();
    assert_eq!(error_of(&mut c, "SELECT * FROM crm.tenancy_lookup_api_key('digest-of-globex-key')").code, "55000");
}

#[test]
fn a_background_job_acts_as_a_declared_service_with_its_member_role_and_no_other_role_can() {
    let db = TestDb::new();
    apply_policy(
        &db,
        &(example_policy() + "\n[services]\nbilling = { roles = [\"app_user\"], member_role = \"admin\" }\n"),
    );
    let mut c = db.app();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_service_context('{ACME}', 'billing')")).unwrap();
    assert_eq!(text(&mut tx, "SELECT tenancy.current_user_id()").as_deref(), Some("service:billing"));
    assert_eq!(text(&mut tx, "SELECT tenancy.current_member_role()").as_deref(), Some("admin"));
    assert_eq!(text(&mut tx, "SELECT tenancy.current_org()::text").as_deref(), Some(ACME));
    assert!(count(&mut tx, "app.projects") > 0, "the service reads its organization's rows");
    tx.batch_execute("INSERT INTO app.projects (name) VALUES ('made by a job')").unwrap();
    tx.commit().unwrap();
    // A service is no user: it is not counted as an active one.
    let mut admin = db.admin();
    assert_eq!(count(&mut admin, "tenancy.active_users WHERE user_id LIKE 'service:%'"), 0);
    // Another role, and a service that does not exist, get the same refusal.
    let mut ro = db.connect_as("app_readonly");
    let other_role = error_of(&mut ro, &format!("SELECT tenancy.set_service_context('{ACME}', 'billing')"));
    let no_service = error_of(&mut c, &format!("SELECT tenancy.set_service_context('{ACME}', 'ghost')"));
    assert_eq!((other_role.code.as_str(), no_service.code.as_str()), ("42501", "42501"));
    // Not in a suspended organization, nor in one that does not exist (the same error).
    admin
        .batch_execute(&format!("UPDATE tenancy.organizations SET status = 'suspended' WHERE id = '{GLOBEX}'"))
        .unwrap();
    let suspended = error_of(&mut c, &format!("BEGIN; SELECT tenancy.set_service_context('{GLOBEX}', 'billing')"));
    c.batch_execute("ROLLBACK").unwrap();
    let missing = error_of(&mut c, &format!("BEGIN; SELECT tenancy.set_service_context('{NOWHERE}', 'billing')"));
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        (suspended.code.as_str(), suspended.message.replace(GLOBEX, "?")),
        (missing.code.as_str(), missing.message.replace(NOWHERE, "?"))
    );
    // Nobody can be a member named like a service (found by an attack round), nor take the slug
    // the organization sync falls back to for another organization.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
    let posing = error_of(&mut tx, &format!("SELECT tenancy.add_member('{ACME}', 'service:billing', 'owner')"));
    assert_eq!(posing.code, "22023", "{}", posing.message);
    drop(tx);
    assert_eq!(error_of(&mut c, &format!("SELECT tenancy.set_context('{ACME}', 'service:billing')")).code, "22023");
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SELECT tenancy.set_user_context('mallory')").unwrap();
    let squat = error_of(
        &mut tx,
        "SELECT tenancy.create_organization('Squat', 'org-5a000000000000000000000000000001', 'mallory')",
    );
    assert_eq!(squat.code, "22023", "{}", squat.message);
    drop(tx);
    // Removing the service from the policy files takes it away.
    apply_policy(&db, &example_policy());
    assert_eq!(error_of(&mut c, &format!("SELECT tenancy.set_service_context('{ACME}', 'billing')")).code, "42501");
}

/// Templates mixing global rows (NULL org_id, seeded by the application's migrations) with each
/// organization's own; documents that reference either; an application-wide audit log.
const LIB: &str = "
CREATE SCHEMA lib;
CREATE TABLE lib.templates (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid, name text NOT NULL);
CREATE INDEX ON lib.templates (org_id);
CREATE TABLE lib.papers (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL,
                            template_id uuid REFERENCES lib.templates (id), title text NOT NULL);
CREATE INDEX ON lib.papers (template_id);
CREATE TABLE lib.audit_log (at timestamptz NOT NULL DEFAULT now(), actor text, message text NOT NULL);
-- Unscoped although it has the tenant column (NULL for a user's own devices): not a tenant table.
CREATE TABLE lib.devices (id uuid PRIMARY KEY, org_id uuid, token text NOT NULL UNIQUE);
GRANT USAGE ON SCHEMA lib TO app_user, app_readonly;
INSERT INTO lib.templates (id, org_id, name) VALUES
    ('7e000000-0000-0000-0000-000000000000', NULL, 'Built-in'),
    ('7e000000-0000-0000-0000-00000000000a', 'a0000000-0000-0000-0000-000000000001', 'Acme own'),
    ('7e000000-0000-0000-0000-00000000000b', 'b0000000-0000-0000-0000-000000000002', 'Globex own');
";

#[test]
fn global_rows_inside_a_tenant_table_and_an_unscoped_table() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(LIB).unwrap();
    let policy = example_policy().replace("schemas = [\"app\"]", "schemas = [\"app\", \"lib\"]")
        + r#"
[tables.templates]
kind = "tenant"
global_rows = true

[tables.papers]
kind = "tenant"

[tables.audit_log]
kind = "unscoped"
reason = "the application's audit trail, written by every request before its tenant is known"

[tables.devices]
kind = "unscoped"
reason = "a user's devices, with or without an organization"
"#;
    apply_policy(&db, &policy);
    let nullable = text(
        &mut admin,
        "SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = 'lib.templates'::regclass AND attname = 'org_id'",
    );
    assert_eq!(nullable.as_deref(), Some("true"), "no SET NOT NULL on a table with global rows");
    let mut c = db.app();
    assert_eq!(count(&mut c, "lib.templates"), 0, "no context: not even global rows");
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
    let seen = text(&mut tx, "SELECT string_agg(name, ',' ORDER BY name) FROM lib.templates");
    assert_eq!(seen.as_deref(), Some("Acme own,Built-in"));
    // Global rows are the DBA's: no organization changes them.
    assert_eq!(affected(&mut tx, "UPDATE lib.templates SET name = 'mine' WHERE org_id IS NULL"), 0);
    assert_eq!(affected(&mut tx, "DELETE FROM lib.templates WHERE org_id IS NULL"), 0);
    let e = error_of(&mut tx, "INSERT INTO lib.templates (org_id, name) VALUES (NULL, 'forged global')");
    assert_eq!(e.code, "42501", "{}", e.message);
    drop(tx);
    // Own documents reference own or global templates, never another organization's.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
    tx.batch_execute("INSERT INTO lib.papers (template_id, title) VALUES ('7e000000-0000-0000-0000-000000000000', 'from built-in'), ('7e000000-0000-0000-0000-00000000000a', 'from own')").unwrap();
    let e = error_of(
        &mut tx,
        "INSERT INTO lib.papers (template_id, title) VALUES ('7e000000-0000-0000-0000-00000000000b', 'from globex')",
    );
    assert_eq!(e.code, "42501");
    drop(tx);
    // The unscoped table: written and read without a context, by every application role.
    c.batch_execute("INSERT INTO lib.audit_log (actor, message) VALUES ('anonymous', 'login failed')").unwrap();
    assert_eq!(count(&mut db.connect_as("app_readonly"), "lib.audit_log"), 1);
    // lint lists them with their reasons, and takes the NULL-keyed rows as meant; an unscoped
    // table with the tenant column is not a tenant table to lint either (as to check).
    let options = pg_tenancy_compiler::lint::Options {
        schemas: vec!["lib".into()],
        tenant_column: "org_id".into(),
        app_roles: vec![],
    };
    let (findings, _) = pg_tenancy_compiler::lint::lint(&mut admin, &options).unwrap();
    let found: Vec<(&str, &str)> = findings.iter().map(|f| (f.rule, f.object.as_str())).collect();
    assert_eq!(found, vec![("unscoped-table", "lib.audit_log"), ("unscoped-table", "lib.devices")], "{findings:#?}");
    assert!(findings[0].message.contains("audit trail"), "{}", findings[0].message);
}

#[test]
fn a_table_without_a_tenant_column_belongs_to_the_organization_of_its_parent_row() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(SCHEMA).unwrap();
    admin
        .batch_execute(&format!(
            "INSERT INTO crm.customers (id, org_id, name) VALUES ('{ACME_CUSTOMER}', '{ACME}', 'a'), ('{GLOBEX_CUSTOMER}', '{GLOBEX}', 'g');
             INSERT INTO crm.deals (id, org_id, customer_id, title) VALUES
                 ('d1000000-0000-0000-0000-000000000001', '{ACME}', '{ACME_CUSTOMER}', 'acme deal'),
                 ('d2000000-0000-0000-0000-000000000001', '{GLOBEX}', '{GLOBEX_CUSTOMER}', 'globex deal');
             -- A join-like table with no tenant column: its rows belong to their deal's organization.
             -- Its other foreign keys (to itself, to a tenant table) and a tenant table's to it are
             -- checked through its parent row.
             CREATE TABLE crm.deal_notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                                          deal_id uuid NOT NULL REFERENCES crm.deals (id) ON DELETE CASCADE,
                                          reply_to uuid REFERENCES crm.deal_notes (id),
                                          about_customer uuid REFERENCES crm.customers (id),
                                          body text NOT NULL);
             CREATE INDEX ON crm.deal_notes (reply_to);
             CREATE INDEX ON crm.deal_notes (about_customer);
             CREATE TABLE crm.note_pins (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL,
                                         note_id uuid NOT NULL REFERENCES crm.deal_notes (id));
             CREATE INDEX ON crm.note_pins (note_id);
             INSERT INTO crm.deal_notes (id, deal_id, body) VALUES
                 ('e1000000-0000-0000-0000-000000000001', 'd1000000-0000-0000-0000-000000000001', 'acme note'),
                 ('e2000000-0000-0000-0000-000000000001', 'd2000000-0000-0000-0000-000000000001', 'globex note');
             -- A child whose foreign key to itself carries the parent key (a line of the same deal),
             -- and a parent's foreign key to its own child (a deal's pinned note).
             CREATE TABLE crm.deal_lines (deal_id uuid NOT NULL REFERENCES crm.deals (id), line_no int NOT NULL,
                                          parent_line int, PRIMARY KEY (deal_id, line_no),
                                          FOREIGN KEY (deal_id, parent_line) REFERENCES crm.deal_lines (deal_id, line_no));
             ALTER TABLE crm.deals ADD COLUMN pinned_note uuid REFERENCES crm.deal_notes (id);
             CREATE INDEX ON crm.deals (pinned_note);"
        ))
        .unwrap();
    apply_policy(
        &db,
        // deals' SELECT checks a role (a sublink): reading deals again inside its own check of
        // the pinned note would be refused as recursion.
        &(policy().replace("[tables.deals]\nkind = \"tenant\"", "[tables.deals]\nkind = \"tenant\"\nselect = \"member\"")
            + "\n[tables.deal_notes]\nkind = \"tenant\"\nparent = \"deal_id\"\n\n[tables.note_pins]\nkind = \"tenant\"\n\n[tables.deal_lines]\nkind = \"tenant\"\nparent = \"deal_id\"\n"),
    );
    let mut c = db.app();
    assert_eq!(count(&mut c, "crm.deal_notes"), 0, "no context: nothing");
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
    assert_eq!(text(&mut tx, "SELECT string_agg(body, ',') FROM crm.deal_notes").as_deref(), Some("acme note"));
    tx.batch_execute(
        "INSERT INTO crm.deal_notes (deal_id, body) VALUES ('d1000000-0000-0000-0000-000000000001', 'another')",
    )
    .unwrap();
    // A note on another organization's deal is refused like one on a deal that does not exist.
    let foreign = error_of(
        &mut tx,
        "INSERT INTO crm.deal_notes (deal_id, body) VALUES ('d2000000-0000-0000-0000-000000000001', 'x')",
    );
    drop(tx);
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
    let missing = error_of(
        &mut tx,
        "INSERT INTO crm.deal_notes (deal_id, body) VALUES ('d9000000-0000-0000-0000-000000000009', 'x')",
    );
    assert_eq!((foreign.code.as_str(), foreign.message.as_str()), (missing.code.as_str(), missing.message.as_str()));
    assert_eq!(foreign.code, "42501");
    drop(tx);
    // Nor can an own note be moved onto another organization's deal, nor theirs be touched.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
    let moved = error_of(&mut tx, "UPDATE crm.deal_notes SET deal_id = 'd2000000-0000-0000-0000-000000000001'");
    assert_eq!(moved.code, "42501");
    drop(tx);
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
    assert_eq!(affected(&mut tx, "DELETE FROM crm.deal_notes WHERE body = 'globex note'"), 0);
    drop(tx);
    assert_eq!(count(&mut admin, "crm.deal_notes WHERE deal_id = 'd2000000-0000-0000-0000-000000000001'"), 1);

    // Pointing at another organization's rows through the child's other foreign keys, or at its
    // child rows from a tenant table, is refused exactly like pointing at rows that do not exist.
    let acme_deal = "'d1000000-0000-0000-0000-000000000001'";
    for (own, foreign, missing) in [
        (
            format!("INSERT INTO crm.deal_notes (deal_id, reply_to, body) VALUES ({acme_deal}, 'e1000000-0000-0000-0000-000000000001', 'r')"),
            format!("INSERT INTO crm.deal_notes (deal_id, reply_to, body) VALUES ({acme_deal}, 'e2000000-0000-0000-0000-000000000001', 'r')"),
            format!("INSERT INTO crm.deal_notes (deal_id, reply_to, body) VALUES ({acme_deal}, 'e9000000-0000-0000-0000-000000000009', 'r')"),
        ),
        (
            format!("INSERT INTO crm.deal_notes (deal_id, about_customer, body) VALUES ({acme_deal}, '{ACME_CUSTOMER}', 'c')"),
            format!("INSERT INTO crm.deal_notes (deal_id, about_customer, body) VALUES ({acme_deal}, '{GLOBEX_CUSTOMER}', 'c')"),
            format!("INSERT INTO crm.deal_notes (deal_id, about_customer, body) VALUES ({acme_deal}, '{MISSING}', 'c')"),
        ),
        (
            "UPDATE crm.deals SET pinned_note = 'e1000000-0000-0000-0000-000000000001'".to_string(),
            "UPDATE crm.deals SET pinned_note = 'e2000000-0000-0000-0000-000000000001'".to_string(),
            "UPDATE crm.deals SET pinned_note = 'e9000000-0000-0000-0000-000000000009'".to_string(),
        ),
        (
            format!("INSERT INTO crm.deal_lines VALUES ({acme_deal}, 1, NULL), ({acme_deal}, 2, 1)"),
            "INSERT INTO crm.deal_lines VALUES ('d2000000-0000-0000-0000-000000000001', 1, NULL)".to_string(),
            "INSERT INTO crm.deal_lines VALUES ('d9000000-0000-0000-0000-000000000009', 1, NULL)".to_string(),
        ),
        (
            "INSERT INTO crm.note_pins (note_id) VALUES ('e1000000-0000-0000-0000-000000000001')".to_string(),
            "INSERT INTO crm.note_pins (note_id) VALUES ('e2000000-0000-0000-0000-000000000001')".to_string(),
            "INSERT INTO crm.note_pins (note_id) VALUES ('e9000000-0000-0000-0000-000000000009')".to_string(),
        ),
    ] {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
        tx.batch_execute(&own).unwrap_or_else(|e| panic!("{own}: {e}"));
        drop(tx);
        let mut refused = vec![];
        for sql in [&foreign, &missing] {
            let mut tx = c.transaction().unwrap();
            tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'alice')")).unwrap();
            refused.push(error_of(&mut tx, sql));
        }
        assert_eq!(refused[0].code, "42501", "{foreign}: {}", refused[0].message);
        assert_eq!(
            (refused[0].code.as_str(), refused[0].message.as_str()),
            (refused[1].code.as_str(), refused[1].message.as_str()),
            "{foreign}"
        );
    }
}

#[test]
fn an_exclusion_constraint_without_the_tenant_column_is_refused_like_a_unique_key() {
    let db = TestDb::new();
    db.admin()
        .batch_execute(
            "CREATE TABLE app.bookings (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL, room text NOT NULL,
                                        EXCLUDE USING btree (room WITH =))",
        )
        .unwrap();
    let failure = try_apply_policy(&db, &(example_policy() + "\n[tables.bookings]\nkind = \"tenant\"\n")).unwrap_err();
    assert_eq!(failure.diagnostic_codes(), vec!["tenancy::unique-not-tenant-scoped"]);
}

#[test]
fn migrate_keys_moves_one_column_foreign_keys_to_composite_ones_keeping_their_actions() {
    let db = adopted();
    let mut admin = db.admin();
    admin
        .batch_execute(&format!(
            "INSERT INTO crm.customers (id, org_id, name) VALUES ('c3000000-0000-0000-0000-000000000003', '{ACME}', 'referrer');
             INSERT INTO crm.deals (org_id, customer_id, referrer_id, title) VALUES ('{ACME}', '{ACME_CUSTOMER}', 'c3000000-0000-0000-0000-000000000003', 'd')"
        ))
        .unwrap();
    let options = pg_tenancy_compiler::lint::Options {
        schemas: vec!["crm".into()],
        tenant_column: "org_id".into(),
        app_roles: vec![],
    };
    let sql = pg_tenancy_compiler::migrate::migration(&mut admin, &options).unwrap();
    let file = std::env::temp_dir().join(format!("tenancy-migrate-{}-{}.sql", std::process::id(), db.name));
    std::fs::write(&file, &sql).unwrap();
    // As printed, in order, with psql (CONCURRENTLY outside any transaction).
    let run = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", file.to_str().unwrap(), &admin_url(&db.name)])
        .output()
        .unwrap();
    std::fs::remove_file(&file).ok();
    assert!(run.status.success(), "{}\n{sql}", String::from_utf8_lossy(&run.stderr));
    let defs = text(&mut admin, "SELECT string_agg(conname || ': ' || pg_get_constraintdef(oid), E'\\n' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'crm.deals'::regclass AND contype = 'f'").unwrap();
    assert_eq!(
        defs,
        "deals_customer_id_fkey: FOREIGN KEY (org_id, customer_id) REFERENCES crm.customers(org_id, id)\n\
         deals_referrer_id_fkey: FOREIGN KEY (org_id, referrer_id) REFERENCES crm.customers(org_id, id) ON DELETE SET NULL (referrer_id)"
    );
    // The action still works, and nulls only the key's own column.
    admin.batch_execute("DELETE FROM crm.customers WHERE id = 'c3000000-0000-0000-0000-000000000003'").unwrap();
    let deal = text(
        &mut admin,
        "SELECT org_id || ':' || coalesce(referrer_id::text, 'null') FROM crm.deals WHERE title = 'd'",
    );
    assert_eq!(deal, Some(format!("{ACME}:null")));
    assert!(pg_tenancy_compiler::migrate::migration(&mut admin, &options).unwrap().contains("nothing to migrate"));
}

/// Django and Prisma fill uuid primary keys in the application (`UUIDField(default=uuid4)`,
/// `@default(uuid())`): no server default says they are random, so the policy file says it once.
#[test]
fn application_generated_uuid_keys_are_accepted_once_the_policy_file_says_they_are_random() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(
            "CREATE SCHEMA notes;
             CREATE TABLE notes.notes (id uuid PRIMARY KEY, org_id uuid NOT NULL, body text NOT NULL);
             CREATE TABLE notes.labels (id uuid PRIMARY KEY, org_id uuid NOT NULL, name text NOT NULL, UNIQUE (id, name));
             GRANT USAGE ON SCHEMA notes TO app_user, app_readonly;",
        )
        .unwrap();
    let options = pg_tenancy_compiler::lint::Options {
        schemas: vec!["notes".into()],
        tenant_column: "org_id".into(),
        app_roles: vec![],
    };
    // Before: lint's fix for such a key names the declaration too.
    let (findings, _) = pg_tenancy_compiler::lint::lint(&mut admin, &options).unwrap();
    let pkey = findings.iter().find(|f| f.object == "index notes_pkey on notes.notes").expect("the key is a finding");
    assert_eq!(pkey.rule, "unique-not-tenant-scoped");
    assert!(pkey.fix.starts_with("ALTER TABLE notes.notes DROP CONSTRAINT notes_pkey"), "{}", pkey.fix);
    assert!(
        pkey.fix.ends_with("; or, if the application fills id with random ids (Django's UUIDField(default=uuid.uuid4), Prisma's @default(uuid()) or @default(cuid())), say so once in the policy file: random_ids = \"why\""),
        "{}",
        pkey.fix
    );
    let policy = example_policy().replace("schemas = [\"app\"]", "schemas = [\"app\", \"notes\"]")
        + "\n[tables.notes]\nkind = \"tenant\"\n\n[tables.labels]\nkind = \"tenant\"\n";
    // Without the declaration check refuses both keys and says how to declare them; the
    // two-column key is not a random id, declared or not.
    let refused = |policy: &str| match try_apply_policy(&db, policy) {
        Err(pg_tenancy_compiler::cli::Failure::Diagnostics(_, diags, _)) => diags,
        other => panic!("expected diagnostics, got {other:?}"),
    };
    let mut diags = refused(&policy);
    diags.sort_by(|a, b| a.message.cmp(&b.message));
    let keys: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        keys,
        [
            "PRIMARY KEY (id) of tenant table `notes.labels` does not include `org_id`",
            "PRIMARY KEY (id) of tenant table `notes.notes` does not include `org_id`",
            "UNIQUE (id, name) of tenant table `notes.labels` does not include `org_id`",
        ]
    );
    assert!(diags[1].help.as_deref().unwrap().contains("random_ids = \"why\""), "{:?}", diags[1].help);
    assert!(!diags[2].help.as_deref().unwrap().contains("random_ids"), "{:?}", diags[2].help);
    let declared = format!("random_ids = \"Django's UUIDField(default=uuid.uuid4)\"\n{policy}");
    let diags = refused(&declared);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].message, "UNIQUE (id, name) of tenant table `notes.labels` does not include `org_id`");
    assert_eq!(refused(&format!("random_ids = \" \"\n{policy}"))[0].code, "tenancy::missing-reason");
    // With it (and the other key declared), apply records the keys, and lint shows them waived.
    let declared = declared.replace(
        "[tables.labels]\nkind = \"tenant\"\n",
        "[tables.labels]\nkind = \"tenant\"\nglobally_unique = { \"id, name\" = \"id is random\" }\n",
    );
    apply_policy(&db, &declared);
    let recorded = text(
        &mut admin,
        "SELECT string_agg(relation::text || '(' || columns || '): ' || reason, '; ' ORDER BY relation::text, columns)
           FROM tenancy.unique_waivers WHERE relation::text LIKE 'notes.%'",
    );
    assert_eq!(
        recorded.as_deref(),
        Some(
            "notes.labels(id): random ids generated by the application: Django's UUIDField(default=uuid.uuid4); \
             notes.labels(id, name): id is random; \
             notes.notes(id): random ids generated by the application: Django's UUIDField(default=uuid.uuid4)"
        )
    );
    let (findings, _) = pg_tenancy_compiler::lint::lint(&mut admin, &options).unwrap();
    let found: Vec<(&str, &str)> = findings.iter().map(|f| (f.rule, f.object.as_str())).collect();
    assert_eq!(
        found,
        [
            ("unique-waived", "index labels_id_name_key on notes.labels"),
            ("unique-waived", "index labels_pkey on notes.labels"),
            ("unique-waived", "index notes_pkey on notes.notes"),
        ],
        "{findings:#?}"
    );
    // Taking the declaration back takes the records back.
    apply_policy(
        &db,
        &declared
            .replace("random_ids = \"Django's UUIDField(default=uuid.uuid4)\"\n", "")
            .replace("\n[tables.notes]\nkind = \"tenant\"\n", "\n[tables.notes]\nkind = \"global\"\n")
            .replace(
                "globally_unique = { \"id, name\" = \"id is random\" }",
                "globally_unique = { \"id, name\" = \"id is random\", id = \"random\" }",
            ),
    );
    assert_eq!(
        text(&mut admin, "SELECT count(*)::text FROM tenancy.unique_waivers WHERE reason LIKE 'random ids%'")
            .as_deref(),
        Some("0")
    );
}

/// Rows with a NULL tenant column that belong to a user (Plane's personal API tokens, avatars,
/// notification defaults): only that user reaches them, in any of its contexts; nobody else.
#[test]
fn a_users_own_rows_reach_that_user_only_in_any_of_its_contexts() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(
            "CREATE SCHEMA me;
             CREATE TABLE me.tokens (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid,
                                     user_id text NOT NULL, name text NOT NULL);
             CREATE INDEX ON me.tokens (org_id);
             GRANT USAGE ON SCHEMA me TO app_user, app_readonly;",
        )
        .unwrap();
    let policy = example_policy().replace("schemas = [\"app\"]", "schemas = [\"app\", \"me\"]")
        + "\n[tables.tokens]\nkind = \"tenant\"\nselect = \"admin\"\ninsert = \"admin\"\nupdate = \"admin\"\ndelete = \"admin\"\nuser_rows = \"user_id\"\n";
    let refused = |policy: &str| match try_apply_policy(&db, policy) {
        Err(pg_tenancy_compiler::cli::Failure::Diagnostics(_, diags, _)) => {
            diags.iter().map(|d| d.code).collect::<Vec<_>>()
        }
        other => panic!("expected diagnostics, got {other:?}"),
    };
    assert_eq!(
        refused(&policy.replace("user_rows = \"user_id\"", "user_rows = \"owner\"")),
        ["tenancy::unknown-column"]
    );
    assert_eq!(
        refused(&policy.replace("user_rows = \"user_id\"", "user_rows = \"user_id\"\nglobal_rows = true")),
        ["tenancy::user-rows-and-global-rows"]
    );
    assert_eq!(
        refused(&policy.replace(
            "kind = \"tenant\"\nselect = \"admin\"\ninsert = \"admin\"\nupdate = \"admin\"\ndelete = \"admin\"",
            "kind = \"global\""
        )),
        ["tenancy::user-rows-kind"]
    );
    apply_policy(&db, &policy);
    let nullable = text(
        &mut admin,
        "SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = 'me.tokens'::regclass AND attname = 'org_id'",
    );
    assert_eq!(nullable.as_deref(), Some("true"), "no SET NOT NULL on a table with a user's rows");
    admin
        .batch_execute(&format!(
            "INSERT INTO me.tokens (org_id, user_id, name) VALUES
                 (NULL, 'alice', 'alice personal'), (NULL, 'bob', 'bob personal'),
                 ('{ACME}', 'alice', 'acme token'), ('{GLOBEX}', 'gina', 'globex token')"
        ))
        .unwrap();
    let mut c = db.app();
    let seen = |c: &mut postgres::Client, start: &str| {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(start).unwrap();
        let names = text(&mut tx, "SELECT coalesce(string_agg(name, ',' ORDER BY name), '') FROM me.tokens");
        names.unwrap()
    };
    // The user's own rows in any context of the user, with the organization's rows the role allows.
    assert_eq!(seen(&mut c, &format!("SELECT tenancy.set_context('{ACME}', 'alice')")), "acme token,alice personal");
    assert_eq!(seen(&mut c, &format!("SELECT tenancy.set_context('{ACME}', 'bob')")), "acme token,bob personal");
    assert_eq!(
        seen(&mut c, "SELECT tenancy.set_user_context('alice')"),
        "alice personal",
        "a user-only context: only the user's rows"
    );
    // A member whose role reaches no organization row still reaches its own rows only.
    assert_eq!(seen(&mut c, &format!("SELECT tenancy.set_context('{ACME}', 'carol')")), "");
    assert_eq!(seen(&mut c, &format!("SELECT tenancy.set_context('{GLOBEX}', 'sam')")), "globex token");
    assert_eq!(count(&mut c, "me.tokens"), 0, "no context: nothing");
    // Writes: the user's own rows only; never another user's, never into another organization.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'bob')")).unwrap();
    assert_eq!(affected(&mut tx, "UPDATE me.tokens SET name = 'taken' WHERE user_id = 'alice' AND org_id IS NULL"), 0);
    assert_eq!(affected(&mut tx, "DELETE FROM me.tokens WHERE user_id = 'alice' AND org_id IS NULL"), 0);
    drop(tx);
    let as_bob = |c: &mut postgres::Client, sql: &str| {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&format!("SELECT tenancy.set_context('{ACME}', 'bob')")).unwrap();
        error_of(&mut tx, sql).code
    };
    assert_eq!(
        as_bob(&mut c, "INSERT INTO me.tokens (org_id, user_id, name) VALUES (NULL, 'alice', 'forged')"),
        "42501"
    );
    assert_eq!(
        as_bob(&mut c, &format!("UPDATE me.tokens SET org_id = '{GLOBEX}' WHERE name = 'bob personal'")),
        "42501"
    );
    // A row never changes between the organization's and a user's (attack: carry acme's row out
    // as one's own, then into another organization where one is a member).
    let moved = "UPDATE me.tokens SET org_id = NULL, user_id = 'bob' WHERE name = 'acme token'";
    assert_eq!(as_bob(&mut c, moved), "42501");
    assert_eq!(as_bob(&mut c, &format!("UPDATE me.tokens SET org_id = '{ACME}' WHERE name = 'bob personal'")), "42501");
    admin.batch_execute("BEGIN; UPDATE me.tokens SET org_id = NULL WHERE name = 'acme token'; ROLLBACK;").unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SELECT tenancy.set_user_context('bob')").unwrap();
    tx.batch_execute("INSERT INTO me.tokens (user_id, name) VALUES ('bob', 'made before any organization')").unwrap();
    assert_eq!(affected(&mut tx, "UPDATE me.tokens SET name = name"), 2, "bob's two rows");
    tx.commit().unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SELECT tenancy.set_user_context('bob')").unwrap();
    assert_eq!(
        error_of(&mut tx, &format!("INSERT INTO me.tokens (org_id, user_id, name) VALUES ('{ACME}', 'bob', 'x')")).code,
        "42501",
        "no organization row without its context"
    );
    drop(tx);
    // Without any context: nothing reached, an INSERT refused.
    assert_eq!(affected(&mut c, "UPDATE me.tokens SET name = name"), 0);
    assert_eq!(error_of(&mut c, "INSERT INTO me.tokens (user_id, name) VALUES ('bob', 'x')").code, "42501");
    assert_eq!(
        text(&mut admin, "SELECT org_id IS NULL FROM me.tokens WHERE name = 'made before any organization'").as_deref(),
        Some("true")
    );
    // lint takes the NULL-keyed rows as meant.
    let options = pg_tenancy_compiler::lint::Options {
        schemas: vec!["me".into()],
        tenant_column: "org_id".into(),
        app_roles: vec![],
    };
    let (findings, _) = pg_tenancy_compiler::lint::lint(&mut admin, &options).unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
}

/// An application's own users table (Plane's `users`, Rails' `users`): each user reads their own
/// row and those of the current organization's members, writes only their own, signs up under a
/// user-only context; a user outside the organization reads exactly like a missing one, through
/// the foreign keys that point at users too.
#[test]
fn identity_tables_show_a_user_themselves_and_their_co_members_and_nobody_else() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin
        .batch_execute(
            "CREATE SCHEMA idn;
             CREATE TABLE idn.users (id text PRIMARY KEY, email text NOT NULL UNIQUE, display_name text NOT NULL,
                                     invited_by text REFERENCES idn.users (id) ON DELETE SET NULL);
             CREATE TABLE idn.credentials (user_id text PRIMARY KEY REFERENCES idn.users (id) ON DELETE CASCADE,
                                           password_hash text NOT NULL);
             CREATE TABLE idn.devices (user_id uuid PRIMARY KEY, name text NOT NULL);
             CREATE TABLE idn.issues (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL,
                                      title text NOT NULL, assignee_id text REFERENCES idn.users (id),
                                      created_by text NOT NULL REFERENCES idn.users (id));
             CREATE INDEX ON idn.issues (org_id);
             GRANT USAGE ON SCHEMA idn TO app_user, app_readonly;",
        )
        .unwrap();
    let policy = example_policy().replace("schemas = [\"app\"]", "schemas = [\"app\", \"idn\"]")
        + r#"
[tables.users]
kind = "identity"
globally_unique = { email = "one account per address: sign-up tells whether it is taken anyway" }

[tables.credentials]
kind = "identity"
user_column = "user_id"
co_members = false

[tables.devices]
kind = "identity"
user_column = "user_id"

[tables.issues]
kind = "tenant"

[lookups]
sign_in = { table = "users", key = "email" }
"#;
    let refused = |policy: &str| match try_apply_policy(&db, policy) {
        Err(pg_tenancy_compiler::cli::Failure::Diagnostics(_, diags, _)) => {
            diags.iter().map(|d| d.code).collect::<Vec<_>>()
        }
        other => panic!("expected diagnostics, got {other:?}"),
    };
    let waiver =
        "globally_unique = { email = \"one account per address: sign-up tells whether it is taken anyway\" }\n";
    assert_eq!(refused(&policy.replace(waiver, "")), ["tenancy::unique-not-user-scoped"]);
    assert_eq!(
        refused(&policy.replace(waiver, &format!("{waiver}update = \"admin\"\n"))),
        ["tenancy::identity-table-rule"]
    );
    assert_eq!(
        refused(&policy.replace("user_column = \"user_id\"\nco_members", "user_column = \"owner\"\nco_members")),
        ["tenancy::unknown-column"]
    );
    assert_eq!(
        refused(
            &policy
                .replace("[tables.issues]\nkind = \"tenant\"", "[tables.issues]\nkind = \"tenant\"\nco_members = true")
        ),
        ["tenancy::not-identity"]
    );
    assert_eq!(
        refused(&policy.replace("key = \"email\" }", "key = \"email\", organization = \"id\" }")),
        ["tenancy::lookup-organization-of-identity"]
    );
    apply_policy(&db, &policy);
    admin
        .batch_execute(&format!(
            "INSERT INTO idn.users (id, email, display_name) VALUES
                 ('alice', 'alice@acme.test', 'Alice'), ('bob', 'bob@acme.test', 'Bob'),
                 ('carol', 'carol@acme.test', 'Carol'), ('sam', 'sam@both.test', 'Sam'),
                 ('gina', 'gina@globex.test', 'Gina'), ('zed', 'zed@nowhere.test', 'Zed');
             INSERT INTO idn.credentials VALUES ('alice', 'hash-a'), ('bob', 'hash-b');
             INSERT INTO idn.issues (org_id, title, created_by) VALUES ('{ACME}', 'by carol', 'carol');"
        ))
        .unwrap();
    let mut c = db.app();
    let users = |c: &mut postgres::Client, start: &str, from: &str| {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(start).unwrap();
        text(&mut tx, &format!("SELECT coalesce(string_agg(u, ',' ORDER BY u), '') FROM (SELECT {from}) s(u)")).unwrap()
    };
    let acme = |user: &str| format!("SELECT tenancy.set_context('{ACME}', '{user}')");
    // Signing in, before any context: the user of one exact address, and nothing else.
    assert_eq!(
        text(
            &mut c,
            "SELECT coalesce(org_id::text, '-') || ' ' || user_id FROM idn.tenancy_lookup_sign_in('gina@globex.test')"
        )
        .as_deref(),
        Some("- gina")
    );
    assert_eq!(count(&mut c, "idn.tenancy_lookup_sign_in('nobody@x.test')"), 0);
    // Reading: oneself and the current organization's members; credentials only one's own.
    assert_eq!(users(&mut c, &acme("alice"), "id FROM idn.users"), "alice,bob,carol,sam");
    assert_eq!(
        users(&mut c, &format!("SELECT tenancy.set_context('{GLOBEX}', 'sam')"), "id FROM idn.users"),
        "gina,sam",
        "sam's acme co-members are not globex's"
    );
    assert_eq!(users(&mut c, "SELECT tenancy.set_user_context('zed')", "id FROM idn.users"), "zed");
    assert_eq!(users(&mut c, &acme("alice"), "user_id FROM idn.credentials"), "alice");
    assert_eq!(count(&mut c, "idn.users"), 0, "no context: nobody");
    // Writing: one's own row only.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&acme("alice")).unwrap();
    assert_eq!(affected(&mut tx, "UPDATE idn.users SET display_name = 'x' WHERE id = 'bob'"), 0);
    assert_eq!(affected(&mut tx, "DELETE FROM idn.users WHERE id = 'bob'"), 0);
    assert_eq!(affected(&mut tx, "UPDATE idn.credentials SET password_hash = 'x' WHERE user_id = 'bob'"), 0);
    assert_eq!(affected(&mut tx, "UPDATE idn.users SET display_name = 'Alice A.' WHERE id = 'alice'"), 1);
    assert_eq!(error_of(&mut tx, "UPDATE idn.users SET id = 'mallory' WHERE id = 'alice'").code, "42501");
    drop(tx);
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&acme("alice")).unwrap();
    assert_eq!(
        error_of(&mut tx, "INSERT INTO idn.users (id, email, display_name) VALUES ('mallory', 'm@x.test', 'M')").code,
        "42501",
        "nobody creates another user"
    );
    drop(tx);
    // Sign-up: under a user-only context for the new user's id.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SELECT tenancy.set_user_context('newbie')").unwrap();
    tx.batch_execute("INSERT INTO idn.users (id, email, display_name) VALUES ('newbie', 'new@x.test', 'New')").unwrap();
    tx.batch_execute("INSERT INTO idn.credentials VALUES ('newbie', 'hash-n')").unwrap();
    tx.commit().unwrap();
    assert_eq!(
        error_of(&mut c, "INSERT INTO idn.users (id, email, display_name) VALUES ('anon', 'a@x.test', 'A')").code,
        "42501",
        "no context: no sign-up"
    );
    // A uuid user column is compared as text.
    let me = "e1000000-0000-0000-0000-000000000001";
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_user_context('{me}')")).unwrap();
    tx.batch_execute(&format!("INSERT INTO idn.devices VALUES ('{me}', 'laptop')")).unwrap();
    assert_eq!(count(&mut tx, "idn.devices"), 1);
    tx.commit().unwrap();
    assert_eq!(users(&mut c, &acme("alice"), "name FROM idn.devices"), "");
    // References to users: a user outside the organization reads exactly like a missing one.
    let as_alice = |c: &mut postgres::Client, sql: &str| {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&acme("alice")).unwrap();
        tx.batch_execute(sql).map_err(|e| DbError::of(&e))
    };
    let assign =
        |who: &str| format!("INSERT INTO idn.issues (title, assignee_id, created_by) VALUES ('t', '{who}', 'alice')");
    as_alice(&mut c, &assign("bob")).unwrap();
    let other = as_alice(&mut c, &assign("gina")).unwrap_err();
    let missing = as_alice(&mut c, &assign("nosuch")).unwrap_err();
    let real = error_of(
        &mut admin,
        &format!(
            "INSERT INTO idn.issues (org_id, title, assignee_id, created_by) VALUES ('{ACME}', 't', 'nosuch', 'alice')"
        ),
    );
    for e in [&other, &missing] {
        assert_eq!((e.code.as_str(), e.message.as_str()), (real.code.as_str(), real.message.as_str()));
        assert_eq!(e.hint, real.hint);
    }
    assert_eq!(missing.detail, real.detail, "word for word PostgreSQL's own");
    assert_eq!(other.detail.as_deref().map(|d| d.replace("gina", "nosuch")), real.detail);
    assert_eq!(
        as_alice(&mut c, "UPDATE idn.users SET invited_by = 'gina' WHERE id = 'alice'").unwrap_err().code,
        "23503"
    );
    as_alice(&mut c, "UPDATE idn.users SET invited_by = 'bob' WHERE id = 'alice'").unwrap();
    // A row keeps pointing at a user who has left; it cannot be pointed at them anew.
    admin.batch_execute(&format!("SELECT tenancy.remove_member('{ACME}', 'carol')")).unwrap();
    as_alice(&mut c, "UPDATE idn.issues SET title = 'kept', created_by = created_by WHERE title = 'by carol'").unwrap();
    assert_eq!(
        as_alice(&mut c, "UPDATE idn.issues SET assignee_id = 'carol' WHERE title = 'by carol'").unwrap_err().code,
        "23503"
    );
    // The tables' owner (migrations, backfills) is not checked.
    admin
        .batch_execute(&format!(
            "INSERT INTO idn.issues (org_id, title, created_by) VALUES ('{ACME}', 'imported', 'gina')"
        ))
        .unwrap();
    // lint takes identity tables for what they are.
    let options = pg_tenancy_compiler::lint::Options {
        schemas: vec!["idn".into()],
        tenant_column: "org_id".into(),
        app_roles: vec![],
    };
    let (findings, _) = pg_tenancy_compiler::lint::lint(&mut admin, &options).unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
}
