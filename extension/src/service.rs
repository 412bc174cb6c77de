//! Service contexts: `tenancy.set_service_context(org, service)`, for work without a user
//! (background jobs, webhooks, imports) by the database roles the policy files allow it,
//! acting with the service's member role. The services live in `tenancy.services`, which
//! `tenancy apply` writes from the policy files' `[services]`.

use crate::context::Scope;
use crate::error::{self, TenancyError};
use crate::session::{self, Vouched};
use crate::{catalog, context, privilege};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Starts a context for `org` as service `service`, for the current transaction: the user is
/// `service:<name>`, with the service's member role, while the organization is active. Only the
/// roles the service names (and DBAs) may; for any other role, and for a service that does not
/// exist, the same 42501.
#[pg_extern(volatile, parallel_unsafe)]
fn set_service_context(org_id: Option<pgrx::Uuid>, service: Option<&str>) {
    session::refuse_unless_any_mode("set_service_context");
    start(error::required("org_id", org_id), None, service)
}

/// `set_service_context` for the organization with the application's key `org_key` (a text or
/// integer id, see `tenancy.org_key_id()`).
#[pg_extern(volatile, parallel_unsafe)]
fn set_service_context_key(org_key: Option<&str>, service: Option<&str>) {
    session::refuse_unless_any_mode("set_service_context_key");
    start(pgrx::Uuid::from_bytes(crate::key::key_argument("org_key", org_key)), org_key, service)
}

fn start(org_id: pgrx::Uuid, key: Option<&str>, service: Option<&str>) {
    let service = error::non_empty("service", service);
    // SAFETY: backend-local identity.
    let me = unsafe { pg_sys::GetUserId() };
    let dba = context::caller_bypasses_rls();
    let role: Option<String> = privilege::as_catalog_owner(|| {
        catalog::one(
            "SELECT s.member_role FROM tenancy.services s
              WHERE s.name = $1
                AND ($3 OR EXISTS (SELECT FROM pg_catalog.unnest(s.db_roles) AS r(name)
                                     JOIN pg_catalog.pg_roles pr ON pr.rolname = r.name
                                    WHERE pg_catalog.pg_has_role($2, pr.oid, 'MEMBER')))",
            &[service.into(), me.into(), dba.into()],
        )
    });
    let Some(role) = role else {
        TenancyError::PermissionDenied {
            message: format!("permission denied to act as service \"{service}\""),
            detail: Some(format!(
                "Either no service \"{service}\" exists, or role {} may not use it.",
                privilege::current_role_name()
            )),
            hint: Some("The policy files' [services] say which roles may use each service; run tenancy apply.".into()),
        }
        .raise()
    };
    session::start(
        org_id,
        key,
        &format!("{}{service}", session::SERVICE_PREFIX),
        Vouched::Service { role: &role },
        Scope::Transaction,
    )
}
