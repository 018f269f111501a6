-- name: users-two-countries
-- question: Which users were seen from two countries within an hour (impossible travel: a shared, stolen or stuffed account)?
-- ClickHouse variant of queries/users-two-countries.sql (18.16 and later): without window
-- functions, each user's requests are one time-sorted array, paired with their predecessors.
SELECT user_id,
       count() AS country_changes,
       toDateTime(intDiv(min(prev_ms), 1000)) AS first_change,
       arrayStringConcat(arraySort(groupUniqArray(concat(prev_country, '>', country))), ', ') AS moves,
       arrayStringConcat(arraySort(groupUniqArray(client_ip)), ', ') AS addresses_after
FROM (
    SELECT user_id,
           tupleElement(cur, 1) AS cur_ms, tupleElement(cur, 2) AS country, tupleElement(cur, 3) AS client_ip,
           tupleElement(prev, 1) AS prev_ms, tupleElement(prev, 2) AS prev_country
    FROM (
        SELECT user_id, arraySort(x -> tupleElement(x, 1), groupArray((ts_ms, assumeNotNull(country), client_ip))) AS seen
        FROM events
        WHERE user_id IS NOT NULL AND country IS NOT NULL
        GROUP BY user_id
    )
    ARRAY JOIN arrayPopFront(seen) AS cur, arrayPopBack(seen) AS prev
)
WHERE country != prev_country AND cur_ms - prev_ms < 3600000
GROUP BY user_id
ORDER BY country_changes DESC, min(prev_ms)
