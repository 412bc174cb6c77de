CREATE SCHEMA shop;
CREATE TABLE shop.customers (
    id uuid NOT NULL,
    org_id uuid NOT NULL,
    PRIMARY KEY (org_id, id),
    UNIQUE (id, org_id)
);
CREATE TABLE shop.orders (
    id uuid NOT NULL,
    org_id uuid NOT NULL,
    customer_id uuid NOT NULL,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (customer_id, org_id) REFERENCES shop.customers (id, org_id),
    FOREIGN KEY (customer_id) REFERENCES shop.customers (id)
);
