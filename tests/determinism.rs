//! Replay is a pure function of its input: the same log gives byte-identical decisions.

use std::path::Path;

use gatewatch::config::Pipeline;
use gatewatch::simulate::{self, OutFormat, SimConfig};

#[test]
fn same_input_same_decisions_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = SimConfig::new(2, 3.0);
    let reqs = simulate::generate(&cfg);
    simulate::write(&cfg, &reqs, dir.path(), &[OutFormat::Json, OutFormat::Nginx]).expect("simulate");
    let load =
        || Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/default.toml")).expect("pipeline");
    let mut outputs = Vec::new();
    for (i, file) in ["access.jsonl", "access.jsonl", "access.log", "access.log"].iter().enumerate() {
        let out = dir.path().join(format!("run{i}"));
        gatewatch::driver::replay_file(load(), &dir.path().join(file), None, &out, false).expect("replay");
        outputs.push(std::fs::read(out.join("decisions.jsonl")).expect("decisions"));
    }
    assert!(!outputs[0].is_empty(), "the attacks produce decisions");
    assert_eq!(outputs[0], outputs[1], "JSON replay is deterministic");
    assert_eq!(outputs[2], outputs[3], "nginx replay is deterministic");
}

#[test]
fn simulator_is_deterministic_per_seed() {
    let a = simulate::generate(&SimConfig::new(9, 1.0));
    let b = simulate::generate(&SimConfig::new(9, 1.0));
    let c = simulate::generate(&SimConfig::new(10, 1.0));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.ts == y.ts && x.ip == y.ip && x.path == y.path));
    assert_ne!(a.len(), c.len());
}
