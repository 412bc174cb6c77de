//! Tenant keys of the application's type: organizations keyed by text (`org_`-prefixed ids,
//! cuids, uuids held as text) or by integers, copied from the application's own organizations
//! table, and tenant columns of those types governed like uuid ones, end to end: the context,
//! the policies (an index condition, no InitPlan), the column defaults, the sync, lookups,
//! references, quotas and usage.

use pg_tenancy_e2e::*;

/// An application keyed by text: organizations `org_…` (and one whose id is a uuid held as text,
/// as Prisma's `String @default(uuid())` makes them), its memberships, and tenant tables whose
/// tenant column is text or varchar.
const TEXT_KEYED: &str = "
CREATE SCHEMA keyed;
CREATE TABLE keyed.organizations (id text PRIMARY KEY, name text NOT NULL);
-- Prisma's `enum Role`: NONE is a member without access.
CREATE TYPE keyed.\"Role\" AS ENUM ('OWNER', 'ADMIN', 'MEMBER', 'NONE');
CREATE TABLE keyed.memberships (
    org_id   text NOT NULL REFERENCES keyed.organizations (id) ON DELETE CASCADE,
    user_id  text NOT NULL,
    role     keyed.\"Role\" NOT NULL DEFAULT 'MEMBER',
    PRIMARY KEY (org_id, user_id)
);
CREATE TABLE keyed.contacts (
    org_id  text NOT NULL REFERENCES keyed.organizations (id),
    id      text NOT NULL,
    email   text NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE keyed.deals (
    org_id      varchar(64) NOT NULL REFERENCES keyed.organizations (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    contact_id  text NOT NULL,
    amount      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, contact_id) REFERENCES keyed.contacts (org_id, id)
);
CREATE TABLE keyed.api_keys (
    org_id  text NOT NULL REFERENCES keyed.organizations (id),
    digest  text NOT NULL UNIQUE,
    PRIMARY KEY (org_id, digest)
);
-- Prisma's `String @id @default(cuid())`, and the unique index it sometimes makes again.
CREATE TABLE keyed.notes (
    id      text PRIMARY KEY,
    org_id  text NOT NULL REFERENCES keyed.organizations (id),
    body    text NOT NULL
);
CREATE UNIQUE INDEX notes_id_key ON keyed.notes (id);
CREATE INDEX ON keyed.notes (org_id);
INSERT INTO keyed.organizations VALUES
    ('org_acme', 'Acme'), ('org_globex', 'Globex'), ('7c9e6679-7425-40de-944b-e07fc1f90ae7', 'Initech');
INSERT INTO keyed.memberships VALUES
    ('org_acme', 'alice', 'OWNER'), ('org_acme', 'bob', 'MEMBER'), ('org_globex', 'gina', 'OWNER'),
    ('7c9e6679-7425-40de-944b-e07fc1f90ae7', 'ian', 'OWNER'), ('org_acme', 'nora', 'NONE');
INSERT INTO keyed.contacts VALUES
    ('org_acme', 'cl9ebqhxk00008eqf1ixw2aay', 'wile@acme.test'),
    ('org_globex', 'cl9ebqhxk00018eqfc2v3f0kz', 'hank@globex.test'),
    ('7c9e6679-7425-40de-944b-e07fc1f90ae7', 'cl9ebqhxk00028eqf3j8rd0p1', 'peter@initech.test');
INSERT INTO keyed.deals (org_id, contact_id, amount) VALUES
    ('org_acme', 'cl9ebqhxk00008eqf1ixw2aay', 100), ('org_globex', 'cl9ebqhxk00018eqfc2v3f0kz', 200);
INSERT INTO keyed.api_keys VALUES ('org_globex', 'digest-of-globex');
INSERT INTO tenancy.resources (name, kind, label) VALUES ('contacts', 'count', 'Contacts'), ('deal_value', 'metric', 'Deal value');
";

fn text_policy() -> String {
    "random_ids = \"Prisma fills ids with @default(cuid())\"\n".to_string()
        + &example_policy()
            .replace("schemas = [\"app\"]", "schemas = [\"app\", \"keyed\"]")
            .replace("[quotas]\n", "[quotas]\ncontacts = { table = \"keyed.contacts\" }\n")
            .replace("[usage]\n", "[usage]\ndeal_value = { table = \"keyed.deals\", sum = \"amount\" }\n")
        + r#"
[tables."keyed.organizations"]
kind = "tenant"
tenant_column = "id"
insert = "none"
update = "admin"
delete = "owner"

[tables."keyed.memberships"]
kind = "tenant"
tenant_column = "org_id"
insert = "admin"
update = "admin"
delete = "admin"

[tables."keyed.contacts"]
kind = "tenant"

[tables."keyed.deals"]
kind = "tenant"

[tables."keyed.notes"]
kind = "tenant"

[tables."keyed.api_keys"]
kind = "tenant"
globally_unique = { digest = "API keys are looked up before the tenant is known" }

[organizations]
table = "keyed.organizations"

[memberships]
table = "keyed.memberships"
organization = "org_id"
user = "user_id"
role = "role"
roles = { OWNER = "owner", ADMIN = "admin", MEMBER = "member" }

[lookups]
api_key = { table = "keyed.api_keys", key = "digest" }
"#
}

fn plan(c: &mut postgres::Client, sql: &str) -> String {
    c.batch_execute("SET enable_seqscan = off").unwrap();
    let rows = c.query(&format!("EXPLAIN (COSTS OFF) {sql}"), &[]).unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

#[test]
fn text_keyed_organizations_and_tenant_columns_are_governed_like_uuid_ones() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(TEXT_KEYED).unwrap();
    apply_policy(&db, &text_policy());
    // The sync copied each organization under the uuid of its key; a uuid held as text is its
    // own id and needs no key of its own.
    let orgs = text(
        &mut admin,
        "SELECT string_agg(o.key || '=' || (o.id = tenancy.org_key_id(o.key))::text, ',' ORDER BY o.key)
           FROM tenancy.organizations o WHERE o.key IS NOT NULL",
    );
    assert_eq!(orgs.as_deref(), Some("7c9e6679-7425-40de-944b-e07fc1f90ae7=true,org_acme=true,org_globex=true"));
    assert_eq!(
        text(&mut admin, "SELECT tenancy.org_key_id('7c9e6679-7425-40de-944b-e07fc1f90ae7')::text").as_deref(),
        Some("7c9e6679-7425-40de-944b-e07fc1f90ae7")
    );
    assert_eq!(count(&mut admin, "tenancy.members WHERE org_id = tenancy.org_key_id('org_acme')"), 2);
    // Every key names one id: no DBA can give an organization a key that is not its own.
    let forged = error_of(
        &mut admin,
        "UPDATE tenancy.organizations SET key = 'org_globex2' WHERE id = tenancy.org_key_id('org_globex')",
    );
    assert_eq!(forged.code, "23514", "{}", forged.message);

    // A text primary key the application fills with cuids, declared by random_ids, with the
    // unique index on the same column again: one waiver.
    assert_eq!(
        text(&mut admin, "SELECT string_agg(columns || ': ' || reason, '; ') FROM tenancy.unique_waivers WHERE relation = 'keyed.notes'::regclass")
            .as_deref(),
        Some("id: random ids generated by the application: Prisma fills ids with @default(cuid())")
    );

    let mut c = db.app();
    let acme = "SELECT tenancy.set_context_key('org_acme', 'alice')";
    // Each organization reads its own rows of every table, by the application's own key.
    assert_eq!(
        in_context(&mut c, acme, "SELECT tenancy.current_org_key() || ':' || count(*) FROM keyed.contacts").unwrap(),
        vec!["org_acme:1"]
    );
    assert_eq!(in_context(&mut c, acme, "SELECT org_id::text FROM keyed.deals").unwrap(), vec!["org_acme"]);
    assert_eq!(in_context(&mut c, acme, "SELECT id FROM keyed.organizations").unwrap(), vec!["org_acme"]);
    let initech = "SELECT tenancy.set_context_key('7c9e6679-7425-40de-944b-e07fc1f90ae7', 'ian')";
    assert_eq!(in_context(&mut c, initech, "SELECT email FROM keyed.contacts").unwrap(), vec!["peter@initech.test"]);
    // The uuid of a key starts the same context.
    let by_uuid = "SELECT tenancy.set_context(tenancy.org_key_id('org_globex'), 'gina')";
    assert_eq!(in_context(&mut c, by_uuid, "SELECT email FROM keyed.contacts").unwrap(), vec!["hank@globex.test"]);
    // The role is the application's enum, mapped: NONE is no membership.
    assert_eq!(in_context(&mut c, acme, "SELECT tenancy.current_member_role()").unwrap(), vec!["owner"]);
    let none = in_context(&mut c, "SELECT tenancy.set_context_key('org_acme', 'nora')", "SELECT 1").unwrap_err();
    assert_eq!(none.code, "42501");
    // Not a member, or a key that differs by a letter's case: refused like any organization
    // the user does not belong to.
    for start in [
        "SELECT tenancy.set_context_key('org_globex', 'alice')",
        "SELECT tenancy.set_context_key('ORG_ACME', 'alice')",
        "SELECT tenancy.set_context_key('org_nope', 'alice')",
    ] {
        assert_eq!(in_context(&mut c, start, "SELECT 1").unwrap_err().code, "42501", "{start}");
    }
    // The refusal names the organization by the key it was given, the same whether it exists.
    for key in ["org_globex", "org_nope"] {
        let e =
            in_context(&mut c, &format!("SELECT tenancy.set_context_key('{key}', 'alice')"), "SELECT 1").unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.detail.as_deref()),
            (
                "permission denied to set tenant context",
                Some(format!("User \"alice\" is not an active member of organization \"{key}\".").as_str())
            )
        );
    }
    for (start, code) in [
        ("SELECT tenancy.set_context_key(NULL, 'alice')", "22023"),
        ("SELECT tenancy.set_context_key('  ', 'alice')", "22023"),
    ] {
        assert_eq!(in_context(&mut c, start, "SELECT 1").unwrap_err().code, code, "{start}");
    }
    // An organization switcher gets the application's keys (and the uuid's text for the
    // organization keyed by a uuid), for the user's organizations only.
    assert_eq!(
        in_context(
            &mut c,
            "SELECT tenancy.set_user_context('ian')",
            "SELECT string_agg(org_key, ',') FROM tenancy.user_organizations()"
        )
        .unwrap(),
        vec!["7c9e6679-7425-40de-944b-e07fc1f90ae7"]
    );
    assert_eq!(
        in_context(
            &mut c,
            acme,
            "SELECT string_agg(org_key || ':' || role, ',' ORDER BY org_key) FROM tenancy.user_organizations()"
        )
        .unwrap(),
        vec![format!("{ACME}:owner,org_acme:owner")]
    );
    // No context: nothing.
    assert_eq!(count(&mut c, "keyed.contacts"), 0);

    // Writes: the tenant column defaults to the context's key (text and varchar), another
    // organization's key is refused, and a reference into another organization reads as missing.
    in_context(&mut c, acme, "INSERT INTO keyed.contacts (id, email) VALUES ('cl9ebqhxk00038eqf', 'road@acme.test')")
        .unwrap();
    in_context(&mut c, acme, "INSERT INTO keyed.deals (contact_id, amount) VALUES ('cl9ebqhxk00038eqf', 40)").unwrap();
    assert_eq!(
        text(&mut admin, "SELECT string_agg(org_id, ',' ORDER BY id) FROM keyed.deals").as_deref(),
        Some("org_acme,org_globex,org_acme")
    );
    let foreign = in_context(
        &mut c,
        acme,
        "INSERT INTO keyed.contacts (org_id, id, email) VALUES ('org_globex', 'x', 'x@x.test')",
    )
    .unwrap_err();
    assert_eq!(foreign.code, "42501", "{}", foreign.message);
    let moved = in_context(&mut c, acme, "UPDATE keyed.contacts SET org_id = 'org_globex' RETURNING id").unwrap_err();
    assert_eq!(moved.code, "42501", "{}", moved.message);
    assert_eq!(
        in_context(&mut c, acme, "DELETE FROM keyed.contacts WHERE org_id = 'org_globex' RETURNING id").unwrap().len(),
        0
    );

    // Quotas count rows by the key, and usage meters by it.
    admin.batch_execute("SELECT tenancy.set_quota(tenancy.org_key_id('org_acme'), 'contacts', 2)").unwrap();
    let over =
        in_context(&mut c, acme, "INSERT INTO keyed.contacts (id, email) VALUES ('c3', 'c3@acme.test')").unwrap_err();
    assert_eq!(over.code, "53400", "{}", over.message);
    assert_eq!(
        text(
            &mut admin,
            "SELECT used::text FROM tenancy.quotas(tenancy.org_key_id('org_acme')) WHERE resource = 'contacts'"
        )
        .as_deref(),
        Some("2")
    );
    assert_eq!(
        text(&mut admin, "SELECT tenancy.usage(tenancy.org_key_id('org_acme'), 'deal_value')::text").as_deref(),
        Some("40")
    );

    // The application's key of an organization is a lookup away, before any context.
    let org = text(&mut c, "SELECT org_id::text FROM keyed.tenancy_lookup_api_key('digest-of-globex')");
    let globex = text(&mut admin, "SELECT tenancy.org_key_id('org_globex')::text");
    assert_eq!(org, globex);

    // The application's own writes to its memberships go through tenancy's rights: an owner adds
    // a member by the application's key; nobody adds one to another organization.
    in_context(&mut c, acme, "INSERT INTO keyed.memberships (org_id, user_id) VALUES ('org_acme', 'carol')").unwrap();
    assert_eq!(
        count(&mut admin, "tenancy.members WHERE org_id = tenancy.org_key_id('org_acme') AND user_id = 'carol'"),
        1
    );
    let elsewhere =
        in_context(&mut c, acme, "INSERT INTO keyed.memberships (org_id, user_id) VALUES ('org_globex', 'carol')")
            .unwrap_err();
    assert_eq!(elsewhere.code, "42501", "{}", elsewhere.message);
    let carol = "SELECT tenancy.set_context_key('org_acme', 'carol')";
    assert_eq!(in_context(&mut c, carol, "SELECT count(*)::text FROM keyed.contacts").unwrap(), vec!["2"]);

    // The sync: a new organization and membership (a DBA's), a rename, a deletion.
    admin
        .batch_execute(
            "INSERT INTO keyed.organizations VALUES ('org_hooli', 'Hooli');
             INSERT INTO keyed.memberships VALUES ('org_hooli', 'gavin', 'OWNER');
             UPDATE keyed.organizations SET name = 'Acme Corp' WHERE id = 'org_acme';",
        )
        .unwrap();
    let hooli = "SELECT tenancy.set_context_key('org_hooli', 'gavin')";
    assert_eq!(in_context(&mut c, hooli, "SELECT count(*)::text FROM keyed.contacts").unwrap(), vec!["0"]);
    assert_eq!(
        text(&mut admin, "SELECT name FROM tenancy.organizations WHERE key = 'org_acme'").as_deref(),
        Some("Acme Corp")
    );
    admin.batch_execute("DELETE FROM keyed.organizations WHERE id = 'org_hooli'").unwrap();
    assert_eq!(count(&mut admin, "tenancy.organizations WHERE key = 'org_hooli'"), 0);
    assert_eq!(in_context(&mut c, hooli, "SELECT 1").unwrap_err().code, "42501");

    // verify, given the policy file, writes rows keyed the application's way (organizations
    // as rows of keyed.organizations, which the sync copies) and proves every table; without
    // it, it says what it needs rather than passing the tables as global ones.
    let report = verify_with_policy(&db, &text_policy(), &["app_user"]);
    let shown = pg_tenancy_compiler::verify::render_human(&report);
    assert_eq!((report.leaks(), report.unverified()), (0, 0), "{shown}");
    let tables: Vec<&str> = report.results.iter().map(|r| r.table.as_str()).collect();
    for t in ["keyed.contacts", "keyed.deals", "keyed.memberships", "keyed.notes", "keyed.organizations"] {
        assert!(tables.contains(&t), "{t}: {shown}");
    }
    let report = pg_tenancy_compiler::verify::verify(
        &mut db.admin(),
        &pg_tenancy_compiler::verify::Options {
            schemas: vec!["keyed".into()],
            tenant_column: "org_id".into(),
            app_roles: vec!["app_user".into()],
        },
        None,
    )
    .unwrap();
    let unverified: Vec<&str> = report.unverified_tables.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        unverified,
        ["keyed.api_keys", "keyed.contacts", "keyed.deals", "keyed.memberships", "keyed.notes"],
        "{unverified:?}"
    );
    assert!(report.unverified_tables.iter().all(|(_, why)| why.contains("--policies")), "{report:?}");
    assert_eq!(report.leaks(), 0);

    // The policies compare the column with a parameter of the statement: an index condition,
    // no call per row, no InitPlan; the same for a varchar column.
    admin
        .batch_execute(
            "INSERT INTO keyed.contacts (org_id, id, email)
             SELECT 'org_globex', 'g' || g, 'g' || g || '@globex.test' FROM generate_series(1, 2000) g;
             ANALYZE keyed.contacts; ANALYZE keyed.deals;",
        )
        .unwrap();
    let mut e = db.admin();
    e.batch_execute(
        "SET tenancy.allow_explain = on; SET tenancy.session_context = on; SET ROLE app_user;
         SELECT tenancy.set_session_context_key('org_acme', 'alice');",
    )
    .unwrap();
    for sql in ["SELECT * FROM keyed.contacts WHERE id = 'c1'", "SELECT * FROM keyed.deals"] {
        let p = plan(&mut e, sql);
        assert!(p.contains("Index") && (p.contains("(org_id)::text = $") || p.contains("(org_id = $")), "{sql}:\n{p}");
        assert!(!p.contains("current_org") && !p.contains("InitPlan") && !p.contains("SubPlan"), "{sql}:\n{p}");
    }
}

