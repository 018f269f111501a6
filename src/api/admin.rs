//! Admin routes: decisions by hand, the allowlist, and reloading rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde_json::json;

use super::{
    ApiError, AppState, Caller, MAX_PARAM, check_params, decision_json, now_ms, parse_ip, parse_net, shorten, too_long,
    trim_blank,
};
use crate::config::Pipeline;
use crate::decision::Action;
use crate::event::time::format_rfc3339;
use crate::features::EntityType;
use crate::live::allow::{AllowEntry, AllowKind};

/// An `action` query parameter.
pub(super) fn action(a: &str) -> Result<Action, ApiError> {
    Action::parse(a).ok_or_else(|| {
        ApiError::bad_request(format!("action: '{}' is not one of allow, throttle, challenge, deny", shorten(a)))
    })
}

pub(super) fn entity_type(t: &str) -> Result<EntityType, ApiError> {
    EntityType::parse_decided(t).ok_or_else(|| {
        ApiError::bad_request(format!(
            "entity_type: '{}' is not one of ip, cidr, user, api_key, device, session, class",
            shorten(t)
        ))
    })
}

/// `GET /v1/admin/decisions?entity_type=&action=&source=`: decisions in force, filtered.
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_params(&params, &["entity_type", "entity", "action", "source"])?;
    let t = params.get("entity_type").map(|t| entity_type(t)).transpose()?;
    let action = params.get("action").map(|a| action(a)).transpose()?;
    let list: Vec<_> = state
        .store
        .active(now_ms())
        .into_iter()
        .filter(|d| t.is_none_or(|t| d.entity_type == t))
        .filter(|d| action.is_none_or(|a| d.action == a))
        .filter(|d| params.get("source").is_none_or(|s| &d.source == s))
        .filter(|d| {
            params.get("entity").is_none_or(|e| {
                // An address matches however it is spelled (IPv4-mapped, zero-padded IPv6).
                &d.entity == e
                    || (d.entity_type == crate::features::EntityType::Ip
                        && parse_ip("entity", e).is_ok_and(|ip| d.entity == ip.to_string()))
            })
        })
        .map(|d| decision_json(&d))
        .collect();
    Ok(Json(json!({ "decisions": list })))
}

/// A manual decision, as posted by an admin.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualDecision {
    pub entity_type: String,
    pub entity: String,
    pub action: String,
    /// Duration such as `30m`, `1h`, `7d`.
    pub ttl: String,
    pub reason: String,
}

fn canonical_entity(t: crate::features::EntityType, entity: &str) -> Result<String, ApiError> {
    use crate::features::EntityType;
    let e = trim_blank(entity);
    if e.is_empty() || too_long(e, MAX_PARAM) {
        return Err(ApiError::bad_request(format!("entity: must be 1–{MAX_PARAM} characters")));
    }
    Ok(match t {
        EntityType::Ip => parse_ip("entity", e)?.to_string(),
        EntityType::Cidr => parse_net("entity", e)?.to_string(),
        EntityType::Class => match crate::classes::ALL.iter().find(|c| **c == e) {
            Some(c) => (*c).to_string(),
            None => {
                return Err(ApiError::bad_request(format!(
                    "entity: '{}' is not a request class ({})",
                    shorten(e),
                    crate::classes::ALL.join(", ")
                )));
            }
        },
        _ => e.to_string(),
    })
}

/// A body that could not be read as JSON: 413 when it is over the size limit
/// (the client must send less, not fix its syntax), 400 otherwise.
pub(super) fn body_error(e: axum::extract::rejection::JsonRejection) -> ApiError {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError { status, message: format!("body: {}", e.body_text()) }
}

/// Longest reason an operator may give, in characters.
const MAX_REASON: usize = 1024;

/// Most decisions one request may create (an imported block list).
const MAX_BULK: usize = 200_000;

