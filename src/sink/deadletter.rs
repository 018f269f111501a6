//! Lines that could not be parsed, kept with their reason and position so that
//! nothing is lost and every failure can be found in its source.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use datafusion::arrow::array::{BooleanBuilder, StringBuilder, TimestampMillisecondBuilder, UInt64Builder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;

use super::{Sink, SinkError, Wants};
use crate::source::Position;

/// Bytes of a rejected line kept verbatim; longer lines keep this prefix and say so.
pub const MAX_RAW_BYTES: usize = 1 << 20;

/// Dead letters as rows (the `dead_letters` table, in Parquet and in
/// ClickHouse): when the line arrived (wall clock), where it came from, why
/// it was refused, and the line itself (text, or base64 when it is not
/// UTF-8), as `dead_letters.jsonl` keeps them.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
                Field::new("source", DataType::Utf8, false),
                Field::new("line", DataType::UInt64, false),
                Field::new("offset", DataType::UInt64, false),
                Field::new("reason", DataType::Utf8, false),
                Field::new("raw", DataType::Utf8, true),
                Field::new("raw_base64", DataType::Utf8, true),
                Field::new("bytes", DataType::UInt64, false),
                Field::new("truncated", DataType::Boolean, false),
            ]))
        })
        .clone()
}

/// Dead letters gathered into a batch of [`schema`].
#[derive(Default)]
pub struct DeadLetterColumns {
    ts: TimestampMillisecondBuilder,
    source: StringBuilder,
    line: UInt64Builder,
    offset: UInt64Builder,
    reason: StringBuilder,
    raw: StringBuilder,
    raw_base64: StringBuilder,
    bytes: UInt64Builder,
    truncated: BooleanBuilder,
    rows: usize,
}

impl DeadLetterColumns {
    /// Adds `dl`, which arrived at `now_ms` (wall clock: a dead letter has no event time).
    pub fn push(&mut self, dl: &DeadLetter<'_>, now_ms: i64) {
        self.ts.append_value(now_ms);
        match dl.pos {
            Position::Line { no, offset } => {
                self.source.append_value(dl.source);
                self.line.append_value(no);
                self.offset.append_value(offset);
            }
            // A Kafka record: `source` names its topic and partition, `line`
            // the line within the message, `offset` the message's offset.
            Position::Kafka { topic, partition, offset, line } => {
                self.source.append_value(format!("kafka:{topic}/{partition}"));
                self.line.append_value(u64::from(line));
                self.offset.append_value(offset.max(0) as u64);
            }
        }
        self.reason.append_value(dl.reason);
        self.raw.append_option(dl.raw);
        self.raw_base64.append_option(dl.raw_base64.as_deref());
        self.bytes.append_value(dl.bytes);
        self.truncated.append_value(dl.truncated);
        self.rows += 1;
    }

    /// Rows gathered since the last [`Self::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The gathered rows as a batch; starts over.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(self.ts.finish().with_timezone("UTC")),
                Arc::new(self.source.finish()),
                Arc::new(self.line.finish()),
                Arc::new(self.offset.finish()),
                Arc::new(self.reason.finish()),
                Arc::new(self.raw.finish()),
                Arc::new(self.raw_base64.finish()),
                Arc::new(self.bytes.finish()),
                Arc::new(self.truncated.finish()),
            ],
        )
    }
}

/// Milliseconds since the epoch by the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// One rejected line.
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    /// Input name (file path, `-` for stdin).
    pub source: &'a str,
    /// Where in the source (`line` and byte `offset` for files).
    #[serde(flatten)]
    pub pos: Position,
    pub reason: &'a str,
    /// The line, when it is valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<&'a str>,
    /// The line's bytes in base64, when it is not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_base64: Option<String>,
    /// Full length of the line in bytes.
    pub bytes: u64,
    /// True when only the first [`MAX_RAW_BYTES`] were kept.
    pub truncated: bool,
}

impl<'a> DeadLetter<'a> {
    pub fn new(source: &'a str, pos: Position, reason: &'a str, raw: &'a [u8], total_bytes: u64) -> Self {
        let kept = &raw[..raw.len().min(MAX_RAW_BYTES)];
        let (raw, raw_base64) = match std::str::from_utf8(kept) {
            Ok(s) => (Some(s), None),
            Err(e) if e.error_len().is_none() && kept.len() < raw.len() => {
                // Cut in the middle of a character by the size limit only.
                (std::str::from_utf8(&kept[..e.valid_up_to()]).ok(), None)
            }
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(kept))),
        };
        DeadLetter {
            source,
            pos,
            reason,
            raw,
            raw_base64,
            bytes: total_bytes,
            truncated: (kept.len() as u64) < total_bytes,
        }
    }
}

/// Bytes a dead-letter file may grow to unless the pipeline says otherwise.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// Appends dead letters as JSON lines, in at most two files of `max_bytes`.
///
/// Whatever arrives can be malformed (an attacker chooses the lines), so the
/// file cannot grow with it: at `max_bytes` it is renamed to `NAME.1.jsonl`
/// (replacing the one before, whose letters are counted as discarded and
/// logged) and a new one starts. The newest letters are what an operator
/// needs to see what is wrong now.
pub struct DeadLetterSink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    count: u64,
    max_bytes: u64,
    /// Bytes and letters in the current file, and letters in the rotated one.
    bytes: u64,
    in_file: u64,
    in_rotated: u64,
    discarded: u64,
    line: Vec<u8>,
    /// Continue the file that is there (after a failure) instead of starting it anew.
    resume: bool,
}

