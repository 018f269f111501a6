//! Model scoring: feature rows scored per second by each shipped model kind.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch::event::{EventBatchBuilder, Format, parse_line};
use gatewatch::features::{EntityType, FeatureConfig, FeatureEngine};
use gatewatch::model::Model;
use gatewatch::simulate::OutFormat;

fn bench(c: &mut Criterion) {
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
    let (_, batch) = snap.batches.iter().find(|(t, _)| *t == EntityType::Ip).expect("ip rows");
    let mut g = c.benchmark_group("models");
    g.throughput(Throughput::Elements(batch.num_rows() as u64));
    for name in ["ip-classifier", "ip-anomaly"] {
        let m = Model::load(std::path::Path::new("models").join(name).as_path()).expect("model");
        g.bench_function(format!("{name}_{}_rows", batch.num_rows()), |bn| {
            bn.iter(|| std::hint::black_box(m.score_batch(batch).expect("score")))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
