CREATE SCHEMA shop;
CREATE TABLE shop.audit_log (at timestamptz NOT NULL DEFAULT now(), message text NOT NULL);
