//! Checks policy files against the schema and resolves them into the compiled model
//! ([`crate::model`]) that [`crate::emit`] turns into SQL. Deny by default: a table in a governed schema that no policy
//! covers is an error.

use crate::diagnostics::{Diagnostic, SourceId, Sources};
use crate::live::LiveFacts;
use crate::model::*;
use crate::policy::{Command, PolicyFile, TableKind, TablePolicy, MEMBER_ROLES};
use crate::schema::{builtin_type, Catalog, Origin, QualifiedName, Table};
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

pub const DEFAULT_TENANT_COLUMN: &str = "org_id";

/// A policy file read from disk and parsed.
pub struct ParsedFile {
    pub source: SourceId,
    pub file: PolicyFile,
}

/// Parses one policy file; a TOML error becomes a diagnostic at its position.
pub fn parse(sources: &Sources, source: SourceId) -> Result<ParsedFile, Diagnostic> {
    let text = &sources.get(source).text;
    toml::from_str::<PolicyFile>(text).map(|file| ParsedFile { source, file }).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        Diagnostic::error("tenancy::policy-syntax", e.message().to_string())
            .label(source, span, "here")
            .help("see README.md, \"Policy file reference\"")
    })
}

/// Settings that may appear in only one file, remembered with where they were set.
struct Setting<T> {
    value: T,
    source: SourceId,
    span: Range<usize>,
}

fn once<T>(
    sources: &Sources,
    slot: &mut Option<Setting<T>>,
    name: &str,
    source: SourceId,
    value: Option<Spanned<T>>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(value) = value else { return };
    let span = value.span();
    if let Some(previous) = slot {
        diags.push(
            Diagnostic::error("tenancy::duplicate-setting", format!("`{name}` is set in more than one policy file"))
                .label(source, span, "set again here")
                .help(format!(
                    "keep `{name}` in one file (it is first set in `{}`)",
                    sources.get(previous.source).path
                )),
        );
        return;
    }
    *slot = Some(Setting { value: value.into_inner(), source, span });
}

