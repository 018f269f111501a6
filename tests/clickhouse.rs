//! The ClickHouse sink against a real server (Debian's 18.16, the oldest the
//! schema keeps to): every row once, the same rows as the Parquet tables, an
//! outage that loses nothing and stores nothing twice, and a retried batch
//! recognised by its identity.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::clickhouse::ClickHouse;
use common::{Server, create_key, until};

/// A pipeline in `dir` extending the default one, with its state in
/// `dir/state` and the sinks `sinks` (TOML).
fn pipeline(dir: &Path, sinks: &str) -> PathBuf {
    let p = dir.join("pipeline.toml");
    std::fs::write(
        &p,
        format!(
            "extends = \"{}\"\n[state]\ndir = \"state\"\n{sinks}",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/default.toml").display()
        ),
    )
    .expect("pipeline");
    p
}

fn gatewatch(pipeline: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .arg("--pipeline")
        .arg(pipeline)
        .args(args)
        .output()
        .expect("runs")
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gatewatch query --data DIR SQL` as CSV without its header.
fn parquet(run: &Path, pipeline: &Path, sql: &str) -> String {
    let out = ok(gatewatch(pipeline, &["query", "--data", &run.display().to_string(), "--format", "csv", sql]));
    out.lines().skip(1).collect::<Vec<_>>().join("\n")
}

#[test]
fn replay_writes_every_table_once_and_answers_as_parquet_does() {
    let ch = ClickHouse::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let sim = d.join("sim");
    ok(std::process::Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .args(["simulate", "--seed", "17", "--hours", "1", "--scale", "0.3", "--out"])
        .arg(&sim)
        .output()
        .expect("simulate"));
    let input = sim.join("access.jsonl");
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("input");
    f.write_all(b"not a log line\n{\"ts\":\"2026-11-02T06:10:00Z\",\"client_ip\":\"x\"}\n").expect("append");
    // IPv6 clients, in more than one spelling: their subnet is the /64.
    for (i, ip) in
        ["2001:db8:a:b::1", "2001:0DB8:000a:000b:0:0:0:2", "2001:db8:a:b:ffff::9", "2001:db8:a:c::1"].iter().enumerate()
    {
        writeln!(
            f,
            r#"{{"ts":"2026-11-02T06:20:{i:02}Z","client_ip":"{ip}","method":"GET","path":"/products/{i}","status":200}}"#
        )
        .expect("append");
    }
    drop(f);
    // The model in shadow, at its own threshold: its would-be decisions go to
    // the shadow_decisions table.
    let shadow_model = format!(
        "[[models]]\npath = \"{}\"\nentity = \"ip\"\nwhen = \"requests_10m >= 20\"\nchallenge_at = 0.5\nttl = \"10m\"\nshadow = true\n",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ip-classifier").display()
    );
    let p = pipeline(
        d,
        &format!(
            "{shadow_model}[[sinks]]\ntype = \"parquet\"\n[[sinks]]\ntype = \"dead_letters\"\n{}",
            ch.sink_toml("")
        ),
    );

    // Without its tables the sink refuses to start, and says what to run.
    let refused = gatewatch(&p, &["replay", "--input", &input.display().to_string(), "--out", "unused"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("gatewatch clickhouse init"));

    let init = ok(gatewatch(&p, &["clickhouse", "init"]));
    assert!(init.contains("events           created"), "{init}");
    assert!(ok(gatewatch(&p, &["clickhouse", "init"])).contains("events           present"), "init runs again");

    // A database an older gatewatch made: a column this one writes is
    // missing. The sink refuses to start and names it; init adds it.
    ch.sql(&format!("ALTER TABLE {}.features DROP COLUMN confidential_10m", ch.database));
    let refused = gatewatch(&p, &["replay", "--input", &input.display().to_string(), "--out", "unused"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("features.confidential_10m"), "{err}");
    assert!(ok(gatewatch(&p, &["clickhouse", "init"])).contains("added column features.confidential_10m"));

    let run = d.join("run");
    ok(gatewatch(&p, &["replay", "--input", &input.display().to_string(), "--out", &run.display().to_string()]));
    let db = &ch.database;

    for table in ["events", "features", "decisions", "dead_letters", "shadow_decisions"] {
        let local: u64 = parquet(&run, &p, &format!("SELECT count(*) FROM {table}")).parse().expect("count");
        assert!(local > 0, "{table}");
        assert_eq!(ch.count(&format!("SELECT count() FROM {db}.{table}")), local, "{table}: every row, once");
    }
    // Dead letters as the JSON-lines sink has them: position, reason, the line.
    let mut jsonl: Vec<String> = std::fs::read_to_string(run.join("dead_letters.jsonl"))
        .expect("dead letters")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            format!(
                "{}\t{}\t{}\t{}",
                v["line"],
                v["offset"],
                v["reason"].as_str().expect("reason"),
                v["raw"].as_str().expect("raw")
            )
        })
        .collect();
    jsonl.sort();
    assert_eq!(jsonl.len(), 2);
    let remote =
        ch.sql(&format!("SELECT line, offset, reason, raw FROM {db}.dead_letters ORDER BY line FORMAT TSVRaw"));
    assert_eq!(remote.lines().map(String::from).collect::<Vec<_>>(), jsonl);

    // The same values, not only as many rows: nulls, numbers and times.
    let local = parquet(
        &run,
        &p,
        "SELECT sum(bytes_sent), count(user_id), count(DISTINCT client_ip), min(CAST(ts AS BIGINT)), \
         max(CAST(ts AS BIGINT)) FROM events",
    );
    let remote = ch.sql(&format!(
        "SELECT sum(bytes_sent), count(user_id), uniqExact(client_ip), min(ts_ms), max(ts_ms) FROM {db}.events"
    ));
    assert_eq!(local.replace(',', "\t"), remote);
    let decisions = |s: String| {
        let mut v: Vec<String> = s.lines().map(|l| l.replace(',', "\t")).collect();
        v.sort();
        v
    };
    assert_eq!(
        decisions(parquet(&run, &p, "SELECT id, entity_type, entity, action, ttl_s, source FROM decisions")),
        decisions(ch.sql(&format!("SELECT id, entity_type, entity, action, ttl_s, source FROM {db}.decisions"))),
    );
    let local = parquet(
        &run,
        &p,
        "SELECT sum(requests_10m), count(distinct_users_1h), sum(CAST(periodic AS INT)) FROM features",
    );
    let remote =
        ch.sql(&format!("SELECT sum(requests_10m), count(distinct_users_1h), sum(periodic) FROM {db}.features"));
    assert_eq!(local.replace(".0", "").replace(',', "\t"), remote);

    // The view names subnets as the engine does, IPv6 /64s included.
    let cidrs = "SELECT entity, count() FROM event_entities WHERE entity_type = 'cidr' GROUP BY entity ORDER BY entity";
    let local = parquet(&run, &p, &cidrs.replace("count()", "count(*)"));
    assert!(local.contains("2001:db8:a:b::/64,3") && local.contains("2001:db8:a:c::/64,1"), "{local}");
    assert_eq!(local.replace(',', "\t"), ch.sql(&cidrs.replace("event_entities", &format!("{db}.event_entities"))));

    // Every shipped investigation answers alike from ClickHouse (its variant
    // where the dialect differs) and from the Parquet history.
    let denied = parquet(&run, &p, "SELECT entity FROM decisions WHERE entity_type = 'ip' AND action = 'deny' LIMIT 1");
    assert!(!denied.is_empty(), "the traffic has a denied address");
    let mut shipped: Vec<PathBuf> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("queries"))
        .expect("queries/")
        .map(|e| e.expect("entry").path())
        .filter(|f| f.extension().is_some_and(|e| e == "sql"))
        .collect();
    shipped.sort();
    assert!(shipped.len() >= 6);
    let ip = format!("ip={denied}");
    let entity = format!("entity={denied}");
    for file in shipped {
        let name = file.file_stem().and_then(|n| n.to_str()).expect("name").to_string();
        let variant = file.with_file_name("clickhouse").join(file.file_name().expect("file"));
        assert!(variant.is_file(), "{name}: a ClickHouse variant");
        let f = file.display().to_string();
        let needs: Vec<&str> = match name.as_str() {
            "address-timeline" => vec!["--param", &ip],
            "after-expiry" => vec!["--param", "entity_type=ip", "--param", &entity],
            _ => vec![],
        };
        let mut local_args = vec!["query", "--data", run.to_str().expect("utf-8"), "--file", &f, "--format", "json"];
        local_args.extend(&needs);
        let mut remote_args =
            vec!["query", "--clickhouse", &ch.url, "--database", db, "--file", &f, "--format", "json"];
        remote_args.extend(&needs);
        // Columns whose text differs by dialect alone (a time inside a
        // sentence, the order of an aggregated list).
        let skip: &[&str] = match name.as_str() {
            "address-timeline" => &["decision"],
            "users-two-countries" => &["moves", "addresses_after"],
            _ => &[],
        };
        let local = rows(&ok(gatewatch(&p, &local_args)), skip);
        let remote = rows(&ok(gatewatch(&p, &remote_args)), skip);
        assert_eq!(local, remote, "{name}");
        if name != "after-expiry" {
            assert!(!local.is_empty(), "{name} answers something on this traffic");
        }
    }
    // Read-only: an analyst's statement cannot change the history.
    let write = gatewatch(&p, &["query", "--clickhouse", &ch.url, "--database", db, "DROP TABLE decisions"]);
    assert!(!write.status.success());
    assert!(ch.count(&format!("SELECT count() FROM {db}.decisions")) > 0);
}

/// JSON-lines rows as comparable text, sorted: times to whole seconds,
/// numbers to three decimals, `skip` columns left out.
fn rows(out: &str, skip: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .map(|l| {
            let row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).expect("a JSON row");
            row.into_iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::Number(n) => format!("{:.3}", n.as_f64().expect("number")),
                        serde_json::Value::String(s)
                            if s.len() >= 19 && s.as_bytes()[4] == b'-' && matches!(s.as_bytes()[10], b'T' | b' ') =>
                        {
                            s[..19].replace('T', " ")
                        }
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    v.sort();
    v
}

/// Lines of `n` distinct benign requests from `ip`, now, with request ids `tag-i`.
fn benign(ip: &str, tag: &str, n: usize) -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    (0..n)
        .map(|i| {
            format!(
                r#"{{"ts":"{}","client_ip":"{ip}","method":"GET","path":"/products/{i}","status":200,"request_id":"{tag}-{i}"}}"#,
                gatewatch::event::time::format_rfc3339(ms)
            ) + "\n"
        })
        .collect()
}

fn append(log: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(log).expect("log");
    f.write_all(text.as_bytes()).expect("append");
}

fn metric(server: &Server, name: &str) -> Option<f64> {
    let (_, _, body) = server.get("/metrics", &[]);
    body.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[test]
fn an_outage_loses_nothing_and_stores_nothing_twice() {
    let mut ch = ClickHouse::private();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = pipeline(
        d,
        &format!(
            "[[sinks]]\ntype = \"parquet\"\n[[sinks]]\ntype = \"dead_letters\"\n{}",
            ch.sink_toml("flush_every = \"200ms\"")
        ),
    );
    ok(gatewatch(&p, &["clickhouse", "init"]));
    let log = d.join("access.log");
    std::fs::write(&log, "").expect("log");
    let key = create_key(&p, "gateway", "edge");
    let server = Server::start(&p, &log, &key);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    let db = ch.database.clone();
    let events = |ch: &ClickHouse| ch.count(&format!("SELECT count() FROM {db}.events"));

    append(&log, &benign("198.51.100.7", "before", 300));
    until("the first rows are in ClickHouse", || events(&ch) == 300);

    ch.stop();
    let stopped = std::time::Instant::now();
    append(&log, &benign("198.51.100.7", "during", 500));
    append(&log, &common::stuffing_lines("203.0.113.66", 40));
    // The engine goes on deciding and the API on serving.
    until("the attacker is denied while ClickHouse is away", || {
        server.get("/v1/authz", &[("X-Forwarded-For", "203.0.113.66")]).0 == 403
    });
    until("the sink says it is down", || metric(&server, "gatewatch_sink_up{sink=\"clickhouse\"}") == Some(0.0));
    let spool = d.join("state/clickhouse-spool");
    let spooled = || walk(&spool).into_iter().filter(|f| f.extension().is_some_and(|e| e == "rowbinary")).count();
    until("rows wait in the spool", || spooled() > 0);
    assert_eq!(ch.try_sql("SELECT 1").0, 0, "the server is really down");
    // Thirty seconds away (retries back off meanwhile); the API answers throughout.
    while stopped.elapsed() < std::time::Duration::from_secs(30) {
        assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "203.0.113.66")]).0, 403, "the deny holds");
        assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "192.0.2.44")]).0, 200, "others pass");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    ch.start();
    until("every row arrives once the server is back", || events(&ch) == 840);
    until("the spool empties", || spooled() == 0);
    until("the sink says it is up", || metric(&server, "gatewatch_sink_up{sink=\"clickhouse\"}") == Some(1.0));
    assert_eq!(ch.count(&format!("SELECT uniqExact(request_id) FROM {db}.events WHERE request_id != ''")), 800);
    assert_eq!(
        ch.count(&format!("SELECT count() FROM {db}.events WHERE client_ip = '203.0.113.66'")),
        40,
        "no row twice"
    );
    until("the decision is in ClickHouse", || {
        ch.count(&format!("SELECT count() FROM {db}.decisions WHERE entity = '203.0.113.66' AND action = 'deny'")) >= 1
    });
    assert_eq!(metric(&server, "gatewatch_sink_dropped_total{sink=\"clickhouse\"}"), Some(0.0), "nothing dropped");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_retried_batch_already_stored_is_not_stored_again() {
    use gatewatch::sink::Sink;
    use gatewatch::sink::clickhouse::{self as gch, rowbinary, spool::Spool};

    let ch = ClickHouse::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = gch::ClickHouseSpec {
        url: ch.url.clone(),
        database: ch.database.clone(),
        user: None,
        password_env: None,
        tables: gch::TABLES.iter().map(|t| t.to_string()).collect(),
        flush_every_ms: 200,
        batch_rows: 1000,
        spool_dir: dir.path().join("spool"),
        spool_max_bytes: 1 << 20,
        retention_days: None,
    };
    gch::init(&spec).expect("init");

    // Three events, encoded as the sink encodes them, with one batch identity.
    let text = benign("192.0.2.1", "retry", 3);
    let mut b = gatewatch::event::batch::EventBatchBuilder::with_capacity(3);
    for l in text.lines() {
        b.append(&gatewatch::event::parse_line(l, gatewatch::event::Format::Json, None).expect("parses"));
    }
    let batch = b.finish().expect("batch");
    let mut data = Vec::new();
    rowbinary::encode(&batch, 0xfeed, &mut data).expect("encodes");
    let ts = gatewatch::event::time::now_ms();
    // A run that sent the batch, lost the answer and spooled it to send again,
    // twice (the second attempt's answer lost too), then stopped.
    let mut spool = Spool::open(&spec.spool_dir, spec.spool_max_bytes).expect("spool");
    assert!(spool.push("events", 0xfeed, 3, (ts - 60_000, ts + 60_000), &data).expect("push"));
    assert!(spool.push("events", 0xfeed, 3, (ts - 60_000, ts + 60_000), &data).expect("push"));
    drop(spool);

    // The next run adopts the spool and sends it: the rows are there once.
    let mut sink = gch::ClickHouseSink::open(&spec).expect("opens");
    sink.sync().expect("sync");
    let db = &ch.database;
    assert_eq!(ch.count(&format!("SELECT count() FROM {db}.events WHERE batch = {}", 0xfeed)), 3);
    assert!(walk(&spec.spool_dir).iter().all(|f| f.extension().is_none_or(|e| e != "rowbinary")));
    Box::new(sink).finish().expect("finish");
}

#[test]
fn the_shipped_pipeline_loads() {
    let p = gatewatch::config::Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/clickhouse.toml"))
        .expect("pipelines/clickhouse.toml loads");
    let ch = p.sinks.iter().find_map(|s| s.clickhouse.as_deref()).expect("a clickhouse sink");
    assert_eq!(ch.tables, gatewatch::sink::clickhouse::TABLES);
    assert!(p.sinks.iter().any(|s| s.kind == gatewatch::sink::SinkKind::Parquet), "the Parquet history stays");
}
