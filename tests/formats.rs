//! Every input shape the contract names parses, including other gateways' JSON
//! through the shipped mappings.

use std::path::Path;

use gatewatch::config::Pipeline;
use gatewatch::event::{Format, parse_line};
use gatewatch::simulate::{self, OutFormat, SimConfig};

fn pipeline(name: &str) -> Pipeline {
    Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines").join(name)).expect("pipeline loads")
}

#[test]
fn envoy_mapping_parses_envoy_json_access_log() {
    let p = pipeline("envoy.toml");
    assert_eq!(p.input.format, Format::Mapped);
    assert!(!p.rules.is_empty(), "extends the default rules");
    let m = p.input.mapping.as_ref().expect("mapping");
    let line = r#"{"start_time":"2026-11-28T10:15:02.113Z","method":"GET","path":"/v1/products/1042?fields=price","protocol":"HTTP/1.1","response_code":200,"response_flags":"-","bytes_received":0,"bytes_sent":1834,"duration":12,"upstream_service_time":"10","x_forwarded_for":null,"user_agent":"okhttp/4.12.0","request_id":"6c1f4e0a-3b0e-4c55-a1f5-2f7c1c1d9b11","authority":"api.shop.example.com","upstream_host":"10.0.3.7:8080","downstream_remote_address":"203.0.113.9:51234","referer":null,"api_key_id":"mobile-android","device_id":"d-93f1","user_id":"u-8812"}"#;
    let e = m.parse(line).expect("parses");
    assert_eq!(e.ts_ms, 1_795_860_902_113);
    assert_eq!(e.client_ip, "203.0.113.9");
    assert_eq!(e.path, "/v1/products/1042");
    assert_eq!(e.query.as_deref(), Some("fields=price"));
    assert_eq!(e.status, 200);
    assert_eq!(e.bytes_sent, Some(1834));
    assert_eq!(e.latency_ms, Some(12.0));
    assert_eq!(e.host.as_deref(), Some("api.shop.example.com"));
    assert_eq!(e.api_key_id.as_deref(), Some("mobile-android"));
    assert_eq!(e.user_id.as_deref(), Some("u-8812"));
    assert_eq!(e.referer, None);

    let v6 = r#"{"start_time":"2026-11-28T10:15:02.113Z","method":"POST","path":"/oauth/token","response_code":401,"bytes_sent":84,"duration":31,"downstream_remote_address":"[2001:db8::7]:443"}"#;
    let e = m.parse(v6).expect("parses");
    assert_eq!(e.client_ip, "2001:db8::7");
    let bad = r#"{"start_time":"2026-11-28T10:15:02.113Z","method":"GET","path":"/","response_code":"abc","downstream_remote_address":"203.0.113.9:1"}"#;
    assert!(m.parse(bad).unwrap_err().to_string().contains("status"));
}

#[test]
fn kong_mapping_parses_kong_file_log() {
    let p = pipeline("kong.toml");
    let m = p.input.mapping.as_ref().expect("mapping");
    let line = r#"{"request":{"method":"POST","uri":"/oauth/token?lang=en","url":"https://api.shop.example.com:443/oauth/token?lang=en","size":412,"querystring":{"lang":"en"},"headers":{"host":"api.shop.example.com","user-agent":"python-requests/2.32.3","x-api-key-id":"mobile-ios","x-device-id":"d-00ff","x-request-id":"req-1"}},"upstream_uri":"/oauth/token?lang=en","response":{"status":401,"size":302,"headers":{"content-type":"application/json"}},"route":{"id":"r1","paths":["/oauth"]},"service":{"id":"s1","host":"auth.internal"},"latencies":{"request":31,"kong":2,"proxy":29},"tries":[],"client_ip":"198.51.100.23","workspace":"default","started_at":1795860902113,"consumer":{"id":"c1","username":"alice@example.com"}}"#;
    let e = m.parse(line).expect("parses");
    assert_eq!(e.ts_ms, 1_795_860_902_113);
    assert_eq!(e.client_ip, "198.51.100.23");
    assert_eq!(e.method, "POST");
    assert_eq!(e.path, "/oauth/token");
    assert_eq!(e.query.as_deref(), Some("lang=en"));
    assert_eq!(e.status, 401);
    assert_eq!(e.latency_ms, Some(31.0));
    assert_eq!(e.user_agent.as_deref(), Some("python-requests/2.32.3"));
    assert_eq!(e.api_key_id.as_deref(), Some("mobile-ios"));
    assert_eq!(e.device_id.as_deref(), Some("d-00ff"));
    assert_eq!(e.user_id.as_deref(), Some("alice@example.com"));
    let anonymous = r#"{"request":{"method":"GET","uri":"/healthz","headers":{}},"response":{"status":200,"size":15},"latencies":{"request":1},"client_ip":"198.51.100.23","started_at":1795860902113}"#;
    let e = m.parse(anonymous).expect("parses without optional fields");
    assert_eq!(e.user_id, None);
}

#[test]
fn simulator_output_parses_in_all_three_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = SimConfig::new(5, 0.5);
    let reqs = simulate::generate(&cfg);
    simulate::write(&cfg, &reqs, dir.path(), &[OutFormat::Json, OutFormat::Nginx, OutFormat::Combined]).expect("write");
    for (file, format) in
        [("access.jsonl", Format::Json), ("access.log", Format::Nginx), ("access-combined.log", Format::Nginx)]
    {
        let text = std::fs::read_to_string(dir.path().join(file)).expect("read");
        let mut n = 0;
        for line in text.lines() {
            let e = parse_line(line, format, None).unwrap_or_else(|err| panic!("{file}: {err}\n{line}"));
            let auto = parse_line(line, Format::Auto, None).expect("auto detects the shape");
            assert_eq!(e, auto);
            n += 1;
        }
        assert_eq!(n, reqs.len(), "{file}");
    }
    // The extras carry what plain combined cannot.
    let extras = std::fs::read_to_string(dir.path().join("access.log")).expect("read");
    let with_key = extras
        .lines()
        .filter_map(|l| parse_line(l, Format::Nginx, None).ok())
        .filter(|e| e.api_key_id.is_some())
        .count();
    assert!(with_key > 0);
}
