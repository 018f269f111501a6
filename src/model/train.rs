//! `gatewatch train`: a training set from stored feature snapshots joined with
//! labels, split by time, fitted with linfa, a threshold picked, and the model
//! written with its card.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, Float64Array, StringArray, TimestampMillisecondArray};
use linfa::prelude::*;
use ndarray::{Array1, Array2};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use super::metrics::{self, Metrics};
use super::{FORMAT, Kind, Model, ModelError, ModelFile, Params, transform};
use crate::features::{self, EntityType, networks_of, subnet_of};

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Run directories with a `features/` table (`gatewatch replay --out`):
    /// several seeds, scales and mixes, so that a model learns behaviour
    /// rather than one run's constants.
    pub data: Vec<PathBuf>,
    /// The labels of each run, in the same order: JSON lines of simulator
    /// labels (one per request, naming its entities) or analyst verdicts
    /// `{"entity_type", "entity", "attack", "from"?, "to"?}`.
    pub labels: Vec<PathBuf>,
    pub kind: Kind,
    pub entity: EntityType,
    /// The model directory to write (`model.json`, `card.md`, `card.json`).
    pub out: PathBuf,
    pub version: String,
    /// Features to use; `None`: every feature that varies in the training rows.
    pub features: Option<Vec<String>>,
    /// Share of benign training rows allowed at or above the threshold.
    pub target_fpr: f64,
    /// The latest share of the time range held out for evaluation.
    pub holdout: f64,
    /// Mixture components (anomaly).
    pub components: usize,
    pub seed: u64,
    /// L2 penalty of the classifier: larger keeps coefficients small, so no
    /// single feature can carry a verdict alone.
    pub l2: f64,
    /// Most rows fitted (a deterministic, evenly spaced sample beyond that).
    pub max_train_rows: usize,
    /// The command line that produced it, for the card.
    pub command: String,
}

/// Card metadata (`card.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Card {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub entity: EntityType,
    pub features: Vec<String>,
    pub transform: String,
    pub scaler_mean: Vec<f64>,
    pub scaler_std: Vec<f64>,
    pub data: String,
    pub labels: String,
    pub label_source: String,
    pub train_from: String,
    pub train_to: String,
    pub holdout_from: String,
    pub holdout_to: String,
    pub train_rows: usize,
    pub train_rows_fitted: usize,
    pub train_positives: usize,
    pub target_fpr: f64,
    pub l2: f64,
    pub threshold: f64,
    pub holdout: Metrics,
    pub seed: u64,
    pub command: String,
}

/// Labelled feature rows of one entity type, in time order.
pub struct Dataset {
    pub ts: Vec<i64>,
    pub entity: Vec<String>,
    /// Raw feature values (all features, schema order), row-major.
    pub raw: Vec<Vec<Option<f64>>>,
    pub label: Vec<bool>,
    pub label_source: String,
}

/// Attack and benign request counts per entity per 10-minute bucket.
#[derive(Default)]
struct Counts {
    buckets: HashMap<(String, i64), (u32, u32)>,
    verdicts: HashMap<String, Vec<(bool, i64, i64)>>,
    requests: usize,
    entity_verdicts: usize,
}

const BUCKET: i64 = 600_000;

