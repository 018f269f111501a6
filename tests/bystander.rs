//! A subnet decision and the bystanders in its subnet. A scraper renting
//! several addresses of a hosting /24, each below the address rules, is
//! stopped by a decision on the /24; an uptime checker that has rented an
//! address there all along, and walks no ids, must not be blocked with it,
//! and must not become a way around the block once it starts walking ids.

mod common;

use common::labelled::Labelled;
use gatewatch::decision::{Action, Decision};
use gatewatch::features::EntityType;

const T0: i64 = 1_795_860_000_000; // 2026-11-28T10:00:00Z
const MIN: i64 = 60_000;
const MONITOR: &str = "203.0.113.14";
const NEWCOMER: &str = "203.0.113.50";
/// When the monitor starts walking ids itself.
const TURNS: i64 = T0 + 90 * MIN;

#[derive(Default)]
struct Traffic(Labelled);

impl Traffic {
    fn push(&mut self, ts: i64, ip: &str, path: &str, scenario: &str, attack: bool) {
        let n = self.0.next();
        self.0.push(
            ts,
            format!(
                r#"{{"ts":{ts},"client_ip":"{ip}","method":"GET","path":"{path}","status":200,"request_id":"r{n}","user_agent":"{scenario}/1.0"}}"#
            ),
            format!(
                r#"{{"ts":{ts},"request_id":"r{n}","scenario":"{scenario}","attack":{attack},"ip":"{ip}","ua":"{scenario}/1.0"}}"#
            ),
        );
    }
}

/// Three hours: the monitor from the start; from 40 minutes in, four
/// addresses of its /24 take product ids from one work queue, each at 75
/// per 10 minutes (below `enumeration-ip`'s 100); a newcomer appears in the
/// /24 after the subnet is denied; the monitor turns scraper at 90 minutes.
fn traffic() -> Traffic {
    let mut t = Traffic::default();
    let mut ts = T0;
    while ts < T0 + 180 * MIN {
        if ts < TURNS {
            t.push(ts, MONITOR, "/healthz", "uptime", false);
        }
        ts += MIN;
    }
    for s in 0..(80 * 60 / 2) {
        let ts = T0 + 40 * MIN + s * 2_000;
        let ip = format!("203.0.113.{}", 101 + s % 4);
        t.push(ts, &ip, &format!("/api/v1/products/{}", 10_000 + s), "scraper", true);
    }
    for s in 0..60 {
        t.push(T0 + 70 * MIN + s * 30_000, NEWCOMER, "/healthz", "newcomer", false);
    }
    for s in 0..(30 * 60 / 8) {
        t.push(TURNS + s * 8_000, MONITOR, &format!("/api/v1/products/{}", 50_000 + s), "monitor-turned", true);
    }
    t
}

fn replay() -> (tempfile::TempDir, Vec<Decision>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, decisions) = traffic().0.replay(dir.path());
    (dir, decisions)
}

#[test]
fn a_subnet_decision_spares_an_established_bystander_until_it_takes_part() {
    let (dir, decisions) = replay();
    let subnet: Vec<&Decision> = decisions.iter().filter(|d| d.entity_type == EntityType::Cidr).collect();
    let first = subnet.first().expect("the /24 was judged");
    assert_eq!((first.entity.as_str(), first.action), ("203.0.113.0/24", Action::Deny));
    assert!(first.created_ms < T0 + 50 * MIN, "denied {} s after the scraping began", (first.created_ms - T0) / 1000);
    let monitor: std::net::IpAddr = MONITOR.parse().expect("ip");
    assert_eq!(first.spared, vec![monitor], "only the monitor was there before and walks no ids");
    assert!(first.reason.contains("spares 203.0.113.14"), "{}", first.reason);

    // Once the monitor walks ids, a decision that no longer spares it
    // follows within the next ticks, with the same expiry.
    let narrowed = subnet
        .iter()
        .find(|d| d.created_ms >= TURNS && !d.spared.contains(&monitor))
        .expect("the monitor lost its exemption");
    assert!(narrowed.created_ms <= TURNS + MIN, "{} s after it turned", (narrowed.created_ms - TURNS) / 1000);
    assert_eq!(narrowed.action, Action::Deny);
    // The reason says what is spared, and only that.
    for d in &subnet {
        assert_eq!(d.reason.contains("spares"), !d.spared.is_empty(), "{d:?}");
        assert!(d.spared.iter().all(|ip| d.reason.contains(&ip.to_string())), "{d:?}");
    }
    // Spared addresses only shrink while a decision is in force: the
    // newcomer, there for 20 minutes when the monitor turned, is not
    // spared by the decision that stopped sparing the monitor.
    assert!(narrowed.spared.is_empty(), "{narrowed:?}");
    for w in subnet.windows(2) {
        if w[1].created_ms < w[0].expires_ms {
            assert!(w[1].spared.iter().all(|ip| w[0].spared.contains(ip)), "{:?} then {:?}", w[0], w[1]);
        }
    }

    let report = common::labelled::evaluate(dir.path(), &decisions);
    let scenario = |name: &str| report.scenario(name).expect(name).clone();
    assert_eq!(scenario("uptime").blocked, 0, "the bystander's checks went through");
    let scraper = scenario("scraper");
    assert!(scraper.blocked_after_grace as f64 >= 0.95 * scraper.requests_after_grace as f64, "{scraper:?}");
    let turned = scenario("monitor-turned");
    assert!(turned.blocked as f64 >= 0.9 * turned.requests as f64, "{turned:?}");
    // A new address in a subnet under a deny is presumed to be the
    // attacker's next one: that is what the subnet decision is for.
    let newcomer = scenario("newcomer");
    assert!(newcomer.blocked > 0, "{newcomer:?}");
}
