//! Signed context tokens (`tenancy.set_context_token()`), token-only and session roles, and
//! PostgREST's pre-request, as the application role over real connections: every kind of bad
//! token is refused with its own reason and no key material, rotation, membership still checked,
//! keys trusted for roles, and the requests PostgREST sends, replayed.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pg_tenancy_e2e::*;
use serde_json::{json, Value};

const SECRET: &str = "a-test-secret-of-at-least-thirty-two-bytes";

fn key_file(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("tests/fixtures/keys").join(name)).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims for `user` in `org` (None: no org_id), valid for ten minutes.
fn claims(user: &str, org: Option<&str>) -> Value {
    let mut c = json!({"sub": user, "exp": now() + 600, "iat": now()});
    if let Some(org) = org {
        c["org_id"] = json!(org);
    }
    c
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).unwrap()
}

fn hs256(kid: &str, claims: &Value) -> String {
    sign(Algorithm::HS256, Some(kid), claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap())
}

/// Registers a key as the DBA.
fn add_key(db: &TestDb, kid: &str, alg: &str, key: &str, extra: &str) {
    db.admin()
        .execute(
            &format!(
                "INSERT INTO tenancy.token_keys (kid, algorithm, key{}) VALUES ($1, $2, $3{})",
                extra_cols(extra),
                extra_vals(extra)
            ),
            &[&kid, &alg, &key],
        )
        .unwrap();
}

fn extra_cols(extra: &str) -> String {
    extra.split(';').filter(|e| !e.is_empty()).map(|e| format!(", {}", e.split_once('=').unwrap().0)).collect()
}

fn extra_vals(extra: &str) -> String {
    extra.split(';').filter(|e| !e.is_empty()).map(|e| format!(", {}", e.split_once('=').unwrap().1)).collect()
}

/// A context as its readers tell it: (organization, user, member role).
type Seen = (Option<String>, Option<String>, Option<String>);