fn load_labels(path: &Path, t: EntityType, data: &Path) -> Result<Counts, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
    let mut c = Counts::default();
    // Labels that name only a request: resolved against the run's events table.
    let mut by_request: HashMap<String, bool> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |m: &str| ModelError::Invalid { path: path.to_path_buf(), message: format!("line {}: {m}", i + 1) };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let attack = v.get("attack").and_then(|a| a.as_bool()).ok_or_else(|| bad("no boolean 'attack'"))?;
        if let (Some(et), Some(e)) =
            (v.get("entity_type").and_then(|x| x.as_str()), v.get("entity").and_then(|x| x.as_str()))
        {
            if EntityType::parse(et).ok_or_else(|| bad("unknown entity_type"))? == t {
                let time =
                    |k: &str| v.get(k).and_then(|x| x.as_str()).and_then(|s| crate::event::time::parse_rfc3339(s).ok());
                c.verdicts.entry(e.to_string()).or_default().push((
                    attack,
                    time("from").unwrap_or(i64::MIN),
                    time("to").unwrap_or(i64::MAX),
                ));
                c.entity_verdicts += 1;
            }
            continue;
        }
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let Some(ts) = v.get("ts").and_then(|x| x.as_i64()) else {
            let id = field("request_id").ok_or_else(|| {
                bad("a label names an entity (entity_type, entity) or a request (request_id, and ts with its entities)")
            })?;
            by_request.insert(id, attack);
            continue;
        };
        // An IPv6 address is in two networks (its /48 and its /56).
        let entities: Vec<String> = match t {
            EntityType::Ip => field("ip").into_iter().collect(),
            EntityType::Cidr => field("ip").and_then(|ip| ip.parse().ok()).map(subnet_of).into_iter().collect(),
            EntityType::Network => {
                field("ip").and_then(|ip| ip.parse().ok()).map(networks_of).into_iter().flatten().collect()
            }
            EntityType::User => field("user").into_iter().collect(),
            EntityType::ApiKey => field("api_key").into_iter().collect(),
            EntityType::Device => field("device").into_iter().collect(),
            EntityType::Session => field("session").into_iter().collect(),
            EntityType::Class => Vec::new(),
        };
        c.requests += usize::from(!entities.is_empty());
        for e in entities {
            let b = c.buckets.entry((e, ts.div_euclid(BUCKET))).or_default();
            if attack {
                b.0 += 1;
            } else {
                b.1 += 1;
            }
        }
    }
    if !by_request.is_empty() {
        resolve_requests(data, t, &by_request, &mut c)?;
    }
    Ok(c)
}