/// Checks parsed policy files against `catalog`. With `live`, also checks the application roles
/// and the extension in the live database.
pub fn check(
    sources: &Sources,
    files: Vec<ParsedFile>,
    catalog: &Catalog,
    live: Option<&LiveFacts>,
) -> Result<Compiled, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut schemas: Option<Setting<Vec<Spanned<String>>>> = None;
    let mut tenant_column: Option<Setting<String>> = None;
    let mut roles: Option<Setting<crate::policy::AppRoles>> = None;
    let mut defaults: Option<Setting<crate::policy::Commands>> = None;
    let mut organizations: Option<Setting<crate::policy::OrganizationsMap>> = None;
    let mut memberships: Option<Setting<crate::policy::MembershipsMap>> = None;
    let mut organization_column: Option<Setting<String>> = None;
    let mut projects: Option<Setting<crate::policy::ProjectsMap>> = None;
    let mut project_memberships: Option<Setting<crate::policy::ProjectMembershipsMap>> = None;
    let mut tables: Vec<(SourceId, Spanned<String>, Spanned<TablePolicy>)> = Vec::new();
    let mut implicit = None;
    let mut random_ids: Option<Setting<String>> = None;
    let mut quotas: Vec<(SourceId, Spanned<String>, Spanned<crate::policy::QuotaSource>)> = Vec::new();
    let mut usage: Vec<(SourceId, Spanned<String>, Spanned<crate::policy::QuotaSource>)> = Vec::new();
    let mut lookups: Vec<(SourceId, Spanned<String>, Spanned<crate::policy::Lookup>)> = Vec::new();
    let mut services: Vec<(SourceId, Spanned<String>, Spanned<crate::policy::Service>)> = Vec::new();
    let mut unscoped_views: Vec<(SourceId, Spanned<String>, Spanned<String>)> = Vec::new();
    let first_source = files.first().map(|f| f.source);

    for ParsedFile { source, file } in files {
        once(sources, &mut schemas, "schemas", source, file.schemas, &mut diags);
        once(sources, &mut tenant_column, "tenant_column", source, file.tenant_column, &mut diags);
        once(sources, &mut implicit, "implicit_tenant_tables", source, file.implicit_tenant_tables, &mut diags);
        once(sources, &mut random_ids, "random_ids", source, file.random_ids, &mut diags);
        once(sources, &mut roles, "roles", source, file.roles, &mut diags);
        once(sources, &mut defaults, "defaults", source, file.defaults, &mut diags);
        once(sources, &mut organizations, "organizations", source, file.organizations, &mut diags);
        once(sources, &mut memberships, "memberships", source, file.memberships, &mut diags);
        once(sources, &mut organization_column, "organization_column", source, file.organization_column, &mut diags);
        once(sources, &mut projects, "projects", source, file.projects, &mut diags);
        once(sources, &mut project_memberships, "project_memberships", source, file.project_memberships, &mut diags);
        for (key, policy) in file.tables {
            tables.push((source, key, policy));
        }
        for (key, reason) in file.materialized_views {
            unscoped_views.push((source, key, reason));
        }
        for (key, quota) in file.quotas {
            quotas.push((source, key, quota));
        }
        for (key, metric) in file.usage {
            usage.push((source, key, metric));
        }
        for (key, lookup) in file.lookups {
            lookups.push((source, key, lookup));
        }
        for (key, service) in file.services {
            services.push((source, key, service));
        }
    }

    let Some(schemas) = schemas.filter(|s| !s.value.is_empty()) else {
        let mut d = Diagnostic::error("tenancy::missing-schemas", "no governed schemas: `schemas` is missing or empty")
            .help("add e.g. `schemas = [\"app\"]`: every table in these schemas must then be covered by a policy");
        if let Some(src) = first_source {
            d = d.label(src, 0..0, "in this file");
        }
        diags.push(d);
        return Err(diags);
    };
    let governed: Vec<String> = schemas.value.iter().map(|s| s.get_ref().clone()).collect();
    for s in &schemas.value {
        if !catalog.has_schema(s.get_ref()) {
            diags.push(
                Diagnostic::error("tenancy::unknown-schema", format!("schema `{}` has no tables", s.get_ref()))
                    .label(schemas.source, s.span(), "governed here")
                    .help("check the spelling, or that the schema files (or the database) define its tables"),
            );
        }
    }

    let (read_write, read_only) = match &roles {
        Some(r) if !(r.value.read_write.is_empty() && r.value.read_only.is_empty()) => (
            r.value.read_write.iter().map(|s| s.get_ref().clone()).collect::<Vec<_>>(),
            r.value.read_only.iter().map(|s| s.get_ref().clone()).collect::<Vec<_>>(),
        ),
        _ => {
            let mut d = Diagnostic::error(
                "tenancy::missing-app-roles",
                "no application roles: `roles.read_write` and `roles.read_only` are both missing or empty",
            )
            .help("add e.g. `[roles]` with `read_write = [\"app_user\"]`: policies apply to these database roles");
            if let Some(r) = &roles {
                d = d.label(r.source, r.span.clone(), "declared here");
            } else if let Some(src) = first_source {
                d = d.label(src, 0..0, "in this file");
            }
            diags.push(d);
            (vec![], vec![])
        }
    };
    let (session, token_only) = match &roles {
        Some(r) => context_roles(r, &read_write, &read_only, &mut diags),
        None => (vec![], vec![]),
    };
    if let (Some(live), Some(r)) = (live, &roles) {
        check_live_roles(live, r, catalog, &governed, &mut diags);
    }
    // Two levels (project contexts, tenancy.project_members) came with 0.6.0.
    let min_version = if projects.is_some() { MIN_PROJECTS_EXTENSION_VERSION } else { MIN_EXTENSION_VERSION };
    if let (Some(live), Some(src)) = (live, first_source) {
        if !live.extension_installed {
            diags.push(
                Diagnostic::error("tenancy::extension-missing", "the pg_tenancy extension is not installed in this database")
                    .label(src, 0..0, "these policies need it")
                    .help("run `CREATE EXTENSION pg_tenancy;` as a superuser (the server needs shared_preload_libraries = 'pg_tenancy')"),
            );
        } else if version_below(&live.extension_version, min_version) {
            diags.push(
                Diagnostic::error(
                    "tenancy::extension-outdated",
                    format!(
                        "pg_tenancy {} is installed in this database; these policies need {min_version} or later",
                        live.extension_version
                    ),
                )
                .label(src, 0..0, "these policies need it")
                .help("install the new library (make install), restart the server, then run `ALTER EXTENSION pg_tenancy UPDATE;` as a superuser"),
            );
        }
    }

    // Check in file order, so "first" and "again" mean what a reader sees.
    tables.sort_by_key(|(source, key, _)| (*source, key.span().start));
    let default_column = tenant_column.as_ref().map_or(DEFAULT_TENANT_COLUMN.to_string(), |t| t.value.clone());
    if let Some(on) = implicit.as_ref().filter(|i: &&Setting<bool>| i.value) {
        // The tables the entries name (their own errors are reported below, once).
        let named: std::collections::BTreeSet<QualifiedName> = tables
            .iter()
            .filter_map(|(source, key, _)| {
                resolve(catalog, &governed, *source, key, &mut Vec::new(), &mut Vec::new()).map(|t| t.name.clone())
            })
            .collect();
        for schema in &governed {
            for table in catalog.tables_in_schema(schema) {
                // Partitions are covered with their table.
                if named.contains(&table.name)
                    || table.partition_of.is_some()
                    || table.column(&default_column).is_none()
                {
                    continue;
                }
                let span = on.span.clone();
                let policy = TablePolicy {
                    kind: Spanned::new(span.clone(), TableKind::Tenant),
                    level: None,
                    tenant_column: None,
                    read_write: None,
                    read_only: None,
                    id_column: None,
                    visibility_column: None,
                    share_permission: None,
                    globally_unique: BTreeMap::new(),
                    global_rows: None,
                    user_rows: None,
                    parent: None,
                    user_column: None,
                    co_members: None,
                    reason: None,
                    select: None,
                    insert: None,
                    update: None,
                    delete: None,
                };
                tables.push((
                    on.source,
                    Spanned::new(span.clone(), table.name.to_string()),
                    Spanned::new(span, policy),
                ));
            }
        }
    }
    let levels = check_levels(
        catalog,
        &governed,
        organizations.as_ref(),
        memberships.as_ref(),
        organization_column.as_ref(),
        projects.as_ref(),
        project_memberships.as_ref(),
        &mut diags,
    );
    // Child tables' declared levels, checked against their parents' (check_children).
    let mut child_levels: BTreeMap<QualifiedName, (SourceId, Spanned<crate::policy::Level>)> = BTreeMap::new();
    let mut covered: BTreeMap<QualifiedName, (SourceId, Range<usize>)> = BTreeMap::new();
    let mut waivers: Waivers = BTreeMap::new();
    let mut compiled_tables = Vec::new();
    // Tables an ambiguous key could mean: not reported again as uncovered.
    let mut maybe_covered: Vec<QualifiedName> = Vec::new();

    for (source, key, policy) in &tables {
        let Some(table) = resolve(catalog, &governed, *source, key, &mut diags, &mut maybe_covered) else {
            continue;
        };
        if let Some((prev_source, prev_span)) = covered.get(&table.name) {
            let mut d = Diagnostic::error(
                "tenancy::duplicate-table",
                format!("table `{}` has more than one policy", table.name),
            )
            .label(*source, key.span(), "covered again here");
            d = if prev_source == source {
                d.label(*source, prev_span.clone(), "first covered here").help("merge the two policies")
            } else {
                d.help(format!("merge the two policies (the first is in `{}`)", sources.get(*prev_source).path))
            };
            diags.push(d);
            continue;
        }
        covered.insert(table.name.clone(), (*source, key.span()));
        for (columns, reason) in &policy.get_ref().globally_unique {
            waivers.entry(table.name.clone()).or_default().push((*source, columns.clone(), reason.clone()));
        }
        let policy = policy.get_ref();
        if *policy.kind.get_ref() != TableKind::Shareable {
            for (name, value) in [
                ("id_column", &policy.id_column),
                ("visibility_column", &policy.visibility_column),
                ("share_permission", &policy.share_permission),
            ] {
                if let Some(v) = value {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::not-shareable",
                            format!("`{name}` is set, but table `{}` is not shareable", table.name),
                        )
                        .label(
                            *source,
                            v.span(),
                            format!("only for `kind = \"shareable\"`, not `{}`", policy.kind.get_ref().key()),
                        )
                        .help("make the table `kind = \"shareable\"`, or remove this line"),
                    );
                }
            }
        }
        if *policy.kind.get_ref() != TableKind::Identity {
            for (name, span) in [
                ("user_column", policy.user_column.as_ref().map(Spanned::span)),
                ("co_members", policy.co_members.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::not-identity",
                            format!("`{name}` is set, but table `{}` is not an identity table", table.name),
                        )
                        .label(
                            *source,
                            span,
                            format!("only for `kind = \"identity\"`, not `{}`", policy.kind.get_ref().key()),
                        )
                        .help("make the table `kind = \"identity\"`, or remove this line"),
                    );
                }
            }
        }
        let with_tenant_column =
            matches!(policy.kind.get_ref(), TableKind::Tenant | TableKind::Shareable) && policy.parent.is_none();
        if let Some(u) = policy.user_rows.as_ref().filter(|_| !with_tenant_column) {
            diags.push(
                Diagnostic::error(
                    "tenancy::user-rows-kind",
                    format!("`user_rows` is set, but table `{}` has no tenant column of its own", table.name),
                )
                .label(*source, u.span(), "only for tenant and shareable tables with a tenant column")
                .help("make the table `kind = \"tenant\"`, or remove this line"),
            );
        }
        if let Some(g) = policy.global_rows.as_ref().filter(|g| *g.get_ref() && !with_tenant_column) {
            diags.push(
                Diagnostic::error(
                    "tenancy::global-rows-kind",
                    format!("`global_rows` is set, but table `{}` has no tenant column of its own", table.name),
                )
                .label(*source, g.span(), "only for tenant and shareable tables with a tenant column")
                .help("a global table's rows are all global already: remove this line, or make the table `kind = \"tenant\"`"),
            );
        }
        if let Some(level) = &policy.level {
            if levels.is_none() {
                diags.push(
                    Diagnostic::error(
                        "tenancy::level-without-projects",
                        format!("`level` is set on `{}`, but the policy files have no `[projects]`", table.name),
                    )
                    .label(*source, level.span(), "a tenant level")
                    .help("levels exist with two tenant levels only: add `[projects]` (the application's projects table), or remove this line"),
                );
            } else if !matches!(policy.kind.get_ref(), TableKind::Tenant | TableKind::Shareable) {
                diags.push(
                    Diagnostic::error(
                        "tenancy::level-kind",
                        format!("`level` is set, but table `{}` is not a tenant table", table.name),
                    )
                    .label(*source, level.span(), format!("not used by `kind = \"{}\"`", policy.kind.get_ref().key()))
                    .help("only tenant and shareable tables belong to an organization or a project: remove this line"),
                );
            } else if policy.parent.is_some() {
                child_levels.insert(table.name.clone(), (*source, level.clone()));
            }
        }
        let kind = match policy.kind.get_ref() {
            TableKind::Global => {
                for command in [Command::Insert, Command::Update, Command::Delete] {
                    if let Some(v) = policy.command(command).filter(|v| !v.get_ref().is_none()) {
                        diags.push(
                            Diagnostic::error(
                                "tenancy::global-table-write",
                                format!("global table `{}` cannot allow `{}`", table.name, command.key()),
                            )
                            .label(*source, v.span(), "global tables are written only by DBAs")
                            .help("remove this line, or make the table `kind = \"tenant\"`"),
                        );
                    }
                }
                if let Some(tc) = &policy.tenant_column {
                    diags.push(
                        Diagnostic::error("tenancy::global-table-tenant-column", "a global table has no tenant column")
                            .label(*source, tc.span(), "not used by global tables"),
                    );
                }
                CompiledKind::Global
            }
            TableKind::Unscoped => {
                for command in Command::ALL {
                    if let Some(v) = policy.command(command) {
                        diags.push(
                            Diagnostic::error(
                                "tenancy::unscoped-table-rule",
                                format!("unscoped table `{}` has no per-command rules", table.name),
                            )
                            .label(*source, v.span(), "not used by unscoped tables")
                            .help("its writers are `read_write`, its readers `read_only`; remove this line"),
                        );
                    }
                }
                let reason = policy.reason.as_ref().map(|r| r.get_ref().trim().to_string()).filter(|r| !r.is_empty());
                let Some(reason) = reason else {
                    diags.push(
                        Diagnostic::error("tenancy::missing-reason", format!("unscoped table `{}` has no reason", table.name))
                            .label(*source, policy.kind.span(), "unscoped here")
                            .help("an application-wide table is an exception: say why, `reason = \"...\"` (lint lists it with the reason)"),
                    );
                    continue;
                };
                CompiledKind::Unscoped { reason }
            }
            TableKind::Identity => {
                for command in Command::ALL {
                    if let Some(v) = policy.command(command) {
                        diags.push(
                            Diagnostic::error(
                                "tenancy::identity-table-rule",
                                format!("identity table `{}` has no per-command rules", table.name),
                            )
                            .label(*source, v.span(), "not used by identity tables")
                            .help("each user reads their own row and those of the organization's members, and writes only their own; remove this line"),
                        );
                    }
                }
                if let Some(tc) = &policy.tenant_column {
                    diags.push(
                        Diagnostic::error("tenancy::identity-table-tenant-column", "an identity table has no tenant column")
                            .label(*source, tc.span(), "not used by identity tables")
                            .help("its rows belong to users: name the column with the user's id, `user_column = \"...\"` (default `id`)"),
                    );
                }
                let (column, span) = match &policy.user_column {
                    Some(c) => (c.get_ref().clone(), c.span()),
                    None => ("id".to_string(), key.span()),
                };
                let Some(col) = table.column(&column) else {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::unknown-column",
                            format!("identity table `{}` has no column `{column}`", table.name),
                        )
                        .label(*source, span, "the user's id is read from this column")
                        .help(format!(
                            "set `user_column` to the column holding the user's id; its columns: {}",
                            table.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                        )),
                    );
                    continue;
                };
                let Some(data_type) = user_id_type(&col.data_type) else {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::user-column-type",
                            format!("user column `{}.{column}` is `{}`", table.name, col.data_type),
                        )
                        .label(*source, span, "this column")
                        .help("the user column holds the user's id: text, varchar, uuid, integer or bigint"),
                    );
                    continue;
                };
                CompiledKind::Identity {
                    column,
                    text: data_type == "text",
                    co_members: policy.co_members.as_ref().is_none_or(|c| *c.get_ref()),
                }
            }
            TableKind::Tenant if policy.parent.is_some() => {
                let parent = policy.parent.as_ref().expect("checked by the guard");
                let wanted: Vec<String> = normalize_key(parent.get_ref()).split(", ").map(str::to_string).collect();
                let Some(fk) = table.foreign_keys.iter().find(|fk| fk.columns == wanted) else {
                    let keys: Vec<String> =
                        table.foreign_keys.iter().map(|fk| format!("\"{}\"", fk.columns.join(", "))).collect();
                    diags.push(
                        Diagnostic::error(
                            "tenancy::unknown-parent-key",
                            format!("`{}` has no foreign key ({})", table.name, parent.get_ref()),
                        )
                        .label(*source, parent.span(), "no such foreign key")
                        .help(if keys.is_empty() {
                            "the table has no foreign keys: a table without a tenant column reaches its organization through one".to_string()
                        } else {
                            format!("its foreign keys: {}", keys.join(", "))
                        }),
                    );
                    continue;
                };
                let (commands, owner_columns) =
                    compile_commands(sources, *source, policy, defaults.as_ref(), table, &mut diags);
                let extra_indexes: Vec<Vec<String>> = table
                    .foreign_keys
                    .iter()
                    .map(|fk| fk.columns.clone())
                    .filter(|cols| !table.has_index_leading_with_all(cols))
                    .collect();
                let target_columns = referred_columns(catalog, fk);
                CompiledKind::Child {
                    parent: Reference {
                        columns: fk.columns.clone(),
                        target: fk.references.clone(),
                        target_columns,
                        // Resolved once every table is compiled (check_children).
                        target_tenant: String::new(),
                        target_key: TenantKey::Uuid,
                        target_global: false,
                        target_level: None,
                        via: None,
                    },
                    references: vec![],
                    commands,
                    owner_columns: owner_columns.into_iter().collect(),
                    extra_indexes,
                }
            }
            TableKind::Tenant | TableKind::Shareable => {
                let level = levels
                    .as_ref()
                    .map(|l| policy.level.as_ref().map_or_else(|| l.default_level(&table.name), |v| *v.get_ref()));
                let (column, column_span) = match (&policy.tenant_column, &levels, level) {
                    (Some(c), _, _) => (c.get_ref().clone(), c.span()),
                    (None, Some(l), Some(crate::policy::Level::Organization)) => {
                        match l.organization_column_of(&table.name) {
                            Some(c) => (c, key.span()),
                            None => {
                                diags.push(
                                    Diagnostic::error(
                                        "tenancy::missing-organization-column",
                                        format!("organization-level table `{}` has no tenant column", table.name),
                                    )
                                    .label(
                                        *source,
                                        policy.level.as_ref().map_or(key.span(), Spanned::span),
                                        "organization-level here",
                                    )
                                    .help("name the column holding the organization's id: `organization_column = \"org_id\"` at the top of the file, or `tenant_column` on this table"),
                                );
                                continue;
                            }
                        }
                    }
                    _ => (default_column.clone(), key.span()),
                };
                if level == Some(crate::policy::Level::Project) && *policy.kind.get_ref() == TableKind::Shareable {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::shareable-project-level",
                            format!("shareable table `{}` is project-level; sharing is between organizations", table.name),
                        )
                        .label(*source, policy.kind.span(), "declared shareable here")
                        .help("make it `level = \"organization\"`, or `kind = \"tenant\"`: tenancy.share() names organizations, not projects"),
                    );
                    continue;
                }
                let Some(col) = table.column(&column) else {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::missing-tenant-column",
                            format!("tenant table `{}` has no tenant column `{column}`", table.name),
                        )
                        .label(*source, column_span, "declared as a tenant table here")
                        .help(format!(
                            "add `{column} uuid NOT NULL REFERENCES tenancy.organizations (id)` to `{}`, set `tenant_column`, or use `kind = \"global\"`",
                            table.name
                        )),
                    );
                    continue;
                };
                let Some(tenant_key) = TenantKey::of_type(&col.data_type) else {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::tenant-column-type",
                            format!(
                                "tenant column `{}.{column}` is `{}`, not a uuid, text, varchar or integer key",
                                table.name, col.data_type
                            ),
                        )
                        .label(*source, column_span, "tenant table declared here")
                        .help("a tenant column holds the organization's id: uuid, text, varchar, smallint, integer or bigint"),
                    );
                    continue;
                };
                let (commands, owner_columns) =
                    compile_commands(sources, *source, policy, defaults.as_ref(), table, &mut diags);
                let extra_indexes = {
                    // Foreign-key columns, and (tenant column, c) for each column a rule
                    // filters on, where no index leads with them yet.
                    let mut wanted: Vec<Vec<String>> = table.foreign_keys.iter().map(|fk| fk.columns.clone()).collect();
                    for rule in commands.values().flatten() {
                        for c in rule.columns.iter().filter(|c| **c != column) {
                            wanted.push(vec![column.clone(), c.clone()]);
                        }
                    }
                    let mut out: Vec<Vec<String>> = Vec::new();
                    // The tenant column's own index is `add_index` (a foreign key on it alone,
                    // to the organizations table, needs no second one).
                    for cols in wanted.into_iter().filter(|cols| *cols != [column.clone()]) {
                        if !table.has_index_leading_with_all(&cols) && !out.contains(&cols) {
                            out.push(cols);
                        }
                    }
                    out
                };
                let shareable = *policy.kind.get_ref() == TableKind::Shareable;
                if shareable && tenant_key != TenantKey::Uuid {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::sharing-key-type",
                            format!(
                                "shareable table `{}` has a `{}` tenant column; sharing needs a uuid one",
                                table.name, col.data_type
                            ),
                        )
                        .label(*source, policy.kind.span(), "declared shareable here")
                        .help("shares name organizations by uuid: make the table `kind = \"tenant\"`, or its tenant column uuid"),
                    );
                    continue;
                }
                let sharing =
                    shareable.then(|| check_sharing(*source, key, policy, table, &column, &mut diags)).flatten();
                let global_rows = policy.global_rows.as_ref().is_some_and(|g| *g.get_ref());
                let user_rows = policy.user_rows.as_ref().and_then(|u| {
                    let found = table.column(u.get_ref());
                    match (found, found.and_then(|c| user_id_type(&c.data_type))) {
                        (None, _) => {
                            diags.push(
                                Diagnostic::error(
                                    "tenancy::unknown-column",
                                    format!("`{}` has no column `{}`", table.name, u.get_ref()),
                                )
                                .label(*source, u.span(), "no such column")
                                .help(format!(
                                    "its columns: {}",
                                    table.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                                )),
                            );
                            None
                        }
                        (Some(c), None) => {
                            diags.push(
                                Diagnostic::error(
                                    "tenancy::user-rows-column-type",
                                    format!("user column `{}.{}` is `{}`", table.name, u.get_ref(), c.data_type),
                                )
                                .label(*source, u.span(), "this column")
                                .help("the user column holds the user's id: text, varchar, uuid, integer or bigint"),
                            );
                            None
                        }
                        (Some(_), Some(_)) if global_rows => {
                            diags.push(
                                Diagnostic::error(
                                    "tenancy::user-rows-and-global-rows",
                                    format!("`{}`: NULL-keyed rows cannot be both global and a user's", table.name),
                                )
                                .label(*source, u.span(), "a user's rows here")
                                .help("keep `global_rows` or `user_rows`, not both"),
                            );
                            None
                        }
                        (Some(_), Some(t)) => Some((u.get_ref().clone(), t.to_string())),
                    }
                });
                CompiledKind::Tenant {
                    level,
                    sharing,
                    references: vec![],
                    global_rows,
                    set_not_null: !col.not_null && !global_rows && user_rows.is_none(),
                    user_rows,
                    add_index: !table.has_index_leading_with(&column),
                    column,
                    key: tenant_key,
                    commands,
                    owner_columns: owner_columns.into_iter().collect(),
                    extra_indexes,
                }
            }
        };
        let declared: Vec<&String> = read_write.iter().chain(&read_only).collect();
        let mut table_roles = |list: &Option<Spanned<Vec<Spanned<String>>>>, default: &Vec<String>| match list {
            None => default.clone(),
            Some(list) => list
                .get_ref()
                .iter()
                .filter(|role| {
                    let known = declared.contains(&role.get_ref());
                    if !known {
                        diags.push(
                            Diagnostic::error(
                                "tenancy::undeclared-app-role",
                                format!("`{}` is not an application role of this policy set", role.get_ref()),
                            )
                            .label(*source, role.span(), "not in [roles]")
                            .help("declare it in `[roles] read_write` or `read_only` first"),
                        );
                    }
                    known
                })
                .map(|r| r.get_ref().clone())
                .collect(),
        };
        let table_rw = table_roles(&policy.read_write, &read_write);
        let table_ro = table_roles(&policy.read_only, &read_only);
        if matches!(kind, CompiledKind::Global) {
            if let Some(rw) = policy.read_write.as_ref().filter(|l| !l.get_ref().is_empty()) {
                diags.push(
                    Diagnostic::error(
                        "tenancy::global-table-write",
                        format!("global table `{}` cannot have writers", table.name),
                    )
                    .label(*source, rw.span(), "global tables are written only by DBAs")
                    .help("list the roles under `read_only` instead"),
                );
            }
        }
        compiled_tables.push(CompiledTable {
            partitions: vec![],
            waivers: vec![],
            user_references: vec![],
            name: table.name.clone(),
            kind,
            read_write: table_rw,
            read_only: table_ro,
        });
    }

    // Partitions not covered themselves are covered with the table they partition.
    let root_of = |table: &Table| -> Option<QualifiedName> {
        let mut at = table.partition_of.clone();
        let mut depth = 0;
        while let Some(parent) = at {
            if covered.contains_key(&parent) {
                return Some(parent);
            }
            depth += 1;
            at = catalog.tables.get(&parent).and_then(|p| p.partition_of.clone()).filter(|_| depth < 32);
        }
        None
    };
    for table in catalog.tables.values().filter(|t| !covered.contains_key(&t.name)) {
        if let Some(root) = root_of(table) {
            if let Some(c) = compiled_tables.iter_mut().find(|c: &&mut CompiledTable| c.name == root) {
                c.partitions.push(table.name.clone());
            }
        }
    }
    for schema in &schemas.value {
        for table in catalog.tables_in_schema(schema.get_ref()) {
            if !covered.contains_key(&table.name) && !maybe_covered.contains(&table.name) && root_of(table).is_none() {
                let defined = match &table.origin {
                    Origin::Ddl { source, span } => {
                        let (line, col) = sources.line_col(*source, span.start);
                        format!(" (defined at {}:{line}:{col})", sources.get(*source).path)
                    }
                    Origin::Live => String::new(),
                };
                diags.push(
                    Diagnostic::error(
                        "tenancy::uncovered-table",
                        format!("table `{}` is in a governed schema but no policy covers it", table.name),
                    )
                    .label(schemas.source, schema.span(), format!("`{}` is governed here", schema.get_ref()))
                    .help(format!(
                        "add `[tables.{}]` with `kind = \"tenant\"`, `\"shareable\"` or `\"global\"`{defined}",
                        table.name.name
                    )),
                );
            }
        }
    }

    if let Some(r) = random_ids.as_ref().filter(|r| r.value.trim().is_empty()) {
        diags.push(
            Diagnostic::error("tenancy::missing-reason", "`random_ids` has no reason")
                .label(r.source, r.span.clone(), "say why here")
                .help("say how the application fills its uuid keys, e.g. random_ids = \"Django's UUIDField(default=uuid.uuid4)\""),
        );
    }
    let random_ids = random_ids.as_ref().map(|r| r.value.trim()).filter(|r| !r.is_empty());
    check_tenant_keys(sources, catalog, &mut compiled_tables, &covered, &waivers, random_ids, &mut diags);
    check_children(&mut compiled_tables, &covered, &child_levels, &mut diags);
    check_child_references(catalog, &mut compiled_tables);
    check_user_references(catalog, &mut compiled_tables);
    let (views, materialized_views) = check_views(catalog, &governed, &covered, &unscoped_views, &mut diags);
    let compiled_services = check_services(&read_write, &read_only, &token_only, services, &mut diags);
    let compiled_lookups = check_lookups(catalog, &governed, &compiled_tables, lookups, &mut diags);
    let mut sync = check_sync(sources, catalog, &governed, organizations.as_ref(), memberships.as_ref(), &mut diags);
    if let (Some(_), Some(orgs)) = (&levels, &sync.organizations) {
        let (p, m) = check_project_sync(
            sources,
            catalog,
            &governed,
            orgs.key,
            projects.as_ref(),
            project_memberships.as_ref(),
            &mut diags,
        );
        sync.projects = p;
        sync.project_memberships = m;
    }
    let compiled_quotas = check_counted(Counted::QUOTA, catalog, &governed, &compiled_tables, quotas, live, &mut diags);
    let compiled_usage = check_counted(Counted::USAGE, catalog, &governed, &compiled_tables, usage, live, &mut diags);

    if diags.is_empty() {
        compiled_tables.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Compiled {
            schemas: governed,
            read_write,
            read_only,
            session,
            token_only,
            tables: compiled_tables,
            quotas: compiled_quotas,
            usage: compiled_usage,
            views,
            materialized_views,
            taken_names: relation_names(catalog),
            sync,
            lookups: compiled_lookups,
            services: compiled_services,
        })
    } else {
        Err(diags)
    }
}

