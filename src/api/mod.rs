//! The decision API gateways call: lookups, forward-auth, health and metrics.
//!
//! Handlers are a few lines each over one [`AppState`]; every error is a JSON
//! body `{"error": "..."}` with the status that says whose fault it is.

mod admin;
mod console;
mod crowdsec;
pub mod keys;
mod lookup;
pub mod openapi;
mod query;
pub mod serve;
mod stream;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::config::{Allowlist, ApiConfig, Pipeline};
use crate::decision::Decision;
use crate::live::allow::AllowOverlay;
use crate::live::control::Control;
use crate::live::store::LiveStore;

pub use crate::metrics::Metrics;
pub use keys::{KeyRing, Role};

/// What the server is built from.
pub struct Services {
    pub store: Arc<LiveStore>,
    /// The pipeline as loaded; reloads re-read its file.
    pub pipeline: Pipeline,
    /// Operator allowlist entries.
    pub overlay: AllowOverlay,
    /// The allowlist in force, shared with the engine.
    pub allowlist: Arc<ArcSwap<Allowlist>>,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<KeyRing>,
    /// Set once the store is loaded and the engine runs.
    pub ready: Arc<AtomicBool>,
    /// The engine thread, for reloads (`None`: no engine, reload refused).
    pub control: Option<Control>,
    /// What shadow rules and models would have decided (`GET /v1/admin/shadow`).
    pub shadow: Arc<crate::live::ShadowLog>,
    /// Where operators' decisions and lifts go for the other instances
    /// (`None`: no decisions topic, this instance is alone).
    pub publisher: Option<Arc<crate::live::publish::DecisionPublisher>>,
    /// The sessions seen opened, by the engine beside this API and by the
    /// others on the decisions topic (`None`: a session id is taken as a
    /// session, as in tests that serve without an engine).
    pub opened_sessions: Option<Arc<crate::sessions::OpenedSessions>>,
}

/// What only admin routes change, one at a time.
struct AdminState {
    pipeline: Pipeline,
    overlay: AllowOverlay,
    /// The models before the last reload, for a rollback.
    previous_models: Option<Vec<crate::config::ModelSpec>>,
}

/// Everything a handler may need.
pub struct AppState {
    pub store: Arc<LiveStore>,
    pub shadow: Arc<crate::live::ShadowLog>,
    pub allowlist: Arc<ArcSwap<Allowlist>>,
    pub api: ApiConfig,
    /// Which requests belong to a request class (as the pipeline said at start).
    pub classes: crate::classes::ClassConfig,
    /// See [`Services::opened_sessions`].
    pub opened_sessions: Option<Arc<crate::sessions::OpenedSessions>>,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<KeyRing>,
    pub ready: Arc<AtomicBool>,
    /// Where the runs' tables are (`POST /v1/admin/query` reads them).
    pub state_dir: std::path::PathBuf,
    /// Token buckets of throttled decisions: decision id → (tokens, last ms).
    throttles: Mutex<HashMap<u64, (f64, i64)>>,
    /// When idle buckets were last dropped (epoch ms).
    throttles_pruned: std::sync::atomic::AtomicI64,
    /// Manual decisions are numbered in their own range, above any engine id.
    next_manual_id: AtomicU64,
    admin: tokio::sync::Mutex<AdminState>,
    control: Option<Control>,
    /// Where each CrowdSec bouncer (by key id) is in the change stream.
    bouncers: Mutex<HashMap<String, u64>>,
    /// Set at shutdown: long polls and event streams end so the server can stop.
    closing: tokio::sync::watch::Sender<bool>,
    publisher: Option<Arc<crate::live::publish::DecisionPublisher>>,
    /// Signed-in analyst consoles (`/ui`).
    console: console::sessions::Sessions,
    /// The last hour of the counters the console plots.
    rates: Arc<console::rates::Rates>,
    /// Who each decision in force has stopped (the console's collateral).
    collateral: crate::live::collateral::Collateral,
}

/// The first id of manual decisions (engine and shadow ids are below it,
/// `decision::decision_id`); manual ids count up from here.
pub const MANUAL_ID_BASE: u64 = 1 << 62;

