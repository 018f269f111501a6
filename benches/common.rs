//! Shared bench inputs: simulator traffic rendered in the shapes the parsers read.

#![allow(dead_code)]

use gatewatch::simulate::{self, OutFormat, SimConfig};

/// Lines of one simulated hour in the given shape.
pub fn lines(format: OutFormat, n: usize) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = SimConfig::new(42, 1.0);
    let reqs = simulate::generate(&cfg);
    simulate::write(&cfg, &reqs, dir.path(), &[format]).expect("write");
    let file = match format {
        OutFormat::Json => "access.jsonl",
        OutFormat::Nginx => "access.log",
        OutFormat::Combined => "access-combined.log",
    };
    let text = std::fs::read_to_string(dir.path().join(file)).expect("read");
    text.lines().take(n).map(str::to_string).collect()
}
