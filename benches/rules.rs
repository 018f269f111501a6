//! Rule evaluation: the default rule set over feature batches (rows/s).

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch::config::Pipeline;
use gatewatch::detect::RuleSet;
use gatewatch::event::{EventBatchBuilder, Format, parse_line};
use gatewatch::features::{FeatureConfig, FeatureEngine};
use gatewatch::simulate::OutFormat;

fn bench(c: &mut Criterion) {
    let p = Pipeline::load(std::path::Path::new("pipelines/default.toml")).expect("pipeline");
    let rules = RuleSet::compile(&p.rules).expect("rules");
    let mut f = FeatureEngine::new(FeatureConfig { tick_ms: 86_400_000, ..FeatureConfig::default() });
    let mut b = EventBatchBuilder::with_capacity(8192);
    for l in common::lines(OutFormat::Json, 60_000) {
        b.append(&parse_line(&l, Format::Json, None).expect("parse"));
        if b.len() == 8192 {
            f.ingest(&b.finish().expect("batch")).expect("ingest");
        }
    }
    f.ingest(&b.finish().expect("batch")).expect("ingest");
    let snap = f.flush().expect("flush").expect("rows");
    let mut g = c.benchmark_group("rules");
    for (t, batch) in &snap.batches {
        g.throughput(Throughput::Elements(batch.num_rows() as u64));
        g.bench_function(format!("default_rules_{t}_{}_rows", batch.num_rows()), |bn| {
            bn.iter(|| std::hint::black_box(rules.evaluate(*t, batch).expect("evaluate")))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