/// Starts a transaction as app_user with the token's context and returns (org, user, role).
fn context_of(c: &mut postgres::Client, token: &str) -> Result<Seen, DbError> {
    c.batch_execute("BEGIN").unwrap();
    let result = c.execute("SELECT tenancy.set_context_token($1)", &[&token]).map_err(|e| DbError::of(&e)).map(|_| {
        let row = c
            .query_one(
                "SELECT tenancy.current_org()::text, tenancy.current_user_id(), tenancy.current_member_role()",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    });
    c.batch_execute("ROLLBACK").unwrap();
    result
}

fn refused(c: &mut postgres::Client, token: &str) -> DbError {
    let e = context_of(c, token).expect_err("the token must be refused");
    assert_eq!(e.code, "28000", "{e:?}");
    for secret in [SECRET, "MII", "BEGIN"] {
        assert!(!e.message.contains(secret) && !e.detail.clone().unwrap_or_default().contains(secret), "{e:?}");
    }
    e
}

#[test]
fn a_signed_token_sets_the_context_and_the_role_comes_from_the_members() {
    let db = TestDb::new();
    add_key(&db, "k1", "HS256", SECRET, "");
    let mut c = db.app();
    // The token says nothing of a role: alice's comes from tenancy.members.
    let (org, user, role) = context_of(&mut c, &hs256("k1", &claims("alice", Some(ACME)))).unwrap();
    assert_eq!((org.as_deref(), user.as_deref(), role.as_deref()), (Some(ACME), Some("alice"), Some("owner")));
    // A role claimed by the token is ignored unless the key trusts it.
    let mut claimed = claims("carol", Some(ACME));
    claimed["org_role"] = json!("owner");
    let (_, _, role) = context_of(&mut c, &hs256("k1", &claimed)).unwrap();
    assert_eq!(role.as_deref(), Some("member"));
    // Only ACME's rows, as with set_context().
    c.batch_execute("BEGIN").unwrap();
    c.execute("SELECT tenancy.set_context_token($1)", &[&hs256("k1", &claims("alice", Some(ACME)))]).unwrap();
    assert_eq!(count(&mut c, "app.projects WHERE org_id <> tenancy.current_org()"), 0);
    assert!(count(&mut c, "app.projects") > 0);
    c.batch_execute("COMMIT").unwrap();
    // The context lasted for the transaction only.
    assert_eq!(count(&mut c, "app.projects"), 0);
}

#[test]
fn a_token_for_someone_who_is_not_a_member_is_refused_like_set_context() {
    let db = TestDb::new();
    add_key(&db, "k1", "HS256", SECRET, "");
    let mut c = db.app();
    let gina_in_acme = context_of(&mut c, &hs256("k1", &claims("gina", Some(ACME)))).unwrap_err();
    let nobody =
        context_of(&mut c, &hs256("k1", &claims("gina", Some("00000000-0000-0000-0000-00000000dead")))).unwrap_err();
    assert_eq!(
        (gina_in_acme.code.as_str(), gina_in_acme.message.as_str()),
        ("42501", "permission denied to set tenant context")
    );
    assert_eq!((nobody.code.as_str(), nobody.message.as_str()), ("42501", "permission denied to set tenant context"));
    // A member removed after a token was issued (and verified once, so it is cached) is refused.
    let token = hs256("k1", &claims("carol", Some(ACME)));
    context_of(&mut c, &token).unwrap();
    db.admin()
        .batch_execute(&format!("DELETE FROM tenancy.members WHERE org_id = '{ACME}' AND user_id = 'carol'"))
        .unwrap();
    assert_eq!(context_of(&mut c, &token).unwrap_err().code, "42501");
}

#[test]
fn bad_tokens_are_refused_each_with_its_own_reason_and_no_key_material() {
    let db = TestDb::new();
    add_key(&db, "k1", "HS256", SECRET, "issuer='https://id.example';audience='crm'");
    add_key(&db, "rsa", "RS256", &key_file("rsa_public.pem"), "");
    let mut c = db.app();
    let good = || {
        let mut c = claims("alice", Some(ACME));
        c["iss"] = json!("https://id.example");
        c["aud"] = json!("crm");
        c
    };
    assert!(context_of(&mut c, &hs256("k1", &good())).is_ok());

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    let forged = sign(
        Algorithm::HS256,
        Some("k1"),
        &good(),
        &EncodingKey::from_secret(b"another-secret-of-thirty-two-bytes!!").unwrap(),
    );
    cases.push(("forged", forged, "context token refused: its signature does not verify"));
    let mut expired = good();
    expired["exp"] = json!(now() - 3600);
    cases.push(("expired", hs256("k1", &expired), "context token refused: it has expired (exp)"));
    let mut early = good();
    early["nbf"] = json!(now() + 3600);
    cases.push(("not yet valid", hs256("k1", &early), "context token refused: it is not valid yet (nbf)"));
    let mut audience = good();
    audience["aud"] = json!("billing");
    cases.push(("wrong audience", hs256("k1", &audience), "context token refused: its audience (aud) is not \"crm\""));
    let mut issuer = good();
    issuer["iss"] = json!("https://evil.example");
    cases.push((
        "wrong issuer",
        hs256("k1", &issuer),
        "context token refused: its issuer (iss) is not \"https://id.example\"",
    ));
    let mut no_exp = good();
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push(("no exp", hs256("k1", &no_exp), "context token refused: claim \"exp\" is missing"));
    cases.push(("unknown kid", hs256("k9", &good()), "context token refused: unknown key id \"k9\""));
    let mut padded = good();
    padded["sub"] = json!(" alice");
    cases.push((
        "padded sub",
        hs256("k1", &padded),
        "context token refused: claim \"sub\" is empty, or has surrounding blanks or control characters",
    ));
    // alg "none": an unsigned token.
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "kid": "k1"})), b64(&good()));
    // A claim given twice (parsers differ on which one counts), signed properly.
    let twice = {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let head = enc(r#"{"alg":"HS256","kid":"k1"}"#);
        let body = enc(&format!(
            r#"{{"sub":"alice","org_id":"{GLOBEX}","org_id":"{ACME}","exp":{},"iss":"https://id.example","aud":"crm"}}"#,
            now() + 600
        ));
        let mac = jsonwebtoken::crypto::sign(
            format!("{head}.{body}").as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{head}.{body}.{mac}")
    };
    cases.push(("a claim twice", twice, "context token refused: its payload has \"org_id\" twice"));
    cases.push(("alg none", none, "context token refused: unsigned tokens (alg \"none\") are never accepted"));
    // Algorithm confusion: the RS256 key's public PEM used as an HS256 secret.
    let confused = sign(
        Algorithm::HS256,
        Some("rsa"),
        &claims("alice", Some(ACME)),
        &EncodingKey::from_secret(key_file("rsa_public.pem").as_bytes()).unwrap(),
    );
    cases.push((
        "algorithm confusion",
        confused,
        "context token refused: the token is signed with HS256, but key \"rsa\" is an RS256 key",
    ));
    cases.push((
        "garbage",
        "not.a.jwt".into(),
        "context token refused: it is not a JWT (header.payload.signature, base64url)",
    ));

    let mut seen = std::collections::HashSet::new();
    for (case, token, message) in cases {
        let e = refused(&mut c, &token);
        assert_eq!(e.message, message, "{case}");
        assert!(seen.insert(e.message.clone()), "{case}: reasons must be distinct");
    }
}

#[test]
fn rsa_ec_and_eddsa_keys_verify_and_keys_rotate_without_downtime() {
    let db = TestDb::new();
    add_key(&db, "rsa", "RS256", &key_file("rsa_public.pem"), "");
    add_key(&db, "ec", "ES256", &key_file("ec_public.pem"), "");
    add_key(&db, "ed", "EdDSA", &key_file("ed_public.pem"), "");
    let mut c = db.app();
    let alice = claims("alice", Some(ACME));
    for (alg, kid, key) in [
        (Algorithm::RS256, "rsa", EncodingKey::from_rsa_pem(key_file("rsa_private.pem").as_bytes()).unwrap()),
        (Algorithm::ES256, "ec", EncodingKey::from_ec_pem(key_file("ec_private.pem").as_bytes()).unwrap()),
        (Algorithm::EdDSA, "ed", EncodingKey::from_ed_pem(key_file("ed_private.pem").as_bytes()).unwrap()),
    ] {
        let (org, ..) =
            context_of(&mut c, &sign(alg, Some(kid), &alice, &key)).unwrap_or_else(|e| panic!("{kid}: {e:?}"));
        assert_eq!(org.as_deref(), Some(ACME), "{kid}");
    }

    // Rotation: the old HS256 key and a new one are both current; tokens of either verify, and
    // a token without a kid is tried against both.
    add_key(&db, "old", "HS256", SECRET, "");
    let new_secret = "the-new-secret-of-at-least-thirty-two-bytes";
    add_key(&db, "new", "HS256", new_secret, "");
    let by_new = EncodingKey::from_secret(new_secret.as_bytes()).unwrap();
    let old_token = hs256("old", &alice);
    assert!(context_of(&mut c, &old_token).is_ok());
    assert!(context_of(&mut c, &sign(Algorithm::HS256, Some("new"), &alice, &by_new)).is_ok());
    assert!(context_of(&mut c, &sign(Algorithm::HS256, None, &alice, &by_new)).is_ok());
    // The old key expires: its tokens (even one verified and cached before) are refused.
    db.admin().batch_execute("UPDATE tenancy.token_keys SET valid_from = now() - interval '1 day', valid_until = now() WHERE kid = 'old'").unwrap();
    assert_eq!(refused(&mut c, &old_token).message, "context token refused: key \"old\" has expired");
    assert!(context_of(&mut c, &sign(Algorithm::HS256, None, &alice, &by_new)).is_ok());
    // A key deleted: unknown.
    db.admin().batch_execute("DELETE FROM tenancy.token_keys WHERE kid = 'new'").unwrap();
    assert_eq!(
        refused(&mut c, &sign(Algorithm::HS256, Some("new"), &alice, &by_new)).message,
        "context token refused: unknown key id \"new\""
    );
}

#[test]
fn a_key_that_could_not_verify_safely_is_refused_when_registered() {
    let db = TestDb::new();
    let mut admin = db.admin();
    for (alg, key, reason) in [
        ("HS256", "short", "an HS256 secret must be at least 32 bytes long"),
        ("HS256", key_file("rsa_public.pem").as_str(), "an HS256 key is a shared secret, not a PEM key"),
        ("RS256", SECRET, "an RS256 key must be a public key in PEM or JWK form"),
        ("ES256", key_file("rsa_public.pem").as_str(), "the PEM key cannot be used for ES256"),
    ] {
        let e = admin
            .execute("INSERT INTO tenancy.token_keys (kid, algorithm, key) VALUES ('k', $1, $2)", &[&alg, &key])
            .map_err(|e| DbError::of(&e))
            .unwrap_err();
        assert_eq!(e.code, "22023", "{alg}");
        assert!(e.message.starts_with(&format!("invalid token key \"k\": {reason}")), "{alg}: {}", e.message);
        assert!(!e.message.contains("MII") && !e.message.contains(SECRET), "{alg}: key material in {}", e.message);
    }
    // The application role cannot read or change the keys.
    let e = error_of(&mut db.app(), "SELECT * FROM tenancy.token_keys");
    assert_eq!(e.code, "42501");
    let e = error_of(
        &mut db.app(),
        &format!("INSERT INTO tenancy.token_keys (kid, algorithm, key) VALUES ('mine', 'HS256', '{SECRET}')"),
    );
    assert_eq!(e.code, "42501");
}

#[test]
fn a_key_trusted_for_roles_takes_the_role_from_the_token() {
    let db = TestDb::new();
    add_key(&db, "idp", "HS256", SECRET, "trust_claims=true");
    let mut c = db.app();
    // zed is in no tenancy.members row: the identity provider vouches for him.
    let mut zed = claims("zed", Some(ACME));
    zed["org_role"] = json!("admin");
    zed["org_permissions"] = json!(["documents.share"]);
    let (org, user, role) = context_of(&mut c, &hs256("idp", &zed)).unwrap();
    assert_eq!((org.as_deref(), user.as_deref(), role.as_deref()), (Some(ACME), Some("zed"), Some("admin")));
    c.batch_execute("BEGIN").unwrap();
    c.execute("SELECT tenancy.set_context_token($1)", &[&hs256("idp", &zed)]).unwrap();
    assert_eq!(text(&mut c, "tenancy.has_permission('documents.share')").as_deref(), Some("true"));
    assert_eq!(text(&mut c, "tenancy.has_role('admin')").as_deref(), Some("true"));
    c.batch_execute("ROLLBACK").unwrap();
    // The role must exist, and the token must name one.
    zed["org_role"] = json!("superadmin");
    assert_eq!(context_of(&mut c, &hs256("idp", &zed)).unwrap_err().code, "42501");
    zed.as_object_mut().unwrap().remove("org_role");
    assert_eq!(refused(&mut c, &hs256("idp", &zed)).message, "context token refused: claim \"org_role\" is missing");
    // A suspended organization ends it, trusted or not.
    let mut zed = claims("zed", Some(ACME));
    zed["org_role"] = json!("member");
    assert!(context_of(&mut c, &hs256("idp", &zed)).is_ok());
    db.admin()
        .batch_execute(&format!("UPDATE tenancy.organizations SET status = 'suspended' WHERE id = '{ACME}'"))
        .unwrap();
    assert_eq!(context_of(&mut c, &hs256("idp", &zed)).unwrap_err().code, "42501");
}

#[test]
fn a_token_without_an_organization_gives_a_user_only_context() {
    let db = TestDb::new();
    add_key(&db, "k1", "HS256", SECRET, "");
    let mut c = db.app();
    c.batch_execute("BEGIN").unwrap();
    c.execute("SELECT tenancy.set_context_token($1)", &[&hs256("k1", &claims("sam", None))]).unwrap();
    assert_eq!(text(&mut c, "tenancy.current_org()"), None);
    assert_eq!(text(&mut c, "tenancy.current_user_id()").as_deref(), Some("sam"));
    assert_eq!(count(&mut c, "tenancy.user_organizations('sam')"), 2);
    assert_eq!(count(&mut c, "app.projects"), 0);
    c.batch_execute("ROLLBACK").unwrap();
}

/// The example policy with one more read-write role, `role`, and `roles_extra` added to `[roles]`.
fn policy_with_role(role: &str, roles_extra: &str) -> String {
    example_policy()
        .replace("read_write = [\"app_user\"]", &format!("read_write = [\"app_user\", \"{role}\"]\n{roles_extra}"))
}

#[test]
fn a_token_only_role_cannot_name_a_user_itself() {
    let db = TestDb::new();
    add_key(&db, "k1", "HS256", SECRET, "");
    let role = TempRole::new(&db, "tok", "NOSUPERUSER NOBYPASSRLS");
    apply_policy(&db, &policy_with_role(&role.name, &format!("context = {{ {} = \"token\" }}", role.name)));
    let mut c = role.connect();
    for sql in [
        format!("SELECT tenancy.set_context('{ACME}', 'alice')"),
        format!("SELECT tenancy.set_session_context('{ACME}', 'alice')"),
        "SELECT tenancy.set_user_context('alice')".to_string(),
    ] {
        let e = error_of(&mut c, &sql);
        assert_eq!(e.code, "42501", "{sql}");
        assert!(e.message.contains("starts tenant contexts with signed tokens only"), "{sql}: {}", e.message);
        assert_eq!(e.hint.as_deref(), Some("Call tenancy.set_context_token(token) instead."));
    }
    // It cannot take itself out of tenancy_token_only, and DISCARD ALL changes nothing.
    assert_eq!(error_of(&mut c, &format!("REVOKE tenancy_token_only FROM {}", role.name)).code, "42501");
    c.batch_execute("DISCARD ALL").unwrap();
    assert_eq!(error_of(&mut c, &format!("SELECT tenancy.set_context('{ACME}', 'alice')")).code, "42501");
    assert_eq!(context_of(&mut c, &hs256("k1", &claims("alice", Some(ACME)))).unwrap().0.as_deref(), Some(ACME));
    // Switching to the role (as PostgREST's authenticator does) is the same as logging in as it.
    let authenticator = TempRole::new(&db, "auth", "NOINHERIT NOSUPERUSER NOBYPASSRLS");
    db.admin().batch_execute(&format!("GRANT {} TO {}", role.name, authenticator.name)).unwrap();
    let mut a = authenticator.connect();
    a.batch_execute(&format!("BEGIN; SET LOCAL ROLE {}", role.name)).unwrap();
    assert_eq!(error_of(&mut a, &format!("SELECT tenancy.set_context('{ACME}', 'alice')")).code, "42501");
    a.batch_execute("ROLLBACK").unwrap();
    // And a session that logged in as a token-only role stays one whatever role it switches to.
    db.admin().batch_execute(&format!("GRANT app_user TO {}", role.name)).unwrap();
    c.batch_execute("SET ROLE app_user").unwrap();
    assert_eq!(error_of(&mut c, &format!("SELECT tenancy.set_context('{ACME}', 'alice')")).code, "42501");
    // A deployment that trusts PostgREST's claims cannot get a context from them for it either.
    db.admin()
        .batch_execute(&format!(
            "ALTER ROLE {} IN DATABASE {} SET tenancy.postgrest_trust_claims = on",
            role.name, db.name
        ))
        .unwrap();
    let mut trusting = role.connect();
    trusting
        .batch_execute(&format!(
            "BEGIN; SELECT set_config('request.jwt.claims', '{{\"sub\": \"alice\", \"org_id\": \"{ACME}\"}}', true)"
        ))
        .unwrap();
    assert_eq!(error_of(&mut trusting, "SELECT tenancy.postgrest_pre_request()").code, "42501");
    // Another application role of the same policy keeps set_context(), until it is marked: an
    // open session learns of the mark by its next statement.
    let mut app = db.app();
    app.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'alice'); ROLLBACK")).unwrap();
    let other = TempRole::new(&db, "late", "NOSUPERUSER NOBYPASSRLS");
    let mut late = other.connect();
    late.batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'alice'); ROLLBACK")).unwrap();
    db.admin().batch_execute(&format!("GRANT tenancy_token_only TO {}", other.name)).unwrap();
    assert_eq!(error_of(&mut late, &format!("SELECT tenancy.set_context('{ACME}', 'alice')")).code, "42501");
}