/// The key that made a request: its id (CrowdSec bouncers are tracked by it)
/// and name (`manual:NAME` sources).
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: String,
    pub name: String,
}

impl AppState {
    pub fn new(s: Services) -> Self {
        let next_manual_id = AtomicU64::new(s.store.max_id().max(MANUAL_ID_BASE) + 1);
        s.metrics.set_models(&s.pipeline.models);
        let rates = console::rates::Rates::start(s.metrics.clone());
        AppState {
            store: s.store,
            shadow: s.shadow,
            allowlist: s.allowlist,
            api: s.pipeline.api.clone(),
            classes: s.pipeline.classes.clone(),
            opened_sessions: s.opened_sessions,
            metrics: s.metrics,
            keys: s.keys,
            ready: s.ready,
            state_dir: s.pipeline.state_dir.clone(),
            throttles: Mutex::new(HashMap::new()),
            throttles_pruned: std::sync::atomic::AtomicI64::new(0),
            next_manual_id,
            admin: tokio::sync::Mutex::new(AdminState {
                pipeline: s.pipeline,
                overlay: s.overlay,
                previous_models: None,
            }),
            control: s.control,
            bouncers: Mutex::new(HashMap::new()),
            closing: tokio::sync::watch::channel(false).0,
            publisher: s.publisher,
            console: console::sessions::Sessions::default(),
            rates,
            collateral: crate::live::collateral::Collateral::default(),
        }
    }

    /// Whether a request carrying `session` has a session, as request
    /// classes read it: an id seen opened by this instance's engine or, on
    /// the decisions topic, by another
    /// ([`crate::sessions::OpenedSessions::admits`]); any id where it
    /// cannot know.
    fn has_session(&self, session: Option<&str>) -> bool {
        match session.filter(|s| !s.is_empty()) {
            None => false,
            Some(s) => self.opened_sessions.as_ref().is_none_or(|o| o.admits(s)),
        }
    }

