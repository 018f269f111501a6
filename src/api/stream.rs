//! `GET /v1/decisions/stream`: every change to the decisions in force, in order,
//! after a cursor, so a gateway can keep a local cache and never miss a change.
//!
//! The cursor is the sequence number of the last change the reader applied;
//! numbers have no gaps and never repeat (see [`crate::live::store`]). A reader
//! with no cursor, or one older than the retained changes or unknown to this
//! store, gets a snapshot and replaces its cache. Three ways to read:
//! - poll: `?cursor=C` answers at once;
//! - long-poll: `?cursor=C&wait=30s` holds the request until a change or the wait ends;
//! - Server-Sent Events: `Accept: text/event-stream` (cursor from `?cursor=` or
//!   `Last-Event-ID`), one event per change, `id` = its sequence number.
//!
//! Without `cursor`, `wait`, `limit`, SSE or `Last-Event-ID`, the route speaks
//! CrowdSec's stream protocol instead (see [`super::crowdsec`]). Both take the
//! same filters (`scopes`, `origins`, `scenarios_containing`,
//! `scenarios_not_containing`; in this protocol every scope by default) and
//! `startup=true`, which asks for a snapshot whatever the cursor.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::crowdsec::{Filters, STREAM_PARAMS, startup};
use super::{ApiError, AppState, Caller, check_params, decision_json, now_ms, shorten};
use crate::live::store::{Change, Since};

/// Changes per answer unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 10_000;
const MAX_LIMIT: usize = 100_000;

pub(super) async fn stream(
    State(state): State<Arc<AppState>>,
    caller: axum::Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sse = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    // An empty Last-Event-ID is no cursor (what an EventSource sends before
    // its first event); anything else must be one.
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| ApiError::bad_request("header Last-Event-ID is not visible ASCII"))?),
    };
    check_params(&params, &STREAM_PARAMS)?;
    let ours = ["cursor", "wait", "limit"].iter().any(|k| params.contains_key(*k));
    if !ours && !sse && last_event_id.is_none() {
        return super::crowdsec::stream(&state, &caller.0, &params).map(|j| j.into_response());
    }
    let filters = Filters::from(&params, None);
    // Both places a cursor can come from must hold one, even when `startup`
    // or the query's cursor makes the other moot: a malformed value is a
    // client bug to report, not a value to ignore.
    let from_query = parse_cursor("cursor", params.get("cursor").map(String::as_str))?;
    let from_header = parse_cursor("Last-Event-ID", last_event_id)?;
    let cursor = if startup(&params)? { None } else { from_query.or(from_header) };
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("limit: must be a number from 1 to {MAX_LIMIT}")))?,
    };
    let wait = match params.get("wait") {
        None => Duration::ZERO,
        Some(w) => parse_wait(w, Duration::from_millis(state.api.max_wait_ms.max(0) as u64))?,
    };
    if sse {
        return Ok(events(state, cursor, filters).into_response());
    }
    let mut changed = state.store.subscribe();
    let mut closing = state.closing.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    let _reading = (!wait.is_zero()).then(|| Reading::new(&state.metrics.stream_readers));
    let mut cursor = cursor;
    loop {
        let since = select(state.store.since(cursor, limit, now_ms()).map_err(ApiError::internal)?, &filters);
        let empty = match &since {
            // Everything read was filtered out: wait on from where it ended.
            Since::Changes { changes, more, cursor: next } if changes.is_empty() => {
                cursor = Some(*next);
                if *more {
                    continue;
                }
                true
            }
            _ => false,
        };
        if !empty || *closing.borrow() {
            return Ok(Json(since_json(since)).into_response());
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return Ok(Json(since_json(since)).into_response()) },
            _ = closing.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(since_json(since)).into_response()),
        }
    }
}

/// Counts an open long poll or event stream for as long as it lives.
struct Reading(prometheus::IntGauge);

