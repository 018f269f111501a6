//! Bad input never stops the stream: each bad line becomes a dead letter with
//! its reason and position, and the good lines around it still count.

use std::io::Write;
use std::path::Path;

use gatewatch::config::Pipeline;

fn pipeline() -> Pipeline {
    Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/default.toml")).expect("pipeline")
}

const GOOD: &str = r#"{"ts":"2026-11-28T10:15:02.113Z","client_ip":"198.51.100.23","method":"GET","path":"/v1/products/1","status":200}"#;

fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(dir.join("dead_letters.jsonl")) {
        Ok(text) => text.lines().map(|l| serde_json::from_str(l).expect("dead letter is JSON")).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn every_kind_of_bad_line_is_a_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.log");
    let mut f = std::fs::File::create(&input).expect("create");
    let huge_ua = "x".repeat(1 << 20);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (GOOD.as_bytes().to_vec(), ""),
        (GOOD.as_bytes()[..60].to_vec(), "truncated JSON"),
        (b"{\"ts\":\"2026-11-28T10:15:02Z\",\"client_ip\":\"1.2.3.4\",\"method\":\"GET\",\"path\":\"/\xff\xfe\",\"status\":200}".to_vec(), "invalid UTF-8"),
        (GOOD.replace("2026-11-28", "9999-11-28").into_bytes(), "outside the accepted range"),
        (GOOD.replace("\"2026-11-28T10:15:02.113Z\"", "1795860902").into_bytes(), "epoch seconds"),
        (GOOD.replace("\"status\":200", "\"status\":\"OK\"").into_bytes(), "status"),
        (GOOD.replace("\"status\":200", "\"status\":[200]").into_bytes(), "status"),
        (GOOD.replace("198.51.100.23", "not-an-ip").into_bytes(), "client_ip"),
        (GOOD.replace("\"method\":\"GET\"", "\"method\":42").into_bytes(), "method"),
        (format!(r#"{{"ts":"2026-11-28T10:15:02.113Z","client_ip":"198.51.100.23","method":"GET","path":"/","status":200,"user_agent":"{huge_ua}"}}"#).into_bytes(), "longer than input.max_line_bytes"),
        (b"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] \"GET / HTTP/1.1\" 200".to_vec(), "nginx"),
        (b"\xff\x00\x01 binary garbage".to_vec(), "invalid UTF-8"),
        (b"   ".to_vec(), "empty line"),
        (GOOD.as_bytes().to_vec(), ""),
    ];
    for (line, _) in &cases {
        f.write_all(line).expect("write");
        f.write_all(b"\n").expect("write");
    }
    drop(f);
    let out = dir.path().join("out");
    let s =
        gatewatch::driver::replay_file(pipeline(), &input, None, &out, false).expect("replay never fails on bad lines");
    let bad: Vec<&str> = cases.iter().filter(|c| !c.1.is_empty()).map(|c| c.1).collect();
    assert_eq!(s.lines, cases.len() as u64);
    assert_eq!(s.events, 2);
    assert_eq!(s.dead_letters, bad.len() as u64);
    let dl = dead_letters(&out);
    assert_eq!(dl.len(), bad.len());
    for (d, want) in dl.iter().zip(&bad) {
        let reason = d["reason"].as_str().expect("reason");
        assert!(reason.contains(want), "line {}: reason '{reason}' should mention '{want}'", d["line"]);
        assert!(d["line"].as_u64().is_some() && d["offset"].as_u64().is_some());
        assert!(d["raw"].is_string() || d["raw_base64"].is_string(), "the line is kept");
    }
    // The 1 MiB line is kept whole (it fits the dead-letter limit) and measured.
    let long = dl.iter().find(|d| d["reason"].as_str().is_some_and(|r| r.contains("longer"))).expect("long line");
    assert!(long["bytes"].as_u64().expect("bytes") > 1 << 20);
    // Invalid UTF-8 keeps its exact bytes.
    let bin = dl.iter().find(|d| d["line"] == 12).expect("binary line");
    assert!(bin["raw_base64"].as_str().expect("b64").starts_with("/wAB"), "{bin}");

    // The same letters are the `dead_letters` table the analysts query.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sql =
        "SELECT source, line, \"offset\", reason, raw, raw_base64, bytes, truncated FROM dead_letters ORDER BY line";
    let batches = rt.block_on(gatewatch::analytics::query(&out, sql)).expect("dead_letters is a table");
    let mut json = Vec::new();
    gatewatch::analytics::write(&batches, gatewatch::analytics::OutputFormat::Json, &mut json).expect("json");
    let rows: Vec<serde_json::Value> =
        String::from_utf8(json).expect("utf-8").lines().map(|l| serde_json::from_str(l).expect("row")).collect();
    assert_eq!(rows.len(), dl.len());
    for (row, d) in rows.iter().zip(&dl) {
        for k in ["source", "line", "offset", "reason", "bytes", "truncated"] {
            assert_eq!(row[k], d[k], "{k} of line {}", d["line"]);
        }
        for k in ["raw", "raw_base64"] {
            assert_eq!(row.get(k).filter(|v| !v.is_null()), d.get(k), "{k} of line {}", d["line"]);
        }
    }
}

#[test]
fn a_clean_run_has_an_empty_dead_letters_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.log");
    std::fs::write(&input, format!("{GOOD}\n")).expect("write");
    let out = dir.path().join("out");
    gatewatch::driver::replay_file(pipeline(), &input, None, &out, false).expect("replay");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let batches =
        rt.block_on(gatewatch::analytics::query(&out, "SELECT count(*) AS n FROM dead_letters")).expect("query");
    let mut csv = Vec::new();
    gatewatch::analytics::write(&batches, gatewatch::analytics::OutputFormat::Csv, &mut csv).expect("csv");
    assert_eq!(String::from_utf8_lossy(&csv), "n\n0\n");
}

#[test]
fn empty_file_is_an_empty_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("empty.log");
    std::fs::write(&input, b"").expect("write");
    let out = dir.path().join("out");
    let s = gatewatch::driver::replay_file(pipeline(), &input, None, &out, false).expect("replay");
    assert_eq!((s.lines, s.events, s.decisions, s.dead_letters), (0, 0, 0, 0));
    assert_eq!(std::fs::read_to_string(out.join("decisions.jsonl")).expect("decisions"), "");
}

#[test]
fn missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err =
        gatewatch::driver::replay_file(pipeline(), &dir.path().join("nope.log"), None, &dir.path().join("out"), false)
            .expect_err("missing file");
    assert!(err.to_string().contains("nope.log"), "{err}");
}

#[test]
fn out_of_order_events_count_and_only_what_no_window_holds_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("late.log");
    let later = GOOD.replace("10:15:02.113", "10:20:00.000");
    let ancient = GOOD.replace("10:15:02.113", "08:15:02.113");
    std::fs::write(&input, format!("{GOOD}\n{later}\n{GOOD}\n{ancient}\n")).expect("write");
    let out = dir.path().join("out");
    let s = gatewatch::driver::replay_file(pipeline(), &input, None, &out, false).expect("replay");
    // Five minutes behind the newest event is behind the watermark, but every
    // window of the 10-minute and 1-hour features still holds it.
    assert_eq!((s.events, s.reordered_events, s.late_events, s.dead_letters), (3, 1, 1, 1));
    let dl = dead_letters(&out);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["line"], 4);
    let reason = dl[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("older than the longest feature window"), "{reason}");
}
