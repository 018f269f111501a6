//! Models end to end: train from a replay's feature snapshots and the
//! simulator's labels, deterministically; the card's held-out metrics agree
//! with an independent computation; a corrupt model is refused.

use std::path::{Path, PathBuf};

use gatewatch::config::Pipeline;
use gatewatch::features::EntityType;
use gatewatch::model::train::{self, Card, TrainConfig};
use gatewatch::model::{Kind, Model};
use gatewatch::simulate::{self, OutFormat, SimConfig};

/// Simulated traffic replayed through the default pipeline: (dir, run dir, labels).
fn replayed(seed: u64, hours: f64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = SimConfig { scale: 0.3, ..SimConfig::new(seed, hours) };
    let reqs = simulate::generate(&cfg);
    let out = simulate::write(&cfg, &reqs, dir.path(), &[OutFormat::Json]).expect("simulate");
    let pipeline =
        Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/default.toml")).expect("pipeline");
    let run = dir.path().join("run");
    gatewatch::driver::replay_file(pipeline, &dir.path().join("access.jsonl"), None, &run, false).expect("replay");
    (dir, run, out.labels)
}

fn config(run: &Path, labels: &Path, kind: Kind, out: PathBuf) -> TrainConfig {
    TrainConfig {
        data: vec![run.to_path_buf()],
        labels: vec![labels.to_path_buf()],
        kind,
        entity: EntityType::Ip,
        out,
        version: "t1".into(),
        features: None,
        target_fpr: 0.001,
        holdout: 0.3,
        components: 3,
        seed: 7,
        l2: 0.1,
        max_train_rows: 20_000,
        command: "test".into(),
    }
}

/// Recomputes the card's held-out metrics from the model file and the data, with
/// none of the training code's scoring loop.
fn check_card(card: &Card, model_dir: &Path, run: &Path, labels: &Path) {
    let model = Model::load(model_dir).expect("model loads");
    let ds = train::dataset(run, labels, EntityType::Ip).expect("dataset");
    let from = gatewatch::event::time::parse_rfc3339(&card.holdout_from).expect("time");
    let cols: Vec<usize> = card
        .features
        .iter()
        .map(|f| gatewatch::features::FEATURES.iter().position(|(n, _)| n == f).expect("feature"))
        .collect();
    let (mut tp, mut fp, mut pos, mut neg) = (0usize, 0usize, 0usize, 0usize);
    let (mut z, mut c) = (Vec::new(), Vec::new());
    for i in (0..ds.ts.len()).filter(|&i| ds.ts[i] >= from) {
        let raw: Vec<Option<f64>> = cols.iter().map(|&j| ds.raw[i][j]).collect();
        // Standardise by hand from the card's scaler, not the model's code.
        z.clear();
        for (k, x) in raw.iter().enumerate() {
            z.push((x.unwrap_or(0.0).max(0.0).ln_1p() - card.scaler_mean[k]) / card.scaler_std[k]);
        }
        let flagged = model.score_row(&z, &mut c) >= card.threshold;
        match (ds.label[i], flagged) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            _ => {}
        }
        if ds.label[i] {
            pos += 1;
        } else {
            neg += 1;
        }
    }
    let h = &card.holdout;
    assert_eq!((h.true_positives, h.false_positives, h.positives, h.rows), (tp, fp, pos, pos + neg));
    let precision = if tp + fp == 0 { 0.0 } else { tp as f64 / (tp + fp) as f64 };
    assert!((h.precision - precision).abs() < 1e-12);
    assert!((h.recall - if pos == 0 { 0.0 } else { tp as f64 / pos as f64 }).abs() < 1e-12);
    assert!((h.fpr - fp as f64 / neg.max(1) as f64).abs() < 1e-12);
    assert!((0.0..=1.0).contains(&h.pr_auc));
}