/// Finds labelled request ids in the run's `events` table and counts them
/// against the entity of type `t` each request named.
fn resolve_requests(
    data: &Path,
    t: EntityType,
    labels: &HashMap<String, bool>,
    c: &mut Counts,
) -> Result<(), ModelError> {
    let column = match t {
        EntityType::Ip | EntityType::Cidr | EntityType::Network => "client_ip",
        EntityType::User => "user_id",
        EntityType::ApiKey => "api_key_id",
        EntityType::Device => "device_id",
        EntityType::Session => "session_id",
        // No model scores a class (the CLI and the pipeline refuse one).
        EntityType::Class => return Ok(()),
    };
    let sql = format!(
        "SELECT request_id, CAST(ts AS BIGINT) AS ts, CAST({column} AS VARCHAR) AS entity FROM events \
         WHERE request_id IS NOT NULL AND {column} IS NOT NULL"
    );
    let bad = |m: String| ModelError::Invalid { path: data.to_path_buf(), message: m };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|source| ModelError::Io { path: data.to_path_buf(), source })?;
    let batches = rt
        .block_on(crate::analytics::query(data, &sql))
        .map_err(|e| bad(format!("labels name request ids, so the events table is needed: {e}")))?;
    let utf8 = &datafusion::arrow::datatypes::DataType::Utf8;
    for b in &batches {
        let ids = datafusion::arrow::compute::cast(b.column(0), utf8)?;
        let ents = datafusion::arrow::compute::cast(b.column(2), utf8)?;
        let ts = datafusion::arrow::compute::cast(b.column(1), &datafusion::arrow::datatypes::DataType::Int64)?;
        let ids = ids.as_any().downcast_ref::<StringArray>().ok_or_else(|| bad("events.request_id".into()))?;
        let ents = ents.as_any().downcast_ref::<StringArray>().ok_or_else(|| bad("events entity".into()))?;
        let ts = ts
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .ok_or_else(|| bad("events.ts".into()))?;
        for r in 0..b.num_rows() {
            let Some(attack) = labels.get(ids.value(r)) else { continue };
            let entities: Vec<String> = match t {
                EntityType::Cidr => match ents.value(r).parse() {
                    Ok(ip) => vec![subnet_of(ip)],
                    Err(_) => continue,
                },
                EntityType::Network => match ents.value(r).parse() {
                    Ok(ip) => networks_of(ip).collect(),
                    Err(_) => continue,
                },
                _ => vec![ents.value(r).to_string()],
            };
            for entity in entities {
                let e = c.buckets.entry((entity, ts.value(r).div_euclid(BUCKET))).or_default();
                if *attack {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
            c.requests += 1;
        }
    }
    Ok(())
}

impl Counts {
    /// An entity's verdict at `ts`: an analyst's verdict if one covers it,
    /// otherwise whether most of its labelled requests in the last 10–20
    /// minutes were attacks.
    fn label(&self, entity: &str, ts: i64) -> bool {
        if let Some(v) = self.verdicts.get(entity)
            && let Some((a, _, _)) = v.iter().find(|(_, from, to)| *from <= ts && ts <= *to)
        {
            return *a;
        }
        let b = ts.div_euclid(BUCKET);
        let (mut a, mut n) = (0, 0);
        for k in [b, b - 1] {
            if let Some((x, y)) = self.buckets.get(&(entity.to_string(), k)) {
                a += x;
                n += y;
            }
        }
        a > n
    }
}

/// Reads the feature rows of `t` from `data` and labels them.
pub fn dataset(data: &Path, labels: &Path, t: EntityType) -> Result<Dataset, ModelError> {
    let counts = load_labels(labels, t, data)?;
    // Periodic snapshots only: a row written at a decision between two of
    // them holds only what rules and models read, and would weigh the
    // decided entities twice.
    let sql = format!(
        "SELECT * FROM features WHERE entity_type = '{}' AND periodic IS NOT FALSE ORDER BY ts, entity",
        t.as_str()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|source| ModelError::Io { path: data.to_path_buf(), source })?;
    let batches = rt
        .block_on(crate::analytics::query(data, &sql))
        .map_err(|e| ModelError::Invalid { path: data.to_path_buf(), message: e.to_string() })?;
    let mut ds = Dataset {
        ts: Vec::new(),
        entity: Vec::new(),
        raw: Vec::new(),
        label: Vec::new(),
        label_source: format!(
            "{}: {} request labels, {} entity verdicts",
            labels.display(),
            counts.requests,
            counts.entity_verdicts
        ),
    };
    let schema_err =
        |m: &str| ModelError::Invalid { path: data.to_path_buf(), message: format!("features table: {m}") };
    for b in &batches {
        let ts = b.column(0).as_any().downcast_ref::<TimestampMillisecondArray>().ok_or_else(|| schema_err("ts"))?;
        // Parquet strings may come back as views; one cast covers both.
        let ent = datafusion::arrow::compute::cast(b.column(2), &datafusion::arrow::datatypes::DataType::Utf8)?;
        let ent = ent.as_any().downcast_ref::<StringArray>().ok_or_else(|| schema_err("entity"))?;
        let cols: Vec<&Float64Array> = (0..features::NF)
            .map(|i| b.column(3 + i).as_any().downcast_ref::<Float64Array>())
            .collect::<Option<_>>()
            .ok_or_else(|| schema_err("feature columns"))?;
        for r in 0..b.num_rows() {
            let e = ent.value(r);
            ds.ts.push(ts.value(r));
            ds.entity.push(e.to_string());
            ds.raw.push(cols.iter().map(|c| (!c.is_null(r)).then(|| c.value(r))).collect());
            ds.label.push(counts.label(e, ts.value(r)));
        }
    }
    if ds.ts.is_empty() {
        return Err(schema_err(&format!("no {} rows", t.as_str())));
    }
    Ok(ds)
}

/// Each data set's rows, split by its own time range: the latest `holdout`
/// share of every run is held out, so that runs of different lengths (or
/// simulated on the same dates) each contribute to both sides.
struct Split {
    ds: Dataset,
    train_idx: Vec<usize>,
    test_idx: Vec<usize>,
    /// (train from, train to, held out from, held out to) over all sets.
    range: (i64, i64, i64, i64),
}

fn split(cfg: &TrainConfig) -> Result<Split, ModelError> {
    if cfg.data.is_empty() || cfg.data.len() != cfg.labels.len() {
        return Err(ModelError::Train(format!(
            "each --data needs its --labels, in the same order: {} data, {} labels",
            cfg.data.len(),
            cfg.labels.len()
        )));
    }
    let mut all =
        Dataset { ts: Vec::new(), entity: Vec::new(), raw: Vec::new(), label: Vec::new(), label_source: String::new() };
    let (mut train_idx, mut test_idx) = (Vec::new(), Vec::new());
    let mut range = (i64::MAX, i64::MIN, i64::MAX, i64::MIN);
    let mut sources = Vec::new();
    for (data, labels) in cfg.data.iter().zip(&cfg.labels) {
        let ds = dataset(data, labels, cfg.entity)?;
        let (t0, t1) = (ds.ts[0], ds.ts[ds.ts.len() - 1]);
        let cutoff = t1 - ((t1 - t0) as f64 * cfg.holdout.clamp(0.05, 0.9)) as i64;
        let base = all.ts.len();
        for (i, &ts) in ds.ts.iter().enumerate() {
            if ts < cutoff {
                train_idx.push(base + i);
                range.0 = range.0.min(ts);
                range.1 = range.1.max(ts);
            } else {
                test_idx.push(base + i);
            }
        }
        range.2 = range.2.min(cutoff);
        range.3 = range.3.max(t1);
        sources.push(ds.label_source);
        all.ts.extend(ds.ts);
        all.entity.extend(ds.entity);
        all.raw.extend(ds.raw);
        all.label.extend(ds.label);
    }
    all.label_source = sources.join("; ");
    Ok(Split { ds: all, train_idx, test_idx, range })
}

/// Trains, picks the threshold, evaluates on the held-out time ranges, writes
/// the model and its card. Deterministic for a seed.
pub fn train(cfg: &TrainConfig) -> Result<Card, ModelError> {
    let Split { ds, train_idx, test_idx, range: (train_from, train_to, cutoff, t1) } = split(cfg)?;
    if train_idx.len() < 50 || test_idx.is_empty() {
        return Err(ModelError::Train(format!(
            "too few rows: {} to train, {} held out",
            train_idx.len(),
            test_idx.len()
        )));
    }
    // Features: as asked, or every one that varies in the training rows.
    let all: Vec<usize> = match &cfg.features {
        Some(names) => names
            .iter()
            .map(|n| {
                features::FEATURES
                    .iter()
                    .position(|(f, _)| f == n)
                    .ok_or_else(|| ModelError::Train(format!("feature '{n}' does not exist")))
            })
            .collect::<Result<_, _>>()?,
        None => (0..features::NF).collect(),
    };
    let column = |j: usize, rows: &[usize]| -> Vec<f64> { rows.iter().map(|&i| transform(ds.raw[i][j])).collect() };
    let mut chosen = Vec::new();
    let (mut mean, mut std) = (Vec::new(), Vec::new());
    for j in all {
        let v = column(j, &train_idx);
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let s = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt();
        if s > 1e-9 {
            chosen.push(j);
            mean.push(m);
            std.push(s);
        } else if cfg.features.is_some() {
            return Err(ModelError::Train(format!(
                "feature '{}' is constant in the training rows",
                features::FEATURES[j].0
            )));
        }
    }
    let d = chosen.len();
    if d == 0 {
        return Err(ModelError::Train("no feature varies in the training rows".into()));
    }
    let standardised = |rows: &[usize]| -> Array2<f64> {
        Array2::from_shape_fn((rows.len(), d), |(r, k)| (transform(ds.raw[rows[r]][chosen[k]]) - mean[k]) / std[k])
    };
    // An evenly spaced sample keeps fitting time bounded and deterministic.
    let stride = train_idx.len().div_ceil(cfg.max_train_rows.max(100));
    let fit_idx: Vec<usize> = train_idx.iter().copied().step_by(stride).collect();
    let positives = fit_idx.iter().filter(|&&i| ds.label[i]).count();
    let names: Vec<String> = chosen.iter().map(|&j| features::FEATURES[j].0.to_string()).collect();
    let name = cfg
        .out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ModelError::Train("--out must name a directory".into()))?;
    let params = match cfg.kind {
        Kind::Anomaly => {
            let x = DatasetBase::from(standardised(&fit_idx));
            // EM from a bad start can leave a component with no rows, whose
            // weight and responsibilities are then NaN (linfa reports it as
            // an undefined ordering). Such a start is the seed's, not the
            // data's: the next few seeds are tried in order, so a seed still
            // always gives the same model.
            const STARTS: u64 = 5;
            let mut start = 0;
            let gmm = loop {
                let rng = Xoshiro256Plus::seed_from_u64(cfg.seed.wrapping_add(start));
                let fitted = linfa_clustering::GaussianMixtureModel::params_with_rng(cfg.components.max(1), rng)
                    .n_runs(1)
                    .tolerance(1e-4)
                    .reg_covariance(1e-2)
                    .max_n_iterations(300)
                    .fit(&x);
                match fitted {
                    Ok(gmm) => break gmm,
                    Err(e) if start + 1 < STARTS => {
                        tracing::warn!(seed = cfg.seed.wrapping_add(start), "mixture: {e}; trying the next seed");
                        start += 1;
                    }
                    Err(e) => {
                        return Err(ModelError::Train(format!(
                            "mixture: {e} (seeds {} to {})",
                            cfg.seed,
                            cfg.seed + start
                        )));
                    }
                }
            };
            let k = gmm.weights().len();
            Params::Gmm {
                weights: gmm.weights().to_vec(),
                means: (0..k).map(|c| gmm.means().row(c).to_vec()).collect(),
                covariances: (0..k)
                    .map(|c| gmm.covariances().index_axis(ndarray::Axis(0), c).iter().copied().collect())
                    .collect(),
            }
        }
        Kind::Classifier => {
            if positives == 0 || positives == fit_idx.len() {
                return Err(ModelError::Train(format!(
                    "a classifier needs both classes in the training range; {positives} of {} rows are attacks",
                    fit_idx.len()
                )));
            }
            // Class weighting for rare attacks: each attack row is repeated so the
            // classes weigh about the same (at most 50 times).
            let reps = ((fit_idx.len() - positives) / positives).clamp(1, 50);
            let rows: Vec<usize> =
                fit_idx.iter().flat_map(|&i| std::iter::repeat_n(i, if ds.label[i] { reps } else { 1 })).collect();
            let x = standardised(&rows);
            let y: Array1<bool> = rows.iter().map(|&i| ds.label[i]).collect();
            let fitted = linfa_logistic::LogisticRegression::default()
                .alpha(cfg.l2)
                .max_iterations(300)
                .fit(&linfa::Dataset::new(x, y))
                .map_err(|e| ModelError::Train(format!("logistic regression: {e}")))?;
            // linfa orders the two labels itself; make the score the probability of `true`.
            let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
            Params::Logistic {
                coefficients: fitted.params().iter().map(|c| sign * c).collect(),
                intercept: sign * fitted.intercept(),
            }
        }
    };
    let mut file = ModelFile {
        format: FORMAT.into(),
        name: name.clone(),
        version: cfg.version.clone(),
        kind: cfg.kind,
        entity: cfg.entity,
        features: names.clone(),
        mean: mean.clone(),
        std: std.clone(),
        params,
        threshold: 0.0,
    };
    let model = Model::from_file(file.clone(), cfg.out.join("model.json")).map_err(ModelError::Train)?;
    let scores = |rows: &[usize]| -> Vec<f64> {
        let (mut z, mut c) = (Vec::new(), Vec::new());
        rows.iter()
            .map(|&i| {
                let raw: Vec<Option<f64>> = chosen.iter().map(|&j| ds.raw[i][j]).collect();
                model.standardise(&raw, &mut z);
                model.score_row(&z, &mut c)
            })
            .collect()
    };
    // Threshold: the score that only `target_fpr` of benign training rows reach.
    let benign_train: Vec<usize> = train_idx.iter().copied().filter(|&i| !ds.label[i]).collect();
    let mut threshold = metrics::quantile(&scores(&benign_train), 1.0 - cfg.target_fpr.clamp(0.0, 1.0));
    if cfg.kind == Kind::Classifier {
        // A probability below one half is not a verdict of attack, whatever the quantile says.
        threshold = threshold.max(0.5);
    }
    // Just above the benign quantile, so that `>= threshold` flags at most the target share.
    threshold = f64::from_bits(threshold.to_bits() + 1);
    file.threshold = threshold;
    let test_scores = scores(&test_idx);
    let test_labels: Vec<bool> = test_idx.iter().map(|&i| ds.label[i]).collect();
    let holdout = metrics::evaluate(&test_scores, &test_labels, threshold);
    let iso = crate::event::time::format_rfc3339;
    let shown = |paths: &[PathBuf]| paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    let card = Card {
        name,
        version: cfg.version.clone(),
        kind: cfg.kind,
        entity: cfg.entity,
        features: names,
        transform: "ln(1 + max(x, 0)), missing = 0, then (x - mean) / std".into(),
        scaler_mean: mean,
        scaler_std: std,
        data: shown(&cfg.data),
        labels: shown(&cfg.labels),
        label_source: ds.label_source.clone(),
        train_from: iso(train_from),
        train_to: iso(train_to),
        holdout_from: iso(cutoff),
        holdout_to: iso(t1),
        train_rows: train_idx.len(),
        train_rows_fitted: fit_idx.len(),
        train_positives: train_idx.iter().filter(|&&i| ds.label[i]).count(),
        target_fpr: cfg.target_fpr,
        l2: cfg.l2,
        threshold,
        holdout,
        seed: cfg.seed,
        command: cfg.command.clone(),
    };
    write(&cfg.out, &file, &card)?;
    Ok(card)
}