/// The oldest extension version whose objects the compiled SQL uses (tenancy.governed_schemas).
const MIN_EXTENSION_VERSION: &str = "0.5.0";
/// The oldest extension version with projects (`[projects]`): tenancy.project_members, the
/// project readers and the level argument of tenancy.require_context().
const MIN_PROJECTS_EXTENSION_VERSION: &str = "0.6.0";

/// True when dotted version `a` is older than `b`.
fn version_below(a: &str, b: &str) -> bool {
    let parts = |v: &str| v.split('.').map(|p| p.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
    parts(a) < parts(b)
}

/// Every relation name the catalog knows of: tables, views and named indexes (with their table).
fn relation_names(catalog: &Catalog) -> std::collections::BTreeMap<QualifiedName, Option<QualifiedName>> {
    let mut names: std::collections::BTreeMap<QualifiedName, Option<QualifiedName>> =
        catalog.tables.keys().chain(catalog.views.keys()).map(|n| (n.clone(), None)).collect();
    for table in catalog.tables.values() {
        for name in table.indexes.iter().filter_map(|i| i.name.as_ref()) {
            names.insert(QualifiedName::new(table.name.schema.clone(), name.clone()), Some(table.name.clone()));
        }
    }
    names
}

/// Every command's rule of a table: its own, else the files' `[defaults]`; and the owner columns
/// the rules name.
fn compile_commands(
    sources: &Sources,
    source: SourceId,
    policy: &TablePolicy,
    defaults: Option<&Setting<crate::policy::Commands>>,
    table: &Table,
    diags: &mut Vec<Diagnostic>,
) -> (BTreeMap<Command, Option<CompiledRule>>, std::collections::BTreeSet<String>) {
    let mut commands = BTreeMap::new();
    let mut owner_columns = std::collections::BTreeSet::new();
    for command in Command::ALL {
        let value = policy
            .command(command)
            .map(|v| (source, v))
            .or_else(|| defaults.and_then(|d| d.value.get(command).map(|v| (d.source, v))));
        let rule = value.and_then(|(src, v)| compile_rule(sources, src, v, command, table, diags));
        if let Some(owner) = rule.as_ref().and_then(|r| r.owner.clone()) {
            owner_columns.insert(owner);
        }
        commands.insert(command, rule);
    }
    (commands, owner_columns)
}

/// Checks one command's rule against the table; None when the command is not allowed (or the
/// rule has errors, which are pushed to `diags`).
fn compile_rule(
    sources: &Sources,
    source: SourceId,
    rule: &Spanned<crate::policy::CommandRule>,
    command: Command,
    table: &Table,
    diags: &mut Vec<Diagnostic>,
) -> Option<CompiledRule> {
    let span = rule.span();
    let rule = rule.get_ref();
    let span_of = |v: &Spanned<String>| if rule.shorthand { span.clone() } else { v.span() };
    let before = diags.len();
    let role = match &rule.role {
        None => MinRole(MEMBER_ROLES[MEMBER_ROLES.len() - 1].to_string()),
        Some(r) if r.get_ref() == "none" && rule.shorthand => return None,
        Some(r) if MEMBER_ROLES.contains(&r.get_ref().as_str()) => MinRole(r.get_ref().clone()),
        Some(r) => {
            diags.push(
                Diagnostic::error(
                    "tenancy::unknown-member-role",
                    format!("unknown member role `{}` for `{}`", r.get_ref(), command.key()),
                )
                .label(source, span_of(r), "not a member role")
                .help(format!(
                    "use one of {}, or `none` to disallow the command",
                    MEMBER_ROLES.map(|r| format!("`{r}`")).join(", ")
                )),
            );
            return None;
        }
    };
    if let Some(p) = &rule.permission {
        check_permission_name(source, p, diags);
    }
    if let Some(o) = &rule.owner {
        match table.column(o.get_ref()) {
            None => diags.push(
                Diagnostic::error(
                    "tenancy::unknown-column",
                    format!("table `{}` has no column `{}`", table.name, o.get_ref()),
                )
                .label(source, o.span(), "owner column")
                .help("`owner` names the column that holds the user who created the row"),
            ),
            Some(c) if !["text", "character varying", "varchar"].iter().any(|t| c.data_type.starts_with(t)) => diags
                .push(
                    Diagnostic::error(
                        "tenancy::owner-column-type",
                        format!("owner column `{}.{}` is `{}`, not text", table.name, c.name, c.data_type),
                    )
                    .label(source, o.span(), "owner column")
                    .help("it is compared with tenancy.current_user_id(), which is text"),
                ),
            Some(_) => {}
        }
    }
    let mut columns: Vec<String> = rule.owner.iter().map(|o| o.get_ref().clone()).collect();
    let check = rule.check.as_ref().and_then(|c| {
        let compiled = compile_predicate(sources, source, c, table, diags)?;
        columns.extend(compiled.columns.into_iter().filter(|c| !columns.contains(c)).collect::<Vec<_>>());
        Some(compiled.sql)
    });
    (diags.len() == before).then(|| CompiledRule {
        role,
        permission: rule.permission.as_ref().map(|p| p.get_ref().clone()),
        owner: rule.owner.as_ref().map(|o| o.get_ref().clone()),
        check,
        columns,
    })
}

/// Compiles a predicate of a policy file against `table`; its problems become diagnostics at their
/// place in the file.
fn compile_predicate(
    sources: &Sources,
    source: SourceId,
    p: &Spanned<String>,
    table: &Table,
    diags: &mut Vec<Diagnostic>,
) -> Option<crate::predicate::Compiled> {
    let base = p.span().start + crate::predicate::content_start(&sources.get(source).text, p.span().start);
    match crate::predicate::compile(p.get_ref(), table) {
        Ok(compiled) => Some(compiled),
        Err(problems) => {
            for problem in problems {
                let mut d = Diagnostic::error(problem.code, problem.message).label(
                    source,
                    base + problem.range.start..base + problem.range.end,
                    "in this predicate",
                );
                if let Some(h) = problem.help {
                    d = d.help(h);
                }
                diags.push(d);
            }
            None
        }
    }
}

/// A column a generated function reads with the applier's rights (a lookup, the sync): it must
/// exist and be of a built-in type ([`builtin_type`]), else a diagnostic with `code` and `help`.
fn builtin_column<'t>(
    table: &'t Table,
    source: SourceId,
    c: &Spanned<String>,
    what: &str,
    (code, help): (&'static str, &str),
    diags: &mut Vec<Diagnostic>,
) -> Option<(&'t crate::schema::Column, &'static str)> {
    let Some(col) = table.column(c.get_ref()) else {
        diags.push(
            Diagnostic::error("tenancy::unknown-column", format!("`{}` has no column `{}`", table.name, c.get_ref()))
                .label(source, c.span(), "no such column")
                .help(format!(
                    "its columns: {}",
                    table.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                )),
        );
        return None;
    };
    let Some(t) = builtin_type(&col.data_type) else {
        diags.push(
            Diagnostic::error(code, format!("{what} column `{}.{}` is `{}`", table.name, col.name, col.data_type))
                .label(source, c.span(), "this column")
                .help(help.to_string()),
        );
        return None;
    };
    Some((col, t))
}

/// The type of a column that can hold a user's id for `user_rows` (varchar as `text`), if it can.
fn user_id_type(data_type: &str) -> Option<&'static str> {
    builtin_type(data_type).filter(|t| matches!(*t, "text" | "uuid" | "integer" | "bigint"))
}

