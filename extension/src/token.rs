//! Signed context tokens: `tenancy.set_context_token()` verifies a JWT inside the database and
//! starts the context its claims name (`sub`, `org_id`; `org_role` and `org_permissions` when
//! the key is trusted for roles), and `tenancy.postgrest_pre_request()` does it for PostgREST.
//!
//! Keys live in `tenancy.token_keys`, which only its owner (the DBA) reads or writes; this module
//! reads it straight from its heap, like [`crate::membership`] reads the members, so callers need
//! no privilege on it and no SQL runs. The algorithm is the key's, never the token's: a token
//! whose header names another algorithm is refused before any cryptography (no RS256 public key
//! can serve as an HS256 secret), and `alg: none` is refused outright. Verification is
//! [`jsonwebtoken`] with its RustCrypto backend.
//!
//! A backend keeps the keys it loaded and the tokens it verified (by SHA-256 of the token, until
//! `exp`) while the keys' generation in shared memory stays the same: any change to
//! `tenancy.token_keys` moves it at commit. A cached token still goes through the membership
//! check of [`crate::session`] on every call.

use crate::error::{self, TenancyError};
use crate::membership::{self, Table};
use crate::session::{self, Vouched};
use crate::{context::Scope, gucs};
use base64::Engine;
use foldhash::HashMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pgrx::pg_sys;
use pgrx::prelude::*;
use sha2::Digest;
use std::cell::RefCell;
use std::str::FromStr;

/// Longest token accepted, in bytes.
const MAX_TOKEN: usize = 16 * 1024;
/// Shortest HMAC secret accepted, in bytes (RFC 7518: at least the hash's size).
const MIN_SECRET: usize = 32;
/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX: i64 = 946_684_800;

/// A row of `tenancy.token_keys`, ready to verify with.
struct Key {
    kid: String,
    algorithm: Algorithm,
    decoding: Result<DecodingKey, String>,
    issuer: Option<String>,
    audience: Option<String>,
    /// Unix seconds.
    valid_from: i64,
    valid_until: Option<i64>,
    trust_claims: bool,
}

impl Key {
    fn valid_at(&self, now: i64) -> bool {
        self.valid_from <= now && self.valid_until.is_none_or(|until| now < until)
    }
}

/// What a verified token says.
#[derive(Clone)]
struct Verified {
    user: String,
    org: Option<pgrx::Uuid>,
    role: Option<String>,
    permissions: Option<Vec<String>>,
    trusted: bool,
    /// Unix seconds: the token's `exp`, and the end of its key's validity.
    exp: i64,
    key_until: Option<i64>,
}

thread_local! {
    /// The keys, as of the keys' generation they were loaded at.
    static KEYS: RefCell<Option<(u64, std::rc::Rc<Vec<Key>>)>> = const { RefCell::new(None) };
    /// Tokens verified, by SHA-256, with the keys' generation they were verified at.
    static VERIFIED: RefCell<HashMap<[u8; 32], (u64, Verified)>> = RefCell::new(HashMap::default());
}

fn refuse(reason: impl Into<String>, hint: Option<&str>) -> ! {
    TenancyError::TokenRefused { reason: reason.into(), detail: None, hint: hint.map(str::to_string) }.raise()
}

/// A PostgreSQL timestamp (microseconds since 2000-01-01) in Unix seconds.
fn unix_seconds(pg: i64) -> i64 {
    pg.div_euclid(1_000_000) + PG_EPOCH_UNIX
}

fn now_unix() -> i64 {
    // SAFETY: reads the clock.
    unix_seconds(unsafe { pg_sys::GetCurrentTimestamp() })
}

/// The algorithm's name for messages ("an RS256 key"): its JOSE name.
fn algorithm_name(a: Algorithm) -> String {
    format!("{a:?}")
}

