//! `GET /ui/api/entity`: one entity's page — the decision in force on it and
//! what that decision has met, the story `explain` tells from the tables,
//! and its requests, errors and decisions per minute for the timeline plot.
//!
//! Reading the tables is an analytics query: it runs on the query runtime,
//! one at a time with the SQL box and `POST /v1/admin/query`, within
//! `api.query_timeout`, so an analyst opening entities never takes a worker
//! from the gateways' lookups.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use datafusion::arrow::array::{Array, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::scalar::ScalarValue;
use serde_json::{Value, json};

use crate::analytics::{self, QueryError};
use crate::api::{ApiError, AppState, check_params, now_ms, parse_ip, trim_blank};
use crate::features::EntityType;

/// Minutes of the timeline at most (the newest).
const TIMELINE_MINUTES: usize = 1_440;

const REQUESTS_PER_MINUTE: &str = "SELECT date_part('epoch', date_trunc('minute', ts)) AS minute, \
     count(*) AS requests, sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors \
     FROM event_entities WHERE entity_type = $t AND entity = $e \
     GROUP BY date_trunc('minute', ts) ORDER BY minute DESC LIMIT 1440";

const DECISIONS_PER_MINUTE: &str = "SELECT date_part('epoch', date_trunc('minute', ts)) AS minute, \
     count(*) AS decisions FROM decisions WHERE entity_type = $t AND entity = $e \
     GROUP BY date_trunc('minute', ts) ORDER BY minute DESC LIMIT 1440";

/// Columns of a per-minute timeline, oldest minute first (uPlot's shape).
#[derive(Debug, Default, serde::Serialize)]
pub struct Timeline {
    /// Minute starts, epoch seconds.
    pub t: Vec<f64>,
    pub requests: Vec<f64>,
    pub errors: Vec<f64>,
    pub decisions: Vec<f64>,
}

/// Runs `sql` with `$t` and `$e` bound and returns its columns as numbers.
async fn columns(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
    t: &str,
    e: &str,
) -> Result<Vec<Vec<f64>>, QueryError> {
    let values = vec![
        ("t".to_string(), ScalarValue::Utf8(Some(t.to_string()))),
        ("e".to_string(), ScalarValue::Utf8(Some(e.to_string()))),
    ];
    let batches = ctx.sql(sql).await?.with_param_values(values)?.collect().await?;
    let width = batches.first().map(|b| b.num_columns()).unwrap_or(0);
    let mut out = vec![Vec::new(); width];
    for b in &batches {
        for (i, col) in b.columns().iter().enumerate() {
            let f = cast(col, &DataType::Float64).map_err(|e| QueryError::Output(e.to_string()))?;
            let f =
                f.as_any().downcast_ref::<Float64Array>().ok_or_else(|| QueryError::Output("not numeric".into()))?;
            out[i].extend((0..f.len()).map(|r| if f.is_null(r) { 0.0 } else { f.value(r) }));
        }
    }
    Ok(out)
}

/// The entity's minutes with requests or decisions, oldest first.
pub async fn timeline(data_dir: &Path, t: EntityType, e: &str) -> Result<Timeline, QueryError> {
    let ctx = analytics::session(data_dir).await?;
    let traffic = columns(&ctx, REQUESTS_PER_MINUTE, t.as_str(), e).await?;
    let decided = columns(&ctx, DECISIONS_PER_MINUTE, t.as_str(), e).await?;
    let mut minutes: std::collections::BTreeMap<i64, [f64; 3]> = std::collections::BTreeMap::new();
    if let [m, r, err] = traffic.as_slice() {
        for i in 0..m.len() {
            let row = minutes.entry(m[i] as i64).or_default();
            row[0] = r[i];
            row[1] = err[i];
        }
    }
    if let [m, d] = decided.as_slice() {
        for i in 0..m.len() {
            minutes.entry(m[i] as i64).or_default()[2] = d[i];
        }
    }
    let mut tl = Timeline::default();
    let skip = minutes.len().saturating_sub(TIMELINE_MINUTES);
    for (m, [r, err, d]) in minutes.into_iter().skip(skip) {
        tl.t.push(m as f64);
        tl.requests.push(r);
        tl.errors.push(err);
        tl.decisions.push(d);
    }
    Ok(tl)
}

/// `GET /ui/api/entity?entity_type=&entity=`.
pub(super) async fn entity(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_params(&params, &["entity_type", "entity"])?;
    let t = crate::api::admin::entity_type(
        params.get("entity_type").ok_or_else(|| ApiError::bad_request("entity_type: required"))?,
    )?;
    let raw = trim_blank(params.get("entity").ok_or_else(|| ApiError::bad_request("entity: required"))?);
    if raw.is_empty() {
        return Err(ApiError::bad_request("entity: must not be blank"));
    }
    // An address however spelled is the one the engine and store name.
    let e = if t == EntityType::Ip { parse_ip("entity", raw)?.to_string() } else { raw.to_string() };
    let now = now_ms();
    let in_force = state.store.get(t, &e, now).map(|d| super::decisions::with_hits(&d, state.collateral.hits(d.id)));
    let timeout = Duration::from_millis(state.api.query_timeout_ms.max(1) as u64);
    let busy = || ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: "another query is running; queries run one at a time: try again when it is done".into(),
    };
    let permit = tokio::time::timeout(timeout, crate::api::query::running().clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(ApiError::internal)?;
    let data = state.state_dir.clone();
    let e2 = e.clone();
    let task = crate::api::query::runtime()?.spawn(async move {
        let _permit = permit;
        let story = analytics::explain::explain(&data, t, &e2).await;
        let timeline = timeline(&data, t, &e2).await;
        (story, timeline)
    });
    let (story, timeline) = tokio::time::timeout(timeout, task)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("reading the tables took longer than api.query_timeout ({} ms)", timeout.as_millis()),
        })?
        .map_err(ApiError::internal)?;
    // No tables yet (a run that has not rolled its first part) is an empty
    // story, not an error: the decision in force is still worth showing.
    let (story, tables) = match story {
        Ok(s) => (serde_json::to_value(s).map_err(ApiError::internal)?, Value::Null),
        Err(QueryError::NoTables(_)) => {
            (Value::Null, "no tables yet: they appear when the run rolls its first part".into())
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let timeline = match timeline {
        Ok(tl) => serde_json::to_value(tl).map_err(ApiError::internal)?,
        Err(QueryError::NoTables(_)) => serde_json::to_value(Timeline::default()).map_err(ApiError::internal)?,
        Err(e) => return Err(ApiError::internal(e)),
    };
    Ok(Json(json!({
        "entity_type": t.as_str(), "entity": e, "in_force": in_force, "story": story,
        "timeline": timeline, "tables": tables,
    })))
}
