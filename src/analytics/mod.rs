//! SQL over a run's tables (`events`, `features`, `decisions`) with DataFusion.

use std::path::Path;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

/// The tables a run directory may hold.
pub const TABLES: [&str; 3] = ["events", "features", "decisions"];

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}: no gatewatch tables here (expected events/, features/ or decisions/ from `gatewatch replay --out`)")]
    NoTables(String),
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
}

/// A session with every table found under `data_dir` registered.
pub async fn session(data_dir: &Path) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new();
    let mut found = 0;
    for t in TABLES {
        let dir = data_dir.join(t);
        let has_files = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(Result::ok).any(|e| e.path().extension().is_some_and(|x| x == "parquet")))
            .unwrap_or(false);
        if has_files {
            let path = format!("{}/", dir.display());
            ctx.register_parquet(t, &path, ParquetReadOptions::default()).await?;
            found += 1;
        }
    }
    if found == 0 {
        return Err(QueryError::NoTables(data_dir.display().to_string()));
    }
    Ok(ctx)
}

/// Runs one SQL statement and collects its result.
pub async fn query(data_dir: &Path, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let ctx = session(data_dir).await?;
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Renders batches as a text table.
pub fn render(batches: &[RecordBatch]) -> Result<String, QueryError> {
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches).map_err(DataFusionError::from)?.to_string())
}
