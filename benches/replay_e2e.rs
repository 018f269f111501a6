//! End-to-end replay of a 1,000,000-line JSON file through the default pipeline
//! (parse → Arrow → features → rules → decisions → Parquet sinks).
//!
//! Not a criterion bench: one run takes seconds and its interesting numbers are
//! throughput and peak memory, printed as one JSON line. Pin it to one core with
//! `taskset -c 0 cargo bench --bench replay_e2e` to measure events/s per core.
//! `GATEWATCH_BENCH_LINES` changes the size; `GATEWATCH_BENCH_FILE` reuses a file.
//! `GATEWATCH_BENCH_MIX` picks the traffic: `sim` (the simulator's JSON, the
//! default), `combined` (the simulator's stock nginx `combined` lines, shaped
//! like a real web server's log: no ids, whole-second times) or `flood` (every
//! request from a new address, device and session; `GATEWATCH_BENCH_BUDGET`,
//! e.g. `256MiB`, sets the state budget). `GATEWATCH_BENCH_WRITE=FILE` only
//! writes the chosen mix to FILE (for profilers, which want one input for
//! every binary they compare).

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use gatewatch::config::Pipeline;
use gatewatch::simulate::{self, OutFormat, SimConfig};

/// The same allocator as the `gatewatch` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let lines: usize = std::env::var("GATEWATCH_BENCH_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(if smoke {
        20_000
    } else {
        1_000_000
    });
    let dir = tempfile::tempdir().expect("tempdir");
    if let Ok(keep) = std::env::var("GATEWATCH_BENCH_WRITE") {
        let made = make_input(dir.path(), lines);
        std::fs::copy(&made, &keep).expect("copy the input");
        return;
    }
    let input = match std::env::var("GATEWATCH_BENCH_FILE") {
        Ok(f) => PathBuf::from(f),
        Err(_) => {
            // Generate here, replay in a fresh child process, so that peak memory
            // is the replay's alone.
            let input = make_input(dir.path(), lines);
            let status = std::process::Command::new(std::env::current_exe().expect("self"))
                .args(std::env::args().skip(1))
                .env("GATEWATCH_BENCH_FILE", &input)
                .status()
                .expect("re-run");
            std::process::exit(status.code().unwrap_or(1));
        }
    };
    // GATEWATCH_BENCH_PIPELINE=pipelines/rules-only.toml measures what the models cost.
    let path = std::env::var("GATEWATCH_BENCH_PIPELINE").unwrap_or_else(|_| "pipelines/default.toml".into());
    let mut pipeline = Pipeline::load(std::path::Path::new(&path)).expect("pipeline");
    if let Ok(b) = std::env::var("GATEWATCH_BENCH_BUDGET") {
        pipeline.features.state_budget_bytes = gatewatch::features::budget::parse_bytes(&b).expect("budget");
    }
    // As the binary does (gatewatch::sysmem), unless GATEWATCH_HUGE_PAGES=1.
    let _ = gatewatch::sysmem::set_at_start(false);
    let out = dir.path().join("run");
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let s = gatewatch::driver::replay_file(pipeline, &input, None, &out, false).expect("replay");
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let active: usize = s.active_entities.values().sum();
    println!(
        "{}",
        serde_json::json!({
            "bench": "replay_e2e",
            "mix": mix(),
            "lines": s.lines,
            "events": s.events,
            "decisions": s.decisions,
            "seconds": secs,
            "events_per_s": s.events as f64 / secs,
            "cpu_seconds": cpu,
            // Throughput per core-second of CPU (all threads, user + system): steadier
            // than wall-clock rates on a shared VM.
            "events_per_cpu_s": cpu.map(|c| s.events as f64 / c),
            "peak_rss_mib": s.peak_rss_bytes.map(|b| b as f64 / 1048576.0),
            "active_entities_at_end": active,
            "evicted_entities": s.evicted_entities,
            "state_bytes": s.state_bytes,
            "state_bytes_per_active_entity": s.state_bytes.checked_div(active).unwrap_or(0),
        })
    );
}

/// CPU time of this process so far (all threads, user + system), from /proc.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn mix() -> String {
    std::env::var("GATEWATCH_BENCH_MIX").unwrap_or_else(|_| "sim".into())
}

/// Exactly `lines` lines of the chosen mix.
fn make_input(dir: &std::path::Path, lines: usize) -> PathBuf {
    if mix() == "flood" {
        let path = dir.join("flood.jsonl");
        let mut w = BufWriter::new(std::fs::File::create(&path).expect("create"));
        let start = gatewatch::event::time::parse_rfc3339("2026-11-02T10:00:00Z").expect("time");
        // A million requests in ten minutes, a stuffing address among them.
        let span = (lines as i64 * 6 / 10).max(1);
        gatewatch::simulate::flood::write(&mut w, lines, start, span, 50).expect("write");
        w.flush().expect("flush");
        return path;
    }
    let (format, file) = match mix().as_str() {
        "sim" => (OutFormat::Json, "access.jsonl"),
        "combined" => (OutFormat::Combined, "access-combined.log"),
        other => panic!("GATEWATCH_BENCH_MIX={other}: expected sim, combined or flood"),
    };
    let mut cfg = SimConfig::new(99, 6.0);
    cfg.scale = (lines as f64 / 240_000.0).max(0.05);
    let sim = dir.join("sim");
    let reqs = simulate::generate(&cfg);
    simulate::write(&cfg, &reqs, &sim, &[format]).expect("simulate");
    drop(reqs);
    let path = dir.join("replay.log");
    let mut w = BufWriter::new(std::fs::File::create(&path).expect("create"));
    let r = std::io::BufReader::new(std::fs::File::open(sim.join(file)).expect("open"));
    let mut n = 0;
    for l in r.lines().map_while(Result::ok) {
        if n == lines {
            break;
        }
        writeln!(w, "{l}").expect("write");
        n += 1;
    }
    w.flush().expect("flush");
    assert_eq!(n, lines, "the simulator produced too few lines; raise the scale");
    path
}