#[test]
fn only_session_roles_keep_a_session_context() {
    let db = TestDb::new();
    let pooled = TempRole::new(&db, "pooled", "NOSUPERUSER NOBYPASSRLS");
    let interactive = TempRole::new(&db, "interactive", "NOSUPERUSER NOBYPASSRLS");
    let policy = example_policy()
        .replace(
            "read_write = [\"app_user\"]",
            &format!("read_write = [\"app_user\", \"{}\", \"{}\"]", pooled.name, interactive.name),
        )
        .replace("session = []", &format!("session = [\"{}\"]", interactive.name));
    apply_policy(&db, &policy);
    let e = error_of(&mut pooled.connect(), &format!("SELECT tenancy.set_session_context('{ACME}', 'alice')"));
    assert_eq!(e.code, "42501");
    assert_eq!(
        e.message,
        format!(
            "permission denied for function tenancy.set_session_context(): role \"{}\" may not keep a session context",
            pooled.name
        )
    );
    assert!(e.hint.unwrap().contains("[roles] session"));
    // The transaction-scoped context still works for it.
    pooled.connect().batch_execute(&format!("BEGIN; SELECT tenancy.set_context('{ACME}', 'alice'); COMMIT")).unwrap();
    let mut c = interactive.connect();
    c.batch_execute(&format!("SELECT tenancy.set_session_context('{ACME}', 'alice')")).unwrap();
    assert!(count(&mut c, "app.projects") > 0);
    // A pooled role cannot give itself one.
    assert_eq!(error_of(&mut pooled.connect(), "SET tenancy.session_context = on").code, "42501");
}

