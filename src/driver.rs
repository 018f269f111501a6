//! The driver: one loop from a [`Source`] through the [`Engine`] that replay
//! and live mode share. It polls the source, pushes each record, and after a
//! checkpoint (every record applied, decisions handed to every sink, sinks
//! flushed) acknowledges the newest position to the source, which is where a
//! Kafka source commits its offsets.
//!
//! Replay reads to the end as fast as it can and stays a pure function of its
//! input. Live mode also evaluates touched entities after every round, bounds
//! event time by the wall clock, and keeps event time moving when input is quiet.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::Pipeline;
use crate::engine::{Engine, EngineError, Summary};
use crate::event::Format;
use crate::source::{Poll, Position, Records, Share, Source};

/// Records taken from a source per poll. Replay used 16 times this, and the
/// copy of ~30 MB of lines it held was 35 MB of peak memory touched for
/// nothing: a round this size stays in cache and costs no more polls that matter.
const ROUND: usize = 4096;
/// Quiet time after which event time follows the wall clock.
const IDLE: Duration = Duration::from_secs(1);

fn io_error(source: &dyn Source, e: std::io::Error) -> EngineError {
    EngineError::Io { path: source.name().into(), source: e }
}

/// Passes a change of the source's share (a rebalance) on to the sinks
/// before the records read under it, and, while it waits for one or has
/// caught up with it, that it still does ([`crate::sink::Sink::share`]).
fn tell_share(engine: &mut Engine, source: &dyn Source, last: &mut Share) -> Result<(), EngineError> {
    let now = source.share();
    if now != *last || now.awaiting || now.caught_up {
        engine.share(now)?;
        *last = now;
    }
    Ok(())
}

