//! What fired today: decisions by source and action, enforced and shadow,
//! since midnight UTC, and the scores each model computed.
//!
//! Prometheus counters run from process start and say nothing of a day; the
//! analyst's question "which rules and model versions fired how often today,
//! and how sure were the models?" needs the day's own counts. The day is the
//! wall clock's (the day the decision was recorded), so a replay of old logs
//! counts under today, as it would on a dashboard. A model's histogram is of
//! every score it computed (the entities it judged, flagged or not), so it
//! shows where its thresholds cut the traffic, not only what passed them.
//! Memory is fixed: at most [`MAX_SOURCES`] source/action pairs (the rest
//! count under `other`) and the newest [`KEPT_SCORES`] scores per model.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::decision::Decision;

/// Source/action pairs counted one by one per day.
pub const MAX_SOURCES: usize = 1_000;
/// Models whose scores are kept; past this many, a model's scores are not.
pub const MAX_MODELS: usize = 64;
/// Scores kept per model (the newest).
pub const KEPT_SCORES: usize = 4_096;
/// Bins of a score histogram.
pub const BINS: usize = 20;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Default)]
struct Day {
    day: i64,
    counts: BTreeMap<(String, &'static str, bool), u64>,
    scores: BTreeMap<(String, bool), (u64, VecDeque<f64>)>,
}

/// The day's decisions; see the module doc.
#[derive(Debug, Default)]
pub struct Fired {
    inner: Mutex<Day>,
}

/// One source's count for the day.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FiredCount {
    pub source: String,
    pub action: &'static str,
    pub shadow: bool,
    pub decisions: u64,
}

/// The scores one model computed today, binned between their extremes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScoreHistogram {
    pub source: String,
    pub shadow: bool,
    /// Scores computed today (the histogram bins the newest [`KEPT_SCORES`]).
    pub scored: u64,
    /// Decisions the model made today (every action).
    pub decisions: u64,
    /// `BINS + 1` bin edges, lowest first.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

/// What [`Fired::snapshot`] returns.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FiredDay {
    /// The day counted, `YYYY-MM-DD` (UTC).
    pub day: String,
    pub counts: Vec<FiredCount>,
    pub histograms: Vec<ScoreHistogram>,
}

impl Fired {
    /// Counts `d`, made now (`now_ms`), enforced or `shadow`.
    pub fn record(&self, d: &Decision, shadow: bool, now_ms: i64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let day = now_ms.div_euclid(DAY_MS);
        if day != g.day {
            *g = Day { day, ..Day::default() };
        }
        let key = (d.source.clone(), d.action.as_str(), shadow);
        if g.counts.len() < MAX_SOURCES || g.counts.contains_key(&key) {
            *g.counts.entry(key).or_default() += 1;
        } else {
            *g.counts.entry(("other".to_string(), d.action.as_str(), shadow)).or_default() += 1;
        }
    }