/// What PostgREST sends for one request, replayed: its transaction, `SET LOCAL ROLE`, the
/// request settings, the pre-request function, then the query.
fn postgrest_request(
    c: &mut postgres::Client,
    authorization: Option<&str>,
    claims: &Value,
    query: &str,
) -> Result<i64, DbError> {
    let headers = match authorization {
        Some(a) => json!({"authorization": a, "accept": "application/json"}),
        None => json!({"accept": "application/json"}),
    };
    c.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE").unwrap();
    let result = (|| {
        c.batch_execute("SET LOCAL ROLE app_user").map_err(|e| DbError::of(&e))?;
        c.execute(
            "SELECT set_config('search_path', 'app', true), set_config('role', 'app_user', true),
                    set_config('request.jwt.claims', $1, true), set_config('request.method', 'GET', true),
                    set_config('request.path', '/projects', true), set_config('request.headers', $2, true)",
            &[&claims.to_string(), &headers.to_string()],
        )
        .map_err(|e| DbError::of(&e))?;
        c.batch_execute("SELECT tenancy.postgrest_pre_request()").map_err(|e| DbError::of(&e))?;
        Ok(c.query_one(query, &[]).map_err(|e| DbError::of(&e))?.get::<_, i64>(0))
    })();
    c.batch_execute("COMMIT").ok();
    c.batch_execute("ROLLBACK").ok();
    result
}

