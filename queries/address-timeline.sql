-- name: address-timeline
-- question: What did one address do, minute by minute, and what was decided about it (or its subnet: the /24, an IPv6 address's /64)?
-- param: $ip  the client address as logged, e.g. 203.0.113.7
SELECT date_trunc('minute', ts) AS minute,
       'traffic' AS kind,
       count(*) AS requests,
       sum(CASE WHEN status BETWEEN 400 AND 499 THEN 1 ELSE 0 END) AS status_4xx,
       sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS status_5xx,
       count(DISTINCT path) AS paths,
       count(DISTINCT user_id) AS users,
       count(DISTINCT user_agent) AS user_agents,
       CAST(NULL AS VARCHAR) AS decision
FROM events
WHERE client_ip = $ip
GROUP BY date_trunc('minute', ts)
UNION ALL
SELECT ts, 'decision', CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       action || ' ' || entity_type || ' ' || entity || ' until ' || CAST(expires_at AS VARCHAR) || ' (' || source || '): ' || reason
FROM decisions
WHERE (entity_type = 'ip' AND entity = $ip)
   OR (entity_type = 'cidr' AND entity = subnet($ip))
ORDER BY minute, kind DESC;
