//! One table's part files: partitioned by the hour of their rows' time,
//! rolled by rows and by age.
//!
//! A table directory holds `date=YYYY-MM-DD/hour=HH/part-N.parquet` (UTC, by
//! each row's `ts`): an analyst's tools and a retention job can find or drop
//! an hour by its path, and a long live run becomes queryable part by part —
//! a part is written as `part-N.parquet.writing` and renamed once its footer
//! is on disk, at the latest `roll_every` after it was opened. Rows of
//! another hour (out-of-order input, an hour's turn) go to that hour's own
//! part; a few hours' parts stay open at once, the oldest closed first.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, BooleanArray, TimestampMillisecondArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::properties::WriterProperties;

/// Suffix of a part file still being written.
pub const WRITING: &str = ".writing";
/// Rows in one part file at most.
pub const ROLL_ROWS: u64 = 1_000_000;
/// Hours with a part open at once (out-of-order input spans a few).
const OPEN_HOURS: usize = 4;
const HOUR_MS: i64 = 3_600_000;

/// Why a part could not be written, with the file it concerns.
#[derive(Debug)]
pub struct PartError {
    pub path: PathBuf,
    pub error: ParquetError,
}

struct Part {
    writer: ArrowWriter<File>,
    writing: PathBuf,
    done: PathBuf,
    rows: u64,
    opened: Instant,
}

impl Part {
    fn close(self) -> Result<u64, PartError> {
        let Part { writer, writing, done, rows, .. } = self;
        let closed = writer
            .close()
            .map(|_| ())
            .and_then(|()| std::fs::rename(&writing, &done).map_err(|e| ParquetError::External(Box::new(e))));
        match closed {
            Ok(()) => Ok(rows),
            Err(error) => {
                // A part without its footer is unreadable: it goes.
                let removed = std::fs::remove_file(&writing);
                tracing::error!(
                    file = %writing.display(),
                    rows,
                    %error,
                    removed = removed.is_ok(),
                    "a Parquet part file could not be finished; it is removed and its rows are lost"
                );
                Err(PartError { path: done, error })
            }
        }
    }
}

/// The parts of one table directory.
pub struct Parts {
    dir: PathBuf,
    schema: SchemaRef,
    props: WriterProperties,
    roll_every: Duration,
    open: BTreeMap<i64, Part>,
    next: u64,
    rows: u64,
}

impl Parts {
    /// Parts under `dir`, numbered after any already there (a table that
    /// continues after a failure never overwrites a part).
    pub fn new(dir: &Path, schema: SchemaRef, props: WriterProperties, roll_every: Duration) -> std::io::Result<Parts> {
        std::fs::create_dir_all(dir)?;
        Ok(Parts {
            dir: dir.to_path_buf(),
            schema,
            props,
            roll_every,
            open: BTreeMap::new(),
            next: next_number(dir),
            rows: 0,
        })
    }

