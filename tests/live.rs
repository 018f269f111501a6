//! `gatewatch run` end to end: follow a growing file, serve decisions over HTTP,
//! refuse bad requests with JSON errors, stop cleanly on SIGTERM, and remember
//! decisions across a restart and a `kill -9`.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::{Server, create_key};

#[test]
fn follow_decide_serve_restart() {
    let (dir, pipeline, input) = common::live_setup();

    let gateway_key = create_key(&pipeline, "gateway", "edge-1");
    let admin_key = create_key(&pipeline, "admin", "ops");
    let mut server = Server::start(&pipeline, &input, &gateway_key);
    assert_eq!(server.get_raw("/healthz", &[]).0, 200, "health checks need no key");
    let (status, _, spec) = server.get_raw("/openapi.json", &[]);
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&spec).expect("spec is JSON")["paths"]["/v1/authz"].is_object());
    server.until("ready", |s| s.json("/readyz").0 == 200);
    let (status, v) = server.json("/v1/decision?ip=203.0.113.77");
    assert_eq!((status, v["action"].as_str()), (200, Some("allow")));

    // An attack appended to the followed file reaches the API.
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("append");
    f.write_all(common::stuffing_lines("203.0.113.77", 40).as_bytes()).expect("write");
    f.flush().expect("flush");
    let took = server.until("deny for the attacker", |s| s.json("/v1/decision?ip=203.0.113.77").1["action"] == "deny");
    eprintln!("append → deny served in {took:?}");
    let (_, v) = server.json("/v1/decision?ip=203.0.113.77&user_agent=curl");
    assert_eq!(v["source"], "rule:credential-stuffing-ip");
    assert_eq!(v["entity_type"], "ip");
    assert!(v["reason"].as_str().expect("reason").contains("credential stuffing"));
    assert!(v["decision_id"].as_u64().is_some() && v["expires_at"].is_string());

    // Forward-auth: the attacker gets 403, everyone else 200; the client address is
    // the trusted hop from the right of X-Forwarded-For.
    let (status, h, _) = server.get("/v1/authz", &[("X-Forwarded-For", "203.0.113.77")]);
    assert_eq!(status, 403);
    assert!(h.iter().any(|(k, v)| k == "x-gatewatch-action" && v == "deny"));
    assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "198.51.100.1")]).0, 200);
    assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "203.0.113.77, 198.51.100.1")]).0, 200);
    assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "198.51.100.1, 203.0.113.77")]).0, 403);
    // Several X-Forwarded-For lines are one list: the client's first line does not choose.
    assert_eq!(
        server.get("/v1/authz", &[("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "203.0.113.77")]).0,
        403
    );
    // No spelling of the denied address walks past its decision.
    for spelled in ["::ffff:203.0.113.77", "::ffff:cb00:714d", "0:0:0:0:0:ffff:cb00:714d"] {
        assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", spelled)]).0, 403, "{spelled}");
        let (_, _, body) = server.get(&format!("/v1/decision?ip={spelled}"), &[]);
        assert!(body.contains("\"deny\""), "{spelled}: {body}");
    }
    // Harmless clients with long or non-ASCII headers are judged, not refused.
    let long = "x".repeat(600);
    for (h, v) in
        [("User-Agent", long.as_str()), ("X-Session-Id", long.as_str()), ("User-Agent", "MyApp/1.0 (Gerät; iOS 17)")]
    {
        assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "198.51.100.1"), (h, v)]).0, 200, "{h}");
        assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "203.0.113.77"), (h, v)]).0, 403, "{h}");
    }

    // Bad requests: JSON errors with a 4xx.
    for (path, want) in [
        ("/v1/decision?ip=999.1.1.1", 400),
        ("/v1/decision?planet=mars", 400),
        ("/v1/decision", 400),
        ("/v1/decision?user=mallory", 400),
        ("/v1/nope", 404),
    ] {
        let (status, v) = server.json(path);
        assert_eq!(status, want, "{path}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {v}");
    }
    let huge = format!("/v1/decision?ip=198.51.100.9&user={}", "u".repeat(5000));
    assert_eq!(server.json(&huge).0, 400);
    let (status, _, body) = server.get("/v1/authz", &[]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "not-an-ip")]).0, 400);

    // Keys and roles.
    let (status, _, body) = server.get_raw("/v1/decision?ip=203.0.113.77", &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("error"));
    assert_eq!(
        server.get_raw("/v1/authz", &[("X-Api-Key", "gw_00000000_nope"), ("X-Forwarded-For", "198.51.100.1")]).0,
        401
    );
    assert_eq!(server.get("/v1/admin/decisions", &[]).0, 403, "a gateway key on an admin route");
    let auth = format!("Bearer {admin_key}");
    let (status, _, body) =
        server.get_raw("/v1/admin/decisions?entity_type=ip&action=deny", &[("Authorization", &auth)]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("203.0.113.77"), "{body}");
    assert_eq!(server.get_raw("/v1/admin/decisions?entity_type=planet", &[("Authorization", &auth)]).0, 400);

    // A manual allow lifts the block at once, and the next rule hit does not undo it.
    let admin = [("X-Api-Key", admin_key.as_str())];
    let allow =
        r#"{"entity_type":"ip","entity":"203.0.113.77","action":"allow","ttl":"1h","reason":"our own load test"}"#;
    let gateway = [("X-Api-Key", gateway_key.as_str())];
    assert_eq!(server.request("POST", "/v1/admin/decisions", &gateway, allow).0, 403, "gateway key cannot write");
    assert_eq!(server.request("POST", "/v1/admin/decisions", &[], allow).0, 401, "no key");
    let (status, _, body) = server.request("POST", "/v1/admin/decisions", &admin, allow);
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("manual:ops"), "{body}");
    assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "203.0.113.77")]).0, 200);
    f.write_all(common::stuffing_lines("203.0.113.77", 40).as_bytes()).expect("write");
    f.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.json("/v1/decision?ip=203.0.113.77").1["action"], "allow");
    for bad in [
        r#"{"entity_type":"ip","entity":"999.0.0.1","action":"deny","ttl":"1h","reason":"x"}"#,
        r#"{"entity_type":"planet","entity":"x","action":"deny","ttl":"1h","reason":"x"}"#,
        r#"{"entity_type":"user","entity":"x","action":"explode","ttl":"1h","reason":"x"}"#,
        r#"{"entity_type":"user","entity":"x","action":"deny","ttl":"forever","reason":"x"}"#,
        r#"{"entity_type":"user","entity":"x","action":"deny","ttl":"1h","reason":""}"#,
        r#"{"entity_type":"user""#,
    ] {
        let (status, _, body) = server.request("POST", "/v1/admin/decisions", &admin, bad);
        assert_eq!(status, 400, "{bad} → {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    let deny_user = r#"{"entity_type":"user","entity":"mallory","action":"deny","ttl":"10m","reason":"fraud team"}"#;
    assert_eq!(server.request("POST", "/v1/admin/decisions", &admin, deny_user).0, 201);
    let (_, v) = server.json("/v1/decision?user=mallory&ip=198.51.100.9");
    assert_eq!((v["action"].as_str(), v["source"].as_str()), (Some("deny"), Some("manual:ops")));
    let (status, _, _) = server.request("DELETE", "/v1/admin/decisions?entity_type=user&entity=mallory", &admin, "");
    assert_eq!(status, 200);
    assert_eq!(server.json("/v1/decision?user=mallory&ip=198.51.100.9").1["action"], "allow");
    assert_eq!(server.request("DELETE", "/v1/admin/decisions?entity_type=user&entity=mallory", &admin, "").0, 404);

    let (_, _, metrics) = server.get("/metrics", &[]);
    assert!(metrics.contains("gatewatch_events_total 80"), "{metrics}");
    assert!(metrics.contains("rule:credential-stuffing-ip"), "{metrics}");
    assert!(metrics.contains("gatewatch_api_request_duration_seconds_bucket"), "{metrics}");

    // SIGTERM: drains and exits 0.
    let status = server.signal("-TERM");
    assert!(status.success(), "{status:?}");
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("state/runs")).expect("runs").filter_map(Result::ok).collect();
    assert_eq!(runs.len(), 1);
    let written = std::fs::read_to_string(runs[0].path().join("decisions.jsonl")).expect("decisions.jsonl");
    assert!(written.contains("credential-stuffing-ip"), "sinks flushed on SIGTERM");

    // Restart: the decisions are still served (the manual allow on the address).
    let mut server = Server::start(&pipeline, &input, &gateway_key);
    let (_, v) = server.json("/v1/decision?ip=203.0.113.77");
    assert_eq!((v["action"].as_str(), v["source"].as_str()), (Some("allow"), Some("manual:ops")), "survives a restart");
    let deny_key =
        r#"{"entity_type":"api_key","entity":"leaked-key","action":"deny","ttl":"1h","reason":"leaked on a forum"}"#;
    assert_eq!(server.request("POST", "/v1/admin/decisions", &admin, deny_key).0, 201);

    // kill -9, restart: still there, and the store opens cleanly.
    let status = server.signal("-KILL");
    assert!(!status.success());
    let server = Server::start(&pipeline, &input, &gateway_key);
    let (_, v) = server.json("/v1/decision?api_key=leaked-key&ip=198.51.100.9");
    assert_eq!(v["action"], "deny", "a decision acknowledged just before kill -9 survives it");

    // Revoking a key takes effect without a restart.
    let out = Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .arg("--pipeline")
        .arg(&pipeline)
        .args(["keys", "revoke", "edge-1"])
        .output()
        .expect("keys revoke");
    assert!(out.status.success());
    server.until("revoked key refused", |s| s.get("/v1/decision?ip=203.0.113.77", &[]).0 == 401);
}

