//! Organizations and their members: creating organizations, managing membership, and what an
//! organization switcher needs. Every function decides who may act from the real caller (a DBA,
//! or the context's member role) before touching the catalog as its owner.

use crate::catalog::{arg, count_latest, one, require_listed};
use crate::context;
use crate::error::{non_empty, required, TenancyError};
use crate::gucs;
use crate::privilege::{as_catalog_owner, caller_is_admin};
use crate::session::user_id as valid_user_id;
use pgrx::prelude::*;
use pgrx::Uuid;

/// Longest organization name accepted, in characters.
pub const MAX_NAME: usize = 200;

/// What the caller may do to an organization's membership.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Authority {
    /// A superuser or `tenancy_admin` member: any organization, no context needed.
    Dba,
    /// The context's member is an owner of this organization.
    Owner,
    /// The context's member holds `members.manage` in this organization.
    Manager,
    /// The context's member, acting only on themself.
    Member,
}

impl Authority {
    fn may_touch_owners(self) -> bool {
        matches!(self, Authority::Dba | Authority::Owner)
    }
}

fn check_role_exists(role: &str) {
    require_listed("roles", "rank DESC", role, |valid| TenancyError::UnknownRole { role: role.to_string(), valid });
}

fn denied(message: String) -> ! {
    TenancyError::PermissionDenied {
        message,
        detail: None,
        hint: Some("Set a context as an owner or admin of the organization, or connect as a tenancy_admin.".into()),
    }
    .raise()
}

/// The caller's authority over `org_id`, or a 42501 error that reads the same for organizations
/// that do not exist as for those the caller may not manage.
fn authority_over(org_id: Uuid, allow_self_service: bool) -> Authority {
    if caller_is_admin() {
        return Authority::Dba;
    }
    // The context as it stands now: a member removed or demoted since it was set has lost it.
    let now = context::current();
    if let (Some(org), Some(m)) = (now.org, now.member) {
        if org == org_id {
            // The organization's role, also in a project context (where a project's override
            // of it governs the project only).
            let (role, permissions) = m.role_at(context::Level::Organization);
            if role == "owner" {
                return Authority::Owner;
            }
            if permissions.split(',').any(|p| p == "members.manage") {
                return Authority::Manager;
            }
            if allow_self_service {
                return Authority::Member;
            }
        }
    }
    denied(format!("permission denied to manage members of organization {org_id}"))
}

/// Locks the organization row (serialising membership changes per organization, so that "the
/// last owner" is exact under concurrency) and raises if it does not exist. `FOR NO KEY UPDATE`:
/// it must not wait for transactions that merely reference the organization (a context's
/// first statement of the month records an active user, which takes a KEY SHARE lock on it).
fn lock_org(org_id: Uuid) {
    let found: Option<bool> =
        one("SELECT true FROM tenancy.organizations WHERE id = $1 FOR NO KEY UPDATE", &[org_id.into()]);
    if found.is_none() {
        TenancyError::UnknownOrganization { org_id: org_id.to_string() }.raise()
    }
}

fn member_role(org_id: Uuid, user_id: &str) -> Option<String> {
    one("SELECT role FROM tenancy.members WHERE org_id = $1 AND user_id = $2", &[org_id.into(), user_id.into()])
}

/// The organization's owners as committed now (the caller holds the organization's row lock, so
/// no other membership change is in flight): "the last owner" holds in REPEATABLE READ too.
fn owner_count(org_id: Uuid) -> i64 {
    count_latest(
        "SELECT count(*) FROM tenancy.members WHERE org_id OPERATOR(pg_catalog.=) $1 AND role OPERATOR(pg_catalog.=) 'owner'",
        &[arg(org_id)],
    )
}

