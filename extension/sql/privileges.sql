-- Who may execute each function of schema tenancy: every function is granted here on purpose.
-- tests/fixtures/function_privileges.txt lists the result and a test compares the installed
-- extension with it, so no function can slip in open.
--
-- - PUBLIC: what compiled policies and every application role need: the context readers,
--   setting and clearing a context, and the read-only functions.
-- - tenancy_writer (granted by `tenancy apply` to the read-write application roles only) and
--   tenancy_admin: the functions that write: sign-up, members, sharing, usage.
-- - tenancy_admin: plans, quotas and usage for any organization.
-- - nobody but superusers: the functions that change schemas (enable_*, keep_quotas,
--   disable_sharing), the trigger functions (attached by those, and checking their tables'
--   registration besides) and the internal helpers.
-- The PUBLIC functions keep PostgreSQL's default privileges (EXECUTE for PUBLIC, no ACL stored):
-- the executor checks EXECUTE each time it sets up a call, and a stored ACL costs about 1,000
-- instructions more to read (a policy's InitPlan calls current_org() once per statement). Every
-- other function, including any added later and not listed here, is taken from PUBLIC.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'tenancy'::regnamespace
           AND p.oid::regprocedure <> ALL (ARRAY[
               'tenancy.current_org()', 'tenancy.current_user_id()', 'tenancy.current_member_role()',
               'tenancy.has_role(text)', 'tenancy.has_permission(text)', 'tenancy.is_admin()',
               'tenancy.set_context(uuid, text)', 'tenancy.set_session_context(uuid, text)',
               'tenancy.set_user_context(text)', 'tenancy.clear_context()',
               'tenancy.set_context_token(text)', 'tenancy.postgrest_pre_request()',
               'tenancy.set_service_context(uuid, text)',
               'tenancy.current_org_key()', 'tenancy.current_org_bigint()', 'tenancy.org_key_id(text)',
               'tenancy.set_context_key(text, text)', 'tenancy.set_session_context_key(text, text)',
               'tenancy.set_service_context_key(text, text)',
               'tenancy.current_project()', 'tenancy.current_project_key()', 'tenancy.current_project_bigint()',
               'tenancy.has_org_role(text)', 'tenancy.has_org_permission(text)',
               'tenancy.set_project_context(uuid, text)', 'tenancy.set_project_context_key(text, text)',
               'tenancy.set_session_project_context(uuid, text)', 'tenancy.set_session_project_context_key(text, text)',
               'tenancy.user_organizations(text)', 'tenancy.org_id(text, text)',
               'tenancy.quota(uuid, text)', 'tenancy.quotas(uuid)',
               'tenancy.usage(uuid, text, timestamptz, timestamptz)', 'tenancy.usage_report(timestamptz, timestamptz)',
               'tenancy.shares_of(regclass, text)', 'tenancy.shares_of(regclass)', 'tenancy.shares_of(regclass, anyelement)',
               'tenancy.canonical_id(oid, text)'
           ]::regprocedure[])
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION
    tenancy.create_organization(text, text, text, text, uuid, uuid),
    tenancy.add_member(uuid, text, text), tenancy.update_member(uuid, text, text),
    tenancy.remove_member(uuid, text), tenancy.set_organization_status(uuid, text),
    tenancy.share(regclass, text, uuid, text[]), tenancy.share(regclass, anyelement, uuid, text[]),
    tenancy.unshare(regclass, text, uuid), tenancy.unshare(regclass, anyelement, uuid),
    tenancy.record_usage(text, bigint), tenancy.try_record_usage(text, bigint),
    tenancy.set_project_member(uuid, text, text), tenancy.remove_project_member(uuid, text)
TO tenancy_writer, tenancy_admin;

GRANT EXECUTE ON FUNCTION
    tenancy.set_plan(uuid, text), tenancy.set_quota(uuid, text, bigint),
    tenancy.record_usage_for(uuid, text, bigint)
TO tenancy_admin;
