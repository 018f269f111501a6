//! Failure drills against a real `gatewatch run`: what happens to the
//! followed log under the tools that rotate and truncate it.

mod common;

use std::io::Write;

use common::{Server, create_key};

fn metric(server: &Server, name: &str) -> f64 {
    let (_, _, body) = server.get("/metrics", &[]);
    body.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
}

/// Lines the engine has taken in: parsed, or dead-lettered with a reason.
fn seen(server: &Server) -> f64 {
    metric(server, "gatewatch_events_total") + metric(server, "gatewatch_dead_letters_total")
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
    assert_eq!(metric(&server, "gatewatch_dead_letters_total"), 1.0, "the half line, with its reason");

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
    assert_eq!(metric(&server, "gatewatch_events_total"), 90.0);
}