fn valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Creates an organization and makes `owner_user_id` its owner; returns its id. Roles with
/// EXECUTE (`tenancy_writer`) may create one (sign-up) unless `tenancy.allow_signup` is off;
/// choosing the `id` (importing existing organizations) is for DBAs; a child organization needs
/// an admin of the parent, or a DBA. Slugs are public identifiers: a taken one is reported.
#[pg_extern(volatile, parallel_unsafe)]
fn create_organization(
    name: Option<&str>,
    slug: Option<&str>,
    owner_user_id: Option<&str>,
    plan: default!(Option<&str>, "'free'"),
    id: default!(Option<Uuid>, "NULL"),
    parent_id: default!(Option<Uuid>, "NULL"),
) -> Uuid {
    let name = non_empty("name", name);
    let slug = non_empty("slug", slug);
    let owner = valid_user_id("owner_user_id", owner_user_id);
    let plan = non_empty("plan", plan);
    let admin = caller_is_admin();
    if !admin && !gucs::ALLOW_SIGNUP.get() {
        TenancyError::PermissionDenied {
            message: "permission denied to create an organization".into(),
            detail: Some("Sign-up is turned off here: tenancy.allow_signup is off.".into()),
            hint: Some("Ask a DBA (a superuser or a member of tenancy_admin) to create it.".into()),
        }
        .raise()
    }
    if name.chars().count() > MAX_NAME {
        TenancyError::InvalidArgument {
            param: "name",
            reason: format!("is {} characters long", name.chars().count()),
            hint: Some(format!("Organization names are at most {MAX_NAME} characters.")),
        }
        .raise()
    }
    if !valid_slug(slug) {
        TenancyError::InvalidArgument {
            param: "slug",
            reason: format!("\"{slug}\" is not a valid slug"),
            hint: Some(
                "Use 1 to 63 lowercase letters, digits and hyphens, not starting or ending with a hyphen.".into(),
            ),
        }
        .raise()
    }
    // `org-<32 hex digits>` is the slug the sync of an application's organizations falls back to
    // for the organization with that id: nobody else may take it.
    let fallback = slug.len() == 36
        && slug.starts_with("org-")
        && slug[4..].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if fallback
        && id.map(|i| format!("org-{}", crate::context::uuid_text(&i).replace('-', ""))).as_deref() != Some(slug)
    {
        TenancyError::InvalidArgument {
            param: "slug",
            reason: format!("\"{slug}\" is reserved"),
            hint: Some("Slugs of the form org-<32 hex digits> belong to the organization with that id.".into()),
        }
        .raise()
    }
    if id.is_some() && !admin {
        denied("permission denied to choose an organization id".into())
    }
    if let Some(parent) = parent_id {
        let now = context::current();
        let parent_admin = now.org == Some(parent)
            && now
                .member
                .as_ref()
                .is_some_and(|m| m.role_at(context::Level::Organization).1.split(',').any(|x| x == "members.manage"));
        if !admin && !parent_admin {
            denied(format!("permission denied to create a child of organization {parent}"))
        }
        // Its owner gets the project's owner role: the creator, or anyone when an owner of the
        // organization creates it (never above the creator's own role).
        let org_owner = now.member.as_ref().is_some_and(|m| m.role_at(context::Level::Organization).0 == "owner");
        if !admin && !org_owner && now.user.as_deref() != Some(owner) {
            denied(format!(
                "permission denied to make \"{owner}\" the owner of a new project: only an owner of the organization can make another member one"
            ))
        }
    }
    as_catalog_owner(|| {
        require_listed("plans", "name", plan, |valid| TenancyError::UnknownPlan { plan: plan.to_string(), valid });
        // Sign-up chooses among the self-service plans only (a DBA moves an organization to any).
        if !admin {
            let self_service: Option<bool> =
                one("SELECT self_service FROM tenancy.plans WHERE name OPERATOR(pg_catalog.=) $1", &[plan.into()]);
            if self_service != Some(true) {
                let allowed: String = one(
                    "SELECT pg_catalog.string_agg(name, ', ' ORDER BY name) FROM tenancy.plans WHERE self_service",
                    &[],
                )
                .unwrap_or_default();
                TenancyError::PlanNotSelfService { plan: plan.to_string(), allowed }.raise()
            }
        }
        if let Some(parent) = parent_id {
            lock_org(parent);
            // A project's owner is one of its organization's members.
            if !admin && member_role(parent, owner).is_none() {
                TenancyError::NotAMember { org_id: parent.to_string(), user_id: owner.to_string() }.raise()
            }
        }
        let new_id: Option<Uuid> = one(
            "INSERT INTO tenancy.organizations (id, name, slug, plan, parent_id)
             VALUES (coalesce($1, gen_random_uuid()), $2, $3, $4, $5)
             ON CONFLICT DO NOTHING
             RETURNING id",
            &[id.into(), name.into(), slug.into(), plan.into(), parent_id.into()],
        );
        let Some(new_id) = new_id else {
            let slug_taken: Option<bool> =
                one("SELECT EXISTS (SELECT FROM tenancy.organizations WHERE slug = $1)", &[slug.into()]);
            if slug_taken == Some(true) {
                TenancyError::SlugTaken { slug: slug.to_string() }.raise()
            }
            TenancyError::OrgIdTaken { org_id: id.map(|i| i.to_string()).unwrap_or_default() }.raise()
        };
        // The owner of an organization; of a project (a child), the owner role in it.
        let owner_sql = if parent_id.is_some() {
            "INSERT INTO tenancy.project_members (project_id, user_id, role) VALUES ($1, $2, 'owner') RETURNING true"
        } else {
            "INSERT INTO tenancy.members (org_id, user_id, role) VALUES ($1, $2, 'owner') RETURNING true"
        };
        one::<bool>(owner_sql, &[new_id.into(), owner.into()]);
        new_id
    })
}

