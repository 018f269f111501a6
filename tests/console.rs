//! The analyst console over HTTP: the login trades an admin key for a
//! session cookie (a gateway key or an unknown one opens nothing), the pages
//! and assets are served with their security headers, the cookie reaches the
//! API's own routes, and nothing changes without the console's header.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A form post, as a browser sends the login page's.
fn post_form(addr: &str, path: &str, body: &str) -> (u16, Vec<(String, String)>, String) {
    post_form_from(addr, path, body, None)
}

/// [`post_form`] with the `Origin` a browser would send (the server is `Host: gatewatch`).
fn post_form_from(addr: &str, path: &str, body: &str, origin: Option<&str>) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: gatewatch\r\nConnection: close\r\n{origin}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn encode(key: &str) -> String {
    key.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[test]
fn the_console_opens_for_an_admin_key_only_and_acts_through_the_api() {
    let (_dir, pipeline, input) = common::live_setup();
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "edge-1");
    let addr = server.addr.clone();

    // Not signed in: the page sends the browser to the login page.
    let (status, h, _) = server.get_raw("/ui", &[]);
    assert_eq!((status, header(&h, "location")), (303, Some("/ui/login")));
    let (status, h, body) = server.get_raw("/ui/login", &[]);
    assert_eq!(status, 200);
    assert!(body.contains("name=\"key\"") && body.contains("type=\"password\""), "{body}");
    assert!(header(&h, "content-security-policy").is_some_and(|c| c.contains("default-src 'self'")), "{h:?}");
    assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));

    // A gateway key, an unknown key and an empty form open nothing.
    for (form, want) in [
        (format!("key={}", encode(&server.key)), 403),
        ("key=gw_00000000_nope".to_string(), 401),
        ("nokey=1".to_string(), 400),
    ] {
        let (status, h, body) = post_form(&addr, "/ui/login", &form);
        assert_eq!(status, want, "{form}: {body}");
        assert!(header(&h, "set-cookie").is_none(), "{form}");
        assert!(body.contains("role=\"alert\""), "the page says why: {body}");
    }
    let (_, _, body) = post_form(&addr, "/ui/login", &format!("key={}", encode(&server.key)));
    assert!(body.contains("gateway key"), "{body}");

    // A page elsewhere cannot sign a browser in (login CSRF); this server's own page can.
    let form = format!("key={}", encode(&admin));
    for origin in ["http://evil.example", "null"] {
        let (status, h, body) = post_form_from(&addr, "/ui/login", &form, Some(origin));
        assert_eq!(status, 403, "{origin}: {body}");
        assert!(header(&h, "set-cookie").is_none() && body.contains("own login page"), "{body}");
    }
    let (status, h, _) = post_form_from(&addr, "/ui/login", &form, Some("http://gatewatch"));
    assert_eq!((status, header(&h, "set-cookie").is_some()), (303, true));

    // An admin key: a session cookie that script cannot read, and no key in it.
    let (status, h, _) = post_form(&addr, "/ui/login", &format!("key={}", encode(&admin)));
    assert_eq!((status, header(&h, "location")), (303, Some("/ui")));
    let set = header(&h, "set-cookie").expect("a session cookie").to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    assert!(!set.contains(&admin), "the cookie is a token, not the key");
    let cookie = set.split(';').next().expect("name=value").to_string();
    let with = [("Cookie", cookie.as_str())];
    let (status, _, body) = server.get_raw("/ui", &with);
    assert_eq!(status, 200);
    assert!(body.contains("/ui/assets/console.js"), "{body}");

    // Assets are the embedded files; an unknown one is a JSON 404.
    let (status, h, body) = server.get_raw("/ui/assets/uPlot.iife.min.js", &[]);
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").is_some_and(|t| t.starts_with("text/javascript")));
    let vendored =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/vendor/uPlot.iife.min.js"))
            .expect("vendored file");
    assert_eq!(body, vendored);
    let (status, _, body) = server.get_raw("/ui/assets/../../Cargo.toml", &[]);
    assert_eq!(status, 404, "{body}");

    // The cookie reaches the API's routes; a change needs the console's header too.
    let (status, _, body) = server.get_raw("/v1/admin/decisions", &with);
    assert_eq!(status, 200, "{body}");
    let deny =
        r#"{"entity_type":"ip","entity":"203.0.113.9","action":"deny","ttl":"1h","reason":"seen in the console"}"#;
    let (status, _, body) = server.request("POST", "/v1/admin/decisions", &with, deny);
    assert_eq!(status, 403, "no console header: {body}");
    let gate = |ip: &str| server.get("/v1/authz", &[("X-Forwarded-For", ip)]).0;
    assert_eq!(gate("203.0.113.9"), 200, "nothing was changed");
    let console = [("Cookie", cookie.as_str()), ("X-Gatewatch-Console", "1")];
    let (status, _, body) = server.request("POST", "/v1/admin/decisions", &console, deny);
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("manual:ops"), "the audit trail names the key behind the session: {body}");
    assert_eq!(gate("203.0.113.9"), 403);
    let (status, _, body) =
        server.request("DELETE", "/v1/admin/decisions?entity_type=ip&entity=203.0.113.9", &console, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(gate("203.0.113.9"), 200);

    // The plotted rates: columns of one length, for a session or an admin key only.
    let (status, _, body) = server.get_raw("/ui/api/rates", &with);
    assert_eq!(status, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let n = r["t"].as_array().expect("t").len();
    assert!(n >= 1, "{r}");
    for c in ["events", "decisions", "dead_letters"] {
        assert_eq!(r[c].as_array().map(Vec::len), Some(n), "{c}: {r}");
    }
    assert_eq!(server.get_raw("/ui/api/rates", &[]).0, 401);
    assert_eq!(server.get("/ui/api/rates", &[]).0, 403, "a gateway key");

    // A forged cookie is no session; signing out ends this one.
    assert_eq!(server.get_raw("/v1/admin/decisions", &[("Cookie", "gw_console=forged")]).0, 401);
    let mut s = TcpStream::connect(&addr).expect("connect");
    write!(s, "POST /ui/logout HTTP/1.1\r\nHost: gatewatch\r\nConnection: close\r\nCookie: {cookie}\r\nContent-Length: 0\r\n\r\n")
        .expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 303"), "{raw}");
    assert_eq!(server.get_raw("/ui", &with).0, 303);
    assert_eq!(server.get_raw("/v1/admin/decisions", &with).0, 401);
}

/// One console data route, read with an admin key.
fn api(server: &common::Server, admin: &str, path: &str) -> serde_json::Value {
    let (status, _, body) = server.get_raw(path, &[("X-Api-Key", admin)]);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
}

#[test]
fn the_console_pages_100000_decisions_on_the_server_and_shows_what_each_stops() {
    let (_dir, pipeline, input) = common::live_setup();
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "edge-1");
    let key = [("X-Api-Key", admin.as_str())];

    // A block list of 100,000 addresses, in force at once.
    let list: Vec<serde_json::Value> = (0..100_000u32)
        .map(|i| {
            serde_json::json!({"entity_type": "ip", "entity": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                               "action": "deny", "ttl": "1h", "reason": "block list"})
        })
        .collect();
    let (status, _, body) =
        server.request("POST", "/v1/admin/decisions", &key, &serde_json::Value::Array(list).to_string());
    assert_eq!(status, 201, "{body}");

    // Behind one of them a NAT: 40 users, a session each; behind another an
    // attacker: many requests, no user. What the gateways meet is counted.
    let nat = "10.0.0.1";
    for u in 0..40 {
        let (user, session) = (format!("user-{u}"), format!("session-{u}"));
        let h = [("X-Forwarded-For", nat), ("X-User-Id", user.as_str()), ("X-Session-Id", session.as_str())];
        assert_eq!(server.get("/v1/authz", &h).0, 403);
    }
    for _ in 0..100 {
        assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "10.0.0.2")]).0, 403);
    }

    // Sorted by users on the server: the NAT first, its collateral estimated.
    let p = api(&server, &admin, "/ui/api/decisions?sort=users&limit=2");
    assert_eq!((p["total"].as_u64(), p["matched"].as_u64()), (Some(100_000), Some(100_000)), "{p}");
    assert_eq!(p["rows"].as_array().map(Vec::len), Some(2));
    let first = &p["rows"][0];
    assert_eq!(
        (first["entity"].as_str(), first["requests"].as_u64(), first["refused"].as_u64()),
        (Some(nat), Some(40), Some(40))
    );
    let (users, sessions) = (first["users"].as_u64().unwrap_or(0), first["sessions"].as_u64().unwrap_or(0));
    assert!((32..=48).contains(&users) && (32..=48).contains(&sessions), "40 users and sessions estimated as {first}");
    let p = api(&server, &admin, "/ui/api/decisions?sort=requests&limit=1");
    assert_eq!((p["rows"][0]["entity"].as_str(), p["rows"][0]["requests"].as_u64()), (Some("10.0.0.2"), Some(100)));
    assert_eq!(p["rows"][0]["users"].as_u64(), Some(0));

    // Pages move on the server: the last page, a filter, and bad parameters refused.
    let p = api(&server, &admin, "/ui/api/decisions?sort=newest&offset=99990&limit=50");
    assert_eq!(p["rows"].as_array().map(Vec::len), Some(10), "{}", p["rows"]);
    let p = api(&server, &admin, "/ui/api/decisions?q=10.1.100.&limit=500");
    assert_eq!(p["matched"].as_u64(), Some(256), "{}", p["matched"]);
    assert_eq!(p["by_action"]["deny"].as_u64(), Some(100_000));
    for bad in ["sort=nope", "limit=501", "offset=-1", "entity_type=planet", "extra=1"] {
        let (status, _, body) = server.get_raw(&format!("/ui/api/decisions?{bad}"), &key);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }

    // Top entities by refused requests, per type.
    let top = api(&server, &admin, "/ui/api/top?n=3");
    assert_eq!(top["ip"]["by_refused"][0]["entity"], "10.0.0.2", "{top}");
    assert_eq!(top["ip"]["by_score"].as_array().map(Vec::len), Some(3));

    // The entity page: what is in force and what it met; no tables yet is
    // an empty story, not an error.
    let e = api(&server, &admin, &format!("/ui/api/entity?entity_type=ip&entity={nat}"));
    assert_eq!((e["in_force"]["action"].as_str(), e["in_force"]["requests"].as_u64()), (Some("deny"), Some(40)), "{e}");
    assert!(e["timeline"]["t"].is_array(), "{e}");
    let (status, _, _) = server.get_raw("/ui/api/entity?entity_type=ip&entity=not-an-address", &key);
    assert_eq!(status, 400);

    // Today's manual decisions by source, and the shipped investigations.
    let f = api(&server, &admin, "/ui/api/fired");
    let manual = f["counts"].as_array().and_then(|c| c.iter().find(|c| c["source"] == "manual:ops")).cloned();
    assert_eq!(manual.and_then(|m| m["decisions"].as_u64()), Some(100_000), "{}", f["counts"]);
    assert!(f["rules"].as_array().is_some_and(|r| !r.is_empty()), "{}", f["rules"]);
    let inv = api(&server, &admin, "/ui/api/investigations");
    let names: Vec<&str> = inv["investigations"]
        .as_array()
        .map(|l| l.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"blocked-by-collateral") && names.len() == 6, "{names:?}");

    // A gateway key reads none of it.
    for path in [
        "/ui/api/decisions",
        "/ui/api/top",
        "/ui/api/fired",
        "/ui/api/investigations",
        "/ui/api/entity?entity_type=ip&entity=10.0.0.1",
    ] {
        assert_eq!(server.get(path, &[]).0, 403, "{path}");
    }
}