/// Checks one manual decision; `at` names it in errors (`decisions[3].ttl: ...`).
fn manual_decision(
    v: serde_json::Value,
    at: &str,
    id: u64,
    caller: &Caller,
    now: i64,
) -> Result<crate::decision::Decision, ApiError> {
    let m: ManualDecision =
        serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("{at}{}", shorten(&e.to_string()))))?;
    let bad = |m: String| ApiError::bad_request(format!("{at}{m}"));
    let t = entity_type(&m.entity_type).map_err(|e| bad(e.message))?;
    let entity = canonical_entity(t, &m.entity).map_err(|e| bad(e.message))?;
    let action = Action::parse(&m.action).ok_or_else(|| {
        bad(format!("action: '{}' is not one of deny, challenge, throttle, allow", shorten(&m.action)))
    })?;
    let ttl_ms = crate::event::time::parse_duration_ms(m.ttl.trim()).map_err(|e| bad(format!("ttl: {e}")))?;
    if !(1_000..=366 * 86_400_000).contains(&ttl_ms) {
        return Err(bad("ttl: must be between 1s and 366d".into()));
    }
    if trim_blank(&m.reason).is_empty() || too_long(&m.reason, MAX_REASON) {
        return Err(bad(format!("reason: say why, in at most {MAX_REASON} characters")));
    }
    Ok(crate::decision::Decision {
        id,
        entity_type: t,
        entity,
        action,
        reason: trim_blank(&m.reason).to_string(),
        source: format!("manual:{}", caller.name),
        score: 1.0,
        created_ms: now,
        expires_ms: now + ttl_ms,
        offense: 0,
        spared: Vec::new(),
    })
}

/// `POST /v1/admin/decisions`: deny, challenge, throttle or allow an entity by
/// hand — one decision, or an array of them (a block list) stored in one
/// transaction: all or none. A manual decision replaces what is in force on the
/// entity, and automatic decisions do not replace it until it expires or is deleted.
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(body) = body.map_err(body_error)?;
    let now = now_ms();
    let (many, items) = match body {
        serde_json::Value::Array(items) => (true, items),
        one => (false, vec![one]),
    };
    if items.is_empty() || items.len() > MAX_BULK {
        return Err(ApiError::bad_request(format!("body: send 1 to {MAX_BULK} decisions")));
    }
    let first = state.next_manual_id.fetch_add(items.len() as u64, Ordering::Relaxed);
    let mut ds = Vec::with_capacity(items.len());
    for (i, v) in items.into_iter().enumerate() {
        let at = if many { format!("decisions[{i}].") } else { String::new() };
        ds.push(manual_decision(v, &at, first + i as u64, &caller, now)?);
    }
    let store = state.store.clone();
    let stored = ds.clone();
    // A commit waits for fsync: off the async workers, so lookups never queue behind it.
    tokio::task::spawn_blocking(move || store.put_many(stored))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::store)?;
    for d in &ds {
        state.metrics.decisions.with_label_values(&[d.source.as_str(), d.action.as_str()]).inc();
        state.metrics.fired.record(d, false, now);
    }
    // Stored here, so this instance enforces it whatever the brokers do; the
    // other instances learn it from the topic (the producer retries).
    if let Some(p) = &state.publisher
        && let Err(e) = p.publish(&ds)
    {
        state.metrics.publish_failed.inc();
        tracing::error!(error = %e, "manual decisions not published to the decisions topic");
    }
    let shown = |d: &crate::decision::Decision| {
        json!({
            "decision_id": d.id, "entity_type": d.entity_type, "entity": d.entity, "action": d.action,
            "reason": d.reason, "source": d.source,
            "expires_at": crate::event::time::format_rfc3339(d.expires_ms),
        })
    };
    let answer = if many { json!({ "created": ds.len(), "first_id": first }) } else { shown(&ds[0]) };
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `DELETE /v1/admin/decisions?entity_type=&entity=`: lifts whatever is in force on an entity.
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_params(&params, &["entity_type", "entity"])?;
    let t = params.get("entity_type").ok_or_else(|| ApiError::bad_request("entity_type: required"))?;
    let t = entity_type(t)?;
    let given = params.get("entity").ok_or_else(|| ApiError::bad_request("entity: required"))?;
    if trim_blank(given).is_empty() || too_long(given, MAX_PARAM) {
        return Err(ApiError::bad_request(format!("entity: must be 1–{MAX_PARAM} characters")));
    }
    // A value that is not an address (or a network we would keep) cannot have
    // anything in force on it: the answer is that nothing was, not a syntax error.
    let entity = canonical_entity(t, given).map_err(|e| ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no decision on {} '{}': {}", t.as_str(), shorten(given), e.message),
    })?;
    let store = state.store.clone();
    let key = entity.clone();
    let removed = tokio::task::spawn_blocking(move || store.remove(t, &key)).await.map_err(ApiError::internal)?;
    match removed.map_err(ApiError::store)? {
        Some(d) => {
            if let Some(p) = &state.publisher
                && let Err(e) = p.lift(&d)
            {
                state.metrics.publish_failed.inc();
                tracing::error!(error = %e, "a lift not published to the decisions topic");
            }
            Ok(Json(json!({ "deleted": d.id })))
        }
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no decision on {} {}", t.as_str(), entity),
        }),
    }
}

