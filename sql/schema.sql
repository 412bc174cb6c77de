-- Example application schema: a small project-management SaaS.
-- Every tenant table carries org_id; countries is global reference data.
-- Ids are uuids: sequences would leak row counts across organizations.
-- Keys include org_id: a primary key on id alone would let one organization learn another's ids
-- through unique violations. Foreign keys between tenant tables include org_id too, so a row can
-- never point into another organization, and another organization's id looks exactly like one
-- that does not exist. `tenancy lint` checks all of this on a live database.

CREATE SCHEMA app;

CREATE TABLE app.countries (
    code        text PRIMARY KEY CHECK (code ~ '^[A-Z]{2}$'),
    name        text NOT NULL
);

CREATE TABLE app.projects (
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id),
    name        text NOT NULL,
    country     text REFERENCES app.countries (code),
    created_by  text NOT NULL DEFAULT tenancy.current_user_id(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
CREATE INDEX projects_country_idx ON app.projects (country);

CREATE TABLE app.tasks (
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id),
    project_id  uuid NOT NULL,
    title       text NOT NULL,
    done        boolean NOT NULL DEFAULT false,
    assignee    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, project_id) REFERENCES app.projects (org_id, id) ON DELETE CASCADE
);
CREATE INDEX tasks_org_id_project_id_idx ON app.tasks (org_id, project_id);

CREATE TABLE app.comments (
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id),
    task_id     uuid NOT NULL,
    author      text NOT NULL DEFAULT tenancy.current_user_id(),
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, task_id) REFERENCES app.tasks (org_id, id) ON DELETE CASCADE
);
CREATE INDEX comments_org_id_task_id_idx ON app.comments (org_id, task_id);

CREATE TABLE app.files (
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id),
    project_id  uuid,
    name        text NOT NULL,
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, project_id) REFERENCES app.projects (org_id, id) ON DELETE CASCADE
);
CREATE INDEX files_org_id_project_id_idx ON app.files (org_id, project_id);

-- A shareable table: documents can be shared with other organizations (tenancy.share()) or
-- published to all of them (visibility = 'public'). Only their organization writes them, unless
-- it shares a document for writing.
CREATE TABLE app.documents (
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES tenancy.organizations (id),
    title       text NOT NULL,
    body        text NOT NULL DEFAULT '',
    visibility  text NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public')),
    created_by  text NOT NULL DEFAULT tenancy.current_user_id(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
CREATE INDEX documents_org_id_created_at_idx ON app.documents (org_id, created_at);

-- A view over tenant tables: the compiler makes it security_invoker, so it shows each
-- organization only its own rows.
CREATE VIEW app.open_tasks AS
    SELECT t.id, t.org_id, t.title, t.assignee, p.name AS project
      FROM app.tasks t JOIN app.projects p ON p.org_id = t.org_id AND p.id = t.project_id
     WHERE NOT t.done;
