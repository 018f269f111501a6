//! The decisions in force as the console pages through them: filtered,
//! sorted and cut to one page on the server, so a console over 100,000
//! decisions moves a page at a time, with the counts by type and action
//! and the top entities per type computed here rather than in the browser.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Json;
use axum::extract::{Query, State};
use serde_json::{Value, json};

use crate::api::{ApiError, AppState, check_params, decision_json, now_ms, shorten};
use crate::decision::Decision;
use crate::features::EntityType;
use crate::live::collateral::Hits;

/// Rows per page at most.
const MAX_LIMIT: usize = 500;
const DEFAULT_LIMIT: usize = 50;
/// Entities per list in `/ui/api/top`, at most.
const MAX_TOP: usize = 50;
/// How often tallies of decisions no longer in force are dropped.
const PRUNE_EVERY_MS: i64 = 60_000;

/// Orders a page can be sorted in (each most first, but `expires`: soonest first).
const SORTS: [&str; 7] = ["newest", "expires", "score", "requests", "refused", "users", "sessions"];

pub(super) fn with_hits(d: &Decision, h: Hits) -> Value {
    let mut v = decision_json(d);
    v["requests"] = h.requests.into();
    v["refused"] = h.refused.into();
    v["users"] = h.users.into();
    v["sessions"] = h.sessions.into();
    v
}

/// Drops the tallies of decisions no longer in force, at most once a minute.
fn prune(state: &AppState, active: &[Arc<Decision>], now: i64) {
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let last = LAST.load(Ordering::Relaxed);
    if last.saturating_add(PRUNE_EVERY_MS) > now
        || LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        return;
    }
    let ids: HashSet<u64> = active.iter().map(|d| d.id).collect();
    state.collateral.retain(|id| ids.contains(&id));
}

fn number(params: &HashMap<String, String>, key: &str, default: usize, max: usize) -> Result<usize, ApiError> {
    match params.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| ApiError::bad_request(format!("{key}: '{}' is not a number up to {max}", shorten(v)))),
    }
}

/// `GET /ui/api/decisions?entity_type=&action=&source=&q=&sort=&offset=&limit=`:
/// one page of the decisions in force with what each has met (requests,
/// refused, distinct users and sessions), the counts over all of them, and
/// the stream cursor they were read at (an event stream from it misses nothing).
pub(super) async fn page(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_params(&params, &["entity_type", "action", "source", "q", "sort", "offset", "limit"])?;
    let t =
        params.get("entity_type").filter(|t| !t.is_empty()).map(|t| crate::api::admin::entity_type(t)).transpose()?;
    let action = params.get("action").filter(|a| !a.is_empty()).map(|a| crate::api::admin::action(a)).transpose()?;
    let sort = params.get("sort").map(String::as_str).unwrap_or("newest");
    if !SORTS.contains(&sort) {
        return Err(ApiError::bad_request(format!("sort: '{}' is not one of {}", shorten(sort), SORTS.join(", "))));
    }
    let offset = number(&params, "offset", 0, usize::MAX)?;
    let limit = number(&params, "limit", DEFAULT_LIMIT, MAX_LIMIT)?.max(1);
    let source = params.get("source").filter(|s| !s.is_empty());
    let needle = params.get("q").map(|q| q.trim().to_lowercase()).filter(|q| !q.is_empty());

    // The cursor first: a change made while the list is read is then also
    // in the stream from this cursor (applied twice, never missed).
    let cursor = state.store.cursor();
    let now = now_ms();
    let active = state.store.active(now);
    prune(&state, &active, now);
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_action: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &active {
        *by_type.entry(d.entity_type.as_str()).or_default() += 1;
        *by_action.entry(d.action.as_str()).or_default() += 1;
    }
    let by_hits = matches!(sort, "requests" | "refused" | "users" | "sessions");
    let mut rows: Vec<(&Arc<Decision>, Hits)> = active
        .iter()
        .filter(|d| t.is_none_or(|t| d.entity_type == t))
        .filter(|d| action.is_none_or(|a| d.action == a))
        .filter(|d| source.is_none_or(|s| &d.source == s))
        .filter(|d| needle.as_ref().is_none_or(|n| d.entity.to_lowercase().contains(n.as_str())))
        // What each met is read for every row only when the order needs it.
        .map(|d| (d, if by_hits { state.collateral.hits(d.id) } else { Hits::default() }))
        .collect();
    let newest = |a: &Decision, b: &Decision| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id));
    rows.sort_by(|(a, ha), (b, hb)| {
        let key = match sort {
            "expires" => a.expires_ms.cmp(&b.expires_ms),
            "score" => b.score.total_cmp(&a.score),
            "requests" => hb.requests.cmp(&ha.requests),
            "refused" => hb.refused.cmp(&ha.refused),
            "users" => hb.users.cmp(&ha.users),
            "sessions" => hb.sessions.cmp(&ha.sessions),
            _ => std::cmp::Ordering::Equal,
        };
        key.then_with(|| newest(a, b))
    });
    let matched = rows.len();
    let page: Vec<Value> = rows
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(d, h)| with_hits(d, if by_hits { h } else { state.collateral.hits(d.id) }))
        .collect();
    Ok(Json(json!({
        "cursor": cursor, "total": active.len(), "matched": matched, "offset": offset, "limit": limit,
        "sort": sort, "by_type": by_type, "by_action": by_action, "rows": page,
        "untracked_lookups": state.collateral.untracked(),
    })))
}

/// `GET /ui/api/top?n=`: per entity type, the decisions in force with the
/// highest scores and the ones that refused the most requests.
pub(super) async fn top(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_params(&params, &["n"])?;
    let n = number(&params, "n", 10, MAX_TOP)?;
    let active = state.store.active(now_ms());
    let mut out = serde_json::Map::new();
    for t in EntityType::ALL {
        let mut of: Vec<(&Arc<Decision>, Hits)> =
            active.iter().filter(|d| d.entity_type == t).map(|d| (d, state.collateral.hits(d.id))).collect();
        if of.is_empty() {
            continue;
        }
        of.sort_by(|(a, _), (b, _)| b.score.total_cmp(&a.score).then(b.created_ms.cmp(&a.created_ms)));
        let by_score: Vec<Value> = of.iter().take(n).map(|(d, h)| with_hits(d, *h)).collect();
        of.retain(|(_, h)| h.refused > 0);
        of.sort_by(|(a, ha), (b, hb)| hb.refused.cmp(&ha.refused).then(b.created_ms.cmp(&a.created_ms)));
        let by_refused: Vec<Value> = of.iter().take(n).map(|(d, h)| with_hits(d, *h)).collect();
        out.insert(t.as_str().into(), json!({ "by_score": by_score, "by_refused": by_refused }));
    }
    Ok(Json(Value::Object(out)))
}
