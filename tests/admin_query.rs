//! `POST /v1/admin/query` on a running server: SQL over every run's tables
//! (a run still being written included, without failing on its open files),
//! read-only, within the row, time and memory limits, admin keys only.

mod common;

use std::io::Write;

use common::{Server, serve_with_keys};
use serde_json::{Value, json};

fn query(s: &Server, key: &str, body: &Value) -> (u16, Value) {
    let (status, _, text) = s.request("POST", "/v1/admin/query", &[("X-Api-Key", key)], &body.to_string());
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

#[test]
fn analysts_query_every_run_over_the_api_within_limits() {
    let (dir, pipeline, input) = common::live_setup();
    let mut p = std::fs::OpenOptions::new().append(true).open(&pipeline).expect("pipeline");
    p.write_all(
        b"[api]\nquery_memory = \"1MiB\"\nquery_timeout = \"2s\"\nquery_max_rows = 500\n\
          [[sinks]]\ntype = \"parquet\"\nroll_every = \"1s\"\n\
          [[sinks]]\ntype = \"decisions_jsonl\"\n[[sinks]]\ntype = \"dead_letters\"\n",
    )
    .expect("write");
    drop(p);

    // A first run sees a credential-stuffing burst and denies it, then stops
    // (its Parquet files are finished).
    let (mut first, admin) = serve_with_keys(&pipeline, &input, "edge");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .expect("log")
        .write_all(common::stuffing_lines("203.0.113.77", 40).as_bytes())
        .expect("write");
    first.until("deny", |s| s.get("/v1/authz", &[("X-Forwarded-For", "203.0.113.77")]).0 == 403);
    assert!(first.signal("-TERM").success());

    // A second run, writing its own tables while it is asked (a part being
    // written is `.writing` until finished, and never read half-written).
    let second = Server::start(&pipeline, &input, &first.key);
    second.until("ready", |s| s.json("/readyz").0 == 200);
    let writing = dir.path().join("state/runs");
    let (status, r) = query(
        &second,
        &admin,
        &json!({"sql": "SELECT entity, action, source FROM decisions WHERE entity = $ip ORDER BY ts",
                "params": {"ip": "203.0.113.77"}}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["rows"][0]["action"], "deny", "{r}");
    assert_eq!(r["rows"][0]["source"], "rule:credential-stuffing-ip", "{r}");
    assert_eq!(r["columns"][0]["name"], "entity");
    assert_eq!(r["truncated"], false);
    let (status, r) = query(&second, &admin, &json!({"sql": "SELECT count(*) AS n FROM events"}));
    assert_eq!((status, r["rows"][0]["n"].as_u64()), (200, Some(40)), "{r}");

    // What the running server sees becomes queryable while it runs: its
    // parts are finished at least every roll_every (1 s here).
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .expect("log")
        .write_all(common::stuffing_lines("198.51.100.23", 40).as_bytes())
        .expect("write");
    second.until("the second deny", |s| s.get("/v1/authz", &[("X-Forwarded-For", "198.51.100.23")]).0 == 403);
    let now = json!({"sql": "SELECT count(*) AS n FROM event_entities WHERE entity_type = 'ip' AND entity = $ip \
                             UNION ALL SELECT count(*) FROM decisions WHERE entity = $ip",
                     "params": {"ip": "198.51.100.23"}});
    second.until("the running run's rows in a query", |s| {
        let (status, r) = query(s, &admin, &now);
        status == 200 && r["rows"].as_array().is_some_and(|rows| rows.iter().all(|row| row["n"].as_u64() > Some(0)))
    });
    let parts: Vec<_> = walk(&writing)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| p.strip_prefix(&writing).expect("under").to_string_lossy().into_owned())
        .collect();
    assert!(parts.iter().all(|p| p.contains("/date=") && p.contains("/hour=")), "{parts:?}");

    // Rows stop at the limit, and the answer says so.
    let (status, r) = query(&second, &admin, &json!({"sql": "SELECT * FROM events", "max_rows": 3}));
    assert_eq!((status, r["row_count"].as_u64(), r["truncated"].as_bool()), (200, Some(3), Some(true)), "{r}");
    assert_eq!(r["rows"].as_array().map(Vec::len), Some(3));
    let (status, r) = query(&second, &admin, &json!({"sql": "SELECT value FROM range(100000)"}));
    assert_eq!((status, r["row_count"].as_u64(), r["truncated"].as_bool()), (200, Some(500), Some(true)), "{r}");
    let (status, r) = query(&second, &admin, &json!({"sql": "SELECT value FROM range(1000)", "max_rows": 501}));
    assert_eq!((status, r["row_count"].as_u64()), (200, Some(500)), "more than query_max_rows is cut to it: {r}");
    assert_eq!(query(&second, &admin, &json!({"sql": "SELECT 1", "max_rows": 0})).0, 400);

    // Read-only: nothing is created, written or set.
    let out = dir.path().join("copied.csv");
    for sql in [
        "CREATE TABLE t AS SELECT * FROM events".to_string(),
        "CREATE VIEW v AS SELECT 1".to_string(),
        format!("COPY (SELECT * FROM events) TO '{}'", out.display()),
        "INSERT INTO decisions SELECT * FROM decisions".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "DROP VIEW event_entities".to_string(),
    ] {
        let (status, r) = query(&second, &admin, &json!({ "sql": sql }));
        assert_eq!(status, 400, "{sql}: {r}");
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    }
    assert!(!out.exists());

    // Memory and time limits stop a query with a 422 that names the limit.
    let (status, r) = query(&second, &admin, &json!({"sql": "SELECT count(DISTINCT value) FROM range(50000000)"}));
    assert_eq!(status, 422, "{r}");
    assert!(r["error"].as_str().is_some_and(|e| e.contains("memory")), "{r}");
    let slow = json!({"sql": "SELECT sum(value) FROM range(100000000000)"});
    let (addr, key) = (second.addr.clone(), admin.clone());
    let long = std::thread::spawn(move || {
        loop {
            // The probes below may hold the one slot for a moment.
            let (status, _, text) =
                common::http(&addr, "POST", "/v1/admin/query", &[("X-Api-Key", key.as_str())], &slow.to_string());
            if status != 429 {
                return (status, text);
            }
        }
    });
    // While it runs, another query is told to come back.
    let mut busy = false;
    while !long.is_finished() && !busy {
        busy = query(&second, &admin, &json!({"sql": "SELECT 1"})).0 == 429;
    }
    let (status, text) = long.join().expect("thread");
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("longer than the limit"), "{text}");
    assert!(busy, "a second query while one ran was not refused");
    // Decisions were served all along, and queries run again afterwards.
    assert_eq!(second.get("/v1/authz", &[("X-Forwarded-For", "203.0.113.77")]).0, 403);
    assert_eq!(query(&second, &admin, &json!({"sql": "SELECT 1 AS one"})).1["rows"][0]["one"], 1);

    // Bad requests get a 4xx with a JSON error; a gateway key is refused.
    for bad in [
        json!({"sql": "SELEC nothing"}),
        json!({"sql": ""}),
        json!({"sql": "SELECT $x"}),
        json!({"sql": "SELECT 1", "params": {"x": "y".repeat(5000)}}),
        json!({"sql": "SELECT 1", "limit": 3}),
        json!({"query": "SELECT 1"}),
    ] {
        let (status, r) = query(&second, &admin, &bad);
        assert_eq!(status, 400, "{bad}: {r}");
        assert!(r["error"].is_string(), "{r}");
    }
    assert_eq!(query(&second, &second.key, &json!({"sql": "SELECT 1"})).0, 403);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
