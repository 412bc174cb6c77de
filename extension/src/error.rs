//! Every error pg_tenancy raises, with its SQLSTATE, message, DETAIL and HINT kept in one place.
//!
//! Messages follow PostgreSQL's style: lowercase, no trailing period, names in double quotes.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// The valid role names, in rank order, for error messages that list them.
pub type RoleList = String;

#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("pg_tenancy must be loaded via shared_preload_libraries")]
    NotPreloaded,

    /// Refusal of `set_context`: the same text whether or not the organization exists, so that a
    /// caller cannot probe for other organizations' ids.
    #[error("permission denied to set tenant context")]
    ContextRefused { org_id: String, user_id: String },

    #[error("no tenant context")]
    NoContext { action: String },

    /// A write to a project-level table outside a project context.
    #[error("no project context")]
    NoProjectContext { action: String },

    /// Refusal of `set_project_context`: one text whether the project does not exist, is another
    /// organization's, or the user has no access to it.
    #[error("permission denied to set tenant context")]
    ProjectContextRefused { project_id: String, user_id: String },

    #[error("{message}")]
    PermissionDenied { message: String, detail: Option<String>, hint: Option<String> },

    #[error("invalid value for parameter \"{param}\": {reason}")]
    InvalidArgument { param: &'static str, reason: String, hint: Option<String> },

    #[error("unknown role \"{role}\"")]
    UnknownRole { role: String, valid: RoleList },

    #[error("unknown plan \"{plan}\"")]
    UnknownPlan { plan: String, valid: String },

    #[error("organization {org_id} does not exist")]
    UnknownOrganization { org_id: String },

    #[error("user \"{user_id}\" is not a member of organization {org_id}")]
    NotAMember { org_id: String, user_id: String },

    #[error("user \"{user_id}\" is already a member of organization {org_id}")]
    AlreadyAMember { org_id: String, user_id: String, role: String },

    #[error("organization slug \"{slug}\" is already taken")]
    SlugTaken { slug: String },

    #[error("organization id {org_id} is already in use")]
    OrgIdTaken { org_id: String },

    #[error("cannot {action} the last owner of organization {org_id}")]
    LastOwner { action: &'static str, org_id: String },

    #[error("corrupt tenant context: {0}")]
    CorruptContext(String),

    #[error("unknown resource \"{resource}\"")]
    UnknownResource { resource: String, valid: String },

    /// Over a quota: "project limit reached (10)".
    #[error("{} limit reached ({limit})", label.to_lowercase())]
    QuotaExceeded { label: String, limit: String, detail: String },

    #[error("pg_tenancy's quota counters are full")]
    CountersFull,

    #[error("cannot PREPARE a transaction that changed quota-limited rows")]
    PrepareWithQuota,

    #[error("cannot PREPARE a transaction that changed memberships, organizations or roles")]
    PrepareWithMembershipChange,

    /// A trigger function of pg_tenancy on a table it was not installed on by the DBA path.
    #[error("tenancy.{function}() is not registered for table {table}")]
    UnregisteredTrigger { function: &'static str, table: String, registrar: &'static str },

    #[error("EXPLAIN is not allowed on queries that row-level security applies to")]
    ExplainRefused,

    /// `debug_print_plan` prints the plan tree, estimates and all, to whoever asks for LOG
    /// messages.
    #[error("debug_print_plan is not allowed on queries that row-level security applies to")]
    DebugPlanRefused,

    #[error("LOCK TABLE in a mode that blocks writes is not allowed on table \"{table}\"")]
    TableLockRefused { table: String },

    #[error("permission denied to alter role \"{role}\": an application role may not change itself")]
    AlterOwnRoleRefused { role: String },

    #[error("permission denied to choose plan \"{plan}\"")]
    PlanNotSelfService { plan: String, allowed: String },

    #[error("cannot start a tenant context while cursor \"{cursor}\" from another context is open")]
    CursorFromAnotherContext { cursor: String },

    /// set_context() and friends inside a statement that read the organization when it started.
    #[error("cannot change the tenant context inside a statement that reads it")]
    ContextChangeInsideStatement,

    #[error("MERGE is not allowed on table \"{table}\", which row-level security applies to")]
    MergeRefused { table: String },

    #[error("too many quota counters in one transaction")]
    TooManyCounters { max: usize },

    /// An amount to count (a row's value, a usage call) outside 0..=max.
    #[error("value {amount} is out of range for {what}")]
    AmountOutOfRange { amount: i64, what: String, max: i64 },

    #[error("quota counter of resource \"{resource}\" is out of range")]
    CounterOutOfRange { resource: String },

    #[error("could not serialize access: the share that lets your organization write this row of {table} has ended")]
    ShareEndedMeanwhile { table: String },

    #[error("SET CONSTRAINTS ... IMMEDIATE is not allowed after passing a share on in this transaction")]
    ReshareCheckedEarly,

    #[error("the tenant context cursor \"{cursor}\" was opened under has ended")]
    CursorContextEnded { cursor: String },

    #[error("cursor \"{cursor}\" was opened under another tenant context")]
    CursorOfAnotherContext { cursor: String },

    #[error("WITH HOLD cursors are not allowed on queries that row-level security applies to")]
    HoldableCursorRefused { cursor: String },

    #[error("permission denied for function tenancy.{function}(): role \"{role}\" starts tenant contexts with signed tokens only")]
    TokenOnly { function: &'static str, role: String },

    #[error(
        "permission denied for function tenancy.set_session_context(): role \"{role}\" may not keep a session context"
    )]
    SessionContextRefused { role: String },

    /// A context token that does not verify. The reason never includes key material.
    #[error("context token refused: {reason}")]
    TokenRefused { reason: String, detail: Option<String>, hint: Option<String> },

    /// A row of tenancy.token_keys that cannot be used.
    #[error("invalid token key \"{kid}\": {reason}")]
    InvalidTokenKey { kid: String, reason: String },
}