/// An application keyed by integers: accounts with bigint ids, their users, and tenant tables
/// whose tenant column is a bigint or an integer.
const INTEGER_KEYED: &str = "
CREATE SCHEMA shop;
CREATE TABLE shop.accounts (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text NOT NULL);
CREATE TABLE shop.account_users (
    account_id  bigint NOT NULL REFERENCES shop.accounts (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL,
    level       smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, user_id)
);
CREATE TABLE shop.orders (
    account_id  integer NOT NULL REFERENCES shop.accounts (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    total       bigint NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE TABLE shop.order_notes (
    account_id  bigint NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    order_id    bigint NOT NULL,
    body        text NOT NULL,
    PRIMARY KEY (account_id, id),
    FOREIGN KEY (account_id, order_id) REFERENCES shop.orders (account_id, id)
);
INSERT INTO shop.accounts (id, name) VALUES (1, 'One'), (42, 'Forty-two');
INSERT INTO shop.account_users VALUES (1, 10, 2), (42, 7, 2), (42, 8, 0);
INSERT INTO shop.orders (account_id, total) VALUES (1, 100), (42, 4200), (42, 1);
INSERT INTO tenancy.resources (name, kind, label) VALUES ('orders', 'count', 'Orders');
";

fn integer_policy() -> String {
    example_policy()
        .replace("schemas = [\"app\"]", "schemas = [\"app\", \"shop\"]")
        .replace("[quotas]\n", "[quotas]\norders = { table = \"shop.orders\" }\n")
        + r#"
[tables."shop.accounts"]
kind = "tenant"
tenant_column = "id"
insert = "none"
update = "admin"
delete = "owner"

[tables."shop.account_users"]
kind = "tenant"
tenant_column = "account_id"
insert = "admin"
update = "admin"
delete = "admin"

[tables."shop.orders"]
kind = "tenant"
tenant_column = "account_id"

[tables."shop.order_notes"]
kind = "tenant"
tenant_column = "account_id"

[organizations]
table = "shop.accounts"

[memberships]
table = "shop.account_users"
organization = "account_id"
user = "user_id"
role = "level"
roles = { "0" = "member", "1" = "admin", "2" = "owner" }
"#
}

#[test]
fn integer_keyed_organizations_and_tenant_columns_are_governed_like_uuid_ones() {
    let db = TestDb::new();
    let mut admin = db.admin();
    admin.batch_execute(INTEGER_KEYED).unwrap();
    apply_policy(&db, &integer_policy());
    assert_eq!(
        text(&mut admin, "SELECT string_agg(key, ',' ORDER BY key) FROM tenancy.organizations WHERE key IS NOT NULL")
            .as_deref(),
        Some("1,42")
    );
    let mut c = db.app();
    let start = "SELECT tenancy.set_context_key('42', '7')";
    assert_eq!(
        in_context(&mut c, start, "SELECT tenancy.current_org_bigint()::text || ':' || count(*) FROM shop.orders")
            .unwrap(),
        vec!["42:2"]
    );
    assert_eq!(in_context(&mut c, start, "SELECT id::text FROM shop.accounts").unwrap(), vec!["42"]);
    // `042` and `+42` are other keys, of no organization: no way to reach account 42 but its own.
    for other in ["042", "+42", "42 ", "1"] {
        let s = format!("SELECT tenancy.set_context_key('{other}', '7')");
        assert_eq!(in_context(&mut c, &s, "SELECT 1").unwrap_err().code, "42501", "{other}");
    }
    // The tenant column (integer) defaults to the context's account; another account is refused.
    in_context(&mut c, start, "INSERT INTO shop.orders (total) VALUES (5)").unwrap();
    assert_eq!(count(&mut admin, "shop.orders WHERE account_id = 42"), 3);
    let foreign = in_context(&mut c, start, "INSERT INTO shop.orders (account_id, total) VALUES (1, 5)").unwrap_err();
    assert_eq!(foreign.code, "42501", "{}", foreign.message);
    // Quotas count an integer-keyed table by its key.
    admin.batch_execute("SELECT tenancy.set_quota(tenancy.org_key_id('42'), 'orders', 3)").unwrap();
    let over = in_context(&mut c, start, "INSERT INTO shop.orders (total) VALUES (6)").unwrap_err();
    assert_eq!(over.code, "53400", "{}", over.message);
    assert_eq!(
        text(&mut admin, "SELECT used::text FROM tenancy.quotas(tenancy.org_key_id('42')) WHERE resource = 'orders'")
            .as_deref(),
        Some("3")
    );
    // A note on another account's order reads like a note on a missing one (the foreign key's own
    // error, as for uuid keys).
    let order_of_one = text(&mut admin, "SELECT id::text FROM shop.orders WHERE account_id = 1").unwrap();
    let missing =
        in_context(&mut c, start, "INSERT INTO shop.order_notes (order_id, body) VALUES (999999, 'x')").unwrap_err();
    let other = in_context(
        &mut c,
        start,
        &format!("INSERT INTO shop.order_notes (order_id, body) VALUES ({order_of_one}, 'x')"),
    )
    .unwrap_err();
    assert_eq!(
        (missing.code.as_str(), other.code.as_str()),
        ("23503", "23503"),
        "{} / {}",
        missing.message,
        other.message
    );
    // A tenancy organization that has no integer key reads no integer-keyed row.
    let tenancy_org = text(&mut admin, "SELECT tenancy.create_organization('Plain', 'plain', 'u1')::text").unwrap();
    let plain = format!("SELECT tenancy.set_context('{tenancy_org}', 'u1')");
    assert_eq!(in_context(&mut c, &plain, "SELECT count(*)::text FROM shop.orders").unwrap(), vec!["0"]);
    assert_eq!(in_context(&mut c, &plain, "INSERT INTO shop.orders (total) VALUES (1)").unwrap_err().code, "42501");

    let mut e = db.admin();
    e.batch_execute(
        "SET tenancy.allow_explain = on; SET tenancy.session_context = on; SET ROLE app_user;
         SELECT tenancy.set_session_context_key('42', '7');",
    )
    .unwrap();
    let p = plan(&mut e, "SELECT * FROM shop.orders WHERE id = 3");
    assert!(p.contains("Index") && p.contains("account_id = $"), "{p}");
    assert!(!p.contains("current_org") && !p.contains("InitPlan"), "{p}");

    // verify writes rows with the application's integer keys and proves every table.
    let report = verify_with_policy(&db, &integer_policy(), &["app_user"]);
    let shown = pg_tenancy_compiler::verify::render_human(&report);
    assert_eq!((report.leaks(), report.unverified()), (0, 0), "{shown}");
    assert!(report.results.iter().any(|r| r.table.starts_with("shop.")), "{shown}");
}
