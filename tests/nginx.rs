//! A real nginx in front of an upstream, asking `gatewatch run` through
//! `auth_request` (the configuration the README shows): the attacker gets 403
//! once its traffic reaches the followed log, a benign client keeps getting
//! 200, and a manual allow lifts the block.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let (status, _, body) = common::http(addr, method, path, headers, body);
    (status, body)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The nginx configuration the README documents, with this test's paths and ports.
fn nginx_conf(dir: &Path, port: u16, gatewatch: &str, key: &str) -> String {
    let d = dir.display();
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

    # This nginx sits behind a load balancer on 127.0.0.1 that sets X-Forwarded-For.
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;

    server {{
        listen 127.0.0.1:{port};

        # --- gatewatch forward-auth -----------------------------------------
        location = /_gatewatch {{
            internal;
            proxy_pass http://{gatewatch}/v1/authz;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Api-Key "{key}";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-User-Id $http_x_user_id;
            proxy_set_header X-Api-Key-Id $http_x_api_key_id;
            proxy_set_header X-Device-Id $http_x_device_id;
            proxy_set_header X-Session-Id $cookie_session;
            proxy_connect_timeout 200ms;
            proxy_read_timeout 500ms;
        }}

        location / {{
            auth_request /_gatewatch;
            root {d}/www;
            try_files /index.html =404;
        }}
    }}
}}
"#
    )
}

#[test]
fn nginx_auth_request_blocks_the_attacker_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for sub in ["tmp", "www"] {
        std::fs::create_dir_all(d.join(sub)).expect("mkdir");
    }
    std::fs::write(d.join("www/index.html"), "upstream ok\n").expect("www");
    let pipeline = common::live_pipeline(d);
    let log = d.join("access.log");
    std::fs::write(&log, "").expect("log");
    let key = common::gatewatch(&pipeline, &["keys", "create", "--role", "gateway", "--name", "edge-nginx"]);
    let admin = common::gatewatch(&pipeline, &["keys", "create", "--role", "admin", "--name", "ops"]);

    let (gw, gw_addr) = common::start_run(&pipeline, &log);
    let _gw = Proc(gw);

    let port = free_port();
    std::fs::write(d.join("nginx.conf"), nginx_conf(d, port, &gw_addr, &key)).expect("conf");
    let nginx = Command::new("nginx")
        .arg("-e")
        .arg(d.join("nginx-error.log"))
        .arg("-p")
        .arg(d)
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .spawn()
        .expect("nginx is installed (scripts/services/nginx.sh)");
    let _nginx = Proc(nginx);
    let front = format!("127.0.0.1:{port}");
    common::until("nginx listens", || TcpStream::connect(&front).is_ok());

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
}