/// Builds the verifying key of a `tenancy.token_keys` row: an HMAC secret (text, or a JWK of
/// kty `oct`) for HS*, a public key as PEM or JWK for the others. The error never quotes the key.
fn decoding_key(algorithm: Algorithm, key: &str) -> Result<DecodingKey, String> {
    use jsonwebtoken::AlgorithmFamily as F;
    let key = key.trim();
    let family = algorithm.family();
    let parsed = if key.starts_with('{') {
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_str(key).map_err(|e| format!("the key is not a valid JWK ({e})"))?;
        DecodingKey::from_jwk(&jwk).map_err(|e| format!("the JWK cannot be used ({e})"))?
    } else if key.starts_with("-----BEGIN") {
        if family == F::Hmac {
            return Err(format!(
                "an {} key is a shared secret, not a PEM key (a public key used as an HMAC secret lets anyone sign)",
                algorithm_name(algorithm)
            ));
        }
        let pem = key.as_bytes();
        match family {
            F::Rsa => DecodingKey::from_rsa_pem(pem),
            F::Ec => DecodingKey::from_ec_pem(pem),
            F::Ed => DecodingKey::from_ed_pem(pem),
            F::Hmac => unreachable!(),
        }
        .map_err(|e| format!("the PEM key cannot be used for {} ({e})", algorithm_name(algorithm)))?
    } else if family == F::Hmac {
        if key.len() < MIN_SECRET {
            return Err(format!("an {} secret must be at least {MIN_SECRET} bytes long", algorithm_name(algorithm)));
        }
        DecodingKey::from_secret(key.as_bytes()).map_err(|e| format!("the secret cannot be used ({e})"))?
    } else {
        return Err(format!("an {} key must be a public key in PEM or JWK form", algorithm_name(algorithm)));
    };
    if parsed.family() != family {
        return Err(format!("the key is not of the kind {} needs", algorithm_name(algorithm)));
    }
    if family == F::Hmac && parsed.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0) < MIN_SECRET {
        return Err(format!("an {} secret must be at least {MIN_SECRET} bytes long", algorithm_name(algorithm)));
    }
    Ok(parsed)
}

fn parse_algorithm(kid: &str, name: &str) -> Algorithm {
    Algorithm::from_str(name).unwrap_or_else(|_| {
        TenancyError::InvalidTokenKey { kid: kid.into(), reason: format!("unknown algorithm \"{name}\"") }.raise()
    })
}

fn token_keys_oid() -> pg_sys::Oid {
    // SAFETY: syscache lookups by name inside a transaction.
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true);
        let oid = pg_sys::get_relname_relid(c"token_keys".as_ptr(), schema);
        if oid == pg_sys::InvalidOid {
            TenancyError::TokenRefused {
                reason: "tenancy.token_keys does not exist".into(),
                detail: None,
                hint: Some("Update the extension: ALTER EXTENSION pg_tenancy UPDATE.".into()),
            }
            .raise()
        }
        oid
    }
}

/// The keys, loaded again when their generation moved.
fn keys() -> std::rc::Rc<Vec<Key>> {
    // Read before the scan takes its snapshot: a change committed after it moves it again.
    let generation = membership::keys_generation();
    if let Some(keys) = KEYS.with(|k| k.borrow().as_ref().filter(|(g, _)| *g == generation).map(|(_, k)| k.clone())) {
        return keys;
    }
    let mut keys = Vec::new();
    let table = Table::open(token_keys_oid());
    let kid = table.attnum(c"kid");
    let algorithm = table.attnum(c"algorithm");
    let key = table.attnum(c"key");
    let issuer = table.attnum(c"issuer");
    let audience = table.attnum(c"audience");
    let valid_from = table.attnum(c"valid_from");
    let valid_until = table.attnum(c"valid_until");
    let trust_claims = table.attnum(c"trust_claims");
    // SAFETY: the snapshot is registered around the scan; the columns are read with the types
    // the table declares (text, timestamptz as its int8 datum, boolean).
    membership::with_latest_snapshot(|snapshot| unsafe {
        table.scan(pg_sys::InvalidOid, snapshot, &mut [], |t, d| {
            let id: String = membership::column(t, d, kid).unwrap_or_default();
            let algorithm = parse_algorithm(&id, &membership::column::<String>(t, d, algorithm).unwrap_or_default());
            let material: String = membership::column(t, d, key).unwrap_or_default();
            keys.push(Key {
                decoding: decoding_key(algorithm, &material),
                kid: id,
                algorithm,
                issuer: membership::column(t, d, issuer),
                audience: membership::column(t, d, audience),
                valid_from: membership::column::<i64>(t, d, valid_from).map_or(i64::MIN, unix_seconds),
                valid_until: membership::column::<i64>(t, d, valid_until).map(unix_seconds),
                trust_claims: membership::column(t, d, trust_claims).unwrap_or(false),
            });
            true
        })
    });
    let keys = std::rc::Rc::new(keys);
    KEYS.with(|k| *k.borrow_mut() = Some((generation, keys.clone())));
    keys
}

