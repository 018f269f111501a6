//! Real CrowdSec bouncers (Debian's `crowdsec-custom-bouncer` and
//! `crowdsec-firewall-bouncer`, which no one here wrote) against `gatewatch
//! run`'s CrowdSec-compatible API, configured with the README's blocks: each
//! decision made or lifted (by hand or by the engine) reaches the bouncer.
//!
//! Both bouncers pull the stream (`/v1/decisions/stream`); the live-mode
//! route they do not use (`/v1/decisions?ip=`) is covered in tests/stream.rs.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Proc, Server, subst, until};

/// Where scripts/services/crowdsec.sh unpacks the bouncers.
fn bouncer(name: &str) -> PathBuf {
    let dir = std::env::var_os("GATEWATCH_CROWDSEC_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/gatewatch-services/crowdsec")
    });
    let bin = dir.join("usr/bin").join(name);
    assert!(bin.exists(), "{} is missing: run scripts/services/crowdsec.sh", bin.display());
    bin
}

fn post(server: &Server, admin: &str, body: &str) {
    let (code, _, b) = server.request("POST", "/v1/admin/decisions", &[("X-Api-Key", admin)], body);
    assert_eq!(code, 201, "{b}");
}

fn lift(server: &Server, admin: &str, entity_type: &str, entity: &str) {
    let path = format!("/v1/admin/decisions?entity_type={entity_type}&entity={entity}");
    let (code, _, b) = server.request("DELETE", &path, &[("X-Api-Key", admin)], "");
    assert_eq!(code, 200, "{b}");
}

/// The README's bouncer block with this test's address and key, polling every
/// second, logging into `dir`, in the foreground.
fn bouncer_config(marker: &str, server: &Server, key: &str, dir: &Path) -> String {
    let block = common::readme_block("yaml", marker);
    let c = subst(&block, "http://127.0.0.1:8790/", &format!("http://{}/", server.addr));
    let c = subst(&c, "gw_…", key);
    let c = subst(&c, "update_frequency: 10s", "update_frequency: 1s");
    let d = dir.display();
    format!(
        "{c}daemonize: false\nlog_mode: file\nlog_dir: {d}\npiddir: {d}\npid_dir: {d}\nprometheus:\n  enabled: false\n"
    )
}

#[test]
fn custom_bouncer_sees_adds_and_deletes() {
    let (dir, pipeline, input) = common::live_setup();
    let d = dir.path();
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "bouncer");
    let key = server.key.clone();

    let calls = d.join("calls.log");
    let script = d.join("on-decision");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$@\" >> {}\n", calls.display())).expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    let conf = bouncer_config("bin_path", &server, &key, d);
    let conf = subst(&conf, "/usr/local/bin/on-decision", &script.display().to_string());
    std::fs::write(d.join("bouncer.yaml"), conf).expect("config");
    let _b = Proc::spawn(
        Command::new(bouncer("crowdsec-custom-bouncer")).arg("-c").arg(d.join("bouncer.yaml")),
        &d.join("bouncer.err"),
        "the bouncer starts",
    );
    let seen = || std::fs::read_to_string(&calls).unwrap_or_default();
    let has = |prefix: &str, json: &[&str]| {
        seen().lines().any(|l| l.starts_with(prefix) && json.iter().all(|j| l.contains(j)))
    };

    post(&server, &admin, r#"{"entity_type":"ip","entity":"203.0.113.9","action":"deny","ttl":"1h","reason":"t"}"#);
    post(
        &server,
        &admin,
        r#"{"entity_type":"cidr","entity":"198.51.100.0/24","action":"challenge","ttl":"1h","reason":"t"}"#,
    );
    until("the bouncer adds both", || {
        has("add 203.0.113.9 ", &[r#""type":"ban""#, r#""scope":"Ip""#])
            && has("add 198.51.100.0/24 ", &[r#""type":"captcha""#, r#""scope":"Range""#])
    });
    // A decision the engine makes reaches it the same way.
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("log");
    f.write_all(common::stuffing_lines("203.0.113.66", 40).as_bytes()).expect("append");
    drop(f);
    until("the bouncer adds the engine's deny", || has("add 203.0.113.66 ", &[r#""type":"ban""#]));

    lift(&server, &admin, "ip", "203.0.113.9");
    until("the bouncer deletes the lifted one", || has("del 203.0.113.9 ", &[]));
    assert!(!has("del 198.51.100.0/24", &[]), "only what was lifted is deleted:\n{}", seen());
}

/// The firewall bouncer programs nftables; it runs in a network namespace of
/// its own (with gatewatch beside it), never against this machine's tables.
#[test]
fn firewall_bouncer_fills_the_nftables_set() {
    let worker = std::thread::spawn(|| {
        // SAFETY: moves this thread alone into a new network namespace; the
        // processes it starts inherit it.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "a network namespace needs root: {}", std::io::Error::last_os_error());
        let up = Command::new("ip").args(["link", "set", "lo", "up"]).status().expect("ip");
        assert!(up.success());
        firewall_bouncer_in_namespace();
    });
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

fn firewall_bouncer_in_namespace() {
    let (dir, pipeline, input) = common::live_setup();
    let d = dir.path();
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "firewall");
    let key = server.key.clone();

    std::fs::write(d.join("firewall.yaml"), bouncer_config("mode: nftables", &server, &key, d)).expect("config");
    let _b = Proc::spawn(
        Command::new(bouncer("crowdsec-firewall-bouncer")).arg("-c").arg(d.join("firewall.yaml")),
        &d.join("firewall.err"),
        "the bouncer starts",
    );
    let set = || {
        let out = Command::new("nft").args(["list", "set", "ip", "crowdsec", "crowdsec-blacklists"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    };

    post(&server, &admin, r#"{"entity_type":"ip","entity":"203.0.113.9","action":"deny","ttl":"1h","reason":"t"}"#);
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("log");
    f.write_all(common::stuffing_lines("203.0.113.66", 40).as_bytes()).expect("append");
    drop(f);
    until("both addresses are in the set", || {
        let s = set();
        s.contains("203.0.113.9") && s.contains("203.0.113.66")
    });
    lift(&server, &admin, "ip", "203.0.113.9");
    until("the lifted address leaves the set", || {
        let s = set();
        !s.contains("203.0.113.9 ") && !s.contains("203.0.113.9,") && s.contains("203.0.113.66")
    });
}
