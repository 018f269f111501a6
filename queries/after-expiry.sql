-- name: after-expiry
-- question: What did an entity do after its last decision expired: did it come back, and did it behave?
-- param: $entity_type  ip, cidr, user, api_key, device or session
-- param: $entity       the entity as the decisions table names it
WITH last AS (
    SELECT max(expires_at) AS expired
    FROM decisions
    WHERE entity_type = $entity_type AND entity = $entity
)
SELECT date_trunc('minute', e.ts) AS minute,
       count(*) AS requests,
       sum(CASE WHEN e.status BETWEEN 400 AND 499 THEN 1 ELSE 0 END) AS status_4xx,
       count(DISTINCT e.path) AS paths,
       count(DISTINCT e.client_ip) AS addresses,
       count(DISTINCT e.user_id) AS users
FROM event_entities e, last
WHERE e.entity_type = $entity_type AND e.entity = $entity AND e.ts >= last.expired
GROUP BY date_trunc('minute', e.ts)
ORDER BY minute;
