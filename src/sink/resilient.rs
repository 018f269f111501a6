//! Live mode's answer to a sink that fails — a full disk, a removed
//! directory: the engine keeps deciding and the API keeps serving, since the
//! gateways depend on them far more than on the analytics files.
//!
//! A failure is logged once and the sink is closed; what it would have
//! received is counted as dropped (`gatewatch_sink_dropped_total`) until it
//! opens again, which is retried with a growing pause (1 s to 1 min). It
//! opens continuing its files ([`super::resume`]), so nothing written before
//! the failure is overwritten and no reader meets a half-written record.
//! Replay keeps the strict behaviour: any sink error ends the run, since a
//! replay can simply be run again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;

use super::{DeadLetter, Sink, SinkError, SinkHealth, SinkSpec, Wants};
use crate::decision::Decision;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

/// A sink that outlives its failures.
pub struct Resilient {
    label: String,
    spec: SinkSpec,
    dir: PathBuf,
    wants: Wants,
    inner: Option<Box<dyn Sink>>,
    health: SinkHealth,
    retry_at: Instant,
    pause: Duration,
    /// Records handed over since the last checkpoint the sink completed:
    /// buffered, and lost with it if it fails.
    unconfirmed: u64,
}

impl Resilient {
    /// Wraps `inner`, built from `spec` in the run directory `dir`; `label`
    /// names it in logs and metrics.
    pub fn new(inner: Box<dyn Sink>, spec: SinkSpec, dir: PathBuf, label: String) -> Self {
        Resilient {
            label,
            spec,
            dir,
            wants: inner.wants(),
            inner: Some(inner),
            health: SinkHealth { up: true, ..SinkHealth::default() },
            retry_at: Instant::now(),
            pause: FIRST_RETRY,
            unconfirmed: 0,
        }
    }

    /// Hands `records` records to the sink through `f`, or counts them dropped.
    fn with(&mut self, records: u64, f: impl FnOnce(&mut dyn Sink) -> Result<(), SinkError>) {
        if self.inner.is_none() && Instant::now() >= self.retry_at {
            self.reopen();
        }
        let Some(sink) = self.inner.as_mut() else {
            self.health.dropped += records;
            return;
        };
        match f(sink.as_mut()) {
            Ok(()) => self.unconfirmed += records,
            Err(e) => self.fail(&e, records),
        }
    }

    fn fail(&mut self, e: &SinkError, records: u64) {
        self.health.errors += 1;
        self.health.dropped += records + std::mem::take(&mut self.unconfirmed);
        self.health.up = false;
        tracing::error!(
            sink = %self.label,
            error = %e,
            "sink failed: closed, its records counted as dropped (gatewatch_sink_dropped_total) until it opens \
             again; decisions are still made and served"
        );
        // Dropping closes it: a Parquet part file that cannot be finished is removed.
        self.inner = None;
        self.pause = FIRST_RETRY;
        self.retry_at = Instant::now() + self.pause;
    }

    fn reopen(&mut self) {
        match super::resume(&self.spec, &self.dir) {
            Ok(sink) => {
                tracing::info!(sink = %self.label, dropped = self.health.dropped, "sink open again");
                self.inner = Some(sink);
                self.health.up = true;
            }
            Err(e) => {
                tracing::debug!(sink = %self.label, error = %e, "sink still cannot be opened");
                self.pause = (self.pause * 2).min(LAST_RETRY);
                self.retry_at = Instant::now() + self.pause;
            }
        }
    }
}

impl Sink for Resilient {
    fn name(&self) -> &str {
        &self.label
    }

    fn wants(&self) -> Wants {
        self.wants
    }

    fn events(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.with(batch.num_rows() as u64, |s| s.events(batch));
        Ok(())
    }

    fn features(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.with(batch.num_rows() as u64, |s| s.features(batch));
        Ok(())
    }

    fn decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        self.with(1, |s| s.decision(d));
        Ok(())
    }

    fn shadow_decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        self.with(1, |s| s.shadow_decision(d));
        Ok(())
    }

    fn sessions_opened(&mut self, digests: &[u64]) -> Result<(), SinkError> {
        self.with(digests.len() as u64, |s| s.sessions_opened(digests));
        Ok(())
    }

    fn dead_letter(&mut self, dl: &DeadLetter<'_>) -> Result<(), SinkError> {
        self.with(1, |s| s.dead_letter(dl));
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), SinkError> {
        self.checkpoint_while(&mut || {})
    }

    fn checkpoint_while(&mut self, waiting: &mut dyn FnMut()) -> Result<(), SinkError> {
        self.with(0, |s| s.checkpoint_while(waiting));
        if self.health.up {
            self.unconfirmed = 0;
        }
        Ok(())
    }

    fn share(&mut self, share: crate::source::Share) -> Result<(), SinkError> {
        self.with(0, |s| s.share(share));
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        if let Some(sink) = self.inner.take()
            && let Err(e) = sink.finish()
        {
            self.health.errors += 1;
            self.health.dropped += self.unconfirmed;
            tracing::error!(sink = %self.label, error = %e, "sink could not be closed cleanly");
        }
        Ok(())
    }

    /// Its own record, joined with the inner sink's when that one keeps its
    /// own (a ClickHouse sink outlives an unreachable server by spooling,
    /// and says so here).
    fn health(&self) -> Option<SinkHealth> {
        let mut h = self.health.clone();
        if let Some(inner) = self.inner.as_ref().and_then(|s| s.health()) {
            h.up &= inner.up;
            h.errors += inner.errors;
            h.dropped += inner.dropped;
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkKind;

    /// `/dev/full` stands in for a full disk here (the real one is in
    /// `tests/drills.rs`): every write to it fails with ENOSPC.
    #[test]
    fn a_failed_sink_is_counted_and_reopened_continuing_its_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().to_path_buf();
        let file = dir.join("dead_letters.jsonl");
        std::os::unix::fs::symlink("/dev/full", &file).expect("symlink");
        let spec = SinkSpec::of(SinkKind::DeadLetters);
        let inner = super::super::build(&spec, &dir).expect("build");
        let mut s = Resilient::new(inner, spec, dir.clone(), "dead_letters".into());
        let letter = |no| DeadLetter::new("-", crate::source::Position::Line { no, offset: 0 }, "bad", b"x", 1);
        s.dead_letter(&letter(1)).expect("never an error");
        s.checkpoint().expect("never an error");
        s.dead_letter(&letter(2)).expect("never an error");
        let h = s.health().expect("health");
        assert_eq!(h, SinkHealth { up: false, errors: 1, dropped: 2 }, "the buffered letter and the next one");
        // Space again, and the pause over: the sink opens and writes.
        std::fs::remove_file(&file).expect("unlink");
        std::fs::write(&file, "{\"line\":0}\n{\"line\":").expect("a cut-off line");
        s.retry_at = Instant::now();
        s.dead_letter(&letter(3)).expect("never an error");
        assert!(s.health().expect("health").up);
        Box::new(s).finish().expect("finish");
        let text = std::fs::read_to_string(&file).expect("file");
        let lines: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("whole lines only")["line"].as_u64().unwrap_or(9)
            })
            .collect();
        assert_eq!(lines, [0, 3], "{text}");
    }
}
