//! `gatewatch explain` on a replay of labelled traffic: the story of a denied
//! attacker, of a benign address many users share and of IPv6 addresses in
//! their /64, checked for content against the same facts computed by direct
//! queries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use gatewatch::analytics::{self, explain::Story};
use gatewatch::config::Pipeline;
use gatewatch::features::EntityType;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn sql(data: &Path, q: &str, params: &[(&str, &str)]) -> Vec<RecordBatch> {
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    rt().block_on(analytics::query_with(data, q, &params)).unwrap_or_else(|e| panic!("{e}\n{q}"))
}

fn texts(batches: &[RecordBatch], i: usize) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = datafusion::arrow::compute::cast(b.column(i), &DataType::Utf8).expect("cast");
        let s = col.as_string::<i32>();
        out.extend((0..s.len()).map(|r| if s.is_null(r) { String::new() } else { s.value(r).to_string() }));
    }
    out
}

fn ints(batches: &[RecordBatch], i: usize) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let col = datafusion::arrow::compute::cast(b.column(i), &DataType::Int64).expect("cast");
        let a = col.as_primitive::<Int64Type>();
        out.extend((0..a.len()).map(|r| if a.is_null(r) { 0 } else { a.value(r) }));
    }
    out
}

/// Simulated traffic (a seed the shipped rules and model were not fitted
/// on) replayed with the default pipeline; returns the output directory and
/// the addresses that sent any attack request.
fn replayed(dir: &Path) -> (PathBuf, BTreeSet<String>) {
    let mut cfg = gatewatch::simulate::SimConfig::new(23, 3.0);
    cfg.scale = 0.3;
    let reqs = gatewatch::simulate::generate(&cfg);
    gatewatch::simulate::write(&cfg, &reqs, &dir.join("sim"), &[gatewatch::simulate::OutFormat::Json]).expect("sim");
    let pipeline = Pipeline::load(&root().join("pipelines/default.toml")).expect("pipeline");
    let out = dir.join("run");
    gatewatch::driver::replay_file(pipeline, &dir.join("sim/access.jsonl"), None, &out, false).expect("replay");
    let mut attackers = BTreeSet::new();
    for line in std::fs::read_to_string(dir.join("sim/labels.jsonl")).expect("labels").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("label");
        if v["attack"].as_bool() == Some(true) {
            attackers.insert(v["ip"].as_str().unwrap_or_default().to_string());
        }
    }
    (out, attackers)
}

fn explain(data: &Path, t: EntityType, e: &str) -> Story {
    rt().block_on(analytics::explain::explain(data, t, e)).expect("explain")
}

/// `[a=1, b=0.5]` at the end of a rule's reason: the values it fired on.
fn evidence(reason: &str) -> Vec<(String, String)> {
    let Some(open) = reason.rfind('[') else { return Vec::new() };
    reason[open + 1..]
        .trim_end_matches(']')
        .split(", ")
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 { format!("{}", v as i64) } else { format!("{v:.3}") }
}