fn write(dir: &Path, file: &ModelFile, card: &Card) -> Result<(), ModelError> {
    let io = |source| ModelError::Io { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    crate::fsutil::write_atomic(&dir.join("model.json"), pretty(file).as_bytes()).map_err(io)?;
    crate::fsutil::write_atomic(&dir.join("card.json"), pretty(card).as_bytes()).map_err(io)?;
    crate::fsutil::write_atomic(&dir.join("card.md"), render_card(card).as_bytes()).map_err(io)?;
    Ok(())
}

/// Pretty JSON ending with a newline.
fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// The human-readable model card.
pub fn render_card(c: &Card) -> String {
    let h = &c.holdout;
    let what = match c.kind {
        Kind::Anomaly => {
            "Gaussian mixture (linfa-clustering) over standardised, log-scaled features; score = negative log-likelihood (higher = less like anything seen in training). Trained without labels; labels only set the threshold and measure it."
        }
        Kind::Classifier => {
            "Logistic regression (linfa-logistic) over standardised, log-scaled features, attack rows weighted up to balance the classes; score = probability of attack."
        }
    };
    format!(
        "# Model card: {name}@{version}\n\n\
         - **Kind**: {kind} — {what}\n\
         - **Entity**: {entity}\n\
         - **Features** ({nf}): {features}\n\
         - **Scaler**: {transform} (means and deviations in `card.json` and `model.json`)\n\
         - **Training data**: `{data}`, {train_from} → {train_to}: {train_rows} rows ({fitted} fitted), {pos} labelled attack\n\
         - **Labels**: {labels}\n\
         - **Held out** (the latest part of each data set's time range, never seen in training): {ho_from} → {ho_to}\n\
         - **Threshold**: {threshold:.6} — the score reached by {fpr_pct}% of benign training rows\n\n\
         ## Held-out metrics\n\n\
         | rows | attacks | flagged attacks | flagged benign | precision | recall | FPR | PR-AUC |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {rows} | {positives} | {tp} | {fp} | {precision:.4} | {recall:.4} | {hfpr:.6} | {pr_auc:.4} |\n\n\
         ## Reproduce\n\n```sh\n{command}\n```\n\nSeed {seed}; training is deterministic for a seed.\n",
        name = c.name,
        version = c.version,
        kind = c.kind.as_str(),
        entity = c.entity.as_str(),
        nf = c.features.len(),
        features = c.features.join(", "),
        transform = c.transform,
        data = c.data,
        train_from = c.train_from,
        train_to = c.train_to,
        train_rows = c.train_rows,
        fitted = c.train_rows_fitted,
        pos = c.train_positives,
        labels = c.label_source,
        ho_from = c.holdout_from,
        ho_to = c.holdout_to,
        threshold = c.threshold,
        fpr_pct = c.target_fpr * 100.0,
        rows = h.rows,
        positives = h.positives,
        tp = h.true_positives,
        fp = h.false_positives,
        precision = h.precision,
        recall = h.recall,
        hfpr = h.fpr,
        pr_auc = h.pr_auc,
        command = c.command,
        seed = c.seed,
    )
}