/// A decision made while input is quiet is served without waiting for
/// another line. A model judges whole ticks only, and once the lines stop
/// it is the idle clock that makes the tick; the store takes a round's
/// decisions at a checkpoint, so the clock's decisions need one too.
#[test]
fn a_decision_the_idle_clock_makes_is_served_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = dir.path().join("quiet.toml");
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ip-classifier");
    // Every address the model scores is challenged: what matters here is
    // when the decision is served, not whether it is right.
    std::fs::write(
        &pipeline,
        format!(
            "[state]\ndir = \"state\"\n[features]\ntick = \"1s\"\nlateness = \"0s\"\n\
             [[models]]\npath = \"{}\"\nentity = \"ip\"\nchallenge_at = 0.0\nttl = \"10m\"\n",
            model.display()
        ),
    )
    .expect("pipeline");
    let input = dir.path().join("access.log");
    std::fs::write(&input, "").expect("input");
    let gateway = create_key(&pipeline, "gateway", "edge");
    let server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    let now = gatewatch::event::time::format_rfc3339(gatewatch::event::time::now_ms());
    let line = format!(
        r#"{{"ts":"{now}","client_ip":"198.51.100.23","method":"GET","path":"/v1/products/1","status":200,"user_agent":"curl/8.0"}}"#
    );
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("open");
    writeln!(f, "{line}").expect("append");
    drop(f);
    // No other line follows.
    server.until("the model's challenge is served", |s| {
        s.json("/v1/decision?ip=198.51.100.23").1["action"] == "challenge"
    });
}
