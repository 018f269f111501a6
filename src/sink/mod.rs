//! Sinks: where a run's outputs go. Each sink receives every event batch,
//! feature snapshot, decision and dead letter it asks for ([`Wants`]); the
//! engine holds them as a list built from the pipeline's `[[sinks]]`, so any
//! number of them see every decision and a new one needs no change to the
//! engine.
//!
//! A new sink is a file here implementing [`Sink`], plus one arm in [`build`]
//! (and its `type` name in [`SinkKind`]). The shortest one:
//!
//! ```
//! use gatewatch::decision::Decision;
//! use gatewatch::sink::{Sink, SinkError, Wants};
//!
//! /// Counts denials (tests, examples).
//! struct Denials(u64);
//!
//! impl Sink for Denials {
//!     fn name(&self) -> &str {
//!         "denials"
//!     }
//!     fn wants(&self) -> Wants {
//!         Wants { decisions: true, ..Wants::NONE }
//!     }
//!     fn decision(&mut self, d: &Decision) -> Result<(), SinkError> {
//!         self.0 += u64::from(d.action == gatewatch::decision::Action::Deny);
//!         Ok(())
//!     }
//! }
//! ```

pub mod clickhouse;
pub mod deadletter;
pub mod jsonl;
pub mod kafka;
pub mod parquet;
pub mod parts;
pub mod resilient;
pub mod retention;

use std::path::Path;

use datafusion::arrow::record_batch::RecordBatch;

use crate::decision::Decision;

pub use clickhouse::ClickHouseSink;
pub use deadletter::{DeadLetter, DeadLetterSink};
pub use jsonl::DecisionsJsonl;
pub use kafka::{KafkaSink, KafkaSinkSpec};
pub use parquet::{ParquetSink, ParquetTable};
pub use resilient::Resilient;

/// A sink failed; the run stops, since continuing would lose data silently.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: parquet: {source}")]
    Parquet {
        path: std::path::PathBuf,
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },
    #[error("{table}: the writer thread stopped: {message}")]
    Writer { table: String, message: String },
    #[error("{table}: arrow: {source}")]
    Arrow {
        table: String,
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::ClickHouseError),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaError),
}

/// What a sink receives; the engine builds only what some sink wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    pub events: bool,
    pub features: bool,
    pub decisions: bool,
    pub dead_letters: bool,
    /// The digests of the sessions seen opened ([`crate::sessions`]).
    pub opened_sessions: bool,
}

impl Wants {
    pub const NONE: Wants =
        Wants { events: false, features: false, decisions: false, dead_letters: false, opened_sessions: false };

    /// Either side's wants.
    pub fn or(self, o: Wants) -> Wants {
        Wants {
            events: self.events || o.events,
            features: self.features || o.features,
            decisions: self.decisions || o.decisions,
            dead_letters: self.dead_letters || o.dead_letters,
            opened_sessions: self.opened_sessions || o.opened_sessions,
        }
    }
}

/// An output of a run.
pub trait Sink: Send {
    /// For errors and logs.
    fn name(&self) -> &str;

    /// What this sink receives.
    fn wants(&self) -> Wants;

    /// A batch of parsed events (the `events` table's schema).
    fn events(&mut self, _batch: &RecordBatch) -> Result<(), SinkError> {
        Ok(())
    }

    /// A batch of feature rows ([`crate::features::table_schema`]): periodic
    /// snapshots, and the rows decisions were made on between them.
    fn features(&mut self, _batch: &RecordBatch) -> Result<(), SinkError> {
        Ok(())
    }

    /// A decision, as it is made.
    fn decision(&mut self, _d: &Decision) -> Result<(), SinkError> {
        Ok(())
    }

    /// A decision of a shadow rule or model ([`crate::config::RuleSpec::shadow`]):
    /// recorded beside the decisions, never enforced. Sinks that enforce
    /// (the live store) keep this default and never see one.
    fn shadow_decision(&mut self, _d: &Decision) -> Result<(), SinkError> {
        Ok(())
    }

    /// The [`crate::sessions::digest`]s of sessions first seen opened
    /// since the last call, for the instances that did not read the lines
    /// that opened them.
    fn sessions_opened(&mut self, _digests: &[u64]) -> Result<(), SinkError> {
        Ok(())
    }

    /// A line that could not become an event.
    fn dead_letter(&mut self, _dl: &DeadLetter<'_>) -> Result<(), SinkError> {
        Ok(())
    }

    /// Makes what was received so far as durable as this sink can before the
    /// source acknowledges it (see [`crate::source::Source::ack`]).
    fn checkpoint(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// [`Sink::checkpoint`], calling `waiting` every fraction of a second
    /// while it waits on something outside the process (brokers
    /// acknowledging what was sent), so that the caller keeps its own
    /// obligations meanwhile ([`crate::source::Source::keep_alive`]). Only a
    /// sink that can wait that long needs more than this default.
    fn checkpoint_while(&mut self, _waiting: &mut dyn FnMut()) -> Result<(), SinkError> {
        self.checkpoint()
    }

    /// The source's share of its input changed, or it is still waiting for
    /// one (called after each poll while it waits). Every event received
    /// before this was read under the previous share. Only a sink whose
    /// readers merge writers by time (repartition topics) cares.
    fn share(&mut self, _share: crate::source::Share) -> Result<(), SinkError> {
        Ok(())
    }

    /// Flushes and closes everything (end of input, shutdown).
    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        Ok(())
    }

    /// How the sink has fared, for sinks that outlive their failures
    /// ([`Resilient`]); `None` for a sink whose failure ends the run.
    fn health(&self) -> Option<SinkHealth> {
        None
    }
}

