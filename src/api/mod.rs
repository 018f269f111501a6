//! The decision API gateways call: lookups, forward-auth, health and metrics.
//!
//! Handlers are a few lines each over one [`AppState`]; every error is a JSON
//! body `{"error": "..."}` with the status that says whose fault it is.

pub mod keys;
pub mod metrics;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::AtomicU64;

use crate::config::{Allowlist, ApiConfig, ClientIpFrom};
use crate::decision::Action;
use crate::live::store::{LiveStore, Query as Lookup, Verdict};

pub use keys::{KeyRing, Role};
pub use metrics::Metrics;

/// Everything a handler may need.
pub struct AppState {
    pub store: Arc<LiveStore>,
    pub allowlist: Allowlist,
    pub api: ApiConfig,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<KeyRing>,
    /// Set once the store is loaded and the engine runs.
    pub ready: Arc<AtomicBool>,
    /// Token buckets of throttled decisions: decision id → (tokens, last ms).
    throttles: Mutex<HashMap<u64, (f64, i64)>>,
    /// Manual decisions are numbered in their own range, above any engine id.
    next_manual_id: AtomicU64,
}

/// The first id of manual decisions (engine ids count up from 1).
pub const MANUAL_ID_BASE: u64 = 1 << 62;

/// The name of the key that made a request, for `manual:NAME` sources.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

impl AppState {
    pub fn new(
        store: Arc<LiveStore>,
        allowlist: Allowlist,
        api: ApiConfig,
        metrics: Arc<Metrics>,
        keys: Arc<KeyRing>,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let next_manual_id = AtomicU64::new(store.max_id().max(MANUAL_ID_BASE) + 1);
        AppState { store, allowlist, api, metrics, keys, ready, throttles: Mutex::new(HashMap::new()), next_manual_id }
    }
}

/// A request the API refuses.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Current wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route("/v1/decision", get(decision))
        .route("/v1/authz", get(authz))
        .route("/v1/admin/decisions", get(admin_decisions).post(admin_create).delete(admin_delete))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and times every request by route.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    state.metrics.api_latency.with_label_values(&[route.as_str()]).observe(started.elapsed().as_secs_f64());
    state.metrics.api_requests.with_label_values(&[route.as_str(), resp.status().as_str()]).inc();
    resp
}

/// The role a path needs; `None` for the open health checks.
fn required_role(path: &str) -> Option<Role> {
    if path == "/healthz" || path == "/readyz" || path == "/openapi.json" {
        None
    } else if path.starts_with("/v1/admin") {
        Some(Role::Admin)
    } else {
        Some(Role::Gateway)
    }
}

/// Checks the caller's key: `X-Api-Key: KEY` or `Authorization: Bearer KEY`.
/// No or unknown key → 401; a gateway key on an admin route → 403.
async fn authenticate(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let Some(need) = required_role(req.uri().path()) else { return next.run(req).await };
    let h = req.headers();
    let presented = h
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| h.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")))
        .map(str::trim);
    let unauthorized = |message: &str| {
        let mut r = ApiError { status: StatusCode::UNAUTHORIZED, message: message.to_string() }.into_response();
        r.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    };
    let Some(key) = presented else {
        return unauthorized(if state.keys.is_empty() {
            "no API keys exist yet: create one with `gatewatch keys create --role gateway --name NAME`"
        } else {
            "missing API key: send it as X-Api-Key or Authorization: Bearer"
        });
    };
    match state.keys.verify_named(key) {
        None => unauthorized("unknown or revoked API key"),
        Some((role, _)) if role < need => ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!("this route needs an {} key; this is a gateway key", "admin"),
        }
        .into_response(),
        Some((_, name)) => {
            req.extensions_mut().insert(Caller(name));
            next.run(req).await
        }
    }
}

/// The OpenAPI 3 description of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "starting" }))).into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.active_decisions.set(state.store.active(now_ms()).len() as i64);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// `GET /v1/admin/decisions?entity_type=&action=&source=`: decisions in force, filtered.
async fn admin_decisions(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    for k in params.keys() {
        if !["entity_type", "action", "source", "entity"].contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter '{}' (use entity_type, entity, action, source)",
                shorten(k)
            )));
        }
    }
    let t = params
        .get("entity_type")
        .map(|t| {
            crate::features::EntityType::parse(t).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "entity_type: '{}' is not one of ip, cidr, user, api_key, device, session",
                    shorten(t)
                ))
            })
        })
        .transpose()?;
    let action = params
        .get("action")
        .map(|a| {
            Action::parse(a).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "action: '{}' is not one of allow, throttle, challenge, deny",
                    shorten(a)
                ))
            })
        })
        .transpose()?;
    let list: Vec<_> = state
        .store
        .active(now_ms())
        .into_iter()
        .filter(|d| t.is_none_or(|t| d.entity_type == t))
        .filter(|d| action.is_none_or(|a| d.action == a))
        .filter(|d| params.get("source").is_none_or(|s| &d.source == s))
        .filter(|d| params.get("entity").is_none_or(|e| &d.entity == e))
        .map(|d| {
            json!({
                "decision_id": d.id, "entity_type": d.entity_type, "entity": d.entity, "action": d.action,
                "reason": d.reason, "source": d.source, "score": d.score,
                "created_at": crate::event::time::format_rfc3339(d.created_ms),
                "expires_at": crate::event::time::format_rfc3339(d.expires_ms),
            })
        })
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
    let e = entity.trim();
    if e.is_empty() || e.len() > MAX_PARAM {
        return Err(ApiError::bad_request(format!("entity: must be 1–{MAX_PARAM} bytes")));
    }
    Ok(match t {
        EntityType::Ip => parse_ip("entity", e)?.to_string(),
        EntityType::Cidr => e
            .parse::<ipnet::IpNet>()
            .map_err(|_| {
                ApiError::bad_request(format!("entity: '{}' is not a CIDR such as 203.0.113.0/24", shorten(e)))
            })?
            .trunc()
            .to_string(),
        _ => e.to_string(),
    })
}

