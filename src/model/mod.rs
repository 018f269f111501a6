//! Models next to rules: a linfa-trained estimator over one entity type's
//! feature rows, scored in the stream with the features that drove each score.
//!
//! A model is a directory: `model.json` (what scoring needs: feature list,
//! transform, scaler, fitted parameters, threshold) and a model card
//! (`card.md`, `card.json`). Training uses linfa ([`train`]); scoring reads the
//! fitted parameters directly, so a score can be explained term by term and
//! costs a few hundred nanoseconds per row.
//!
//! Two kinds:
//! - `anomaly`: a Gaussian mixture over standardised, log-scaled features fitted
//!   to traffic assumed mostly benign. Score = negative log-likelihood: how
//!   unlike anything normal the row is. A feature's contribution is its squared
//!   standardised distance from the most responsible component (per its variance).
//! - `classifier`: logistic regression trained from labels. Score = probability
//!   of attack; a feature's contribution is coefficient × standardised value.

pub mod metrics;
pub mod train;

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, Float64Array};
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::features::{self, EntityType};

/// The model file format this build reads and writes.
pub const FORMAT: &str = "gatewatch-model/1";

/// A model could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("training: {0}")]
    Train(String),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// What kind of estimator a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Anomaly,
    Classifier,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Anomaly => "anomaly",
            Kind::Classifier => "classifier",
        }
    }
}

/// Fitted parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Params {
    /// Gaussian mixture: per component a weight, a mean and a full covariance (row-major d×d).
    Gmm { weights: Vec<f64>, means: Vec<Vec<f64>>, covariances: Vec<Vec<f64>> },
    /// Logistic regression on the standardised features.
    Logistic { coefficients: Vec<f64>, intercept: f64 },
}

/// `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelFile {
    pub format: String,
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub entity: EntityType,
    /// Feature columns, in the order of the parameters.
    pub features: Vec<String>,
    /// Mean and standard deviation of `ln(1 + max(x, 0))` per feature on the training rows.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub params: Params,
    /// The score at and above which a row is flagged (picked at training).
    pub threshold: f64,
}

/// The models the default pipeline uses, built into the binary so that the
/// embedded default pipeline works from any directory.
pub const EMBEDDED: &[(&str, &str)] = &[("ip-classifier", include_str!("../../models/ip-classifier/model.json"))];

/// A row's score and what drove it.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub row: usize,
    pub score: f64,
    /// The features that pushed the score up most: (name, raw value, contribution).
    pub top: Vec<(&'static str, f64, f64)>,
}

/// A loaded model, ready to score feature batches.
#[derive(Debug, Clone)]
pub struct Model {
    pub file: ModelFile,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Schema column of each feature.
    columns: Vec<usize>,
    names: Vec<&'static str>,
    prepared: Prepared,
}

#[derive(Debug, Clone)]
enum Prepared {
    /// Per component: ln weight − ½ ln det Σ − d/2 ln 2π, mean, inverse covariance, and its diagonal variances.
    Gmm {
        consts: Vec<f64>,
        means: Vec<Vec<f64>>,
        precisions: Vec<Vec<f64>>,
    },
    Logistic {
        coefficients: Vec<f64>,
        intercept: f64,
    },
}

/// `ln(1 + x)` of the non-negative part: counts and byte totals span orders of
/// magnitude; the log keeps one heavy user from stretching the scale. A missing
/// value (a ratio with no denominator) counts as 0.
pub fn transform(x: Option<f64>) -> f64 {
    match x {
        Some(v) if v.is_finite() => v.max(0.0).ln_1p(),
        _ => 0.0,
    }
}

