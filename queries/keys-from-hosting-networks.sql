-- name: keys-from-hosting-networks
-- question: Which API keys are used from hosting and cloud networks, where scripts rather than phones and browsers run, and from how many addresses?
-- The list holds well-known hosting and cloud providers' public AS numbers; extend it for your traffic. A partner integration on a cloud is expected here; the public app key is not.
WITH hosting(asn, provider) AS (
    VALUES (16509, 'Amazon'), (14618, 'Amazon'), (8987, 'Amazon'), (396982, 'Google Cloud'),
           (8075, 'Microsoft'), (14061, 'DigitalOcean'), (16276, 'OVH'), (24940, 'Hetzner'),
           (213230, 'Hetzner'), (63949, 'Akamai (Linode)'), (20473, 'Vultr'), (45102, 'Alibaba'),
           (31898, 'Oracle'), (51167, 'Contabo'), (12876, 'Scaleway'), (132203, 'Tencent'),
           (9009, 'M247'), (36352, 'ColoCrossing'), (60068, 'Datacamp'), (212238, 'Datacamp')
)
SELECT e.api_key_id, h.provider, e.asn,
       count(*) AS requests,
       count(DISTINCT e.client_ip) AS addresses,
       count(DISTINCT e.user_id) AS users,
       sum(CASE WHEN e.signature IN ('invalid', 'stale', 'replayed') THEN 1 ELSE 0 END) AS bad_signatures,
       min(e.ts) AS first_seen,
       max(e.ts) AS last_seen
FROM events e
JOIN hosting h ON CAST(e.asn AS BIGINT) = h.asn
WHERE e.api_key_id IS NOT NULL
GROUP BY e.api_key_id, h.provider, e.asn
ORDER BY requests DESC;