impl Reading {
    fn new(g: &prometheus::IntGauge) -> Reading {
        g.inc();
        Reading(g.clone())
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A cursor as a reader sends it back; empty means none (a snapshot).
fn parse_cursor(field: &str, c: Option<&str>) -> Result<Option<u64>, ApiError> {
    match c.map(str::trim) {
        None | Some("") => Ok(None),
        // At most 19 digits, as the OpenAPI document says: far more changes
        // than any store will number.
        Some(c) => c.parse::<u64>().ok().filter(|_| c.len() <= 19).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field}: '{}' is not a cursor; use the `cursor` of a previous answer, or omit it for a snapshot",
                shorten(c)
            ))
        }),
    }
}

/// A long-poll wait: whole seconds, or a duration such as `30s`, up to `max` (`api.max_wait`).
fn parse_wait(w: &str, max: Duration) -> Result<Duration, ApiError> {
    let d = match w.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let ms =
                crate::event::time::parse_duration_ms(w).map_err(|e| ApiError::bad_request(format!("wait: {e}")))?;
            Duration::from_millis(ms.max(0) as u64)
        }
    };
    if d > max {
        return Err(ApiError::bad_request(format!("wait: at most {}s (api.max_wait)", max.as_secs())));
    }
    Ok(d)
}

/// What `filters` keep of an answer. The cursor stays where reading ended,
/// so a reader never reads the changes it skipped again.
fn select(since: Since, filters: &Filters) -> Since {
    match since {
        Since::Snapshot { cursor, mut decisions } => {
            decisions.retain(|d| filters.keep(d));
            Since::Snapshot { cursor, decisions }
        }
        Since::Changes { cursor, mut changes, more } => {
            changes.retain(|c| filters.keep(&c.decision));
            Since::Changes { cursor, changes, more }
        }
    }
}

fn change_json(c: &Change) -> serde_json::Value {
    json!({ "seq": c.seq, "kind": c.kind, "decision": decision_json(&c.decision) })
}

fn since_json(since: Since) -> serde_json::Value {
    match since {
        Since::Snapshot { cursor, decisions } => json!({
            "cursor": cursor, "snapshot": true, "more": false,
            "decisions": decisions.iter().map(|d| decision_json(d)).collect::<Vec<_>>(),
        }),
        Since::Changes { cursor, changes, more } => json!({
            "cursor": cursor, "snapshot": false, "more": more,
            "changes": changes.iter().map(change_json).collect::<Vec<_>>(),
        }),
    }
}

struct Reader {
    state: Arc<AppState>,
    cursor: Option<u64>,
    filters: Filters,
    pending: VecDeque<Event>,
    changed: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<bool>,
    _reading: Reading,
}

/// The SSE form: a `snapshot` event when needed (`id` = its cursor, data
/// `{"decisions": [...]}`), then one `created|changed|deleted|expired` event
/// per change (`id` = its sequence number, data = the decision).
fn events(
    state: Arc<AppState>,
    cursor: Option<u64>,
    filters: Filters,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let reader = Reader {
        _reading: Reading::new(&state.metrics.stream_readers),
        changed: state.store.subscribe(),
        closing: state.closing.subscribe(),
        state,
        cursor,
        filters,
        pending: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        loop {
            if let Some(e) = r.pending.pop_front() {
                return Some((Ok(e), r));
            }
            if *r.closing.borrow() {
                return None;
            }
            let since = select(r.state.store.since(r.cursor, 1_000, now_ms()).ok()?, &r.filters);
            match since {
                Since::Snapshot { cursor, decisions } => {
                    let data = json!({ "decisions": decisions.iter().map(|d| decision_json(d)).collect::<Vec<_>>() });
                    r.pending
                        .push_back(Event::default().event("snapshot").id(cursor.to_string()).data(data.to_string()));
                    r.cursor = Some(cursor);
                }
                Since::Changes { cursor, changes, more } if !changes.is_empty() || more => {
                    for c in &changes {
                        let kind = serde_json::to_value(c.kind).ok()?.as_str().unwrap_or("changed").to_string();
                        r.pending.push_back(
                            Event::default()
                                .event(kind)
                                .id(c.seq.to_string())
                                .data(decision_json(&c.decision).to_string()),
                        );
                    }
                    r.cursor = Some(cursor);
                }
                Since::Changes { cursor, .. } => {
                    r.cursor = Some(cursor);
                    tokio::select! {
                        res = r.changed.changed() => res.ok()?,
                        _ = r.closing.changed() => return None,
                    }
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
