//! Shadow mode: a rule or model marked `shadow = true` decides into its own
//! stream and tables and is never enforced; `eval`, `/metrics` and
//! `GET /v1/admin/shadow` show what it would have blocked beside what the
//! enforced set did.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use gatewatch::config::Pipeline;
use gatewatch::decision::{Decision, SHADOW_ID_BASE};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const RULE: &str = "rule:credential-stuffing-ip";

/// The default pipeline with its credential-stuffing rule for addresses and
/// its models in shadow, state in `dir/state`.
fn shadow_pipeline(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("pipelines/default.toml")).expect("default pipeline");
    let models = root().join("models").display().to_string();
    let changed = common::subst(
        &text,
        "name = \"credential-stuffing-ip\"\n",
        "name = \"credential-stuffing-ip\"\nshadow = true\n",
    );
    let changed = ["ip-classifier", "user-classifier"].iter().fold(changed, |text, name| {
        common::subst(
            &text,
            &format!("path = \"../models/{name}\"\n"),
            &format!("path = \"{models}/{name}\"\nshadow = true\n"),
        )
    });
    let changed = common::subst(&changed, "dir = \"../gatewatch-state\"", "dir = \"state\"");
    let p = dir.join("shadow.toml");
    std::fs::write(&p, changed).expect("write pipeline");
    p
}

fn read(path: &Path) -> Vec<Decision> {
    gatewatch::eval::read_decisions(path).unwrap_or_else(|e| panic!("{e}"))
}

fn entities(ds: &[Decision], source: &str) -> BTreeSet<String> {
    ds.iter().filter(|d| d.source == source).map(|d| d.entity.clone()).collect()
}

#[test]
fn a_shadow_rule_decides_into_its_own_tables_and_eval_judges_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut cfg = gatewatch::simulate::SimConfig::new(31, 3.0);
    cfg.scale = 0.3;
    let reqs = gatewatch::simulate::generate(&cfg);
    gatewatch::simulate::write(&cfg, &reqs, &d.join("sim"), &[gatewatch::simulate::OutFormat::Json]).expect("sim");
    let input = d.join("sim/access.jsonl");
    let default = Pipeline::load(&root().join("pipelines/default.toml")).expect("default");
    gatewatch::driver::replay_file(default, &input, None, &d.join("enforced"), false).expect("replay");
    let shadow_p = shadow_pipeline(d);
    let pipeline = Pipeline::load(&shadow_p).expect("shadow pipeline");
    assert!(pipeline.rules.iter().any(|r| r.shadow && r.name == "credential-stuffing-ip"));
    assert!(pipeline.models.iter().all(|m| m.shadow));
    let run = d.join("shadow");
    let summary = gatewatch::driver::replay_file(pipeline, &input, None, &run, false).expect("replay");

    let before = read(&d.join("enforced/decisions.jsonl"));
    let enforced = read(&run.join("decisions.jsonl"));
    let shadow = read(&run.join("shadow_decisions.jsonl"));
    assert!(!entities(&before, RULE).is_empty(), "the traffic has credential stuffing the rule catches");
    assert_eq!(summary.shadow_decisions, shadow.len() as u64);
    // Nothing a shadow rule or model decides is in force, and everything it
    // decides is in its own stream, numbered in its own range.
    assert!(enforced.iter().all(|d| d.source.starts_with("rule:") && d.source != RULE), "enforced: shadow sources");
    assert!(shadow.iter().all(|d| d.source == RULE || d.source.starts_with("model:")));
    assert!(shadow.iter().all(|d| d.id >= SHADOW_ID_BASE));
    // On its own memory the shadow rule decides at least on every address it
    // decided on when enforced (other rules' decisions no longer pre-empt it).
    let caught = entities(&shadow, RULE);
    assert!(entities(&before, RULE).is_subset(&caught), "{:?} ⊄ {caught:?}", entities(&before, RULE));

    // The Parquet table holds the same decisions; the decisions table none of them.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let count = |sql: &str| -> i64 {
        let b = rt.block_on(gatewatch::analytics::query_with(&run, sql, &[])).unwrap_or_else(|e| panic!("{e}"));
        let col = datafusion::arrow::compute::cast(b[0].column(0), &datafusion::arrow::datatypes::DataType::Int64)
            .expect("cast");
        col.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().expect("int").value(0)
    };
    assert_eq!(count("SELECT count(*) FROM shadow_decisions") as usize, shadow.len());
    assert_eq!(count(&format!("SELECT count(*) FROM decisions WHERE source = '{RULE}'")), 0);
    // The features a shadow decision was made on are kept, as for any decision.
    assert_eq!(
        count(
            "SELECT count(*) FROM shadow_decisions s WHERE NOT EXISTS (SELECT 1 FROM features f \
             WHERE f.entity_type = s.entity_type AND f.entity = s.entity AND f.ts = s.ts)"
        ),
        0
    );
    // A run without shadow rules has no shadow table, and reads as empty.
    assert!(!d.join("enforced/shadow_decisions.jsonl").exists());
    let empty = rt
        .block_on(gatewatch::analytics::query_with(&d.join("enforced"), "SELECT count(*) FROM shadow_decisions", &[]))
        .expect("query");
    assert_eq!(empty[0].num_rows(), 1);

    // eval: the shadow decisions judged alone and as if promoted.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .arg("--pipeline")
        .arg(&shadow_p)
        .args(["eval", "--json", "--labels"])
        .arg(d.join("sim/labels.jsonl"))
        .arg("--decisions")
        .arg(run.join("decisions.jsonl"))
        .output()
        .expect("eval");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let n = |v: &serde_json::Value| v.as_u64().expect("count");
    assert_eq!(n(&r["shadow"]["alone"]["decisions"]), shadow.len() as u64);
    assert!(n(&r["shadow"]["alone"]["attack_blocked"]) > 0, "the shadow rule would have blocked attacks");
    assert_eq!(n(&r["shadow"]["promoted"]["decisions"]), (enforced.len() + shadow.len()) as u64);
    assert!(n(&r["shadow"]["promoted"]["attack_blocked"]) >= n(&r["attack_blocked"]));
    assert!(n(&r["shadow"]["promoted"]["benign_blocked"]) >= n(&r["benign_blocked"]));
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .arg("--pipeline")
        .arg(&shadow_p)
        .args(["eval", "--labels"])
        .arg(d.join("sim/labels.jsonl"))
        .arg("--decisions")
        .arg(run.join("decisions.jsonl"))
        .output()
        .expect("eval");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("shadow rules and models (recorded, never enforced)"), "{text}");
    assert!(text.contains("promoted, with the enforced decisions"), "{text}");

    // Determinism holds with shadow rules as without.
    let again = d.join("again");
    gatewatch::driver::replay_file(Pipeline::load(&shadow_p).expect("pipeline"), &input, None, &again, false)
        .expect("replay");
    for f in ["decisions.jsonl", "shadow_decisions.jsonl"] {
        assert_eq!(std::fs::read(run.join(f)).expect(f), std::fs::read(again.join(f)).expect(f), "{f}");
    }
}

