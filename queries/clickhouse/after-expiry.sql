-- name: after-expiry
-- question: What did an entity do after its last decision expired: did it come back, and did it behave?
-- param: $entity_type  ip, cidr, user, api_key, device or session
-- param: $entity       the entity as the decisions table names it
-- ClickHouse variant of queries/after-expiry.sql (18.16 and later).
SELECT toStartOfMinute(ts) AS minute,
       count() AS requests,
       countIf(status BETWEEN 400 AND 499) AS status_4xx,
       uniqExact(path) AS paths,
       uniqExact(client_ip) AS addresses,
       ifNull(uniqExact(user_id), 0) AS users
FROM event_entities
WHERE entity_type = $entity_type AND entity = $entity
  AND ts_ms >= (SELECT max(expires_at_ms) FROM decisions WHERE entity_type = $entity_type AND entity = $entity)
GROUP BY minute
ORDER BY minute
