//! `POST /v1/admin/query`: the analytics SQL over the API, for admin keys.
//!
//! The server answers gateways tens of thousands of times a second, so an
//! analyst's query must not take that away: queries run one at a time on a
//! thread of their own (not the API's workers), read-only, within the row,
//! time and memory limits of `[api]`, and a second query while one runs is
//! told to come back (429) rather than queued without bound.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use super::{ApiError, AppState};
use crate::analytics::{self, Limits, QueryError};

/// Longest statement accepted, in bytes.
const MAX_SQL: usize = 64 * 1024;
/// Most parameters, and the longest value of one.
const MAX_PARAMS: usize = 64;
const MAX_PARAM_VALUE: usize = 4096;

/// A query, as posted.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One read-only SQL statement over `events`, `features`, `decisions`, `event_entities`.
    pub sql: String,
    /// Values for `$NAME` placeholders, bound as text (never spliced).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Rows to return at most; more than `api.query_max_rows` (the default) is cut to it.
    #[serde(default)]
    pub max_rows: Option<usize>,
}

/// The runtime queries run on: one worker, apart from the API's.
pub(super) fn runtime() -> Result<&'static tokio::runtime::Runtime, ApiError> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("admin-query")
            .enable_all()
            .build()
            .map_err(|e| tracing::error!(error = %e, "the query runtime could not start"))
            .ok()
    })
    .as_ref()
    .ok_or_else(|| ApiError::internal("the query runtime could not start"))
}

/// One query at a time.
pub(super) fn running() -> &'static Arc<tokio::sync::Semaphore> {
    static ONE: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    ONE.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(1)))
}

fn check(r: &QueryRequest, max_rows: usize) -> Result<usize, ApiError> {
    if super::trim_blank(&r.sql).is_empty() {
        return Err(ApiError::bad_request("sql: one SQL statement is required"));
    }
    // Lengths in characters, as the OpenAPI document's maxLength counts them.
    if r.sql.chars().count() > MAX_SQL {
        return Err(ApiError::bad_request(format!("sql: longer than {MAX_SQL} characters")));
    }
    if r.params.len() > MAX_PARAMS {
        return Err(ApiError::bad_request(format!("params: more than {MAX_PARAMS}")));
    }
    // A name is only looked up by the placeholders ($NAME) of the SQL: one
    // that none uses is ignored, so names need no rule beyond the body's bounds.
    for (k, v) in &r.params {
        if v.chars().count() > MAX_PARAM_VALUE {
            return Err(ApiError::bad_request(format!(
                "params.{}: longer than {MAX_PARAM_VALUE} characters",
                super::shorten(k)
            )));
        }
    }
    // More than the server allows is cut to it (the answer says when rows were cut).
    match r.max_rows {
        None => Ok(max_rows),
        Some(0) => Err(ApiError::bad_request("max_rows: must be at least 1")),
        Some(n) => Ok(n.min(max_rows)),
    }
}

fn query_error(e: QueryError) -> ApiError {
    use datafusion::error::DataFusionError as D;
    let status = match &e {
        QueryError::NoTables(_) => StatusCode::NOT_FOUND,
        QueryError::Timeout(_) | QueryError::Memory { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        QueryError::DataFusion(d) => match d.find_root() {
            D::IoError(_) | D::ParquetError(_) | D::ObjectStore(_) | D::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        },
        QueryError::Output(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "admin query failed");
    }
    ApiError { status, message: e.to_string() }
}

/// Rows as JSON objects (nulls written out, so every row has every column).
fn rows_json(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Result<serde_json::Value, ApiError> {
    use datafusion::arrow::json::{WriterBuilder, writer::JsonArray};
    let mut buf = Vec::new();
    {
        let mut w = WriterBuilder::new().with_explicit_nulls(true).build::<_, JsonArray>(&mut buf);
        for b in batches {
            w.write(b).map_err(ApiError::internal)?;
        }
        w.finish().map_err(ApiError::internal)?;
    }
    if buf.is_empty() {
        return Ok(json!([]));
    }
    serde_json::from_slice(&buf).map_err(ApiError::internal)
}

/// `POST /v1/admin/query`.
pub(super) async fn query(
    State(state): State<Arc<AppState>>,
    body: Result<Json<QueryRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(r) = body.map_err(super::admin::body_error)?;
    let max_rows = check(&r, state.api.query_max_rows)?;
    let Ok(permit) = running().clone().try_acquire_owned() else {
        return Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "another query is running; queries run one at a time: try again when it is done".into(),
        });
    };
    let limits = Limits {
        max_rows,
        timeout: Duration::from_millis(state.api.query_timeout_ms.max(1) as u64),
        memory_bytes: state.api.query_memory_bytes,
    };
    let data = state.state_dir.clone();
    let params: Vec<(String, String)> = r.params.into_iter().collect();
    let started = Instant::now();
    let task = runtime()?.spawn(async move {
        let _permit = permit;
        analytics::query_limited(&data, &r.sql, &params, limits).await
    });
    let result = task.await.map_err(ApiError::internal)?.map_err(query_error)?;
    let columns: Vec<serde_json::Value> =
        result.schema.fields().iter().map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() })).collect();
    Ok(Json(json!({
        "columns": columns,
        "rows": rows_json(&result.batches)?,
        "row_count": result.rows,
        "truncated": result.truncated,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    })))
}
