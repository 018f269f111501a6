//! Feature update throughput (events/s into per-entity windowed state) and the
//! cost of a tick (building feature rows for the touched entities).

mod common;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gatewatch::event::{EventBatchBuilder, Format, parse_line};
use gatewatch::features::{EntityType, FeatureConfig, FeatureEngine};
use gatewatch::simulate::OutFormat;

fn batches(n: usize) -> Vec<gatewatch::arrow::record_batch::RecordBatch> {
    to_batches(&common::lines(OutFormat::Json, n))
}

/// A flood of new entities (every request a new address, device and session).
fn flood_batches(n: usize) -> Vec<gatewatch::arrow::record_batch::RecordBatch> {
    let mut buf = Vec::new();
    let start = gatewatch::event::time::parse_rfc3339("2026-11-02T10:00:00Z").expect("time");
    gatewatch::simulate::flood::write(&mut buf, n, start, 600_000, 50).expect("write");
    let text = String::from_utf8(buf).expect("utf-8");
    to_batches(&text.lines().map(str::to_string).collect::<Vec<_>>())
}

fn to_batches(lines: &[String]) -> Vec<gatewatch::arrow::record_batch::RecordBatch> {
    let mut b = EventBatchBuilder::with_capacity(8192);
    let mut out = Vec::new();
    for l in lines {
        b.append(&parse_line(l, Format::Json, None).expect("simulated lines parse"));
        if b.len() == 8192 {
            out.push(b.finish().expect("batch"));
        }
    }
    out.push(b.finish().expect("batch"));
    out
}

fn bench(c: &mut Criterion) {
    let input = batches(60_000);
    let events: usize = input.iter().map(|b| b.num_rows()).sum();
    let mut g = c.benchmark_group("features");
    g.sample_size(20);
    g.throughput(Throughput::Elements(events as u64));
    g.bench_function("ingest_with_ticks", |b| {
        b.iter_batched(
            || FeatureEngine::new(FeatureConfig::default()),
            |mut f| {
                for batch in &input {
                    std::hint::black_box(f.ingest(batch).expect("ingest"));
                }
                f
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("ingest_with_ticks_and_networks", |b| {
        // As a pipeline with a network rule keeps them: a seventh table.
        let mut judged = [true; EntityType::COUNT];
        judged[EntityType::Class.index()] = false;
        b.iter_batched(
            || {
                let mut f = FeatureEngine::new(FeatureConfig::default());
                f.set_judged(judged);
                f
            },
            |mut f| {
                for batch in &input {
                    std::hint::black_box(f.ingest(batch).expect("ingest"));
                }
                f
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("ingest_without_ticks", |b| {
        // One tick at the end only: the pure per-event update cost.
        let cfg = FeatureConfig { tick_ms: 86_400_000, ..FeatureConfig::default() };
        b.iter_batched(
            || FeatureEngine::new(cfg),
            |mut f| {
                for batch in &input {
                    std::hint::black_box(f.ingest(batch).expect("ingest"));
                }
                f
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // High cardinality: 200,000 requests, ~600,000 new entities, through a
    // 64 MiB budget that holds a few tens of thousands (eviction included).
    let flood = flood_batches(200_000);
    let mut g = c.benchmark_group("features_flood");
    g.sample_size(10);
    g.throughput(Throughput::Elements(200_000));
    g.bench_function("ingest_evicting", |b| {
        let cfg = FeatureConfig { state_budget_bytes: 64 << 20, ..FeatureConfig::default() };
        b.iter_batched(
            || FeatureEngine::new(cfg),
            |mut f| {
                for batch in &flood {
                    std::hint::black_box(f.ingest(batch).expect("ingest"));
                }
                f
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("features_tick");
    let mut warm = FeatureEngine::new(FeatureConfig { tick_ms: 86_400_000, ..FeatureConfig::default() });
    for batch in &input {
        warm.ingest(batch).expect("ingest");
    }
    let rows: usize = warm.active_entities().iter().sum();
    g.throughput(Throughput::Elements(rows as u64));
    g.bench_function("snapshot_all_active", |b| {
        b.iter_batched(
            || {
                let mut f = FeatureEngine::new(FeatureConfig { tick_ms: 86_400_000, ..FeatureConfig::default() });
                for batch in &input {
                    f.ingest(batch).expect("ingest");
                }
                f
            },
            |mut f| std::hint::black_box(f.flush().expect("flush")),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
