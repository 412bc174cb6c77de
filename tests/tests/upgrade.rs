//! `ALTER EXTENSION pg_tenancy UPDATE` from 0.1.0: a database upgraded with its data ends up with
//! exactly the objects of a fresh 0.6.0 install (through 0.2.0, 0.3.0, 0.4.0 and 0.5.0): functions (with their attributes and grants),
//! tables, constraints, indexes, triggers, policies, views, privileges and comments.

use pg_tenancy_e2e::*;

/// One line per object of the extension's schema, describing everything an upgrade must get
/// right, sorted.
const SNAPSHOT: &str = r#"
WITH acl AS (
    SELECT o.oid, string_agg(x.grantee || ':' || x.privilege_type, ',' ORDER BY x.grantee, x.privilege_type) AS grants
      FROM (SELECT oid, proacl AS a, proowner AS owner, 'f' AS kind FROM pg_proc
            UNION ALL SELECT oid, relacl, relowner, CASE WHEN relkind = 'S' THEN 's' ELSE 'r' END FROM pg_class) o,
           LATERAL (SELECT CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE e.grantee::regrole::text END AS grantee, e.privilege_type
                      FROM aclexplode(coalesce(o.a, acldefault(o.kind::"char", o.owner))) e) x
     GROUP BY o.oid
)
SELECT line FROM (
    SELECT 'function ' || p.oid::regprocedure || ' returns ' || pg_get_function_result(p.oid)
           || ' language ' || l.lanname || ' volatile ' || p.provolatile::text || ' strict ' || p.proisstrict
           || ' definer ' || p.prosecdef || ' parallel ' || p.proparallel::text || ' config ' || coalesce(p.proconfig::text, '')
           || ' defaults ' || coalesce(pg_get_expr(p.proargdefaults, 0), '') || ' grants ' || coalesce(a.grants, '')
           || ' source ' || md5(p.prosrc) AS line
      FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang LEFT JOIN acl a ON a.oid = p.oid
     WHERE p.pronamespace = 'tenancy'::regnamespace
    UNION ALL
    SELECT 'relation ' || c.oid::regclass || ' kind ' || c.relkind::text || ' rls ' || c.relrowsecurity || c.relforcerowsecurity
           || ' options ' || coalesce(c.reloptions::text, '') || ' grants ' || coalesce(a.grants, '')
           || ' comment ' || coalesce(obj_description(c.oid, 'pg_class'), '')
           || CASE WHEN c.relkind = 'v' THEN ' view ' || md5(pg_get_viewdef(c.oid)) ELSE '' END
      FROM pg_class c LEFT JOIN acl a ON a.oid = c.oid
     WHERE c.relnamespace = 'tenancy'::regnamespace
    UNION ALL
    SELECT 'column ' || a.attrelid::regclass || '.' || a.attnum || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' not null ' || a.attnotnull || ' default ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
           || ' identity ' || a.attidentity::text
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'tenancy'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint ' || k.conrelid::regclass || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid) || ' valid ' || k.convalidated
      FROM pg_constraint k WHERE k.connamespace = 'tenancy'::regnamespace
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'tenancy'::regnamespace
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'tenancy'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'policy ' || p.schemaname || '.' || p.tablename || ' ' || p.policyname || ' ' || p.permissive || ' ' || p.cmd
           || ' roles ' || array_to_string(ARRAY(SELECT unnest(p.roles) ORDER BY 1), ',')
           || ' using ' || coalesce(p.qual, '') || ' check ' || coalesce(p.with_check, '')
      FROM pg_policies p WHERE p.schemaname = 'tenancy'
    UNION ALL
    SELECT 'config ' || c::regclass || ' ' || coalesce(e.extcondition[i], '')
      FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS u(c, i) WHERE e.extname = 'pg_tenancy'
    UNION ALL
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
      FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'pg_tenancy'
) s ORDER BY 1"#;

fn snapshot(c: &mut postgres::Client) -> Vec<String> {
    c.query(SNAPSHOT, &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

/// A database of its own (not from the test template, which has 0.6.0 installed).
struct Scratch {
    name: String,
}

impl Scratch {
    fn new(suffix: &str) -> Scratch {
        let name = format!("e2e_upgrade_{}_{suffix}", std::process::id());
        let mut admin = postgres::Client::connect(&admin_url("postgres"), postgres::NoTls).unwrap();
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE); CREATE DATABASE {name}")).ok();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).ok();
        Scratch { name }
    }

    fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&admin_url(&self.name), postgres::NoTls).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&admin_url("postgres"), postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

#[test]
fn an_upgraded_0_1_0_database_matches_a_fresh_install_and_keeps_its_data() {
    let old = Scratch::new("old");
    let mut c = old.admin();
    c.batch_execute(
        "CREATE EXTENSION pg_tenancy VERSION '0.1.0';
         INSERT INTO tenancy.organizations (id, slug, name) VALUES ('a0000000-0000-0000-0000-000000000001', 'acme', 'Acme');
         INSERT INTO tenancy.members (org_id, user_id, role) VALUES ('a0000000-0000-0000-0000-000000000001', 'alice', 'owner');
         CREATE SCHEMA app;
         CREATE TABLE app.uploads (org_id uuid NOT NULL, bytes bigint NOT NULL);
         SELECT tenancy.enable_usage('bandwidth_bytes', 'app.uploads', amount_column => 'bytes');",
    )
    .unwrap();
    assert_eq!(
        text(&mut c, "SELECT extversion FROM pg_extension WHERE extname = 'pg_tenancy'").as_deref(),
        Some("0.1.0")
    );
    c.batch_execute("ALTER EXTENSION pg_tenancy UPDATE").unwrap();
    assert_eq!(
        text(&mut c, "SELECT extversion FROM pg_extension WHERE extname = 'pg_tenancy'").as_deref(),
        Some("0.6.0")
    );
    // The data is there, and the 0.1.0 [usage] table is registered (and meters updates now).
    assert_eq!(count(&mut c, "tenancy.members"), 1);
    assert_eq!(
        text(&mut c, "SELECT metric || ':' || relation::text || ':' || amount_column FROM tenancy.usage_sources")
            .as_deref(),
        Some("bandwidth_bytes:app.uploads:bytes")
    );
    assert_eq!(
        text(&mut c, "SELECT pg_get_triggerdef(oid) LIKE '%INSERT OR UPDATE OF bytes%' FROM pg_trigger WHERE tgname = 'tenancy_usage_bandwidth_bytes'")
            .as_deref(),
        Some("true")
    );
    let upgraded = snapshot(&mut c);

    let fresh = Scratch::new("fresh");
    let mut f = fresh.admin();
    f.batch_execute("CREATE EXTENSION pg_tenancy").unwrap();
    let installed = snapshot(&mut f);
    let only_upgraded: Vec<&String> = upgraded.iter().filter(|l| !installed.contains(l)).collect();
    let only_fresh: Vec<&String> = installed.iter().filter(|l| !upgraded.contains(l)).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgraded database differs from a fresh install:\n  only after the upgrade:\n    {}\n  only in a fresh install:\n    {}",
        only_upgraded.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n    "),
        only_fresh.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n    ")
    );
    assert!(installed.len() > 300, "the snapshot covers the extension ({} lines)", installed.len());
}