/// `POST /v1/admin/decisions`: deny, challenge, throttle or allow an entity by hand.
/// A manual decision replaces what is in force on the entity, and automatic
/// decisions do not replace it until it expires or is deleted.
async fn admin_create(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<ManualDecision>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(m) = body.map_err(|e| ApiError::bad_request(format!("body: {}", e.body_text())))?;
    let t = crate::features::EntityType::parse(&m.entity_type).ok_or_else(|| {
        ApiError::bad_request(format!(
            "entity_type: '{}' is not one of ip, cidr, user, api_key, device, session",
            shorten(&m.entity_type)
        ))
    })?;
    let entity = canonical_entity(t, &m.entity)?;
    let action = Action::parse(&m.action).ok_or_else(|| {
        ApiError::bad_request(format!(
            "action: '{}' is not one of deny, challenge, throttle, allow",
            shorten(&m.action)
        ))
    })?;
    let ttl_ms =
        crate::event::time::parse_duration_ms(&m.ttl).map_err(|e| ApiError::bad_request(format!("ttl: {e}")))?;
    if !(1_000..=366 * 86_400_000).contains(&ttl_ms) {
        return Err(ApiError::bad_request("ttl: must be between 1s and 366d"));
    }
    if m.reason.trim().is_empty() || m.reason.len() > 1024 {
        return Err(ApiError::bad_request("reason: say why, in at most 1024 bytes"));
    }
    let now = now_ms();
    let d = crate::live::LiveDecision {
        id: state.next_manual_id.fetch_add(1, Ordering::Relaxed),
        entity_type: t,
        entity,
        action,
        reason: m.reason.trim().to_string(),
        source: format!("manual:{}", caller.0),
        score: 1.0,
        created_ms: now,
        expires_ms: now + ttl_ms,
    };
    state
        .store
        .put(d.clone())
        .map_err(|e| ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() })?;
    state.metrics.decisions.with_label_values(&[d.source.as_str(), d.action.as_str()]).inc();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "decision_id": d.id, "entity_type": d.entity_type, "entity": d.entity, "action": d.action,
            "reason": d.reason, "source": d.source,
            "expires_at": crate::event::time::format_rfc3339(d.expires_ms),
        })),
    ))
}

/// `DELETE /v1/admin/decisions?entity_type=&entity=`: lifts whatever is in force on an entity.
async fn admin_delete(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let t = params.get("entity_type").ok_or_else(|| ApiError::bad_request("entity_type: required"))?;
    let t = crate::features::EntityType::parse(t).ok_or_else(|| {
        ApiError::bad_request(format!(
            "entity_type: '{}' is not one of ip, cidr, user, api_key, device, session",
            shorten(t)
        ))
    })?;
    let entity = canonical_entity(t, params.get("entity").ok_or_else(|| ApiError::bad_request("entity: required"))?)?;
    match state
        .store
        .remove(t, &entity)
        .map_err(|e| ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() })?
    {
        Some(d) => Ok(Json(json!({ "deleted": d.id }))),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no decision on {} {}", t.as_str(), entity),
        }),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "no route {} {}; routes: /v1/decision, /v1/authz, /healthz, /readyz, /metrics",
            req.method(),
            req.uri().path()
        ),
    }
}

const LOOKUP_PARAMS: [&str; 6] = ["ip", "user", "api_key", "device", "session", "user_agent"];
/// Longest value accepted for one identifier.
const MAX_PARAM: usize = 512;

fn parse_ip(field: &str, s: &str) -> Result<IpAddr, ApiError> {
    s.trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{field}: '{}' is not an IPv4 or IPv6 address", shorten(s))))
}

fn shorten(s: &str) -> String {
    crate::event::time::truncate_for_error(s)
}

