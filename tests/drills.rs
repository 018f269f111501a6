//! Failure drills against a real `gatewatch run`: the followed log under the
//! tools that rotate and truncate it, and a state disk that fills up.

mod common;

use std::io::Write;

use common::{Server, create_key};

/// Lines the engine has taken in: parsed, or dead-lettered with a reason.
fn seen(server: &Server) -> f64 {
    server.metric("gatewatch_events_total") + server.metric("gatewatch_dead_letters_total")
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("append");
    f.write_all(text.as_bytes()).expect("write");
    f.flush().expect("flush");
}

/// logrotate's two ways, each in the middle of a line: `create` (the file is
/// renamed and a new one takes its path) and `copytruncate` (the file is cut
/// to nothing in place). Every line written is counted, the half lines
/// included, and an attack written after each is still denied.
#[test]
fn followed_file_rotated_and_truncated_mid_line() {
    let (dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);

    append(&input, &common::stuffing_lines("198.51.100.10", 10));
    server.until("10 lines", |s| seen(s) == 10.0);
    // The writer is cut off mid-line, and the file rotated under it.
    append(&input, r#"{"ts":"2026-11-28T10:15:02Z","client_ip":"198.51.1"#);
    std::fs::rename(&input, dir.path().join("access.log.1")).expect("rotate");
    std::fs::write(&input, common::stuffing_lines("203.0.113.77", 40)).expect("new file");
    server.until("deny after rotation", |s| s.json("/v1/decision?ip=203.0.113.77").1["action"] == "deny");
    server.until("every line of both files", |s| seen(s) == 51.0);
    assert_eq!(server.metric("gatewatch_dead_letters_total"), 1.0, "the half line, with its reason");

    // copytruncate, after half a line that the engine has read.
    append(&input, r#"{"ts":"2026-11-28T10:15:02Z","client_ip":"192.0.2.1"#);
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::File::create(&input).expect("truncate");
    append(&input, &common::stuffing_lines("203.0.113.88", 40));
    server.until("deny after truncation", |s| s.json("/v1/decision?ip=203.0.113.88").1["action"] == "deny");
    server.until("every complete line", |s| seen(s) >= 91.0);
    // The half line counts if the engine read it before the cut (it polls
    // far more often than every 500 ms); it is never taken for a good line.
    let total = seen(&server);
    assert!(total == 92.0 || total == 91.0, "{total}");
    assert_eq!(server.metric("gatewatch_events_total"), 90.0);
}

/// A small tmpfs mounted over `dir` for the length of a test.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "gatewatch-drill"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "the disk-full drill mounts a small tmpfs and needs root (or CAP_SYS_ADMIN), as .ci/run has: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }

    /// Writes zeros into `name` until the file system is full; returns the bytes written.
    fn fill(&self, name: &str) -> u64 {
        let mut f = std::fs::File::create(self.0.join(name)).expect("filler");
        let mut written = 0u64;
        for chunk in [1 << 20, 4096, 1] {
            let zeros = vec![0u8; chunk];
            while f.write_all(&zeros).and_then(|_| f.flush()).is_ok() {
                written += chunk as u64;
            }
        }
        written
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn denied(server: &Server, ip: &str) -> bool {
    server.json(&format!("/v1/decision?ip={ip}")).1["action"] == "deny"
}

/// The state directory's disk fills up while `run` is deciding, then is
/// freed. Throughout, attacks are denied and served; an operator's change that
/// cannot be written is refused with a 503, not pretended; the outputs that
/// failed are counted and reopen by themselves; nothing is left half-written;
/// and what was decided while the disk was full is on disk after it is freed
/// (a restart serves it).
#[test]
fn disk_full_while_deciding_then_freed() {
    let (dir, pipeline, input) = common::live_setup();
    let disk = SmallDisk::mount(&dir.path().join("state"), "6m");
    let gateway = create_key(&pipeline, "gateway", "edge");
    let admin = create_key(&pipeline, "admin", "ops");
    let mut server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    append(&input, &common::stuffing_lines("203.0.113.10", 40));
    server.until("deny before the disk fills", |s| denied(s, "203.0.113.10"));

    let filled = disk.fill("filler");
    assert!(filled > 0, "the disk had room");
    // Lines that cannot be parsed (dead letters, 40 KB of them) and an attack.
    let junk: String = (0..200).map(|i| format!("not a log line {i} {}\n", "x".repeat(180))).collect();
    append(&input, &junk);
    append(&input, &common::stuffing_lines("203.0.113.20", 40));
    server.until("deny while the disk is full", |s| denied(s, "203.0.113.20"));
    server.until("every line taken in", |s| seen(s) == 280.0);
    server
        .until("a failed output is counted", |s| s.metric("gatewatch_sink_errors_total{sink=\"dead_letters\"}") >= 1.0);
    assert_eq!(server.metric("gatewatch_sink_up{sink=\"dead_letters\"}"), 0.0);
    assert!(server.metric("gatewatch_sink_dropped_total{sink=\"dead_letters\"}") >= 1.0);
    assert_eq!(server.get("/healthz", &[]).0, 200);
    // An operator's deny needs the disk: made only if it could be written
    // (redb may still find room inside its file), refused with a 503 and the
    // reason otherwise — never pretended.
    disk.fill("filler-2");
    let body = r#"{"entity_type":"ip","entity":"192.0.2.99","action":"deny","ttl":"1h","reason":"drill"}"#;
    let (status, _, answer) = server.request("POST", "/v1/admin/decisions", &[("X-Api-Key", admin.as_str())], body);
    match status {
        201 => assert!(denied(&server, "192.0.2.99")),
        503 => {
            let err: serde_json::Value = serde_json::from_str(&answer).expect("a JSON error body");
            assert!(err["error"].as_str().is_some_and(|m| m.contains("nothing was changed")), "{answer}");
            assert!(!denied(&server, "192.0.2.99"));
        }
        _ => panic!("{status}: {answer}"),
    }

    // Room again: the outputs reopen (when they next have something to
    // write, after a pause) and what waited in memory is written.
    for f in ["filler", "filler-2"] {
        std::fs::remove_file(disk.0.join(f)).expect("free the disk");
    }
    append(&input, &common::stuffing_lines("203.0.113.30", 40));
    server.until("deny after the disk is freed", |s| denied(s, "203.0.113.30"));
    server.until("the dead letters reopen", |s| {
        append(&input, "still not a log line\n");
        s.metric("gatewatch_sink_up{sink=\"dead_letters\"}") == 1.0
    });
    server.until("the store is written", |s| s.metric("gatewatch_store_unpersisted_decisions") == 0.0);
    let (status, _, answer) = server.request("POST", "/v1/admin/decisions", &[("X-Api-Key", admin.as_str())], body);
    assert_eq!(status, 201, "{answer}");
    assert!(server.signal("-TERM").success(), "a clean stop, every output closed");

    // No output is left half-written: every JSON line parses, every Parquet
    // file reads.
    let runs: Vec<_> =
        std::fs::read_dir(disk.0.join("runs")).expect("runs").map(|e| e.expect("entry").path()).collect();
    assert_eq!(runs.len(), 1);
    for name in ["decisions.jsonl", "dead_letters.jsonl"] {
        let text = std::fs::read_to_string(runs[0].join(name)).unwrap_or_default();
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
        }
    }
    let decided = common::gatewatch(
        &pipeline,
        &["query", "--data", runs[0].to_str().expect("utf-8"), "SELECT entity FROM decisions ORDER BY entity"],
    );
    assert!(decided.contains("203.0.113.30"), "{decided}");
    // What was decided while the disk was full survives a restart.
    let server = Server::start(&pipeline, &input, &gateway);
    server.until("ready again", |s| s.json("/readyz").0 == 200);
    for ip in ["203.0.113.10", "203.0.113.20", "203.0.113.30", "192.0.2.99"] {
        assert!(denied(&server, ip), "{ip} after the restart");
    }
    drop(server);
    drop(disk);
}

/// Debian's libfaketime (`scripts/services/faketime.sh`).
fn libfaketime() -> std::path::PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .expect("/usr/lib")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    found.expect("libfaketime is missing: run scripts/services/faketime.sh")
}

/// The host's wall clock set back half an hour, forward again, then two hours
/// ahead (a VM resumed after a long pause) — through libfaketime, in the
/// `gatewatch run` process only, while one gateway stamps its lines with the
/// same clock and another with a correct one. Every attack is denied: engine
/// time runs on over the step back, lines from the stepped clock are moved
/// forward by it (and counted), lines from the correct clock are not taken
/// for lines from the future, and the decisions the API serves stay in force
/// in the host's own time.
#[test]
fn wall_clock_set_back_and_forward() {
    let (dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let spec = dir.path().join("faketime");
    std::fs::write(&spec, "+0\n").expect("faketime");
    let lib = libfaketime();
    let env: [(&str, &std::ffi::OsStr); 4] = [
        ("LD_PRELOAD", lib.as_os_str()),
        ("FAKETIME_TIMESTAMP_FILE", spec.as_os_str()),
        ("FAKETIME_NO_CACHE", "1".as_ref()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".as_ref()),
    ];
    let (child, addr) = common::start_run_env(&pipeline, &input, None, &env);
    let server = Server { child, addr, key: gateway };
    server.until("ready", |s| s.json("/readyz").0 == 200);
    append(&input, &common::stuffing_lines("203.0.113.10", 40));
    server.until("deny before any step", |s| denied(s, "203.0.113.10"));

    let step = |to: &str| {
        std::fs::write(&spec, format!("{to}\n")).expect("faketime");
        // The engine reads its clock many times a second; let it see the step.
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    const MIN: i64 = 60_000;
    step("-30m");
    // The gateway on this host stamps with the stepped clock; one elsewhere does not.
    append(&input, &common::stuffing_lines_at("203.0.113.20", 40, -30 * MIN));
    server.until("deny from the stepped clock's lines", |s| denied(s, "203.0.113.20"));
    append(&input, &common::stuffing_lines("203.0.113.30", 40));
    server.until("deny from the correct clock's lines", |s| denied(s, "203.0.113.30"));
    let anomaly = |s: &Server, kind: &str| s.metric(&format!("gatewatch_input_anomalies_total{{kind=\"{kind}\"}}"));
    assert_eq!(anomaly(&server, "clock_shifted"), 40.0);
    assert_eq!(anomaly(&server, "future"), 0.0, "the correct clock's lines are not from the future");
    assert_eq!(anomaly(&server, "late"), 0.0);
    // In force in the host's (stepped) time, with the full TTL: it expires
    // before the deny made half an hour earlier by the host's clock (and a
    // few seconds earlier by a correct one) with the same rule and TTL.
    let expires = |ip: &str| {
        let (_, d) = server.json(&format!("/v1/decision?ip={ip}"));
        let at = d["expires_at"].as_str().unwrap_or_else(|| panic!("expires_at: {d}")).to_string();
        gatewatch::event::time::parse_rfc3339(&at).unwrap_or_else(|e| panic!("expires_at: {e}"))
    };
    let (before, stepped) = (expires("203.0.113.10"), expires("203.0.113.20"));
    assert!(stepped < before - 25 * MIN, "{stepped} vs {before}");

    // Forward to the right time again, then two hours ahead of it.
    step("+0");
    append(&input, &common::stuffing_lines("203.0.113.40", 40));
    server.until("deny after the clock is set right", |s| denied(s, "203.0.113.40"));
    step("+2h");
    append(&input, &common::stuffing_lines_at("203.0.113.50", 40, 120 * MIN));
    server.until("deny two hours on", |s| denied(s, "203.0.113.50"));
    assert_eq!(anomaly(&server, "clock_shifted"), 40.0, "only the stepped-back clock's lines were moved");
    assert_eq!(anomaly(&server, "future"), 0.0);
    assert_eq!(anomaly(&server, "late"), 0.0);
    assert_eq!(server.get("/healthz", &[]).0, 200);
}
