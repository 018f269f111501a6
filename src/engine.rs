//! Wires a pipeline together: lines → events → features → rules → decisions → sinks.
//!
//! The engine is push-driven (`push_line`, `finish`) so that replay of a file and
//! a live follower share every step; it is single-threaded and ordered, which is
//! what makes a replay's decisions byte-identical from run to run. Only Parquet
//! encoding runs on other threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;

use arc_swap::ArcSwap;

use crate::config::{Allowlist, DecisionConfig, ModelSpec, Pipeline, RuleSpec};
use crate::decision::{Action, Decision, DecisionStore, Proposal};
use crate::detect::{EvalError, RuleError, RuleSet};
use crate::event::{self, EventBatchBuilder, Format};
use crate::features::{self, EntityType, FeatureEngine, Snapshot};
use crate::sink::{DeadLetter, Sink, SinkError, Wants};
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
    /// Events behind the watermark (newest event − `features.lateness`):
    /// out of order, but applied to every window that still holds their time.
    pub reordered_events: u64,
    /// Events older than the longest window behind the newest event: no
    /// window could hold them, so they went to the dead letters.
    pub late_events: u64,
    /// Events stamped further ahead of the wall clock than `input.max_future`
    /// (live mode), applied at their arrival time instead.
    pub future_events: u64,
    /// Events stamped by a wall clock that was set back (live mode), moved
    /// forward by the step.
    pub clock_shifted_events: u64,
    /// Values outside a closed vocabulary, kept as `unknown`.
    pub unknown_values: u64,
    /// Quoted fields cut off at the end of a line, kept as far as they went.
    pub truncated_fields: u64,
    /// Events read again only to rebuild feature state (a Kafka partition
    /// taken over, from before its committed offset): applied to windows,
    /// never counted in `events`, judged, written or dead-lettered again.
    pub rebuilt_events: u64,
    /// Entities forgotten early to keep state within `features.state_budget`.
    pub evicted_entities: u64,
    /// Requests a confidential client's key authenticated from a network it
    /// is not established in, judged as anyone's (docs/FEATURES.md,
    /// "Confidential clients").
    pub confidential_away_events: u64,
    pub state_budget_bytes: u64,
    pub feature_rows: u64,
    pub decisions: u64,
    pub decisions_by_action: std::collections::BTreeMap<String, u64>,
    /// Decisions of shadow rules and models: recorded, never enforced.
    pub shadow_decisions: u64,
    pub suppressed_by_allowlist: u64,
    /// Decisions on an IPv6 /48 not made because one /56 inside it held
    /// most of its addresses: that /56's rotation, decided at the /56.
    pub deferred_to_56: u64,
    /// Rows a model scored at or above its threshold.
    pub model_flags: u64,
    pub downgraded_shared: u64,
    /// Addresses left out of the subnet decisions made, as bystanders (rules'
    /// `spare`); each decision counts its own, a narrowed one again.
    pub spared_addresses: u64,
    pub active_entities: std::collections::BTreeMap<String, usize>,
    pub state_bytes: usize,
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
    /// Live mode: each sink's failures and the records it dropped.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sinks: std::collections::BTreeMap<String, crate::sink::SinkHealth>,
}

