CREATE TABLE app.broken (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL,,
);
