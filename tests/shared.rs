//! Shared entities (a NAT address, a public app key): a rule's action there
//! becomes its milder `on_shared`, and sharing found once is not forgotten
//! the moment the count behind `decisions.shared_when` dips.

use std::path::{Path, PathBuf};

use gatewatch::config::Pipeline;
use gatewatch::decision::Decision;

const T0: i64 = 1_795_860_000_000; // 2026-11-28T09:20:00Z
const MIN: i64 = 60_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn line(ts: i64, ip: &str, path: &str, extra: &str) -> String {
    format!(r#"{{"ts":{ts},"client_ip":"{ip}","method":"GET","path":"{path}","status":200{extra}}}"#)
}

/// Thirty people sign in behind `nat` over ten minutes from `T0 + 5 min`,
/// then from `T0 + 60 min` something behind it (or a person's script) walks
/// the orders by id, one every two seconds, for fifteen minutes: an
/// enumeration the default pipeline denies anywhere else. The people age
/// out of the address's hour from `T0 + 65 min` on, one every twenty seconds.
fn traffic(nat: &str, alone: &str) -> String {
    let mut lines = Vec::new();
    for u in 0..30 {
        let ts = T0 + 5 * MIN + u * 20_000;
        lines.push((ts, line(ts, nat, "/v1/me", &format!(r#","user_id":"user-{u}","auth_result":"ok""#))));
    }
    for i in 0..450 {
        let ts = T0 + 60 * MIN + i * 2_000;
        lines.push((ts, line(ts, nat, &format!("/v1/orders/{}", 10_000 + i), "")));
        lines.push((ts + 1, line(ts + 1, alone, &format!("/v1/orders/{}", 20_000 + i), "")));
    }
    lines.sort_by_key(|(ts, _)| *ts);
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

fn replay(dir: &Path, text: &str) -> (Vec<Decision>, gatewatch::engine::Summary) {
    let input = dir.join("access.jsonl");
    std::fs::write(&input, text).expect("write log");
    let pipeline = Pipeline::load(&root().join("pipelines/default.toml")).expect("default pipeline");
    let out = dir.join("run");
    let summary = gatewatch::driver::replay_file(pipeline, &input, None, &out, false).expect("replay");
    let decisions = gatewatch::eval::read_decisions(&out.join("decisions.jsonl")).unwrap_or_else(|e| panic!("{e}"));
    (decisions, summary)
}

#[test]
fn an_address_found_shared_stays_shared_when_its_users_age_out_of_the_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nat, alone) = ("100.64.7.9", "198.51.100.77");
    let (decisions, summary) = replay(dir.path(), &traffic(nat, alone));
    let on = |ip: &str| -> Vec<&Decision> {
        decisions.iter().filter(|d| d.entity_type.as_str() == "ip" && d.entity == ip).collect()
    };
    // The same walk from an address nobody else uses: denied.
    let alone_d = on(alone);
    assert!(alone_d.iter().any(|d| d.action.as_str() == "deny"), "the rule fires on the walk: {alone_d:?}");
    // Behind the NAT: challenged while its thirty users are in the hour …
    let nat_d = on(nat);
    let first = nat_d.first().unwrap_or_else(|| panic!("the walk behind the NAT is judged: {decisions:?}"));
    assert_eq!(first.action.as_str(), "challenge", "{first:?}");
    assert!(first.reason.contains("shared by many users"), "{}", first.reason);
    assert!(first.created_ms < T0 + 65 * MIN, "judged before any user aged out: {first:?}");
    // … and still when the walk goes on past the first users' hour: not
    // denied because the thirtieth user's sign-in is now 61 minutes old.
    assert!(nat_d.iter().all(|d| d.action.as_str() != "deny"), "never denied: {nat_d:?}");
    let last_hit = T0 + 60 * MIN + 449 * 2_000;
    assert!(
        nat_d.iter().any(|d| d.created_ms <= last_hit && last_hit < d.expires_ms) || nat_d.len() > 1,
        "the challenge covers the walk or is renewed: {nat_d:?}"
    );
    assert!(summary.downgraded_shared >= 1);
    assert!(
        summary.downgraded_shared_remembered >= 1,
        "the walk was judged again after users aged out, on remembered sharing: {summary:?}"
    );
}