#[test]
fn explain_tells_why_an_attacker_was_denied_and_what_else_it_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, attackers) = replayed(dir.path());
    let denied = sql(
        &data,
        "SELECT entity, source, reason FROM decisions WHERE entity_type = 'ip' AND action = 'deny' \
         AND source LIKE 'rule:%' ORDER BY ts, id LIMIT 1",
        &[],
    );
    let ip = texts(&denied, 0).pop().expect("the replay denied an address by a rule");
    assert!(attackers.contains(&ip), "{ip} was denied but sent no attack request");
    let story = explain(&data, EntityType::Ip, &ip);

    // Its decisions, as the decisions table has them, oldest first.
    let all = sql(&data, "SELECT source, action FROM decisions WHERE entity = $ip ORDER BY ts, id", &[("ip", &ip)]);
    let sources: Vec<&str> = story.decisions.iter().map(|d| d.source.as_str()).collect();
    assert_eq!(sources, texts(&all, 0));
    let first = story.decisions.iter().find(|d| d.action == "deny" && d.source.starts_with("rule:")).expect("deny");
    assert_eq!(first.source, texts(&denied, 1)[0]);
    assert_eq!(first.reason, texts(&denied, 2)[0]);
    // The feature values are those of the decision's own time, and they are
    // the values the rule's reason quotes.
    assert_eq!(first.features_ts.as_deref(), Some(first.ts.as_str()), "no feature row at the decision");
    let quoted = evidence(&first.reason);
    assert!(!quoted.is_empty(), "a rule's reason quotes its features: {}", first.reason);
    for (name, value) in quoted {
        let have = first.features.iter().find(|(n, _)| *n == name).map(|(_, v)| fmt(*v));
        assert_eq!(have.as_deref(), Some(value.as_str()), "{name} at the decision");
    }

    // Its traffic, before and since the first decision, adds up to all of it.
    let n = ints(&sql(&data, "SELECT count(*) FROM events WHERE client_ip = $ip", &[("ip", &ip)]), 0)[0] as u64;
    assert_eq!(story.traffic.requests, n);
    let (before, since) = (story.before_first_decision.as_ref(), story.since_first_decision.as_ref());
    assert_eq!(before.map(|t| t.requests).unwrap_or(0) + since.map(|t| t.requests).unwrap_or(0), n);
    let s = &story.traffic.status;
    assert_eq!(s.s2xx + s.s3xx + s.s4xx + s.s5xx + s.other, n);

    // What else it touched: the users, keys and devices of its requests.
    for (t, col) in [("user", "user_id"), ("api_key", "api_key_id"), ("device", "device_id")] {
        let direct = ints(
            &sql(&data, &format!("SELECT count(DISTINCT {col}) FROM events WHERE client_ip = $ip"), &[("ip", &ip)]),
            0,
        )[0] as u64;
        let told = story.related.iter().find(|r| r.entity_type == t).map(|r| r.distinct).unwrap_or(0);
        assert_eq!(told, direct, "distinct {t}s of {ip}");
    }
    let text = story.render();
    assert!(text.contains(&first.source) && text.contains(&first.reason), "{text}");
    assert!(text.contains("features at the decision"), "{text}");
}

#[test]
fn explain_a_benign_address_many_users_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, attackers) = replayed(dir.path());
    // The benign, never-decided address with the most users.
    let shared = sql(
        &data,
        "SELECT client_ip, count(DISTINCT user_id) AS users FROM events \
         WHERE client_ip NOT IN (SELECT entity FROM decisions WHERE entity_type = 'ip') \
         GROUP BY client_ip HAVING count(DISTINCT user_id) >= 2 ORDER BY users DESC, client_ip",
        &[],
    );
    let ip = texts(&shared, 0)
        .into_iter()
        .find(|ip| !attackers.contains(ip))
        .expect("a benign address shared by two or more users");
    let story = explain(&data, EntityType::Ip, &ip);
    assert!(story.decisions.is_empty());
    assert!(story.before_first_decision.is_none() && story.since_first_decision.is_none());

    // Its users, most requests first, as a direct count orders them.
    let direct = sql(
        &data,
        "SELECT user_id, count(*) AS n FROM events WHERE client_ip = $ip AND user_id IS NOT NULL \
         GROUP BY user_id ORDER BY n DESC, user_id LIMIT 5",
        &[("ip", &ip)],
    );
    let users = story.related.iter().find(|r| r.entity_type == "user").expect("users");
    assert!(users.distinct >= 2);
    let told: Vec<(String, i64)> = users.top.iter().map(|c| (c.value.clone(), c.requests as i64)).collect();
    let want: Vec<(String, i64)> = texts(&direct, 0).into_iter().zip(ints(&direct, 1)).collect();
    assert_eq!(told, want);

    // The other addresses of its /24.
    let dot = ip.rfind('.').expect("IPv4");
    let prefix = format!("{}.%", &ip[..dot]);
    let others = ints(
        &sql(
            &data,
            "SELECT count(DISTINCT client_ip) FROM events WHERE client_ip LIKE $p AND client_ip <> $ip",
            &[("p", &prefix), ("ip", &ip)],
        ),
        0,
    )[0] as u64;
    assert_eq!(story.neighbours.as_ref().map(|n| n.distinct), Some(others));

    let text = story.render();
    assert!(text.contains("decisions: none"), "{text}");
    assert!(text.contains(&format!("{} users", users.distinct)), "{text}");
    assert!(text.contains(&users.top[0].value), "{text}");

    // The command prints the same story, as text or JSON.
    let out = Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .args(["explain", "--entity-type", "ip", "--entity", &ip, "--json", "--data"])
        .arg(&data)
        .output()
        .expect("run gatewatch");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["entity"], ip.as_str());
    assert_eq!(v["traffic"]["requests"].as_u64(), Some(story.traffic.requests));
    let bad = Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .args(["explain", "--entity-type", "host", "--entity", &ip, "--data"])
        .arg(&data)
        .output()
        .expect("run gatewatch");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected ip, cidr"));
}

