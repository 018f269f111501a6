//! The live decision store as a sink: the engine's decisions of a round are
//! persisted together and published to the API's readers at the round's
//! checkpoint, before the source acknowledges the input that made them
//! (one fsync per round: one per decision held the engine to the disk's
//! pace). A round is at most a few thousand lines, so a decision waits for
//! the rest of its round, milliseconds.

use std::sync::Arc;

use crate::decision::Decision;
use crate::event::time::now_ms;
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError, Wants};

use super::LiveStore;

/// The most decisions held for one commit.
const MAX_ROUND: usize = 4096;

/// Publishes engine decisions to the store the API serves.
pub struct StoreSink {
    store: Arc<LiveStore>,
    metrics: Arc<Metrics>,
    max_ttl_ms: i64,
    /// Decisions made since the last checkpoint.
    round: Vec<Decision>,
}

impl StoreSink {
    pub fn new(store: Arc<LiveStore>, metrics: Arc<Metrics>, max_ttl_ms: i64) -> Self {
        StoreSink { store, metrics, max_ttl_ms, round: Vec::new() }
    }
}

impl Sink for StoreSink {
    fn name(&self) -> &str {
        "store"
    }

    fn wants(&self) -> Wants {
        Wants { decisions: true, ..Wants::NONE }
    }

    fn decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        self.metrics.decisions.with_label_values(&[d.source.as_str(), d.action.as_str()]).inc();
        self.metrics.fired.record(d, false, now_ms());
        // Event time is already bounded by the wall clock in live mode; this
        // makes sure no automatic decision outlives max_ttl from now,
        // whatever stamped it.
        // A decision stamped ahead of the wall clock (engine time runs ahead
        // of a clock that was set back) is moved back whole, keeping its TTL.
        let now = now_ms();
        let mut d = d.clone();
        let ahead = d.created_ms.saturating_sub(now).max(0);
        d.created_ms -= ahead;
        d.expires_ms = d.expires_ms.saturating_sub(ahead).min(now.saturating_add(self.max_ttl_ms));
        self.round.push(d);
        // Bounded whatever the caller's rounds.
        if self.round.len() >= MAX_ROUND {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// A store error is counted and logged, not fatal: the engine keeps
    /// deciding, and the decisions are still in every other sink. A disk
    /// that cannot be written is not even an error here: the decisions are
    /// enforced from memory and written when it can be (the store logs it
    /// and counts what waits).
    fn checkpoint(&mut self) -> Result<(), SinkError> {
        if self.round.is_empty() {
            return Ok(());
        }
        let round = std::mem::take(&mut self.round);
        let n = round.len() as u64;
        if let Err(e) = self.store.put_automatic_many(round, now_ms()) {
            self.metrics.store_errors.inc_by(n);
            tracing::error!(error = %e, "decisions not persisted");
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.checkpoint()
    }
}
