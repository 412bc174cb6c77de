CREATE SCHEMA shop;
CREATE TABLE shop.api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL,
    token_digest text NOT NULL UNIQUE,
    label text NOT NULL
);
