//! Connections to the decision API are bounded: a client that opens many and
//! sends half a header cannot hold the server, against a real `gatewatch run`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::connect_from;

/// `GET path` from `from`; the status, or `None` when the server closed the
/// connection without an answer.
fn get_from(from: &str, addr: &str, path: &str, key: &str) -> Option<u16> {
    let (code, _, _) = common::get_from(from, addr, path, &[("X-Api-Key", key)]);
    (code != 0).then_some(code)
}

fn metric(addr: &str, key: &str, name: &str) -> Option<f64> {
    let (_, _, body) = common::get_from("127.0.0.9", addr, "/metrics", &[("X-Api-Key", key)]);
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Opens `n` connections from `from` that each send half a request head.
fn half_heads(from: &str, addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = connect_from(from, addr).ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        })
        .collect()
}

fn with_api(pipeline: &std::path::Path, api: &str) {
    let mut s = std::fs::read_to_string(pipeline).expect("pipeline");
    s.push_str(&format!("[api]\n{api}\n"));
    std::fs::write(pipeline, s).expect("pipeline");
}

/// 300 half-open requests from one address, under a 256-file limit (the probe
/// that starved `/healthz`): the server keeps its descriptors, answers other
/// clients, counts what it refused, and keeps deciding.
#[test]
fn half_heads_cannot_exhaust_connections() {
    let (_dir, pipeline, input) = common::live_setup();
    with_api(&pipeline, "header_timeout = \"1h\"");
    let key = common::create_key(&pipeline, "gateway", "edge");
    let (child, addr) = common::start_run_with(&pipeline, &input, Some(256));
    let mut server = common::Server { child, addr: addr.clone(), key: key.clone() };
    server.until("ready", |s| s.json("/readyz").0 == 200);

    // 256 files, 128 kept for the engine: 128 connections, 32 per address.
    let held = half_heads("127.0.0.1", &addr, 300);
    common::until("the extra connections are refused", || {
        metric(&addr, &key, "gatewatch_api_connections_refused_total{limit=\"per_address\"}") == Some(268.0)
    });
    assert_eq!(get_from("127.0.0.2", &addr, "/healthz", &key), Some(200), "another client is served");

    // Fill the rest from three more addresses: the total limit holds too.
    let more: Vec<_> = ["127.0.0.3", "127.0.0.4", "127.0.0.5"].iter().map(|a| half_heads(a, &addr, 32)).collect();
    common::until("the server is full", || get_from("127.0.0.6", &addr, "/healthz", &key).is_none());
    let refused_total = metric(&addr, &key, "gatewatch_api_connections_refused_total{limit=\"total\"}");
    // The metrics request itself may be the one refused while full: read it after a slot frees.
    drop(more);
    common::until("slots come back when clients leave", || get_from("127.0.0.6", &addr, "/healthz", &key) == Some(200));
    assert!(refused_total.is_none_or(|n| n >= 1.0));
    assert!(metric(&addr, &key, "gatewatch_api_connections_refused_total{limit=\"total\"}").unwrap_or(0.0) >= 1.0);

    // The engine never lacked a file: a stuffing burst appended now is still denied.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .and_then(|mut f| f.write_all(common::stuffing_lines("203.0.113.66", 40).as_bytes()))
        .expect("append");
    // (From another address: 127.0.0.1 still holds all its slots.)
    common::until("the burst is denied", || {
        let (_, _, body) = common::get_from("127.0.0.8", &addr, "/v1/decision?ip=203.0.113.66", &[("X-Api-Key", &key)]);
        body.contains(r#""action":"deny""#)
    });
    drop(held);
    let status = server.signal("-TERM");
    assert!(status.success(), "clean shutdown with connections open");
}

/// A request head must arrive within `api.header_timeout`; once read, a
/// request may last as long as it needs (an event stream, a long poll).
#[test]
fn slow_heads_are_cut_off_but_streams_are_not() {
    let (_dir, pipeline, input) = common::live_setup();
    with_api(&pipeline, "header_timeout = \"1s\"");
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "edge");
    let gateway = server.key.clone();

    let mut stream = connect_from("127.0.0.1", &server.addr).expect("connect");
    write!(
        stream,
        "GET /v1/decisions/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nX-Api-Key: {gateway}\r\n\r\n"
    )
    .expect("send");
    let mut half = half_heads("127.0.0.1", &server.addr, 1).pop().expect("connects");
    let mut idle = connect_from("127.0.0.1", &server.addr).expect("connect");
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Api-Key: {gateway}\r\n\r\n").expect("send");

    // The half head is closed without an answer (an error or end of stream);
    // the kept-alive connection gets its answer, then is closed once idle.
    let mut buf = [0u8; 4096];
    assert!(matches!(half.read(&mut buf), Ok(0) | Err(_)), "a half head is cut off");
    let mut answered = Vec::new();
    let _ = idle.read_to_end(&mut answered);
    assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"), "the idle connection was answered first");

    // The stream, open for longer than the deadline, still delivers a change.
    let (code, _, _) = server.request(
        "POST",
        "/v1/admin/decisions",
        &[("X-Api-Key", &admin)],
        r#"{"entity_type":"user","entity":"mallory","action":"deny","ttl":"1h","reason":"test"}"#,
    );
    assert_eq!(code, 201);
    let mut seen = String::new();
    while !seen.contains("mallory") {
        let n = stream.read(&mut buf).expect("the stream stays open");
        assert!(n > 0, "the stream was closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Event-stream readers that never read cannot stall the others: their
/// streams wait on their own sockets while a reader that reads gets every
/// change, lookups answer, and memory stays bounded.
#[test]
fn readers_that_never_read_stall_nothing() {
    use std::io::BufRead;
    let (_dir, pipeline, input) = common::live_setup();
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "edge");
    let gateway = server.key.clone();
    let sse = format!(
        "GET /v1/decisions/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nX-Api-Key: {gateway}\r\n\r\n"
    );
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut s = connect_from(&format!("127.0.0.{}", 10 + i), &server.addr).expect("connect");
        s.write_all(sse.as_bytes()).expect("send");
        stalled.push(s);
    }
    let mut reader = connect_from("127.0.0.2", &server.addr).expect("connect");
    reader.write_all(sse.as_bytes()).expect("send");
    let counting = std::thread::spawn(move || {
        let mut created = 0;
        for line in std::io::BufReader::new(reader).lines() {
            if line.expect("the stream stays readable") == "event: created" {
                created += 1;
                if created == 60_000 {
                    break;
                }
            }
        }
        created
    });

    // 60,000 changes: far more than the stalled readers' socket buffers hold.
    for batch in 0..3 {
        let body: Vec<String> = (0..20_000)
            .map(|i| {
                format!(
                    r#"{{"entity_type":"ip","entity":"10.{batch}.{}.{}","action":"deny","ttl":"1h","reason":"block list"}}"#,
                    i / 256,
                    i % 256
                )
            })
            .collect();
        let (code, _, b) =
            server.request("POST", "/v1/admin/decisions", &[("X-Api-Key", &admin)], &format!("[{}]", body.join(",")));
        assert_eq!(code, 201, "{b}");
        assert_eq!(server.json("/v1/decision?ip=10.0.0.1").1["action"], "deny", "lookups answer meanwhile");
    }
    assert_eq!(counting.join().expect("reader"), 60_000, "the reading reader got every change");
    assert_eq!(common::get_from("127.0.0.3", &server.addr, "/healthz", &[]).0, 200);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).expect("status");
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    assert!(rss_kb < 1 << 20, "{rss_kb} KiB resident with 20 stalled readers");
    drop(stalled);
}
