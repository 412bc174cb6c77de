CREATE SCHEMA shop;
CREATE TABLE shop.customers (
    id uuid NOT NULL,
    org_id uuid NOT NULL,
    email text NOT NULL UNIQUE,
    PRIMARY KEY (org_id, id)
);
