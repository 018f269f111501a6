//! The files that install gatewatch as a service: the systemd unit passes
//! `systemd-analyze verify` without a warning and keeps the hardening it
//! promises; the pipeline it runs loads.

mod common;

use std::path::Path;
use std::process::Command;

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(repo("deploy/systemd/gatewatch.service")).expect("unit");
    for line in [
        "User=gatewatch",
        "StateDirectory=gatewatch",
        "StateDirectoryMode=0700",
        "UMask=0077",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(line), "the unit lost {line:?}");
    }
    // verify checks that ExecStart's program exists: point it at this build.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gatewatch.service");
    std::fs::write(&path, common::subst(&unit, "/usr/local/bin/gatewatch", env!("CARGO_BIN_EXE_gatewatch")))
        .expect("unit");
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze is installed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Unknown or misspelt keys are only warnings to verify: none is allowed.
    assert!(err.trim().is_empty(), "systemd-analyze verify warns:\n{err}");
}

#[test]
fn service_pipeline_loads() {
    let p = std::fs::read_to_string(repo("deploy/pipeline.toml")).expect("pipeline");
    let p = common::subst(
        &p,
        "/usr/local/share/gatewatch/pipelines/default.toml",
        &repo("pipelines/default.toml").display().to_string(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let p = common::subst(&p, "/var/lib/gatewatch", &dir.path().join("state").display().to_string());
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, p).expect("pipeline");
    // Loading it (every key, the models it names) is what `keys list` does first.
    assert!(common::gatewatch(&path, &["keys", "list"]).starts_with("id"));
}
