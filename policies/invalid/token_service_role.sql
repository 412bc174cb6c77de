CREATE SCHEMA shop;
CREATE TABLE shop.orders (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL);