/// Reports `role` unless it is a member role.
fn check_member_role(source: SourceId, role: &Spanned<String>, diags: &mut Vec<Diagnostic>) -> bool {
    let known = MEMBER_ROLES.contains(&role.get_ref().as_str());
    if !known {
        diags.push(
            Diagnostic::error("tenancy::unknown-member-role", format!("unknown member role `{}`", role.get_ref()))
                .label(source, role.span(), "not a member role")
                .help(format!("member roles: {}", MEMBER_ROLES.join(", "))),
        );
    }
    known
}

/// Reports a permission name that `tenancy.has_permission()` could never grant.
fn check_permission_name(source: SourceId, p: &Spanned<String>, diags: &mut Vec<Diagnostic>) {
    let valid = p.get_ref().chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && p.get_ref().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !valid {
        diags.push(
            Diagnostic::error("tenancy::invalid-permission", format!("`{}` is not a permission name", p.get_ref()))
                .label(source, p.span(), "checked with tenancy.has_permission()")
                .help("permissions are lowercase dotted names such as `projects.delete`"),
        );
    }
}

/// Checks a shareable table's id and visibility columns and share permission.
fn check_sharing(
    source: SourceId,
    key: &Spanned<String>,
    policy: &TablePolicy,
    table: &Table,
    tenant_column: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Sharing> {
    let before = diags.len();
    let (id_column, id_span) = match &policy.id_column {
        Some(c) => (c.get_ref().clone(), c.span()),
        None => ("id".to_string(), key.span()),
    };
    let id_type = match table.column(&id_column) {
        None => {
            diags.push(
                Diagnostic::error(
                    "tenancy::unknown-column",
                    format!("shareable table `{}` has no id column `{id_column}`", table.name),
                )
                .label(source, id_span.clone(), "shares name rows by this column")
                .help("set `id_column` to the column that, with the tenant column, identifies a row"),
            );
            String::new()
        }
        Some(c) => crate::schema::storage_type(&c.data_type),
    };
    let pair = [tenant_column.to_string(), id_column.clone()];
    if !id_type.is_empty() && !table.has_unique_key_on(&pair) {
        diags.push(
            Diagnostic::error(
                "tenancy::shareable-key",
                format!("shareable table `{}` has no unique key on ({tenant_column}, {id_column})", table.name),
            )
            .label(source, id_span, "shares name rows by organization and this column")
            .help(format!("add `PRIMARY KEY ({tenant_column}, {id_column})` to `{}`", table.name)),
        );
    }
    if let Some(v) = &policy.visibility_column {
        match table.column(v.get_ref()) {
            None => diags.push(
                Diagnostic::error(
                    "tenancy::unknown-column",
                    format!("table `{}` has no column `{}`", table.name, v.get_ref()),
                )
                .label(source, v.span(), "visibility column")
                .help(format!("add `{} text NOT NULL DEFAULT 'private'`, or remove this line", v.get_ref())),
            ),
            Some(c) if !["text", "character varying", "varchar"].iter().any(|t| c.data_type.starts_with(t)) => diags
                .push(
                    Diagnostic::error(
                        "tenancy::visibility-column-type",
                        format!("visibility column `{}.{}` is `{}`, not text", table.name, c.name, c.data_type),
                    )
                    .label(source, v.span(), "visibility column")
                    .help("rows whose visibility is the text 'public' are readable by every organization"),
                ),
            Some(_) => {}
        }
    }
    if let Some(p) = &policy.share_permission {
        check_permission_name(source, p, diags);
    }
    (diags.len() == before).then(|| Sharing {
        add_id_index: !table.has_index_leading_with(&id_column),
        id_column,
        id_type,
        visibility_column: policy.visibility_column.as_ref().map(|v| v.get_ref().clone()),
        share_permission: policy.share_permission.as_ref().map(|p| p.get_ref().clone()),
    })
}

/// Views that read governed tables. A plain view runs with its owner's rights unless it is
/// `security_invoker`, which the compiled SQL sets; a materialized view stores rows where no
/// policy applies, so it is refused.
fn check_views(
    catalog: &Catalog,
    governed: &[String],
    covered: &BTreeMap<QualifiedName, (SourceId, Range<usize>)>,
    unscoped: &[(SourceId, Spanned<String>, Spanned<String>)],
    diags: &mut Vec<Diagnostic>,
) -> (Vec<QualifiedName>, Vec<(QualifiedName, String)>) {
    // `[materialized_views]`: each must name a materialized view, and say why.
    let mut declared = std::collections::BTreeMap::new();
    for (source, key, reason) in unscoped {
        let text = key.get_ref();
        match candidates(governed, text).iter().find(|c| catalog.views.get(*c).is_some_and(|v| v.materialized)) {
            Some(name) => {
                declared.insert(name.clone(), reason.get_ref().trim().to_string());
            }
            None => diags.push(
                Diagnostic::error("tenancy::unknown-materialized-view", format!("no materialized view `{text}`"))
                    .label(*source, key.span(), "declared here")
                    .help("name a materialized view of the governed schemas"),
            ),
        }
        if reason.get_ref().trim().is_empty() {
            diags.push(
                Diagnostic::error("tenancy::missing-reason", format!("materialized view `{text}` has no reason"))
                    .label(*source, reason.span(), "say why here")
                    .help("every application role reads all of its rows, every organization's: write down why"),
            );
        }
    }
    let mut out = Vec::new();
    for view in catalog.views.values() {
        let Some((table, (source, span))) = view.reads.iter().find_map(|r| covered.get(r).map(|c| (r, c))) else {
            continue;
        };
        if view.materialized && declared.contains_key(&view.name) {
            continue;
        }
        if view.materialized {
            diags.push(
                Diagnostic::error(
                    "tenancy::materialized-view",
                    format!("materialized view `{}` copies rows of governed table `{table}`", view.name),
                )
                .label(*source, span.clone(), "governed table declared here")
                .help(format!(
                    "row-level security does not apply to a materialized view: replace it with a view, or a tenant table filled by a job (DROP MATERIALIZED VIEW {}); or, if the application roles are meant to read every organization's rows of it, declare it: [materialized_views] {} = \"why\"",
                    view.name, view.name.name
                )),
            );
        } else {
            out.push(view.name.clone());
        }
    }
    (out, declared.into_iter().collect())
}

/// Resolves `[services]`: names tenancy accepts, declared application roles, member roles.
fn check_services(
    read_write: &[String],
    read_only: &[String],
    token_only: &[String],
    services: Vec<(SourceId, Spanned<String>, Spanned<crate::policy::Service>)>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for (source, name, service) in services {
        let service = service.into_inner();
        let mut ok = true;
        let valid = name.get_ref().len() <= 63
            && name.get_ref().chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name.get_ref().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            ok = false;
            diags.push(
                Diagnostic::error(
                    "tenancy::invalid-service-name",
                    format!("`{}` is not a service name", name.get_ref()),
                )
                .label(source, name.span(), "here")
                .help("service names are lowercase letters, digits and underscores, starting with a letter"),
            );
        }
        ok &= check_member_role(source, &service.member_role, diags);
        for role in &service.roles {
            if token_only.contains(role.get_ref()) {
                ok = false;
                diags.push(
                    Diagnostic::error(
                        "tenancy::token-service-role",
                        format!("token-only role `{}` cannot act as a service", role.get_ref()),
                    )
                    .label(source, role.span(), "token-only in [roles] context")
                    .help("a token-only role starts contexts from signed tokens only; give background jobs a role of their own"),
                );
            }
            if !read_write.contains(role.get_ref()) && !read_only.contains(role.get_ref()) {
                ok = false;
                diags.push(
                    Diagnostic::error("tenancy::undeclared-app-role", format!("service role `{}` is not an application role", role.get_ref()))
                        .label(source, role.span(), "not in [roles]")
                        .help("add it to [roles] read_write or read_only: a service acts on the tables with that role's grants"),
                );
            }
        }
        if ok {
            let mut roles: Vec<String> = service.roles.iter().map(|r| r.get_ref().clone()).collect();
            roles.sort();
            roles.dedup();
            out.push((name.get_ref().clone(), service.member_role.get_ref().clone(), roles));
        }
    }
    out.sort();
    out
}

