-- name: users-two-countries
-- question: Which users were seen from two countries within an hour (impossible travel: a shared, stolen or stuffed account)?
WITH seen AS (
    SELECT user_id, ts, country, client_ip,
           lag(country) OVER (PARTITION BY user_id ORDER BY ts) AS prev_country,
           lag(ts) OVER (PARTITION BY user_id ORDER BY ts) AS prev_ts,
           lag(client_ip) OVER (PARTITION BY user_id ORDER BY ts) AS prev_ip
    FROM events
    WHERE user_id IS NOT NULL AND country IS NOT NULL
)
SELECT user_id,
       count(*) AS country_changes,
       min(prev_ts) AS first_change,
       array_to_string(array_agg(DISTINCT prev_country || '>' || country), ', ') AS moves,
       array_to_string(array_agg(DISTINCT client_ip), ', ') AS addresses_after
FROM seen
WHERE prev_country IS NOT NULL AND country <> prev_country AND ts - prev_ts < INTERVAL '1 hour'
GROUP BY user_id
ORDER BY country_changes DESC, first_change;
