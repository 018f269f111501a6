//! The app attests every call; a script holding the app's extracted key
//! cannot, and `unattested-app-client` challenges an address that uses the
//! key at volume without attestation. A person whose phone fails attestation
//! (rooted, a custom ROM, an old OS: common in real fleets) uses the app the
//! same way, signed in to their one account from their one device: that
//! account holder is not the script the rule is for, and must not be
//! challenged for using the app a lot.

mod common;

use common::labelled::Labelled;
use gatewatch::decision::Decision;

const T0: i64 = 1_795_860_000_000; // 2026-11-28T10:00:00Z
const MIN: i64 = 60_000;
const HOLDER: &str = "198.51.100.20";
const SCRIPT: &str = "198.51.100.30";

#[derive(Default)]
struct Traffic(Labelled);

impl Traffic {
    fn push(&mut self, ts: i64, ip: &str, fields: &str, scenario: &str, attack: bool) {
        let n = self.0.next();
        self.0.push(
            ts,
            format!(
                r#"{{"ts":{ts},"client_ip":"{ip}","status":200,"request_id":"r{n}","user_agent":"okhttp/4.12.0","api_key_id":"mobile-android","signature":"valid",{fields}}}"#
            ),
            format!(r#"{{"ts":{ts},"request_id":"r{n}","scenario":"{scenario}","attack":{attack},"ip":"{ip}"}}"#),
        );
    }
}

/// Two hours at the same pace (a call every 8 s, 75 per 10 minutes): the
/// account holder signs in, then browses signed in; the script, from 30
/// minutes in, reads products by scattered ids with no account.
fn traffic() -> Traffic {
    let mut t = Traffic::default();
    let holder = r#""user_id":"m1@mail.example","device_id":"d-1","session_id":"rf-1","attestation":"invalid","auth_result":"ok""#;
    t.push(
        T0,
        HOLDER,
        &format!(r#""method":"POST","path":"/oauth/token","grant_type":"password",{holder}"#),
        "rooted-phone",
        false,
    );
    for s in 1..(120 * 60 / 8) {
        let path =
            ["/v1/feed", "/v1/cart", &format!("/v1/products/{}", (s * 7919) % 100_000)][s as usize % 3].to_string();
        t.push(T0 + s * 8_000, HOLDER, &format!(r#""method":"GET","path":"{path}",{holder}"#), "rooted-phone", false);
    }
    for s in 0..(90 * 60 / 8) {
        let id = (s * 104_729) % 1_000_000;
        t.push(
            T0 + 30 * MIN + s * 8_000 + 3_000,
            SCRIPT,
            &format!(r#""method":"GET","path":"/v1/products/{id}","attestation":"missing""#),
            "extracted-key",
            true,
        );
    }
    t
}

#[test]
fn an_account_holder_whose_phone_fails_attestation_is_not_the_script_with_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, decisions) = traffic().0.replay(dir.path());
    assert_eq!(s.dead_letters, 0, "{}", s.line());
    let on = |entity: &str| decisions.iter().filter(|d| d.entity == entity).collect::<Vec<&Decision>>();
    assert!(on(HOLDER).is_empty(), "the account holder was judged: {:?}", on(HOLDER));
    let script = on(SCRIPT);
    let first = script.first().expect("the script with the extracted key was stopped");
    assert!(first.source.contains("unattested-app-client"), "{first:?}");
    assert!(first.created_ms <= T0 + 45 * MIN, "{} s after it began", (first.created_ms - T0 - 30 * MIN) / 1000);

    let report = common::labelled::evaluate(dir.path(), &decisions);
    let scenario = |name: &str| report.scenario(name).expect(name).clone();
    assert_eq!(scenario("rooted-phone").blocked, 0);
    let key = scenario("extracted-key");
    assert!(key.blocked_after_grace as f64 >= 0.95 * key.requests_after_grace as f64, "{key:?}");
}