/// The token's header, read by hand (not by the library) so that `alg: none` and unknown
/// algorithms get errors of their own.
struct TokenHeader {
    alg: String,
    kid: Option<String>,
    /// A key the header has twice ([`duplicate_key`]), refused once the signature verifies.
    twice: Option<String>,
}

fn header(token: &str) -> TokenHeader {
    let malformed = || refuse("it is not a JWT (header.payload.signature, base64url)", None);
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        malformed()
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).unwrap_or_else(|_| malformed());
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| malformed());
    let alg =
        value.get("alg").and_then(|a| a.as_str()).unwrap_or_else(|| refuse("its header names no algorithm", None));
    let kid = match value.get("kid") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(k)) => Some(k.clone()),
        Some(_) => refuse("its key id (kid) is not a string", None),
    };
    TokenHeader { alg: alg.to_string(), kid, twice: duplicate_key(&bytes) }
}

/// The first key a JSON object has twice at its top level. Parsers differ on which of the two
/// counts (serde_json: the last; others: the first), so a token with one means different things
/// to the identity provider, a gateway and the database: refused.
fn duplicate_key(json: &[u8]) -> Option<String> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut twice = None;
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                if !seen.insert(key.clone()) && twice.is_none() {
                    twice = Some(key);
                }
            }
            Ok(twice)
        }
    }
    use serde::Deserializer;
    serde_json::Deserializer::from_slice(json).deserialize_map(Keys).ok().flatten()
}

/// Refuses a token whose header (`twice`, from [`header`]) or payload has a key twice.
fn refuse_duplicate_keys(token: &str, twice: Option<&str>) {
    if let Some(key) = twice {
        refuse(format!("its header has \"{key}\" twice"), None)
    }
    let payload = token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
    if let Some(key) = duplicate_key(&bytes) {
        refuse(format!("its payload has \"{key}\" twice"), None)
    }
}

/// Verifies `token` and returns what it says, or raises 28000 with the reason.
fn verify(token: &str) -> Verified {
    if token.len() > MAX_TOKEN {
        refuse(format!("it is {} bytes long; tokens are at most {MAX_TOKEN} bytes", token.len()), None)
    }
    let now = now_unix();
    let leeway = i64::from(gucs::TOKEN_LEEWAY.get());
    let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    let generation = membership::keys_generation();
    let cached = VERIFIED.with(|v| v.borrow().get(&hash).filter(|(g, _)| *g == generation).map(|(_, v)| v.clone()));
    if let Some(v) = cached.filter(|v| now <= v.exp + leeway && v.key_until.is_none_or(|until| now < until)) {
        return v;
    }
    let TokenHeader { alg, kid, twice } = header(token);
    if alg.eq_ignore_ascii_case("none") {
        refuse("unsigned tokens (alg \"none\") are never accepted", None)
    }
    let Ok(algorithm) = Algorithm::from_str(&alg) else {
        refuse(
            format!("algorithm \"{alg}\" is not supported"),
            Some("Sign with HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA."),
        )
    };
    let keys = keys();
    let candidates: Vec<&Key> = match &kid {
        Some(kid) => {
            let Some(key) = keys.iter().find(|k| &k.kid == kid) else {
                refuse(
                    format!("unknown key id \"{kid}\""),
                    Some("The key ids a DBA registered are in tenancy.token_keys."),
                )
            };
            if key.valid_from > now {
                refuse(format!("key \"{kid}\" is not valid yet"), None)
            }
            if key.valid_until.is_some_and(|until| now >= until) {
                refuse(format!("key \"{kid}\" has expired"), Some("Sign with a current key."))
            }
            if key.algorithm != algorithm {
                refuse(
                    format!(
                        "the token is signed with {alg}, but key \"{kid}\" is an {} key",
                        algorithm_name(key.algorithm)
                    ),
                    None,
                )
            }
            vec![key]
        }
        // No kid: every current key of the token's algorithm may have signed it (rotation).
        None => {
            let current: Vec<&Key> = keys.iter().filter(|k| k.algorithm == algorithm && k.valid_at(now)).collect();
            if current.is_empty() {
                refuse(format!("the token names no key id (kid), and no current {alg} key exists"), None)
            }
            current
        }
    };
    let mut last = None;
    for key in candidates {
        let decoding = match &key.decoding {
            Ok(d) => d,
            Err(_) => {
                // The reason is the DBA's to see (registering the key again raises it): it is
                // about key material, which this caller must not learn anything of.
                last = Some(format!("key \"{}\" cannot be used", key.kid));
                continue;
            }
        };
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = leeway.unsigned_abs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &key.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &key.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        use jsonwebtoken::errors::ErrorKind as E;
        match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, decoding, &validation) {
            Ok(data) => {
                refuse_duplicate_keys(token, twice.as_deref());
                let v = claims(&data.claims, key.trust_claims, key.valid_until);
                VERIFIED.with(|c| {
                    let mut c = c.borrow_mut();
                    if c.len() >= 1024 {
                        c.clear();
                    }
                    c.insert(hash, (generation, v.clone()));
                });
                return v;
            }
            Err(e) => match e.kind() {
                E::InvalidSignature => last = Some("its signature does not verify".into()),
                E::ExpiredSignature => refuse("it has expired (exp)", Some("Get a fresh token.")),
                E::ImmatureSignature => refuse("it is not valid yet (nbf)", None),
                E::InvalidIssuer => {
                    refuse(format!("its issuer (iss) is not \"{}\"", key.issuer.as_deref().unwrap_or("")), None)
                }
                E::InvalidAudience => match &key.audience {
                    Some(aud) => refuse(format!("its audience (aud) is not \"{aud}\""), None),
                    None => refuse(
                        format!("it names an audience (aud), and key \"{}\" accepts none", key.kid),
                        Some("A DBA sets the audience this database accepts in tenancy.token_keys.audience."),
                    ),
                },
                E::MissingRequiredClaim(c) => refuse(format!("claim \"{c}\" is missing"), None),
                E::InvalidClaimFormat(c) => refuse(format!("claim \"{c}\" has the wrong type"), None),
                E::InvalidAlgorithm => refuse(format!("the token's algorithm is not key \"{}\"'s", key.kid), None),
                E::Base64(_) | E::Json(_) | E::Utf8(_) | E::InvalidToken => {
                    refuse("it is not a JWT (header.payload.signature, base64url)", None)
                }
                _ => last = Some("it could not be verified".into()),
            },
        }
    }
    refuse(last.unwrap_or_else(|| "its signature does not verify".into()), None)
}

