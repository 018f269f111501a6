//! The `gatewatch` binary as a user runs it.

use std::process::Command;

fn gw() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatewatch"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn ok(c: &mut Command) -> String {
    let out = c.output().expect("runs");
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_names_every_command() {
    let help = ok(gw().arg("--help"));
    for cmd in ["simulate", "replay", "eval", "compare", "train", "query", "demo", "run", "keys"] {
        assert!(help.contains(cmd), "{help}");
    }
}

#[test]
fn simulate_replay_eval_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(gw().args(["simulate", "--seed", "3", "--hours", "1", "--formats", "nginx", "--out"]).arg(d.join("sim")));
    let line = ok(gw()
        .args(["replay", "--format", "nginx", "--input"])
        .arg(d.join("sim/access.log"))
        .arg("--out")
        .arg(d.join("run")));
    assert!(line.contains("events") && line.contains("decisions"), "{line}");
    let report = ok(gw()
        .arg("eval")
        .arg("--labels")
        .arg(d.join("sim/labels.jsonl"))
        .arg("--decisions")
        .arg(d.join("run/decisions.jsonl")));
    assert!(report.contains("benign requests blocked"), "{report}");
    let json = ok(gw()
        .arg("eval")
        .arg("--json")
        .arg("--labels")
        .arg(d.join("sim/labels.jsonl"))
        .arg("--decisions")
        .arg(d.join("run/decisions.jsonl")));
    let v: serde_json::Value = serde_json::from_str(&json).expect("eval --json is JSON");
    assert!(v["benign_requests"].as_u64().expect("count") > 1000);
    let table = ok(gw()
        .arg("query")
        .arg("--data")
        .arg(d.join("run"))
        .arg("SELECT count(*) AS n FROM events WHERE status = 200"));
    assert!(table.contains("| n"), "{table}");
    let joined = ok(gw().arg("query").arg("--data").arg(d.join("run")).arg(
        "SELECT d.entity, count(e.ts) AS requests FROM decisions d JOIN events e ON e.client_ip = d.entity \
         WHERE d.entity_type = 'ip' GROUP BY d.entity ORDER BY requests DESC LIMIT 3",
    ));
    assert!(joined.contains("entity"), "{joined}");
    let bad = gw().arg("query").arg("--data").arg(d.join("run")).arg("SELECT nope FROM events").output().expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope"));
}

#[test]
fn bad_pipeline_names_file_line_and_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[[rules]]\nname = \"typo\"\nentity = \"ip\"\nwhen = \"login_failurez_10m > 3\"\naction = \"deny\"\nttl = \"1h\"\nreason = \"x\"\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("in.log"), "").expect("write");
    let out = gw()
        .arg("--pipeline")
        .arg(&p)
        .args(["replay", "--input"])
        .arg(dir.path().join("in.log"))
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4: rule 'typo'") && err.contains("login_failurez_10m"), "{err}");
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok(gw().args(["demo", "--hours", "1", "--out"]).arg(dir.path()));
    for want in ["1/3", "2/3", "3/3", "scenario", "benign requests blocked", "gatewatch query"] {
        assert!(out.contains(want), "missing '{want}':\n{out}");
    }
}

#[test]
fn eval_compares_pipelines_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(gw()
        .args(["simulate", "--seed", "8", "--hours", "1", "--scale", "0.2", "--formats", "json", "--out"])
        .arg(d.join("sim")));
    let table = ok(gw()
        .args(["eval", "--pipelines", "pipelines/rules-only.toml,pipelines/default.toml", "--traffic"])
        .arg(d.join("sim"))
        .arg("--out")
        .arg(d.join("cmp")));
    assert!(table.starts_with("| scenario | rules-only | default |"), "{table}");
    assert!(table.contains("slow-scraper") && table.contains("benign requests blocked"), "{table}");
    let out = gw().args(["eval"]).output().expect("runs");
    assert!(!out.status.success(), "eval with nothing to evaluate must fail");
}
