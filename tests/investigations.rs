//! The shipped investigation queries (`queries/*.sql`), each run on a replay
//! of labelled traffic and checked against the same answer computed another
//! way; and `query` reading a state directory's runs as one history.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use gatewatch::analytics::{self, Investigation};
use gatewatch::config::Pipeline;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn sql(data: &Path, q: &str, params: &[(&str, &str)]) -> Vec<RecordBatch> {
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    rt().block_on(analytics::query_with(data, q, &params)).unwrap_or_else(|e| panic!("{e}\n{q}"))
}

/// Column `name` of every row, as text (nulls as "").
fn texts(batches: &[RecordBatch], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
        let col = datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Utf8).expect("cast");
        let s = col.as_string::<i32>();
        out.extend((0..s.len()).map(|i| if s.is_null(i) { String::new() } else { s.value(i).to_string() }));
    }
    out
}

/// Column `name` of every row as i64 (nulls as 0).
fn ints(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
        let col = datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Int64).expect("cast");
        let a = col.as_primitive::<Int64Type>();
        out.extend((0..a.len()).map(|i| if a.is_null(i) { 0 } else { a.value(i) }));
    }
    out
}

fn count(data: &Path, q: &str, params: &[(&str, &str)]) -> i64 {
    ints(&sql(data, q, params), "n").first().copied().expect("one row")
}

fn investigation(name: &str) -> Investigation {
    let path = root().join("queries").join(format!("{name}.sql"));
    Investigation::parse(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Simulated traffic (a seed the shipped model and rules were not fitted on)
/// replayed with the default pipeline into `runs/1/` of a state directory.
fn replayed(dir: &Path) -> PathBuf {
    let mut cfg = gatewatch::simulate::SimConfig::new(11, 3.0);
    cfg.scale = 0.3;
    let reqs = gatewatch::simulate::generate(&cfg);
    gatewatch::simulate::write(&cfg, &reqs, &dir.join("sim"), &[gatewatch::simulate::OutFormat::Json]).expect("sim");
    let pipeline = Pipeline::load(&root().join("pipelines/default.toml")).expect("pipeline");
    let state = dir.join("state");
    gatewatch::driver::replay_file(pipeline, &dir.join("sim/access.jsonl"), None, &state.join("runs/1"), false)
        .expect("replay");
    state
}

#[test]
fn every_shipped_query_has_a_header_and_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = replayed(dir.path());
    let ip = texts(
        &sql(
            &state,
            "SELECT entity FROM decisions WHERE entity_type = 'ip' AND action = 'deny' ORDER BY ts LIMIT 1",
            &[],
        ),
        "entity",
    )
    .pop()
    .expect("the replay denied an address");
    // An entity that was decided on and came back after its last decision
    // expired, if the traffic has one.
    let back = sql(
        &state,
        "SELECT d.entity_type, d.entity FROM (SELECT entity_type, entity, max(expires_at) AS until FROM decisions \
         GROUP BY entity_type, entity) d \
         JOIN event_entities e ON e.entity_type = d.entity_type AND e.entity = d.entity AND e.ts >= d.until \
         GROUP BY d.entity_type, d.entity ORDER BY d.entity_type, d.entity LIMIT 1",
        &[],
    );
    let (back_type, back_entity) = match (texts(&back, "entity_type").pop(), texts(&back, "entity").pop()) {
        (Some(t), Some(e)) => (t, e),
        _ => ("ip".to_string(), ip.clone()),
    };
    let mut names = Vec::new();
    for e in std::fs::read_dir(root().join("queries")).expect("queries/") {
        let path = e.expect("entry").path();
        if path.extension().is_none_or(|x| x != "sql") {
            continue;
        }
        let inv = Investigation::parse(&std::fs::read_to_string(&path).expect("read"));
        let stem = path.file_stem().expect("stem").to_string_lossy().into_owned();
        assert_eq!(inv.name, stem, "{}: `-- name:` names the file", path.display());
        assert!(inv.question.len() > 20, "{}: `-- question:` says what it answers", path.display());
        let params: Vec<(&str, &str)> = inv
            .params
            .iter()
            .map(|p| match p.as_str() {
                "ip" => (p.as_str(), ip.as_str()),
                "entity" => (p.as_str(), back_entity.as_str()),
                "entity_type" => (p.as_str(), back_type.as_str()),
                other => panic!("{}: no test value for ${other}", path.display()),
            })
            .collect();
        // Every parameter the SQL uses is declared in the header, and the
        // other way round.
        for p in &inv.params {
            assert!(inv.sql.contains(&format!("${p}")), "{}: ${p} declared, not used", path.display());
        }
        let used: BTreeSet<&str> = inv
            .sql
            .split('$')
            .skip(1)
            .map(|s| s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or(""))
            .filter(|name| !name.is_empty()) // a regular expression's end anchor
            .collect();
        for u in used {
            assert!(inv.params.iter().any(|p| p == u), "{}: ${u} used, not declared", path.display());
        }
        let rows: usize = sql(&state, &inv.sql, &params).iter().map(RecordBatch::num_rows).sum();
        let may_be_empty = stem == "after-expiry" && back.iter().all(|b| b.num_rows() == 0);
        assert!(rows > 0 || may_be_empty, "{}: no rows on a replay with decisions", path.display());
        names.push(stem);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "address-timeline",
            "after-expiry",
            "blocked-by-collateral",
            "keys-from-hosting-networks",
            "rules-fired-today",
            "users-two-countries"
        ]
    );
}

