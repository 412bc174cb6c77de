CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id uuid, org_id uuid NOT NULL, PRIMARY KEY (org_id, id));
CREATE TABLE billing.projects (id uuid, org_id uuid NOT NULL, PRIMARY KEY (org_id, id));