impl DeadLetterSink {
    /// The file is created on the first dead letter, so a clean run leaves none.
    pub fn new(path: &Path) -> Self {
        Self::with_limit(path, DEFAULT_MAX_BYTES)
    }

    pub fn with_limit(path: &Path, max_bytes: u64) -> Self {
        DeadLetterSink {
            path: path.to_path_buf(),
            out: None,
            count: 0,
            max_bytes: max_bytes.max(1),
            bytes: 0,
            in_file: 0,
            in_rotated: 0,
            discarded: 0,
            line: Vec::new(),
            resume: false,
        }
    }

    /// Like [`DeadLetterSink::with_limit`], continuing the file already there
    /// (a cut-off last line removed) instead of replacing it.
    pub fn resume(path: &Path, max_bytes: u64) -> Self {
        DeadLetterSink { resume: true, ..Self::with_limit(path, max_bytes) }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Letters dropped with a rotated file that was replaced.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the previous file goes when the current one is full.
    pub fn rotated_path(&self) -> PathBuf {
        let stem = self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.path.with_file_name(format!("{stem}.1.jsonl"))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
        }
        let rotated = self.rotated_path();
        if self.in_rotated > 0 {
            self.discarded += self.in_rotated;
            tracing::warn!(
                file = %rotated.display(),
                letters = self.in_rotated,
                discarded_total = self.discarded,
                "dead letters over their size limit: the older file is replaced"
            );
        }
        std::fs::rename(&self.path, &rotated)?;
        self.in_rotated = self.in_file;
        self.in_file = 0;
        self.bytes = 0;
        Ok(())
    }

    pub fn write(&mut self, d: &DeadLetter<'_>) -> Result<(), SinkError> {
        let io = |path: &Path, source| SinkError::Io { path: path.to_path_buf(), source };
        self.line.clear();
        serde_json::to_writer(&mut self.line, d).map_err(|e| io(&self.path, e.into()))?;
        self.line.push(b'\n');
        if self.out.is_some() && self.bytes + self.line.len() as u64 > self.max_bytes {
            self.rotate().map_err(|e| io(&self.path, e))?;
        }
        if self.out.is_none() {
            let f = if std::mem::take(&mut self.resume) {
                let (f, len) = crate::fsutil::open_lines_for_append(&self.path).map_err(|e| io(&self.path, e))?;
                self.bytes = len;
                // Letters already there count towards what rotation may discard.
                self.in_file = count_lines(&self.path).map_err(|e| io(&self.path, e))?;
                f
            } else {
                File::create(&self.path).map_err(|e| io(&self.path, e))?
            };
            self.out = Some(BufWriter::new(f));
        }
        if let Some(out) = self.out.as_mut() {
            out.write_all(&self.line).map_err(|source| SinkError::Io { path: self.path.clone(), source })?;
        }
        self.bytes += self.line.len() as u64;
        self.in_file += 1;
        self.count += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(|source| SinkError::Io { path: self.path.clone(), source })?;
        }
        Ok(())
    }
}

/// Newlines in the file at `path`, read a block at a time.
fn count_lines(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        n += memchr::memchr_iter(b'\n', &buf[..got]).count() as u64;
    }
}

impl Sink for DeadLetterSink {
    fn name(&self) -> &str {
        "dead_letters"
    }

    fn wants(&self) -> Wants {
        Wants { dead_letters: true, ..Wants::NONE }
    }

    fn dead_letter(&mut self, dl: &DeadLetter<'_>) -> Result<(), SinkError> {
        self.write(dl)
    }

    fn checkpoint(&mut self) -> Result<(), SinkError> {
        self.flush()
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_stay_within_their_limit_and_keep_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = DeadLetterSink::with_limit(&dir.path().join("dead_letters.jsonl"), 4096);
        let junk = [0xffu8; 300];
        for i in 0..1000u64 {
            let pos = Position::Line { no: i + 1, offset: i * 300 };
            sink.write(&DeadLetter::new("-", pos, "not a log line", &junk, 300)).expect("write");
        }
        sink.flush().expect("flush");
        let cur = std::fs::read_to_string(sink.path()).expect("current");
        let old = std::fs::read_to_string(sink.rotated_path()).expect("rotated");
        assert!(cur.len() <= 4096 && old.len() <= 4096, "{} {}", cur.len(), old.len());
        let lines = |s: &str| {
            s.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON")).collect::<Vec<_>>()
        };
        let (cur, old) = (lines(&cur), lines(&old));
        assert_eq!(cur.last().expect("letters")["line"], 1000, "the newest letter is kept");
        assert_eq!(old.last().expect("letters")["line"].as_u64(), cur[0]["line"].as_u64().map(|l| l - 1));
        assert_eq!(sink.count(), 1000);
        assert_eq!(sink.discarded() + cur.len() as u64 + old.len() as u64, 1000, "every letter is kept or counted");
    }
}
