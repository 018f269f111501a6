//! Shadow decisions in live mode: what shadow rules and models would have
//! decided, kept for the admin API (`GET /v1/admin/shadow`) and counted in
//! `/metrics`, and never given to the store the gateways read. Every one is
//! also in the run's `shadow_decisions` table; memory holds only the newest
//! [`KEPT`], so a shadow rule that fires on a flood costs a fixed amount.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::decision::Decision;
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError, Wants};

/// Shadow decisions kept in memory, newest last.
pub const KEPT: usize = 10_000;

/// Sources and actions counted one by one; past this many pairs (a reload
/// loop renaming rules) the rest count under `other`.
const MAX_SOURCES: usize = 1_000;

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<Arc<Decision>>,
    total: u64,
    by_source: BTreeMap<(String, &'static str), u64>,
}

/// The newest shadow decisions and how many each source made.
#[derive(Debug, Default)]
pub struct ShadowLog {
    inner: Mutex<Inner>,
}

/// What [`ShadowLog::snapshot`] returns: totals and the newest decisions.
#[derive(Debug, Clone, Default)]
pub struct ShadowSnapshot {
    /// Shadow decisions since the start.
    pub total: u64,
    /// Decisions by (source, action) since the start.
    pub by_source: Vec<(String, &'static str, u64)>,
    /// The newest matching decisions, newest first.
    pub recent: Vec<Arc<Decision>>,
}

impl ShadowLog {
    pub fn new() -> ShadowLog {
        ShadowLog::default()
    }

    pub fn push(&self, d: &Decision) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.total += 1;
        let key = (d.source.clone(), d.action.as_str());
        if g.by_source.len() < MAX_SOURCES || g.by_source.contains_key(&key) {
            *g.by_source.entry(key).or_default() += 1;
        } else {
            *g.by_source.entry(("other".to_string(), d.action.as_str())).or_default() += 1;
        }
        if g.recent.len() == KEPT {
            g.recent.pop_front();
        }
        g.recent.push_back(Arc::new(d.clone()));
    }

    /// The newest `limit` decisions `keep` accepts, with the totals.
    pub fn snapshot(&self, limit: usize, keep: impl Fn(&Decision) -> bool) -> ShadowSnapshot {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ShadowSnapshot {
            total: g.total,
            by_source: g.by_source.iter().map(|((s, a), n)| (s.clone(), *a, *n)).collect(),
            recent: g.recent.iter().rev().filter(|d| keep(d)).take(limit).cloned().collect(),
        }
    }
}

/// Gives the engine's shadow decisions to the log and the metrics; enforced
/// decisions are not its business (the [`super::StoreSink`] has them).
pub struct ShadowSink {
    log: Arc<ShadowLog>,
    metrics: Arc<Metrics>,
}

impl ShadowSink {
    pub fn new(log: Arc<ShadowLog>, metrics: Arc<Metrics>) -> Self {
        ShadowSink { log, metrics }
    }
}

impl Sink for ShadowSink {
    fn name(&self) -> &str {
        "shadow"
    }

    fn wants(&self) -> Wants {
        Wants { decisions: true, ..Wants::NONE }
    }

    fn shadow_decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        self.metrics.shadow_decisions.with_label_values(&[d.source.as_str(), d.action.as_str()]).inc();
        self.metrics.fired.record(d, true, crate::event::time::now_ms());
        self.log.push(d);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Action;
    use crate::features::EntityType;

    fn decision(i: u64, source: &str) -> Decision {
        Decision {
            id: crate::decision::SHADOW_ID_BASE + i,
            entity_type: EntityType::Ip,
            entity: format!("192.0.2.{}", i % 250),
            action: Action::Deny,
            reason: "r".into(),
            source: source.into(),
            score: 1.0,
            created_ms: i as i64,
            expires_ms: i as i64 + 1_000,
            offense: 1,
            spared: Vec::new(),
        }
    }

    #[test]
    fn the_log_keeps_the_newest_and_counts_all() {
        let log = ShadowLog::new();
        for i in 0..(KEPT as u64 + 500) {
            log.push(&decision(i, if i % 2 == 0 { "rule:a" } else { "rule:b" }));
        }
        let s = log.snapshot(3, |_| true);
        assert_eq!(s.total, KEPT as u64 + 500);
        assert_eq!(s.by_source, [("rule:a".to_string(), "deny", 5_250), ("rule:b".to_string(), "deny", 5_250)]);
        let ids: Vec<u64> = s.recent.iter().map(|d| d.id - crate::decision::SHADOW_ID_BASE).collect();
        assert_eq!(ids, [10_499, 10_498, 10_497]);
        let only_a = log.snapshot(usize::MAX, |d| d.source == "rule:a");
        assert_eq!(only_a.recent.len(), KEPT / 2);
        assert_eq!(only_a.recent.last().map(|d| d.id - crate::decision::SHADOW_ID_BASE), Some(500));
    }
}
