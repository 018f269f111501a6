//! The run's Parquet tables, each written by a background thread.
//!
//! Encoding and compressing Parquet costs about as much as everything else in
//! the pipeline, so it runs beside the main loop; the bounded channel gives
//! back-pressure instead of unbounded memory when the disk is slow.

use std::path::Path;
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use super::deadletter::DeadLetterColumns;
use super::parts::{PartError, Parts};
use super::{DeadLetter, Sink, SinkError, Wants};
use crate::decision::Decision;

/// Target size of a Parquet data page (see [`ParquetTable::create`]).
const PAGE_BYTES: usize = 64 * 1024;

/// One table (a directory of Parquet files readable as one DataFusion table).
pub struct ParquetTable {
    name: String,
    tx: Option<SyncSender<Vec<RecordBatch>>>,
    handle: Option<JoinHandle<Result<u64, SinkError>>>,
}

impl ParquetTable {
    /// Starts the writer thread of the table in `dir` (its parts:
    /// [`super::parts`]), numbering parts after any already there, so a
    /// table that continues after a failure keeps what it had. Columns in
    /// `plain` skip dictionary encoding: for unique values (request ids) a
    /// dictionary is pure overhead. Measured: turning dictionaries off everywhere
    /// made replay slower (more bytes to compress), so they stay on elsewhere.
    pub fn create(dir: &Path, schema: SchemaRef, plain: &[&str], roll_every: Duration) -> Result<Self, SinkError> {
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(256 * 1024))
            // Min/max statistics cost a comparison per value per column; only the
            // time column is worth it (it prunes row groups in time-range queries).
            .set_statistics_enabled(EnabledStatistics::None)
            .set_column_statistics_enabled(ColumnPath::from("ts"), EnabledStatistics::Page);
        // Data pages of 64 KiB, not parquet's 1 MiB: each column's page
        // buffer grew by doubling to ~1 MiB and was handed off at every
        // page, so every page took fresh memory from the allocator, which a
        // VM pays for in page faults (zeroing) in the writer threads. At 64
        // KiB the buffers are reused from the allocator's free lists: the
        // simulator's mix ran at 5-20 % fewer CPU-seconds (system time about
        // halved) and 10-15 % less peak memory, for files under 1 % larger
        // (docs/PERFORMANCE.md, 2026-12-07 (later)).
        props = props.set_data_page_size_limit(PAGE_BYTES);
        for c in plain {
            props = props.set_column_dictionary_enabled(ColumnPath::from(*c), false);
        }
        let mut parts = Parts::new(dir, schema, props.build(), roll_every)
            .map_err(|source| SinkError::Io { path: dir.to_path_buf(), source })?;
        let (tx, rx) = sync_channel::<Vec<RecordBatch>>(16);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let handle = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                let part_error = |e: PartError| SinkError::Parquet { path: e.path, source: e.error };
                // Woken at least every second, so that a part of a quiet
                // live stream is still finished on time.
                loop {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(batches) => {
                            for batch in batches {
                                parts.write(&batch).map_err(part_error)?;
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    parts.roll_old().map_err(part_error)?;
                }
                parts.close().map_err(part_error)
            })
            .map_err(|source| SinkError::Io { path: dir.to_path_buf(), source })?;
        Ok(ParquetTable { name, tx: Some(tx), handle: Some(handle) })
    }

    /// Queues a batch; blocks when the writer is 16 sends behind.
    pub fn write(&mut self, batch: RecordBatch) -> Result<(), SinkError> {
        self.write_all(vec![batch])
    }

    /// Queues batches to be written in order, as one send. Small batches go
    /// as they are: the writer adds them to its row group, so gathering
    /// them into one batch first would only copy every value once more.
    pub fn write_all(&mut self, mut batches: Vec<RecordBatch>) -> Result<(), SinkError> {
        batches.retain(|b| b.num_rows() > 0);
        if batches.is_empty() {
            return Ok(());
        }
        let sent = self.tx.as_ref().map(|tx| tx.send(batches).is_ok()).unwrap_or(false);
        if sent {
            Ok(())
        } else {
            // The thread ended early: its error says why.
            Err(self
                .join()
                .err()
                .unwrap_or_else(|| SinkError::Writer { table: self.name.clone(), message: "closed".into() }))
        }
    }

    /// Flushes and closes the file; returns the rows written.
    pub fn finish(mut self) -> Result<u64, SinkError> {
        self.join()
    }

    fn join(&mut self) -> Result<u64, SinkError> {
        self.tx.take();
        match self.handle.take() {
            Some(h) => {
                h.join().map_err(|_| SinkError::Writer { table: self.name.clone(), message: "panicked".into() })?
            }
            None => Err(SinkError::Writer { table: self.name.clone(), message: "already finished".into() }),
        }
    }
}