/// An IPv6 address's subnet is its /64, written as the engine writes it
/// whatever form the log used: explain finds its neighbours there, a subnet's
/// story holds all of their requests, and the view groups them alike.
#[test]
fn explain_an_ipv6_address_and_its_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Three addresses of 2001:db8:a:b::/64 in three spellings, one of
    // another /64, and an IPv4 address.
    let clients = [
        ("2001:db8:a:b::1", 4),
        ("2001:0DB8:000a:000b:0:0:0:2", 3),
        ("2001:db8:a:b:ffff::9", 2),
        ("2001:db8:a:c::1", 5),
        ("198.51.100.7", 1),
    ];
    let mut log = String::new();
    let mut s = 0;
    for (ip, n) in clients {
        for i in 0..n {
            s += 1;
            log.push_str(&format!(
                r#"{{"ts":"2026-11-02T06:00:{s:02}Z","client_ip":"{ip}","method":"GET","path":"/products/{i}","status":200,"user_id":"u{i}"}}"#
            ));
            log.push('\n');
        }
    }
    std::fs::write(dir.path().join("v6.jsonl"), log).expect("write");
    let pipeline = Pipeline::load(&root().join("pipelines/default.toml")).expect("pipeline");
    let data = dir.path().join("run");
    gatewatch::driver::replay_file(pipeline, &dir.path().join("v6.jsonl"), None, &data, false).expect("replay");

    let story = explain(&data, EntityType::Ip, "2001:db8:a:b::1");
    assert_eq!(story.traffic.requests, 4);
    let n = story.neighbours.as_ref().expect("an IPv6 address has a /64");
    assert_eq!(n.distinct, 2, "{:?}", n.top);
    let mut top: Vec<&str> = n.top.iter().map(|c| c.value.as_str()).collect();
    top.sort();
    assert_eq!(top, ["2001:db8:a:b::2", "2001:db8:a:b:ffff::9"]);
    assert!(story.render().contains("other addresses of its /64: 2"), "{}", story.render());

    let subnet = explain(&data, EntityType::Cidr, "2001:db8:a:b::/64");
    assert_eq!(subnet.traffic.requests, 9);
    let v4 = explain(&data, EntityType::Cidr, "198.51.100.0/24");
    assert_eq!(v4.traffic.requests, 1);

    let groups = sql(
        &data,
        "SELECT entity, count(*) FROM event_entities WHERE entity_type = 'cidr' GROUP BY entity ORDER BY entity",
        &[],
    );
    // Subnets, and IPv6 networks (the /48 and /56 a network decision names).
    assert_eq!(
        texts(&groups, 0),
        ["198.51.100.0/24", "2001:db8:a::/48", "2001:db8:a::/56", "2001:db8:a:b::/64", "2001:db8:a:c::/64"]
    );
    assert_eq!(ints(&groups, 1), [1, 14, 14, 9, 5]);
    let network = explain(&data, EntityType::Cidr, "2001:db8:a::/48");
    assert_eq!(network.traffic.requests, 14);
}