/// Resolves `[lookups]`: a tenant table of these policies, a unique key column of a built-in type,
/// the organization column (default the tenant column) and an optional user column.
fn check_lookups(
    catalog: &Catalog,
    governed: &[String],
    compiled: &[CompiledTable],
    lookups: Vec<(SourceId, Spanned<String>, Spanned<crate::policy::Lookup>)>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<CompiledLookup> {
    let mut out = Vec::new();
    let mut unused = Vec::new();
    for (source, name, lookup) in lookups {
        let lookup = lookup.into_inner();
        if !name.get_ref().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            || name.get_ref().len() > 40
        {
            diags.push(
                Diagnostic::error("tenancy::invalid-lookup-name", format!("`{}` is not a lookup name", name.get_ref()))
                    .label(source, name.span(), "here")
                    .help("lookup names are lowercase letters, digits and underscores, at most 40 (the function is tenancy_lookup_<name>)"),
            );
            continue;
        }
        let Some(table) = resolve(catalog, governed, source, &lookup.table, diags, &mut unused) else { continue };
        // A tenant table's organization, or an identity table's user (a sign-in by email).
        let tenant = compiled.iter().find(|c| c.name == table.name).and_then(|c| match &c.kind {
            CompiledKind::Tenant { column, .. } => Some((Some(column.clone()), None)),
            CompiledKind::Identity { column, .. } => Some((None, Some(column.clone()))),
            CompiledKind::Global | CompiledKind::Unscoped { .. } | CompiledKind::Child { .. } => None,
        });
        let project_level = compiled.iter().any(|c| {
            c.name == table.name
                && matches!(c.kind, CompiledKind::Tenant { level: Some(crate::policy::Level::Project), .. })
        });
        // Its tenant column holds projects: the lookup returns the project and its organization
        // (unless it names a column holding the organization).
        let project = project_level && lookup.organization.is_none();
        let Some((tenant, identity_user)) = tenant else {
            diags.push(
                Diagnostic::error(
                    "tenancy::lookup-on-non-tenant-table",
                    format!("lookup `{}` reads `{}`, which is not a tenant table", name.get_ref(), table.name),
                )
                .label(source, lookup.table.span(), "here")
                .help("a lookup finds the organization of a row, or the user of an identity table's row: cover the table as kind = \"tenant\" or \"identity\""),
            );
            continue;
        };
        let mut column = |c: &Spanned<String>, what: &str| -> Option<(String, &'static str)> {
            let help = "lookups compare and return text, varchar, uuid, bytea, smallint, integer or bigint columns";
            builtin_column(table, source, c, what, ("tenancy::lookup-column-type", help), diags)
                .map(|(col, t)| (col.name.clone(), t))
        };
        let key = column(&lookup.key, "key");
        if let (Some(o), None) = (&lookup.organization, &tenant) {
            diags.push(
                Diagnostic::error(
                    "tenancy::lookup-organization-of-identity",
                    format!(
                        "lookup `{}` reads identity table `{}`, whose rows belong to no organization",
                        name.get_ref(),
                        table.name
                    ),
                )
                .label(source, o.span(), "here")
                .help("a lookup on an identity table returns the user (its user column, or `user`): remove this line"),
            );
            continue;
        }
        let organization = match (&lookup.organization, &tenant) {
            (Some(o), _) => column(o, "organization").map(|(c, t)| Some((c, t))),
            (None, Some(t)) => {
                let data_type = table.column(t).map_or("uuid", |c| builtin_type(&c.data_type).unwrap_or("uuid"));
                Some(Some((t.clone(), data_type)))
            }
            (None, None) => Some(None),
        };
        let user = match (&lookup.user, &identity_user) {
            (Some(u), _) => column(u, "user").map(Some),
            (None, Some(u)) => Some(Some((u.clone(), "text"))),
            (None, None) => Some(None),
        };
        let (Some((key, key_type)), Some(organization), Some(user)) = (key, organization, user) else {
            continue;
        };
        let organization_key = match &organization {
            None => TenantKey::Uuid,
            Some((organization, t)) => match TenantKey::of_type(t) {
                Some(k) => k,
                None => {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::lookup-column-type",
                            format!(
                                "organization column `{}.{organization}` is `{t}`, not an organization's id",
                                table.name
                            ),
                        )
                        .label(
                            source,
                            lookup.organization.as_ref().map_or(lookup.table.span(), |o| o.span()),
                            "this column",
                        )
                        .help("an organization column holds a uuid, text, varchar or integer id"),
                    );
                    continue;
                }
            },
        };
        let unique = table
            .indexes
            .iter()
            .any(|i| i.unique && i.columns.len() == 1 && i.columns[0].as_deref() == Some(key.as_str()));
        if !unique {
            diags.push(
                Diagnostic::error("tenancy::lookup-key-not-unique", format!("lookup key `{}.{key}` is not unique", table.name))
                    .label(source, lookup.key.span(), "this column")
                    .help(format!("a key finds one organization: CREATE UNIQUE INDEX ON {} ({key}), and declare it in globally_unique", table.name)),
            );
            continue;
        }
        out.push(CompiledLookup {
            name: name.get_ref().clone(),
            table: table.name.clone(),
            key,
            key_type: key_type.to_string(),
            organization: organization.map(|(o, _)| o),
            organization_key,
            project,
            user: user.map(|(u, _)| u),
        });
    }
    out
}

/// Resolves `[organizations]` and `[memberships]`: their tables, columns, role values and
/// `active` predicates.
fn check_sync(
    sources: &Sources,
    catalog: &Catalog,
    governed: &[String],
    organizations: Option<&Setting<crate::policy::OrganizationsMap>>,
    memberships: Option<&Setting<crate::policy::MembershipsMap>>,
    diags: &mut Vec<Diagnostic>,
) -> SyncMaps {
    let before = diags.len();
    let mut unused = Vec::new();
    // The sync reads these columns with a DBA's rights (the backfill).
    let column = |table: &Table, source: SourceId, c: &Spanned<String>, diags: &mut Vec<Diagnostic>| {
        let help = "the organizations and memberships sync reads text, varchar, uuid, bytea, smallint, integer or bigint columns (and enums for the role)";
        builtin_column(table, source, c, "sync", ("tenancy::sync-column-type", help), diags)
            .map(|(col, _)| col.name.clone())
    };
    let predicate = |table: &Table, source: SourceId, p: &Spanned<String>, diags: &mut Vec<Diagnostic>| {
        compile_predicate(sources, source, p, table, diags).map(|c| c.sql)
    };
    let orgs = organizations.and_then(|s| {
        let map = &s.value;
        let table = resolve(catalog, governed, s.source, &map.table, diags, &mut unused)?;
        let default = |v: &Option<Spanned<String>>, d: &str| {
            v.clone().unwrap_or_else(|| Spanned::new(map.table.span(), d.to_string()))
        };
        let id = column(table, s.source, &default(&map.id, "id"), diags)?;
        let key = org_key_type(table, &id, s.source, map.id.as_ref().map_or(map.table.span(), |i| i.span()), diags)?;
        let name = column(table, s.source, &default(&map.name, "name"), diags)?;
        let slug = match &map.slug {
            Some(c) => Some(column(table, s.source, c, diags)?),
            None => None,
        };
        let active = match &map.active {
            Some(p) => Some(predicate(table, s.source, p, diags)?),
            None => None,
        };
        Some(OrganizationsSync { table: table.name.clone(), id, key, name, slug, active })
    });
    let members = memberships.and_then(|s| {
        let map = &s.value;
        let table = resolve(catalog, governed, s.source, &map.table, diags, &mut unused)?;
        let organization = column(table, s.source, &map.organization, diags)?;
        let organization_key = org_key_type(table, &organization, s.source, map.organization.span(), diags)?;
        let user = column(table, s.source, &map.user, diags)?;
        // The role may be an enum too: its values read as text with a built-in cast.
        let role = match &map.role {
            Some(c) if table.column(c.get_ref()).is_some_and(|col| catalog.enum_types.contains(&col.data_type)) => {
                Some(c.get_ref().clone())
            }
            Some(c) => Some(column(table, s.source, c, diags)?),
            None => None,
        };
        for r in map.roles.values() {
            check_member_role(s.source, r, diags);
        }
        if let Some(r) = &map.default_role {
            check_member_role(s.source, r, diags);
        }
        let active = match &map.active {
            Some(p) => Some(predicate(table, s.source, p, diags)?),
            None => None,
        };
        Some(MembershipsSync {
            table: table.name.clone(),
            organization,
            organization_key,
            user,
            role,
            roles: map.roles.iter().map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone())).collect(),
            default_role: map.default_role.as_ref().map_or("member".to_string(), |r| r.get_ref().clone()),
            active,
        })
    });
    if diags.len() > before {
        return SyncMaps::default();
    }
    SyncMaps { organizations: orgs, memberships: members, ..SyncMaps::default() }
}

/// Two tenant levels (`[projects]`): where the projects are, and the organization-level tables'
/// default tenant column.
struct Levels {
    /// The application's projects, organizations and memberships tables, organization-level
    /// unless declared otherwise, each with the column holding its organization.
    organization_tables: BTreeMap<QualifiedName, String>,
    organization_column: Option<String>,
}

impl Levels {
    /// The level of a tenant table that declares none.
    fn default_level(&self, table: &QualifiedName) -> crate::policy::Level {
        if self.organization_tables.contains_key(table) {
            crate::policy::Level::Organization
        } else {
            crate::policy::Level::Project
        }
    }

    /// The tenant column of organization-level table `table` that sets none itself.
    fn organization_column_of(&self, table: &QualifiedName) -> Option<String> {
        self.organization_tables.get(table).cloned().or_else(|| self.organization_column.clone())
    }
}

