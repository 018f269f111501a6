//! A Parquet table written by a background thread.
//!
//! Encoding and compressing Parquet costs about as much as everything else in
//! the pipeline, so it runs beside the main loop; the bounded channel gives
//! back-pressure instead of unbounded memory when the disk is slow.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use super::SinkError;

/// One table (a directory of Parquet files readable as one DataFusion table).
pub struct ParquetTable {
    name: String,
    tx: Option<SyncSender<RecordBatch>>,
    handle: Option<JoinHandle<Result<u64, SinkError>>>,
}

impl ParquetTable {
    /// Creates `dir/part-0.parquet` and starts its writer thread. Columns in
    /// `plain` skip dictionary encoding: for unique values (request ids) a
    /// dictionary is pure overhead. Measured: turning dictionaries off everywhere
    /// made replay slower (more bytes to compress), so they stay on elsewhere.
    pub fn create(dir: &Path, schema: SchemaRef, plain: &[&str]) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io { path: dir.to_path_buf(), source })?;
        let path: PathBuf = dir.join("part-0.parquet");
        let file = File::create(&path).map_err(|source| SinkError::Io { path: path.clone(), source })?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(256 * 1024))
            // Min/max statistics cost a comparison per value per column; only the
            // time column is worth it (it prunes row groups in time-range queries).
            .set_statistics_enabled(EnabledStatistics::None)
            .set_column_statistics_enabled(ColumnPath::from("ts"), EnabledStatistics::Page);
        for c in plain {
            props = props.set_column_dictionary_enabled(ColumnPath::from(*c), false);
        }
        let props = props.build();
        let mut writer = ArrowWriter::try_new(file, schema, Some(props))
            .map_err(|source| SinkError::Parquet { path: path.clone(), source })?;
        let (tx, rx) = sync_channel::<RecordBatch>(16);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let handle = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                let mut rows = 0u64;
                for batch in rx {
                    rows += batch.num_rows() as u64;
                    writer.write(&batch).map_err(|source| SinkError::Parquet { path: path.clone(), source })?;
                }
                writer.close().map_err(|source| SinkError::Parquet { path: path.clone(), source })?;
                Ok(rows)
            })
            .map_err(|source| SinkError::Io { path: dir.to_path_buf(), source })?;
        Ok(ParquetTable { name, tx: Some(tx), handle: Some(handle) })
    }

    /// Queues a batch; blocks when the writer is 16 batches behind.
    pub fn write(&mut self, batch: RecordBatch) -> Result<(), SinkError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let sent = self.tx.as_ref().map(|tx| tx.send(batch).is_ok()).unwrap_or(false);
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