impl Model {
    /// Loads `dir/model.json` (or a path to the file itself) and checks that it
    /// is complete and consistent; a corrupt or foreign file is refused with why.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let file_path = if path.is_dir() { path.join("model.json") } else { path.to_path_buf() };
        let bytes = std::fs::read(&file_path).map_err(|source| ModelError::Io { path: file_path.clone(), source })?;
        let invalid = |m: String| ModelError::Invalid { path: file_path.clone(), message: m };
        let file: ModelFile =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not a gatewatch model file: {e}")))?;
        Model::from_file(file, file_path.clone()).map_err(invalid)
    }

    /// A model built into the binary, by directory name.
    pub fn embedded(name: &str) -> Option<Model> {
        let (_, text) = EMBEDDED.iter().find(|(n, _)| *n == name)?;
        let file: ModelFile = serde_json::from_str(text).ok()?;
        Model::from_file(file, PathBuf::from(format!("(built in)/{name}/model.json"))).ok()
    }

    /// Validates a model file and prepares it for scoring.
    pub fn from_file(file: ModelFile, path: PathBuf) -> Result<Model, String> {
        if file.format != FORMAT {
            return Err(format!("format '{}' is not {FORMAT} (made by another version?)", file.format));
        }
        let d = file.features.len();
        if d == 0 {
            return Err("no features".into());
        }
        let mut columns = Vec::with_capacity(d);
        let mut names = Vec::with_capacity(d);
        for f in &file.features {
            let i = features::FEATURES
                .iter()
                .position(|(n, _)| n == f)
                .ok_or_else(|| format!("feature '{f}' does not exist in this build"))?;
            columns.push(3 + i);
            names.push(features::FEATURES[i].0);
        }
        if file.mean.len() != d || file.std.len() != d {
            return Err(format!(
                "scaler has {} means and {} deviations for {d} features",
                file.mean.len(),
                file.std.len()
            ));
        }
        if file.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || file.mean.iter().any(|m| !m.is_finite()) {
            return Err("scaler values must be finite, deviations positive".into());
        }
        if !file.threshold.is_finite() {
            return Err("threshold is not a number".into());
        }
        let prepared = match &file.params {
            Params::Logistic { coefficients, intercept } => {
                if coefficients.len() != d || !intercept.is_finite() || coefficients.iter().any(|c| !c.is_finite()) {
                    return Err(format!("logistic parameters do not fit {d} features"));
                }
                if file.kind != Kind::Classifier {
                    return Err("logistic parameters in a model that is not a classifier".into());
                }
                Prepared::Logistic { coefficients: coefficients.clone(), intercept: *intercept }
            }
            Params::Gmm { weights, means, covariances } => {
                if file.kind != Kind::Anomaly {
                    return Err("mixture parameters in a model that is not an anomaly model".into());
                }
                let k = weights.len();
                if k == 0 || means.len() != k || covariances.len() != k {
                    return Err("mixture components do not match".into());
                }
                let mut consts = Vec::with_capacity(k);
                let mut precisions = Vec::with_capacity(k);
                for c in 0..k {
                    if means[c].len() != d
                        || covariances[c].len() != d * d
                        || weights[c].partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
                    {
                        return Err(format!("mixture component {c} does not fit {d} features"));
                    }
                    let (inv, log_det) = invert_spd(&covariances[c], d)
                        .ok_or_else(|| format!("component {c}: covariance not positive definite"))?;
                    consts.push(weights[c].ln() - 0.5 * log_det - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln());
                    precisions.push(inv);
                }
                Prepared::Gmm { consts, means: means.clone(), precisions }
            }
        };
        Ok(Model { file, path, columns, names, prepared })
    }

    /// `NAME@VERSION`, as decisions cite it.
    pub fn id(&self) -> String {
        format!("{}@{}", self.file.name, self.file.version)
    }

    /// Schema columns the model reads.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// Standardised, transformed features of one row.
    pub fn standardise(&self, raw: &[Option<f64>], out: &mut Vec<f64>) {
        out.clear();
        for (j, x) in raw.iter().enumerate() {
            out.push((transform(*x) - self.file.mean[j]) / self.file.std[j]);
        }
    }

    /// The score of one standardised row, and each feature's contribution.
    pub fn score_row(&self, z: &[f64], contrib: &mut Vec<f64>) -> f64 {
        contrib.clear();
        match &self.prepared {
            Prepared::Logistic { coefficients, intercept } => {
                let mut s = *intercept;
                for (c, v) in coefficients.iter().zip(z) {
                    contrib.push(c * v);
                    s += c * v;
                }
                1.0 / (1.0 + (-s).exp())
            }
            Prepared::Gmm { consts, means, precisions } => {
                let d = z.len();
                let mut best = (f64::NEG_INFINITY, 0);
                let mut logs = Vec::with_capacity(consts.len());
                let mut diff = vec![0.0; d];
                for (c, k) in consts.iter().enumerate() {
                    for j in 0..d {
                        diff[j] = z[j] - means[c][j];
                    }
                    let p = &precisions[c];
                    let mut q = 0.0;
                    for a in 0..d {
                        let row = &p[a * d..(a + 1) * d];
                        let mut t = 0.0;
                        for b in 0..d {
                            t += row[b] * diff[b];
                        }
                        q += diff[a] * t;
                    }
                    let l = k - 0.5 * q;
                    if l > best.0 {
                        best = (l, c);
                    }
                    logs.push(l);
                }
                let m = best.0;
                let log_p = m + logs.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
                // Contributions: each feature's share of the Mahalanobis distance to the
                // most responsible component (its diagonal terms).
                let (c, p) = (best.1, &precisions[best.1]);
                for j in 0..d {
                    let dj = z[j] - means[c][j];
                    contrib.push(0.5 * dj * dj * p[j * d + j]);
                }
                -log_p
            }
        }
    }

    /// Scores every row of a feature batch (of this model's entity type).
    pub fn score_batch(&self, batch: &RecordBatch) -> Result<Vec<Score>, ModelError> {
        self.score_where(batch, |_| true, f64::NEG_INFINITY, None)
    }

    /// Scores the rows `keep` selects and returns those scoring at least
    /// `at_least`. Explaining a score (its top features) allocates and sorts,
    /// and the engine acts only on rows its guard lets through that pass a
    /// threshold: in a flood of new addresses, explaining every row was most
    /// of what the model cost. Every score computed, above the threshold
    /// or not, is pushed onto `seen` when given (the distribution the
    /// console plots beside the thresholds).
    pub fn score_where(
        &self,
        batch: &RecordBatch,
        keep: impl Fn(usize) -> bool,
        at_least: f64,
        mut seen: Option<&mut Vec<f64>>,
    ) -> Result<Vec<Score>, ModelError> {
        let cols: Vec<&Float64Array> = self
            .columns
            .iter()
            .map(|&i| batch.column(i).as_any().downcast_ref::<Float64Array>())
            .collect::<Option<_>>()
            .ok_or_else(|| ModelError::Invalid {
                path: self.path.clone(),
                message: "feature columns are not Float64".into(),
            })?;
        let mut raw = vec![None; cols.len()];
        let (mut z, mut contrib) = (Vec::new(), Vec::new());
        let mut out = Vec::new();
        for row in (0..batch.num_rows()).filter(|&r| keep(r)) {
            for (j, c) in cols.iter().enumerate() {
                raw[j] = (!c.is_null(row)).then(|| c.value(row));
            }
            self.standardise(&raw, &mut z);
            let score = self.score_row(&z, &mut contrib);
            if let Some(s) = seen.as_mut() {
                s.push(score);
            }
            if score < at_least {
                continue;
            }
            out.push(Score { row, score, top: self.top(&raw, &contrib, 3) });
        }
        Ok(out)
    }

    /// The `n` features that raised the score most.
    fn top(&self, raw: &[Option<f64>], contrib: &[f64], n: usize) -> Vec<(&'static str, f64, f64)> {
        let mut idx: Vec<usize> = (0..contrib.len()).filter(|&j| contrib[j] > 0.0).collect();
        idx.sort_by(|a, b| contrib[*b].total_cmp(&contrib[*a]));
        idx.into_iter().take(n).map(|j| (self.names[j], raw[j].unwrap_or(0.0), contrib[j])).collect()
    }
}