    /// The class of a request, given the class it is in without a session:
    /// none when it carries a session the engine saw opened. A form post
    /// whose session id was never opened is counted.
    fn class_of(&self, bare_class: Option<&'static str>, session: Option<&str>) -> Option<&'static str> {
        let class = bare_class?;
        if self.has_session(session) {
            return None;
        }
        if session.is_some_and(|s| !s.is_empty()) {
            self.metrics.unopened_session_posts.inc();
        }
        Some(class)
    }

    /// Ends open long polls and event streams (call on shutdown, before the
    /// server waits for connections to finish).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Re-reads the pipeline file and applies its rules, decision policy and
    /// allowlist; the running ones stay if anything is wrong. (SIGHUP and
    /// `POST /v1/admin/reload`.)
    pub async fn reload(&self) -> Result<serde_json::Value, ApiError> {
        admin::reload(self).await
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

pub use crate::event::time::now_ms;

/// The methods `/v1/authz` answers (HEAD with GET): those of the requests
/// an API serves, which Envoy's `ext_authz` asks with. TRACE and CONNECT
/// are not an API's, and get 405.
pub const AUTHZ_METHODS: [&str; 7] = ["get", "head", "post", "put", "patch", "delete", "options"];

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_document))
        .route("/v1/decision", get(lookup::decision))
        // Envoy's HTTP ext_authz asks with the request's own method.
        .route(
            "/v1/authz",
            get(lookup::authz)
                .post(lookup::authz)
                .put(lookup::authz)
                .patch(lookup::authz)
                .delete(lookup::authz)
                .options(lookup::authz),
        )
        .route("/v1/decisions", get(crowdsec::decisions))
        .route("/v1/decisions/stream", get(stream::stream))
        .route(
            "/v1/admin/decisions",
            get(admin::list)
                .post(admin::create)
                .delete(admin::delete)
                // Room for a block list of 200,000 decisions.
                .layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route("/v1/admin/allowlist", get(admin::allowlist).post(admin::allow).delete(admin::disallow))
        .route("/v1/admin/reload", post(admin::reload_route))
        .route("/v1/admin/shadow", get(admin::shadow))
        .route("/v1/admin/models", get(admin::models))
        .route("/v1/admin/models/rollback", post(admin::rollback))
        .route("/v1/admin/query", post(query::query))
        .merge(console::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The routes of an engine-only instance (`run --role engine`): health
/// checks and metrics, no decision API (the API instances serve the
/// decisions it publishes).
pub fn ops_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
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
    // The console's pages send a browser to its login page themselves.
    if path == "/healthz" || path == "/readyz" || path == "/openapi.json" || console::is_console_page(path) {
        None
    } else if path.starts_with("/v1/admin") || path.starts_with("/ui/api/") {
        Some(Role::Admin)
    } else {
        Some(Role::Gateway)
    }
}

/// The credentials of an `Authorization: Bearer` header. The scheme is
/// case-insensitive (RFC 9110 §11.1): `bearer KEY` from a client that writes
/// it in lower case is the same key.
fn bearer(v: &str) -> Option<&str> {
    let (scheme, rest) = v.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

/// Checks the caller's key: `X-Api-Key: KEY` or `Authorization: Bearer KEY`.
/// No or unknown key → 401; a gateway key on an admin route → 403.
async fn authenticate(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let Some(need) = required_role(req.uri().path()) else { return next.run(req).await };
    let h = req.headers();
    let mut presented: Option<std::borrow::Cow<str>> = h
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| h.get("authorization").and_then(|v| v.to_str().ok()).and_then(bearer))
        .map(|k| k.trim().into());
    // A signed-in console's cookie stands for its admin key. What a page on
    // another site could make a browser send (a form post, a plain GET)
    // changes nothing: a request that changes something must carry the
    // console's header as well.
    if presented.is_none()
        && let Some(key) = console::sessions::token(h).and_then(|t| state.console.key(t, now_ms()))
    {
        let reads = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
        if !reads && !h.contains_key(console::CSRF_HEADER) {
            return ApiError {
                status: StatusCode::FORBIDDEN,
                message: format!("a console request that changes something must carry {}", console::CSRF_HEADER),
            }
            .into_response();
        }
        presented = Some(key.into());
    }
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
    match state.keys.verify_caller(&key) {
        None => unauthorized("unknown or revoked API key"),
        Some((role, _)) if role < need => ApiError {
            status: StatusCode::FORBIDDEN,
            message: "this route needs an admin key; this is a gateway key".to_string(),
        }
        .into_response(),
        Some((_, caller)) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    }
}

async fn openapi_document(State(state): State<Arc<AppState>>) -> Response {
    match openapi::document(&state.api) {
        Ok(doc) => ([(axum::http::header::CONTENT_TYPE, "application/json")], doc).into_response(),
        Err(e) => ApiError::internal(format!("openapi.json: {e}")).into_response(),
    }
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
    state.metrics.stream_cursor.set(state.store.cursor() as i64);
    if let Some(o) = &state.opened_sessions {
        state.metrics.opened_sessions.set(o.len() as i64);
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no route {} {}; see /openapi.json for the routes", req.method(), req.uri().path()),
    }
}

impl ApiError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() }
    }

    /// The decision store could not be written (a full disk): the change was
    /// not made, and trying again once the disk has room will work.
    pub fn store(e: impl std::fmt::Display) -> Self {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: format!("{e}; nothing was changed") }
    }
}

/// A decision as the API shows it; a subnet decision's bystanders, when it
/// spares any, as `spared`.
pub fn decision_json(d: &Decision) -> serde_json::Value {
    let mut v = json!({
        "decision_id": d.id, "entity_type": d.entity_type, "entity": d.entity, "action": d.action,
        "reason": d.reason, "source": d.source, "score": d.score,
        "created_at": crate::event::time::format_rfc3339(d.created_ms),
        "expires_at": crate::event::time::format_rfc3339(d.expires_ms),
    });
    if !d.spared.is_empty() {
        v["spared"] = json!(d.spared);
    }
    v
}