/// Adds a member with a role (default `member`). Owners and admins of the organization (under a
/// context) and DBAs may add members; only owners and DBAs may add an owner.
#[pg_extern(volatile, parallel_unsafe)]
fn add_member(org_id: Option<Uuid>, user_id: Option<&str>, role: default!(Option<&str>, "'member'")) {
    let org_id = required("org_id", org_id);
    let user_id = valid_user_id("user_id", user_id);
    let role = non_empty("role", role);
    let authority = authority_over(org_id, false);
    as_catalog_owner(|| {
        check_role_exists(role);
        if role == "owner" && !authority.may_touch_owners() {
            denied("permission denied to grant the owner role: only an owner can".into())
        }
        lock_org(org_id);
        if member_role(org_id, user_id).is_none() {
            crate::quota::check_members(org_id);
        }
        let added: Option<bool> = one(
            "INSERT INTO tenancy.members (org_id, user_id, role) VALUES ($1, $2, $3)
             ON CONFLICT (org_id, user_id) DO NOTHING RETURNING true",
            &[org_id.into(), user_id.into(), role.into()],
        );
        if added.is_none() {
            TenancyError::AlreadyAMember {
                org_id: org_id.to_string(),
                user_id: user_id.to_string(),
                role: member_role(org_id, user_id).unwrap_or_default(),
            }
            .raise()
        }
    })
}

/// Changes a member's role. Only owners and DBAs may grant or take away the owner role, and the
/// last owner can never be demoted.
#[pg_extern(volatile, parallel_unsafe)]
fn update_member(org_id: Option<Uuid>, user_id: Option<&str>, role: Option<&str>) {
    let org_id = required("org_id", org_id);
    let user_id = non_empty("user_id", user_id);
    let role = non_empty("role", role);
    let authority = authority_over(org_id, false);
    as_catalog_owner(|| {
        check_role_exists(role);
        lock_org(org_id);
        let Some(current) = member_role(org_id, user_id) else {
            TenancyError::NotAMember { org_id: org_id.to_string(), user_id: user_id.to_string() }.raise()
        };
        if (current == "owner" || role == "owner") && !authority.may_touch_owners() {
            denied("permission denied to change the owner role: only an owner can".into())
        }
        if current == "owner" && role != "owner" && owner_count(org_id) <= 1 {
            TenancyError::LastOwner { action: "demote", org_id: org_id.to_string() }.raise()
        }
        one::<bool>(
            "UPDATE tenancy.members SET role = $3, updated_at = now()
              WHERE org_id = $1 AND user_id = $2 RETURNING true",
            &[org_id.into(), user_id.into(), role.into()],
        );
    })
}

