CREATE MATERIALIZED VIEW app.task_counts AS SELECT org_id, count(*) AS n FROM app.tasks GROUP BY org_id;