#[test]
fn training_is_deterministic_and_the_card_adds_up() {
    let (dir, run, labels) = replayed(11, 2.0);
    for kind in [Kind::Anomaly, Kind::Classifier] {
        let a = dir.path().join(format!("{}-a", kind.as_str()));
        let b = dir.path().join(format!("{}-b", kind.as_str()));
        let card = train::train(&config(&run, &labels, kind, a.clone())).expect("train");
        train::train(&config(&run, &labels, kind, b.clone())).expect("train again");
        let model_a = std::fs::read_to_string(a.join("model.json")).expect("model");
        let model_b = std::fs::read_to_string(b.join("model.json")).expect("model");
        assert_eq!(model_a.replace("-a\"", "\""), model_b.replace("-b\"", "\""), "{kind:?}: same seed, same model");
        assert!(card.train_positives > 0 && card.holdout.positives > 0, "{kind:?}: {card:?}");
        check_card(&card, &a, &run, &labels);
        let md = std::fs::read_to_string(a.join("card.md")).expect("card.md");
        assert!(md.contains("Held-out metrics") && md.contains("Reproduce"), "{md}");
        eprintln!("{kind:?}: {:?}", card.holdout);
    }
}

/// Several runs (another seed, another length) train one model; each run is
/// split by its own time range, so both contribute to training and to the
/// held-out metrics. A run without its labels is refused, naming both counts.
#[test]
fn several_runs_train_one_model_each_split_by_its_own_time() {
    let (dir, run1, labels1) = replayed(31, 2.0);
    let (_dir2, run2, labels2) = replayed(32, 1.0);
    let out = dir.path().join("two-runs");
    let mut cfg = config(&run1, &labels1, Kind::Classifier, out);
    cfg.data.push(run2.clone());
    cfg.labels.push(labels2.clone());
    let card = train::train(&cfg).expect("train on two runs");
    let mut train_rows = 0;
    for (run, labels) in [(&run1, &labels1), (&run2, &labels2)] {
        let ds = train::dataset(run, labels, EntityType::Ip).expect("dataset");
        let (t0, t1) = (ds.ts[0], ds.ts[ds.ts.len() - 1]);
        let cutoff = t1 - ((t1 - t0) as f64 * 0.3) as i64;
        let own = ds.ts.iter().filter(|&&t| t < cutoff).count();
        assert!(own > 0 && own < ds.ts.len(), "each run on both sides of its own split");
        train_rows += own;
    }
    assert_eq!(card.train_rows, train_rows);
    assert!(card.data.contains(&run1.display().to_string()) && card.data.contains(&run2.display().to_string()));
    assert_eq!(card.label_source.matches("request labels").count(), 2, "{}", card.label_source);
    cfg.labels.pop();
    let e = train::train(&cfg).unwrap_err().to_string();
    assert!(e.contains("each --data needs its --labels") && e.contains("2 data, 1 labels"), "{e}");
}

#[test]
fn a_pipeline_names_the_line_of_a_corrupt_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("broken");
    std::fs::create_dir_all(&m).expect("dir");
    std::fs::write(m.join("model.json"), b"{\"format\":\"gatewatch-model/1\",\"name\":").expect("write");
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "[[models]]\npath = \"broken\"\nentity = \"ip\"\nttl = \"10m\"\n").expect("write");
    let e = Pipeline::load(&p).unwrap_err().to_string();
    assert!(e.contains("p.toml:2") && e.contains("model.json") && e.contains("not a gatewatch model file"), "{e}");
}

/// Replays one held-out seed through a pipeline and evaluates it.
fn report(pipeline: &str, traffic: &Path, labels: &Path, out: &Path) -> gatewatch::eval::Report {
    report_edited(pipeline, |_| {}, pipeline, traffic, labels, out)
}

/// Like [`report`], with the pipeline changed by `edit` first (its run in `out/name`).
fn report_edited(
    pipeline: &str,
    edit: impl FnOnce(&mut Pipeline),
    name: &str,
    traffic: &Path,
    labels: &Path,
    out: &Path,
) -> gatewatch::eval::Report {
    let mut p =
        Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines").join(pipeline)).expect("pipeline");
    edit(&mut p);
    let allow = p.allowlist.clone();
    let enforce = gatewatch::eval::EvalConfig::for_pipeline(&p);
    let run = out.join(name);
    gatewatch::driver::replay_file(p, &traffic.join("access.jsonl"), None, &run, false).expect("replay");
    let decisions = gatewatch::eval::read_decisions(&run.join("decisions.jsonl")).expect("decisions");
    gatewatch::eval::evaluate(labels, &decisions, &allow, &enforce).expect("eval")
}