/// Removes a member. Owners, admins and DBAs may remove others (only owners and DBAs may remove
/// an owner); any member may leave. The last owner can never be removed.
#[pg_extern(volatile, parallel_unsafe)]
fn remove_member(org_id: Option<Uuid>, user_id: Option<&str>) {
    let org_id = required("org_id", org_id);
    let user_id = non_empty("user_id", user_id);
    let authority = authority_over(org_id, true);
    let leaving = context::current().user.as_deref() == Some(user_id);
    if authority == Authority::Member && !leaving {
        denied(format!("permission denied to manage members of organization {org_id}"))
    }
    as_catalog_owner(|| {
        lock_org(org_id);
        let Some(current) = member_role(org_id, user_id) else {
            TenancyError::NotAMember { org_id: org_id.to_string(), user_id: user_id.to_string() }.raise()
        };
        if current == "owner" && !authority.may_touch_owners() && !leaving {
            denied("permission denied to remove an owner: only an owner can".into())
        }
        if current == "owner" && owner_count(org_id) <= 1 {
            TenancyError::LastOwner { action: "remove", org_id: org_id.to_string() }.raise()
        }
        one::<bool>(
            "DELETE FROM tenancy.members WHERE org_id = $1 AND user_id = $2 RETURNING true",
            &[org_id.into(), user_id.into()],
        );
    })
}

/// Which of the context's roles may manage the overrides of `project_id`: the project's own (in
/// a context in that project), or the organization's (in a context of the project's
/// organization); None for a DBA. A 42501 otherwise, that reads the same for a project that does
/// not exist as for one of another organization.
fn authority_over_project(project_id: Uuid) -> Option<context::Level> {
    if caller_is_admin() {
        return None;
    }
    let refuse = || -> ! { denied(format!("permission denied to manage members of project {project_id}")) };
    let now = context::current();
    let Some(org) = now.org else { refuse() };
    let level = if context::current_project_id() == Some(project_id) {
        context::Level::Effective
    } else {
        let parent: Option<Uuid> =
            as_catalog_owner(|| one("SELECT parent_id FROM tenancy.organizations WHERE id = $1", &[project_id.into()]));
        if parent != Some(org) {
            refuse()
        }
        context::Level::Organization
    };
    if !context::has_permission_at("members.manage", level) && !context::has_role_at("owner", level) {
        refuse()
    }
    Some(level)
}

/// Refuses to give or take away a project role ranked above the caller's own (owners any).
fn within_own_rank(level: Option<context::Level>, role: &str, action: &str) {
    if let Some(level) = level {
        if !context::has_role_at(role, level) {
            denied(format!("permission denied to {action} project role \"{role}\": it ranks above your own"))
        }
    }
}

/// Refuses (callers other than DBAs) to set the project role of someone who is no member of the
/// project's organization (`setting`; a role left behind by a former member may be removed), or
/// to set or remove that of someone whose organization role ranks above the caller's own
/// organization role: a project's role, even its owner, never reaches over the organization's
/// managers.
fn may_override(level: Option<context::Level>, project_id: Uuid, user_id: &str, setting: bool) {
    if level.is_none() {
        return;
    }
    let org: Option<Uuid> = one("SELECT parent_id FROM tenancy.organizations WHERE id = $1", &[project_id.into()]);
    let org = org.unwrap_or_else(|| TenancyError::UnknownOrganization { org_id: project_id.to_string() }.raise());
    match member_role(org, user_id) {
        None if setting => TenancyError::NotAMember { org_id: org.to_string(), user_id: user_id.to_string() }.raise(),
        Some(org_role) if !context::has_role_at(&org_role, context::Level::Organization) => denied(format!(
            "permission denied to change the project role of \"{user_id}\": their organization role \"{org_role}\" ranks above your own"
        )),
        _ => {}
    }
}

/// The override of `user_id`'s role in `project_id`: None without one, Some(None) for no access.
fn project_override(project_id: Uuid, user_id: &str) -> Option<Option<String>> {
    let row: Option<Vec<Option<String>>> = one(
        "SELECT ARRAY[role] FROM tenancy.project_members WHERE project_id = $1 AND user_id = $2",
        &[project_id.into(), user_id.into()],
    );
    row.map(|r| r.into_iter().next().flatten())
}

