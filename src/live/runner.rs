//! The live loop: poll the source, feed the engine, evaluate what changed, and
//! keep event time moving when the input is quiet.
//!
//! Event time still rules windows and TTLs. When no line has arrived for a
//! second, event time is advanced by the wall-clock time elapsed since the last
//! line (from that line's timestamp), so idle entities age out and periodic
//! snapshots continue; decisions' expiry is judged against the wall clock by the
//! store, so a stalled stream never keeps a decision alive.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use super::follow::{Follower, OwnedLine};
use crate::engine::{Engine, EngineError, Summary};
use crate::source::{Line, LineReader};

/// Where live lines come from.
pub enum LiveSource {
    File(Follower),
    Stdin { rx: Receiver<OwnedLine>, eof: bool },
}

impl LiveSource {
    /// Follows `path` (`-` for stdin). A file that exists is opened at once, so
    /// following starts from this moment, not from the first poll.
    pub fn open(path: &std::path::Path, keep: usize, from_start: bool) -> std::io::Result<LiveSource> {
        if path == std::path::Path::new("-") {
            let (tx, rx) = sync_channel::<OwnedLine>(65_536);
            std::thread::Builder::new()
                .name("stdin".into())
                .spawn(move || {
                    let stdin = std::io::stdin();
                    let mut r = LineReader::new(stdin.lock(), keep);
                    while let Ok(Some(l)) = r.next_line() {
                        let owned = OwnedLine { no: l.no, offset: l.offset, bytes: l.bytes.to_vec(), len: l.len };
                        if tx.send(owned).is_err() {
                            break;
                        }
                    }
                    let _ = std::io::stdin().lock().fill_buf();
                })
                .ok();
            Ok(LiveSource::Stdin { rx, eof: false })
        } else {
            let mut f = Follower::new(path, keep, from_start);
            f.start()?;
            Ok(LiveSource::File(f))
        }
    }

    pub fn name(&self) -> String {
        match self {
            LiveSource::File(f) => f.path().display().to_string(),
            LiveSource::Stdin { .. } => "-".into(),
        }
    }

    fn poll(&mut self, out: &mut Vec<OwnedLine>, max: usize) -> std::io::Result<()> {
        match self {
            LiveSource::File(f) => f.poll(out, max),
            LiveSource::Stdin { rx, eof } => {
                while out.len() < max && !*eof {
                    match rx.try_recv() {
                        Ok(l) => out.push(l),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => *eof = true,
                    }
                }
                Ok(())
            }
        }
    }
}

/// How often the source is polled when it has nothing new.
const POLL: Duration = Duration::from_millis(50);
/// Quiet time after which event time follows the wall clock.
const IDLE: Duration = Duration::from_secs(1);

/// Called with the running totals after each round of input.
pub type Progress = Box<dyn FnMut(&Summary) + Send>;

/// How much lower than the API's threads the engine thread is scheduled (Linux
/// nice). Lookups must never wait on ingestion; when both want the CPU, the
/// lookup goes first, and the engine still gets every cycle the API leaves idle.
pub const ENGINE_NICE: i32 = 5;

/// Lowers the calling thread's scheduling priority by `nice` (Linux: nice is per thread).
pub fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread; no memory is shared with the kernel.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        // SAFETY: as above; failure only leaves the priority unchanged.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        if rc != 0 {
            tracing::debug!("engine thread priority unchanged");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Runs until `stop` is set, then finishes the engine (flushing every sink).
pub fn run(
    mut engine: Engine,
    mut source: LiveSource,
    stop: Arc<AtomicBool>,
    mut progress: Option<Progress>,
    inbox: Option<super::control::Inbox>,
) -> Result<Summary, EngineError> {
    let mut lines = Vec::with_capacity(4096);
    let mut last_input = Instant::now();
    let mut last_input_ts: Option<i64> = None;
    while !stop.load(Ordering::Relaxed) {
        if let Some(i) = &inbox {
            i.apply(&mut engine);
        }
        lines.clear();
        source.poll(&mut lines, 4096).map_err(|e| EngineError::Io { path: PathBuf::from(source.name()), source: e })?;
        if !lines.is_empty() {
            for l in &lines {
                engine.push_line(&Line { no: l.no, offset: l.offset, bytes: &l.bytes, len: l.len })?;
            }
            engine.evaluate_now()?;
            if let Some(p) = progress.as_mut() {
                p(engine.summary());
            }
            last_input = Instant::now();
            last_input_ts = engine.max_event_ts();
            continue;
        }
        let idle = last_input.elapsed();
        if idle >= IDLE {
            if let Some(ts) = last_input_ts {
                engine.advance_to(ts + idle.as_millis() as i64)?;
            }
        }
        std::thread::sleep(POLL);
    }
    engine.finish()
}