impl Summary {
    /// One line for a terminal.
    pub fn line(&self) -> String {
        let acts: Vec<String> = self.decisions_by_action.iter().map(|(a, n)| format!("{a} {n}")).collect();
        let rebuilt = if self.rebuilt_events > 0 {
            format!("; {} events read again to rebuild state", self.rebuilt_events)
        } else {
            String::new()
        };
        format!(
            "{} lines → {} events ({} dead letters, {} late, {} reordered, {} from the future, {} evicted) → {} decisions [{}] in {:.2}s ({:.0} events/s){}",
            self.lines,
            self.events,
            self.dead_letters,
            self.late_events,
            self.reordered_events,
            self.future_events,
            self.evicted_entities,
            self.decisions,
            if acts.is_empty() { "none".to_string() } else { acts.join(", ") },
            self.elapsed_s,
            self.events_per_s,
            rebuilt
        )
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
    judged: [bool; EntityType::COUNT],
    needed: [[bool; features::NF]; EntityType::COUNT],
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
        let mut judged = [false; EntityType::COUNT];
        let mut needed = [[false; features::NF]; EntityType::COUNT];
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
    /// From a shadow rule or model: decided into the shadow store, never enforced.
    shadow: bool,
    /// The rule (index) whose `spare` says which addresses of a subnet it leaves out.
    spare: Option<usize>,
}

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
    /// What shadow rules and models would have decided: the same policy
    /// (escalation, precedence) on its own memory, so a shadow rule is judged
    /// as if it were the only one, and nothing it decides is enforced.
    shadow_store: DecisionStore,
    /// Every output, in the pipeline's order; each gets what it [`Wants`].
    sinks: Vec<Box<dyn Sink>>,
    /// What any sink wants, so nothing nobody reads is built.
    wants: Wants,
    summary: Summary,
    /// Live mode: where every score a model computes is counted for the
    /// day (the console's histograms); `None` in replay and eval.
    scores_to: Option<Arc<crate::fired::Fired>>,
    first_ts: Option<i64>,
    started: Instant,
    batch_started: Instant,
    allowlist: Arc<ArcSwap<Allowlist>>,
    /// Live mode: the clock at the start of this round of input.
    wall_clock: Option<crate::event::clock::Reading>,
    /// The events in `builder` were read only to rebuild state ([`Line::rebuild`]).
    builder_rebuild: bool,
    /// The entity types each event in `builder` counts for ([`Line::entities`]).
    builder_entities: Vec<u8>,
    /// Where the pipeline's sinks write (reopened there after a failure).
    out_dir: PathBuf,
    /// Live mode, an engine that reads every line: where the sessions it
    /// sees opened go, for the API to tell them from made-up ids.
    opened_sessions: Option<Arc<crate::sessions::OpenedSessions>>,
    /// Where the confidential clients' networks are kept across restarts,
    /// with the requests observed at the last save and when it was.
    homes_file: Option<(std::path::PathBuf, u64, Instant)>,
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
        let Compiled { model_guards, rules, rule_columns, shared, shared_columns, judged, needed } =
            Compiled::new(&pipeline.rules, &pipeline.decisions, &pipeline.models)?;
        let sinks =
            pipeline.sinks.iter().map(|spec| crate::sink::build(spec, out_dir)).collect::<Result<Vec<_>, _>>()?;
        let wants = sinks.iter().fold(Wants::NONE, |w, s| w.or(s.wants()));
        let allowlist = Arc::new(ArcSwap::from_pointee(pipeline.allowlist.clone()));
        Ok(Engine {
            format: format.unwrap_or(pipeline.input.format),
            source_name: source_name.to_string(),
            builder: EventBatchBuilder::with_capacity(pipeline.output.batch_rows),
            features: {
                let mut f = FeatureEngine::new(pipeline.features);
                f.set_classes(&pipeline.classes);
                let vouched = allowlist.clone();
                f.set_vouched(Box::new(move |ip, ua| {
                    ip.parse().is_ok_and(|ip| vouched.load().allows_request(ip, ua, None))
                }));
                f.set_judged(judged);
                f.set_needed(needed);
                if wants.opened_sessions {
                    f.collect_opened_sessions();
                }
                f
            },
            store: DecisionStore::new(pipeline.decisions.clone()),
            shadow_store: {
                let mut s = DecisionStore::new(pipeline.decisions.clone());
                s.set_id_base(crate::decision::SHADOW_ID_BASE);
                s
            },
            rules,
            rule_columns,
            model_guards,
            shared,
            shared_columns,
            sinks,
            wants,
            summary: Summary::default(),
            scores_to: None,
            first_ts: None,
            started: Instant::now(),
            batch_started: Instant::now(),
            allowlist,
            wall_clock: None,
            builder_rebuild: false,
            builder_entities: Vec::with_capacity(pipeline.output.batch_rows),
            out_dir: out_dir.to_path_buf(),
            opened_sessions: None,
            homes_file: None,
            pipeline,
        })
    }

    /// Shares the sessions this engine sees opened with the API
    /// ([`crate::sessions`]). What the other engines of a Kafka group saw
    /// opened reaches the same registry from the decisions topic
    /// ([`crate::live::learn`]), where this engine's Kafka sink publishes its own.
    pub fn share_opened_sessions(&mut self, to: Arc<crate::sessions::OpenedSessions>) {
        self.features.collect_opened_sessions();
        self.opened_sessions = Some(to);
    }

    /// Takes the confidential clients' networks kept in `path` before a
    /// restart ([`crate::features::homes`]) and keeps them there from now
    /// on: at most once a minute while clients are seen, and at the end.
    /// The number of clients taken; on an error, none (the file is left
    /// alone, and written anew at the next save).
    pub fn keep_homes(&mut self, path: std::path::PathBuf) -> Result<usize, crate::fsutil::StateFileError> {
        let loaded = self.features.homes().load(&path);
        self.homes_file = Some((path, self.features.homes().observed(), Instant::now()));
        loaded
    }

    /// Saves the clients' networks when `every` has passed since the last
    /// save and some were seen (`ZERO`: whenever some were).
    fn save_homes(&mut self, every: std::time::Duration) {
        let Some((path, saved, at)) = &mut self.homes_file else { return };
        let observed = self.features.homes().observed();
        if observed == *saved || at.elapsed() < every {
            return;
        }
        *at = Instant::now();
        match self.features.homes().save(path) {
            Ok(()) => *saved = observed,
            Err(e) => tracing::warn!(error = %e, "the confidential clients' networks were not saved (kept in memory)"),
        }
    }

    /// Hands the sessions first seen opened in the last batch to the API's
    /// registry and to the sinks that publish them for other instances.
    fn publish_opened_sessions(&mut self) -> Result<(), EngineError> {
        if self.opened_sessions.is_none() && !self.wants.opened_sessions {
            return Ok(());
        }
        let opened = self.features.take_opened_sessions();
        if opened.is_empty() {
            return Ok(());
        }
        let digests: Vec<u64> = opened.iter().map(|s| crate::sessions::digest(s)).collect();
        if let Some(to) = &self.opened_sessions {
            to.insert_digests(digests.iter().copied());
        }
        if self.wants.opened_sessions {
            for s in self.sinks.iter_mut().filter(|s| s.wants().opened_sessions) {
                s.sessions_opened(&digests)?;
            }
        }
        Ok(())
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
        self.shadow_store.set_config(decisions.clone());
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

    /// Automatic decisions in force at `now_ms` that this engine knows of
    /// (its own, restored, and learned from other instances).
    pub fn decisions_in_force(&self, now_ms: i64) -> usize {
        self.store.active_count(now_ms)
    }

    /// Live mode: count every model score for the day in `fired`
    /// ([`crate::fired::Fired::record_scores`]; the metrics hold it).
    pub fn count_scores_in(&mut self, fired: Arc<crate::fired::Fired>) {
        self.scores_to = Some(fired);
    }

    /// Adds an output beside the pipeline's (live mode adds the decision store).
    pub fn add_sink(&mut self, sink: Box<dyn Sink>) {
        self.add_sink_at(self.sinks.len(), sink);
    }

    /// [`Engine::add_sink`], checkpointed before every other sink: the store
    /// the gateways are served from takes a round's decisions at its
    /// checkpoint, which must not wait behind a slow broker's
    /// acknowledgement of what the Kafka sink sent (up to its `flush_timeout`).
    pub fn add_sink_first(&mut self, sink: Box<dyn Sink>) {
        self.add_sink_at(0, sink);
    }

    fn add_sink_at(&mut self, at: usize, sink: Box<dyn Sink>) {
        self.wants = self.wants.or(sink.wants());
        if self.wants.opened_sessions {
            self.features.collect_opened_sessions();
        }
        self.sinks.insert(at, sink);
    }

    /// Live mode: a pipeline sink that fails (a full disk) is closed, counted
    /// and opened again later instead of ending the run
    /// ([`crate::sink::Resilient`]): the decisions keep being made and served.
    /// Called before any sink is added: the sinks are matched with the
    /// pipeline's by position.
    pub fn keep_deciding_when_sinks_fail(&mut self) {
        let specs = &self.pipeline.sinks;
        let sinks = std::mem::take(&mut self.sinks);
        for (i, sink) in sinks.into_iter().enumerate() {
            let Some(spec) = specs.get(i).filter(|s| !s.feeds_others()) else {
                self.sinks.push(sink);
                continue;
            };
            let name = sink.name().to_string();
            let label =
                if specs.iter().filter(|s| s.kind == spec.kind).count() > 1 { format!("{name}.{i}") } else { name };
            self.sinks.push(Box::new(crate::sink::Resilient::new(sink, spec.clone(), self.out_dir.clone(), label)));
        }
    }

    /// Applies what is pending and makes every sink as durable as it can be:
    /// after this returns, a source may acknowledge everything pushed so far.
    pub fn checkpoint(&mut self) -> Result<(), EngineError> {
        self.checkpoint_while(&mut || {})
    }

    /// [`Engine::checkpoint`], calling `waiting` while a sink waits on
    /// something outside the process ([`crate::sink::Sink::checkpoint_while`]).
    pub fn checkpoint_while(&mut self, waiting: &mut dyn FnMut()) -> Result<(), EngineError> {
        self.flush_batch()?;
        for s in &mut self.sinks {
            s.checkpoint_while(waiting)?;
        }
        Ok(())
    }

    /// Tells the sinks the source's share of its input changed (or that it
    /// still waits for one), after sending on the events read under the
    /// previous share.
    pub fn share(&mut self, share: crate::source::Share) -> Result<(), EngineError> {
        self.flush_batch()?;
        for s in &mut self.sinks {
            s.share(share)?;
        }
        Ok(())
    }

    /// The pipeline this engine runs.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Decisions made so far (without refreshing the rest of the summary).
    pub fn decisions_made(&self) -> u64 {
        self.summary.decisions
    }

    /// Running totals; the timing and memory peaks are filled in by `finish`.
    pub fn summary(&mut self) -> &Summary {
        self.refresh_summary();
        &self.summary
    }

    fn refresh_summary(&mut self) {
        let fs = self.features.stats();
        let s = &mut self.summary;
        s.reordered_events = fs.reordered_events;
        s.evicted_entities = fs.entities_evicted;
        s.confidential_away_events = fs.confidential_away;
        s.feature_rows = fs.feature_rows;
        s.state_bytes = self.features.state_bytes();
        s.state_budget_bytes = self.features.budget_bytes() as u64;
        for (t, n) in EntityType::ALL.iter().zip(self.features.active_entities()) {
            s.active_entities.insert(t.as_str().to_string(), n);
        }
        for sink in &self.sinks {
            if let Some(h) = sink.health() {
                s.sinks.insert(sink.name().to_string(), h);
            }
        }
    }

    /// Live mode: event time may not run ahead of engine time (`clock.now_ms`)
    /// by more than `input.max_future`. A line stamped later is applied at
    /// that time and counted, so one forged or skewed line can neither push
    /// the watermark past every later line nor stretch a decision's expiry.
    /// When the wall clock was set back, lines stamped by it are moved forward
    /// by the step ([`crate::event::clock`]). Replay never sets a clock, so a
    /// replay stays a function of its input.
    pub fn set_clock(&mut self, clock: crate::event::clock::Reading) {
        self.wall_clock = Some(clock);
    }

    /// Newest event time seen, applied or still in the current batch.
    fn newest_ts(&self) -> Option<i64> {
        match (self.features.max_ts(), self.builder.max_ts()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Checks an event's time: clamps one from the future (live mode), refuses
    /// one older than every window. `Err` is the dead-letter reason.
    fn admit_time(&mut self, ev: &mut event::EventRef<'_>) -> Result<(), String> {
        if let Some(clock) = self.wall_clock {
            let max_future = self.pipeline.input.max_future_ms;
            // Stamped by a clock that was set back (no later than it reads):
            // moved onto the time line of the lines before the step.
            if clock.behind_ms > max_future && ev.ts_ms <= clock.wall_ms.saturating_add(max_future) {
                self.summary.clock_shifted_events += 1;
                ev.notes.push_owned(format!(
                    "ts={} moved {}s forward: the wall clock was set back",
                    event::time::format_rfc3339(ev.ts_ms),
                    clock.behind_ms / 1000
                ));
                ev.ts_ms = ev.ts_ms.saturating_add(clock.behind_ms);
            }
            let now = clock.now_ms;
            if ev.ts_ms > now.saturating_add(max_future) {
                self.summary.future_events += 1;
                let ahead = (ev.ts_ms - now) / 1000;
                ev.notes.push_owned(format!(
                    "ts={} clamped to arrival, {ahead}s ahead of the wall clock",
                    event::time::format_rfc3339(ev.ts_ms)
                ));
                ev.ts_ms = now;
            }
        }
        if let Some(newest) = self.newest_ts()
            && ev.ts_ms < newest.saturating_sub(features::LONGEST_WINDOW_MS)
        {
            self.summary.late_events += 1;
            return Err(format!(
                "ts: {} is {}s behind the newest event ({}), older than the longest feature window (1h): \
                     no window holds it",
                event::time::format_rfc3339(ev.ts_ms),
                (newest - ev.ts_ms) / 1000,
                event::time::format_rfc3339(newest)
            ));
        }
        Ok(())
    }

    /// Parses one line; a bad one becomes a dead letter.
    pub fn push_line(&mut self, line: &Line<'_>) -> Result<(), EngineError> {
        if line.rebuild != self.builder_rebuild {
            // A batch is either new input or state being rebuilt, never both.
            self.flush_batch()?;
            self.builder_rebuild = line.rebuild;
        }
        if line.rebuild {
            self.push_rebuild_line(line);
            return self.flush_if_due();
        }
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
                    Ok(mut ev) => match self.admit_time(&mut ev) {
                        Ok(()) => {
                            self.summary.unknown_values += u64::from(ev.notes.unknown);
                            self.summary.truncated_fields += u64::from(ev.notes.truncated);
                            self.first_ts.get_or_insert(ev.ts_ms);
                            self.builder.append(&ev);
                            self.builder_entities.push(line.entities);
                            None
                        }
                        Err(reason) => Some(reason),
                    },
                    Err(e) => Some(e.to_string()),
                },
            }
        };
        if let Some(reason) = reason {
            let dl = DeadLetter::new(&self.source_name, line.pos, &reason, line.bytes, line.len);
            for s in self.sinks.iter_mut().filter(|s| s.wants().dead_letters) {
                s.dead_letter(&dl)?;
            }
            self.summary.dead_letters += 1;
            tracing::debug!(pos = ?line.pos, %reason, "dead letter");
        }
        self.flush_if_due()
    }

    /// A line read again to rebuild state: what parses and a window still
    /// holds is applied; the rest was dead-lettered or counted when the line
    /// was first read, and is skipped without a word now.
    fn push_rebuild_line(&mut self, line: &Line<'_>) {
        if line.truncated() {
            return;
        }
        let Ok(text) = std::str::from_utf8(line.bytes) else { return };
        let Ok(mut ev) = event::parse_line(text, self.format, self.pipeline.input.mapping.as_ref()) else { return };
        if let Some(clock) = self.wall_clock
            && ev.ts_ms > clock.now_ms.saturating_add(self.pipeline.input.max_future_ms)
        {
            ev.ts_ms = clock.now_ms;
        }
        if self.newest_ts().is_some_and(|newest| ev.ts_ms < newest.saturating_sub(features::LONGEST_WINDOW_MS)) {
            return;
        }
        self.builder.append(&ev);
        self.builder_entities.push(line.entities);
    }

    fn flush_if_due(&mut self) -> Result<(), EngineError> {
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
        let entities = std::mem::take(&mut self.builder_entities);
        if self.builder_rebuild {
            self.summary.rebuilt_events += batch.num_rows() as u64;
            for s in self.features.ingest_rebuild(&batch, &entities)? {
                self.handle_snapshot(s)?;
            }
            self.publish_opened_sessions()?;
            self.builder_entities = entities;
            self.builder_entities.clear();
            return Ok(());
        }
        self.summary.events += batch.num_rows() as u64;
        self.save_homes(std::time::Duration::from_secs(60));
        let snapshots = self.features.ingest_for(&batch, &entities);
        self.builder_entities = entities;
        self.builder_entities.clear();
        let snapshots = snapshots?;
        self.publish_opened_sessions()?;
        if self.wants.events {
            for s in self.sinks.iter_mut().filter(|s| s.wants().events) {
                s.events(&batch)?;
            }
        }
        for s in snapshots {
            self.handle_snapshot(s)?;
        }
        Ok(())
    }

    /// Sends pending events through and has the rules judge every entity
    /// they touched now (live mode; see [`FeatureEngine::evaluate_now`];
    /// models wait for the tick).
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
            // Rows that made a decision: written to the features table even
            // between persisted ticks, so that an analyst sees the values a
            // decision was made on, not the next minute's.
            let mut decided: Vec<u32> = Vec::new();
            let mut hits = self.rules.evaluate(t, &batch)?;
            // Models judge whole ticks only: they were trained on features as
            // ticks see them, and a window part-way through one (an early
            // evaluation, live mode) is not what they learned from. Rules have
            // their own thresholds and act at once.
            let scored = if snap.early { Vec::new() } else { self.score_models(t, &batch)? };
            if !hits.is_empty() || !scored.is_empty() {
                let rules = self.rules.rules();
                // Strongest action first for each entity, then rule order.
                hits.sort_by_key(|h| (h.row, std::cmp::Reverse(rules[h.rule].spec.action), h.rule));
                let entities = batch
                    .column(2)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| ArrowError::SchemaError("features.entity is not Utf8".into()))?;
                let shareable =
                    matches!(t, EntityType::Ip | EntityType::Cidr | EntityType::Network | EntityType::ApiKey);
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
                    if self.decide(t, now, (&batch, h.row, entities.value(h.row)), is_shared, c)? {
                        decided.push(h.row as u32);
                    }
                }
                for (row, c) in scored {
                    let is_shared = shared.get(row).copied().unwrap_or(false);
                    if self.decide(t, now, (&batch, row, entities.value(row)), is_shared, c)? {
                        decided.push(row as u32);
                    }
                }
            }
            if self.wants.features && (snap.persist || !decided.is_empty()) {
                let rows = if snap.persist {
                    batch
                } else {
                    decided.sort_unstable();
                    decided.dedup();
                    datafusion::arrow::compute::take_record_batch(
                        &batch,
                        &datafusion::arrow::array::UInt32Array::from(decided),
                    )?
                };
                let rows = with_periodic(rows, snap.persist)?;
                for s in self.sinks.iter_mut().filter(|s| s.wants().features) {
                    s.features(&rows)?;
                }
            }
        }
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
            shadow: rule.shadow,
            spare: self.rules.rules()[h.rule].spare.is_some().then_some(h.rule),
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
            let keep = |row: usize| allowed.as_ref().is_none_or(|a| a.get(row).copied().unwrap_or(false));
            let mut seen = Vec::new();
            let flagged =
                m.model.score_where(batch, keep, m.challenge_at, self.scores_to.is_some().then_some(&mut seen))?;
            if let Some(fired) = &self.scores_to {
                let source = format!("model:{}", m.model.id());
                fired.record_scores(&source, m.shadow, &seen, crate::event::time::now_ms());
            }
            for s in flagged {
                let action = if m.deny_at.is_some_and(|d| s.score >= d) { Action::Deny } else { Action::Challenge };
                let top: Vec<String> = s
                    .top
                    .iter()
                    .map(|(name, value, c)| format!("{name}={} (+{c:.1})", crate::features::fmt_value(*value)))
                    .collect();
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
                        shadow: m.shadow,
                        spare: None,
                    },
                ));
                self.summary.model_flags += 1;
            }
        }
        Ok(out)
    }

    /// Proposes what `c` says for one row; true when a decision was made
    /// (not allowlisted, not downgraded to nothing, not already in force).
    fn decide(
        &mut self,
        t: EntityType,
        now: i64,
        (batch, row, entity): (&RecordBatch, usize, &str),
        shared: bool,
        c: Candidate,
    ) -> Result<bool, EngineError> {
        // A network's decision is a range, as a subnet's is: allowlisted,
        // stored, served and escalated as one.
        let (judged_as, t) = (t, t.decided_as());
        if self.allowlist.load().protects_entity(t, entity) {
            self.summary.suppressed_by_allowlist += 1;
            return Ok(false);
        }
        // A /48 is judged for rotation through the /48. Where one /56 holds
        // most of the addresses, the holder is that /56 (a household's
        // delegation, in a provider's /48 whose other households did
        // nothing): the /56's own row is judged, and the /48 is left alone.
        if judged_as == EntityType::Network && self.features.one_56_holds(entity, now) {
            self.summary.deferred_to_56 += 1;
            return Ok(false);
        }
        let mut action = c.action;
        let mut reason = c.reason;
        if shared && c.on_shared < action {
            self.summary.downgraded_shared += 1;
            action = c.on_shared;
            if action == Action::Allow {
                return Ok(false);
            }
            reason.push_str(&format!(
                "; shared by many users acting normally ({}), so {} instead of {}",
                evidence(batch, row, &self.shared_columns),
                action.as_str(),
                c.action.as_str()
            ));
        }
        let spared = match c.spare {
            Some(rule) if judged_as.is_range() => {
                let store = if c.shadow { &self.shadow_store } else { &self.store };
                let only = store.spared_in_force(t, entity, action, now).map(<[_]>::to_vec);
                self.spared(rule, entity, only.as_deref(), now)?
            }
            _ => Vec::new(),
        };
        let proposal = Proposal {
            now_ms: now,
            entity_type: t,
            entity,
            action,
            ttl_ms: c.ttl_ms,
            reason,
            source: c.source,
            score: c.score,
            spared,
        };
        if c.shadow {
            return match self.shadow_store.propose(proposal) {
                Some(d) => {
                    self.summary.shadow_decisions += 1;
                    for s in self.sinks.iter_mut().filter(|s| s.wants().decisions) {
                        s.shadow_decision(&d)?;
                    }
                    Ok(true)
                }
                None => Ok(false),
            };
        }
        match self.store.propose(proposal) {
            Some(d) => {
                self.summary.spared_addresses += d.spared.len() as u64;
                self.emit(&d)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The addresses of `subnet` that rule `rule`'s `spare` leaves out of its
    /// decision, sorted (see [`crate::config::RuleSpec::spare`]); among
    /// `only` when a decision in force limits them (judging those few again
    /// instead of every address of a /48 held, on every tick).
    fn spared(
        &mut self,
        rule: usize,
        subnet: &str,
        only: Option<&[std::net::IpAddr]>,
        now: i64,
    ) -> Result<Vec<std::net::IpAddr>, EngineError> {
        let Some(spare) = &self.rules.rules()[rule].spare else {
            return Ok(Vec::new());
        };
        let held = match only {
            Some(addrs) => self.features.addresses(addrs, now)?,
            None => self.features.addresses_in(subnet, now)?,
        };
        let Some((addrs, rows)) = held else {
            return Ok(Vec::new());
        };
        let keep = spare.matches(&rows).map_err(|source| EvalError { rule: spare.sql.clone(), source })?;
        let mut out: Vec<_> = addrs.into_iter().zip(keep).filter(|(_, k)| *k).map(|(ip, _)| ip).collect();
        out.sort_unstable();
        Ok(out)
    }

    fn emit(&mut self, d: &Decision) -> Result<(), EngineError> {
        self.summary.decisions += 1;
        *self.summary.decisions_by_action.entry(d.action.as_str().to_string()).or_default() += 1;
        for s in self.sinks.iter_mut().filter(|s| s.wants().decisions) {
            s.decision(d)?;
        }
        Ok(())
    }

    /// Flushes everything, closes the sinks and returns the summary.
    pub fn finish(mut self) -> Result<Summary, EngineError> {
        self.flush_batch()?;
        if let Some(s) = self.features.flush()? {
            self.handle_snapshot(s)?;
        }
        self.save_homes(std::time::Duration::ZERO);
        for sink in std::mem::take(&mut self.sinks) {
            sink.finish()?;
        }
        self.refresh_summary();
        let s = &mut self.summary;
        s.first_event = self.first_ts.map(event::time::format_rfc3339);
        s.last_event = self.features.max_ts().map(event::time::format_rfc3339);
        s.elapsed_s = self.started.elapsed().as_secs_f64();
        s.events_per_s = if s.elapsed_s > 0.0 { s.events as f64 / s.elapsed_s } else { 0.0 };
        s.peak_rss_bytes = peak_rss_bytes();
        Ok(self.summary)
    }
}

/// Feature rows as the `features` table holds them: with the `periodic` flag.
fn with_periodic(rows: RecordBatch, periodic: bool) -> Result<RecordBatch, ArrowError> {
    let flag = datafusion::arrow::array::BooleanArray::from(vec![periodic; rows.num_rows()]);
    let mut columns = rows.columns().to_vec();
    columns.push(Arc::new(flag));
    RecordBatch::try_new(features::table_schema(), columns)
}

/// Feature columns a predicate mentions, so a decision's reason can show their values.
fn referenced_features(when: &str) -> Vec<(usize, &'static str)> {
    let mut out = Vec::new();
    for tok in when.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(i) = features::FEATURES.iter().position(|(n, _)| *n == tok)
            && !out.iter().any(|(j, _)| *j == i + 3)
        {
            out.push((i + 3, features::FEATURES[i].0));
        }
    }
    out
}

fn evidence(batch: &RecordBatch, row: usize, cols: &[(usize, &'static str)]) -> String {
    use datafusion::arrow::array::{Array, Float64Array};
    let mut parts = Vec::new();
    for (i, name) in cols {
        if let Some(a) = batch.column(*i).as_any().downcast_ref::<Float64Array>()
            && a.is_valid(row)
        {
            let v = a.value(row);
            parts.push(if v.fract() == 0.0 { format!("{name}={v:.0}") } else { format!("{name}={v:.2}") });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{SinkError, Wants};
    use std::sync::{Arc, Mutex};

    /// Records when it is checkpointed; fails its checkpoint when `fail`.
    struct Step(&'static str, Arc<Mutex<Vec<&'static str>>>, bool);

    impl Sink for Step {
        fn name(&self) -> &str {
            self.0
        }
        fn wants(&self) -> Wants {
            Wants { decisions: true, ..Wants::NONE }
        }
        fn checkpoint(&mut self) -> Result<(), SinkError> {
            self.1.lock().expect("lock").push(self.0);
            if self.2 {
                Err(SinkError::Io { path: "broker".into(), source: std::io::Error::other("down") })
            } else {
                Ok(())
            }
        }
    }

    /// The store the gateways are served from is checkpointed before a
    /// sink that waits on (or fails with) a broker.
    #[test]
    fn a_sink_added_first_is_checkpointed_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::from_source(std::path::Path::new("test.toml"), "").expect("pipeline");
        let mut engine = Engine::new(pipeline, None, "test", dir.path()).expect("engine");
        let order = Arc::new(Mutex::new(Vec::new()));
        engine.add_sink(Box::new(Step("broker", order.clone(), true)));
        engine.add_sink_first(Box::new(Step("store", order.clone(), false)));
        assert!(engine.checkpoint().is_err(), "the broker's failure is reported");
        assert_eq!(*order.lock().expect("lock"), ["store", "broker"]);
    }
}
