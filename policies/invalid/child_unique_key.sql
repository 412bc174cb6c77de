CREATE SCHEMA shop;
CREATE TABLE shop.projects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL
);
CREATE INDEX ON shop.projects (org_id);
CREATE TABLE shop.secrets (
    id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES shop.projects (id),
    secret_name text NOT NULL UNIQUE,
    UNIQUE (project_id, secret_name)
);
CREATE INDEX ON shop.secrets (project_id);