/// Locks a project's row and raises if it is not a project (an organization with a parent).
fn lock_project(project_id: Uuid) {
    let found: Option<bool> = one(
        "SELECT true FROM tenancy.organizations WHERE id = $1 AND parent_id IS NOT NULL FOR NO KEY UPDATE",
        &[project_id.into()],
    );
    if found.is_none() {
        TenancyError::UnknownOrganization { org_id: project_id.to_string() }.raise()
    }
}

/// Sets a member's role in a project, overriding their organization role there; `role` NULL
/// means no access to the project. Managers of the project (`members.manage` in it), managers
/// of its organization and DBAs may, never above their own role.
#[pg_extern(volatile, parallel_unsafe)]
fn set_project_member(project_id: Option<Uuid>, user_id: Option<&str>, role: Option<&str>) {
    let project_id = required("project_id", project_id);
    let user_id = valid_user_id("user_id", user_id);
    // Only NULL means no access: a blank role is a mistake, not a lockout.
    let role = role.map(str::trim);
    if role == Some("") {
        TenancyError::InvalidArgument {
            param: "role",
            reason: "is blank".into(),
            hint: Some("Pass a role, or NULL for no access to the project.".into()),
        }
        .raise()
    }
    if role == Some("none") {
        TenancyError::InvalidArgument {
            param: "role",
            reason: "\"none\" is not a role".into(),
            hint: Some("Pass NULL for no access to the project.".into()),
        }
        .raise()
    }
    let level = authority_over_project(project_id);
    if let Some(role) = role {
        check_role_exists(role);
        within_own_rank(level, role, "grant");
    }
    as_catalog_owner(|| {
        lock_project(project_id);
        may_override(level, project_id, user_id, true);
        // The role now (None: no override, or no access): taking one away is like granting it.
        if let Some(Some(current)) = &project_override(project_id, user_id) {
            within_own_rank(level, current, "change");
        }
        one::<bool>(
            "INSERT INTO tenancy.project_members (project_id, user_id, role) VALUES ($1, $2, $3)
             ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()
             RETURNING true",
            &[project_id.into(), user_id.into(), role.into()],
        );
    })
}

/// Removes a member's override in a project (their organization role applies there again).
/// The same callers as `set_project_member()`, for overrides not ranked above their own role.
#[pg_extern(volatile, parallel_unsafe)]
fn remove_project_member(project_id: Option<Uuid>, user_id: Option<&str>) {
    let project_id = required("project_id", project_id);
    let user_id = non_empty("user_id", user_id);
    let level = authority_over_project(project_id);
    as_catalog_owner(|| {
        lock_project(project_id);
        may_override(level, project_id, user_id, false);
        let Some(current) = project_override(project_id, user_id) else {
            TenancyError::NotAMember { org_id: project_id.to_string(), user_id: user_id.to_string() }.raise()
        };
        if let Some(current) = &current {
            within_own_rank(level, current, "take away");
        }
        one::<bool>(
            "DELETE FROM tenancy.project_members WHERE project_id = $1 AND user_id = $2 RETURNING true",
            &[project_id.into(), user_id.into()],
        );
    })
}

/// Suspends (`suspended`) or reactivates (`active`) an organization. Suspended organizations
/// refuse new contexts. Owners (under a context) and DBAs may do this.
#[pg_extern(volatile, parallel_unsafe)]
fn set_organization_status(org_id: Option<Uuid>, status: Option<&str>) {
    let org_id = required("org_id", org_id);
    let status = non_empty("status", status);
    if status != "active" && status != "suspended" {
        TenancyError::InvalidArgument {
            param: "status",
            reason: format!("\"{status}\" is not a status"),
            hint: Some("Use 'active' or 'suspended'.".into()),
        }
        .raise()
    }
    if !authority_over(org_id, false).may_touch_owners() {
        denied(format!("permission denied to change the status of organization {org_id}"))
    }
    as_catalog_owner(|| {
        lock_org(org_id);
        one::<bool>(
            "UPDATE tenancy.organizations SET status = $2, updated_at = now() WHERE id = $1 RETURNING true",
            &[org_id.into(), status.into()],
        );
    })
}