/// Checks that only `allowed` parameters are present and none is oversized.
fn check_params(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    for (k, v) in params {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter '{}' (use {})",
                shorten(k),
                allowed.join(", ")
            )));
        }
        if too_long(v, MAX_PARAM) {
            return Err(ApiError::bad_request(format!("{k}: longer than {MAX_PARAM} characters")));
        }
    }
    Ok(())
}

/// Longest value accepted for one identifier, in characters (as JSON Schema's
/// `maxLength` counts them, so the OpenAPI document can say it exactly).
const MAX_PARAM: usize = 512;

/// `s` without what counts as blank at either end. Blank is every Unicode
/// `White_Space` character (what `str::trim` drops) and U+FEFF, which
/// ECMAScript's `\s` — the dialect of the OpenAPI document's patterns — counts
/// as space and Rust does not: with the union on both sides, a value the
/// document's not-blank pattern calls valid is never refused as blank here, nor the
/// other way round (a schema-valid reason of one U+0085 once got a 400).
fn trim_blank(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// Whether `s` has more than `max` characters (at most 4 `max` bytes are read).
fn too_long(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().nth(max).is_some()
}

/// Parses an address the way the log parser does: an IPv4-mapped IPv6
/// address (`::ffff:203.0.113.7`, `::ffff:cb00:7107`) is its IPv4 address, so
/// no spelling of an address walks past the decisions made about it.
fn parse_ip(field: &str, s: &str) -> Result<IpAddr, ApiError> {
    let ip: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{field}: '{}' is not an IPv4 or IPv6 address", shorten(s))))?;
    Ok(ip.to_canonical())
}

/// Widest networks the API takes for a decision or an allowlist entry. One
/// request that denies (or allows) `0.0.0.0/0` would cut off (or wave
/// through) every client; a network that wide is a mistake to refuse, not an
/// order to follow.
const MIN_PREFIX_V4: u8 = 8;
const MIN_PREFIX_V6: u8 = 16;

/// A network as the API keeps it: host bits cleared, IPv4-mapped IPv6
/// (`::ffff:198.51.100.0/120`) as the IPv4 network it is, never wider than
/// a /8 (IPv6: /16).
fn parse_net(field: &str, s: &str) -> Result<ipnet::IpNet, ApiError> {
    let net = s.trim().parse::<ipnet::IpNet>().map_err(|_| {
        ApiError::bad_request(format!("{field}: '{}' is not a CIDR such as 203.0.113.0/24", shorten(s)))
    })?;
    let net = match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_err(|e| ApiError::bad_request(e.to_string()))?,
            ),
            None => net,
        },
        other => other,
    }
    .trunc();
    let min = if net.addr().is_ipv4() { MIN_PREFIX_V4 } else { MIN_PREFIX_V6 };
    if net.prefix_len() < min {
        return Err(ApiError::bad_request(format!(
            "{field}: {net} is wider than a /{min}; split it into /{min} networks or narrower if that is really meant"
        )));
    }
    Ok(net)
}

fn shorten(s: &str) -> String {
    crate::event::time::truncate_for_error(s)
}

