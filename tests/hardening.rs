//! Limits and edges of the decision API and the files it keeps, against a
//! real `gatewatch run`: values that overflow, bodies that are too large,
//! networks too wide to act on, files open to other users, dead letters that
//! grow with what an attacker sends.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use common::{Server, create_key};
use serde_json::{Value, json};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

fn post(s: &Server, key: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, _, b) = s.request("POST", path, &[("X-Api-Key", key)], body);
    (status, serde_json::from_str(&b).unwrap_or(Value::Null))
}

#[test]
fn api_limits_and_private_files() {
    let (dir, pipeline, input) = common::live_setup();
    // Dead letters in files of 64 KiB at most.
    let mut p = std::fs::read_to_string(&pipeline).expect("pipeline");
    p.push_str("[[sinks]]\ntype = \"decisions_jsonl\"\n[[sinks]]\ntype = \"dead_letters\"\nmax_bytes = \"64KiB\"\n");
    std::fs::write(&pipeline, p).expect("pipeline");
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "edge");
    let gateway = server.key.clone();

    // Files gatewatch made are its user's alone.
    let state = dir.path().join("state");
    assert_eq!(mode(&state), 0o700, "state directory");
    assert_eq!(mode(&state.join("keys.json")), 0o600, "keys");
    assert_eq!(mode(&state.join("decisions.redb")), 0o600, "decision store");

    // Values that used to wrap round: refused with a 400 that says why.
    let huge_ttl =
        json!({"entity_type":"user","entity":"mallory","action":"deny","ttl":"18446744073709557s","reason":"t"});
    let (code, v) = post(&server, &admin, "/v1/admin/decisions", &huge_ttl.to_string());
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("ttl")), "{v}");
    let (code, _, body) = server.get("/v1/decisions/stream?cursor=0&wait=18446744073709551615", &[]);
    assert_eq!(code, 400, "{body}");

    // A network too wide to act on, in any spelling; a mapped one is its IPv4 network.
    for wide in ["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96", "0.0.0.0/1"] {
        let d = json!({"entity_type":"cidr","entity":wide,"action":"deny","ttl":"1h","reason":"t"});
        let (code, v) = post(&server, &admin, "/v1/admin/decisions", &d.to_string());
        assert_eq!(code, 400, "{wide}: {v}");
        let a = json!({"kind":"cidr","value":wide,"reason":"t"});
        let (code, v) = post(&server, &admin, "/v1/admin/allowlist", &a.to_string());
        assert_eq!(code, 400, "allowlist {wide}: {v}");
    }
    let mapped =
        json!({"entity_type":"cidr","entity":"::ffff:198.51.100.0/120","action":"deny","ttl":"1h","reason":"t"});
    let (code, v) = post(&server, &admin, "/v1/admin/decisions", &mapped.to_string());
    assert_eq!((code, v["entity"].as_str()), (201, Some("198.51.100.0/24")), "{v}");
    assert_eq!(server.json("/v1/decision?ip=198.51.100.7").1["action"], "deny");

    // An over-limit body is 413, with a JSON error.
    let big = format!(r#"{{"kind":"cidr","value":"203.0.113.0/24","reason":"{}"}}"#, "x".repeat(3 << 20));
    let (code, v) = post(&server, &admin, "/v1/admin/allowlist", &big);
    assert_eq!(code, 413, "{v}");
    assert!(v["error"].is_string(), "{v}");

    // The bearer scheme in any case.
    let bearer = format!("bearer {gateway}");
    let (code, _, body) = server.get_raw("/v1/decision?ip=192.0.2.1", &[("Authorization", &bearer)]);
    assert_eq!(code, 200, "{body}");

    // 1 MiB of random bytes as log input: dead letters stay within two files of 64 KiB.
    let mut junk = Vec::with_capacity(1 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 1.. {
        if junk.len() >= 1 << 20 {
            break;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        junk.extend(x.to_le_bytes().map(|b| if b == b'\n' || b == b'\r' { b'x' } else { b }));
        if i % 37 == 0 {
            junk.push(b'\n');
        }
    }
    junk.push(b'\n');
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("log");
    f.write_all(&junk).expect("append");
    drop(f);
    let lines = junk.iter().filter(|b| **b == b'\n').count() as f64;
    server.until("every junk line is counted", |s| {
        let (_, _, m) = s.get("/metrics", &[]);
        m.lines().any(|l| l.strip_prefix("gatewatch_dead_letters_total ").and_then(|n| n.parse().ok()) == Some(lines))
    });
    let run = std::fs::read_dir(state.join("runs")).expect("runs").next().expect("a run").expect("entry").path();
    server.until("dead letters are written", |_| run.join("dead_letters.1.jsonl").exists());
    for f in ["dead_letters.jsonl", "dead_letters.1.jsonl"] {
        let p = run.join(f);
        let len = std::fs::metadata(&p).expect(f).len();
        assert!(len <= 64 << 10, "{f}: {len} bytes");
        assert_eq!(mode(&p), 0o600, "{f}");
    }
}

/// A store cut to 0 bytes is refused at start with what to do; it used to
/// start a new store and serve no decisions without a word.
#[test]
fn a_truncated_store_stops_the_start() {
    let (dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    drop(server);
    let store = dir.path().join("state/decisions.redb");
    std::fs::File::create(&store).expect("truncate");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .arg("--pipeline")
        .arg(&pipeline)
        .args(["run", "--listen", "127.0.0.1:0", "--input"])
        .arg(&input)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("decisions.redb") && err.contains("truncated") && err.contains("mv "), "{err}");
}
