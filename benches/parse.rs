//! Parsing throughput per input shape (lines/s), including building the Arrow batch.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch::event::{EventBatchBuilder, Format, parse_line};
use gatewatch::simulate::OutFormat;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let n = 20_000;
    for (name, shape, format) in [
        ("json", OutFormat::Json, Format::Json),
        ("nginx_extras", OutFormat::Nginx, Format::Nginx),
        ("nginx_combined", OutFormat::Combined, Format::Nginx),
    ] {
        let lines = common::lines(shape, n);
        g.throughput(Throughput::Elements(lines.len() as u64));
        g.bench_function(name, |b| {
            let mut builder = EventBatchBuilder::with_capacity(8192);
            b.iter(|| {
                for l in &lines {
                    if let Ok(e) = parse_line(l, format, None) {
                        builder.append(&e);
                    }
                    if builder.len() == 8192 {
                        std::hint::black_box(builder.finish().expect("batch"));
                    }
                }
                std::hint::black_box(builder.finish().expect("batch"));
            })
        });
    }
    // Envoy JSON through the shipped mapping.
    let p = gatewatch::config::Pipeline::load(std::path::Path::new("pipelines/envoy.toml")).expect("envoy pipeline");
    let mapping = p.input.mapping.expect("mapping");
    let envoy: Vec<String> = common::lines(OutFormat::Json, n)
        .iter()
        .filter_map(|l| parse_line(l, Format::Json, None).ok().map(|e| {
            serde_json::json!({
                "start_time": gatewatch::event::time::format_rfc3339(e.ts_ms),
                "method": e.method, "path": match &e.query { Some(q) => format!("{}?{}", e.path, q), None => e.path.to_string() },
                "response_code": e.status, "bytes_sent": e.bytes_sent, "duration": e.latency_ms,
                "downstream_remote_address": format!("{}:51234", e.client_ip), "user_agent": e.user_agent,
                "request_id": e.request_id, "api_key_id": e.api_key_id, "device_id": e.device_id, "user_id": e.user_id,
            }).to_string()
        }))
        .collect();
    g.throughput(Throughput::Elements(envoy.len() as u64));
    g.bench_function("envoy_mapped", |b| {
        b.iter(|| {
            for l in &envoy {
                std::hint::black_box(mapping.parse(l).is_ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