/// The context claims of a verified token; `trusted`: its key trusts the token's role, and
/// `key_until` is the end of its key's validity.
fn claims(c: &serde_json::Map<String, serde_json::Value>, trusted: bool, key_until: Option<i64>) -> Verified {
    let string = |name: &str| match c.get(name) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => refuse(format!("claim \"{name}\" is not a string"), None),
    };
    let user = string("sub").unwrap_or_else(|| refuse("claim \"sub\" is missing", None));
    // Exactly the user the token names: no trimming (" alice" is not "alice"), no control
    // characters, at most MAX_USER_ID bytes.
    if user.is_empty() || user.trim() != user || user.chars().any(char::is_control) {
        refuse("claim \"sub\" is empty, or has surrounding blanks or control characters", None)
    }
    let user = session::user_id("sub", Some(&user)).to_string();
    let org = string("org_id").map(|o| match crate::context::parse_uuid(o.as_bytes()) {
        Some(bytes) if o.len() == 36 || o.len() == 32 => pgrx::Uuid::from_bytes(bytes),
        _ => refuse("claim \"org_id\" is not a uuid", None),
    });
    let permissions = match c.get("org_permissions") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(items)) => Some(
            items
                .iter()
                .map(|p| match p {
                    serde_json::Value::String(s) if !s.is_empty() && !s.contains(',') => s.clone(),
                    _ => refuse("claim \"org_permissions\" must be an array of permission names", None),
                })
                .collect(),
        ),
        Some(_) => refuse("claim \"org_permissions\" must be an array of permission names", None),
    };
    let exp = c.get("exp").and_then(serde_json::Value::as_i64).unwrap_or(0);
    Verified { user, org, role: string("org_role"), permissions, trusted, exp, key_until }
}

/// Starts the context a verified token names, for the current transaction.
fn start(v: &Verified) {
    let Some(org) = v.org else {
        // No organization: a user-only context (the organization switcher).
        return session::start_user_only(&v.user);
    };
    if v.trusted {
        let Some(role) = v.role.as_deref() else {
            refuse(
                "claim \"org_role\" is missing",
                Some("Its key trusts the token's member role (trust_claims), so the token must name one."),
            )
        };
        session::start(
            org,
            None,
            &v.user,
            Vouched::Trusted { role, permissions: v.permissions.as_deref() },
            Scope::Transaction,
        )
    } else {
        session::start(org, None, &v.user, Vouched::Member, Scope::Transaction)
    }
}

