//! A line from the future cannot switch detection off. In live mode event time
//! is bounded by the wall clock: a line stamped 2099 (a forged line, a gateway
//! with a broken clock) is applied at its arrival time and counted, so it
//! neither makes every later line "late" nor gives a decision a 2099 expiry.

mod common;

use std::io::Write;

use common::{Server, create_key};

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("append");
    f.write_all(text.as_bytes()).expect("write");
    f.flush().expect("flush");
}

#[test]
fn future_lines_are_clamped_and_detection_goes_on() {
    let (_dir, pipeline, input) = common::live_setup();
    let key = create_key(&pipeline, "gateway", "edge");
    let server = Server::start(&pipeline, &input, &key);
    server.until("ready", |s| s.json("/readyz").0 == 200);

    // One stuffing burst stamped 2099 and one stamped an hour ahead.
    let future = common::stuffing_lines("198.51.100.66", 40);
    let now_year = &gatewatch::event::time::format_rfc3339(gatewatch::api::now_ms())[..4];
    append(&input, &future.replace(&format!("\"ts\":\"{now_year}"), "\"ts\":\"2099"));
    let hour_ahead: String = (0..5)
        .map(|i| {
            format!(
                r#"{{"ts":"{}","client_ip":"192.0.2.{i}","method":"GET","path":"/","status":200}}"#,
                gatewatch::event::time::format_rfc3339(gatewatch::api::now_ms() + 3_600_000)
            ) + "\n"
        })
        .collect();
    append(&input, &hour_ahead);
    server.until("the 2099 burst is judged at its arrival", |s| {
        s.json("/v1/decision?ip=198.51.100.66").1["action"] == "deny"
    });
    let (_, v) = server.json("/v1/decision?ip=198.51.100.66");
    let expires = gatewatch::event::time::parse_rfc3339(v["expires_at"].as_str().expect("expires_at")).expect("time");
    assert!(
        expires <= gatewatch::api::now_ms() + 24 * 3_600_000,
        "a forged timestamp stretched the expiry to {}",
        v["expires_at"]
    );

    // A burst stamped now, after them, is still seen and denied.
    append(&input, &common::stuffing_lines("203.0.113.78", 40));
    server.until("deny for the attacker after the future lines", |s| {
        s.json("/v1/decision?ip=203.0.113.78").1["action"] == "deny"
    });
    assert_eq!(server.metric("gatewatch_input_anomalies_total{kind=\"future\"}"), 45.0);
    assert_eq!(server.metric("gatewatch_input_anomalies_total{kind=\"late\"}"), 0.0);
}