#[test]
fn each_query_answers_what_a_direct_count_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = replayed(dir.path());
    let denied = sql(
        &state,
        "SELECT entity, max(expires_at) AS until FROM decisions WHERE entity_type = 'ip' AND action = 'deny' GROUP BY entity ORDER BY entity",
        &[],
    );
    let ip = texts(&denied, "entity").into_iter().next().expect("a denied address");

    // One address's timeline: its requests by minute add up to all of its
    // requests, and its decisions are listed.
    let t = sql(&state, &investigation("address-timeline").sql, &[("ip", &ip)]);
    let kinds = texts(&t, "kind");
    let requests: i64 = ints(&t, "requests").iter().sum();
    assert_eq!(requests, count(&state, "SELECT count(*) AS n FROM events WHERE client_ip = $ip", &[("ip", &ip)]));
    let decisions = texts(&t, "decision");
    let listed = decisions.iter().filter(|d| d.starts_with("deny ip ") && d.contains(&ip)).count();
    let expected = count(
        &state,
        "SELECT count(*) AS n FROM decisions WHERE entity_type = 'ip' AND entity = $ip AND action = 'deny'",
        &[("ip", &ip)],
    );
    assert!(expected > 0 && listed as i64 == expected, "{decisions:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "decision").count(), decisions.iter().filter(|d| !d.is_empty()).count());

    // After expiry: only requests from the last expiry on, all of them.
    let after = sql(&state, &investigation("after-expiry").sql, &[("entity_type", "ip"), ("entity", &ip)]);
    let after_requests: i64 = ints(&after, "requests").iter().sum();
    let direct = count(
        &state,
        "SELECT count(*) AS n FROM events WHERE client_ip = $ip \
         AND ts >= (SELECT max(expires_at) FROM decisions WHERE entity_type = 'ip' AND entity = $ip)",
        &[("ip", &ip)],
    );
    assert_eq!(after_requests, direct);

    // Collateral: one row per blocking decision (up to the limit), each with
    // the requests its entity sent while it was in force; most users first.
    let c = sql(&state, &investigation("blocked-by-collateral").sql, &[]);
    let blocking =
        count(&state, "SELECT count(*) AS n FROM decisions WHERE action IN ('deny', 'challenge', 'throttle')", &[]);
    assert_eq!(ints(&c, "users").len() as i64, blocking.min(50));
    let users = ints(&c, "authenticated_users");
    assert!(users.windows(2).all(|w| w[0] >= w[1]), "{users:?}");
    let (types, entities, in_force) = (texts(&c, "entity_type"), texts(&c, "entity"), ints(&c, "requests_in_force"));
    let mut checked = 0;
    for b in &c {
        let decided = b.column_by_name("decided").expect("decided").as_primitive::<TimestampMillisecondType>();
        let until = b.column_by_name("expires_at").expect("expires_at").as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            let row = checked;
            checked += 1;
            let column = match types[row].as_str() {
                "ip" => "client_ip",
                "user" => "user_id",
                "session" => "session_id",
                "device" => "device_id",
                "api_key" => "api_key_id",
                _ => continue,
            };
            let q = format!(
                "SELECT count(*) AS n FROM events WHERE {column} = $e \
                 AND ts >= to_timestamp_millis(CAST($from AS BIGINT)) AND ts < to_timestamp_millis(CAST($to AS BIGINT))"
            );
            let n = count(
                &state,
                &q,
                &[("e", &entities[row]), ("from", &decided.value(i).to_string()), ("to", &until.value(i).to_string())],
            );
            assert_eq!(in_force[row], n, "{} {}", types[row], entities[row]);
        }
    }

    // Keys from hosting networks: every request of a key from a listed
    // network is counted once, under its network.
    let k = sql(&state, &investigation("keys-from-hosting-networks").sql, &[]);
    let by_asn: i64 = ints(&k, "requests").iter().sum();
    let asns: BTreeSet<i64> = ints(&k, "asn").into_iter().collect();
    let list = asns.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    assert!(!asns.is_empty(), "the simulated partner integration runs on a cloud");
    assert_eq!(
        by_asn,
        count(
            &state,
            &format!("SELECT count(*) AS n FROM events WHERE api_key_id IS NOT NULL AND asn IN ({list})"),
            &[]
        )
    );

    // Two countries within an hour: the same users as a scan of each user's
    // requests in time order.
    let u = sql(&state, &investigation("users-two-countries").sql, &[]);
    let from_sql: BTreeSet<String> = texts(&u, "user_id").into_iter().collect();
    let seen = sql(
        &state,
        "SELECT user_id, CAST(ts AS BIGINT) AS t, country FROM events \
         WHERE user_id IS NOT NULL AND country IS NOT NULL ORDER BY user_id, ts",
        &[],
    );
    let (ids, ts, countries) = (texts(&seen, "user_id"), ints(&seen, "t"), texts(&seen, "country"));
    let mut last: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    let mut direct = BTreeSet::new();
    for i in 0..ids.len() {
        if let Some((t0, c0)) = last.get(ids[i].as_str())
            && *c0 != countries[i]
            && ts[i] - t0 < 3_600_000
        {
            direct.insert(ids[i].clone());
        }
        last.insert(&ids[i], (ts[i], &countries[i]));
    }
    assert_eq!(from_sql, direct);

    // Rules fired on the newest day: all of that day's decisions, by source.
    let r = sql(&state, &investigation("rules-fired-today").sql, &[]);
    let total: i64 = ints(&r, "decisions").iter().sum();
    let day = count(
        &state,
        "SELECT count(*) AS n FROM decisions WHERE date_trunc('day', ts) = (SELECT date_trunc('day', max(ts)) FROM decisions)",
        &[],
    );
    assert!(total > 0);
    assert_eq!(total, day);
    let sources = texts(&r, "source");
    assert!(sources.iter().any(|s| s.starts_with("rule:")), "{sources:?}");
}

