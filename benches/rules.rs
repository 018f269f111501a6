//! Rule evaluation: the default rule set over feature batches (rows/s).

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch::config::Pipeline;
use gatewatch::detect::RuleSet;

fn bench(c: &mut Criterion) {
    let p = Pipeline::load(std::path::Path::new("pipelines/default.toml")).expect("pipeline");
    let rules = RuleSet::compile(&p.rules).expect("rules");
    let snap = common::feature_snapshot();
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