/// Sets the tenant context for the current transaction from a signed token (a JWT): `sub` is the
/// user and `org_id` the organization (without it, a user-only context). The token must verify
/// with a current key of `tenancy.token_keys`, with its `exp` (required) and `nbf` checked with
/// `tenancy.token_leeway` seconds of leeway, and the key's issuer and audience if it sets them.
/// The user must be an active member, whose role comes from `tenancy.members`, unless the key
/// trusts the token's `org_role` and `org_permissions`. Raises 28000 for a token that does not
/// verify, 42501 (as `set_context()`) for a user who is not a member.
#[pg_extern(volatile, parallel_unsafe)]
fn set_context_token(token: Option<&str>) {
    let token = error::non_empty("token", token);
    let verified = verify(token);
    start(&verified);
}

/// A configuration setting as text (None: not set or empty), for PostgREST's `request.*`
/// settings, which any role may set.
fn setting(name: &std::ffi::CStr) -> Option<String> {
    // SAFETY: missing_ok returns NULL for a setting that does not exist.
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        if value.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(value).to_string_lossy().into_owned()).filter(|v| !v.is_empty())
    }
}

/// PostgREST's `db-pre-request`: sets the tenant context for the request, or none for a request
/// without a token (every tenant table then reads as empty and refuses writes). By default it
/// verifies the bearer token of the request's `Authorization` header itself, exactly as
/// `set_context_token()` does. With `tenancy.postgrest_trust_claims = on` (a DBA's choice) it
/// takes `sub` and `org_id` from `request.jwt.claims`, trusting PostgREST's verification (any SQL
/// can set that setting, so only for deployments where the roles run no SQL of their own); the
/// membership is checked either way.
#[pg_extern(volatile, parallel_unsafe)]
fn postgrest_pre_request() {
    if gucs::POSTGREST_TRUST_CLAIMS.get() {
        // Claims any SQL can set: no context from them for a role that must show a signature.
        session::refuse_unless_any_mode("postgrest_pre_request");
        let Some(raw) = setting(c"request.jwt.claims") else { return };
        let given: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&raw).unwrap_or_else(|_| refuse("request.jwt.claims is not a JSON object", None));
        if !given.contains_key("sub") {
            // PostgREST's anonymous role: no context.
            return;
        }
        // Claims PostgREST verified: the membership is checked, the role never taken from them.
        return start(&claims(&given, false, None));
    }
    let Some(raw) = setting(c"request.headers") else { return };
    let headers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&raw).unwrap_or_else(|_| refuse("request.headers is not a JSON object", None));
    let Some(value) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")).map(|(_, v)| v) else {
        return;
    };
    let value = value.as_str().unwrap_or_else(|| refuse("the Authorization header is not a string", None));
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .unwrap_or_else(|| refuse("the Authorization header is not \"Bearer <token>\"", None));
    let verified = verify(token);
    start(&verified);
}

/// Trigger on `tenancy.token_keys`: AFTER INSERT OR UPDATE (row) refuses a key that cannot
/// verify anything, with the reason (never the key); AFTER each statement (and TRUNCATE) makes
/// every backend load the keys again and forget the tokens it verified, at commit.
#[pg_trigger]
fn token_keys_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
    if trigger.table_schema()? != "tenancy" || trigger.table_name()? != "token_keys" {
        TenancyError::UnregisteredTrigger {
            function: "token_keys_trigger",
            table: format!("{}.{}", trigger.table_schema()?, trigger.table_name()?),
            registrar: "pg_tenancy itself, on tenancy.token_keys",
        }
        .raise()
    }
    if matches!(trigger.level(), pgrx::PgTriggerLevel::Statement) {
        membership::keys_changed();
        return Ok(None);
    }
    let Some(new) = trigger.new() else { return Ok(None) };
    let kid: String = new.get_by_name("kid").ok().flatten().unwrap_or_default();
    let algorithm: String = new.get_by_name("algorithm").ok().flatten().unwrap_or_default();
    let material: String = new.get_by_name("key").ok().flatten().unwrap_or_default();
    let algorithm = parse_algorithm(&kid, &algorithm);
    if let Err(reason) = decoding_key(algorithm, &material) {
        TenancyError::InvalidTokenKey { kid, reason }.raise()
    }
    Ok(None)
}
