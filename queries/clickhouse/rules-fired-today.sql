-- name: rules-fired-today
-- question: Which rules and models decided most on the newest day in the data, against what, and how sure were they?
-- ClickHouse variant of queries/rules-fired-today.sql (18.16 and later).
SELECT source, entity_type, action,
       count() AS decisions,
       uniqExact(entity) AS entities,
       min(ts) AS first,
       max(ts) AS last,
       round(avg(score), 3) AS mean_score
FROM decisions
WHERE ts >= toStartOfDay((SELECT max(ts) FROM decisions))
GROUP BY source, entity_type, action
ORDER BY decisions DESC, source
