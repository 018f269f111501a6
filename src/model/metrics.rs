//! Detection metrics for a scored, labelled held-out set.

use serde::{Deserialize, Serialize};

/// How a model does at its threshold, and over all thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub rows: usize,
    pub positives: usize,
    pub threshold: f64,
    pub true_positives: usize,
    pub false_positives: usize,
    pub precision: f64,
    pub recall: f64,
    /// False-positive rate: benign rows flagged / benign rows.
    pub fpr: f64,
    /// Area under the precision–recall curve, as average precision (the mean of
    /// the precision at each positive's rank; ties count together).
    pub pr_auc: f64,
}

/// Computes [`Metrics`] for `scores` (higher = more likely an attack) against `labels`.
pub fn evaluate(scores: &[f64], labels: &[bool], threshold: f64) -> Metrics {
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = labels.len() - positives;
    let (mut tp, mut fp) = (0, 0);
    for (s, l) in scores.iter().zip(labels) {
        if *s >= threshold {
            if *l {
                tp += 1;
            } else {
                fp += 1;
            }
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Metrics {
        rows: scores.len(),
        positives,
        threshold,
        true_positives: tp,
        false_positives: fp,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, positives),
        fpr: ratio(fp, negatives),
        pr_auc: average_precision(scores, labels),
    }
}

/// Average precision: walk thresholds from the highest score down; at each
/// distinct score, add precision × the recall gained there.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 {
        return 0.0;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut seen, mut ap) = (0usize, 0usize, 0.0);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        let mut gained = 0;
        while i < order.len() && scores[order[i]] == s {
            seen += 1;
            if labels[order[i]] {
                tp += 1;
                gained += 1;
            }
            i += 1;
        }
        if gained > 0 {
            ap += (tp as f64 / seen as f64) * (gained as f64 / positives as f64);
        }
    }
    // A sum of fractions may land a rounding step above 1.
    ap.min(1.0)
}

/// The score at the `q` quantile (0..=1) of `scores` (nearest rank).
pub fn quantile(scores: &[f64], q: f64) -> f64 {
    if scores.is_empty() {
        return f64::INFINITY;
    }
    let mut v = scores.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5];
        let labels = [true, false, true, false, false];
        // precision at the positives' ranks: 1/1 and 2/3 → AP = (1 + 2/3) / 2.
        assert!((average_precision(&scores, &labels) - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        let m = evaluate(&scores, &labels, 0.7);
        assert_eq!((m.true_positives, m.false_positives), (2, 1));
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12 && m.recall == 1.0 && (m.fpr - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.5), 2.0);
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 1.0), 4.0);
    }
}
