//! Rules that `check` (policy files against a schema) and `lint` (any live database) both apply,
//! in one place so that they cannot disagree.

/// True when `default` (a column default, lowercased) makes the server generate a random uuid:
/// `gen_random_uuid()` or uuid-ossp's `uuid_generate_v4()`, schema-qualified or not.
pub fn is_random_uuid_default(default: &str) -> bool {
    let call = default.trim();
    let name = call.strip_suffix("()").unwrap_or("");
    let name = name.rsplit('.').next().unwrap_or("").trim_matches('"');
    matches!(name, "gen_random_uuid" | "uuid_generate_v4")
}

/// How a unique key (primary key, unique constraint or unique index) of a tenant table stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UniqueKey {
    /// It includes the tenant column: each organization's values are apart.
    TenantScoped,
    /// One uuid column the server fills with random values: a unique violation needs another
    /// organization's random id, which nothing reveals.
    RandomId,
    /// It includes every column of a foreign key to a tenant table that keeps each row's
    /// reference inside the row's own organization (the policies check it, or the key has the
    /// tenant column), and the target has no global rows: two organizations' rows never
    /// reference the same row, so they never have the same key. An organization cannot write a
    /// conflicting row: referencing another organization's row is refused first, like a missing
    /// one. The columns named.
    ScopedByReference(Vec<String>),
    /// The policy file declares it globally unique on purpose, for this reason.
    Waived(String),
    /// A unique violation tells one organization that another has this value.
    Unsafe,
}

/// A key column as the rule sees it.
#[derive(Clone, Copy)]
pub struct KeyColumn<'a> {
    /// None for an expression.
    pub name: Option<&'a str>,
    pub data_type: &'a str,
    pub default: Option<&'a str>,
    pub not_null: bool,
}

/// A unique key: its columns, and whether it treats NULLs as equal (`NULLS NOT DISTINCT`).
pub struct Key<'a> {
    pub columns: Vec<KeyColumn<'a>>,
    pub nulls_not_distinct: bool,
}

/// Judges a unique key of a tenant table whose tenant column is `tenant`. `references`: the
/// column lists of the table's foreign keys that stay inside the row's organization (see
/// [`UniqueKey::ScopedByReference`]); `waiver` is the reason the policy file gives for these
/// columns, if any.
pub fn unique_key(key: &Key, tenant: &str, references: &[Vec<String>], waiver: Option<&str>) -> UniqueKey {
    let columns = &key.columns;
    if columns.iter().any(|c| c.name == Some(tenant)) {
        return UniqueKey::TenantScoped;
    }
    // A NULL reference points at no row: with NULLS NOT DISTINCT, two organizations' NULLs
    // would conflict.
    let holds = |name: &str| columns.iter().any(|c| c.name == Some(name) && (c.not_null || !key.nulls_not_distinct));
    if let Some(fk) = references.iter().find(|fk| !fk.is_empty() && fk.iter().all(|c| holds(c))) {
        return UniqueKey::ScopedByReference(fk.clone());
    }
    if let [only] = columns.as_slice() {
        if only.name.is_some() && only.data_type == "uuid" && only.default.is_some_and(is_random_uuid_default) {
            return UniqueKey::RandomId;
        }
    }
    match waiver {
        Some(reason) => UniqueKey::Waived(reason.to_string()),
        None => UniqueKey::Unsafe,
    }
}

/// The key of a waiver: the key's columns as the policy file lists them, `a, b`.
pub fn waiver_key<'a>(columns: impl IntoIterator<Item = &'a str>) -> String {
    columns.into_iter().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col<'a>(name: &'a str, data_type: &'a str, default: Option<&'a str>) -> KeyColumn<'a> {
        KeyColumn { name: Some(name), data_type, default, not_null: true }
    }

    fn key<'a>(columns: impl IntoIterator<Item = KeyColumn<'a>>) -> Key<'a> {
        Key { columns: columns.into_iter().collect(), nulls_not_distinct: false }
    }

    fn unique_key(columns: &[KeyColumn], tenant: &str, waiver: Option<&str>) -> UniqueKey {
        let k = Key { columns: columns.iter().map(|c| KeyColumn { ..*c }).collect(), nulls_not_distinct: false };
        super::unique_key(&k, tenant, &[], waiver)
    }

    #[test]
    fn a_reference_inside_the_organization_scopes_a_key() {
        let refs = vec![vec!["customer_id".to_string()]];
        let metadata = key([col("customer_id", "uuid", None), col("key", "text", None)]);
        assert_eq!(super::unique_key(&metadata, "org_id", &refs, None), UniqueKey::ScopedByReference(refs[0].clone()));
        // Not a reference that stays inside the organization: nothing scopes it.
        assert_eq!(super::unique_key(&metadata, "org_id", &[vec!["plan_id".into()]], None), UniqueKey::Unsafe);
        // Every column of a two-column reference is needed.
        let two = vec![vec!["customer_id".to_string(), "kind".to_string()]];
        assert_eq!(super::unique_key(&metadata, "org_id", &two, None), UniqueKey::Unsafe);
        // NULLS NOT DISTINCT makes two organizations' NULL references conflict, unless the
        // column cannot be NULL.
        let nullable = KeyColumn { not_null: false, ..col("customer_id", "uuid", None) };
        let mut k = key([nullable, col("key", "text", None)]);
        assert!(matches!(super::unique_key(&k, "org_id", &refs, None), UniqueKey::ScopedByReference(_)));
        k.nulls_not_distinct = true;
        assert_eq!(super::unique_key(&k, "org_id", &refs, None), UniqueKey::Unsafe);
    }

    #[test]
    fn random_uuid_defaults_are_recognised() {
        for d in
            ["gen_random_uuid()", "public.gen_random_uuid()", "uuid_generate_v4()", "extensions.uuid_generate_v4()"]
        {
            assert!(is_random_uuid_default(d), "{d}");
        }
        for d in ["uuid_generate_v1()", "'00000000-0000-0000-0000-000000000000'::uuid", "nextval('s'::regclass)"] {
            assert!(!is_random_uuid_default(d), "{d}");
        }
    }

    #[test]
    fn keys_are_judged() {
        let random = col("id", "uuid", Some("gen_random_uuid()"));
        assert_eq!(unique_key(&[random], "org_id", None), UniqueKey::RandomId);
        let serial = col("id", "bigint", Some("nextval('t_id_seq'::regclass)"));
        assert_eq!(unique_key(&[serial], "org_id", None), UniqueKey::Unsafe);
        let email = col("email", "text", None);
        assert_eq!(
            unique_key(&[email], "org_id", Some("one account per address")),
            UniqueKey::Waived("one account per address".into())
        );
        let scoped = [col("org_id", "uuid", None), col("email", "text", None)];
        assert_eq!(unique_key(&scoped, "org_id", None), UniqueKey::TenantScoped);
        // A uuid the application supplies (no default) could be another organization's id.
        assert_eq!(unique_key(&[col("id", "uuid", None)], "org_id", None), UniqueKey::Unsafe);
    }
}