    /// Counts the scores model `source` computed in one batch.
    pub fn record_scores(&self, source: &str, shadow: bool, scores: &[f64], now_ms: i64) {
        if scores.is_empty() {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let day = now_ms.div_euclid(DAY_MS);
        if day != g.day {
            *g = Day { day, ..Day::default() };
        }
        let key = (source.to_string(), shadow);
        if g.scores.len() >= MAX_MODELS && !g.scores.contains_key(&key) {
            return;
        }
        let (seen, kept) = g.scores.entry(key).or_default();
        *seen += scores.len() as u64;
        let fresh = scores.iter().copied().filter(|s| s.is_finite());
        let skip = scores.len().saturating_sub(KEPT_SCORES);
        for s in fresh.skip(skip) {
            if kept.len() == KEPT_SCORES {
                kept.pop_front();
            }
            kept.push_back(s);
        }
    }

    /// The day's counts, most first, and a histogram per model. A day that
    /// ended with nothing recorded since reads as empty.
    pub fn snapshot(&self, now_ms: i64) -> FiredDay {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let today = now_ms.div_euclid(DAY_MS);
        let day = crate::event::time::format_rfc3339(today * DAY_MS).chars().take(10).collect();
        if g.day != today {
            return FiredDay { day, counts: Vec::new(), histograms: Vec::new() };
        }
        let mut counts: Vec<FiredCount> = g
            .counts
            .iter()
            .map(|((source, action, shadow), n)| FiredCount {
                source: source.clone(),
                action,
                shadow: *shadow,
                decisions: *n,
            })
            .collect();
        counts.sort_by(|a, b| b.decisions.cmp(&a.decisions).then_with(|| a.source.cmp(&b.source)));
        let histograms = g
            .scores
            .iter()
            .map(|((source, shadow), (scored, scores))| {
                let (edges, counts) = histogram(scores.iter().copied());
                let decisions =
                    g.counts.iter().filter(|((s, _, sh), _)| s == source && sh == shadow).map(|(_, n)| *n).sum();
                ScoreHistogram { source: source.clone(), shadow: *shadow, scored: *scored, decisions, edges, counts }
            })
            .collect();
        FiredDay { day, counts, histograms }
    }
}

/// [`BINS`] equal bins from the lowest score to the highest (one bin of
/// width 1 around a single value).
fn histogram(scores: impl Iterator<Item = f64> + Clone) -> (Vec<f64>, Vec<u64>) {
    let (lo, hi) = scores.clone().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| (lo.min(s), hi.max(s)));
    if !lo.is_finite() {
        return (Vec::new(), Vec::new());
    }
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, lo + 0.5) };
    let width = (hi - lo) / BINS as f64;
    let edges = (0..=BINS).map(|i| lo + width * i as f64).collect();
    let mut counts = vec![0u64; BINS];
    for s in scores {
        let bin = (((s - lo) / width) as usize).min(BINS - 1);
        counts[bin] += 1;
    }
    (edges, counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Action;
    use crate::features::EntityType;

    fn decision(source: &str, action: Action, score: f64) -> Decision {
        Decision {
            id: 1,
            entity_type: EntityType::Ip,
            entity: "203.0.113.7".into(),
            action,
            reason: "r".into(),
            source: source.into(),
            score,
            created_ms: 0,
            expires_ms: 1,
            offense: 1,
            spared: Vec::new(),
        }
    }

    #[test]
    fn counts_the_day_by_source_and_bins_model_scores() {
        let f = Fired::default();
        let now = 20_000 * DAY_MS + 5_000;
        f.record_scores("model:iso@2", false, &[1.0, 2.0, 3.0, 4.0, 1.5, f64::NAN], now);
        for s in [3.0, 4.0, 3.5, 3.9] {
            f.record(&decision("model:iso@2", Action::Challenge, s), false, now);
        }
        f.record(&decision("rule:flood", Action::Deny, 1.0), false, now);
        f.record(&decision("rule:flood", Action::Deny, 1.0), true, now);
        let day = f.snapshot(now);
        assert_eq!(day.day, "2024-10-04");
        assert_eq!(
            day.counts[0],
            FiredCount { source: "model:iso@2".into(), action: "challenge", shadow: false, decisions: 4 }
        );
        assert_eq!(day.counts.len(), 3);
        let h = &day.histograms[0];
        assert_eq!((h.source.as_str(), h.scored, h.decisions), ("model:iso@2", 6, 4));
        assert_eq!(h.counts.iter().sum::<u64>(), 5, "the NaN is not binned");
        assert_eq!((h.edges[0], h.edges[BINS]), (1.0, 4.0));
        assert_eq!((h.counts[0], h.counts[BINS - 1]), (1, 1));
    }

    #[test]
    fn a_new_day_starts_empty_and_memory_is_bounded() {
        let f = Fired::default();
        let now = 20_000 * DAY_MS;
        for i in 0..(MAX_SOURCES + 10) {
            f.record(&decision(&format!("rule:r{i}"), Action::Deny, 1.0), false, now);
        }
        let scores: Vec<f64> = (0..(KEPT_SCORES + 10)).map(|i| i as f64).collect();
        f.record_scores("model:m@1", false, &scores[..100], now);
        f.record_scores("model:m@1", false, &scores, now);
        let day = f.snapshot(now);
        assert!(day.counts.len() <= MAX_SOURCES + 1);
        assert!(day.counts.iter().any(|c| c.source == "other"));
        let h = day.histograms.iter().find(|h| h.source == "model:m@1").map(|h| h.counts.iter().sum::<u64>());
        assert_eq!(h, Some(KEPT_SCORES as u64));
        for m in 0..(MAX_MODELS + 5) {
            f.record_scores(&format!("model:m{m}@1"), true, &[1.0], now);
        }
        assert!(f.snapshot(now).histograms.len() <= MAX_MODELS);
        assert!(f.snapshot(now + DAY_MS).counts.is_empty());
        f.record(&decision("rule:a", Action::Deny, 1.0), false, now + DAY_MS);
        assert_eq!(f.snapshot(now + DAY_MS).counts.len(), 1);
    }
}