impl Drop for ParquetTable {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let _ = self.join();
        }
    }
}

/// Event columns with (nearly) one value per entity or request: a Parquet
/// dictionary for them costs interning every value and mostly falls back to
/// plain encoding anyway.
const EVENT_PLAIN: &[&str] = &["request_id"];

/// Feature columns are floats and entity ids: a dictionary rarely pays for itself there.
static FEATURE_PLAIN: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut v: Vec<&'static str> = crate::features::FEATURES.iter().map(|(n, _)| *n).collect();
    v.push("entity");
    v
});

/// Dead-letter columns holding the line itself: a dictionary of unique lines is pure overhead.
const DEAD_LETTER_PLAIN: &[&str] = &["raw", "raw_base64"];

/// Dead letters are gathered to this many before they go to the writer
/// thread (and at every checkpoint).
const DEAD_LETTER_FLUSH_ROWS: usize = 4_096;

/// Feature rows are gathered to this many before they go to the writer
/// thread: one send per snapshot batch would cost a wake-up each.
const FEATURE_FLUSH_ROWS: usize = 16_384;

/// The `decisions` table schema.
pub fn decisions_schema() -> SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    std::sync::Arc::new(Schema::new(vec![
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
pub(crate) struct DecisionColumns {
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
    pub(crate) rows: usize,
}

impl DecisionColumns {
    pub(crate) fn push(&mut self, d: &Decision) {
        self.ts.append_value(d.created_ms);
        self.entity_type.append_value(d.entity_type.as_str());
        self.entity.append_value(&d.entity);
        self.action.append_value(d.action.as_str());
        self.ttl_s.append_value(d.ttl_s());
        self.reason.append_value(&d.reason);
        self.source.append_value(&d.source);
        self.score.append_value(d.score);
        self.id.append_value(d.id);
        self.expires_at.append_value(d.expires_ms);
        self.offense.append_value(d.offense);
        self.rows += 1;
    }

    pub(crate) fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
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

/// The run's Parquet tables: `events/`, `features/`, `decisions/`,
/// `dead_letters/` (each optional), and `shadow_decisions/` beside
/// `decisions/` once a shadow rule or model decided.
pub struct ParquetSink {
    dir: std::path::PathBuf,
    roll_every: Duration,
    events: Option<ParquetTable>,
    features: Option<ParquetTable>,
    decisions: Option<ParquetTable>,
    shadow: Option<ParquetTable>,
    dead_letters: Option<ParquetTable>,
    feature_buf: Vec<RecordBatch>,
    feature_buf_rows: usize,
    decision_cols: DecisionColumns,
    shadow_cols: DecisionColumns,
    dead_cols: DeadLetterColumns,
}

impl ParquetSink {
    /// Opens the named tables (`events`, `features`, `decisions`, `dead_letters`) under
    /// `dir`, each finishing a part at least every `roll_every`; a table
    /// already there (reopened after a failure) continues in new parts.
    pub fn open(dir: &Path, tables: &[String], roll_every: Duration) -> Result<Self, SinkError> {
        let want = |t: &str| tables.iter().any(|n| n == t);
        let open = |name: &str, schema: SchemaRef, plain: &[&str]| -> Result<Option<ParquetTable>, SinkError> {
            if want(name) {
                ParquetTable::create(&dir.join(name), schema, plain, roll_every).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(ParquetSink {
            dir: dir.to_path_buf(),
            roll_every,
            events: open("events", crate::event::schema(), EVENT_PLAIN)?,
            features: open("features", crate::features::table_schema(), &FEATURE_PLAIN)?,
            decisions: open("decisions", decisions_schema(), &[])?,
            shadow: None,
            dead_letters: open("dead_letters", super::deadletter::schema(), DEAD_LETTER_PLAIN)?,
            feature_buf: Vec::new(),
            feature_buf_rows: 0,
            decision_cols: DecisionColumns::default(),
            shadow_cols: DecisionColumns::default(),
            dead_cols: DeadLetterColumns::default(),
        })
    }

    fn flush_features(&mut self) -> Result<(), SinkError> {
        if let Some(out) = self.features.as_mut() {
            out.write_all(std::mem::take(&mut self.feature_buf))?;
        }
        self.feature_buf.clear();
        self.feature_buf_rows = 0;
        Ok(())
    }

    fn flush_decisions(&mut self) -> Result<(), SinkError> {
        if let Some(out) = self.decisions.as_mut()
            && self.decision_cols.rows > 0
        {
            let batch =
                self.decision_cols.finish().map_err(|source| SinkError::Arrow { table: "decisions".into(), source })?;
            out.write(batch)?;
        }
        if self.shadow_cols.rows > 0 {
            if self.shadow.is_none() {
                let dir = self.dir.join("shadow_decisions");
                self.shadow = Some(ParquetTable::create(&dir, decisions_schema(), &[], self.roll_every)?);
            }
            let batch = self
                .shadow_cols
                .finish()
                .map_err(|source| SinkError::Arrow { table: "shadow_decisions".into(), source })?;
            if let Some(out) = self.shadow.as_mut() {
                out.write(batch)?;
            }
        }
        Ok(())
    }

    fn flush_dead_letters(&mut self) -> Result<(), SinkError> {
        if let Some(out) = self.dead_letters.as_mut()
            && self.dead_cols.rows() > 0
        {
            let batch =
                self.dead_cols.finish().map_err(|source| SinkError::Arrow { table: "dead_letters".into(), source })?;
            out.write(batch)?;
        }
        Ok(())
    }
}

impl Sink for ParquetSink {
    fn name(&self) -> &str {
        "parquet"
    }

    fn wants(&self) -> Wants {
        Wants {
            events: self.events.is_some(),
            features: self.features.is_some(),
            decisions: self.decisions.is_some(),
            dead_letters: self.dead_letters.is_some(),
            opened_sessions: false,
        }
    }

    fn events(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        match self.events.as_mut() {
            Some(t) => t.write(batch.clone()),
            None => Ok(()),
        }
    }

    fn features(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        if self.features.is_some() {
            self.feature_buf_rows += batch.num_rows();
            self.feature_buf.push(batch.clone());
            if self.feature_buf_rows >= FEATURE_FLUSH_ROWS {
                self.flush_features()?;
            }
        }
        Ok(())
    }

    fn decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        if self.decisions.is_some() {
            self.decision_cols.push(d);
        }
        Ok(())
    }

    fn shadow_decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        if self.decisions.is_some() {
            self.shadow_cols.push(d);
        }
        Ok(())
    }

    fn dead_letter(&mut self, dl: &DeadLetter<'_>) -> Result<(), SinkError> {
        if self.dead_letters.is_some() {
            self.dead_cols.push(dl, super::deadletter::now_ms());
            if self.dead_cols.rows() >= DEAD_LETTER_FLUSH_ROWS {
                self.flush_dead_letters()?;
            }
        }
        Ok(())
    }

    /// Hands what is buffered to the writer threads. A part becomes readable
    /// (and durable) when it is finished: by rows, by age, or at `finish`.
    fn checkpoint(&mut self) -> Result<(), SinkError> {
        self.flush_features()?;
        self.flush_decisions()?;
        self.flush_dead_letters()
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.flush_features()?;
        self.flush_decisions()?;
        self.flush_dead_letters()?;
        let tables = [
            self.events.take(),
            self.features.take(),
            self.decisions.take(),
            self.shadow.take(),
            self.dead_letters.take(),
        ];
        for t in tables.into_iter().flatten() {
            t.finish()?;
        }
        Ok(())
    }
}