/// Reads `source` to its end through `engine`; returns the run's summary.
pub fn replay(mut engine: Engine, source: &mut dyn Source, progress: bool) -> Result<Summary, EngineError> {
    let bar = match source.progress() {
        Some((_, total)) if progress => {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            Some(b)
        }
        _ => None,
    };
    let mut records = Records::default();
    let mut last = None;
    let mut share = Share::default();
    loop {
        records.clear();
        let poll = source.poll(&mut records, ROUND).map_err(|e| io_error(source, e))?;
        tell_share(&mut engine, source, &mut share)?;
        last = records.last_position().or(last);
        for line in records.iter() {
            engine.push_line(&line)?;
        }
        if let (Some(b), Some((read, _))) = (&bar, source.progress()) {
            b.set_position(read);
        }
        match poll {
            Poll::End => break,
            // A replayed file never idles; a pipe that does is simply read again.
            Poll::More | Poll::Idle => {}
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let summary = engine.finish()?;
    if let Some(pos) = last {
        source.ack(pos).map_err(|e| io_error(source, e))?;
    }
    source.close().map_err(|e| io_error(source, e))?;
    Ok(summary)
}

/// Called between two rounds of live input, with the engine (reloads, what
/// other instances decided), and when the source's share changed.
pub type RoundHook = Box<dyn FnMut(&mut Engine, Between) + Send>;

/// When a [`RoundHook`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Between {
    /// Before a poll of the source.
    Rounds,
    /// The source was given a new share of its input (a rebalance), and
    /// nothing read under it has been judged yet.
    NewShare,
}
/// Called with the running totals after each round of input.
pub type Progress = Box<dyn FnMut(&Summary) + Send>;

/// Follows `source` until `stop` is set, then finishes the engine (flushing every sink).
pub fn live(
    mut engine: Engine,
    mut source: Box<dyn Source>,
    stop: Arc<AtomicBool>,
    mut between: Option<RoundHook>,
    mut progress: Option<Progress>,
) -> Result<Summary, EngineError> {
    let mut records = Records::default();
    let mut last_input = Instant::now();
    let mut last_input_ts: Option<i64> = None;
    let mut clock = crate::event::clock::StepClock::default();
    let mut last_progress = Instant::now();
    let mut share = Share::default();
    let mut rounds = 0u64;
    // Each round is evaluated, checkpointed and acknowledged whatever its
    // size: waiting this long when the source is caught up keeps rounds of
    // trickling input from being many and tiny (`input.poll_interval`).
    let poll_every = Duration::from_millis(engine.pipeline().input.poll_interval_ms.max(1) as u64);
    while !stop.load(Ordering::Relaxed) {
        if let Some(hook) = between.as_mut() {
            hook(&mut engine, Between::Rounds);
        }
        records.clear();
        let now = clock.read();
        engine.set_clock(now);
        let poll = source.poll(&mut records, ROUND).map_err(|e| io_error(source.as_ref(), e))?;
        let generation = share.generation;
        tell_share(&mut engine, source.as_ref(), &mut share)?;
        if share.generation != generation
            && !share.awaiting
            && !share.empty
            && let Some(hook) = between.as_mut()
        {
            hook(&mut engine, Between::NewShare);
        }
        if let Some(pos) = records.last_position() {
            rounds += 1;
            take_round(&mut engine, source.as_mut(), &records, pos)?;
            if let Some(p) = progress.as_mut() {
                p(engine.summary());
                last_progress = Instant::now();
            }
            last_input = Instant::now();
            last_input_ts = engine.max_event_ts();
            if poll == Poll::More {
                continue;
            }
        }
        let idle = last_input.elapsed();
        if idle >= IDLE
            && let Some(ts) = last_input_ts
        {
            // Never past the wall clock (the last line's time is already bounded by it).
            let made = engine.decisions_made();
            engine.advance_to((ts + idle.as_millis() as i64).min(now.now_ms))?;
            // What the clock decided reaches the sinks now, not with the next line.
            if engine.decisions_made() != made {
                engine.checkpoint_while(&mut || source.keep_alive())?;
            }
        }
        // Sinks change state without input (a server goes away, a spool
        // drains): idle, the summary is still reported once a second.
        if let Some(p) = progress.as_mut().filter(|_| last_progress.elapsed() >= Duration::from_secs(1)) {
            p(engine.summary());
            last_progress = Instant::now();
        }
        // An ended stdin leaves the API serving what was decided until stopped.
        std::thread::sleep(poll_every);
    }
    // What the source held back behind records it handed out goes through
    // the engine before the end: its positions are then committed exactly
    // (a partition's next owner counts none of them again, and misses none).
    if source.wind_down() {
        loop {
            records.clear();
            source.poll(&mut records, ROUND).map_err(|e| io_error(source.as_ref(), e))?;
            let Some(pos) = records.last_position() else { break };
            take_round(&mut engine, source.as_mut(), &records, pos)?;
        }
    }
    let summary = engine.finish()?;
    // How large the rounds were says whether their fixed cost matters (docs/PERFORMANCE.md).
    tracing::info!(rounds, events = summary.events, "live input taken in");
    source.close().map_err(|e| io_error(source.as_ref(), e))?;
    Ok(summary)
}

/// Takes a round of live input through `engine`: applied, judged,
/// checkpointed, then acknowledged to `source` up to `pos`.
fn take_round(
    engine: &mut Engine,
    source: &mut dyn Source,
    records: &Records,
    pos: Position,
) -> Result<(), EngineError> {
    for line in records.iter() {
        engine.push_line(&line)?;
    }
    engine.evaluate_now()?;
    // A consumer group drops a member that stops polling while a slow
    // broker acknowledges what the sinks sent.
    engine.checkpoint_while(&mut || source.keep_alive())?;
    source.ack(pos).map_err(|e| io_error(source, e))
}

/// Replays a file (or `-` for stdin) through the pipeline into `out_dir`;
/// writes `summary.json` there too.
pub fn replay_file(
    pipeline: Pipeline,
    input: &Path,
    format: Option<Format>,
    out_dir: &Path,
    progress: bool,
) -> Result<Summary, EngineError> {
    let keep = pipeline.input.max_line_bytes;
    let source = crate::source::open(input, keep, false, true)
        .map_err(|source| EngineError::Io { path: input.to_path_buf(), source })?;
    replay_source(pipeline, source, format, out_dir, progress)
}

/// [`replay_file`] from any source read to its end (`replay --kafka`: the topics
/// up to where they ended when the source caught up).
pub fn replay_source(
    pipeline: Pipeline,
    source: Box<dyn crate::source::Source>,
    format: Option<Format>,
    out_dir: &Path,
    progress: bool,
) -> Result<Summary, EngineError> {
    replay_source_with(pipeline, source, format, out_dir, progress, |_| {})
}

/// [`replay_source`] with the engine handed to `prepare` before the first line
/// (`replay --kafka` teaches it the decisions of the group it continues).
pub fn replay_source_with(
    pipeline: Pipeline,
    mut source: Box<dyn crate::source::Source>,
    format: Option<Format>,
    out_dir: &Path,
    progress: bool,
    prepare: impl FnOnce(&mut Engine),
) -> Result<Summary, EngineError> {
    let mut engine = Engine::new(pipeline, format, &source.name(), out_dir)?;
    prepare(&mut engine);
    let summary = replay(engine, source.as_mut(), progress)?;
    let path = out_dir.join("summary.json");
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    std::fs::write(&path, text).map_err(|source| EngineError::Io { path, source })?;
    Ok(summary)
}