impl TenancyError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            TenancyError::NotPreloaded => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            TenancyError::ContextRefused { .. }
            | TenancyError::ProjectContextRefused { .. }
            | TenancyError::NoContext { .. }
            | TenancyError::NoProjectContext { .. }
            | TenancyError::PermissionDenied { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
            TenancyError::InvalidArgument { .. }
            | TenancyError::UnknownRole { .. }
            | TenancyError::UnknownPlan { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            TenancyError::UnknownOrganization { .. } | TenancyError::NotAMember { .. } => ERRCODE_UNDEFINED_OBJECT,
            TenancyError::AlreadyAMember { .. } | TenancyError::SlugTaken { .. } | TenancyError::OrgIdTaken { .. } => {
                ERRCODE_UNIQUE_VIOLATION
            }
            TenancyError::LastOwner { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            TenancyError::CorruptContext(_) => ERRCODE_DATA_CORRUPTED,
            TenancyError::UnknownResource { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            TenancyError::QuotaExceeded { .. } => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            TenancyError::CountersFull => ERRCODE_OUT_OF_MEMORY,
            TenancyError::PrepareWithQuota | TenancyError::PrepareWithMembershipChange => ERRCODE_FEATURE_NOT_SUPPORTED,
            TenancyError::UnregisteredTrigger { .. }
            | TenancyError::ExplainRefused
            | TenancyError::DebugPlanRefused
            | TenancyError::TableLockRefused { .. }
            | TenancyError::AlterOwnRoleRefused { .. }
            | TenancyError::PlanNotSelfService { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
            TenancyError::CursorFromAnotherContext { .. }
            | TenancyError::ReshareCheckedEarly
            | TenancyError::ContextChangeInsideStatement => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            TenancyError::MergeRefused { .. } => ERRCODE_FEATURE_NOT_SUPPORTED,
            TenancyError::ShareEndedMeanwhile { .. } => ERRCODE_T_R_SERIALIZATION_FAILURE,
            TenancyError::CursorContextEnded { .. }
            | TenancyError::CursorOfAnotherContext { .. }
            | TenancyError::HoldableCursorRefused { .. }
            | TenancyError::TokenOnly { .. }
            | TenancyError::SessionContextRefused { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
            TenancyError::TokenRefused { .. } => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            TenancyError::InvalidTokenKey { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            TenancyError::TooManyCounters { .. } => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            TenancyError::AmountOutOfRange { .. } | TenancyError::CounterOutOfRange { .. } => {
                ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE
            }
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            TenancyError::ContextRefused { org_id, user_id } => Some(format!(
                "User \"{user_id}\" is not an active member of organization {org_id}."
            )),
            TenancyError::NoContext { action } => {
                Some(format!("{action} requires a tenant context, and none is set."))
            }
            TenancyError::NoProjectContext { action } => {
                Some(format!("{action} requires a project context; the context is the organization's."))
            }
            TenancyError::ProjectContextRefused { project_id, user_id } => Some(format!(
                "User \"{user_id}\" has no access to project {project_id}: it is not a project of an active organization the user is an active member of, or the project's role for the user is no access."
            )),
            TenancyError::PermissionDenied { detail, .. } => detail.clone(),
            TenancyError::UnknownRole { valid, .. } => Some(format!("Valid roles are: {valid}.")),
            TenancyError::UnknownPlan { valid, .. } => Some(format!("Valid plans are: {valid}.")),
            TenancyError::UnknownResource { valid, .. } => Some(format!("Valid resources are: {valid}.")),
            TenancyError::QuotaExceeded { detail, .. } => Some(detail.clone()),
            TenancyError::AlreadyAMember { role, .. } => {
                Some(format!("The user's current role is \"{role}\"."))
            }
            TenancyError::UnregisteredTrigger { registrar, .. } => Some(format!(
                "Its triggers work only on tables registered by {registrar}."
            )),
            TenancyError::ExplainRefused => Some(
                "A plan's row counts, timings and estimates tell about rows that the policies hide from this role.".into(),
            ),
            TenancyError::DebugPlanRefused => Some(
                "The plan's row estimates come from statistics of every organization's rows: stepping a bound through them finds other organizations' values.".into(),
            ),
            TenancyError::ContextChangeInsideStatement => Some(
                "A statement under row-level security reads the organization of the context once, when it starts; a context changed inside it (or while a cursor it opened is still open) would mix two contexts.".into(),
            ),
            TenancyError::MergeRefused { .. } => Some(
                "MERGE checks the target's UPDATE and DELETE policies as errors rather than filters, so it would tell whether another organization has rows in the table.".into(),
            ),
            TenancyError::TableLockRefused { .. } => Some(
                "Row-level security applies to this role here: the table holds every organization's rows, and such a lock would stop the others' writes.".into(),
            ),
            TenancyError::AlterOwnRoleRefused { role } => Some(format!(
                "Every organization's sessions run as \"{role}\": a setting or password it gave itself would apply to all of them."
            )),
            TenancyError::PlanNotSelfService { allowed, .. } => {
                Some(format!("Sign-up may choose the plans marked self_service in tenancy.plans: {allowed}."))
            }
            TenancyError::CursorFromAnotherContext { .. } => Some(
                "The cursor was declared WITH HOLD, and filled, under another organization or user: its rows would be readable in the new context.".into(),
            ),
            TenancyError::TooManyCounters { max } => Some(format!(
                "A transaction of an application role may write quota-limited rows of at most {max} organizations and resources."
            )),
            TenancyError::AmountOutOfRange { max, .. } => Some(format!("Each row or call counts 0 to {max}.")),
            TenancyError::CounterOutOfRange { .. } => {
                Some("The organization's use would leave the range of a bigint; the change is refused.".into())
            }
            TenancyError::PrepareWithMembershipChange => Some(
                "Sessions are told of membership changes when the transaction commits, which a prepared transaction does elsewhere.".into(),
            ),
            TenancyError::ShareEndedMeanwhile { .. } => Some(
                "The statement's snapshot still shows the share (a REPEATABLE READ transaction keeps the one it began with); it was ended or narrowed since.".into(),
            ),
            TenancyError::ReshareCheckedEarly => Some(
                "tenancy.share() checks a share passed on when the transaction commits, locking the share it passes on for that moment; checked now, the lock would keep the row's owner from revoking until the transaction ends.".into(),
            ),
            TenancyError::CursorContextEnded { .. } => Some(
                "The membership it was opened for was removed, demoted or suspended since: its remaining rows are no longer readable.".into(),
            ),
            TenancyError::TokenOnly { .. } => Some(
                "It (or the role this session logged in as) is a member of tenancy_token_only: a context names its user and organization only through a token signed by a key in tenancy.token_keys.".into(),
            ),
            TenancyError::SessionContextRefused { .. } => Some(
                "Behind a connection pool a session context reaches whoever gets the connection next; its tenancy.session_context is off.".into(),
            ),
            TenancyError::TokenRefused { detail, .. } => detail.clone(),
            TenancyError::CursorOfAnotherContext { .. } => Some(
                "Its rows are the organization and user it was opened for; the transaction has switched to another context since.".into(),
            ),
            TenancyError::HoldableCursorRefused { .. } => Some(
                "A holdable cursor's rows outlive the transaction and its tenant context: behind a connection pool, whoever gets the connection next could read them.".into(),
            ),
            _ => None,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            TenancyError::NotPreloaded => Some(
                "Add pg_tenancy to shared_preload_libraries in postgresql.conf and restart the server."
                    .into(),
            ),
            TenancyError::NoContext { .. } => Some(
                "Call tenancy.set_context(org_id, user_id) at the start of the transaction.".into(),
            ),
            TenancyError::NoProjectContext { .. } => Some(
                "Call tenancy.set_project_context(project_id, user_id) at the start of the transaction.".into(),
            ),
            TenancyError::PermissionDenied { hint, .. } => hint.clone(),
            TenancyError::InvalidArgument { hint, .. } => hint.clone(),
            TenancyError::AlreadyAMember { .. } => {
                Some("Use tenancy.update_member() to change a member's role.".into())
            }
            TenancyError::LastOwner { .. } => {
                Some("Make another member an owner first.".into())
            }
            TenancyError::SlugTaken { .. } => Some("Choose another slug.".into()),
            TenancyError::QuotaExceeded { label, .. } => {
                Some(format!("Upgrade the plan to get more {}.", plural(label)))
            }
            TenancyError::CountersFull => Some(
                "Raise tenancy.max_counters in postgresql.conf and restart the server.".into(),
            ),
            TenancyError::UnregisteredTrigger { .. } => Some(
                "pg_tenancy's trigger functions are installed by tenancy apply (as a superuser), not by CREATE TRIGGER.".into(),
            ),
            TenancyError::ExplainRefused => Some(
                "EXPLAIN as a DBA, or as a superuser SET tenancy.allow_explain = on and then SET ROLE to the application role.".into(),
            ),
            TenancyError::DebugPlanRefused => Some(
                "SET debug_print_plan = off; print plans as a DBA, or as a superuser SET tenancy.allow_explain = on and then SET ROLE to the application role.".into(),
            ),
            TenancyError::ContextChangeInsideStatement => Some(
                "Start the context in a statement of its own (SELECT tenancy.set_context(...)), and close open cursors first.".into(),
            ),
            TenancyError::MergeRefused { .. } => {
                Some("Use INSERT ... ON CONFLICT, or UPDATE and INSERT in one transaction.".into())
            }
            TenancyError::CursorFromAnotherContext { cursor } => {
                Some(format!("CLOSE {cursor} (or CLOSE ALL) first."))
            }
            TenancyError::TooManyCounters { .. } => Some("Commit more often.".into()),
            TenancyError::AlterOwnRoleRefused { .. } => {
                Some("A DBA changes application roles (ALTER ROLE as a superuser).".into())
            }
            TenancyError::PlanNotSelfService { .. } => {
                Some("A DBA moves an organization to another plan with tenancy.set_plan().".into())
            }
            TenancyError::TableLockRefused { .. } => {
                Some("Lock the rows instead (SELECT ... FOR UPDATE), or take a lock in ROW EXCLUSIVE mode at most.".into())
            }
            TenancyError::PrepareWithMembershipChange => Some("Commit it instead of preparing it.".into()),
            TenancyError::ShareEndedMeanwhile { .. } => Some("Retry the transaction.".into()),
            TenancyError::ReshareCheckedEarly => Some(
                "Set constraints IMMEDIATE before calling tenancy.share(), or pass the share on in a transaction of its own.".into(),
            ),
            TenancyError::CursorContextEnded { cursor } => Some(format!("CLOSE {cursor}, and set a context again.")),
            TenancyError::TokenOnly { .. } => Some("Call tenancy.set_context_token(token) instead.".into()),
            TenancyError::SessionContextRefused { role } => Some(format!(
                "Use tenancy.set_context() in each transaction, or declare \"{role}\" a session role in the policy file ([roles] session) and run tenancy apply."
            )),
            TenancyError::TokenRefused { hint, .. } => hint.clone(),
            TenancyError::CursorOfAnotherContext { cursor } => {
                Some(format!("CLOSE {cursor}, or switch back to the context it was opened under."))
            }
            TenancyError::HoldableCursorRefused { cursor } => Some(format!(
                "Declare {cursor} without WITH HOLD and read it within the transaction."
            )),
            _ => None,
        }
    }

    /// Raises this error as a PostgreSQL ERROR; does not return.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "pg_tenancy");
        if let Some(detail) = self.detail() {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

/// The argument's value, or 22023 "must not be null".
pub fn required<T>(param: &'static str, value: Option<T>) -> T {
    value.unwrap_or_else(|| {
        TenancyError::InvalidArgument { param, reason: "must not be null".into(), hint: None }.raise()
    })
}

/// The argument's value with surrounding blanks trimmed, or 22023 "must not be null or empty".
pub fn non_empty<'a>(param: &'static str, value: Option<&'a str>) -> &'a str {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => v,
        _ => TenancyError::InvalidArgument { param, reason: "must not be null or empty".into(), hint: None }.raise(),
    }
}

/// "Project" -> "projects", "Storage" -> "storage".
fn plural(label: &str) -> String {
    let l = label.to_lowercase();
    if l.ends_with('s') || l == "storage" {
        l
    } else {
        format!("{l}s")
    }
}

/// Raises a NOTICE-level report only for the WARNING case of context set outside a transaction.
pub fn warn(message: &str, hint: &str) {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_WARNING, message.to_string(), "pg_tenancy")
        .set_hint(hint.to_string())
        .report(PgLogLevel::WARNING);
}
