//! Model scoring: feature rows scored per second by each shipped model kind.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch::features::EntityType;
use gatewatch::model::Model;

fn bench(c: &mut Criterion) {
    let snap = common::feature_snapshot();
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
