-- name: blocked-by-collateral
-- question: Which decisions blocked the most people? For each deny, challenge or throttle: the requests, users and sessions that arrived while it was in force, ordered by the users who authenticated successfully. A NAT, a corporate proxy or a partner stands out by many authenticated users; a credential-stuffing address by many users tried and few authenticated.
SELECT d.entity_type, d.entity, d.action, d.source, d.ts AS decided, d.expires_at,
       count(e.ts) AS requests_in_force,
       count(DISTINCT e.user_id) AS users,
       count(DISTINCT CASE WHEN e.auth_result = 'ok' THEN e.user_id END) AS authenticated_users,
       count(DISTINCT e.session_id) AS sessions,
       sum(CASE WHEN e.auth_result = 'ok' THEN 1 ELSE 0 END) AS authenticated_requests
FROM decisions d
LEFT JOIN event_entities e
       ON e.entity_type = d.entity_type AND e.entity = d.entity
      AND e.ts >= d.ts AND e.ts < d.expires_at
WHERE d.action IN ('deny', 'challenge', 'throttle')
GROUP BY d.entity_type, d.entity, d.action, d.source, d.ts, d.expires_at
ORDER BY authenticated_users DESC, users DESC, requests_in_force DESC, decided
LIMIT 50;