#[test]
fn rules_and_models_catch_what_rules_miss_at_no_more_collateral_on_a_held_out_seed() {
    // Seed 2002 is not the training seed (101, scripts/train-default-models.sh).
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = SimConfig { scale: 0.5, ..SimConfig::new(2002, 3.0) };
    let reqs = simulate::generate(&cfg);
    let out = simulate::write(&cfg, &reqs, dir.path(), &[OutFormat::Json]).expect("simulate");
    let rules = report("rules-only.toml", dir.path(), &out.labels, dir.path());
    let default = report("default.toml", dir.path(), &out.labels, dir.path());
    let aggressive = report("models-aggressive.toml", dir.path(), &out.labels, dir.path());
    eprintln!(
        "{}",
        gatewatch::eval::compare(&[
            ("rules only".into(), rules.clone()),
            ("default (rules + guarded model)".into(), default.clone()),
            ("rules + unguarded model".into(), aggressive.clone()),
        ])
    );
    let share = |r: &gatewatch::eval::Report, s: &str| r.scenario(s).expect("scenario").blocked_share_after_grace();
    // The default pipeline: a family the rules miss, caught, at no more benign collateral.
    assert!(share(&rules, "slow-scraper") < 0.1, "rules alone are not expected to catch the slow scraper");
    assert!(share(&default, "slow-scraper") >= 0.9, "rules + model catch the slow scraper");
    assert!(default.benign_blocked <= rules.benign_blocked, "{} > {}", default.benign_blocked, rules.benign_blocked);
    for s in rules.scenarios.iter().filter(|s| s.attack && !simulate::EVADES_RULES.contains(&s.scenario.as_str())) {
        assert!(share(&default, &s.scenario) >= share(&rules, &s.scenario) - 1e-9, "{} got worse", s.scenario);
    }
    // The thin stuffing campaign: the rules' campaign signal takes about as
    // much of it as the unguarded model once did alone (docs/MODELS.md), and
    // the model without its guard adds to it, at a collateral that is
    // measured and must stay bounded.
    assert!(share(&rules, "distributed-stuffing") >= 0.25, "the campaign rule");
    assert!(share(&aggressive, "distributed-stuffing") >= share(&rules, "distributed-stuffing") - 1e-9);
    assert!(aggressive.benign_blocked_share() <= 0.003, "{:.4}%", 100.0 * aggressive.benign_blocked_share());
    // The per-user model: the scraper's and the exporter's own accounts are
    // challenged sooner than the rules and the address model alone manage,
    // at no more collateral (docs/MODELS.md, "a per-user model").
    let without_user = report_edited(
        "default.toml",
        |p| p.models.retain(|m| m.entity != EntityType::User),
        "default-without-user-model",
        dir.path(),
        &out.labels,
        dir.path(),
    );
    let detected =
        |r: &gatewatch::eval::Report, s: &str| r.scenario(s).and_then(|s| s.time_to_detect_s).unwrap_or(f64::INFINITY);
    assert!(
        detected(&default, "slow-scraper") + 60.0 < detected(&without_user, "slow-scraper"),
        "slow-scraper detected after {} s with the user model, {} s without",
        detected(&default, "slow-scraper"),
        detected(&without_user, "slow-scraper")
    );
    assert!(
        default.benign_blocked <= without_user.benign_blocked,
        "{} > {}",
        default.benign_blocked,
        without_user.benign_blocked
    );
    for r in [&default, &aggressive] {
        for nat in ["172.58.10.21", "172.58.77.4"] {
            assert!(!r.was_denied(EntityType::Ip, nat), "a model denied the NAT address {nat}");
        }
    }
}

#[test]
fn labels_may_name_request_ids_only() {
    // One hour is less than a features-table flush: this also checks that the
    // rows still buffered at the end of a replay are written.
    let (dir, run, labels) = replayed(12, 1.0);
    // The same verdicts, naming only the request: resolved through the events table.
    let ids_only = dir.path().join("ids.jsonl");
    let text = std::fs::read_to_string(&labels).expect("labels");
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("label");
            serde_json::json!({ "request_id": v["request_id"], "attack": v["attack"] }).to_string()
        })
        .collect();
    std::fs::write(&ids_only, lines.join("\n")).expect("write");
    let a = train::dataset(&run, &labels, EntityType::Ip).expect("entity labels");
    let b = train::dataset(&run, &ids_only, EntityType::Ip).expect("request-id labels");
    assert!(a.label.iter().any(|l| *l), "some attack rows");
    assert_eq!(a.label, b.label, "the same rows are attacks either way");
}