/// `GET /v1/admin/allowlist`: the pipeline file's allowlist and the operators' entries.
pub(super) async fn allowlist(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let admin = state.admin.lock().await;
    let a = &admin.pipeline.allowlist;
    Json(json!({
        "pipeline": {
            "file": admin.pipeline.file,
            "cidrs": a.cidrs.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "api_keys": a.api_keys,
            "crawlers": a.crawlers.iter().map(|c| json!({
                "name": c.name, "user_agent": c.user_agent.as_str(),
                "cidrs": c.cidrs.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        },
        "entries": admin.overlay.entries(),
    }))
}

/// An allowlist entry, as posted by an admin.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRequest {
    /// `cidr` (an address or a network) or `api_key`.
    pub kind: String,
    pub value: String,
    pub reason: String,
}

fn allow_target(kind: &str, value: &str) -> Result<(AllowKind, String), ApiError> {
    let v = trim_blank(value);
    if v.is_empty() || too_long(v, MAX_PARAM) {
        return Err(ApiError::bad_request(format!("value: must be 1–{MAX_PARAM} characters")));
    }
    match kind {
        "cidr" | "ip" => {
            let net = if v.contains('/') { parse_net("value", v)? } else { ipnet::IpNet::from(parse_ip("value", v)?) };
            Ok((AllowKind::Cidr, net.to_string()))
        }
        "api_key" => Ok((AllowKind::ApiKey, v.to_string())),
        other => Err(ApiError::bad_request(format!("kind: '{}' is not one of cidr, ip, api_key", shorten(other)))),
    }
}

/// `POST /v1/admin/allowlist`: protect an address, network or API key from
/// every decision (automatic or not) until the entry is deleted.
pub(super) async fn allow(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<AllowRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(r) = body.map_err(body_error)?;
    let (kind, value) = allow_target(&r.kind, &r.value)?;
    if trim_blank(&r.reason).is_empty() || too_long(&r.reason, MAX_REASON) {
        return Err(ApiError::bad_request(format!("reason: say why, in at most {MAX_REASON} characters")));
    }
    let entry = AllowEntry {
        kind,
        value,
        reason: trim_blank(&r.reason).to_string(),
        added_by: caller.name,
        added_at: format_rfc3339(now_ms()),
    };
    let mut admin = state.admin.lock().await;
    admin.overlay.add(entry.clone()).map_err(ApiError::store)?;
    state.allowlist.store(Arc::new(admin.overlay.apply(&admin.pipeline.allowlist)));
    Ok((StatusCode::CREATED, Json(json!(entry))))
}

/// `DELETE /v1/admin/allowlist?kind=&value=`: removes an operator entry.
pub(super) async fn disallow(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_params(&params, &["kind", "value"])?;
    let kind = params.get("kind").ok_or_else(|| ApiError::bad_request("kind: required"))?;
    let value = params.get("value").ok_or_else(|| ApiError::bad_request("value: required"))?;
    if !["cidr", "ip", "api_key"].contains(&kind.as_str()) {
        return Err(ApiError::bad_request(format!("kind: '{}' is not one of cidr, ip, api_key", shorten(kind))));
    }
    if trim_blank(value).is_empty() || too_long(value, MAX_PARAM) {
        return Err(ApiError::bad_request(format!("value: must be 1–{MAX_PARAM} characters")));
    }
    // As for decisions: what is not an address or a network we keep has no entry.
    let (kind, value) = allow_target(kind, value).map_err(|e| ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no allowlist entry for '{}': {}", shorten(value), e.message),
    })?;
    let mut admin = state.admin.lock().await;
    let Some(removed) = admin.overlay.remove(kind, &value).map_err(ApiError::store)? else {
        let in_file = match kind {
            AllowKind::Cidr => admin.pipeline.allowlist.cidrs.iter().any(|n| n.to_string() == value),
            AllowKind::ApiKey => admin.pipeline.allowlist.api_keys.contains(&value),
        };
        return Err(if in_file {
            ApiError {
                status: StatusCode::CONFLICT,
                message: format!(
                    "{value} is in the pipeline file's allowlist ({}); edit the file and reload",
                    admin.pipeline.file.display()
                ),
            }
        } else {
            ApiError { status: StatusCode::NOT_FOUND, message: format!("no allowlist entry for {value}") }
        });
    };
    state.allowlist.store(Arc::new(admin.overlay.apply(&admin.pipeline.allowlist)));
    Ok(Json(json!({ "deleted": removed })))
}

/// `POST /v1/admin/reload`: see [`AppState::reload`].
pub(super) async fn reload_route(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    state.reload().await.map(Json)
}

/// Sections whose changes only a restart applies.
fn needs_restart(old: &Pipeline, new: &Pipeline) -> Vec<&'static str> {
    let mut out = Vec::new();
    let differs = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    if differs(&old.input, &new.input) {
        out.push("input");
    }
    if differs(&old.features, &new.features) {
        out.push("features");
    }
    if differs(&old.output, &new.output) {
        out.push("output");
    }
    if differs(&old.api, &new.api) {
        out.push("api");
    }
    if old.classes != new.classes {
        out.push("classes");
    }
    if old.state_dir != new.state_dir {
        out.push("state");
    }
    out
}

