//! A real nginx in front of an upstream, asking `gatewatch run` through
//! `auth_request` (the configuration the README shows): the attacker gets 403
//! once its traffic reaches the followed log, a benign client keeps getting
//! 200, and a manual allow lifts the block.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{Proc, subst};

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let (status, _, body) = common::http(addr, method, path, headers, body);
    (status, body)
}

/// The README's nginx block, with this test's ports, key and upstream, in an
/// `http` block with this test's paths.
fn nginx_conf(dir: &Path, port: u16, upstream: u16, gatewatch: &str, key: &str) -> String {
    let d = dir.display();
    let block = common::readme_block("nginx", "auth_request");
    // This nginx sits behind a "load balancer" on 127.0.0.1 that sets X-Forwarded-For.
    let block = subst(&block, "set_real_ip_from 10.0.0.0/8;", "set_real_ip_from 127.0.0.1;");
    let block = subst(&block, "listen 443 ssl;", &format!("listen 127.0.0.1:{port};"));
    let block = subst(&block, "http://127.0.0.1:8790", &format!("http://{gatewatch}"));
    let block = subst(&block, "gw_…", key);
    let block = subst(&block, "http://app", &format!("http://127.0.0.1:{upstream}"));
    format!(
        r#"master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/nginx-access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

{block}
    server {{
        listen 127.0.0.1:{upstream};
        location / {{ return 200 "upstream ok\n"; }}
    }}
}}
"#
    )
}

#[test]
fn nginx_auth_request_blocks_the_attacker_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("tmp")).expect("mkdir");
    let pipeline = common::live_pipeline(d);
    let log = d.join("access.log");
    std::fs::write(&log, "").expect("log");
    let key = common::gatewatch(&pipeline, &["keys", "create", "--role", "gateway", "--name", "edge-nginx"]);
    let admin = common::gatewatch(&pipeline, &["keys", "create", "--role", "admin", "--name", "ops"]);

    let (gw, gw_addr) = common::start_run(&pipeline, &log);
    let _gw = Proc(gw);

    let [port, upstream] = common::free_ports();
    std::fs::write(d.join("nginx.conf"), nginx_conf(d, port, upstream, &gw_addr, &key)).expect("conf");
    let mut nginx = Proc::spawn(
        Command::new("nginx")
            .arg("-e")
            .arg(d.join("nginx-error.log"))
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .args(["-g", "daemon off;"]),
        &d.join("nginx.log"),
        "nginx is installed (scripts/services/nginx.sh)",
    );
    let front = format!("127.0.0.1:{port}");
    nginx.until_listening(&front, &d.join("nginx-error.log"));

    let attacker = [("X-Forwarded-For", "203.0.113.77")];
    let benign = [("X-Forwarded-For", "198.51.100.20")];
    let (status, body) = http(&front, "GET", "/v1/products/1", &attacker, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("upstream ok"));

    // The attack reaches the log gatewatch follows.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).expect("append");
    f.write_all(common::stuffing_lines("203.0.113.77", 40).as_bytes()).expect("write");
    f.flush().expect("flush");
    common::until("nginx answers 403 to the attacker", || {
        http(&front, "GET", "/v1/products/1", &attacker, "").0 == 403
    });
    assert_eq!(http(&front, "GET", "/v1/products/2", &benign, "").0, 200, "a benign client is not affected");
    assert_eq!(http(&front, "GET", "/", &[("X-Forwarded-For", "203.0.113.78")], "").0, 200, "nor its neighbour");

    // A manual allow lifts the block.
    let (status, body) = http(
        &gw_addr,
        "POST",
        "/v1/admin/decisions",
        &[("X-Api-Key", admin.as_str())],
        r#"{"entity_type":"ip","entity":"203.0.113.77","action":"allow","ttl":"1h","reason":"customer support confirmed"}"#,
    );
    assert_eq!(status, 201, "{body}");
    common::until("the allow reaches nginx", || http(&front, "GET", "/v1/products/1", &attacker, "").0 == 200);

    // A decision on a request class: nginx passes the method and URI on,
    // so a sign-in form posted without a session is challenged from an
    // address never seen, and a person's post (with the session its page
    // started), the page itself and other posts go through.
    let (status, body) = http(
        &gw_addr,
        "POST",
        "/v1/admin/decisions",
        &[("X-Api-Key", admin.as_str())],
        r#"{"entity_type":"class","entity":"bare-login","action":"challenge","ttl":"1h","reason":"stuffing campaign"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let fresh = [("X-Forwarded-For", "192.0.2.201")];
    common::until("the class decision reaches nginx", || http(&front, "POST", "/login", &fresh, "u=a&p=b").0 == 403);
    assert_eq!(http(&front, "POST", "/login/?next=%2F", &fresh, "u=a&p=b").0, 403, "another spelling of the form");
    // The person opened the form first: once that reaches the log, the post
    // goes through; a made-up session cookie does not take a post out.
    let person = [("X-Forwarded-For", "192.0.2.202"), ("Cookie", "session=ws-7f3a")];
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).expect("append");
    f.write_all(common::form_opened_line("192.0.2.202", "ws-7f3a").as_bytes()).expect("write");
    f.flush().expect("flush");
    let forged = [("X-Forwarded-For", "192.0.2.202"), ("Cookie", "session=ws-0000")];
    common::until("the engine has seen a session opened", || {
        http(&front, "POST", "/login", &forged, "u=a&p=b").0 == 403
    });
    assert_eq!(http(&front, "POST", "/login", &person, "u=a&p=b").0, 200, "a person opened the form first");
    assert_eq!(http(&front, "GET", "/login", &fresh, "").0, 200, "opening the form is not posting it");
    assert_eq!(http(&front, "POST", "/v1/orders", &fresh, "{}").0, 200, "nor is any other post");

    // gatewatch gone: nginx fails closed (docs/SECURITY.md).
    drop(_gw);
    assert_eq!(
        http(&front, "GET", "/v1/products/2", &benign, "").0,
        500,
        "an unreachable gatewatch lets requests through"
    );
}