/// An identifier a lookup matches on (user, key, device, session, user agent).
/// Never a reason to refuse a harmless request: a value that is not UTF-8 or
/// longer than [`MAX_PARAM`] cannot name any entity the engine keeps, so it is
/// left out (matches nothing, exactly as a value nobody decided about); a
/// user agent, which only ever widens an allowlist, is cut to its first
/// [`MAX_PARAM`] bytes. The same header given twice with different values is
/// refused: the caller, not the client, must say which one it means.
fn ident_header(h: &HeaderMap, name: &str, truncate: bool) -> Result<Option<String>, ApiError> {
    let mut values = h.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.any(|v| v != first) {
        return Err(ApiError::bad_request(format!("header {name} is given more than once with different values")));
    }
    let Ok(s) = std::str::from_utf8(first.as_bytes()) else { return Ok(None) };
    let s = s.trim();
    if s.is_empty() || s == "-" {
        return Ok(None);
    }
    if s.len() <= MAX_PARAM {
        return Ok(Some(s.to_string()));
    }
    if !truncate {
        return Ok(None);
    }
    let mut end = MAX_PARAM;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Ok(Some(s[..end].to_string()))
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_subnet_decision_shows_what_it_spares_and_others_do_not_say_it() {
        let d = super::Decision {
            id: 9,
            entity_type: crate::features::EntityType::Cidr,
            entity: "203.0.113.0/24".into(),
            action: crate::decision::Action::Deny,
            reason: "r".into(),
            source: "rule:x".into(),
            score: 0.9,
            created_ms: 0,
            expires_ms: 1_000,
            offense: 1,
            spared: vec!["203.0.113.14".parse().expect("ip")],
        };
        assert_eq!(super::decision_json(&d)["spared"], serde_json::json!(["203.0.113.14"]));
        let plain = super::decision_json(&super::Decision { spared: Vec::new(), ..d });
        assert!(plain.get("spared").is_none(), "{plain}");
    }

    #[test]
    fn networks_are_canonical_and_bounded() {
        let n = |s: &str| super::parse_net("entity", s).map(|n| n.to_string()).map_err(|e| e.message);
        assert_eq!(n("198.51.100.7/24"), Ok("198.51.100.0/24".into()));
        assert_eq!(n("::ffff:198.51.100.0/120"), Ok("198.51.100.0/24".into()));
        assert_eq!(n("::ffff:c633:6400/120"), Ok("198.51.100.0/24".into()));
        assert_eq!(n("10.0.0.0/8"), Ok("10.0.0.0/8".into()));
        assert_eq!(n("2001:db8::/32"), Ok("2001:db8::/32".into()));
        for wide in ["0.0.0.0/0", "128.0.0.0/1", "10.0.0.0/7", "::/0", "::ffff:0:0/96", "2000::/3"] {
            assert!(n(wide).is_err(), "{wide}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for h in ["Bearer k1", "bearer k1", "BEARER k1", " Bearer k1"] {
            assert_eq!(super::bearer(h), Some("k1"), "{h}");
        }
        for h in ["Basic azE=", "Bearerk1", "Bearer", ""] {
            assert_eq!(super::bearer(h), None, "{h}");
        }
    }

    /// The document's not-blank pattern and the handlers' blank test agree on
    /// every character, so a contract test's schema-valid value is never a 400
    /// (and a value the document calls invalid is refused).
    #[test]
    fn the_documents_not_blank_pattern_is_what_the_handlers_accept() {
        fn patterns(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(p)) = m.get("pattern")
                        && p.starts_with("[^")
                    {
                        out.push(p.clone());
                    }
                    m.values().for_each(|v| patterns(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| patterns(v, out)),
                _ => {}
            }
        }
        let spec: serde_json::Value = serde_json::from_str(super::openapi::TEMPLATE).expect("valid JSON");
        let mut found = Vec::new();
        patterns(&spec, &mut found);
        assert!(found.len() >= 3, "{found:?}");
        for p in &found {
            let re = regex::Regex::new(p).expect("the pattern compiles");
            for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
                let one = c.to_string();
                assert_eq!(re.is_match(&one), !super::trim_blank(&one).is_empty(), "U+{:04X} under {p}", c as u32);
            }
        }
    }

    #[test]
    fn openapi_documents_every_route() {
        let spec: serde_json::Value = serde_json::from_str(super::openapi::TEMPLATE).expect("valid JSON");
        let paths = spec["paths"].as_object().expect("paths");
        let src = include_str!("mod.rs");
        let src = &src[..src.find("#[cfg(test)]").unwrap_or(src.len())];
        // Every `.route(` call's first string literal, however it is wrapped
        // (the engine role's routes are a subset of the full router's).
        let routes: std::collections::BTreeSet<&str> = src
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert!(routes.len() >= 11, "{routes:?}");
        for r in &routes {
            assert!(paths.contains_key(*r), "route {r} is missing from openapi.json");
        }
        assert_eq!(paths.len(), routes.len(), "openapi.json documents a route that does not exist");
    }
}
