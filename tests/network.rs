//! Rotation through the addresses of a network one holder has: an IPv6 /48
//! (a tunnel broker's or a host's free allocation) used a new /64 every two
//! requests, so that no address and no /64 comes near the address and
//! subnet rules. The `network` entity sees the /48 as one, and its decision
//! is a range that covers the next /64 before the attacker uses it. A
//! provider's /48 where households live, and a botnet's bots among them,
//! is not one holder's and is left alone; a server of the holder's that
//! was there before and took no part is spared. A household's /56 inside
//! that /48 (an ISP's delegation to one customer), rotated through the same
//! way, is the holder's: the /56 is denied, the provider's /48 is not.

mod common;

use common::labelled::Labelled;
use gatewatch::decision::{Action, Decision};
use gatewatch::features::EntityType;

const T0: i64 = 1_795_860_000_000; // 2026-11-28T10:00:00Z
const MIN: i64 = 60_000;
const ATTACK: i64 = T0 + 40 * MIN;
/// The holder's mail server, polling a health page from the start.
const BYSTANDER: &str = "2001:db8:1:ffff::25";

#[derive(Default)]
struct Traffic(Labelled);

impl Traffic {
    /// One request; `extra` adds fields to its log line.
    fn push(&mut self, ts: i64, ip: &str, request: (&str, &str, u16), extra: &str, scenario: &str, attack: bool) {
        let n = self.0.next();
        let (method, path, status) = request;
        self.0.push(
            ts,
            format!(
                r#"{{"ts":{ts},"client_ip":"{ip}","method":"{method}","path":"{path}","status":{status},"request_id":"r{n}"{extra}}}"#
            ),
            format!(r#"{{"ts":{ts},"request_id":"r{n}","scenario":"{scenario}","attack":{attack},"ip":"{ip}"}}"#),
        );
    }
}

fn sign_in(user: &str, ok: bool) -> String {
    let result = if ok { "ok" } else { "invalid_credentials" };
    format!(r#","grant_type":"password","user_id":"{user}","auth_result":"{result}""#)
}

/// Sixty households of the provider's 2001:db8:2::/48, each in its own /56,
/// using the mobile app for two hours (attested, signed in; one mistyped
/// password in eight), from one device or from `devices` (a phone, a tablet,
/// a laptop), each on an address of its own.
fn households(t: &mut Traffic, devices: i64) {
    for h in 0..60i64 {
        let user = format!("home{h}@mail.example");
        let mut ts = T0 + h * 1_700;
        let mut k = 0i64;
        while ts < T0 + 120 * MIN {
            let (ip, device) = if devices > 1 {
                let d = k % devices;
                (format!("2001:db8:2:{:x}00:{d:x}::{:x}", h + 1, h + 7), format!("dev-{h}-{d}"))
            } else {
                (format!("2001:db8:2:{:x}00::{:x}", h + 1, h + 7), format!("dev-{h}"))
            };
            let app = format!(
                r#","user_agent":"Shop/5.2 (iPhone; iOS 18.1)","api_key_id":"mobile-ios","device_id":"{device}","attestation":"valid","signature":"valid""#
            );
            // Whatever each person looks at, anywhere in the catalogue.
            let pick = ((h * 1_000 + k) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
            let product = format!("/v1/products/{}", 100_000 + pick % 60_000);
            t.push(
                ts,
                &ip,
                ("GET", &product, 200),
                &format!(r#"{app},"user_id":"{user}","auth_result":"ok""#),
                "household",
                false,
            );
            if k % 10 == 0 {
                let ok = (h + k) % 8 != 0;
                let extra = format!("{app}{}", sign_in(&user, ok));
                t.push(ts + 500, &ip, ("POST", "/oauth/token", if ok { 200 } else { 401 }), &extra, "household", false);
            }
            ts += 20_000 + (h * 311 + k * 97) % 20_000;
            k += 1;
        }
    }
}

/// Two hours. From 40 minutes in, for 40 minutes, a leaked password every
/// 1.5 s from a new /64 anywhere in 2001:db8:1::/48 every two attempts
/// (across its /56s, as a rotation tool picks them). In the
/// provider's 2001:db8:2::/48, sixty households use the mobile app all
/// along (attested, signed in; one mistyped password in eight), and twenty
/// bots of a botnet each fail two passwords while the attack runs.
fn traffic() -> Traffic {
    let mut t = Traffic::default();
    let mut ts = T0;
    while ts < T0 + 120 * MIN {
        t.push(ts, BYSTANDER, ("GET", "/healthz", 200), r#","user_agent":"monitor/1.0""#, "holder-server", false);
        ts += MIN;
    }
    let script = r#","user_agent":"python-requests/2.32""#;
    for s in 0..(40 * 60 * 2 / 3) {
        let ts = ATTACK + s * 1_500;
        let ip = format!("2001:db8:1:{:x}::{:x}", (s / 2) * 40_503 % 0xff00, 1 + s % 2);
        let extra = format!("{script}{}", sign_in(&format!("victim{s}@mail.example"), false));
        t.push(ts, &ip, ("POST", "/oauth/token", 401), &extra, "rotation", true);
    }
    households(&mut t, 1);
    for b in 0..20i64 {
        let ip = format!("2001:db8:2:{:x}00::{:x}", 0x80 + b, b + 3);
        for a in 0..2 {
            let ts = ATTACK + b * 100_000 + a * 9_000;
            let extra = format!("{script}{}", sign_in(&format!("bot{b}x{a}@mail.example"), false));
            t.push(ts, &ip, ("POST", "/oauth/token", 401), &extra, "botnet", true);
        }
    }
    t
}

#[test]
fn rotation_through_a_48_is_stopped_at_the_48_and_a_providers_48_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, decisions) = traffic().0.replay(dir.path());

    // The holder's /48 is denied as a range, within minutes, sparing the
    // server that was there before and took no part.
    let network: Vec<&Decision> = decisions.iter().filter(|d| d.entity == "2001:db8:1::/48").collect();
    let first = network.first().expect("the /48 was judged");
    assert_eq!((first.entity_type, first.action), (EntityType::Cidr, Action::Deny), "{first:?}");
    assert!(first.reason.contains("network"), "{}", first.reason);
    assert!(first.created_ms < ATTACK + 5 * MIN, "denied {} s into the attack", (first.created_ms - ATTACK) / 1000);
    let bystander: std::net::IpAddr = BYSTANDER.parse().expect("ip");
    assert_eq!(first.spared, vec![bystander], "{first:?}");
    // No address or /64 of it crossed an address or subnet rule: what
    // else it met is the campaign's per-address challenge, and the /56s
    // inside the holder's /48 that it walked through (the holder's too).
    for d in decisions.iter().filter(|d| d.entity.starts_with("2001:db8:1:") && d.entity != "2001:db8:1::/48") {
        let in_a_56 = d.entity.ends_with("/56") && d.reason.contains("network") && d.spared.is_empty();
        assert!(in_a_56 || (d.action == Action::Challenge && d.entity_type == EntityType::Ip), "{d:?}");
    }
    // Nothing is decided on the provider's /48 as a whole.
    assert!(decisions.iter().all(|d| d.entity != "2001:db8:2::/48"), "the households' /48 is not one holder's");

    let report = common::labelled::evaluate(dir.path(), &decisions);
    let scenario = |name: &str| report.scenario(name).expect(name).clone();
    let rotation = scenario("rotation");
    assert!(rotation.blocked_after_grace as f64 >= 0.95 * rotation.requests_after_grace as f64, "{rotation:?}");
    assert_eq!(scenario("holder-server").blocked, 0, "the bystander's checks went through");
    assert_eq!(scenario("household").blocked, 0, "no household was blocked");
}

/// The provider's /48 of [`traffic`]'s households, without the /48 holder;
/// from 40 minutes in, for 40 minutes, one household's /56
/// (2001:db8:2:ab00::/56) tries a leaked password every 1.5 s from a new
/// /64 of it every two attempts. Every other household has its own /56,
/// with a phone, a tablet and a laptop on addresses of their own.
fn household_traffic() -> Traffic {
    let mut t = Traffic::default();
    let script = r#","user_agent":"python-requests/2.32""#;
    for s in 0..(40 * 60 * 2 / 3) {
        let ts = ATTACK + s * 1_500;
        let ip = format!("2001:db8:2:ab{:02x}::{:x}", (s / 2) % 256, 1 + s % 2);
        let extra = format!("{script}{}", sign_in(&format!("victim{s}@mail.example"), false));
        t.push(ts, &ip, ("POST", "/oauth/token", 401), &extra, "rotation56", true);
    }
    households(&mut t, 3);
    t
}

#[test]
fn rotation_through_a_households_56_is_stopped_at_the_56_and_the_providers_48_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, decisions) = household_traffic().0.replay(dir.path());

    let network: Vec<&Decision> = decisions.iter().filter(|d| d.entity == "2001:db8:2:ab00::/56").collect();
    let first = network.first().expect("the /56 was judged");
    assert_eq!((first.entity_type, first.action), (EntityType::Cidr, Action::Deny), "{first:?}");
    assert!(first.reason.contains("network"), "{}", first.reason);
    assert!(first.created_ms < ATTACK + 5 * MIN, "denied {} s into the attack", (first.created_ms - ATTACK) / 1000);
    // The provider's /48, and every other household's /56, are not the holder's.
    assert!(decisions.iter().all(|d| d.entity != "2001:db8:2::/48"), "the households' /48 is not one holder's");
    assert!(
        decisions.iter().all(|d| !d.entity.ends_with("/56") || d.entity == "2001:db8:2:ab00::/56"),
        "only the holder's /56"
    );

    let report = common::labelled::evaluate(dir.path(), &decisions);
    let scenario = |name: &str| report.scenario(name).expect(name).clone();
    let rotation = scenario("rotation56");
    assert!(rotation.blocked_after_grace as f64 >= 0.95 * rotation.requests_after_grace as f64, "{rotation:?}");
    assert_eq!(scenario("household").blocked, 0, "no household was blocked");
}