#[test]
fn a_state_directory_reads_as_one_history_across_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = replayed(dir.path());
    let whole = count(&state, "SELECT count(*) AS n FROM events", &[]);
    let decided = count(&state, "SELECT count(*) AS n FROM decisions", &[]);
    // A second, later run over the first 5,000 lines: a restart.
    let log = std::fs::read_to_string(dir.path().join("sim/access.jsonl")).expect("log");
    let head: String = log.lines().take(5_000).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("head.jsonl"), head).expect("write");
    let pipeline = Pipeline::load(&root().join("pipelines/default.toml")).expect("pipeline");
    gatewatch::driver::replay_file(pipeline, &dir.path().join("head.jsonl"), None, &state.join("runs/2"), false)
        .expect("replay");
    assert_eq!(count(&state, "SELECT count(*) AS n FROM events", &[]), whole + 5_000);
    assert!(count(&state, "SELECT count(*) AS n FROM decisions", &[]) >= decided);
    // One run alone is still one run.
    assert_eq!(count(&state.join("runs/2"), "SELECT count(*) AS n FROM events", &[]), 5_000);
    // The view spans the runs too.
    assert_eq!(count(&state, "SELECT count(*) AS n FROM event_entities WHERE entity_type = 'ip'", &[]), whole + 5_000);
}

#[test]
fn the_command_line_reads_a_file_binds_parameters_and_writes_csv_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = replayed(dir.path());
    let ip = texts(&sql(&state, "SELECT entity FROM decisions WHERE entity_type = 'ip' LIMIT 1", &[]), "entity")
        .pop()
        .expect("a decision on an address");
    let gw = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gatewatch"))
            .current_dir(root())
            .arg("query")
            .arg("--data")
            .arg(&state)
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) =
        gw(&["--file", "queries/address-timeline.sql", "--param", &format!("ip={ip}"), "--format", "json"]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(
        rows.iter().any(|r| r["kind"] == "decision" && r["decision"].as_str().is_some_and(|d| d.contains(&ip))),
        "{out}"
    );
    let (ok, out, err) = gw(&["--file", "queries/rules-fired-today.sql", "--format", "csv"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("source,entity_type,action,decisions,entities,first,last,mean_score\n"), "{out}");
    // A parameter is a value, never SQL: a quote in it matches nothing and breaks nothing.
    let (ok, out, err) =
        gw(&["--file", "queries/address-timeline.sql", "--param", "ip=1.2.3.4' OR '1'='1", "--format", "csv"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
    // A parameter the query needs and was not given, and a malformed one, are clear errors.
    let (ok, _, err) = gw(&["--file", "queries/address-timeline.sql"]);
    assert!(!ok && err.contains("ip"), "{err}");
    let (ok, _, err) = gw(&["--param", "no-equals", "SELECT 1"]);
    assert!(!ok && err.contains("NAME=VALUE"), "{err}");
}
