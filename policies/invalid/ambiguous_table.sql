CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id uuid PRIMARY KEY, org_id uuid NOT NULL);
CREATE TABLE billing.projects (id uuid PRIMARY KEY, org_id uuid NOT NULL);