#[test]
fn postgrest_requests_get_the_context_of_their_bearer_token() {
    let db = TestDb::new();
    add_key(&db, "k1", "HS256", SECRET, "");
    // PostgREST connects as an authenticator role and switches to the request's role.
    let authenticator = TempRole::new(&db, "authenticator", "NOINHERIT NOSUPERUSER NOBYPASSRLS");
    db.admin().batch_execute(&format!("GRANT app_user TO {}", authenticator.name)).unwrap();
    let mut c = authenticator.connect();
    let alice = claims("alice", Some(ACME));
    let gina = claims("gina", Some(GLOBEX));
    let other_orgs =
        "SELECT count(*) FROM app.projects WHERE org_id <> tenancy.current_org() OR tenancy.current_org() IS NULL";
    let mine = "SELECT count(*) FROM app.projects";
    // Alternating organizations on one connection: each request sees its own rows only.
    for _ in 0..3 {
        for (token_claims, org) in [(&alice, ACME), (&gina, GLOBEX)] {
            let bearer = format!("Bearer {}", hs256("k1", token_claims));
            assert_eq!(postgrest_request(&mut c, Some(&bearer), token_claims, other_orgs).unwrap(), 0);
            assert!(postgrest_request(&mut c, Some(&bearer), token_claims, mine).unwrap() > 0, "{org}");
        }
        // An anonymous request (no Authorization header) gets no context and no rows.
        assert_eq!(postgrest_request(&mut c, None, &json!({"role": "app_user"}), mine).unwrap(), 0);
    }
    // By default the claims PostgREST passes are not trusted: a forged request.jwt.claims with
    // no valid token behind it gets nothing.
    assert_eq!(postgrest_request(&mut c, None, &alice, mine).unwrap(), 0);
    let e = postgrest_request(&mut c, Some("Bearer forged.token.here"), &alice, mine).unwrap_err();
    assert_eq!(e.code, "28000");
    // A deployment that trusts PostgREST's verification (a DBA's setting) takes the claims.
    db.admin()
        .batch_execute(&format!(
            "ALTER ROLE {} IN DATABASE {} SET tenancy.postgrest_trust_claims = on",
            authenticator.name, db.name
        ))
        .unwrap();
    let mut trusting = authenticator.connect();
    assert!(postgrest_request(&mut trusting, None, &alice, mine).unwrap() > 0);
    // The membership is still checked.
    assert_eq!(postgrest_request(&mut trusting, None, &claims("gina", Some(ACME)), mine).unwrap_err().code, "42501");
}
