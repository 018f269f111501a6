-- name: keys-from-hosting-networks
-- question: Which API keys are used from hosting and cloud networks, where scripts rather than phones and browsers run, and from how many addresses?
-- The list holds well-known hosting and cloud providers' public AS numbers; extend it for your traffic. A partner integration on a cloud is expected here; the public app key is not.
-- ClickHouse variant of queries/keys-from-hosting-networks.sql (18.16 and later): the list as transform().
SELECT api_key_id, provider, asn,
       count() AS requests,
       uniqExact(client_ip) AS addresses,
       ifNull(uniqExact(user_id), 0) AS users,
       ifNull(countIf(signature IN ('invalid', 'stale', 'replayed')), 0) AS bad_signatures,
       min(ts) AS first_seen,
       max(ts) AS last_seen
FROM (
    SELECT *,
           transform(assumeNotNull(asn),
                     [16509, 14618, 8987, 396982, 8075, 14061, 16276, 24940, 213230, 63949,
                      20473, 45102, 31898, 51167, 12876, 132203, 9009, 36352, 60068, 212238],
                     ['Amazon', 'Amazon', 'Amazon', 'Google Cloud', 'Microsoft', 'DigitalOcean', 'OVH', 'Hetzner',
                      'Hetzner', 'Akamai (Linode)', 'Vultr', 'Alibaba', 'Oracle', 'Contabo', 'Scaleway', 'Tencent',
                      'M247', 'ColoCrossing', 'Datacamp', 'Datacamp'],
                     '') AS provider
    FROM events
    WHERE api_key_id IS NOT NULL AND asn IS NOT NULL
)
WHERE provider != ''
GROUP BY api_key_id, provider, asn
ORDER BY requests DESC