/// Whether the policy files have two tenant levels, and the settings that need `[projects]`
/// (reported where it is missing).
#[allow(clippy::too_many_arguments)]
fn check_levels(
    catalog: &Catalog,
    governed: &[String],
    organizations: Option<&Setting<crate::policy::OrganizationsMap>>,
    memberships: Option<&Setting<crate::policy::MembershipsMap>>,
    organization_column: Option<&Setting<String>>,
    projects: Option<&Setting<crate::policy::ProjectsMap>>,
    project_memberships: Option<&Setting<crate::policy::ProjectMembershipsMap>>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Levels> {
    let Some(p) = projects else {
        if let Some(c) = organization_column {
            diags.push(
                Diagnostic::error(
                    "tenancy::level-without-projects",
                    "`organization_column` is set, but the policy files have no `[projects]`",
                )
                .label(c.source, c.span.clone(), "the organization-level tables' column")
                .help("with one tenant level, `tenant_column` names the column: add `[projects]`, or remove this line"),
            );
        }
        if let Some(m) = project_memberships {
            diags.push(
                Diagnostic::error(
                    "tenancy::project-memberships-without-projects",
                    "`[project_memberships]` is set, but the policy files have no `[projects]`",
                )
                .label(m.source, m.span.clone(), "per-project roles here")
                .help("project roles need the projects: add `[projects]` with the application's projects table"),
            );
        }
        return None;
    };
    if organizations.is_none() {
        diags.push(
            Diagnostic::error(
                "tenancy::projects-without-organizations",
                "`[projects]` is set without `[organizations]`",
            )
            .label(p.source, p.span.clone(), "projects here")
            .help(
                "a project belongs to an organization of the application's organizations table: add `[organizations]`",
            ),
        );
    }
    // Resolved quietly: check_sync and check_project_sync report their mistakes.
    let mut organization_tables = BTreeMap::new();
    let mut table_of = |source: SourceId, table: &Spanned<String>, column: String| {
        if let Some(t) = resolve(catalog, governed, source, table, &mut Vec::new(), &mut Vec::new()) {
            organization_tables.insert(t.name.clone(), column);
        }
    };
    if let Some(o) = organizations {
        table_of(o.source, &o.value.table, o.value.id.as_ref().map_or("id".to_string(), |i| i.get_ref().clone()));
    }
    if let Some(m) = memberships {
        table_of(m.source, &m.value.table, m.value.organization.get_ref().clone());
    }
    table_of(p.source, &p.value.table, p.value.organization.get_ref().clone());
    Some(Levels { organization_tables, organization_column: organization_column.map(|c| c.value.clone()) })
}

/// Resolves `[projects]` and `[project_memberships]` like [`check_sync`]: tables, columns, role
/// values (member roles, or `none` for no access) and `active` predicates. `org_key` is the
/// organizations' key type, which the projects' organization column must have.
#[allow(clippy::too_many_arguments)]
fn check_project_sync(
    sources: &Sources,
    catalog: &Catalog,
    governed: &[String],
    org_key: TenantKey,
    projects: Option<&Setting<crate::policy::ProjectsMap>>,
    project_memberships: Option<&Setting<crate::policy::ProjectMembershipsMap>>,
    diags: &mut Vec<Diagnostic>,
) -> (Option<ProjectsSync>, Option<ProjectMembershipsSync>) {
    let before = diags.len();
    let mut unused = Vec::new();
    let column = |table: &Table, source: SourceId, c: &Spanned<String>, diags: &mut Vec<Diagnostic>| {
        let help = "the projects sync reads text, varchar, uuid, bytea, smallint, integer or bigint columns (and enums for the role)";
        builtin_column(table, source, c, "sync", ("tenancy::sync-column-type", help), diags)
            .map(|(col, _)| col.name.clone())
    };
    let predicate = |table: &Table, source: SourceId, p: &Spanned<String>, diags: &mut Vec<Diagnostic>| {
        compile_predicate(sources, source, p, table, diags).map(|c| c.sql)
    };
    let projects = projects.and_then(|s| {
        let map = &s.value;
        let table = resolve(catalog, governed, s.source, &map.table, diags, &mut unused)?;
        let default = |v: &Option<Spanned<String>>, d: &str| {
            v.clone().unwrap_or_else(|| Spanned::new(map.table.span(), d.to_string()))
        };
        let id = column(table, s.source, &default(&map.id, "id"), diags)?;
        let key = org_key_type(table, &id, s.source, map.id.as_ref().map_or(map.table.span(), |i| i.span()), diags)?;
        let organization = column(table, s.source, &map.organization, diags)?;
        let organization_key = org_key_type(table, &organization, s.source, map.organization.span(), diags)?;
        if organization_key != org_key {
            let data_type = table.column(&organization).map_or(String::new(), |c| c.data_type.clone());
            diags.push(
                Diagnostic::error(
                    "tenancy::project-organization-type",
                    format!(
                        "the projects' organization column `{}.{organization}` is `{data_type}`, not the organizations' key type",
                        table.name
                    ),
                )
                .label(s.source, map.organization.span(), "holds the organization's id")
                .help("it must hold the `[organizations]` id as it is: the same kind of type (uuid, text or integer)"),
            );
            return None;
        }
        let name = column(table, s.source, &default(&map.name, "name"), diags)?;
        let slug = match &map.slug {
            Some(c) => Some(column(table, s.source, c, diags)?),
            None => None,
        };
        let active = match &map.active {
            Some(p) => Some(predicate(table, s.source, p, diags)?),
            None => None,
        };
        Some(ProjectsSync { table: table.name.clone(), id, key, organization, organization_key, name, slug, active })
    });
    let members = project_memberships.and_then(|s| {
        let map = &s.value;
        let table = resolve(catalog, governed, s.source, &map.table, diags, &mut unused)?;
        let project = column(table, s.source, &map.project, diags)?;
        let project_key = org_key_type(table, &project, s.source, map.project.span(), diags)?;
        let user = column(table, s.source, &map.user, diags)?;
        let role = match table.column(map.role.get_ref()) {
            Some(col) if catalog.enum_types.contains(&col.data_type) => col.name.clone(),
            _ => column(table, s.source, &map.role, diags)?,
        };
        for r in map.roles.values() {
            if r.get_ref() != "none" && !MEMBER_ROLES.contains(&r.get_ref().as_str()) {
                diags.push(
                    Diagnostic::error("tenancy::unknown-project-role", format!("unknown project role `{}`", r.get_ref()))
                        .label(s.source, r.span(), "neither a member role nor `none`")
                        .help(format!(
                            "map each value to a member role ({}) or to `none` (no access to the project); leave out values that make no override",
                            MEMBER_ROLES.join(", ")
                        )),
                );
            }
        }
        let active = match &map.active {
            Some(p) => Some(predicate(table, s.source, p, diags)?),
            None => None,
        };
        Some(ProjectMembershipsSync {
            table: table.name.clone(),
            project,
            project_key,
            user,
            role,
            roles: map.roles.iter().map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone())).collect(),
            active,
        })
    });
    if diags.len() > before {
        return (None, None);
    }
    (projects, members)
}

/// The key type of column `column` of `table`, which holds organizations' ids for the sync; None
/// (reported) when it cannot hold one.
fn org_key_type(
    table: &Table,
    column: &str,
    source: SourceId,
    span: Range<usize>,
    diags: &mut Vec<Diagnostic>,
) -> Option<TenantKey> {
    let data_type = table.column(column).map(|c| c.data_type.clone()).unwrap_or_default();
    let key = TenantKey::of_type(&data_type);
    if key.is_none() {
        diags.push(
            Diagnostic::error(
                "tenancy::tenant-column-type",
                format!(
                    "organization id `{}.{column}` is `{data_type}`, not a uuid, text, varchar or integer key",
                    table.name
                ),
            )
            .label(source, span, "this column")
            .help("organizations are keyed by uuid, text, varchar, smallint, integer or bigint ids"),
        );
    }
    key
}

/// Per table, the `globally_unique` entries of its policy: (file, columns, reason).
type Waivers = BTreeMap<QualifiedName, Vec<(SourceId, Spanned<String>, Spanned<String>)>>;