pub(super) async fn reload(state: &AppState) -> Result<serde_json::Value, ApiError> {
    let control = state.control.as_ref().ok_or_else(|| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "no engine is running to reload".into(),
    })?;
    let mut admin = state.admin.lock().await;
    let file = admin.pipeline.file.clone();
    let mut next = Pipeline::load(&file).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("pipeline not reloaded, the running rules stay: {e}"),
    })?;
    let rules = control.reload(next.rules.clone(), next.decisions.clone(), next.models.clone()).await.map_err(|e| {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("pipeline not reloaded, the running rules stay: {e}"),
        }
    })?;
    // `--listen` overrides the file's address; that is not a change to report.
    next.api.listen = admin.pipeline.api.listen.clone();
    let restart = needs_restart(&admin.pipeline, &next);
    let models: Vec<String> = next.models.iter().map(|m| m.model.id()).collect();
    state.allowlist.store(Arc::new(admin.overlay.apply(&next.allowlist)));
    admin.pipeline.rules = next.rules;
    admin.pipeline.decisions = next.decisions;
    admin.pipeline.allowlist = next.allowlist;
    admin.previous_models = Some(std::mem::replace(&mut admin.pipeline.models, next.models));
    state.metrics.set_models(&admin.pipeline.models);
    state.metrics.reloads.inc();
    tracing::info!(file = %file.display(), rules = rules.len(), "pipeline reloaded");
    Ok(json!({
        "file": file,
        "rules": rules,
        "models": models,
        "applied": ["rules", "models", "decisions", "allowlist"],
        "needs_restart": restart,
    }))
}

