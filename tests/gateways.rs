//! Real gateways other than nginx in front of an upstream, asking `gatewatch
//! run` for every request, each configured with the README's block for it:
//! a denied client gets 403, a throttled one 429, a lifted block lets it
//! through again, a benign client is never touched, and an unreachable
//! gatewatch fails the way the README says.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{Proc, Server, get_from, subst, until};

const ATTACKER: &str = "127.0.0.77";
const BENIGN: &str = "127.0.0.20";
/// An address gatewatch has never seen.
const FRESH: &str = "127.0.0.55";

/// A live pipeline whose allowlist leaves loopback addresses to be judged (the
/// test plays its clients from 127.0.0.x).
fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (dir, pipeline, input) = common::live_setup();
    let mut p = std::fs::read_to_string(&pipeline).expect("pipeline");
    p.push_str("[allowlist]\ncidrs = []\n");
    std::fs::write(&pipeline, p).expect("pipeline");
    (dir, pipeline, input)
}

fn admin_post(server: &Server, admin: &str, body: &str) {
    let (code, _, b) = server.request("POST", "/v1/admin/decisions", &[("X-Api-Key", admin)], body);
    assert_eq!(code, 201, "{b}");
}

/// What every gateway must do, through `front` (the gateway's address).
fn exercise(server: &Server, admin: &str, input: &Path, front: &str) {
    let get = |from: &str| get_from(from, front, "/v1/products/1", &[("X-User-Id", "alice")]);
    let (code, _, body) = get(ATTACKER);
    assert_eq!(code, 200, "before any decision: {body}");
    assert!(body.contains("upstream ok"), "{body}");

    // A stuffing burst from the attacker reaches the log gatewatch follows.
    let mut f = std::fs::OpenOptions::new().append(true).open(input).expect("log");
    f.write_all(common::stuffing_lines(ATTACKER, 40).as_bytes()).expect("append");
    drop(f);
    until("the gateway answers 403 to the attacker", || get(ATTACKER).0 == 403);
    assert_eq!(get(BENIGN).0, 200, "a benign client is not affected");
    // A client cannot pick the address judged: whatever X-Forwarded-For it sends.
    let spoof = get_from(ATTACKER, front, "/", &[("X-Forwarded-For", BENIGN)]);
    assert_eq!(spoof.0, 403, "a spoofed X-Forwarded-For walks past the block");

    // A throttle: the client gets 429 with Retry-After once it sends faster than allowed.
    admin_post(
        server,
        admin,
        &format!(r#"{{"entity_type":"ip","entity":"{BENIGN}","action":"throttle","ttl":"1h","reason":"test"}}"#),
    );
    until("the gateway answers 429 to the throttled client", || {
        let (code, headers, _) = get(BENIGN);
        code == 429 && headers.iter().any(|(k, _)| k == "retry-after")
    });
    let (code, _, b) = server.request(
        "DELETE",
        &format!("/v1/admin/decisions?entity_type=ip&entity={BENIGN}"),
        &[("X-Api-Key", admin)],
        "",
    );
    assert_eq!(code, 200, "{b}");
    until("the lifted throttle reaches the gateway", || get(BENIGN).0 == 200);

    // A manual allow lifts the block.
    admin_post(
        server,
        admin,
        &format!(r#"{{"entity_type":"ip","entity":"{ATTACKER}","action":"allow","ttl":"1h","reason":"support"}}"#),
    );
    until("the allow reaches the gateway", || get(ATTACKER).0 == 200);

    // A decision on a request class: the gateway passes the method and URI
    // on, so the sign-in form posted without a session is refused from an
    // address never seen, and a person's post, the page and other posts pass.
    admin_post(
        server,
        admin,
        r#"{"entity_type":"class","entity":"bare-login","action":"challenge","ttl":"1h","reason":"campaign"}"#,
    );
    let post =
        |path: &str, headers: &[(&str, &str)]| common::request_from(FRESH, front, "POST", path, headers, "u=a&p=b").0;
    until("the class decision reaches the gateway", || post("/login", &[]) == 403);
    assert_eq!(post("/Login/?next=%2F", &[]), 403, "another spelling of the form");
    // The person opened the form first: once that reaches the log, the post
    // goes through; a made-up session id does not take a post out.
    let mut f = std::fs::OpenOptions::new().append(true).open(input).expect("log");
    f.write_all(common::form_opened_line(FRESH, "ws-7f3a").as_bytes()).expect("append");
    drop(f);
    until("the engine has seen a session opened", || post("/login", &[("X-Session-Id", "ws-0000")]) == 403);
    assert_eq!(post("/login", &[("X-Session-Id", "ws-7f3a")]), 200, "a person opened the form first");
    assert_eq!(post("/v1/orders", &[]), 200, "another post");
    assert_eq!(get_from(FRESH, front, "/login", &[]).0, 200, "opening the form");
}

/// Caddy `forward_auth`, as the README shows it.
#[test]
fn caddy_forward_auth() {
    let (dir, pipeline, input) = setup();
    let d = dir.path();
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "edge-caddy");
    let key = server.key.clone();

    let [port, upstream] = common::free_ports();
    let block = common::readme_block("caddyfile", "forward_auth");
    let site = subst(&block, "api.example.com", &format!("http://127.0.0.1:{port}"));
    let site = subst(&site, "127.0.0.1:8790", &server.addr);
    let site = subst(&site, "gw_…", &key);
    let site = subst(&site, "app:8080", &format!("127.0.0.1:{upstream}"));
    let conf = format!(
        "{{\n\tadmin off\n\tauto_https off\n}}\n{site}\nhttp://127.0.0.1:{upstream} {{\n\trespond \"upstream ok\" 200\n}}\n"
    );
    std::fs::write(d.join("Caddyfile"), conf).expect("Caddyfile");
    let mut caddy = Proc::spawn(
        Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(d.join("Caddyfile"))
            .env("XDG_DATA_HOME", d)
            .env("XDG_CONFIG_HOME", d)
            .env("HOME", d),
        &d.join("caddy.log"),
        "caddy is installed (scripts/services/gateways.sh)",
    );
    let front = format!("127.0.0.1:{port}");
    caddy.until_listening(&front, &d.join("caddy.log"));

    exercise(&server, &admin, &input, &front);

    // gatewatch gone: Caddy fails closed.
    drop(server);
    let (code, _, _) = get_from(BENIGN, &front, "/", &[]);
    assert_eq!(code, 502, "an unreachable gatewatch must not let requests through");
}

/// HAProxy with the README's Lua action and configuration.
#[test]
fn haproxy_lua_forward_auth() {
    let (dir, pipeline, input) = setup();
    let d = dir.path();
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "edge-haproxy");
    let key = server.key.clone();

    let lua = common::readme_block("lua", "core.register_action(\"gatewatch\"");
    let lua = subst(&lua, "http://127.0.0.1:8790", &format!("http://{}", server.addr));
    let lua = subst(&lua, "gw_…", &key);
    std::fs::write(d.join("gatewatch.lua"), lua).expect("lua");
    let [port, upstream] = common::free_ports();
    let cfg = common::readme_block("haproxy", "lua.gatewatch");
    let cfg = subst(&cfg, "/etc/haproxy/gatewatch.lua", &d.join("gatewatch.lua").display().to_string());
    let cfg = subst(&cfg, "bind :80", &format!("bind 127.0.0.1:{port}"));
    let cfg = subst(&cfg, "app:8080", &format!("127.0.0.1:{upstream}"));
    let cfg = format!(
        "{cfg}\nfrontend upstream\n    bind 127.0.0.1:{upstream}\n    http-request return status 200 content-type text/plain string \"upstream ok\"\n"
    );
    std::fs::write(d.join("haproxy.cfg"), cfg).expect("cfg");
    let check = Command::new("haproxy").arg("-c").arg("-f").arg(d.join("haproxy.cfg")).output().expect("haproxy");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let mut haproxy = Proc::spawn(
        Command::new("haproxy").arg("-db").arg("-f").arg(d.join("haproxy.cfg")),
        &d.join("haproxy.log"),
        "haproxy is installed (scripts/services/gateways.sh)",
    );
    let front = format!("127.0.0.1:{port}");
    haproxy.until_listening(&front, &d.join("haproxy.log"));

    exercise(&server, &admin, &input, &front);

    // gatewatch gone: the README's configuration fails closed.
    drop(server);
    let (code, _, _) = get_from(BENIGN, &front, "/", &[]);
    assert_eq!(code, 403, "an unreachable gatewatch must not let requests through");
}