/// Unique keys and foreign keys of tenant tables ([`crate::rules`]). A unique key must include
/// the tenant column, be a random uuid the server generates, include a foreign key that keeps
/// rows inside their organization, or be declared globally unique with a reason; else unique
/// violations would reveal other organizations' values. A foreign key to
/// another tenant table without the tenant column becomes a [`Reference`] the policies check.
fn check_tenant_keys(
    sources: &Sources,
    catalog: &Catalog,
    compiled: &mut [CompiledTable],
    covered: &BTreeMap<QualifiedName, (SourceId, Range<usize>)>,
    waivers: &Waivers,
    random_ids: Option<&str>,
    diags: &mut Vec<Diagnostic>,
) {
    let tenant_column: BTreeMap<QualifiedName, (String, TenantKey, Option<crate::policy::Level>)> = compiled
        .iter()
        .filter_map(|t| match &t.kind {
            CompiledKind::Tenant { column, key, level, .. } => Some((t.name.clone(), (column.clone(), *key, *level))),
            CompiledKind::Global
            | CompiledKind::Unscoped { .. }
            | CompiledKind::Child { .. }
            | CompiledKind::Identity { .. } => None,
        })
        .collect();
    let global_rows: std::collections::BTreeSet<QualifiedName> = compiled
        .iter()
        .filter(|t| matches!(t.kind, CompiledKind::Tenant { global_rows: true, .. }))
        .map(|t| t.name.clone())
        .collect();
    for compiled_table in compiled.iter_mut() {
        let name = compiled_table.name.clone();
        // A child table's rows reach their organization through the parent key: a unique key
        // that includes it is per organization, any other leaks like a tenant table's would.
        let (column, mut references, kind, parent_key, level) = match &mut compiled_table.kind {
            CompiledKind::Tenant { column, references, level, .. } => {
                (column.clone(), Some(references), "tenant", None, *level)
            }
            CompiledKind::Identity { column, .. } => (column.clone(), None, "identity", None, None),
            CompiledKind::Child { parent, .. } => (String::new(), None, "child", Some(parent.columns.clone()), None),
            _ => continue,
        };
        // A reference keeps a row inside the target's tenant: a project-level row pointing at an
        // organization-level one stays in the organization, not in the project, so only targets
        // at least as narrow as the table scope its keys.
        let narrow_enough = |target: Option<crate::policy::Level>| {
            level != Some(crate::policy::Level::Project) || target == Some(crate::policy::Level::Project)
        };
        let column = &column;
        let (Some(table), Some((source, span))) = (catalog.tables.get(&name), covered.get(&name)) else { continue };
        let defined = match &table.origin {
            Origin::Ddl { source, span } => {
                let (line, col) = sources.line_col(*source, span.start);
                format!(" (table defined at {}:{line}:{col})", sources.get(*source).path)
            }
            Origin::Live => String::new(),
        };
        let table_waivers = waivers.get(&name).map_or(&[][..], Vec::as_slice);
        compiled_table.waivers = table_waivers
            .iter()
            .filter(|(_, _, reason)| !reason.get_ref().trim().is_empty())
            .map(|(_, key, reason)| (normalize_key(key.get_ref()), reason.get_ref().trim().to_string()))
            .collect();
        let mut used = vec![false; table_waivers.len()];
        // Foreign keys that keep each row's reference inside its organization: to a tenant
        // table without global rows, with the tenant column (composite) or checked by the
        // policies (a Reference, below); either way every foreign key to a tenant table.
        let inside: Vec<Vec<String>> = match &parent_key {
            Some(parent) => vec![parent.clone()],
            None => table
                .foreign_keys
                .iter()
                .filter(|fk| {
                    references.is_some()
                        && tenant_column.get(&fk.references).is_some_and(|(_, _, l)| narrow_enough(*l))
                        && !global_rows.contains(&fk.references)
                })
                .map(|fk| fk.columns.iter().filter(|c| **c != *column).cloned().collect())
                .collect(),
        };
        for index in table.indexes.iter().filter(|i| i.unique) {
            let key = crate::rules::Key {
                columns: index
                    .columns
                    .iter()
                    .map(|c| {
                        let col = c.as_deref().and_then(|c| table.column(c));
                        crate::rules::KeyColumn {
                            name: c.as_deref(),
                            data_type: col.map_or("", |c| c.data_type.as_str()),
                            default: col.and_then(|c| c.default.as_deref()),
                            not_null: col.is_some_and(|c| c.not_null),
                        }
                    })
                    .collect(),
                nulls_not_distinct: index.nulls_not_distinct,
            };
            let cols: Vec<&str> = index.columns.iter().map(|c| c.as_deref().unwrap_or("<expression>")).collect();
            let wanted = crate::rules::waiver_key(cols.iter().copied());
            let waiver = table_waivers.iter().position(|(_, k, _)| normalize_key(k.get_ref()) == wanted);
            if let Some(i) = waiver {
                used[i] = true;
            }
            let reason = waiver.map(|i| table_waivers[i].2.get_ref().as_str());
            if crate::rules::unique_key(&key, column, &inside, reason) != crate::rules::UniqueKey::Unsafe {
                continue;
            }
            // A unique index on the primary key's one column again (Prisma makes both) is that key.
            let primary_again = !index.primary
                && table.indexes.iter().any(|p| p.primary && p.columns.len() == 1 && p.columns == index.columns);
            let application_id = crate::rules::is_application_id(&key, index.primary || primary_again);
            if let Some(why) = random_ids.filter(|_| application_id) {
                // Recorded by apply like a globally_unique key, so that lint shows it as waived.
                compiled_table.waivers.push((wanted.clone(), crate::rules::application_id_reason(why)));
                continue;
            }
            let what = if index.primary { "PRIMARY KEY" } else { "UNIQUE" };
            let random_hint = |examples: &str| {
                if application_id {
                    format!(
                        "; or, if the application fills it with random ids{examples}, say so once for every such key: random_ids = \"why\""
                    )
                } else {
                    String::new()
                }
            };
            if kind == "identity" {
                diags.push(
                    Diagnostic::error(
                        "tenancy::unique-not-user-scoped",
                        format!("{what} ({}) of identity table `{name}` does not include `{column}`", cols.join(", ")),
                    )
                    .label(*source, span.clone(), "identity table declared here")
                    .help(format!(
                        "a user who sets their own row's value to another's learns from the unique violation that it is taken: \
                         if that is meant (one account per address, which sign-up tells anyway), declare it in the policy: \
                         globally_unique = {{ \"{wanted}\" = \"why\" }}{}",
                        random_hint("")
                    )),
                );
                continue;
            }
            // What the key must include: the tenant column, or a child table's parent key.
            let (missing, scope, why, examples) = match &parent_key {
                Some(parent) => (
                    format!("its parent key ({})", parent.join(", ")),
                    parent.join(", "),
                    "its rows belong to the organization of their parent row, and unique violations would reveal other \
                     organizations' values",
                    "",
                ),
                None => (
                    format!("`{column}`"),
                    column.clone(),
                    "unique violations would reveal other organizations' values",
                    " (Django's UUIDField(default=uuid.uuid4), Prisma's @default(uuid()) or @default(cuid()))",
                ),
            };
            diags.push(
                Diagnostic::error(
                    "tenancy::unique-not-tenant-scoped",
                    format!("{what} ({}) of tenant table `{name}` does not include {missing}", cols.join(", ")),
                )
                .label(*source, span.clone(), "tenant table declared here")
                .help(format!(
                    "{why}: use {what} ({scope}, {}){defined}; or, if the values are meant to be unique across \
                     organizations, declare it in the policy: globally_unique = {{ \"{wanted}\" = \"why\" }}{}",
                    cols.join(", "),
                    random_hint(examples)
                )),
            );
        }
        for (i, (file, key, reason)) in table_waivers.iter().enumerate() {
            if !used[i] {
                let keys: Vec<String> = table
                    .indexes
                    .iter()
                    .filter(|x| x.unique)
                    .map(|x| {
                        format!(
                            "\"{}\"",
                            crate::rules::waiver_key(x.columns.iter().map(|c| c.as_deref().unwrap_or("<expression>")))
                        )
                    })
                    .collect();
                diags.push(
                    Diagnostic::error(
                        "tenancy::unknown-unique-key",
                        format!("`{name}` has no unique key ({})", key.get_ref()),
                    )
                    .label(*file, key.span(), "declared globally unique here")
                    .help(if keys.is_empty() {
                        "the table has no unique keys".to_string()
                    } else {
                        format!("its unique keys: {}", keys.join(", "))
                    }),
                );
            } else if reason.get_ref().trim().is_empty() {
                diags.push(
                    Diagnostic::error(
                        "tenancy::missing-reason",
                        format!("globally unique key ({}) of `{name}` has no reason", key.get_ref()),
                    )
                    .label(*file, reason.span(), "say why here")
                    .help("a key unique across organizations is an exception: write down why"),
                );
            }
        }
        let Some(references) = references.as_mut() else { continue };
        for fk in &table.foreign_keys {
            let Some((target_column, target_key, target_level)) = tenant_column.get(&fk.references) else {
                continue;
            };
            // Composite keys with the tenant column keep rows apart only between tables of one
            // level (a project's id is no organization's).
            let scoped = match fk.columns.iter().position(|c| c == &*column) {
                Some(i) => {
                    *target_level == level && (fk.referred.is_empty() || fk.referred.get(i) == Some(target_column))
                }
                None => false,
            };
            if scoped {
                continue;
            }
            let target_columns = referred_columns(catalog, fk);
            if target_columns.len() != fk.columns.len() {
                continue; // not a foreign key PostgreSQL would accept: its own error says so
            }
            let reference = Reference {
                columns: fk.columns.clone(),
                target: fk.references.clone(),
                target_columns,
                target_tenant: target_column.clone(),
                target_key: *target_key,
                target_global: global_rows.contains(&fk.references),
                target_level: *target_level,
                via: None,
            };
            if !references.contains(&reference) {
                references.push(reference);
            }
        }
    }
}

/// The columns a foreign key refers to: its own list, or the target's primary key.
fn referred_columns(catalog: &Catalog, fk: &crate::schema::ForeignKey) -> Vec<String> {
    if fk.referred.is_empty() {
        catalog.tables.get(&fk.references).map_or(vec![], Table::primary_key)
    } else {
        fk.referred.clone()
    }
}

/// What a reference to each tenant table compares: its tenant column, key type, whether its
/// NULL-keyed rows are global, and its level.
type TenantTarget = (String, TenantKey, bool, Option<crate::policy::Level>);

fn tenant_targets(compiled: &[CompiledTable]) -> BTreeMap<QualifiedName, TenantTarget> {
    compiled
        .iter()
        .filter_map(|t| match &t.kind {
            CompiledKind::Tenant { column, key, global_rows, level, .. } => {
                Some((t.name.clone(), (column.clone(), *key, *global_rows, *level)))
            }
            _ => None,
        })
        .collect()
}

/// Foreign keys to child tables (whose rows belong through a parent row), and a child table's
/// foreign keys besides its parent's: checked by the policies like any [`Reference`], through the
/// child's parent row (`via`). Without them a row could point at another organization's child
/// row, and the foreign key's error would tell that the row exists.
fn check_child_references(catalog: &Catalog, compiled: &mut [CompiledTable]) {
    let parents: BTreeMap<QualifiedName, Reference> = compiled
        .iter()
        .filter_map(|t| match &t.kind {
            CompiledKind::Child { parent, .. } if !parent.target_tenant.is_empty() => {
                Some((t.name.clone(), parent.clone()))
            }
            _ => None,
        })
        .collect();
    let tenants = tenant_targets(compiled);
    for compiled_table in compiled.iter_mut() {
        let Some(table) = catalog.tables.get(&compiled_table.name) else { continue };
        let (references, parent_columns) = match &mut compiled_table.kind {
            CompiledKind::Tenant { references, .. } => (references, None),
            CompiledKind::Child { references, parent, .. } => {
                let columns = parent.columns.clone();
                (references, Some(columns))
            }
            _ => continue,
        };
        for fk in &table.foreign_keys {
            if parent_columns.as_ref() == Some(&fk.columns) {
                continue; // the parent itself: the row's own predicate
            }
            let target_columns = referred_columns(catalog, fk);
            if target_columns.len() != fk.columns.len() {
                continue;
            }
            // A check that reads the table itself runs in a function of its own (one column);
            // one of several columns would make PostgreSQL refuse the policy (42P17): unchecked
            // (a line item pointing at another line of its order carries the order's key, so it
            // stays in the order's organization anyway).
            let reads_itself = fk.references == compiled_table.name
                || parents.get(&fk.references).is_some_and(|v| v.target == compiled_table.name);
            if reads_itself && fk.columns.len() != 1 {
                continue;
            }
            let reference = if let Some(via) = parents.get(&fk.references) {
                Reference {
                    columns: fk.columns.clone(),
                    target: fk.references.clone(),
                    target_columns,
                    target_tenant: via.target_tenant.clone(),
                    target_key: via.target_key,
                    target_global: via.target_global,
                    target_level: via.target_level,
                    via: Some(Box::new(via.clone())),
                }
            } else if let (Some(_), Some((column, key, global, level))) = (&parent_columns, tenants.get(&fk.references))
            {
                // A child's foreign key to a tenant table (a tenant table's own are checked
                // already, in check_tenant_keys).
                Reference {
                    columns: fk.columns.clone(),
                    target: fk.references.clone(),
                    target_columns,
                    target_tenant: column.clone(),
                    target_key: *key,
                    target_global: *global,
                    target_level: *level,
                    via: None,
                }
            } else {
                continue;
            };
            if !references.contains(&reference) {
                references.push(reference);
            }
        }
    }
}

/// One-column foreign keys from tenant, child and identity tables to identity tables: checked as
/// the writer ([`UserReference`]), so that a user outside the organization reads as missing.
fn check_user_references(catalog: &Catalog, compiled: &mut [CompiledTable]) {
    let identities: BTreeMap<QualifiedName, String> = compiled
        .iter()
        .filter_map(|t| match &t.kind {
            CompiledKind::Identity { column, .. } => Some((t.name.clone(), column.clone())),
            _ => None,
        })
        .collect();
    for compiled_table in compiled.iter_mut() {
        if matches!(compiled_table.kind, CompiledKind::Global | CompiledKind::Unscoped { .. }) {
            continue;
        }
        let Some(table) = catalog.tables.get(&compiled_table.name) else { continue };
        for fk in &table.foreign_keys {
            let Some(user_column) = identities.get(&fk.references) else { continue };
            let target_column = match fk.referred.as_slice() {
                [] => user_column.clone(),
                [one] => one.clone(),
                _ => continue,
            };
            let [column] = fk.columns.as_slice() else { continue };
            let Some(target_type) = catalog
                .tables
                .get(&fk.references)
                .and_then(|t| t.column(&target_column))
                .and_then(|c| user_id_type(&c.data_type))
            else {
                continue;
            };
            let constraint = fk
                .name
                .clone()
                .unwrap_or_else(|| crate::emit::fit(&format!("{}_{column}", compiled_table.name.name), "_fkey"));
            let reference = UserReference {
                column: column.clone(),
                constraint,
                target: fk.references.clone(),
                target_column,
                target_type: target_type.to_string(),
            };
            if !compiled_table.user_references.contains(&reference) {
                compiled_table.user_references.push(reference);
            }
        }
    }
}

