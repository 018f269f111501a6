//! The analyst console in a real browser (Debian's headless Chromium driven
//! by Playwright; `scripts/services/browser.sh` installs both, and
//! `scripts/test.sh` runs it): an attack appended to the followed log shows
//! in the console's feed as a deny, a second one reaches the open feed
//! through the change stream, a gateway key cannot open the console, the
//! entity page opens from the feed and plots the attacker's traffic with
//! the features behind its decision, and an allow given there turns
//! `/v1/authz` for the attacker from 403 to 200; the collateral, rules and
//! query pages show what they should. Screenshots of each page are kept
//! under `CARGO_TARGET_TMPDIR/console-screenshots/`.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn an_analyst_sees_the_attack_in_the_console_and_allows_it_from_there() {
    let playwright = std::env::var_os("GATEWATCH_PLAYWRIGHT_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/gatewatch-services/playwright")))
        .expect("HOME or GATEWATCH_PLAYWRIGHT_DIR");
    assert!(
        playwright.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not in {}: run scripts/services/browser.sh",
        playwright.display()
    );
    let (dir, pipeline, input) = common::live_setup();
    // Parts finished every second, so the entity page reads the run's tables soon.
    let mut p = std::fs::OpenOptions::new().append(true).open(&pipeline).expect("pipeline");
    p.write_all(
        b"[[sinks]]\ntype = \"parquet\"\nroll_every = \"1s\"\n\
          [[sinks]]\ntype = \"decisions_jsonl\"\n[[sinks]]\ntype = \"dead_letters\"\n",
    )
    .expect("write");
    drop(p);
    let (server, admin) = common::serve_with_keys(&pipeline, &input, "edge-1");
    let attacker = "203.0.113.77";
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("append");
    f.write_all(common::stuffing_lines(attacker, 40).as_bytes()).expect("write");
    f.flush().expect("flush");
    server.until("deny for the attacker", |s| s.json(&format!("/v1/decision?ip={attacker}")).1["action"] == "deny");
    let gate = || server.get("/v1/authz", &[("X-Forwarded-For", attacker)]).0;
    assert_eq!(gate(), 403);

    let (second, second_lines) = ("198.51.100.23", dir.path().join("second-attack.log"));
    // With it, an app user reading products: traffic the ip model's guard
    // lets through, so the rules page has a histogram of its scores.
    let reader: String = (0..30)
        .map(|i| {
            format!(
                r#"{{"ts":"{}","client_ip":"192.0.2.50","method":"GET","path":"/api/v1/products/{i}","status":200,"user_id":"reader@example.com","api_key_id":"mobile-android"}}"#,
                gatewatch::event::time::format_rfc3339(gatewatch::event::time::now_ms())
            ) + "\n"
        })
        .collect();
    std::fs::write(&second_lines, common::stuffing_lines(second, 40) + &reader).expect("second attack");

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.mjs");
    let run = Command::new("node")
        .arg(&script)
        .env("BASE", format!("http://{}", server.addr))
        .env("ADMIN_KEY", &admin)
        .env("GATEWAY_KEY", &server.key)
        .env("ATTACKER", attacker)
        .env("INPUT", &input)
        .env("SECOND_LINES", &second_lines)
        .env("SECOND_ATTACKER", second)
        .env("OUT", &out)
        .env("PLAYWRIGHT_DIR", &playwright)
        .output()
        .expect("node (scripts/services/browser.sh installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the browser run failed:\n{said}");
    eprintln!("{said}screenshots in {}", out.display());
    for shot in [
        "login-gateway-key-refused.png",
        "now.png",
        "entity.png",
        "after-allow.png",
        "decisions.png",
        "rules.png",
        "query.png",
    ] {
        assert!(std::fs::metadata(out.join(shot)).is_ok_and(|m| m.len() > 1000), "{shot}");
    }
    assert_eq!(gate(), 200, "the console's allow is in force for the gateway");
    let (_, v) = server.json(&format!("/v1/decision?ip={attacker}"));
    assert_eq!(v["source"], "manual:ops", "{v}");
}
