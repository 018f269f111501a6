//! What `gatewatch run` remembers across a `kill -9` in the middle of a burst
//! of writes, and what the engine remembers across a restart (decisions in
//! force are not re-made shorter; repeat offenders keep escalating).

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Server, create_key};
use serde_json::{Value, json};

fn post(addr: &str, key: &str, body: &Value) -> Option<u16> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    let body = body.to_string();
    let req = format!(
        "POST /v1/admin/decisions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.split(' ').nth(1)?.parse().ok()
}

fn decisions(s: &Server, admin: &str, query: &str) -> Vec<Value> {
    let (status, _, body) = s.request("GET", &format!("/v1/admin/decisions{query}"), &[("X-Api-Key", admin)], "");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["decisions"].as_array().expect("decisions").clone()
}

#[test]
fn kill_9_during_a_write_burst_loses_no_acknowledged_decision() {
    let (_dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let admin = create_key(&pipeline, "admin", "ops");
    let mut server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);

    // Writers post decisions as fast as they can and note each one acknowledged;
    // the engine writes too (an attack in the followed log).
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (addr, admin, acked) = (server.addr.clone(), admin.clone(), acked.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let entity = format!("burst-{w}-{i}");
                    let action = ["deny", "challenge", "throttle", "allow"][i % 4];
                    let body = json!({"entity_type": "user", "entity": entity, "action": action, "ttl": "2h", "reason": "burst"});
                    match post(&addr, &admin, &body) {
                        Some(201) => acked.lock().expect("lock").push((entity, action.to_string())),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("append");
    for k in 0..20 {
        f.write_all(common::stuffing_lines(&format!("203.0.113.{k}"), 30).as_bytes()).expect("write");
    }
    drop(f);
    common::until("a burst under way", || acked.lock().expect("lock").len() >= 300);
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reaped");
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    eprintln!("{} decisions acknowledged before kill -9", acked.len());

    let server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    let held = decisions(&server, &admin, "?entity_type=user");
    let held: HashSet<(String, String)> = held
        .iter()
        .map(|d| (d["entity"].as_str().expect("entity").to_string(), d["action"].as_str().expect("action").to_string()))
        .collect();
    let missing: Vec<_> = acked.iter().filter(|a| !held.contains(*a)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged decisions lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Nothing corrupt: every record reads back whole, and the stream continues from the stored cursor.
    for d in decisions(&server, &admin, "") {
        assert!(d["decision_id"].as_u64().is_some() && d["expires_at"].is_string() && d["reason"].is_string(), "{d}");
    }
    let (_, v) = server.json("/v1/decisions/stream?cursor=");
    assert!(v["cursor"].as_u64().expect("cursor") >= acked.len() as u64);
}

#[test]
fn engine_memory_survives_a_restart() {
    let (_dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let admin = create_key(&pipeline, "admin", "ops");
    let append = |s: String| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("append");
        f.write_all(s.as_bytes()).expect("write");
    };
    let ttl_s = |d: &Value| {
        let t = |k: &str| gatewatch::event::time::parse_rfc3339(d[k].as_str().expect("time")).expect("rfc3339");
        (t("expires_at") - t("created_at")) / 1000
    };
    let on = |s: &Server, ip: &str| decisions(s, &admin, &format!("?entity_type=ip&entity={ip}"));

    let mut server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    append(common::stuffing_lines("203.0.113.50", 40));
    append(common::stuffing_lines("203.0.113.60", 40));
    server.until("first offence", |s| on(s, "203.0.113.50").len() == 1 && on(s, "203.0.113.60").len() == 1);
    let first_50 = on(&server, "203.0.113.50")[0].clone();
    assert_eq!(ttl_s(&first_50), 3600, "first offence: the rule's TTL");
    // An operator lifts the block on .50; .60 stays blocked.
    let (status, _, _) = server.request(
        "DELETE",
        "/v1/admin/decisions?entity_type=ip&entity=203.0.113.50",
        &[("X-Api-Key", &admin)],
        "",
    );
    assert_eq!(status, 200);
    assert!(server.signal("-TERM").success());

    let server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    let before_60 = on(&server, "203.0.113.60")[0]["decision_id"].clone();
    append(common::stuffing_lines("203.0.113.50", 40));
    append(common::stuffing_lines("203.0.113.60", 40));
    append(common::stuffing_lines("203.0.113.70", 40));
    server.until("lines processed", |s| on(s, "203.0.113.70").len() == 1 && on(s, "203.0.113.50").len() == 1);
    let second_50 = on(&server, "203.0.113.50")[0].clone();
    assert_eq!(ttl_s(&second_50), 7200, "second offence after a restart escalates: {second_50}");
    assert_eq!(on(&server, "203.0.113.60")[0]["decision_id"], before_60, "a decision in force is not re-made");
}
