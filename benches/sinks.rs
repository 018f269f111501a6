//! What the history costs: rows per second into the Parquet tables, into
//! ClickHouse's RowBinary, and (when `GATEWATCH_CLICKHOUSE_URL` names a
//! server) inserted into ClickHouse, for the two big tables (events,
//! features) built from simulated traffic.
//!
//! The Parquet and ClickHouse sinks work on their own threads, so each
//! iteration times the whole trip: open, hand over every batch, finish (the
//! last part closed, or every row acknowledged by the server).

mod common;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::record_batch::RecordBatch;
use gatewatch::event::{EventBatchBuilder, Format, parse_line};
use gatewatch::features::table_schema;
use gatewatch::simulate::OutFormat;
use gatewatch::sink::Sink;
use gatewatch::sink::clickhouse::{self, ClickHouseSink, ClickHouseSpec, rowbinary};
use gatewatch::sink::parquet::ParquetSink;

const ROWS: usize = 60_000;

/// The events table's batches, 8,192 rows each (what replay hands its sinks).
fn event_batches() -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut b = EventBatchBuilder::with_capacity(8192);
    for l in common::lines(OutFormat::Json, ROWS) {
        b.append(&parse_line(&l, Format::Json, None).expect("parse"));
        if b.len() == 8192 {
            out.push(b.finish().expect("batch"));
        }
    }
    out.push(b.finish().expect("batch"));
    out
}

/// The features table's batches: one snapshot of every entity, as persisted.
fn feature_batches() -> Vec<RecordBatch> {
    common::feature_snapshot()
        .batches
        .into_iter()
        .map(|(_, b)| {
            let mut cols: Vec<ArrayRef> = b.columns().to_vec();
            cols.push(Arc::new(BooleanArray::from(vec![true; b.num_rows()])));
            RecordBatch::try_new(table_schema(), cols).expect("features row")
        })
        .collect()
}

fn rows(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

fn hand_over(sink: &mut dyn Sink, table: &str, batches: &[RecordBatch]) {
    for b in batches {
        match table {
            "events" => sink.events(b).expect("events"),
            _ => sink.features(b).expect("features"),
        }
    }
}

fn parquet(c: &mut Criterion, table: &str, batches: &[RecordBatch]) {
    let mut g = c.benchmark_group("sinks/parquet");
    g.sample_size(10).throughput(Throughput::Elements(rows(batches)));
    g.bench_function(table, |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut sink =
                Box::new(ParquetSink::open(dir.path(), &[table.to_string()], Duration::from_secs(3600)).expect("open"));
            hand_over(sink.as_mut(), table, batches);
            sink.finish().expect("finish");
        })
    });
    g.finish();
}

fn rowbinary(c: &mut Criterion, table: &str, batches: &[RecordBatch]) {
    let mut g = c.benchmark_group("sinks/rowbinary");
    g.throughput(Throughput::Elements(rows(batches)));
    let mut out = Vec::new();
    g.bench_function(table, |b| {
        b.iter(|| {
            out.clear();
            for batch in batches {
                rowbinary::encode(batch, 7, &mut out).expect("encode");
            }
            out.len()
        })
    });
    g.finish();
}

/// Inserted into a real server: the sink's batching, the HTTP round trips and
/// the server's own MergeTree writes.
fn clickhouse_insert(c: &mut Criterion, url: &str, table: &str, batches: &[RecordBatch]) {
    let spool = tempfile::tempdir().expect("tempdir");
    let spec = ClickHouseSpec {
        url: url.to_string(),
        database: "gatewatch_bench".into(),
        user: None,
        password_env: None,
        tables: vec![table.to_string()],
        flush_every_ms: 1_000,
        batch_rows: clickhouse::DEFAULT_BATCH_ROWS,
        spool_dir: spool.path().to_path_buf(),
        spool_max_bytes: clickhouse::DEFAULT_SPOOL_MAX_BYTES,
        retention_days: None,
    };
    clickhouse::init(&spec).expect("clickhouse init");
    let mut g = c.benchmark_group("sinks/clickhouse");
    g.sample_size(10).throughput(Throughput::Elements(rows(batches)));
    g.bench_function(table, |b| {
        b.iter(|| {
            let mut sink = ClickHouseSink::open(&spec).expect("open");
            hand_over(&mut sink, table, batches);
            sink.sync().expect("sync");
            let h = sink.health().expect("health");
            assert!(h.up && h.errors == 0, "every row inserted, none spooled: {h:?}");
        })
    });
    g.finish();
}

fn sinks(c: &mut Criterion) {
    let events = event_batches();
    let features = feature_batches();
    for (table, batches) in [("events", &events), ("features", &features)] {
        parquet(c, table, batches);
        rowbinary(c, table, batches);
        match std::env::var("GATEWATCH_CLICKHOUSE_URL") {
            Ok(url) => clickhouse_insert(c, &url, table, batches),
            Err(_) => eprintln!("sinks/clickhouse/{table}: skipped (GATEWATCH_CLICKHOUSE_URL names no server)"),
        }
    }
}

criterion_group!(benches, sinks);
criterion_main!(benches);
