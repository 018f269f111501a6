//! The per-request path of the decision API: a verdict from 100,000 decisions in
//! force (hits and misses, with a range decision to check), counting what a
//! refused lookup met (the console's collateral), and reading the change stream;
//! and the engine's side of the store: a round's decisions written.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch::config::Allowlist;
use gatewatch::decision::Action;
use gatewatch::decision::Decision;
use gatewatch::features::EntityType;
use gatewatch::live::collateral::Collateral;
use gatewatch::live::store::{LiveStore, Query};

fn decision(id: u64, t: EntityType, entity: String, action: Action) -> Decision {
    Decision {
        id,
        entity_type: t,
        entity,
        action,
        reason: "bench".into(),
        source: "manual:bench".into(),
        score: 1.0,
        created_ms: 0,
        expires_ms: i64::MAX / 2,
        offense: 0,
        spared: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LiveStore::open(dir.path(), 0).expect("store");
    let mut ds: Vec<_> = (0..100_000u64)
        .map(|i| {
            decision(i + 1, EntityType::Ip, format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), Action::Deny)
        })
        .collect();
    ds.push(decision(200_000, EntityType::Cidr, "198.51.100.0/24".into(), Action::Challenge));
    store.put_many(ds).expect("put");
    let allow = Allowlist::default();
    let ips: Vec<std::net::IpAddr> = (0..1024u64)
        .map(|i| {
            if i % 2 == 0 {
                format!("10.{}.{}.{}", ((i * 97) >> 16) & 1, ((i * 97) >> 8) & 255, (i * 97) & 255)
            } else {
                format!("172.16.{}.{}", i >> 8, i & 255)
            }
            .parse()
            .expect("ip")
        })
        .collect();
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(ips.len() as u64));
    g.bench_function("verdict_ip_user_100k_decisions", |b| {
        b.iter(|| {
            for ip in &ips {
                let q = Query { ip: Some(*ip), user: Some("user-17"), ..Default::default() };
                std::hint::black_box(store.lookup(&q, &allow, 1));
            }
        })
    });
    g.finish();
    // What a refused lookup adds to count the decision's collateral (the
    // console's users and sessions behind each decision): one shard lock and
    // two keyed hashes, over as many decisions as the lookups above meet.
    let tallies = Collateral::default();
    let users: Vec<String> = (0..1024).map(|i| format!("user-{i}")).collect();
    let mut g = c.benchmark_group("collateral");
    g.throughput(Throughput::Elements(users.len() as u64));
    g.bench_function("record_refused_lookup", |b| {
        b.iter(|| {
            for (i, u) in users.iter().enumerate() {
                tallies.record((i % 512) as u64 + 1, Some(u), Some("session-1"), true, 1);
            }
        })
    });
    g.finish();
    // Naming a forwarded request's class (`/v1/authz` with the original
    // method and URI): a post of the form, spellings that must normalise,
    // and the other requests, which most lookups are.
    let classes = gatewatch::classes::ClassConfig { login_forms: vec!["/login".into()], ..Default::default() };
    let requests: Vec<(&str, String)> = (0..1024)
        .map(|i| match i % 8 {
            0 => ("POST", "/login".to_string()),
            1 => ("POST", "/%6Cogin/?next=%2Fcart".to_string()),
            2 => ("POST", format!("/v1/orders/{i}")),
            _ => ("GET", format!("/v1/products/{i}?fields=price")),
        })
        .collect();
    let mut g = c.benchmark_group("classes");
    g.throughput(Throughput::Elements(requests.len() as u64));
    g.bench_function("classify_forwarded_request", |b| {
        b.iter(|| requests.iter().filter(|(m, p)| classes.classify(m, p, false).is_some()).count())
    });
    // Whether a forwarded session id is one the engine saw opened: a keyed
    // hash and a lock, over a full registry, half the ids held.
    let opened = gatewatch::sessions::OpenedSessions::new(gatewatch::sessions::DEFAULT_HELD);
    let held: Vec<String> = (0..gatewatch::sessions::DEFAULT_HELD / 2).map(|i| format!("ws-{i:016x}")).collect();
    opened.insert_all(held.iter().map(String::as_str));
    let asked: Vec<String> = (0..1024).map(|i| format!("ws-{:016x}", i * 977)).collect();
    g.bench_function("opened_session_lookup", |b| b.iter(|| asked.iter().filter(|s| opened.contains(s)).count()));
    g.finish();
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Elements(1000));
    let cursor = store.cursor() - 1000;
    g.bench_function("since_cursor_1000_changes", |b| {
        b.iter(|| std::hint::black_box(store.since(Some(cursor), 1000, 1).expect("since")))
    });
    g.finish();
    // The engine's decisions of a round (an attack across 200 addresses
    // judged at once), published and written: in one transaction, as the
    // engine does, against one transaction (one fsync) each.
    let mut g = c.benchmark_group("store");
    g.sample_size(10);
    g.throughput(Throughput::Elements(200));
    let mut next = 1_000_000u64;
    let mut round = move || {
        next += 200;
        (next..next + 200).map(move |i| {
            let mut d = decision(i, EntityType::Ip, format!("100.64.{}.{}", (i >> 8) & 255, i & 255), Action::Deny);
            d.source = "rule:bench".into();
            d
        })
    };
    g.bench_function("round_of_200_decisions_one_write", |b| {
        b.iter(|| store.put_automatic_many(round().collect(), 1).expect("put"))
    });
    g.bench_function("round_of_200_decisions_written_each", |b| {
        b.iter(|| {
            for d in round() {
                store.put_automatic(d, 1).expect("put");
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