#[test]
fn live_shadow_decisions_are_listed_counted_and_never_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = shadow_pipeline(dir.path());
    let input = dir.path().join("access.log");
    std::fs::write(&input, "").expect("input");
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "edge");
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("log");
    f.write_all(common::stuffing_lines("203.0.113.77", 40).as_bytes()).expect("write");
    f.flush().expect("flush");

    let admin_h = [("X-Api-Key", admin.as_str())];
    let shadow = |q: &str| -> serde_json::Value {
        let (status, _, body) = server.request("GET", &format!("/v1/admin/shadow{q}"), &admin_h, "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    };
    server.until("the shadow rule decides", |_| {
        shadow("")["decisions"].as_array().is_some_and(|l| l.iter().any(|d| d["entity"] == "203.0.113.77"))
    });
    let v = shadow("?entity_type=ip&source=rule:credential-stuffing-ip&limit=5");
    assert_eq!(v["shadow_rules"], serde_json::json!(["credential-stuffing-ip"]));
    assert_eq!(v["shadow_models"].as_array().map(|m| m.len()), Some(2));
    let first = &v["decisions"][0];
    assert_eq!(first["entity"], "203.0.113.77");
    assert_eq!(first["action"], "deny");
    assert!(first["enforced"].is_null(), "nothing enforced on it: {first}");
    assert!(v["by_source"].as_array().expect("counts").iter().any(|c| c["source"] == RULE && c["decisions"] == 1));
    // The gateway still lets it through: shadow decisions are never enforced.
    assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "203.0.113.77")]).0, 200);
    assert_eq!(server.json("/v1/admin/decisions").0, 403, "a gateway key reads no admin route");
    let (_, _, metrics) = server.get("/metrics", &[]);
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("gatewatch_shadow_decisions_total{") && l.contains(RULE) && l.contains("\"deny\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(counted.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(!metrics.lines().any(|l| l.starts_with("gatewatch_decisions_total{") && l.contains(RULE)), "{metrics}");

    // A manual deny is what is in force beside it.
    let deny = r#"{"entity_type":"ip","entity":"203.0.113.77","action":"deny","ttl":"1h","reason":"confirmed"}"#;
    assert_eq!(server.request("POST", "/v1/admin/decisions", &admin_h, deny).0, 201);
    let v = shadow("?entity_type=ip");
    assert_eq!(v["decisions"][0]["enforced"]["source"], "manual:ops");

    for bad in ["?limit=0", "?limit=10001", "?limit=x", "?entity_type=planet", "?colour=red"] {
        let (status, _, body) = server.request("GET", &format!("/v1/admin/shadow{bad}"), &admin_h, "");
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["error"].is_string());
    }
    assert_eq!(server.get("/v1/admin/shadow", &[]).0, 403, "gateway key");
}