fn model_json(m: &crate::config::ModelSpec) -> serde_json::Value {
    json!({
        "model": m.model.id(), "name": m.model.file.name, "version": m.model.file.version,
        "kind": m.model.file.kind.as_str(), "entity": m.entity, "path": m.model.path,
        "features": m.model.file.features, "threshold": m.model.file.threshold,
        "challenge_at": m.challenge_at, "deny_at": m.deny_at, "ttl_s": m.ttl_ms / 1000,
    })
}

/// `GET /v1/admin/shadow?entity_type=&source=&limit=`: what the shadow rules
/// and models would have decided, newest first, each beside what is in force
/// on its entity now (`enforced`: the live decision, or null when the
/// enforced set let it through), with counts by source since the start.
pub(super) async fn shadow(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_params(&params, &["entity_type", "source", "limit"])?;
    let t = params.get("entity_type").map(|t| entity_type(t)).transpose()?;
    let limit = match params.get("limit") {
        None => 100,
        Some(l) => {
            l.parse::<usize>().ok().filter(|n| (1..=crate::live::shadow::KEPT).contains(n)).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit: '{}' is not a number from 1 to {}",
                    shorten(l),
                    crate::live::shadow::KEPT
                ))
            })?
        }
    };
    let source = params.get("source");
    let snap =
        state.shadow.snapshot(limit, |d| t.is_none_or(|t| d.entity_type == t) && source.is_none_or(|s| &d.source == s));
    let now = now_ms();
    let decisions: Vec<serde_json::Value> = snap
        .recent
        .iter()
        .map(|d| {
            let mut v = decision_json(d);
            v["enforced"] = state.store.get(d.entity_type, &d.entity, now).map(|e| decision_json(&e)).into();
            v
        })
        .collect();
    let by_source: Vec<serde_json::Value> =
        snap.by_source.iter().map(|(s, a, n)| json!({ "source": s, "action": a, "decisions": n })).collect();
    let (rules, models) = {
        let admin = state.admin.lock().await;
        let p = &admin.pipeline;
        let rules: Vec<String> = p.rules.iter().filter(|r| r.shadow).map(|r| r.name.clone()).collect();
        let models: Vec<String> = p.models.iter().filter(|m| m.shadow).map(|m| m.model.id()).collect();
        (rules, models)
    };
    Ok(Json(json!({
        "shadow_rules": rules,
        "shadow_models": models,
        "total": snap.total,
        "by_source": by_source,
        "decisions": decisions,
    })))
}

/// `GET /v1/admin/models`: the models in force, and those a rollback would restore.
pub(super) async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let admin = state.admin.lock().await;
    Json(json!({
        "models": admin.pipeline.models.iter().map(model_json).collect::<Vec<_>>(),
        "previous": admin.previous_models.as_ref().map(|p| p.iter().map(model_json).collect::<Vec<_>>()),
    }))
}

/// `POST /v1/admin/models/rollback`: puts back the models in force before the
/// last reload (rules and everything else stay as they are).
pub(super) async fn rollback(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let control = state
        .control
        .as_ref()
        .ok_or_else(|| ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: "no engine is running".into() })?;
    let mut admin = state.admin.lock().await;
    let previous = admin.previous_models.clone().ok_or_else(|| ApiError {
        status: StatusCode::CONFLICT,
        message: "nothing to roll back to: no reload has replaced the models since start".into(),
    })?;
    control
        .reload(admin.pipeline.rules.clone(), admin.pipeline.decisions.clone(), previous.clone())
        .await
        .map_err(|e| ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, message: e })?;
    admin.previous_models = Some(std::mem::replace(&mut admin.pipeline.models, previous));
    state.metrics.set_models(&admin.pipeline.models);
    tracing::info!("models rolled back");
    Ok(Json(json!({ "models": admin.pipeline.models.iter().map(model_json).collect::<Vec<_>>() })))
}