/// Whose organizations the caller may ask about: `user_id`, or by default the context's user.
/// A role that is not a DBA may only ask about the context's own user (a user-only context,
/// `tenancy.set_user_context()`, is enough); for anyone else it gets 42501, the same whether or
/// not that user exists.
fn asked_user(user_id: Option<&str>, function: &str) -> Option<String> {
    let own = context::current().user;
    match user_id.map(str::trim).filter(|u| !u.is_empty()) {
        None => own,
        Some(user) if caller_is_admin() || own.as_deref() == Some(user) => Some(user.to_string()),
        Some(_) => TenancyError::PermissionDenied {
            message: format!("permission denied to call {function} for another user"),
            detail: Some("Without a DBA's rights it answers only for the user of the current context.".into()),
            hint: Some("Call tenancy.set_user_context(user_id) (or set_context) first and pass no user id.".into()),
        }
        .raise(),
    }
}

/// The organizations a user belongs to, with the role in each: what an organization switcher
/// shows before an organization is chosen. By default the context's user (set one with
/// `tenancy.set_user_context()`); DBAs may name any user. Suspended organizations are included,
/// with their status; `org_key` is the application's key of each (`tenancy.organizations.key`,
/// or the text of its id). Without a context (and not a DBA): no rows.
#[pg_extern(stable, parallel_unsafe)]
fn user_organizations(
    user_id: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(org_id, Uuid),
        name!(slug, String),
        name!(name, String),
        name!(role, String),
        name!(status, String),
        name!(org_key, String),
    ),
> {
    let Some(user) = asked_user(user_id, "tenancy.user_organizations()") else {
        return TableIterator::new(Vec::new());
    };
    let rows = as_catalog_owner(|| {
        Spi::connect(|client| {
            let table = client.select(
                "SELECT o.id, o.slug, o.name, m.role, o.status, COALESCE(o.key, o.id::pg_catalog.text)
                   FROM tenancy.members m JOIN tenancy.organizations o ON o.id OPERATOR(pg_catalog.=) m.org_id
                  WHERE m.user_id OPERATOR(pg_catalog.=) $1
                  ORDER BY o.name, o.slug",
                None,
                &[user.as_str().into()],
            )?;
            let mut out = Vec::new();
            for row in table {
                let Some(id) = row.get::<Uuid>(1)? else { continue };
                out.push((
                    id,
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                    row.get::<String>(4)?.unwrap_or_default(),
                    row.get::<String>(5)?.unwrap_or_default(),
                    row.get::<String>(6)?.unwrap_or_default(),
                ));
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
        .unwrap_or_else(|e| pgrx::error!("pg_tenancy: catalog query failed: {e}"))
    });
    TableIterator::new(rows)
}

/// The id of the organization with `slug`, for routing (`/acme/...`), if the user (by default the
/// context's) is a member; DBAs get any organization's. NULL otherwise, exactly as for a slug
/// that does not exist; without a context (and not a DBA): NULL.
#[pg_extern(stable, parallel_unsafe)]
fn org_id(slug: Option<&str>, user_id: default!(Option<&str>, "NULL")) -> Option<Uuid> {
    let slug = slug?;
    let admin = caller_is_admin();
    let user = asked_user(user_id, "tenancy.org_id()");
    if !admin && user.is_none() {
        return None;
    }
    let any_member = admin;
    as_catalog_owner(|| {
        one(
            "SELECT o.id FROM tenancy.organizations o
              WHERE o.slug OPERATOR(pg_catalog.=) $1
                AND ($2 OR EXISTS (SELECT FROM tenancy.members m
                                    WHERE m.org_id OPERATOR(pg_catalog.=) o.id AND m.user_id OPERATOR(pg_catalog.=) $3))",
            &[slug.into(), any_member.into(), user.into()],
        )
    })
}

#[cfg(test)]
mod unit {
    #[test]
    fn slugs_are_lowercase_words_joined_by_hyphens() {
        assert!(super::valid_slug("acme"));
        assert!(super::valid_slug("acme-2"));
        for bad in ["", "-acme", "acme-", "Acme", "ac me", "acmé", &"a".repeat(64)] {
            assert!(!super::valid_slug(bad), "{bad:?} should be rejected");
        }
    }
}