/// A live sink's record of failures (`/metrics`, the summary).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkHealth {
    /// Writing right now.
    pub up: bool,
    /// Failures (each one closes the sink until it opens again).
    pub errors: u64,
    /// Records (event rows, feature rows, decisions, dead letters) it did not
    /// receive while it was down, the one that failed included.
    pub dropped: u64,
}

/// The kinds of sink a pipeline's `[[sinks]]` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// `events/`, `features/` and `decisions/` Parquet tables in the run directory.
    Parquet,
    /// `decisions.jsonl` in the run directory.
    DecisionsJsonl,
    /// `dead_letters.jsonl` in the run directory.
    DeadLetters,
    /// Tables in a ClickHouse server ([`clickhouse`]).
    #[serde(rename = "clickhouse")]
    ClickHouse,
    /// Decisions and dead letters to Kafka topics ([`kafka`]).
    Kafka,
}

/// One configured sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSpec {
    pub kind: SinkKind,
    /// Parquet: which tables (`events`, `features`, `decisions`).
    pub tables: Vec<String>,
    /// Dead letters: bytes per file (two files at most); `None`: the default.
    pub max_bytes: Option<u64>,
    /// Parquet: longest a part file stays open (unreadable) before it is
    /// finished; `None`: [`DEFAULT_ROLL_EVERY_MS`].
    pub roll_every_ms: Option<i64>,
    /// ClickHouse: the server and how to write to it.
    pub clickhouse: Option<Box<clickhouse::ClickHouseSpec>>,
    /// Kafka: the brokers and topics.
    pub kafka: Option<Box<KafkaSinkSpec>>,
}

/// How long a Parquet part stays open by default: a live run's rows are
/// queryable within five minutes, and a day makes ~300 files per table.
pub const DEFAULT_ROLL_EVERY_MS: i64 = 300_000;

impl SinkSpec {
    /// A sink of `kind` with every setting at its default.
    pub fn of(kind: SinkKind) -> SinkSpec {
        SinkSpec { kind, tables: Vec::new(), max_bytes: None, roll_every_ms: None, clickhouse: None, kafka: None }
    }

    /// Whether what this sink drops is lost to the rest of the pipeline, so
    /// that it may never be closed and skipped ([`Resilient`]): a Kafka sink
    /// carrying repartition topics feeds the entity engines, and an event
    /// it dropped would never count for its user, key, device or session
    /// while the offsets covering it were committed.
    pub fn feeds_others(&self) -> bool {
        self.kafka.as_ref().is_some_and(|k| !k.repartition.is_empty())
    }

    /// The roll age of a Parquet sink's parts.
    pub fn roll_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.roll_every_ms.unwrap_or(DEFAULT_ROLL_EVERY_MS).max(0) as u64)
    }

    /// The sinks a pipeline without `[[sinks]]` writes: every table the
    /// `[output]` flags ask for, decisions as JSON lines, dead letters.
    pub fn defaults(events: bool, features: bool) -> Vec<SinkSpec> {
        let mut tables = Vec::new();
        if events {
            tables.push("events".into());
        }
        if features {
            tables.push("features".into());
        }
        tables.push("decisions".into());
        tables.push("dead_letters".into());
        vec![
            SinkSpec { kind: SinkKind::Parquet, tables, ..SinkSpec::of(SinkKind::Parquet) },
            SinkSpec::of(SinkKind::DecisionsJsonl),
            SinkSpec::of(SinkKind::DeadLetters),
        ]
    }
}

/// Opens the sink `spec` describes again after a failure, continuing what is
/// in `dir`: a new Parquet part file, the JSON-lines files appended to (a
/// cut-off last line removed first).
pub fn resume(spec: &SinkSpec, dir: &Path) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match spec.kind {
        SinkKind::Parquet => Box::new(ParquetSink::open(dir, &spec.tables, spec.roll_every())?),
        SinkKind::DecisionsJsonl => Box::new(DecisionsJsonl::append(&dir.join("decisions.jsonl"))?),
        SinkKind::DeadLetters => Box::new(DeadLetterSink::resume(
            &dir.join("dead_letters.jsonl"),
            spec.max_bytes.unwrap_or(deadletter::DEFAULT_MAX_BYTES),
        )),
        SinkKind::ClickHouse => clickhouse_sink(spec)?,
        SinkKind::Kafka => kafka_sink(spec)?,
    })
}

/// Opens the sink `spec` describes, writing into the run directory `dir`.
pub fn build(spec: &SinkSpec, dir: &Path) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match spec.kind {
        SinkKind::Parquet => Box::new(ParquetSink::open(dir, &spec.tables, spec.roll_every())?),
        SinkKind::DecisionsJsonl => Box::new(DecisionsJsonl::create(&dir.join("decisions.jsonl"))?),
        SinkKind::DeadLetters => Box::new(DeadLetterSink::with_limit(
            &dir.join("dead_letters.jsonl"),
            spec.max_bytes.unwrap_or(deadletter::DEFAULT_MAX_BYTES),
        )),
        SinkKind::ClickHouse => clickhouse_sink(spec)?,
        SinkKind::Kafka => kafka_sink(spec)?,
    })
}

fn kafka_sink(spec: &SinkSpec) -> Result<Box<dyn Sink>, SinkError> {
    let k = spec.kafka.as_deref().ok_or_else(|| SinkError::Writer {
        table: "kafka".into(),
        message: "a kafka sink without its settings".into(),
    })?;
    Ok(Box::new(KafkaSink::open(k)?))
}

fn clickhouse_sink(spec: &SinkSpec) -> Result<Box<dyn Sink>, SinkError> {
    let ch = spec.clickhouse.as_deref().ok_or_else(|| SinkError::Writer {
        table: "clickhouse".into(),
        message: "a clickhouse sink without its settings".into(),
    })?;
    Ok(Box::new(ClickHouseSink::open(ch)?))
}
