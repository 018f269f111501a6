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

/// Feature rows for every entity of 60,000 simulated requests, as one snapshot.
pub fn feature_snapshot() -> gatewatch::features::Snapshot {
    use gatewatch::event::{EventBatchBuilder, Format, parse_line};
    use gatewatch::features::{FeatureConfig, FeatureEngine};
    let mut f = FeatureEngine::new(FeatureConfig { tick_ms: 86_400_000, ..FeatureConfig::default() });
    let mut b = EventBatchBuilder::with_capacity(8192);
    for l in lines(OutFormat::Json, 60_000) {
        b.append(&parse_line(&l, Format::Json, None).expect("parse"));
        if b.len() == 8192 {
            f.ingest(&b.finish().expect("batch")).expect("ingest");
        }
    }
    f.ingest(&b.finish().expect("batch")).expect("ingest");
    f.flush().expect("flush").expect("rows")
}