/// Resolves each table without a tenant column to its parent's tenant column: the parent must be
/// a tenant table of these policies that has one.
fn check_children(
    compiled: &mut [CompiledTable],
    covered: &BTreeMap<QualifiedName, (SourceId, Range<usize>)>,
    declared_levels: &BTreeMap<QualifiedName, (SourceId, Spanned<crate::policy::Level>)>,
    diags: &mut Vec<Diagnostic>,
) {
    let tenants = tenant_targets(compiled);
    for table in compiled.iter_mut() {
        let name = table.name.clone();
        let CompiledKind::Child { parent, .. } = &mut table.kind else { continue };
        match tenants.get(&parent.target) {
            Some((column, key, global, level)) if parent.target_columns.len() == parent.columns.len() => {
                parent.target_tenant = column.clone();
                parent.target_key = *key;
                parent.target_global = *global;
                // A child's rows belong where its parent's do: the parent's level is its own.
                parent.target_level = *level;
                if let Some((source, declared)) = declared_levels.get(&name) {
                    if Some(*declared.get_ref()) != *level {
                        diags.push(
                            Diagnostic::error(
                                "tenancy::child-level",
                                format!(
                                    "`{name}` is declared {}-level, but its parent `{}` is {}-level",
                                    declared.get_ref().key(),
                                    parent.target,
                                    level.map_or("organization", |l| l.key())
                                ),
                            )
                            .label(*source, declared.span(), "declared here")
                            .help("a table without a tenant column takes its parent's level: remove this line"),
                        );
                    }
                }
            }
            _ => {
                if let Some((source, span)) = covered.get(&name).cloned() {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::parent-not-tenant",
                            format!(
                                "the parent of `{name}`, `{}`, is not a tenant table with a tenant column",
                                parent.target
                            ),
                        )
                        .label(source, span, "declared with `parent` here")
                        .help("a table's parent must be covered as kind = \"tenant\" with its own tenant column"),
                    );
                }
            }
        }
    }
}

/// A `globally_unique` key as written (`"a,b"`, `"a, b"`) in the canonical `a, b` form.
fn normalize_key(key: &str) -> String {
    crate::rules::waiver_key(key.split(',').map(str::trim).filter(|c| !c.is_empty()))
}

/// Resolves `[quotas]`: each names a tenant table of this policy set and, for sums, an integer
/// column of it; with a live database, also a resource the extension knows.
/// What a `[quotas]` or `[usage]` entry is called in diagnostics.
struct Counted {
    section: &'static str,
    /// "quota `x` counts `t`" / "usage metric `x` is recorded from `t`".
    counts: &'static str,
    on_non_tenant_code: &'static str,
    sum_type_code: &'static str,
}

impl Counted {
    const QUOTA: Counted = Counted {
        section: "quota",
        counts: "counts",
        on_non_tenant_code: "tenancy::quota-on-non-tenant-table",
        sum_type_code: "tenancy::quota-sum-type",
    };
    const USAGE: Counted = Counted {
        section: "usage metric",
        counts: "is recorded from",
        on_non_tenant_code: "tenancy::usage-on-non-tenant-table",
        sum_type_code: "tenancy::usage-sum-type",
    };
}

/// Checks `[quotas]` (resources counted from tables) or `[usage]` (metrics recorded from them).
fn check_counted(
    what: Counted,
    catalog: &Catalog,
    governed: &[String],
    compiled: &[CompiledTable],
    quotas: Vec<(SourceId, Spanned<String>, Spanned<crate::policy::QuotaSource>)>,
    live: Option<&LiveFacts>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<CompiledQuota> {
    let mut out = Vec::new();
    for (source, key, quota) in quotas {
        let quota = quota.into_inner();
        let resource = key.get_ref().clone();
        if let Some(live) = live.filter(|l| l.extension_installed) {
            if !live.resources.contains(&resource) {
                diags.push(
                    Diagnostic::error("tenancy::unknown-resource", format!("unknown resource `{resource}`"))
                        .label(source, key.span(), "not in tenancy.resources")
                        .help(format!(
                            "use one of {}, or add it: INSERT INTO tenancy.resources (name, kind, label) VALUES (...)",
                            live.resources.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
                        )),
                );
                continue;
            }
        }
        let Some(table) = resolve(catalog, governed, source, &quota.table, diags, &mut Vec::new()) else { continue };
        let Some(CompiledKind::Tenant { column, .. }) = compiled.iter().find(|t| t.name == table.name).map(|t| &t.kind)
        else {
            diags.push(
                Diagnostic::error(
                    what.on_non_tenant_code,
                    format!(
                        "{} `{resource}` {} `{}`, which is not a tenant table",
                        what.section, what.counts, table.name
                    ),
                )
                .label(source, quota.table.span(), "counted from an organization's rows")
                .help("point it at a table with `kind = \"tenant\"` or `\"shareable\"`"),
            );
            continue;
        };
        let sum_column = match &quota.sum {
            None => None,
            Some(col) => match table.column(col.get_ref()) {
                Some(c)
                    if ["bigint", "integer", "smallint", "int8", "int4", "int2", "int", "bigserial", "serial"]
                        .contains(&c.data_type.as_str()) =>
                {
                    Some(c.name.clone())
                }
                Some(c) => {
                    diags.push(
                        Diagnostic::error(
                            what.sum_type_code,
                            format!("column `{}.{}` is `{}`, not an integer", table.name, c.name, c.data_type),
                        )
                        .label(source, col.span(), "summed here")
                        .help("sums add up integer columns such as sizes in bytes"),
                    );
                    continue;
                }
                None => {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::unknown-column",
                            format!("table `{}` has no column `{}`", table.name, col.get_ref()),
                        )
                        .label(source, col.span(), "no such column"),
                    );
                    continue;
                }
            },
        };
        out.push(CompiledQuota { resource, table: table.name.clone(), tenant_column: column.clone(), sum_column });
    }
    out
}

/// The session roles and the token-only roles of `[roles]`, each of which must be one of its
/// application roles.
fn context_roles(
    roles: &Setting<crate::policy::AppRoles>,
    read_write: &[String],
    read_only: &[String],
    diags: &mut Vec<Diagnostic>,
) -> (Vec<String>, Vec<String>) {
    let mut declared = |role: &Spanned<String>, key: &str| {
        let known = read_write.contains(role.get_ref()) || read_only.contains(role.get_ref());
        if !known {
            diags.push(
                Diagnostic::error(
                    "tenancy::undeclared-app-role",
                    format!("`{}` is not an application role of this policy set", role.get_ref()),
                )
                .label(roles.source, role.span(), format!("named in [roles] {key}"))
                .help("declare it in `[roles] read_write` or `read_only` first"),
            );
        }
        known
    };
    let mut session: Vec<String> =
        roles.value.session.iter().filter(|r| declared(r, "session")).map(|r| r.get_ref().clone()).collect();
    let mut token_only: Vec<String> = roles
        .value
        .context
        .iter()
        .filter(|(r, _)| declared(r, "context"))
        .filter(|(_, mode)| *mode.get_ref() == crate::policy::ContextMode::Token)
        .map(|(r, _)| r.get_ref().clone())
        .collect();
    for (role, mode) in &roles.value.context {
        if *mode.get_ref() == crate::policy::ContextMode::Token && session.contains(role.get_ref()) {
            diags.push(
                Diagnostic::error(
                    "tenancy::token-session-role",
                    format!(
                        "`{}` starts contexts with tokens only, so it cannot keep a session context",
                        role.get_ref()
                    ),
                )
                .label(roles.source, mode.span(), "token only")
                .help("a token sets a context for one transaction: take the role out of `[roles] session`"),
            );
        }
    }
    session.sort();
    session.dedup();
    token_only.sort();
    (session, token_only)
}

fn check_live_roles(
    live: &LiveFacts,
    roles: &Setting<crate::policy::AppRoles>,
    catalog: &Catalog,
    governed: &[String],
    diags: &mut Vec<Diagnostic>,
) {
    for role in roles.value.read_write.iter().chain(&roles.value.read_only) {
        let name = role.get_ref();
        match live.roles.get(name) {
            None => diags.push(
                Diagnostic::error("tenancy::unknown-app-role", format!("role `{name}` does not exist in the database"))
                    .label(roles.source, role.span(), "application role named here")
                    .help(format!("create it first: CREATE ROLE {name} LOGIN;")),
            ),
            Some(info) if info.superuser || info.bypass_rls => diags.push(
                Diagnostic::error(
                    "tenancy::unsafe-app-role",
                    format!(
                        "application role `{name}` bypasses row-level security ({})",
                        if info.superuser { "SUPERUSER" } else { "BYPASSRLS" }
                    ),
                )
                .label(roles.source, role.span(), "application role named here")
                .help(format!("policies cannot protect tenants from it: ALTER ROLE {name} NOSUPERUSER NOBYPASSRLS;")),
            ),
            Some(_) => {
                let owned: Vec<String> = catalog
                    .tables
                    .keys()
                    .filter(|t| governed.contains(&t.schema) && live.table_owners.get(*t) == Some(name))
                    .map(|t| format!("`{t}`"))
                    .collect();
                if !owned.is_empty() {
                    diags.push(
                        Diagnostic::error(
                            "tenancy::unsafe-app-role",
                            format!("application role `{name}` owns {}", owned.join(", ")),
                        )
                        .label(roles.source, role.span(), "application role named here")
                        .help("a table's owner can disable its row-level security: give the tables to another role (ALTER TABLE ... OWNER TO ...)"),
                    );
                }
            }
        }
    }
}

/// Finds the table a policy key names: `name` (searched in the governed schemas) or `schema.name`.
/// What a policy file's name for a relation may mean: `schema.name` itself, or `name` in each
/// governed schema.
fn candidates(governed: &[String], text: &str) -> Vec<QualifiedName> {
    match text.split_once('.') {
        Some((schema, name)) => vec![QualifiedName::new(schema, name)],
        None => governed.iter().map(|s| QualifiedName::new(s.clone(), text)).collect(),
    }
}

fn resolve<'c>(
    catalog: &'c Catalog,
    governed: &[String],
    source: SourceId,
    key: &Spanned<String>,
    diags: &mut Vec<Diagnostic>,
    maybe_covered: &mut Vec<QualifiedName>,
) -> Option<&'c Table> {
    let text = key.get_ref();
    if let Some((schema, _)) = text.split_once('.') {
        if !governed.iter().any(|g| g == schema) {
            diags.push(
                Diagnostic::error("tenancy::ungoverned-table", format!("table `{text}` is not in a governed schema"))
                    .label(source, key.span(), "policy for it here")
                    .help(format!("add `{schema}` to `schemas`, or remove this policy")),
            );
            return None;
        }
    }
    let found: Vec<&Table> = candidates(governed, text).iter().filter_map(|c| catalog.tables.get(c)).collect();
    match found.as_slice() {
        [one] => Some(one),
        [] => {
            let mut d = Diagnostic::error("tenancy::unknown-table", format!("table `{text}` does not exist")).label(
                source,
                key.span(),
                "no such table in the governed schemas",
            );
            if let Some(similar) = closest(catalog, governed, text) {
                d = d.help(format!("did you mean `{similar}`?"));
            }
            diags.push(d);
            None
        }
        many => {
            let names: Vec<String> = many.iter().map(|t| format!("`{}`", t.name)).collect();
            maybe_covered.extend(many.iter().map(|t| t.name.clone()));
            diags.push(
                Diagnostic::error("tenancy::ambiguous-table", format!("table name `{text}` is ambiguous"))
                    .label(source, key.span(), "could be any of several tables")
                    .help(format!("qualify it with its schema: {}", names.join(" or "))),
            );
            None
        }
    }
}

/// The governed table whose name is closest to `wanted`, when it is close enough to be a typo.
fn closest(catalog: &Catalog, governed: &[String], wanted: &str) -> Option<String> {
    let wanted_name = wanted.rsplit('.').next().unwrap_or(wanted);
    governed
        .iter()
        .flat_map(|s| catalog.tables_in_schema(s))
        .map(|t| (edit_distance(&t.name.name, wanted_name), t.name.name.clone()))
        .filter(|(d, name)| *d <= 2.max(name.len() / 4))
        .min()
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
