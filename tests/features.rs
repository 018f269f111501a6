//! Feature values on hand-written traffic, where the right answer is known.

use gatewatch::arrow::array::{Array, Float64Array, StringArray};
use gatewatch::arrow::record_batch::RecordBatch;
use gatewatch::event::{EventBatchBuilder, Format, parse_line};
use gatewatch::features::{self, EntityType, FeatureConfig, FeatureEngine, Snapshot};

const T0: i64 = 1_795_860_000_000; // 2026-11-28T09:20:00Z

fn line(ts: i64, ip: &str, extra: &str) -> String {
    format!(
        r#"{{"ts":{ts},"client_ip":"{ip}","method":"GET","path":"/","status":200{}{extra}}}"#,
        if extra.is_empty() { "" } else { "," }
    )
}

fn run(lines: &[String]) -> Vec<Snapshot> {
    let mut f = FeatureEngine::new(FeatureConfig::default());
    let mut b = EventBatchBuilder::with_capacity(64);
    for l in lines {
        b.append(&parse_line(l, Format::Json, None).expect("test line parses"));
    }
    let mut snaps = f.ingest(&b.finish().expect("batch")).expect("ingest");
    snaps.extend(f.flush().expect("flush"));
    snaps
}

/// The last value of `feature` for `entity` across the snapshots.
fn value(snaps: &[Snapshot], t: EntityType, entity: &str, feature: &str) -> Option<f64> {
    let mut out = None;
    for s in snaps {
        for (bt, batch) in &s.batches {
            if *bt != t {
                continue;
            }
            if let Some(v) = lookup(batch, entity, feature) {
                out = v;
            }
        }
    }
    out
}

fn lookup(batch: &RecordBatch, entity: &str, feature: &str) -> Option<Option<f64>> {
    let ents = batch.column(2).as_any().downcast_ref::<StringArray>()?;
    let col = batch.column(batch.schema().index_of(feature).ok()?).as_any().downcast_ref::<Float64Array>()?.clone();
    (0..batch.num_rows()).find(|&i| ents.value(i) == entity).map(|i| col.is_valid(i).then(|| col.value(i)))
}

#[test]
fn schema_lists_every_documented_feature() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FEATURES.md")).expect("docs");
    for (name, _) in features::FEATURES {
        assert!(doc.contains(&format!("| `{name}` |")), "docs/FEATURES.md lacks {name}");
    }
    assert_eq!(features::schema().fields().len(), features::NF + 3);
}

