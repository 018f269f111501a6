//! The live decision store as a sink: every engine decision is persisted and
//! published to the API's readers as it is made.

use std::sync::Arc;

use crate::decision::Decision;
use crate::event::time::now_ms;
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError, Wants};

use super::LiveStore;

/// Publishes engine decisions to the store the API serves.
pub struct StoreSink {
    store: Arc<LiveStore>,
    metrics: Arc<Metrics>,
    max_ttl_ms: i64,
}

impl StoreSink {
    pub fn new(store: Arc<LiveStore>, metrics: Arc<Metrics>, max_ttl_ms: i64) -> Self {
        StoreSink { store, metrics, max_ttl_ms }
    }
}

impl Sink for StoreSink {
    fn name(&self) -> &str {
        "store"
    }

    fn wants(&self) -> Wants {
        Wants { decisions: true, ..Wants::NONE }
    }

    /// A store error is counted and logged, not fatal: the engine keeps
    /// deciding, and the decision is still in every other sink.
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
        if let Err(e) = self.store.put_automatic(d, now) {
            self.metrics.store_errors.inc();
            tracing::error!(error = %e, "decision not persisted");
        }
        Ok(())
    }
}
