//! State stays within its budget under a flood of new entities (rotating
//! proxies, minted device ids, a busy launch day), the coldest entities go
//! first, and an attacker inside the flood who keeps sending is still caught.
//! The run is a separate process, so its peak resident memory is its own.

use std::path::Path;

const BUDGET_MIB: u64 = 64;
/// What a run holds besides entity state: the binary, DataFusion, Parquet
/// row groups being encoded, channels, the allocator's slack. Documented in
/// docs/PERFORMANCE.md; this bound is generous, the point is that it does not
/// grow with the flood.
const FIXED_OVERHEAD_MIB: u64 = 448;

#[test]
fn a_flood_of_new_entities_stays_within_the_state_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = dir.path().join("budget.toml");
    std::fs::write(
        &pipeline,
        format!(
            "extends = \"{}\"\n[features]\nstate_budget = \"{BUDGET_MIB}MiB\"\n",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/default.toml").display()
        ),
    )
    .expect("pipeline");
    let input = dir.path().join("flood.jsonl");
    let n = 400_000;
    let start = gatewatch::event::time::parse_rfc3339("2026-11-02T10:00:00Z").expect("t");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
    gatewatch::simulate::flood::write(&mut w, n, start, 600_000, 50).expect("write");
    std::io::Write::flush(&mut w).expect("flush");
    drop(w);
    let out = dir.path().join("out");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .arg("--pipeline")
        .arg(&pipeline)
        .args(["replay", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("replay runs");
    assert!(status.success());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary")).expect("json");
    eprintln!("{s:#}");
    let budget = BUDGET_MIB << 20;
    let entities: u64 = s["active_entities"].as_object().expect("entities").values().filter_map(|v| v.as_u64()).sum();
    let evicted = s["evicted_entities"].as_u64().expect("evicted");
    assert!(evicted > 500_000, "about a million entities went through a budget that holds tens of thousands");
    assert!(s["state_bytes"].as_u64().expect("state_bytes") <= budget);
    assert_eq!(s["state_budget_bytes"].as_u64(), Some(budget));
    assert!(entities + evicted >= 3 * (n as u64) * 9 / 10, "entities seen: {entities} held + {evicted} evicted");
    let rss = s["peak_rss_bytes"].as_u64().expect("peak rss");
    assert!(
        rss <= budget + (FIXED_OVERHEAD_MIB << 20),
        "peak RSS {} MiB over budget {BUDGET_MIB} MiB + {FIXED_OVERHEAD_MIB} MiB",
        rss >> 20
    );
    // The stuffing address kept sending, so it stayed warm and was denied;
    // nobody in the flood itself was decided against.
    let decisions = std::fs::read_to_string(out.join("decisions.jsonl")).expect("decisions");
    let attacker = format!("\"{}\"", gatewatch::simulate::flood::ATTACKER_IP);
    assert!(
        decisions.lines().any(|l| l.contains(&attacker) && l.contains("\"deny\"")),
        "the attacker inside the flood was not denied:\n{decisions}"
    );
    assert!(decisions.lines().all(|l| l.contains(&attacker)), "collateral in the flood:\n{decisions}");
}
