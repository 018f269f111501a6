//! The change stream, CrowdSec compatibility, operator allowlist and rule
//! reload, against a real `gatewatch run`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Server, create_key};
use serde_json::{Value, json};

fn post(s: &Server, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, b) = s.request("POST", path, &[("X-Api-Key", key)], &body.to_string());
    (status, serde_json::from_str(&b).unwrap_or(Value::Null))
}

fn delete(s: &Server, key: &str, path: &str) -> (u16, Value) {
    let (status, _, b) = s.request("DELETE", path, &[("X-Api-Key", key)], "");
    (status, serde_json::from_str(&b).unwrap_or(Value::Null))
}

fn get(s: &Server, key: &str, path: &str) -> (u16, Value) {
    let (status, _, b) = s.request("GET", path, &[("X-Api-Key", key)], "");
    (status, serde_json::from_str(&b).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {b}")))
}

fn manual(entity_type: &str, entity: &str, action: &str) -> Value {
    json!({ "entity_type": entity_type, "entity": entity, "action": action, "ttl": "1h", "reason": "test" })
}

/// A reader's cache, kept from the stream the way a gateway would.
#[derive(Default)]
struct Follower {
    cursor: Option<u64>,
    cache: HashMap<(String, String), Value>,
    seqs: Vec<u64>,
    snapshots: usize,
}

impl Follower {
    fn path(&self, wait: &str) -> String {
        match self.cursor {
            Some(c) => format!("/v1/decisions/stream?cursor={c}&limit=50{wait}"),
            None => format!("/v1/decisions/stream?cursor=&limit=50{wait}"),
        }
    }

    /// Applies one answer; returns whether more is waiting.
    fn apply(&mut self, v: &Value) -> bool {
        let key =
            |d: &Value| (d["entity_type"].as_str().unwrap().to_string(), d["entity"].as_str().unwrap().to_string());
        if v["snapshot"] == true {
            self.snapshots += 1;
            self.cache.clear();
            for d in v["decisions"].as_array().expect("decisions") {
                self.cache.insert(key(d), d.clone());
            }
        } else {
            for c in v["changes"].as_array().expect("changes") {
                self.seqs.push(c["seq"].as_u64().expect("seq"));
                let d = &c["decision"];
                match c["kind"].as_str().expect("kind") {
                    "created" | "changed" => {
                        self.cache.insert(key(d), d.clone());
                    }
                    "deleted" | "expired" => {
                        self.cache.remove(&key(d));
                    }
                    k => panic!("unknown kind {k}"),
                }
            }
        }
        self.cursor = Some(v["cursor"].as_u64().expect("cursor"));
        v["more"] == true
    }
}

/// A form post's verdict for a request from 192.0.2.99 in `session`.
fn post_verdict(s: &Server, key: &str, session: &str) -> String {
    let (status, v) = get(s, key, &format!("/v1/decision?ip=192.0.2.99&method=POST&path=/login&session={session}"));
    assert_eq!(status, 200, "{v}");
    v["action"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_sessions_seen_opened_are_kept_across_a_restart() {
    let (dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let admin = create_key(&pipeline, "admin", "ops");
    let append = |line: String| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("append");
        f.write_all(line.as_bytes()).expect("write");
    };
    let mut server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    assert_eq!(post(&server, &admin, "/v1/admin/decisions", &manual("class", "bare-login", "challenge")).0, 201);
    append(common::form_opened_line("192.0.2.99", "ws-1"));
    server.until("the engine read the page", |s| s.metric("gatewatch_opened_sessions") == 1.0);
    assert_eq!(post_verdict(&server, &gateway, "ws-1"), "allow");
    assert!(server.signal("-TERM").success(), "a clean stop");
    assert!(dir.path().join("state").join(gatewatch::sessions::FILE).exists(), "saved at the stop");

    // The engine follows the log from its end: the page is not read again.
    // Another person opens a session, so the registry is not empty either way.
    let server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    append(common::form_opened_line("192.0.2.98", "ws-2"));
    server.until("the engine read the new page", |s| s.metric("gatewatch_events_total") == 1.0);
    assert_eq!(server.metric("gatewatch_opened_sessions"), 2.0, "ws-1 kept, ws-2 new");
    assert_eq!(post_verdict(&server, &gateway, "ws-1"), "allow", "a session opened before the restart");
    assert_eq!(post_verdict(&server, &gateway, "ws-2"), "allow");
    assert_eq!(post_verdict(&server, &gateway, "made-up"), "challenge", "the class decision outlived the restart");
}

/// A partner's secret used from another network right after a restart is
/// judged as anyone's: the networks the partner's key was learned at are
/// kept, so no new bootstrap begins that would take the thief's for home.
#[test]
fn a_confidential_clients_networks_are_kept_across_a_restart() {
    let (dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let append = |ip: &str, ts: i64| {
        let line = format!(
            r#"{{"ts":{ts},"client_ip":"{ip}","method":"POST","path":"/oauth/token","status":200,"api_key_id":"partner-x","grant_type":"client_credentials","auth_result":"ok"}}"#
        );
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("append");
        f.write_all(format!("{line}\n").as_bytes()).expect("write");
    };
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let mut server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    // The partner's server, for a quarter of an hour.
    let start = now() - 15 * 60_000;
    for m in 0..15 {
        append("203.0.113.10", start + m * 60_000);
    }
    server.until("the engine read the partner", |s| s.metric("gatewatch_events_total") == 15.0);
    assert_eq!(server.metric("gatewatch_confidential_away_total"), 0.0);
    assert!(server.signal("-TERM").success(), "a clean stop");
    assert!(dir.path().join("state").join(gatewatch::features::homes::FILE).exists(), "saved at the stop");

    // After the restart the secret is used from somewhere else.
    let server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    append("198.51.100.66", now());
    server.until("the engine read the thief", |s| s.metric("gatewatch_events_total") == 1.0);
    assert_eq!(server.metric("gatewatch_confidential_away_total"), 1.0, "judged as anyone's, not learned as home");
}

#[test]
fn stream_misses_nothing_and_repeats_nothing_under_concurrent_writers() {
    let (dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let admin = create_key(&pipeline, "admin", "ops");
    let server = Arc::new(Server::start(&pipeline, &input, &gateway));
    server.until("ready", |s| s.json("/readyz").0 == 200);

    // Decisions that exist before the reader starts arrive in its snapshot.
    for i in 0..5 {
        assert_eq!(post(&server, &admin, "/v1/admin/decisions", &manual("ip", &format!("192.0.2.{i}"), "deny")).0, 201);
    }
    let mut f = Follower::default();
    let (status, v) = get(&server, &gateway, &f.path(""));
    assert_eq!(status, 200, "{v}");
    f.apply(&v);
    assert_eq!((f.snapshots, f.cache.len()), (1, 5));

    // Four writers create, replace and delete decisions over HTTP while the reader long-polls.
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (server, admin) = (server.clone(), admin.clone());
            std::thread::spawn(move || {
                for i in 0..60 {
                    let ip = format!("198.51.{w}.{}", i % 17);
                    if i % 4 == 3 {
                        delete(&server, &admin, &format!("/v1/admin/decisions?entity_type=ip&entity={ip}"));
                    } else {
                        let action = if i % 2 == 0 { "deny" } else { "challenge" };
                        assert_eq!(post(&server, &admin, "/v1/admin/decisions", &manual("ip", &ip, action)).0, 201);
                    }
                }
            })
        })
        .collect();
    let reader = {
        let (server, gateway, done) = (server.clone(), gateway.clone(), done.clone());
        std::thread::spawn(move || {
            let mut polls = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let (status, v) = get(&server, &gateway, &f.path("&wait=2"));
                assert_eq!(status, 200, "{v}");
                let more = f.apply(&v);
                polls += 1;
                if finished && !more {
                    return (f, polls);
                }
            }
        })
    };
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    let (f, polls) = reader.join().expect("reader");
    assert_eq!(f.snapshots, 1, "one snapshot at the start, changes after");
    let first = f.seqs[0];
    let want: Vec<u64> = (first..first + f.seqs.len() as u64).collect();
    assert_eq!(f.seqs, want, "sequence numbers consecutive: nothing missed, nothing twice");
    let (_, truth) = get(&server, &admin, "/v1/admin/decisions");
    let truth: HashMap<_, _> = truth["decisions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| {
            ((d["entity_type"].as_str().unwrap().to_string(), d["entity"].as_str().unwrap().to_string()), d.clone())
        })
        .collect();
    assert_eq!(f.cache, truth, "the reader's cache equals the server's decisions");
    eprintln!("{} changes over {polls} polls", f.seqs.len());

    // Bad cursors and parameters.
    for path in [
        "/v1/decisions/stream?cursor=abc",
        "/v1/decisions/stream?cursor=1&limit=0",
        "/v1/decisions/stream?cursor=1&wait=3600",
        "/v1/decisions/stream?cursor=1&planet=mars",
        "/v1/decisions/stream?startup=maybe",
    ] {
        let (status, v) = get(&server, &gateway, path);
        assert_eq!(status, 400, "{path}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // A cursor from the future (another store) gets a snapshot, not an error.
    let (_, v) = get(&server, &gateway, "/v1/decisions/stream?cursor=99999999");
    assert_eq!(v["snapshot"], true);
    assert_eq!(server.request("GET", "/v1/decisions/stream?cursor=1", &[], "").0, 401);
    drop(dir);
}

#[test]
fn server_sent_events_deliver_each_change() {
    let (_dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let admin = create_key(&pipeline, "admin", "ops");
    let mut server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    post(&server, &admin, "/v1/admin/decisions", &manual("user", "mallory", "deny"));

    let mut sock = std::net::TcpStream::connect(&server.addr).expect("connect");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
    write!(
        sock,
        "GET /v1/decisions/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nX-Api-Key: {gateway}\r\n\r\n"
    )
    .expect("send");
    let mut r = BufReader::new(sock.try_clone().expect("clone"));
    let mut events: Vec<(String, String, Value)> = Vec::new();
    let (mut event, mut id) = (String::new(), String::new());
    let mut line = String::new();
    let mut posted = false;
    while events.len() < 3 {
        line.clear();
        r.read_line(&mut line).expect("SSE line");
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("event: ").or_else(|| l.strip_prefix("event:")) {
            event = v.trim().into();
        } else if let Some(v) = l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")) {
            id = v.trim().into();
        } else if let Some(v) = l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:"))
            && let Ok(data) = serde_json::from_str::<Value>(v.trim())
        {
            events.push((event.clone(), id.clone(), data));
        }
        if events.len() == 1 && !posted {
            posted = true;
            post(&server, &admin, "/v1/admin/decisions", &manual("device", "farm-1", "challenge"));
            delete(&server, &admin, "/v1/admin/decisions?entity_type=user&entity=mallory");
        }
    }
    drop(r);
    let _ = sock.shutdown(std::net::Shutdown::Both);
    assert_eq!(events[0].0, "snapshot");
    assert_eq!(events[0].2["decisions"][0]["entity"], "mallory");
    assert_eq!((events[1].0.as_str(), events[1].2["entity"].as_str()), ("created", Some("farm-1")));
    assert_eq!((events[2].0.as_str(), events[2].2["entity"].as_str()), ("deleted", Some("mallory")));
    let ids: Vec<u64> = events.iter().map(|e| e.1.parse().expect("numeric id")).collect();
    assert_eq!(ids[2], ids[1] + 1);
    assert_eq!(ids[1], ids[0] + 1, "the snapshot's id is the cursor the changes continue from");

    // A long poll with nothing new answers with the same cursor when the wait ends.
    let (_, v) = get(&server, &gateway, &format!("/v1/decisions/stream?cursor={}&wait=1", ids[2]));
    assert_eq!((v["cursor"].as_u64(), v["changes"].as_array().map(Vec::len)), (Some(ids[2]), Some(0)));

    // SIGTERM with an event stream and a long poll open: both end, the server exits 0 (it
    // would otherwise wait for them for as long as they last).
    let mut sse = std::net::TcpStream::connect(&server.addr).expect("connect");
    write!(sse, "GET /v1/decisions/stream?cursor={} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nX-Api-Key: {gateway}\r\n\r\n", ids[2])
        .expect("send");
    let poll = {
        let (addr, key, cursor) = (server.addr.clone(), gateway.clone(), ids[2]);
        std::thread::spawn(move || {
            common::http(
                &addr,
                "GET",
                &format!("/v1/decisions/stream?cursor={cursor}&wait=60"),
                &[("X-Api-Key", &key)],
                "",
            )
            .0
        })
    };
    server.until("both readers are waiting", |s| {
        let (_, _, m) = s.get("/metrics", &[]);
        m.lines().any(|l| l == "gatewatch_stream_readers 2")
    });
    let ok = std::process::Command::new("kill").arg("-TERM").arg(server.child.id().to_string()).status().expect("kill");
    assert!(ok.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = server.child.try_wait().expect("try_wait") {
            break st;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "shutdown waited on the open streams");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
    assert_eq!(poll.join().expect("poll"), 200, "the long poll was answered, not cut");
    let mut rest = Vec::new();
    let _ = sse.read_to_end(&mut rest);
}

/// The filters CrowdSec bouncers send work on the cursor protocol too: a
/// gateway that caches only addresses and ranges reads only those, and its
/// cursor still moves past the rest.
#[test]
fn cursor_protocol_takes_the_crowdsec_filters() {
    let (_dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let admin = create_key(&pipeline, "admin", "ops");
    let server = Arc::new(Server::start(&pipeline, &input, &gateway));
    server.until("ready", |s| s.json("/readyz").0 == 200);
    let (_, v) = get(&server, &gateway, "/v1/decisions/stream?cursor=");
    let start = v["cursor"].as_u64().expect("cursor");
    post(&server, &admin, "/v1/admin/decisions", &manual("ip", "192.0.2.10", "deny"));
    post(&server, &admin, "/v1/admin/decisions", &manual("user", "mallory", "deny"));
    post(&server, &admin, "/v1/admin/decisions", &manual("cidr", "198.51.100.0/24", "challenge"));
    let entities = |v: &Value| -> Vec<String> {
        v["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .map(|c| c["decision"]["entity"].as_str().unwrap().into())
            .collect()
    };

    let (_, v) = get(&server, &gateway, &format!("/v1/decisions/stream?cursor={start}&scopes=Ip,Range"));
    assert_eq!(entities(&v), ["192.0.2.10", "198.51.100.0/24"], "{v}");
    let end = v["cursor"].as_u64().expect("cursor");
    assert_eq!(end, start + 3, "the cursor moves past the change left out");
    let (_, v) = get(&server, &gateway, &format!("/v1/decisions/stream?cursor={start}&scopes=user"));
    assert_eq!(entities(&v), ["mallory"]);
    let (_, v) =
        get(&server, &gateway, &format!("/v1/decisions/stream?cursor={start}&scenarios_containing=nothing-like-it"));
    assert_eq!((entities(&v).len(), v["cursor"].as_u64()), (0, Some(end)));

    // A long poll that only a filtered-out change would end waits on and
    // answers with the cursor past it.
    let waiter = {
        let (server, gateway) = (server.clone(), gateway.clone());
        std::thread::spawn(move || {
            get(&server, &gateway, &format!("/v1/decisions/stream?cursor={end}&scopes=User&wait=2"))
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    post(&server, &admin, "/v1/admin/decisions", &manual("ip", "192.0.2.11", "deny"));
    let (status, v) = waiter.join().expect("long poll");
    assert_eq!((status, entities(&v).len(), v["cursor"].as_u64()), (200, 0, Some(end + 1)), "{v}");

    // startup=true: a snapshot whatever the cursor, filtered too.
    let (_, v) = get(&server, &gateway, &format!("/v1/decisions/stream?cursor={end}&startup=true&scopes=Range"));
    assert_eq!(v["snapshot"], true);
    let snap: Vec<&str> =
        v["decisions"].as_array().expect("decisions").iter().filter_map(|d| d["entity"].as_str()).collect();
    assert_eq!(snap, ["198.51.100.0/24"]);

    // Every parameter given is checked, even one another makes moot.
    for (path, headers) in [
        (format!("/v1/decisions/stream?cursor={end}"), vec![("Last-Event-ID", "abc")]),
        ("/v1/decisions/stream?cursor=18446744073709551615".to_string(), vec![]),
        ("/v1/decisions/stream?community_pull=null".to_string(), vec![]),
        ("/v1/decisions?contains=maybe".to_string(), vec![]),
        ("/v1/decisions?ip=192.0.2.10&range=bogus".to_string(), vec![]),
        ("/v1/decisions?ip=192.0.2.10&scope=Planet".to_string(), vec![]),
    ] {
        let mut h = vec![("X-Api-Key", gateway.as_str())];
        h.extend(headers);
        let (status, _, body) = server.request("GET", &path, &h, "");
        assert_eq!(status, 400, "{path}: {body}");
    }
    // Deleting what cannot exist is "nothing there", not a syntax error.
    assert_eq!(delete(&server, &admin, "/v1/admin/decisions?entity_type=ip&entity=not-an-address").0, 404);
    assert_eq!(delete(&server, &admin, "/v1/admin/allowlist?kind=ip&value=not-an-address").0, 404);
    assert_eq!(delete(&server, &admin, "/v1/admin/allowlist?kind=planet&value=x").0, 400);
    assert_eq!(delete(&server, &admin, "/v1/admin/decisions?entity_type=ip&entity=%20").0, 400);
}

#[test]
fn crowdsec_bouncer_protocol() {
    let (_dir, pipeline, input) = common::live_setup();
    let bouncer = create_key(&pipeline, "gateway", "crowdsec-firewall");
    let admin = create_key(&pipeline, "admin", "ops");
    let server = Server::start(&pipeline, &input, &bouncer);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    post(&server, &admin, "/v1/admin/decisions", &manual("ip", "192.0.2.10", "deny"));
    post(&server, &admin, "/v1/admin/decisions", &manual("cidr", "198.51.100.0/24", "challenge"));
    post(&server, &admin, "/v1/admin/decisions", &manual("user", "mallory", "deny"));
    // A decision on a request class is for gateways that pass the request
    // on; a bouncer, asking about addresses, is never given one.
    post(&server, &admin, "/v1/admin/decisions", &manual("class", "bare-login", "challenge"));

    // Live mode.
    let (status, v) = get(&server, &bouncer, "/v1/decisions?ip=192.0.2.10");
    assert_eq!(status, 200);
    let d = &v[0];
    assert_eq!(
        (d["type"].as_str(), d["scope"].as_str(), d["value"].as_str()),
        (Some("ban"), Some("Ip"), Some("192.0.2.10"))
    );
    assert_eq!(d["origin"], "cscli");
    assert!(d["duration"].as_str().is_some_and(|s| s.ends_with('s') && s.contains('m')), "{d}");
    assert!(d["id"].as_u64().is_some() && d["scenario"].as_str().is_some());
    let (_, v) = get(&server, &bouncer, "/v1/decisions?ip=198.51.100.77");
    assert_eq!((v[0]["type"].as_str(), v[0]["scope"].as_str()), (Some("captcha"), Some("Range")));
    assert_eq!(get(&server, &bouncer, "/v1/decisions?ip=203.0.113.1").1, Value::Null, "nothing applies: null");
    let (_, v) = get(&server, &bouncer, "/v1/decisions?scope=user&value=mallory");
    assert_eq!(v[0]["value"], "mallory");
    assert_eq!(get(&server, &bouncer, "/v1/decisions?ip=192.0.2.10&type=captcha").1, Value::Null);
    for path in [
        "/v1/decisions?ip=nope",
        "/v1/decisions?range=1.2.3.4/99",
        "/v1/decisions?scope=Planet",
        "/v1/decisions?type=kill",
    ] {
        let (status, v) = get(&server, &bouncer, path);
        assert_eq!(status, 400, "{path}: {v}");
    }
    assert_eq!(server.request("GET", "/v1/decisions?ip=192.0.2.10", &[], "").0, 401);
    let (_, v) = get(&server, &bouncer, "/v1/decisions");
    let scopes: Vec<&str> = v.as_array().expect("all").iter().filter_map(|d| d["scope"].as_str()).collect();
    assert_eq!(scopes.len(), 3, "{v}");
    assert!(!scopes.contains(&"Class"), "{v}");
    // The gateway's own routes enforce it, told the method and path: the
    // verdict route by parameters, forward-auth by Traefik's and Caddy's headers.
    let verdict = |q: &str| get(&server, &bouncer, &format!("/v1/decision?ip=192.0.2.99&{q}")).1["action"].clone();
    assert_eq!(verdict("method=POST&path=/login%3Fnext%3D%2F"), "challenge");
    // A session id counts once the engine has seen the session opened: a
    // made-up one leaves the post in the class. Until the log has opened
    // any session (a log without session ids) the header is all there is.
    assert_eq!(verdict("method=POST&path=/login&session=ws-1"), "allow", "no session opened in the log yet");
    {
        use std::io::Write;
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
        let ts = gatewatch::event::time::format_rfc3339(ms);
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("append");
        // The form opened in ws-1; ws-2 only ever failed a password.
        writeln!(f, r#"{{"ts":"{ts}","client_ip":"192.0.2.99","method":"GET","path":"/login","status":200,"session_id":"ws-1"}}"#)
            .expect("write");
        writeln!(
            f,
            r#"{{"ts":"{ts}","client_ip":"192.0.2.98","method":"POST","path":"/login","status":401,"session_id":"ws-2","auth_result":"invalid_credentials"}}"#
        )
        .expect("write");
    }
    server.until("the engine read the page", |s| s.metric("gatewatch_events_total") >= 2.0);
    assert_eq!(verdict("method=POST&path=/login&session=ws-1"), "allow", "a person opened the form first");
    assert_eq!(verdict("method=POST&path=/login&session=ws-2"), "challenge", "a session that only failed");
    assert_eq!(verdict("method=POST&path=/login&session=ws-3"), "challenge", "a session id nobody opened");
    assert_eq!(server.metric("gatewatch_unopened_session_posts_total"), 2.0, "made-up session ids are counted");
    assert_eq!(server.metric("gatewatch_opened_sessions"), 1.0, "ws-1 is held, ws-2 is not");
    assert_eq!(verdict("method=GET&path=/login"), "allow");
    assert_eq!(verdict("path=/login"), "allow", "without the method nothing is known of the class");
    let authz = |uri: &str, session: Option<&str>| {
        let mut h = vec![
            ("X-Api-Key", bouncer.as_str()),
            ("X-Forwarded-For", "192.0.2.99"),
            ("X-Forwarded-Method", "POST"),
            ("X-Forwarded-Uri", uri),
        ];
        if let Some(s) = session {
            h.push(("X-Session-Id", s));
        }
        let (status, headers, _) = server.request("GET", "/v1/authz", &h, "");
        let action = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-gatewatch-action")).map(|(_, v)| v.clone());
        (status, action.unwrap_or_default())
    };
    assert_eq!(authz("/LOGIN/", None), (403, "challenge".to_string()));
    assert_eq!(authz("/login", Some("made-up")), (403, "challenge".to_string()));
    // Behind a gateway that sets one pair, a client cannot take its post out
    // of the class with the other pair.
    let (status, _, _) = server.request(
        "GET",
        "/v1/authz",
        &[
            ("X-Api-Key", bouncer.as_str()),
            ("X-Forwarded-For", "192.0.2.99"),
            ("X-Original-Method", "GET"),
            ("X-Original-URI", "/"),
            ("X-Forwarded-Method", "POST"),
            ("X-Forwarded-Uri", "/login"),
        ],
        "",
    );
    assert_eq!(status, 403, "the client's own X-Original-* hid the form post");
    assert_eq!(authz("/login", Some("ws-1")), (200, "allow".to_string()));
    assert_eq!(authz("/v1/orders", None), (200, "allow".to_string()));
    // Envoy's HTTP ext_authz asks with the request's own method at its
    // path_prefix followed by the request's path (README: `/v1/authz?`).
    let envoy = |method: &str, path: &str, session: Option<&str>| {
        let mut h = vec![("X-Api-Key", bouncer.as_str()), ("X-Forwarded-For", "192.0.2.99")];
        if let Some(s) = session {
            h.push(("X-Session-Id", s));
        }
        server.request(method, &format!("/v1/authz?{path}"), &h, "").0
    };
    assert_eq!(envoy("POST", "/login?next=%2Fcart", None), 403, "Envoy: the form posted without a session");
    assert_eq!(envoy("POST", "/login", Some("made-up")), 403, "Envoy: with a made-up session");
    assert_eq!(envoy("POST", "/login", Some("ws-1")), 200, "Envoy: a person's post");
    assert_eq!(envoy("GET", "/login", None), 200, "Envoy: opening the form");
    for method in ["POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
        assert_eq!(envoy(method, "/v1/orders/1", None), 200, "Envoy: {method} of another path");
    }
    assert_eq!(envoy("TRACE", "/v1/orders/1", None), 405, "not a method of an API");

    // Stream mode: startup sends what is in force (default scopes ip,range), then only changes.
    let (_, v) = get(&server, &bouncer, "/v1/decisions/stream?startup=true");
    let values: Vec<&str> = v["new"].as_array().expect("new").iter().map(|d| d["value"].as_str().unwrap()).collect();
    assert_eq!(values.len(), 2, "{v}");
    assert!(values.contains(&"192.0.2.10") && values.contains(&"198.51.100.0/24"));
    assert_eq!(v["deleted"], json!([]));
    let (_, v) = get(&server, &bouncer, "/v1/decisions/stream");
    assert_eq!((v["new"].as_array().map(Vec::len), v["deleted"].as_array().map(Vec::len)), (Some(0), Some(0)));
    post(&server, &admin, "/v1/admin/decisions", &manual("ip", "192.0.2.11", "deny"));
    delete(&server, &admin, "/v1/admin/decisions?entity_type=ip&entity=192.0.2.10");
    // A manual allow replacing a block reaches the bouncer as the block's deletion.
    post(&server, &admin, "/v1/admin/decisions", &manual("cidr", "198.51.100.0/24", "allow"));
    let (_, v) = get(&server, &bouncer, "/v1/decisions/stream");
    assert_eq!(
        v["new"].as_array().map(|a| a.iter().map(|d| d["value"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("192.0.2.11")])
    );
    let mut deleted: Vec<&str> =
        v["deleted"].as_array().expect("deleted").iter().map(|d| d["value"].as_str().unwrap()).collect();
    deleted.sort();
    assert_eq!(deleted, vec!["192.0.2.10", "198.51.100.0/24"], "{v}");
    let (_, v) = get(&server, &bouncer, "/v1/decisions/stream?scopes=user");
    assert_eq!(v["new"], json!([]), "no change since the last pull");
    let (_, v) = get(&server, &bouncer, "/v1/decisions/stream?startup=true&scopes=user,ip");
    assert_eq!(v["new"].as_array().map(Vec::len), Some(2), "{v}");
}

#[test]
fn operator_allowlist_and_rule_reload() {
    let (dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let admin = create_key(&pipeline, "admin", "ops");
    let mut server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    post(&server, &admin, "/v1/admin/decisions", &manual("cidr", "203.0.113.0/24", "deny"));
    assert_eq!(server.json("/v1/decision?ip=203.0.113.9").1["action"], "deny");

    // A block list in one request: all or nothing, errors name the item.
    let list =
        json!([manual("ip", "192.0.2.51", "deny"), manual("ip", "300.1.1.1", "deny"), manual("user", "eve", "deny")]);
    let (status, v) = post(&server, &admin, "/v1/admin/decisions", &list);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().expect("error").starts_with("decisions[1].entity"), "{v}");
    assert_eq!(server.json("/v1/decision?ip=192.0.2.51").1["action"], "allow", "nothing stored");
    let list =
        json!([manual("ip", "192.0.2.51", "deny"), manual("ip", "192.0.2.52", "deny"), manual("user", "eve", "deny")]);
    let (status, v) = post(&server, &admin, "/v1/admin/decisions", &list);
    assert_eq!((status, v["created"].as_u64()), (201, Some(3)), "{v}");
    assert_eq!(server.json("/v1/decision?ip=192.0.2.52").1["action"], "deny");
    assert_eq!(post(&server, &admin, "/v1/admin/decisions", &json!([])).0, 400);

    // Allowlist an address: it is allowed despite the block; others in the /24 are not.
    let (status, v) = post(
        &server,
        &admin,
        "/v1/admin/allowlist",
        &json!({"kind": "ip", "value": "203.0.113.9", "reason": "office"}),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!((v["value"].as_str(), v["added_by"].as_str()), (Some("203.0.113.9/32"), Some("ops")));
    assert_eq!(server.json("/v1/decision?ip=203.0.113.9").1["action"], "allow");
    assert_eq!(server.json("/v1/decision?ip=203.0.113.10").1["action"], "deny");
    let (_, v) = get(&server, &admin, "/v1/admin/allowlist");
    assert_eq!(v["entries"][0]["reason"], "office");
    assert!(v["pipeline"]["crawlers"].as_array().is_some_and(|c| !c.is_empty()), "the file's own entries are listed");
    for (body, what) in [
        (json!({"kind": "planet", "value": "x", "reason": "r"}), "kind"),
        (json!({"kind": "cidr", "value": "not-a-net", "reason": "r"}), "value"),
        (json!({"kind": "cidr", "value": "192.0.2.0/24", "reason": ""}), "reason"),
        (json!({"kind": "cidr", "value": "192.0.2.0/24"}), "missing reason"),
    ] {
        let (status, v) = post(&server, &admin, "/v1/admin/allowlist", &body);
        assert_eq!(status, 400, "{what}: {v}");
    }
    assert_eq!(
        post(&server, &gateway, "/v1/admin/allowlist", &json!({"kind": "ip", "value": "1.1.1.1", "reason": "r"})).0,
        403
    );
    let crawler_net = v["pipeline"]["crawlers"][0]["cidrs"][0].as_str().expect("crawler net").to_string();
    let (status, v) = delete(&server, &admin, &format!("/v1/admin/allowlist?kind=cidr&value={crawler_net}"));
    assert_eq!(status, 404, "crawler networks are not plain entries: {v}");
    assert_eq!(delete(&server, &admin, "/v1/admin/allowlist?kind=cidr&value=192.0.2.0/24").0, 404);

    // Entries survive a restart.
    assert!(server.signal("-TERM").success());
    let server2 = Server::start(&pipeline, &input, &gateway);
    server2.until("ready", |s| s.json("/readyz").0 == 200);
    assert_eq!(server2.json("/v1/decision?ip=203.0.113.9").1["action"], "allow");
    let (status, _) = delete(&server2, &admin, "/v1/admin/allowlist?kind=ip&value=203.0.113.9");
    assert_eq!(status, 200);
    assert_eq!(server2.json("/v1/decision?ip=203.0.113.9").1["action"], "deny");

    // Reload: a rule added to the file starts deciding without a restart.
    let quiet_lines = |ip: &str, n: usize| -> String {
        common::stuffing_lines(ip, n).replace("\"status\":401", "\"status\":200").replace("invalid_credentials", "ok")
    };
    let append = |s: &str| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("append");
        f.write_all(s.as_bytes()).expect("write");
    };
    append(&quiet_lines("192.0.2.200", 8));
    let (_, before) = get(&server2, &admin, "/v1/admin/decisions?entity=192.0.2.200");
    assert_eq!(before["decisions"], json!([]));
    let rule = "\n[[rules]]\nname = \"busy-login-ip\"\nentity = \"ip\"\nwhen = \"login_attempts_10m >= 10\"\naction = \"challenge\"\nttl = \"5m\"\nreason = \"many logins\"\n";
    let mut f = std::fs::OpenOptions::new().append(true).open(&pipeline).expect("pipeline");
    f.write_all(rule.as_bytes()).expect("write");
    drop(f);
    let (status, v) = post(&server2, &admin, "/v1/admin/reload", &json!({}));
    assert_eq!(status, 200, "{v}");
    // The file's [[rules]] replace the base file's (sections are taken whole from the first file defining them).
    assert_eq!(v["rules"], json!(["busy-login-ip"]), "{v}");
    assert_eq!(v["needs_restart"], json!([]), "{v}");
    append(&quiet_lines("192.0.2.200", 8));
    server2.until("the reloaded rule decides", |s| {
        s.json("/v1/decision?ip=192.0.2.200").1["source"] == "rule:busy-login-ip"
    });

    // A broken file is refused with where it is broken; the running rules stay.
    let good = std::fs::read_to_string(&pipeline).expect("read");
    std::fs::write(&pipeline, good.replace("login_attempts_10m >= 10", "login_attempts_10m >>= 10")).expect("write");
    let (status, v) = post(&server2, &admin, "/v1/admin/reload", &json!({}));
    assert_eq!(status, 422, "{v}");
    let msg = v["error"].as_str().expect("error");
    assert!(msg.contains("busy-login-ip") || msg.contains("live.toml"), "{msg}");
    std::fs::write(&pipeline, good.replace("[state]", "[state]\nplanet = 1")).expect("write");
    let (status, v) = post(&server2, &admin, "/v1/admin/reload", &json!({}));
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().expect("error").contains("live.toml"), "{v}");
    assert_eq!(post(&server2, &gateway, "/v1/admin/reload", &json!({})).0, 403);
    append(&common::stuffing_lines("192.0.2.201", 40));
    server2.until("the running rules still decide", |s| {
        s.json("/v1/decision?ip=192.0.2.201").1["source"] == "rule:busy-login-ip"
    });
    drop(dir);
}

#[test]
fn sighup_reloads() {
    let (_dir, pipeline, input) = common::live_setup();
    let gateway = create_key(&pipeline, "gateway", "edge");
    let mut server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    let ok = std::process::Command::new("kill").arg("-HUP").arg(server.child.id().to_string()).status().expect("kill");
    assert!(ok.success());
    server.until("reload counted", |s| {
        let (_, _, body) = s.get("/metrics", &[]);
        body.lines().any(|l| l.starts_with("gatewatch_reloads_total 1"))
    });
    assert!(server.signal("-TERM").success());
    let mut rest = String::new();
    let _ = server.child.stdout.take().map(|mut o| o.read_to_string(&mut rest));
}

#[test]
fn models_ship_without_a_restart_and_a_bad_one_is_refused() {
    let (dir, pipeline, input) = common::live_setup();
    // The pipeline scores with its own copy of the shipped classifier.
    let model_dir = dir.path().join("models/ip-classifier");
    std::fs::create_dir_all(&model_dir).expect("dir");
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ip-classifier/model.json"),
    )
    .expect("shipped model");
    std::fs::write(model_dir.join("model.json"), &shipped).expect("copy");
    let version = serde_json::from_str::<serde_json::Value>(&shipped).expect("model.json")["version"]
        .as_str()
        .expect("version")
        .to_string();
    let (v1, v2) = (format!("ip-classifier@{version}"), format!("ip-classifier@{version}-next"));
    let mut f = std::fs::OpenOptions::new().append(true).open(&pipeline).expect("pipeline");
    f.write_all(b"\n[[models]]\npath = \"models/ip-classifier\"\nentity = \"ip\"\nttl = \"10m\"\n").expect("write");
    drop(f);
    let gateway = create_key(&pipeline, "gateway", "edge");
    let admin = create_key(&pipeline, "admin", "ops");
    let server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    let in_force = |s: &Server| -> Vec<String> {
        let (_, v) = get(s, &admin, "/v1/admin/models");
        v["models"].as_array().expect("models").iter().map(|m| m["model"].as_str().unwrap_or("").to_string()).collect()
    };
    let metric = |s: &Server, id: &str| {
        let (_, _, m) = s.get("/metrics", &[]);
        m.lines().any(|l| {
            l.starts_with("gatewatch_model_info") && l.contains(&format!("model=\"{id}\"")) && l.ends_with(" 1")
        })
    };
    assert_eq!(in_force(&server), vec![v1.clone()]);
    assert!(metric(&server, &v1));
    assert_eq!(post(&server, &admin, "/v1/admin/models/rollback", &json!({})).0, 409, "nothing to roll back to yet");

    // A corrupt file: refused with why, the running model stays.
    std::fs::write(model_dir.join("model.json"), &shipped[..shipped.len() / 2]).expect("corrupt");
    let (status, v) = post(&server, &admin, "/v1/admin/reload", &json!({}));
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().expect("error").contains("not a gatewatch model file"), "{v}");
    assert_eq!(in_force(&server), vec![v1.clone()]);
    // An incompatible one (a feature this build does not have): refused too.
    std::fs::write(model_dir.join("model.json"), shipped.replace("\"iat_cv\"", "\"iat_mystery\"")).expect("write");
    let (status, v) = post(&server, &admin, "/v1/admin/reload", &json!({}));
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().expect("error").contains("iat_mystery"), "{v}");

    // The next version ships with a reload; rollback restores the shipped one.
    let next = shipped.replace(&format!("\"version\": \"{version}\""), &format!("\"version\": \"{version}-next\""));
    assert_ne!(next, shipped);
    std::fs::write(model_dir.join("model.json"), next).expect("next");
    let (status, v) = post(&server, &admin, "/v1/admin/reload", &json!({}));
    assert_eq!((status, v["models"].clone()), (200, json!([v2.clone()])), "{v}");
    assert_eq!(in_force(&server), vec![v2.clone()]);
    assert!(metric(&server, &v2) && !metric(&server, &v1));
    let (status, v) = post(&server, &admin, "/v1/admin/models/rollback", &json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(in_force(&server), vec![v1.clone()]);
    assert!(metric(&server, &v1));
    assert_eq!(get(&server, &gateway, "/v1/admin/models").0, 403);
}
