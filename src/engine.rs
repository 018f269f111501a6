//! Wires a pipeline together: lines → events → features → rules → decisions → sinks.
//!
//! The engine is push-driven (`push_line`, `finish`) so that replay of a file and
//! a live follower share every step; it is single-threaded and ordered, which is
//! what makes a replay's decisions byte-identical from run to run. Only Parquet
//! encoding runs on other threads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, StringArray, StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;

use arc_swap::ArcSwap;

use crate::config::{Allowlist, DecisionConfig, ModelSpec, Pipeline, RuleSpec};
use crate::decision::{Action, Decision, DecisionStore, Proposal};
use crate::detect::{EvalError, RuleError, RuleSet};
use crate::event::{self, EventBatchBuilder, Format};
use crate::features::{self, EntityType, FeatureEngine, Snapshot};
use crate::sink::{DeadLetter, DeadLetterSink, ParquetTable, SinkError};
use crate::source::Line;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a run did, printed at the end and written to `summary.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub lines: u64,
    pub events: u64,
    pub dead_letters: u64,
    pub late_events: u64,
    pub feature_rows: u64,
    pub decisions: u64,
    pub decisions_by_action: std::collections::BTreeMap<String, u64>,
    pub suppressed_by_allowlist: u64,
    /// Rows a model scored at or above its threshold.
    pub model_flags: u64,
    pub downgraded_shared: u64,
    pub active_entities: std::collections::BTreeMap<String, usize>,
    pub state_bytes: usize,
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
}

impl Summary {
    /// One line for a terminal.
    pub fn line(&self) -> String {
        let acts: Vec<String> = self.decisions_by_action.iter().map(|(a, n)| format!("{a} {n}")).collect();
        format!(
            "{} lines → {} events ({} dead letters, {} late) → {} decisions [{}] in {:.2}s ({:.0} events/s)",
            self.lines,
            self.events,
            self.dead_letters,
            self.late_events,
            self.decisions,
            if acts.is_empty() { "none".to_string() } else { acts.join(", ") },
            self.elapsed_s,
            self.events_per_s
        )
    }
}

/// The `decisions` table schema.
pub fn decisions_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("ts", ts(), false),
        Field::new("entity_type", DataType::Utf8, false),
        Field::new("entity", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("ttl_s", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("id", DataType::UInt64, false),
        Field::new("expires_at", ts(), false),
        Field::new("offense", DataType::UInt32, false),
    ]))
}

/// Column builders for decisions.
#[derive(Default)]
struct DecisionColumns {
    ts: TimestampMillisecondBuilder,
    entity_type: StringBuilder,
    entity: StringBuilder,
    action: StringBuilder,
    ttl_s: UInt64Builder,
    reason: StringBuilder,
    source: StringBuilder,
    score: Float64Builder,
    id: UInt64Builder,
    expires_at: TimestampMillisecondBuilder,
    offense: UInt32Builder,
    rows: usize,
}

impl DecisionColumns {
    fn push(&mut self, d: &Decision, now_ms: i64) {
        self.ts.append_value(now_ms);
        self.entity_type.append_value(d.entity_type.as_str());
        self.entity.append_value(&d.entity);
        self.action.append_value(d.action.as_str());
        self.ttl_s.append_value(d.ttl_s);
        self.reason.append_value(&d.reason);
        self.source.append_value(&d.source);
        self.score.append_value(d.score);
        self.id.append_value(d.id);
        self.expires_at.append_value(now_ms + d.ttl_s as i64 * 1000);
        self.offense.append_value(d.offense);
        self.rows += 1;
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish().with_timezone("UTC")),
            Arc::new(self.entity_type.finish()),
            Arc::new(self.entity.finish()),
            Arc::new(self.action.finish()),
            Arc::new(self.ttl_s.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.score.finish()),
            Arc::new(self.id.finish()),
            Arc::new(self.expires_at.finish().with_timezone("UTC")),
            Arc::new(self.offense.finish()),
        ];
        RecordBatch::try_new(decisions_schema(), cols)
    }
}

/// Event columns with (nearly) one value per entity or request: a Parquet
/// dictionary for them costs interning every value and mostly falls back to
/// plain encoding anyway.
const EVENT_PLAIN: &[&str] = &["request_id"];

/// Feature columns are floats and entity ids: a dictionary rarely pays for itself there.
static FEATURE_PLAIN: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut v: Vec<&'static str> = features::FEATURES.iter().map(|(n, _)| *n).collect();
    v.push("entity");
    v
});

/// Feature rows are buffered to this many before they go to the writer thread.
const FEATURE_FLUSH_ROWS: usize = 16_384;

/// Output locations inside a run directory.
pub struct OutputPaths {
    pub dir: PathBuf,
}

impl OutputPaths {
    pub fn decisions_jsonl(&self) -> PathBuf {
        self.dir.join("decisions.jsonl")
    }
    pub fn dead_letters(&self) -> PathBuf {
        self.dir.join("dead_letters.jsonl")
    }
    pub fn table(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Rules and the shared-entity predicate compiled, with what they need computed.
struct Compiled {
    /// Each model's `when`, compiled (same order as the pipeline's models).
    model_guards: Vec<Option<crate::detect::Predicate>>,
    rules: RuleSet,
    rule_columns: Vec<Vec<(usize, &'static str)>>,
    shared: crate::detect::Predicate,
    shared_columns: Vec<(usize, &'static str)>,
    judged: [bool; 6],
    needed: [[bool; features::NF]; 6],
}

impl Compiled {
    fn new(specs: &[RuleSpec], decisions: &DecisionConfig, models: &[ModelSpec]) -> Result<Compiled, EngineError> {
        let rules = RuleSet::compile(specs)?;
        let rule_columns: Vec<Vec<(usize, &'static str)>> =
            rules.rules().iter().map(|r| referenced_features(&r.spec.when)).collect();
        let (shared_file, shared_line) = &decisions.shared_when_at;
        let shared = crate::detect::Predicate::compile(
            &decisions.shared_when,
            shared_file,
            *shared_line,
            "decisions.shared_when",
        )?;
        let shared_columns = referenced_features(&decisions.shared_when);
        let mut judged = [false; 6];
        let mut needed = [[false; features::NF]; 6];
        for (r, cols) in rules.rules().iter().zip(&rule_columns) {
            let t = r.spec.entity.index();
            judged[t] = true;
            for (schema_idx, _) in &shared_columns {
                needed[t][schema_idx - 3] = true;
            }
            for (schema_idx, _) in cols {
                needed[t][schema_idx - 3] = true;
            }
        }
        let mut model_guards = Vec::with_capacity(models.len());
        for m in models {
            let t = m.entity.index();
            let guard = match &m.when {
                Some(w) => {
                    for (schema_idx, _) in referenced_features(w) {
                        needed[t][schema_idx - 3] = true;
                    }
                    Some(crate::detect::Predicate::compile(
                        w,
                        &m.file,
                        m.line,
                        &format!("model {} when", m.model.id()),
                    )?)
                }
                None => None,
            };
            model_guards.push(guard);
            judged[t] = true;
            for (schema_idx, _) in &shared_columns {
                needed[t][schema_idx - 3] = true;
            }
            for schema_idx in m.model.columns() {
                needed[t][schema_idx - 3] = true;
            }
        }
        Ok(Compiled { model_guards, rules, rule_columns, shared, shared_columns, judged, needed })
    }
}

/// What a rule hit or a model score proposes, before allowlists and sharing.
struct Candidate {
    action: Action,
    on_shared: Action,
    ttl_ms: i64,
    reason: String,
    source: String,
    score: f64,
}

/// A feature value as a reason shows it: integers without decimals.
fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v:.3}") }
}

/// Called for every decision as it is made.
pub type DecisionHook = Box<dyn FnMut(&Decision) + Send>;

/// A running pipeline.
pub struct Engine {
    pipeline: Pipeline,
    model_guards: Vec<Option<crate::detect::Predicate>>,
    format: Format,
    source_name: String,
    builder: EventBatchBuilder,
    features: FeatureEngine,
    rules: RuleSet,
    rule_columns: Vec<Vec<(usize, &'static str)>>,
    shared: crate::detect::Predicate,
    shared_columns: Vec<(usize, &'static str)>,
    store: DecisionStore,
    events_out: Option<ParquetTable>,
    features_out: Option<ParquetTable>,
    decisions_out: ParquetTable,
    feature_buf: Vec<RecordBatch>,
    feature_buf_rows: usize,
    decision_cols: DecisionColumns,
    decisions_jsonl: BufWriter<File>,
    decisions_path: PathBuf,
    dead: DeadLetterSink,
    summary: Summary,
    first_ts: Option<i64>,
    started: Instant,
    batch_started: Instant,
    on_decision: Option<DecisionHook>,
    allowlist: Arc<ArcSwap<Allowlist>>,
}

impl Engine {
    /// Opens every sink in `out_dir` and compiles the rules.
    pub fn new(
        pipeline: Pipeline,
        format: Option<Format>,
        source_name: &str,
        out_dir: &Path,
    ) -> Result<Engine, EngineError> {
        std::fs::create_dir_all(out_dir).map_err(|source| EngineError::Io { path: out_dir.to_path_buf(), source })?;
        let paths = OutputPaths { dir: out_dir.to_path_buf() };
        let Compiled { model_guards, rules, rule_columns, shared, shared_columns, judged, needed } =
            Compiled::new(&pipeline.rules, &pipeline.decisions, &pipeline.models)?;
        let events_out = if pipeline.output.events {
            Some(ParquetTable::create(&paths.table("events"), event::schema(), EVENT_PLAIN)?)
        } else {
            None
        };
        let features_out = if pipeline.output.features {
            Some(ParquetTable::create(&paths.table("features"), features::schema(), &FEATURE_PLAIN)?)
        } else {
            None
        };
        let decisions_out = ParquetTable::create(&paths.table("decisions"), decisions_schema(), &[])?;
        let decisions_path = paths.decisions_jsonl();
        let decisions_jsonl = BufWriter::new(
            File::create(&decisions_path).map_err(|source| EngineError::Io { path: decisions_path.clone(), source })?,
        );
        Ok(Engine {
            format: format.unwrap_or(pipeline.input.format),
            source_name: source_name.to_string(),
            builder: EventBatchBuilder::with_capacity(pipeline.output.batch_rows),
            features: {
                let mut f = FeatureEngine::new(pipeline.features);
                f.set_judged(judged);
                f.set_needed(needed);
                f
            },
            store: DecisionStore::new(pipeline.decisions.clone()),
            rules,
            rule_columns,
            model_guards,
            shared,
            shared_columns,
            events_out,
            features_out,
            decisions_out,
            feature_buf: Vec::new(),
            feature_buf_rows: 0,
            decision_cols: DecisionColumns::default(),
            decisions_jsonl,
            decisions_path,
            dead: DeadLetterSink::new(&paths.dead_letters()),
            summary: Summary::default(),
            first_ts: None,
            started: Instant::now(),
            batch_started: Instant::now(),
            on_decision: None,
            allowlist: Arc::new(ArcSwap::from_pointee(pipeline.allowlist.clone())),
            pipeline,
        })
    }

    /// The allowlist decisions are checked against; storing a new one applies
    /// from the next decision on (the API shares it, so edits reach both).
    pub fn allowlist(&self) -> Arc<ArcSwap<Allowlist>> {
        self.allowlist.clone()
    }

    /// Replaces the rules and the decision policy without losing feature state,
    /// decisions in force or offence history. Nothing changes if they do not compile.
    pub fn reload(
        &mut self,
        rules: Vec<RuleSpec>,
        decisions: DecisionConfig,
        models: Vec<ModelSpec>,
    ) -> Result<(), EngineError> {
        let c = Compiled::new(&rules, &decisions, &models)?;
        self.features.set_judged(c.judged);
        self.features.set_needed(c.needed);
        self.rules = c.rules;
        self.rule_columns = c.rule_columns;
        self.model_guards = c.model_guards;
        self.shared = c.shared;
        self.shared_columns = c.shared_columns;
        self.store.set_config(decisions.clone());
        self.pipeline.rules = rules;
        self.pipeline.decisions = decisions;
        self.pipeline.models = models;
        Ok(())
    }

    /// The names of the rules in force.
    pub fn rule_names(&self) -> Vec<String> {
        self.rules.rules().iter().map(|r| r.spec.name.clone()).collect()
    }

    /// Tells the decision memory about a decision made before a restart, so that
    /// it is not re-made with a shorter TTL and repeat offences keep escalating.
    pub fn restore_decision(&mut self, r: crate::decision::Restored<'_>) {
        self.store.restore(r);
    }

    /// Numbers decisions from `id` on.
    pub fn set_next_decision_id(&mut self, id: u64) {
        self.store.set_next_id(id);
    }

    /// Calls `f` for every decision as it is made (live mode publishes them).
    pub fn on_decision(&mut self, f: impl FnMut(&Decision) + Send + 'static) {
        self.on_decision = Some(Box::new(f));
    }

    /// Running totals (`events`, `dead_letters`, `decisions` are current; the rest is filled by `finish`).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Parses one line; a bad one becomes a dead letter.
    pub fn push_line(&mut self, line: &Line<'_>) -> Result<(), EngineError> {
        self.summary.lines += 1;
        let reason = if line.truncated() {
            Some(format!(
                "line is {} bytes, longer than input.max_line_bytes = {}",
                line.len, self.pipeline.input.max_line_bytes
            ))
        } else {
            match std::str::from_utf8(line.bytes) {
                Err(e) => Some(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
                Ok(text) => match event::parse_line(text, self.format, self.pipeline.input.mapping.as_ref()) {
                    Ok(ev) => {
                        self.first_ts.get_or_insert(ev.ts_ms);
                        self.builder.append(&ev);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                },
            }
        };
        if let Some(reason) = reason {
            let dl = DeadLetter::new(&self.source_name, line.no, line.offset, &reason, line.bytes, line.len);
            self.dead.write(&dl)?;
            self.summary.dead_letters += 1;
            tracing::debug!(line = line.no, %reason, "dead letter");
        }
        // Batches are bounded by rows and by wall-clock age. Neither changes
        // any decision (ticks follow event time, row by row); the age bound only
        // keeps a slow live stream from waiting for a full batch.
        let rows = self.builder.len();
        if rows >= self.pipeline.output.batch_rows
            || (rows % 256 == 1
                && self.batch_started.elapsed().as_millis() as i64 >= self.pipeline.output.batch_max_age_ms)
        {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// Sends the events collected so far through the pipeline.
    pub fn flush_batch(&mut self) -> Result<(), EngineError> {
        if self.builder.is_empty() {
            return Ok(());
        }
        self.batch_started = Instant::now();
        let batch = self.builder.finish()?;
        self.summary.events += batch.num_rows() as u64;
        let snapshots = self.features.ingest(&batch)?;
        if let Some(out) = self.events_out.as_mut() {
            out.write(batch)?;
        }
        for s in snapshots {
            self.handle_snapshot(s)?;
        }
        Ok(())
    }

    /// Sends pending events through and evaluates every entity they touched now
    /// (live mode; see [`FeatureEngine::evaluate_now`]).
    pub fn evaluate_now(&mut self) -> Result<(), EngineError> {
        self.flush_batch()?;
        if let Some(s) = self.features.evaluate_now()? {
            self.handle_snapshot(s)?;
        }
        Ok(())
    }

    /// Newest event time applied so far.
    pub fn max_event_ts(&self) -> Option<i64> {
        self.features.max_ts()
    }

    /// Whether events are waiting in the current batch.
    pub fn has_pending(&self) -> bool {
        !self.builder.is_empty()
    }

    /// Advances event time without input (live mode's idle clock).
    pub fn advance_to(&mut self, ts_ms: i64) -> Result<(), EngineError> {
        self.flush_batch()?;
        let mut out = Vec::new();
        self.features.advance(ts_ms, &mut out)?;
        for s in out {
            self.handle_snapshot(s)?;
        }
        Ok(())
    }

    fn handle_snapshot(&mut self, snap: Snapshot) -> Result<(), EngineError> {
        let now = snap.as_of_ms;
        for (t, batch) in snap.batches {
            let mut hits = self.rules.evaluate(t, &batch)?;
            let scored = self.score_models(t, &batch)?;
            if !hits.is_empty() || !scored.is_empty() {
                let rules = self.rules.rules();
                // Strongest action first for each entity, then rule order.
                hits.sort_by_key(|h| (h.row, std::cmp::Reverse(rules[h.rule].spec.action), h.rule));
                let entities = batch
                    .column(2)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| ArrowError::SchemaError("features.entity is not Utf8".into()))?;
                let shareable = matches!(t, EntityType::Ip | EntityType::Cidr | EntityType::ApiKey);
                let shared = if shareable {
                    self.shared
                        .matches(&batch)
                        .map_err(|source| EvalError { rule: "decisions.shared_when".into(), source })?
                } else {
                    Vec::new()
                };
                for h in hits {
                    let is_shared = shared.get(h.row).copied().unwrap_or(false);
                    let c = self.rule_candidate(&batch, h);
                    self.decide(t, now, (&batch, h.row, entities.value(h.row)), is_shared, c)?;
                }
                for (row, c) in scored {
                    let is_shared = shared.get(row).copied().unwrap_or(false);
                    self.decide(t, now, (&batch, row, entities.value(row)), is_shared, c)?;
                }
            }
            if snap.persist && self.features_out.is_some() {
                self.feature_buf_rows += batch.num_rows();
                self.feature_buf.push(batch);
                if self.feature_buf_rows >= FEATURE_FLUSH_ROWS {
                    self.flush_features()?;
                }
            }
        }
        Ok(())
    }

    fn flush_features(&mut self) -> Result<(), EngineError> {
        if let Some(out) = self.features_out.as_mut() {
            if !self.feature_buf.is_empty() {
                let batch = datafusion::arrow::compute::concat_batches(&features::schema(), &self.feature_buf)?;
                out.write(batch)?;
            }
        }
        self.feature_buf.clear();
        self.feature_buf_rows = 0;
        Ok(())
    }

    fn rule_candidate(&self, batch: &RecordBatch, h: crate::detect::Hit) -> Candidate {
        let rule = &self.rules.rules()[h.rule].spec;
        let evidence = evidence(batch, h.row, &self.rule_columns[h.rule]);
        let reason = if evidence.is_empty() { rule.reason.clone() } else { format!("{} [{evidence}]", rule.reason) };
        Candidate {
            action: rule.action,
            on_shared: rule.on_shared,
            ttl_ms: rule.ttl_ms,
            reason,
            source: format!("rule:{}", rule.name),
            score: rule.score,
        }
    }

    /// Rows of `batch` the models of its entity type flag, with what each decides.
    fn score_models(&mut self, t: EntityType, batch: &RecordBatch) -> Result<Vec<(usize, Candidate)>, EngineError> {
        let mut out = Vec::new();
        for (m, guard) in self.pipeline.models.iter().zip(&self.model_guards).filter(|(m, _)| m.entity == t) {
            let allowed = match guard {
                Some(g) => Some(g.matches(batch).map_err(|source| EvalError { rule: g.sql.clone(), source })?),
                None => None,
            };
            for s in m.model.score_batch(batch)? {
                if s.score < m.challenge_at || allowed.as_ref().is_some_and(|a| !a.get(s.row).copied().unwrap_or(false))
                {
                    continue;
                }
                let action = if m.deny_at.is_some_and(|d| s.score >= d) { Action::Deny } else { Action::Challenge };
                let top: Vec<String> =
                    s.top.iter().map(|(name, value, c)| format!("{name}={} (+{c:.1})", fmt_value(*value))).collect();
                out.push((
                    s.row,
                    Candidate {
                        action,
                        // A model alone never acts on a shared address or key.
                        on_shared: Action::Allow,
                        ttl_ms: m.ttl_ms,
                        reason: format!(
                            "model:{} score {:.3} ≥ {:.3}: driven by {}",
                            m.model.id(),
                            s.score,
                            m.challenge_at,
                            top.join(", ")
                        ),
                        source: format!("model:{}", m.model.id()),
                        score: s.score,
                    },
                ));
                self.summary.model_flags += 1;
            }
        }
        Ok(out)
    }

    fn decide(
        &mut self,
        t: EntityType,
        now: i64,
        (batch, row, entity): (&RecordBatch, usize, &str),
        shared: bool,
        c: Candidate,
    ) -> Result<(), EngineError> {
        if self.allowlist.load().protects_entity(t, entity) {
            self.summary.suppressed_by_allowlist += 1;
            return Ok(());
        }
        let mut action = c.action;
        let mut reason = c.reason;
        if shared && c.on_shared < action {
            self.summary.downgraded_shared += 1;
            action = c.on_shared;
            if action == Action::Allow {
                return Ok(());
            }
            reason.push_str(&format!(
                "; shared by many users acting normally ({}), so {} instead of {}",
                evidence(batch, row, &self.shared_columns),
                action.as_str(),
                c.action.as_str()
            ));
        }
        let proposal = Proposal {
            now_ms: now,
            entity_type: t,
            entity,
            action,
            ttl_ms: c.ttl_ms,
            reason,
            source: c.source,
            score: c.score,
        };
        if let Some(d) = self.store.propose(proposal) {
            self.emit(&d, now)?;
        }
        Ok(())
    }

    fn emit(&mut self, d: &Decision, now: i64) -> Result<(), EngineError> {
        let io = |source| EngineError::Io { path: self.decisions_path.clone(), source };
        serde_json::to_writer(&mut self.decisions_jsonl, d).map_err(|e| io(e.into()))?;
        self.decisions_jsonl.write_all(b"\n").map_err(io)?;
        self.decision_cols.push(d, now);
        self.summary.decisions += 1;
        *self.summary.decisions_by_action.entry(d.action.as_str().to_string()).or_default() += 1;
        if let Some(f) = self.on_decision.as_mut() {
            f(d);
        }
        Ok(())
    }

    /// Flushes everything, closes the sinks and returns the summary.
    pub fn finish(mut self) -> Result<Summary, EngineError> {
        self.flush_batch()?;
        if let Some(s) = self.features.flush()? {
            self.handle_snapshot(s)?;
        }
        // Rows still buffered for the features table (fewer than a flush's worth).
        self.flush_features()?;
        let io = |source| EngineError::Io { path: self.decisions_path.clone(), source };
        self.decisions_jsonl.flush().map_err(io)?;
        self.dead.flush()?;
        let batch = self.decision_cols.finish()?;
        self.decisions_out.write(batch)?;
        self.decisions_out.finish()?;
        if let Some(t) = self.events_out.take() {
            t.finish()?;
        }
        if let Some(t) = self.features_out.take() {
            t.finish()?;
        }
        let fs = self.features.stats();
        let s = &mut self.summary;
        s.dead_letters = self.dead.count();
        self.dead.flush()?;
        s.late_events = fs.late_events;
        s.feature_rows = fs.feature_rows;
        s.state_bytes = self.features.state_bytes();
        for (t, n) in EntityType::ALL.iter().zip(self.features.active_entities()) {
            s.active_entities.insert(t.as_str().to_string(), n);
        }
        s.first_event = self.first_ts.map(event::time::format_rfc3339);
        s.last_event = self.features.max_ts().map(event::time::format_rfc3339);
        s.elapsed_s = self.started.elapsed().as_secs_f64();
        s.events_per_s = if s.elapsed_s > 0.0 { s.events as f64 / s.elapsed_s } else { 0.0 };
        s.peak_rss_bytes = peak_rss_bytes();
        Ok(self.summary)
    }
}

/// Feature columns a predicate mentions, so a decision's reason can show their values.
fn referenced_features(when: &str) -> Vec<(usize, &'static str)> {
    let mut out = Vec::new();
    for tok in when.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(i) = features::FEATURES.iter().position(|(n, _)| *n == tok) {
            if !out.iter().any(|(j, _)| *j == i + 3) {
                out.push((i + 3, features::FEATURES[i].0));
            }
        }
    }
    out
}

fn evidence(batch: &RecordBatch, row: usize, cols: &[(usize, &'static str)]) -> String {
    use datafusion::arrow::array::{Array, Float64Array};
    let mut parts = Vec::new();
    for (i, name) in cols {
        if let Some(a) = batch.column(*i).as_any().downcast_ref::<Float64Array>() {
            if a.is_valid(row) {
                let v = a.value(row);
                parts.push(if v.fract() == 0.0 { format!("{name}={v:.0}") } else { format!("{name}={v:.2}") });
            }
        }
    }
    parts.join(", ")
}

/// Peak resident memory of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Replays a file (or `-` for stdin) through the pipeline into `out_dir`.
pub fn replay(
    pipeline: Pipeline,
    input: &Path,
    format: Option<Format>,
    out_dir: &Path,
    progress: bool,
) -> Result<Summary, EngineError> {
    let keep = pipeline.input.max_line_bytes;
    let name = input.display().to_string();
    let mut engine = Engine::new(pipeline, format, &name, out_dir)?;
    let (reader, total): (Box<dyn std::io::BufRead>, u64) = if input == Path::new("-") {
        (Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin())), 0)
    } else {
        let f = File::open(input).map_err(|source| EngineError::Io { path: input.to_path_buf(), source })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(std::io::BufReader::with_capacity(1 << 20, f)), len)
    };
    let bar = if progress && total > 0 {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let mut lines = crate::source::LineReader::new(reader, keep);
    let mut n = 0u64;
    loop {
        let line = lines.next_line().map_err(|source| EngineError::Io { path: input.to_path_buf(), source })?;
        let Some(line) = line else { break };
        engine.push_line(&line)?;
        n += 1;
        if n % 65_536 == 0 {
            if let Some(b) = &bar {
                b.set_position(lines.bytes_read());
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let summary = engine.finish()?;
    let path = out_dir.join("summary.json");
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    std::fs::write(&path, text).map_err(|source| EngineError::Io { path, source })?;
    Ok(summary)
}