#[test]
fn credential_stuffing_counts() {
    let mut lines = Vec::new();
    for i in 0..30 {
        let ok = if i % 10 == 0 { "ok" } else { "invalid_credentials" };
        lines.push(line(
            T0 + i * 1000,
            "203.0.113.9",
            &format!(r#""grant_type":"password","auth_result":"{ok}","user_id":"victim{i}@example.com""#),
        ));
    }
    let snaps = run(&lines);
    let v = |f| value(&snaps, EntityType::Ip, "203.0.113.9", f);
    assert_eq!(v("login_attempts_10m"), Some(30.0));
    assert_eq!(v("login_failures_10m"), Some(27.0));
    assert_eq!(v("login_failure_ratio_10m"), Some(0.9));
    assert_eq!(v("distinct_users_10m"), Some(30.0));
    assert_eq!(v("requests_1m"), Some(30.0), "30 requests within 30 s");
    let cidr = value(&snaps, EntityType::Cidr, "203.0.113.0/24", "login_failures_10m");
    assert_eq!(cidr, Some(27.0), "the subnet sees the same requests");
}

#[test]
fn windows_slide_in_event_time() {
    let mut lines: Vec<String> = (0..5).map(|i| line(T0 + i * 1000, "198.51.100.1", "")).collect();
    // 20 minutes later one more request: the old five left the 10-minute window, not the hour.
    lines.push(line(T0 + 20 * 60_000, "198.51.100.1", ""));
    let snaps = run(&lines);
    let v = |f| value(&snaps, EntityType::Ip, "198.51.100.1", f);
    assert_eq!(v("requests_10m"), Some(1.0));
    assert_eq!(v("requests_1h"), Some(6.0));
    assert_eq!(v("age_s"), Some(1200.0));
}

#[test]
fn enumeration_probing_devices_and_travel() {
    let mut lines = Vec::new();
    for i in 0..20 {
        lines.push(
            line(T0 + i * 500, "192.0.2.10", "")
                .replace("\"path\":\"/\"", &format!("\"path\":\"/v1/products/{}\"", 1000 + i)),
        );
    }
    lines.push(
        line(T0 + 11_000, "192.0.2.10", "")
            .replace("\"path\":\"/\",\"status\":200", "\"path\":\"/.env\",\"status\":404"),
    );
    for i in 0..5 {
        lines.push(line(T0 + 12_000 + i, "192.0.2.10", &format!(r#""device_id":"d-new-{i}","attestation":"invalid""#)));
    }
    for (i, cc) in ["DE", "BR", "DE", "BR"].iter().enumerate() {
        lines.push(line(T0 + 13_000 + i as i64, "192.0.2.11", &format!(r#""session_id":"s-1","country":"{cc}""#)));
    }
    // One session from four addresses of three autonomous systems.
    for (i, (ip, asn)) in
        [("198.51.100.1", 7922), ("198.51.100.2", 7922), ("203.0.113.3", 701), ("192.0.2.4", 21928)].iter().enumerate()
    {
        lines.push(line(T0 + 14_000 + i as i64, ip, &format!(r#""session_id":"s-2","asn":{asn}"#)));
    }
    let snaps = run(&lines);
    let ip = |f| value(&snaps, EntityType::Ip, "192.0.2.10", f);
    assert_eq!(ip("id_requests_10m"), Some(20.0));
    assert_eq!(ip("sequential_ids_10m"), Some(19.0));
    assert_eq!(ip("unknown_path_404_10m"), Some(1.0));
    assert_eq!(ip("new_devices_10m"), Some(5.0));
    assert_eq!(ip("attestation_bad_ratio_10m"), Some(1.0));
    assert_eq!(ip("signature_bad_ratio_10m"), None, "null without evidence");
    let s = |f| value(&snaps, EntityType::Session, "s-1", f);
    assert_eq!(s("country_switches_10m"), Some(3.0));
    assert_eq!(s("distinct_countries_1h"), Some(2.0));
    let s2 = |f| value(&snaps, EntityType::Session, "s-2", f);
    assert_eq!(s2("distinct_ips_10m"), Some(4.0));
    assert_eq!(s2("distinct_asns_1h"), Some(3.0));
}

#[test]
fn late_events_within_lateness_count_and_ticks_fire() {
    let lines = vec![
        line(T0, "192.0.2.50", ""),
        line(T0 + 30_000, "192.0.2.50", ""),
        line(T0 + 27_000, "192.0.2.50", ""), // 3 s late: inside the 5 s lateness
    ];
    let snaps = run(&lines);
    assert!(snaps.len() >= 2, "ticks fire as event time passes");
    assert_eq!(value(&snaps, EntityType::Ip, "192.0.2.50", "requests_1h"), Some(3.0));
    assert!(snaps.windows(2).all(|w| w[0].as_of_ms <= w[1].as_of_ms));
}

#[test]
fn forgetting_idle_entities_between_persisted_ticks_keeps_rows_exact() {
    // Whole-second times starting on a tick boundary put the idle sweep one
    // tick before a persisted snapshot, while new entities are still waiting
    // for their persisted row: forgetting the idle ones must not shift them.
    let start = T0 - T0 % 10_000;
    let mut lines = vec![line(start, "192.0.2.1", ""), line(start, "192.0.2.2", "")];
    // Two hours later (both first addresses long idle), a stream of new ones.
    let later = start + 2 * 3_600_000;
    for i in 0..300 {
        lines.push(line(later + i * 1_000, &format!("198.51.100.{}", i % 250), ""));
    }
    let snaps = run(&lines);
    assert!(snaps.iter().any(|s| s.persist));
    assert_eq!(value(&snaps, EntityType::Ip, "198.51.100.249", "requests_1h"), Some(1.0));
    assert_eq!(value(&snaps, EntityType::Ip, "198.51.100.10", "requests_10m"), Some(2.0));
}

/// A key that obtained a client-credentials token is a confidential client:
/// what it authenticates counts on every entity of the request. The app's
/// public key, attested by the app, does not become one by trying the grant.
#[test]
fn confidential_clients_are_known_by_their_grant_and_never_attested() {
    let mut lines = vec![
        line(T0, "3.80.12.7", r#""api_key_id":"partner","grant_type":"client_credentials","auth_result":"ok""#),
        line(T0 + 100, "9.9.9.9", r#""api_key_id":"app","attestation":"valid","auth_result":"ok""#),
        line(T0 + 200, "9.9.9.9", r#""api_key_id":"app","grant_type":"client_credentials","auth_result":"ok""#),
        // Unknown to the key until it fails: a refused grant proves nothing.
        line(
            T0 + 300,
            "5.5.5.5",
            r#""api_key_id":"other","grant_type":"client_credentials","auth_result":"invalid_client""#,
        ),
    ];
    for i in 0..10 {
        lines.push(line(T0 + 1_000 + i, "3.80.12.7", r#""api_key_id":"partner","auth_result":"ok""#));
        lines.push(line(T0 + 1_000 + i, "9.9.9.9", r#""api_key_id":"app","auth_result":"ok""#));
        lines.push(line(T0 + 1_000 + i, "5.5.5.5", r#""api_key_id":"other","auth_result":"ok""#));
    }
    // An unauthenticated request with the partner's key counts nowhere.
    lines.push(line(T0 + 2_000, "3.80.12.7", r#""api_key_id":"partner","auth_result":"invalid_token""#));
    // Logged out of order: calls before the token request that authorised
    // them. Where the token was obtained, they count all the same.
    for i in 0..5 {
        lines.push(line(T0 + 3_000 + i, "4.4.4.4", r#""api_key_id":"export","auth_result":"ok""#));
    }
    lines.push(line(
        T0 + 2_900,
        "4.4.4.4",
        r#""api_key_id":"export","grant_type":"client_credentials","auth_result":"ok""#,
    ));
    let s = run(&lines);
    let conf = |t, e| value(&s, t, e, "confidential_10m");
    assert_eq!(conf(EntityType::Ip, "3.80.12.7"), Some(11.0), "the token request and ten calls");
    assert_eq!(conf(EntityType::ApiKey, "partner"), Some(11.0));
    assert_eq!(conf(EntityType::Cidr, "3.80.12.0/24"), Some(11.0));
    assert_eq!(conf(EntityType::Ip, "9.9.9.9"), Some(0.0), "an attested key is public");
    assert_eq!(conf(EntityType::Ip, "5.5.5.5"), Some(0.0), "no token obtained");
    assert_eq!(value(&s, EntityType::Ip, "3.80.12.7", "requests_10m"), Some(12.0));
    assert_eq!(conf(EntityType::Ip, "4.4.4.4"), Some(6.0), "the order of the log does not matter");
    assert_eq!(conf(EntityType::ApiKey, "export"), Some(6.0));
}

/// A new device counts as unattested only when the request that made it new
/// failed its attestation: a NAT's users passing theirs are churn, a rooted
/// phone failing every call is one device, a farm's minted ids each count.
#[test]
fn new_devices_count_as_unattested_by_their_first_request() {
    let mut lines = Vec::new();
    for i in 0..22 {
        let extra = format!(r#""device_id":"user-{i}","attestation":"valid""#);
        lines.push(line(T0 + i * 1_000, "172.58.77.4", &extra));
    }
    for i in 0..15 {
        lines.push(line(T0 + 30_000 + i * 1_000, "172.58.77.4", r#""device_id":"rooted","attestation":"invalid""#));
    }
    // A device first seen passing, failing later: not minted.
    lines.push(line(T0 + 50_000, "172.58.77.4", r#""device_id":"user-3","attestation":"missing""#));
    for i in 0..12 {
        let extra = format!(r#""device_id":"farm-{i}","attestation":"{}""#, ["invalid", "missing"][i % 2]);
        lines.push(line(T0 + 60_000 + i as i64 * 1_000, "3.80.111.9", &extra));
        let extra = format!(r#""device_id":"farm-{i}","attestation":"invalid""#);
        lines.push(line(T0 + 60_500 + i as i64 * 1_000, "3.80.111.9", &extra));
    }
    let s = run(&lines);
    let v = |e: &str, f: &str| value(&s, EntityType::Ip, e, f);
    assert_eq!(v("172.58.77.4", "new_devices_1h"), Some(23.0));
    assert_eq!(v("172.58.77.4", "new_devices_unattested_10m"), Some(1.0), "the rooted phone, once");
    assert_eq!(v("172.58.77.4", "new_devices_unattested_1h"), Some(1.0));
    assert_eq!(v("3.80.111.9", "new_devices_unattested_10m"), Some(12.0));
    assert_eq!(value(&s, EntityType::Cidr, "3.80.111.0/24", "new_devices_unattested_1h"), Some(12.0));
}

/// A confidential client's standing belongs to its secret where its owner
/// uses it: the same secret, a valid token and valid calls from another
/// network (a leaked secret) count as anyone's on the thief's address. The
/// key's networks are those of its first ten minutes and those it has used
/// for an hour; the network is the autonomous system when the log has it.
#[test]
fn a_confidential_secret_used_from_another_network_is_not_the_clients_standing() {
    const MIN: i64 = 60_000;
    let tok = r#""api_key_id":"partner","grant_type":"client_credentials","auth_result":"ok""#;
    let call = r#""api_key_id":"partner","auth_result":"ok""#;
    let with_asn = |extra: &str, asn: u32| format!("{extra},\"asn\":{asn}");
    let mut lines = vec![line(T0, "3.80.12.7", &with_asn(tok, 16509))];
    // The partner's second server, five minutes later: also home.
    lines.push(line(T0 + 5 * MIN, "3.80.12.8", &with_asn(call, 16509)));
    // Twenty minutes in, the thief: another network, a token of its own.
    lines.push(line(T0 + 20 * MIN, "203.0.113.50", &with_asn(tok, 64500)));
    for i in 0..10 {
        lines.push(line(T0 + 20 * MIN + 100 + i, "203.0.113.50", &with_asn(call, 64500)));
        lines.push(line(T0 + 20 * MIN + 100 + i, "3.80.12.7", &with_asn(call, 16509)));
        // Inside the partner's own autonomous system: at home (a limit).
        lines.push(line(T0 + 20 * MIN + 100 + i, "54.210.1.1", &with_asn(call, 16509)));
        // No ASN in the log: the network is the /24, and this one is new.
        lines.push(line(T0 + 20 * MIN + 100 + i, "198.51.100.7", call));
    }
    // An hour after its first use, the thief's network is established.
    lines.push(line(T0 + 81 * MIN, "203.0.113.51", &with_asn(call, 64500)));
    let s = run(&lines[..lines.len() - 1]);
    let conf = |s: &[Snapshot], e| value(s, EntityType::Ip, e, "confidential_10m");
    assert_eq!(conf(&s, "3.80.12.8"), Some(1.0));
    assert_eq!(conf(&s, "3.80.12.7"), Some(10.0), "the partner's own calls still count");
    assert_eq!(conf(&s, "203.0.113.50"), Some(0.0), "neither the thief's token nor its calls");
    assert_eq!(value(&s, EntityType::Ip, "203.0.113.50", "requests_10m"), Some(11.0));
    assert_eq!(conf(&s, "54.210.1.1"), Some(10.0));
    assert_eq!(conf(&s, "198.51.100.7"), Some(0.0));
    let s = run(&lines);
    assert_eq!(conf(&s, "203.0.113.51"), Some(1.0));

    // Counted where the operator sees it.
    let mut f = FeatureEngine::new(FeatureConfig::default());
    let mut b = EventBatchBuilder::with_capacity(64);
    for l in &lines {
        b.append(&parse_line(l, Format::Json, None).expect("test line parses"));
    }
    f.ingest(&b.finish().expect("batch")).expect("ingest");
    assert_eq!(f.stats().confidential_away, 21, "the thief's 11 and the new /24's 10");
}

/// A failed password is "cold" only while failing is all the address has
/// done; the campaign columns count addresses, not requests, so one rig
/// sending thousands of passwords does not drown a campaign of many.
#[test]
fn cold_failures_and_the_campaign_they_add_up_to() {
    let fail = r#""auth_result":"invalid_credentials""#;
    let mut lines = vec![
        // A person: the page first, then a typo, then in.
        line(T0, "198.51.100.1", ""),
        line(T0 + 5_000, "198.51.100.1", fail),
        line(T0 + 9_000, "198.51.100.1", r#""auth_result":"ok""#),
        // The genuine app, attested, mistyping on a fresh address: not cold.
        line(
            T0 + 1_000,
            "198.51.100.2",
            r#""grant_type":"password","auth_result":"invalid_credentials","attestation":"valid""#,
        ),
        // A browser's typo in the session its page started: not cold either.
        line(T0 + 1_400, "198.51.100.3", r#""session_id":"ws-1""#),
        line(T0 + 1_500, "198.51.100.3", r#""session_id":"ws-1","auth_result":"invalid_credentials""#),
        // Made-up session ids: one per attempt, or one reused, never opened
        // by anything but failing passwords. As bare as no session at all.
        line(T0 + 1_600, "203.0.113.100", r#""session_id":"forged-1","auth_result":"invalid_credentials""#),
        line(T0 + 1_700, "203.0.113.101", r#""session_id":"forged-2","auth_result":"invalid_credentials""#),
        line(T0 + 1_800, "203.0.113.101", r#""session_id":"forged-2","auth_result":"invalid_credentials""#),
        // A session id another address opened is a session here too.
        line(T0 + 1_900, "198.51.100.4", r#""session_id":"ws-1","auth_result":"invalid_credentials""#),
    ];
    // Twelve addresses that only ever send failing passwords, two each.
    for i in 0..12 {
        lines.push(line(T0 + 2_000 + i, &format!("203.0.113.{i}"), fail));
        lines.push(line(T0 + 20_000 + i, &format!("203.0.113.{i}"), fail));
    }
    // One rig with hundreds of attempts: one address among the loggers-in.
    for i in 0..300 {
        lines.push(line(T0 + 3_000 + i * 10, "192.0.2.9", fail));
    }
    // A cold address that then opens a page is no longer only failing.
    lines.push(line(T0 + 4_000, "203.0.113.200", fail));
    lines.push(line(T0 + 30_000, "203.0.113.200", ""));
    let s = run(&lines);
    let v = |e: &str, f: &str| value(&s, EntityType::Ip, e, f);
    assert_eq!(v("198.51.100.1", "cold_failures_10m"), Some(0.0), "loaded the page first");
    assert_eq!(v("198.51.100.2", "cold_failures_10m"), Some(0.0), "attested");
    assert_eq!(v("198.51.100.3", "cold_failures_10m"), Some(0.0), "a session");
    assert_eq!(v("198.51.100.4", "cold_failures_10m"), Some(0.0), "a session opened elsewhere");
    assert_eq!(v("203.0.113.100", "cold_failures_10m"), Some(1.0), "a made-up session");
    assert_eq!(v("203.0.113.101", "cold_failures_10m"), Some(2.0), "a made-up session, reused");
    assert_eq!(value(&s, EntityType::Session, "forged-2", "cold_failures_10m"), Some(2.0));
    assert_eq!(value(&s, EntityType::Session, "ws-1", "cold_failures_10m"), Some(0.0));
    assert_eq!(v("203.0.113.5", "cold_failures_10m"), Some(2.0));
    assert_eq!(v("203.0.113.5", "requests_10m"), Some(2.0));
    assert_eq!(v("192.0.2.9", "cold_failures_10m"), Some(300.0));
    assert_eq!(v("203.0.113.200", "cold_failures_10m"), Some(1.0));
    assert_eq!(v("203.0.113.200", "requests_10m"), Some(2.0), "the rule's own-evidence clause fails");
    // 16 cold addresses (the twelve, the rig, .200, the two made-up
    // sessions) of 20 that tried a password.
    assert_eq!(v("198.51.100.1", "campaign_cold_addresses_10m"), Some(16.0));
    assert_eq!(v("203.0.113.5", "campaign_cold_share_10m"), Some(16.0 / 20.0));
    // The same value on every entity type's rows of that tick.
    assert_eq!(value(&s, EntityType::Cidr, "203.0.113.0/24", "campaign_cold_addresses_10m"), Some(16.0));
}

/// An item read without a session is "cold" only while such reads are all
/// the address has done, and a page's own API call within a second of it is
/// the same look. An address becomes campaign evidence at its second cold
/// look, once, and never when the operator vouches for it.
#[test]
fn cold_reads_and_the_scraping_campaign_they_add_up_to() {
    let get = |ts: i64, ip: &str, path: &str, extra: &str| {
        let l = line(ts, ip, extra);
        l.replace(r#""path":"/""#, &format!(r#""path":"{path}""#))
    };
    let mut lines = vec![
        // A visitor from a search engine: the page without a session, its API
        // call with the session the page set (not yet seen opened), its
        // assets, then the next page with the session.
        get(T0, "198.51.100.1", "/products/1001", ""),
        get(T0 + 200, "198.51.100.1", "/v1/products/1001", r#""session_id":"ws-a""#),
        get(T0 + 400, "198.51.100.1", "/assets/app.js", r#""session_id":"ws-a""#),
        get(T0 + 15_000, "198.51.100.1", "/products/2002", r#""session_id":"ws-a""#),
        // A browser that keeps no cookies: every request bare, but it loads assets.
        get(T0 + 1_000, "198.51.100.2", "/products/1001", ""),
        get(T0 + 1_200, "198.51.100.2", "/v1/products/1001", ""),
        get(T0 + 1_300, "198.51.100.2", "/assets/app.css", ""),
        get(T0 + 20_000, "198.51.100.2", "/products/3003", ""),
        // An app's read carries its key, a partner's too: never bare.
        get(T0 + 2_000, "198.51.100.3", "/v1/products/1", r#""api_key_id":"mobile-ios""#),
        get(T0 + 12_000, "198.51.100.3", "/v1/products/2", r#""api_key_id":"mobile-ios""#),
        // A verified crawler, vouched for by the operator.
        get(T0 + 3_000, "66.249.66.1", "/products/5", r#""user_agent":"Googlebot/2.1""#),
        get(T0 + 9_000, "66.249.66.1", "/products/6", r#""user_agent":"Googlebot/2.1""#),
        get(T0 + 19_000, "66.249.66.1", "/products/7", r#""user_agent":"Googlebot/2.1""#),
        // A single read and gone (a link preview): one look, no reader.
        get(T0 + 4_000, "203.0.113.250", "/products/42", ""),
    ];
    // Twelve exits of a proxy pool: three reads each, ten seconds apart.
    for i in 0..12 {
        for n in 0..3 {
            lines.push(get(
                T0 + 5_000 + i + n * 10_000,
                &format!("203.0.113.{i}"),
                &format!("/products/{}", 700 + 3 * i + n),
                "",
            ));
        }
    }
    // An exit that sends a made-up session id, the same on every read: the
    // session is never opened (only bare reads carried it), so it is as bare
    // as none.
    for n in 0..3 {
        lines.push(get(
            T0 + 7_000 + n * 10_000,
            "203.0.113.201",
            &format!("/products/{}", 950 + n),
            r#""session_id":"made-up""#,
        ));
    }
    // One exit that then loads an asset is no longer cold.
    lines.push(get(T0 + 6_000, "203.0.113.200", "/products/900", ""));
    lines.push(get(T0 + 16_000, "203.0.113.200", "/products/901", ""));
    lines.push(get(T0 + 26_000, "203.0.113.200", "/assets/x.png", ""));
    lines.sort_by_key(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["ts"].as_i64()));

    let mut f = FeatureEngine::new(FeatureConfig::default());
    f.set_vouched(Box::new(|ip, ua| ip.starts_with("66.249.") && ua.is_some_and(|u| u.contains("Googlebot"))));
    let mut b = EventBatchBuilder::with_capacity(64);
    for l in &lines {
        b.append(&parse_line(l, Format::Json, None).expect("test line parses"));
    }
    let mut s = f.ingest(&b.finish().expect("batch")).expect("ingest");
    s.extend(f.flush().expect("flush"));
    let v = |e: &str, f: &str| value(&s, EntityType::Ip, e, f);
    assert_eq!(v("198.51.100.1", "cold_reads_10m"), Some(0.0), "a visitor: one look, then a session and assets");
    assert_eq!(v("198.51.100.2", "cold_reads_10m"), Some(0.0), "no cookies, but the page's assets");
    assert_eq!(v("198.51.100.3", "cold_reads_10m"), Some(0.0), "an app's key");
    assert_eq!(v("66.249.66.1", "cold_reads_10m"), Some(3.0), "a crawler reads cold ...");
    assert_eq!(v("203.0.113.250", "cold_reads_10m"), Some(1.0));
    assert_eq!(v("203.0.113.5", "cold_reads_10m"), Some(3.0));
    assert_eq!(v("203.0.113.200", "cold_reads_10m"), Some(0.0), "an asset ends it");
    assert_eq!(v("203.0.113.201", "cold_reads_10m"), Some(3.0), "a made-up session, reused");
    assert_eq!(value(&s, EntityType::Session, "made-up", "cold_reads_10m"), Some(3.0));
    // The visitor's session was opened by the assets the page loaded.
    assert_eq!(value(&s, EntityType::Session, "ws-a", "cold_reads_10m"), Some(0.0));
    // ... but only the exits are readers: the twelve, .201 and .200 (counted
    // at its second look, before the asset); not the crawler, the single
    // read or anyone who did anything else.
    assert_eq!(v("203.0.113.5", "campaign_cold_readers_10m"), Some(14.0));
    // Of the addresses that read items: the exits, the single read, the
    // visitor, the cookieless browser, the app and the crawler.
    assert_eq!(v("203.0.113.5", "campaign_cold_reader_share_10m"), Some(14.0 / 19.0));
    assert_eq!(value(&s, EntityType::Cidr, "203.0.113.0/24", "campaign_cold_readers_10m"), Some(14.0));
}