/// Inverse and log-determinant of a symmetric positive-definite d×d matrix (Cholesky).
fn invert_spd(m: &[f64], d: usize) -> Option<(Vec<f64>, f64)> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut s = m[i * d + j];
            for k in 0..j {
                s -= l[i * d + k] * l[j * d + k];
            }
            if i == j {
                if s.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !s.is_finite() {
                    return None;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    let log_det = 2.0 * (0..d).map(|i| l[i * d + i].ln()).sum::<f64>();
    // Inverse of L (lower triangular), then Σ⁻¹ = L⁻ᵀ L⁻¹.
    let mut li = vec![0.0; d * d];
    for i in 0..d {
        li[i * d + i] = 1.0 / l[i * d + i];
        for j in 0..i {
            let mut s = 0.0;
            for k in j..i {
                s -= l[i * d + k] * li[k * d + j];
            }
            li[i * d + j] = s / l[i * d + i];
        }
    }
    let mut inv = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            let mut s = 0.0;
            for k in i.max(j)..d {
                s += li[k * d + i] * li[k * d + j];
            }
            inv[i * d + j] = s;
        }
    }
    Some((inv, log_det))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gmm_file() -> ModelFile {
        ModelFile {
            format: FORMAT.into(),
            name: "t".into(),
            version: "1".into(),
            kind: Kind::Anomaly,
            entity: EntityType::Ip,
            features: vec!["requests_1m".into(), "login_failures_10m".into()],
            mean: vec![0.0, 0.0],
            std: vec![1.0, 1.0],
            params: Params::Gmm {
                weights: vec![1.0],
                means: vec![vec![0.0, 0.0]],
                covariances: vec![vec![2.0, 0.5, 0.5, 1.0]],
            },
            threshold: 5.0,
        }
    }

    #[test]
    fn inverse_and_log_likelihood_match_the_closed_form() {
        let (inv, log_det) = invert_spd(&[2.0, 0.5, 0.5, 1.0], 2).expect("spd");
        let det: f64 = 2.0 * 1.0 - 0.25;
        assert!((log_det - det.ln()).abs() < 1e-12);
        let want = [1.0 / det, -0.5 / det, -0.5 / det, 2.0 / det];
        for (a, b) in inv.iter().zip(want) {
            assert!((a - b).abs() < 1e-12);
        }
        let m = Model::from_file(gmm_file(), "t".into()).expect("model");
        let z = [1.0, -1.0];
        let q = z[0] * (want[0] * z[0] + want[1] * z[1]) + z[1] * (want[2] * z[0] + want[3] * z[1]);
        let nll = 0.5 * q + 0.5 * det.ln() + (2.0 * std::f64::consts::PI).ln();
        let mut contrib = Vec::new();
        assert!((m.score_row(&z, &mut contrib) - nll).abs() < 1e-9);
        assert_eq!(contrib.len(), 2);
    }

    /// The engine's scoring (guarded rows, past a threshold) is the full
    /// scoring filtered: same rows, same scores, same explanations.
    #[test]
    fn scoring_where_is_scoring_filtered() {
        let model = Model::from_file(gmm_file(), PathBuf::from("t")).expect("model");
        let states: Vec<crate::features::state::EntityState> = (0..40)
            .map(|i| {
                let mut st = crate::features::state::EntityState::new(format!("10.0.0.{i}").as_str().into(), 0);
                let mut k = crate::features::state::Contribution { ts: 1_000, ..Default::default() };
                k.counts[crate::features::state::c::REQ] = 1;
                k.counts[crate::features::state::c::LOGIN_FAIL] = (i % 3) as u32;
                for _ in 0..(i % 7) {
                    st.apply(&k, None, false);
                }
                st
            })
            .collect();
        let batch = crate::features::build_batch(EntityType::Ip, 1_000, states.iter()).expect("batch");
        let all = model.score_batch(&batch).expect("score");
        assert_eq!(all.len(), 40);
        let at_least = all.iter().map(|s| s.score).fold(f64::NEG_INFINITY, f64::max) / 2.0;
        let some = model.score_where(&batch, |r| r % 2 == 0, at_least, None).expect("score");
        let want: Vec<&Score> = all.iter().filter(|s| s.row % 2 == 0 && s.score >= at_least).collect();
        assert!(!want.is_empty() && want.len() < 20, "{} rows kept", want.len());
        assert_eq!(some.len(), want.len());
        for (a, b) in some.iter().zip(want) {
            assert_eq!((a.row, a.score.to_bits(), &a.top), (b.row, b.score.to_bits(), &b.top));
        }
    }

    #[test]
    fn corrupt_and_foreign_files_are_refused_with_why() {
        let mut f = gmm_file();
        f.format = "other/9".into();
        assert!(Model::from_file(f, "x".into()).unwrap_err().contains("format"));
        let mut f = gmm_file();
        f.features.push("no_such_feature".into());
        assert!(Model::from_file(f, "x".into()).unwrap_err().contains("no_such_feature"));
        let mut f = gmm_file();
        f.params = Params::Gmm {
            weights: vec![1.0],
            means: vec![vec![0.0, 0.0]],
            covariances: vec![vec![1.0, 2.0, 2.0, 1.0]],
        };
        assert!(Model::from_file(f, "x".into()).unwrap_err().contains("positive definite"));
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("model.json"), b"{\"format\": \"gatewatch-model/1\", \"trunc").expect("write");
        let e = Model::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("model.json") && e.contains("not a gatewatch model file"), "{e}");
    }
}
