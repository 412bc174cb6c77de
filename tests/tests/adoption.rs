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

[tables.api_keys]
kind = "tenant"
globally_unique = { token_digest = "API keys are looked up before the tenant is known" }
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
    assert_eq!(rls.as_deref(), Some("api_keys:truetrue,customers:truetrue,deals:truetrue"));
    // The keys are as the application wrote them.
    let keys = text(
        &mut admin,
        "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'crm'::regnamespace",
    );
    assert_eq!(keys.as_deref(), Some("api_keys_pkey,api_keys_token_digest_key,customers_pkey,deals_customer_id_fkey,deals_pkey,deals_referrer_id_fkey"));
    // lint agrees: the foreign keys are checked by the policies, the random ids are safe; the
    // key declared globally unique is the one finding left (lint does not read policy files).
    let options = pg_tenancy_compiler::lint::Options {
        schemas: vec!["crm".into()],
        tenant_column: "org_id".into(),
        app_roles: vec![],
    };
    let (findings, _) = pg_tenancy_compiler::lint::lint(&mut admin, &options).unwrap();
    let found: Vec<(&str, &str)> = findings.iter().map(|f| (f.rule, f.object.as_str())).collect();
    assert_eq!(
        found,
        vec![("unique-not-tenant-scoped", "index api_keys_token_digest_key on crm.api_keys")],
        "{findings:#?}"
    );
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
