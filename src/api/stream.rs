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
//! Without `cursor`, SSE or `Last-Event-ID`, the route speaks CrowdSec's
//! stream protocol instead (see [`super::crowdsec`]).

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

use super::{ApiError, AppState, Caller, check_params, decision_json, header, now_ms, shorten};
use crate::live::store::{Change, Since};

/// Changes per answer unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 10_000;
const MAX_LIMIT: usize = 100_000;
/// Longest long-poll wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

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
    let last_event_id = header(&headers, "last-event-id")?;
    if !params.contains_key("cursor") && !sse && last_event_id.is_none() {
        return super::crowdsec::stream(&state, &caller.0, &params).map(|j| j.into_response());
    }
    check_params(&params, &["cursor", "wait", "limit"])?;
    let cursor = match params.get("cursor").map(String::as_str).or(last_event_id) {
        None | Some("") => None,
        Some(c) => Some(c.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "cursor: '{}' is not a cursor; use the `cursor` of a previous answer, or omit it for a snapshot",
                shorten(c)
            ))
        })?),
    };
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
        Some(w) => parse_wait(w)?,
    };
    if sse {
        return Ok(events(state, cursor).into_response());
    }
    let mut changed = state.store.subscribe();
    let mut closing = state.closing.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    let _reading = (!wait.is_zero()).then(|| Reading::new(&state.metrics.stream_readers));
    loop {
        let since = state.store.since(cursor, limit, now_ms()).map_err(ApiError::internal)?;
        let empty = matches!(&since, Since::Changes { changes, .. } if changes.is_empty());
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

fn parse_wait(w: &str) -> Result<Duration, ApiError> {
    let d = match w.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let ms =
                crate::event::time::parse_duration_ms(w).map_err(|e| ApiError::bad_request(format!("wait: {e}")))?;
            Duration::from_millis(ms.max(0) as u64)
        }
    };
    if d > MAX_WAIT {
        return Err(ApiError::bad_request(format!("wait: at most {}s", MAX_WAIT.as_secs())));
    }
    Ok(d)
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
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let reader = Reader {
        _reading: Reading::new(&state.metrics.stream_readers),
        changed: state.store.subscribe(),
        closing: state.closing.subscribe(),
        state,
        cursor,
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
            let since = r.state.store.since(r.cursor, 1_000, now_ms()).ok()?;
            match since {
                Since::Snapshot { cursor, decisions } => {
                    let data = json!({ "decisions": decisions.iter().map(|d| decision_json(d)).collect::<Vec<_>>() });
                    r.pending
                        .push_back(Event::default().event("snapshot").id(cursor.to_string()).data(data.to_string()));
                    r.cursor = Some(cursor);
                }
                Since::Changes { cursor, changes, .. } if !changes.is_empty() => {
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
                Since::Changes { .. } => {
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
