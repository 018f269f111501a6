//! The OpenAPI document is the API: schemathesis (PyPI, installed by
//! scripts/services/schemathesis.sh) generates thousands of requests from
//! `/openapi.json` against a real `gatewatch run` and runs every check — no
//! 5xx, every schema-valid request accepted, every schema-violating one
//! refused, every answer matching its declared schema. A failure means the
//! document or the server is wrong; fix whichever is, never the check.

mod common;

use common::{Server, create_key};

/// Where the script installs schemathesis, unless `GATEWATCH_SCHEMATHESIS` names the binary.
fn schemathesis() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("GATEWATCH_SCHEMATHESIS") {
        return p.into();
    }
    let home = std::env::var_os("HOME").expect("HOME");
    std::path::Path::new(&home).join(".cache/gatewatch-services/schemathesis/bin/schemathesis")
}

/// Every warning fails the run but one. `missing_test_data` says that every
/// generated request of an operation answered 404: for
/// `DELETE /v1/admin/decisions` that is the right answer whenever the random
/// entity has nothing in force, so whether it fires depends on the draw (a
/// CI run drew it). Lifting a decision is tested with real decisions in
/// tests/live.rs and tests/crowdsec.rs; a schema-valid request refused
/// (`validation_mismatch`) or any other warning still fails here.
const WARNINGS_FAIL: &str = r#"[warnings]
fail-on = ["missing_auth", "base_url_mismatch", "validation_mismatch", "missing_deserializer",
  "unused_openapi_auth", "unsupported_regex", "method_not_allowed", "constants_extraction",
  "unmatched_filter", "unresolvable_reference", "low_valid_rate", "rate_limited",
  "dictionary_mismatch", "timeout_units"]
"#;

#[test]
fn every_check_passes_against_the_served_document() {
    let bin = schemathesis();
    assert!(bin.exists(), "{} is missing: run `bash scripts/services/schemathesis.sh`", bin.display());
    let (dir, pipeline, input) = common::live_setup();
    // Long polls end within a schemathesis request timeout; the document
    // says so (the `wait` maximum follows api.max_wait).
    let mut p = std::fs::read_to_string(&pipeline).expect("pipeline");
    p.push_str("[api]\nmax_wait = \"2s\"\n");
    std::fs::write(&pipeline, p).expect("pipeline");
    let gateway = create_key(&pipeline, "gateway", "edge");
    let admin = create_key(&pipeline, "admin", "ops");
    let server = Server::start(&pipeline, &input, &gateway);
    server.until("ready", |s| s.json("/readyz").0 == 200);

    // The admin key reaches every route; examples per operation: enough to
    // cover each parameter's edges in CI (the README documents a longer run).
    let examples = std::env::var("GATEWATCH_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "60".into());
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, WARNINGS_FAIL).expect("schemathesis.toml");
    let out = std::process::Command::new(&bin)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("http://{}/openapi.json", server.addr)])
        .args(["-H", &format!("X-Api-Key: {admin}")])
        .args(["--checks", "all", "--max-examples", &examples, "--request-timeout", "10"])
        .current_dir(dir.path())
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "schemathesis found failures or a warning that fails the run (above); {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for section in ["FAILURES", "ERRORS"] {
        assert!(!report.contains(section), "{section}: {report}");
    }
    // Thousands of hostile requests later, the server still answers and decides.
    assert_eq!(server.json("/healthz").0, 200);
    assert_eq!(server.get("/v1/authz", &[("X-Forwarded-For", "198.51.100.1")]).0, 200);
}