/// `GET /v1/decision?ip=&user=&api_key=&device=&session=`: the verdict for a request.
async fn decision(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Verdict>, ApiError> {
    for (k, v) in &params {
        if !LOOKUP_PARAMS.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter '{}' (use {})",
                shorten(k),
                LOOKUP_PARAMS.join(", ")
            )));
        }
        if v.len() > MAX_PARAM {
            return Err(ApiError::bad_request(format!("{k}: longer than {MAX_PARAM} bytes")));
        }
    }
    if !params.keys().any(|k| k != "user_agent") {
        return Err(ApiError::bad_request("name at least one of ip, user, api_key, device, session"));
    }
    let ip = params.get("ip").map(|s| parse_ip("ip", s)).transpose()?;
    let q = Lookup {
        ip,
        user: params.get("user").map(String::as_str),
        api_key: params.get("api_key").map(String::as_str),
        device: params.get("device").map(String::as_str),
        session: params.get("session").map(String::as_str),
        user_agent: params.get("user_agent").map(String::as_str),
    };
    Ok(Json(state.store.lookup(&q, &state.allowlist, now_ms())))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => {
            let s =
                v.to_str().map_err(|_| ApiError::bad_request(format!("header {name} is not visible ASCII")))?.trim();
            if s.len() > MAX_PARAM {
                return Err(ApiError::bad_request(format!("header {name} is longer than {MAX_PARAM} bytes")));
            }
            Ok((!s.is_empty() && s != "-").then_some(s))
        }
    }
}

/// The client address per the configured header.
fn client_ip(api: &ApiConfig, h: &HeaderMap) -> Result<IpAddr, ApiError> {
    match api.client_ip {
        ClientIpFrom::XRealIp => {
            let v = header(h, "x-real-ip")?.ok_or_else(|| ApiError::bad_request("missing X-Real-IP header"))?;
            parse_ip("X-Real-IP", v)
        }
        ClientIpFrom::XForwardedFor => {
            let v =
                header(h, "x-forwarded-for")?.ok_or_else(|| ApiError::bad_request("missing X-Forwarded-For header"))?;
            let hops: Vec<&str> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            if hops.len() < api.trusted_hops {
                return Err(ApiError::bad_request(format!(
                    "X-Forwarded-For has {} address(es), fewer than api.trusted_hops = {}",
                    hops.len(),
                    api.trusted_hops
                )));
            }
            parse_ip("X-Forwarded-For", hops[hops.len() - api.trusted_hops])
        }
    }
}

/// `GET /v1/authz`: forward-auth for nginx `auth_request`, Traefik ForwardAuth and
/// Envoy `ext_authz`. 200 allows; 403 denies; 429 with `Retry-After` throttles;
/// 403 with `X-Gatewatch-Action: challenge` asks for a challenge.
async fn authz(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let api = &state.api;
    let ip = client_ip(api, &headers)?;
    let q = Lookup {
        ip: Some(ip),
        user: header(&headers, &api.user_header)?,
        api_key: header(&headers, &api.api_key_header)?,
        device: header(&headers, &api.device_header)?,
        session: header(&headers, &api.session_header)?,
        user_agent: header(&headers, "user-agent")?,
    };
    let now = now_ms();
    let v = state.store.lookup(&q, &state.allowlist, now);
    let (status, retry_after) = match v.action {
        Action::Allow => (StatusCode::OK, None),
        Action::Deny | Action::Challenge => (StatusCode::FORBIDDEN, None),
        Action::Throttle => {
            let id = v.decision_id.unwrap_or(0);
            let rate = api.throttle_rps;
            let ok = match state.throttles.lock() {
                Ok(mut t) => {
                    let b = t.entry(id).or_insert((rate.max(1.0), now));
                    b.0 = (b.0 + (now - b.1).max(0) as f64 / 1000.0 * rate).min(rate.max(1.0));
                    b.1 = now;
                    if b.0 >= 1.0 {
                        b.0 -= 1.0;
                        true
                    } else {
                        false
                    }
                }
                Err(_) => true,
            };
            if ok {
                (StatusCode::OK, None)
            } else {
                (StatusCode::TOO_MANY_REQUESTS, Some((1.0 / rate).ceil().max(1.0) as u64))
            }
        }
    };
    let mut resp = status.into_response();
    let h = resp.headers_mut();
    h.insert("x-gatewatch-action", HeaderValue::from_static(v.action.as_str()));
    if let Some(id) = v.decision_id {
        if let Ok(val) = HeaderValue::from_str(&id.to_string()) {
            h.insert("x-gatewatch-decision-id", val);
        }
    }
    if let Some(secs) = retry_after {
        if let Ok(val) = HeaderValue::from_str(&secs.to_string()) {
            h.insert(axum::http::header::RETRY_AFTER, val);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_documents_every_route() {
        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        let paths = spec["paths"].as_object().expect("paths");
        let src = include_str!("mod.rs");
        let routes: Vec<&str> = src
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".route(\""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert!(routes.len() >= 7);
        for r in &routes {
            assert!(paths.contains_key(*r), "route {r} is missing from openapi.json");
        }
        assert_eq!(paths.len(), routes.len(), "openapi.json documents a route that does not exist");
    }
}
