//! Where the pipeline's outputs go: Parquet tables, decisions as JSON lines,
//! and dead letters.

pub mod deadletter;
pub mod parquet;

pub use deadletter::{DeadLetter, DeadLetterSink};
pub use parquet::ParquetTable;

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
}
