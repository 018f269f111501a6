//! The default pipeline against the simulator: every attack scenario caught,
//! benign traffic left alone. Seeds 1–5 are the acceptance set; the other
//! tests change scale and mix, so that nothing passes only at one operating point.

use std::path::Path;

use gatewatch::config::Pipeline;
use gatewatch::eval::{self, EvalConfig, Report};
use gatewatch::features::EntityType;
use gatewatch::simulate::{self, ATTACKS, OutFormat, SimConfig};

fn run(cfg: &SimConfig) -> Report {
    run_altered(cfg, |_| {})
}

/// [`run`] on the simulated requests as `alter` leaves them.
fn run_altered(cfg: &SimConfig, alter: impl FnOnce(&mut Vec<simulate::Req>)) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut reqs = simulate::generate(cfg);
    alter(&mut reqs);
    let out = simulate::write(cfg, &reqs, dir.path(), &[OutFormat::Json]).expect("simulate");
    drop(reqs);
    let pipeline =
        Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/default.toml")).expect("pipeline");
    let allow = pipeline.allowlist.clone();
    let enforce = EvalConfig::for_pipeline(&pipeline);
    let run_dir = dir.path().join("run");
    let summary = gatewatch::driver::replay_file(pipeline, &dir.path().join("access.jsonl"), None, &run_dir, false)
        .expect("replay");
    // State per entity follows activity, not a fixed worst case: at every
    // scale and mix these tests run, held state stays within 1 KiB per entity.
    let held: usize = summary.active_entities.values().sum();
    let per_entity = summary.state_bytes / held.max(1);
    assert!(per_entity <= 1024, "seed {}: {per_entity} bytes of state per entity ({held} held)", cfg.seed);
    let decisions = eval::read_decisions(&run_dir.join("decisions.jsonl")).expect("decisions");
    eval::evaluate(&out.labels, &decisions, &allow, &enforce).expect("eval")
}

fn check(cfg: &SimConfig, report: &Report) {
    let label = format!("seed {} scale {} hours {}", cfg.seed, cfg.scale, cfg.hours);
    let expected: Vec<&str> = match &cfg.attacks {
        None => ATTACKS.to_vec(),
        Some(l) => l.iter().map(String::as_str).collect(),
    };
    for a in expected {
        let s = report.scenario(a).unwrap_or_else(|| panic!("{label}: scenario {a} missing\n{}", report.render()));
        if simulate::EVADES_RULES.contains(&a) {
            // Built to slip under every per-entity threshold; what rules alone
            // catch of it is reported, not required (models are for these).
            eprintln!("{label}: {a}: rules alone block {:.1}%", 100.0 * s.blocked_share_after_grace());
            continue;
        }
        if simulate::THIN_CAMPAIGNS.contains(&a) {
            // Per-address decisions let each address's first request pass
            // (about 40 % blocked); the decision on the request class
            // stops the campaign from any address (docs/ARCHITECTURE.md,
            // "Request classes"), so most of it is blocked once detected.
            assert!(
                s.blocked_share_after_grace() >= 0.9,
                "{label}: {a} only {:.1}% blocked after its first 10 minutes\n{}",
                100.0 * s.blocked_share_after_grace(),
                report.render()
            );
            continue;
        }
        assert!(
            s.blocked_share_after_grace() >= 0.5,
            "{label}: {a} only {:.1}% blocked after its first 10 minutes\n{}",
            100.0 * s.blocked_share_after_grace(),
            report.render()
        );
    }
    assert!(
        report.benign_blocked_share() <= 0.001,
        "{label}: {:.4}% of benign requests blocked\n{}",
        100.0 * report.benign_blocked_share(),
        report.render()
    );
    for nat in ["172.58.10.21", "172.58.77.4", "193.29.107.10"] {
        assert!(!report.was_denied(EntityType::Ip, nat), "{label}: NAT address {nat} denied\n{}", report.render());
    }
    for key in ["partner-acme", "northwind-bi"] {
        assert!(!report.was_denied(EntityType::ApiKey, key), "{label}: integration key {key} denied");
    }
    for key in ["mobile-ios", "mobile-android", "web-spa"] {
        assert!(!report.was_denied(EntityType::ApiKey, key), "{label}: public app key {key} denied");
    }
    // The uptime checker's own address is never judged abusive; a subnet
    // decision can still cover it when an attacker rents an address in the
    // same hosting /24 (seed 2), which is reported, not yet prevented.
    for probe in ["167.99.20.14", "51.75.30.2", "95.216.8.9"] {
        assert!(!report.was_denied(EntityType::Ip, probe), "{label}: monitor {probe} denied\n{}", report.render());
    }
    // Legitimate automation: id walks, exports and retries at machine pace.
    for benign in ["crawler", "partner", "bi-export", "webhooks", "mobile-cgnat", "corporate-proxy"] {
        let s = report.scenario(benign).expect("benign scenario present");
        assert_eq!(s.blocked, 0, "{label}: {benign} had requests blocked\n{}", report.render());
    }
}

fn acceptance(seed: u64) {
    let cfg = SimConfig::new(seed, 6.0);
    let report = run(&cfg);
    check(&cfg, &report);
}

#[test]
fn seed_1() {
    acceptance(1);
}
#[test]
fn seed_2() {
    acceptance(2);
}
#[test]
fn seed_3() {
    acceptance(3);
}
#[test]
fn seed_4() {
    acceptance(4);
}
#[test]
fn seed_5() {
    acceptance(5);
}

#[test]
fn held_out_seed_at_half_scale() {
    let mut cfg = SimConfig::new(1001, 6.0);
    cfg.scale = 0.5;
    let report = run(&cfg);
    check(&cfg, &report);
}

#[test]
fn held_out_seed_at_double_scale() {
    let mut cfg = SimConfig::new(2002, 4.0);
    cfg.scale = 2.0;
    let report = run(&cfg);
    check(&cfg, &report);
}

#[test]
fn other_mix_and_span() {
    let mut cfg = SimConfig::new(3003, 3.0);
    cfg.attacks = Some(vec!["key-scraper".into(), "session-hijack".into(), "device-farm".into()]);
    let report = run(&cfg);
    check(&cfg, &report);
    assert!(report.scenario("credential-stuffing").is_none());
}

/// The thin campaign with made-up session ids: a fresh one on every
/// attempt, or one per address, never opened by anything but failing
/// passwords. A session id is the client's word; without the engine's own
/// check of it (`gatewatch::sessions`), these took the campaign out of its
/// columns and its posts out of the class.
#[test]
fn a_campaign_with_made_up_sessions_is_still_stopped() {
    let mut cfg = SimConfig::new(6161, 6.0);
    cfg.attacks = Some(vec!["distributed-stuffing".into(), "credential-stuffing".into()]);
    let report = run_altered(&cfg, |reqs| {
        for (i, r) in reqs.iter_mut().enumerate().filter(|(_, r)| r.scenario == "distributed-stuffing") {
            r.session = Some(if i % 2 == 0 {
                format!("ws-{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            } else {
                format!("ws-{}", r.ip.replace(['.', ':'], ""))
            });
        }
    });
    check(&cfg, &report);
}

#[test]
fn benign_only_traffic_is_left_alone() {
    let mut cfg = SimConfig::new(4004, 6.0);
    cfg.attacks = Some(vec![]);
    let report = run(&cfg);
    assert_eq!(report.attack_requests, 0);
    assert!(report.benign_blocked_share() <= 0.001, "{}", report.render());
}
