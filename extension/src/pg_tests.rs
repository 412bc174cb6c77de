//! In-database tests (`cargo pgrx test`). Each runs in its own transaction as a superuser;
//! tests that need an unprivileged caller create one and `SET ROLE` to it.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn exec(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn flag(sql: &str) -> bool {
        Spi::get_one::<bool>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap_or(false)
    }

    /// Creates org `acme` owned by alice, with bob as admin, carol as member and gus as guest,
    /// and an unprivileged role `app_test` that may call the writing functions (a read-write
    /// application role, as `tenancy apply` makes one). Returns the org id as text.
    fn fixture() -> String {
        exec("CREATE ROLE app_test NOLOGIN");
        exec("GRANT tenancy_writer TO app_test");
        let org = text(
            "SELECT tenancy.create_organization('Acme', 'acme', 'alice', id => '11111111-1111-1111-1111-111111111111')::text",
        )
        .unwrap();
        exec(&format!("SELECT tenancy.add_member('{org}', 'bob', 'admin')"));
        exec(&format!("SELECT tenancy.add_member('{org}', 'carol')"));
        exec(&format!("SELECT tenancy.add_member('{org}', 'gus', 'guest')"));
        exec("SELECT tenancy.create_organization('Globex', 'globex', 'gina')");
        org
    }

    #[pg_test]
    fn member_context_sets_every_reader() {
        let org = fixture();
        exec(&format!("SELECT tenancy.set_context('{org}', 'bob')"));
        assert_eq!(text("SELECT tenancy.current_org()::text"), Some(org));
        assert_eq!(text("SELECT tenancy.current_user_id()"), Some("bob".into()));
        assert_eq!(text("SELECT tenancy.current_member_role()"), Some("admin".into()));
        assert!(flag("SELECT tenancy.has_role('member')"));
        assert!(flag("SELECT tenancy.has_role('admin')"));
        assert!(!flag("SELECT tenancy.has_role('owner')"));
        assert!(flag("SELECT tenancy.has_permission('members.manage')"));
        assert!(!flag("SELECT tenancy.has_permission('billing.manage')"));
    }

    #[pg_test]
    fn readers_are_null_or_false_without_context() {
        fixture();
        assert_eq!(text("SELECT tenancy.current_org()::text"), None);
        assert_eq!(text("SELECT tenancy.current_user_id()"), None);
        assert_eq!(text("SELECT tenancy.current_member_role()"), None);
        assert!(!flag("SELECT tenancy.has_role('guest')"));
        assert!(!flag("SELECT tenancy.has_permission('members.manage')"));
    }

    #[pg_test(error = "permission denied to set tenant context")]
    fn non_member_cannot_set_context() {
        let org = fixture();
        exec(&format!("SELECT tenancy.set_context('{org}', 'gina')"));
    }

    #[pg_test(error = "permission denied to set tenant context")]
    fn unknown_org_is_refused_like_a_foreign_one() {
        fixture();
        exec("SELECT tenancy.set_context('99999999-9999-9999-9999-999999999999', 'alice')");
    }

    #[pg_test(error = "permission denied to set tenant context")]
    fn suspended_org_refuses_context() {
        let org = fixture();
        exec(&format!("SELECT tenancy.set_organization_status('{org}', 'suspended')"));
        exec(&format!("SELECT tenancy.set_context('{org}', 'alice')"));
    }

    #[pg_test(error = "unknown role \"superhero\"")]
    fn has_role_rejects_unknown_roles() {
        let org = fixture();
        exec(&format!("SELECT tenancy.set_context('{org}', 'carol')"));
        flag("SELECT tenancy.has_role('superhero')");
    }

    #[pg_test]
    fn savepoint_rollback_restores_previous_context() {
        let org = fixture();
        exec(&format!("SELECT tenancy.set_context('{org}', 'carol')"));
        let globex = text("SELECT id::text FROM tenancy.organizations WHERE slug = 'globex'").unwrap();
        // Spi::run cannot issue SAVEPOINT; a subtransaction via plpgsql's exception block can.
        exec(&format!(
            "DO $$ BEGIN
                 PERFORM tenancy.set_context('{globex}', 'gina');
                 RAISE EXCEPTION 'roll back';
             EXCEPTION WHEN raise_exception THEN NULL;
             END $$"
        ));
        assert_eq!(text("SELECT tenancy.current_user_id()"), Some("carol".into()));
        assert_eq!(text("SELECT tenancy.current_org()::text"), Some(org));
    }

    #[pg_test]
    fn switching_org_revalidates_and_replaces_context() {
        let org = fixture();
        let globex = text("SELECT id::text FROM tenancy.organizations WHERE slug = 'globex'").unwrap();
        exec(&format!("SELECT tenancy.add_member('{globex}', 'carol', 'admin')"));
        exec(&format!("SELECT tenancy.set_context('{org}', 'carol')"));
        assert_eq!(text("SELECT tenancy.current_member_role()"), Some("member".into()));
        exec(&format!("SELECT tenancy.set_context('{globex}', 'carol')"));
        assert_eq!(text("SELECT tenancy.current_org()::text"), Some(globex));
        assert_eq!(text("SELECT tenancy.current_member_role()"), Some("admin".into()));
    }

    #[pg_test]
    fn readers_work_in_parallel_workers() {
        let org = fixture();
        exec(&format!("SELECT tenancy.set_context('{org}', 'bob')"));
        exec("SET LOCAL force_parallel_mode = on");
        exec("SET LOCAL parallel_setup_cost = 0");
        exec("SET LOCAL parallel_tuple_cost = 0");
        exec("CREATE TABLE public.nums_p AS SELECT g FROM generate_series(1, 1000) g");
        let query = "SELECT string_agg(DISTINCT tenancy.current_org()::text || '/' || tenancy.current_member_role()
                                       || '/' || tenancy.has_role('admin')::text, ',')
                       FROM public.nums_p";
        let plan = Spi::connect(|c| {
            c.select(&format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {query}"), None, &[])
                .unwrap()
                .map(|row| row.get::<String>(1).unwrap().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        });
        assert!(plan.contains("Single Copy: true") && plan.contains("Workers Launched: 1"), "{plan}");
        assert_eq!(text(query), Some(format!("{org}/admin/true")));
    }

    #[pg_test]
    fn clear_context_removes_everything() {
        let org = fixture();
        exec(&format!("SELECT tenancy.set_session_context('{org}', 'alice')"));
        exec("SELECT tenancy.clear_context()");
        assert_eq!(text("SELECT tenancy.current_org()::text"), None);
        assert!(!flag("SELECT tenancy.has_role('guest')"));
    }

    #[pg_test(error = "permission denied to set parameter \"tenancy.org_id\"")]
    fn unprivileged_role_cannot_set_the_setting() {
        fixture();
        exec("SET LOCAL ROLE app_test");
        exec("SELECT set_config('tenancy.org_id', '11111111-1111-1111-1111-111111111111', true)");
    }

    #[pg_test]
    fn admin_manages_members_but_not_owners() {
        let org = fixture();
        exec("GRANT USAGE ON SCHEMA tenancy TO app_test");
        exec(&format!("SELECT tenancy.set_context('{org}', 'bob')"));
        exec("SET LOCAL ROLE app_test");
        exec(&format!("SELECT tenancy.add_member('{org}', 'dave', 'member')"));
        exec(&format!("SELECT tenancy.update_member('{org}', 'dave', 'admin')"));
        assert_eq!(
            text(&format!("SELECT role FROM tenancy.members WHERE org_id = '{org}' AND user_id = 'dave'")),
            Some("admin".into())
        );
        let refused = std::panic::catch_unwind(|| {
            exec(&format!("SELECT tenancy.update_member('{org}', 'dave', 'owner')"));
        });
        assert!(refused.is_err(), "an admin must not be able to create an owner");
    }

    #[pg_test(error = "permission denied to manage members of organization 11111111-1111-1111-1111-111111111111")]
    fn member_cannot_add_members() {
        let org = fixture();
        exec(&format!("SELECT tenancy.set_context('{org}', 'carol')"));
        exec("SET LOCAL ROLE app_test");
        exec(&format!("SELECT tenancy.add_member('{org}', 'eve')"));
    }

    #[pg_test(error = "cannot remove the last owner of organization 11111111-1111-1111-1111-111111111111")]
    fn last_owner_cannot_be_removed_even_by_a_dba() {
        let org = fixture();
        exec(&format!("SELECT tenancy.remove_member('{org}', 'alice')"));
    }

    #[pg_test(error = "cannot demote the last owner of organization 11111111-1111-1111-1111-111111111111")]
    fn last_owner_cannot_be_demoted() {
        let org = fixture();
        exec(&format!("SELECT tenancy.update_member('{org}', 'alice', 'admin')"));
    }

    #[pg_test]
    fn second_owner_allows_the_first_to_leave() {
        let org = fixture();
        exec(&format!("SELECT tenancy.update_member('{org}', 'bob', 'owner')"));
        exec(&format!("SELECT tenancy.remove_member('{org}', 'alice')"));
        assert_eq!(
            text(&format!(
                "SELECT string_agg(user_id, ',') FROM tenancy.members WHERE org_id = '{org}' AND role = 'owner'"
            )),
            Some("bob".into())
        );
    }

    #[pg_test(error = "unknown role \"wizard\"")]
    fn unknown_role_lists_valid_ones() {
        let org = fixture();
        exec(&format!("SELECT tenancy.add_member('{org}', 'zed', 'wizard')"));
    }

    #[pg_test(error = "organization slug \"acme\" is already taken")]
    fn duplicate_slug_is_refused() {
        fixture();
        exec("SELECT tenancy.create_organization('Acme 2', 'acme', 'zed')");
    }

    #[pg_test(error = "invalid value for parameter \"slug\": \"Not A Slug\" is not a valid slug")]
    fn bad_slug_is_refused() {
        exec("SELECT tenancy.create_organization('X', 'Not A Slug', 'zed')");
    }

    #[pg_test(error = "invalid value for parameter \"name\": must not be null or empty")]
    fn empty_name_is_refused() {
        exec("SELECT tenancy.create_organization('  ', 'x', 'zed')");
    }

    #[pg_test(error = "unknown plan \"platinum\"")]
    fn unknown_plan_is_refused() {
        exec("SELECT tenancy.create_organization('X', 'x', 'zed', 'platinum')");
    }

    #[pg_test]
    fn user_organizations_lists_memberships() {
        let org = fixture();
        let globex = text("SELECT id::text FROM tenancy.organizations WHERE slug = 'globex'").unwrap();
        exec(&format!("SELECT tenancy.add_member('{globex}', 'carol', 'guest')"));
        assert_eq!(
            text("SELECT string_agg(slug || ':' || role, ',' ORDER BY slug) FROM tenancy.user_organizations('carol')"),
            Some("acme:member,globex:guest".into())
        );
        assert_eq!(text("SELECT tenancy.org_id('acme')::text"), Some(org));
    }

    #[pg_test]
    fn org_id_hides_organizations_the_user_is_not_in() {
        fixture();
        exec("SET LOCAL ROLE app_test");
        exec("SELECT tenancy.set_user_context('alice')");
        assert_eq!(text("SELECT tenancy.org_id('globex')::text"), None);
        assert_eq!(text("SELECT tenancy.org_id('no-such-org')::text"), None);
        assert!(text("SELECT tenancy.org_id('acme')::text").is_some());
    }
}
