-- Example application schema: a small project-management SaaS.
-- Every tenant table carries org_id; countries is global reference data.
-- Ids are uuids: sequences would leak row counts across organizations.

CREATE SCHEMA app;

CREATE TABLE app.countries (
    code        text PRIMARY KEY CHECK (code ~ '^[A-Z]{2}$'),
    name        text NOT NULL
);

CREATE TABLE app.projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id),
    name        text NOT NULL,
    country     text REFERENCES app.countries (code),
    created_by  text NOT NULL DEFAULT tenancy.current_user_id(),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.tasks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id),
    project_id  uuid NOT NULL REFERENCES app.projects (id) ON DELETE CASCADE,
    title       text NOT NULL,
    done        boolean NOT NULL DEFAULT false,
    assignee    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_org_id_project_id_idx ON app.tasks (org_id, project_id);

CREATE TABLE app.comments (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id),
    task_id     uuid NOT NULL REFERENCES app.tasks (id) ON DELETE CASCADE,
    author      text NOT NULL DEFAULT tenancy.current_user_id(),
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.files (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id),
    project_id  uuid REFERENCES app.projects (id) ON DELETE SET NULL,
    name        text NOT NULL,
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