    /// Rows written so far (in finished parts and open ones).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes `batch`, whose first column is its time, into its hours' parts.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), PartError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let hours: Vec<i64> = match batch.column(0).as_any().downcast_ref::<TimestampMillisecondArray>() {
            Some(ts) => {
                (0..ts.len()).map(|i| if ts.is_null(i) { 0 } else { ts.value(i).div_euclid(HOUR_MS) }).collect()
            }
            None => vec![0; batch.num_rows()],
        };
        let first = hours[0];
        if hours.iter().all(|&h| h == first) {
            return self.write_hour(first, batch);
        }
        let mut distinct = hours.clone();
        distinct.sort_unstable();
        distinct.dedup();
        for h in distinct {
            let mask = BooleanArray::from(hours.iter().map(|&x| x == h).collect::<Vec<bool>>());
            let part = filter_record_batch(batch, &mask)
                .map_err(|e| PartError { path: self.dir.clone(), error: ParquetError::from(e) })?;
            self.write_hour(h, &part)?;
        }
        Ok(())
    }

    fn write_hour(&mut self, hour: i64, batch: &RecordBatch) -> Result<(), PartError> {
        if !self.open.contains_key(&hour) {
            while self.open.len() >= OPEN_HOURS {
                if let Some((_, oldest)) = self.open.pop_first() {
                    oldest.close()?;
                }
            }
            let part = self.open_part(hour)?;
            self.open.insert(hour, part);
        }
        let Some(part) = self.open.get_mut(&hour) else { return Ok(()) };
        part.writer.write(batch).map_err(|error| PartError { path: part.writing.clone(), error })?;
        part.rows += batch.num_rows() as u64;
        self.rows += batch.num_rows() as u64;
        if part.rows >= ROLL_ROWS
            && let Some(full) = self.open.remove(&hour)
        {
            full.close()?;
        }
        Ok(())
    }

    fn open_part(&mut self, hour: i64) -> Result<Part, PartError> {
        let dir = self.dir.join(hour_dir(hour));
        let n = self.next;
        self.next += 1;
        let done = dir.join(format!("part-{n}.parquet"));
        let writing = dir.join(format!("part-{n}.parquet{WRITING}"));
        let io = |e: std::io::Error| PartError { path: writing.clone(), error: ParquetError::External(Box::new(e)) };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let file = File::create(&writing).map_err(io)?;
        let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
            .map_err(|error| PartError { path: writing.clone(), error })?;
        Ok(Part { writer, writing, done, rows: 0, opened: Instant::now() })
    }

    /// Finishes the parts open longer than `roll_every`, so their rows can be read.
    pub fn roll_old(&mut self) -> Result<(), PartError> {
        let old: Vec<i64> =
            self.open.iter().filter(|(_, p)| p.opened.elapsed() >= self.roll_every).map(|(&h, _)| h).collect();
        for h in old {
            if let Some(p) = self.open.remove(&h) {
                p.close()?;
            }
        }
        Ok(())
    }

    /// Finishes every open part.
    pub fn close(mut self) -> Result<u64, PartError> {
        let mut first_err = None;
        while let Some((_, p)) = self.open.pop_first() {
            if let Err(e) = p.close() {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(self.rows),
        }
    }
}

/// `date=YYYY-MM-DD/hour=HH` of an hour since the epoch (UTC).
pub fn hour_dir(hour: i64) -> String {
    let ts = crate::event::time::format_rfc3339(hour.saturating_mul(HOUR_MS));
    // RFC 3339: YYYY-MM-DDTHH:...
    match (ts.get(..10), ts.get(11..13)) {
        (Some(date), Some(h)) => format!("date={date}/hour={h}"),
        _ => "date=unknown".into(),
    }
}

/// One more than the highest part number anywhere under `dir`.
fn next_number(dir: &Path) -> u64 {
    let mut next = 0;
    for p in files_under(dir) {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(n) =
            name.strip_prefix("part-").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<u64>().ok())
        {
            next = next.max(n + 1);
        }
    }
    next
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn batch(ts: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(ts.to_vec()).with_timezone("UTC")),
                Arc::new(Int64Array::from(ts.to_vec())),
            ],
        )
        .expect("batch")
    }

    fn finished(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            files_under(dir).iter().map(|p| p.strip_prefix(dir).expect("under").display().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn rows_go_to_their_hour_and_parts_are_renamed_when_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = batch(&[0, 1]);
        let props = WriterProperties::builder().build();
        let mut parts = Parts::new(dir.path(), b.schema(), props, Duration::from_secs(3600)).expect("parts");
        // 1970-01-01 00:00 and 01:00, interleaved in one batch, then a late 00:xx row.
        parts.write(&batch(&[10, HOUR_MS + 5, 20])).expect("write");
        parts.write(&batch(&[30])).expect("write");
        assert_eq!(
            finished(dir.path()),
            ["date=1970-01-01/hour=00/part-0.parquet.writing", "date=1970-01-01/hour=01/part-1.parquet.writing"]
        );
        assert_eq!(parts.close().expect("close"), 4);
        assert_eq!(
            finished(dir.path()),
            ["date=1970-01-01/hour=00/part-0.parquet", "date=1970-01-01/hour=01/part-1.parquet"]
        );
        // Continuing the table numbers after what is there; an age of zero
        // finishes each part at the next roll.
        let props = WriterProperties::builder().build();
        let mut more = Parts::new(dir.path(), b.schema(), props, Duration::ZERO).expect("parts");
        more.write(&batch(&[40])).expect("write");
        more.roll_old().expect("roll");
        assert!(finished(dir.path()).contains(&"date=1970-01-01/hour=00/part-2.parquet".to_string()));
        assert_eq!(more.close().expect("close"), 1);
    }

    #[test]
    fn hour_directories_are_utc_dates_and_hours() {
        assert_eq!(hour_dir(1_793_599_200_219 / HOUR_MS), "date=2026-11-02/hour=06");
    }
}
