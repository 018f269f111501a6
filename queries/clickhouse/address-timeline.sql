-- name: address-timeline
-- question: What did one address do, minute by minute, and what was decided about it (or its subnet: the /24, an IPv6 address's /64)?
-- param: $ip  the client address as logged, e.g. 203.0.113.7
-- ClickHouse variant of queries/address-timeline.sql (18.16 and later).
SELECT minute, kind, requests, status_4xx, status_5xx, paths, users, user_agents, decision
FROM (
    SELECT toStartOfMinute(ts) AS minute,
           'traffic' AS kind,
           toNullable(count()) AS requests,
           toNullable(countIf(status BETWEEN 400 AND 499)) AS status_4xx,
           toNullable(countIf(status >= 500)) AS status_5xx,
           toNullable(uniqExact(path)) AS paths,
           toNullable(ifNull(uniqExact(user_id), 0)) AS users,
           toNullable(ifNull(uniqExact(user_agent), 0)) AS user_agents,
           CAST(NULL AS Nullable(String)) AS decision
    FROM events
    WHERE client_ip = $ip
    GROUP BY minute
    UNION ALL
    SELECT ts, 'decision', CAST(NULL AS Nullable(UInt64)), CAST(NULL AS Nullable(UInt64)), CAST(NULL AS Nullable(UInt64)),
           CAST(NULL AS Nullable(UInt64)), CAST(NULL AS Nullable(UInt64)), CAST(NULL AS Nullable(UInt64)),
           toNullable(concat(action, ' ', entity_type, ' ', entity, ' until ', toString(expires_at), ' (', source, '): ', reason))
    FROM decisions
    WHERE (entity_type = 'ip' AND entity = $ip)
       OR (entity_type = 'cidr' AND entity = if(position($ip, ':') = 0, replaceRegexpOne($ip, '\\.[0-9]+$', '.0/24'),
                                                concat(cutIPv6(IPv6StringToNum($ip), 8, 0), '/64')))
)
ORDER BY minute, kind DESC
