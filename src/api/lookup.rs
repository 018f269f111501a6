//! The routes gateways call per request: a verdict, and forward-auth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, MAX_PARAM, check_params, header, ident_header, now_ms, parse_ip};
use crate::config::{ApiConfig, ClientIpFrom};
use crate::decision::Action;
use crate::live::store::{Query as Lookup, Verdict};

const LOOKUP_PARAMS: [&str; 8] = ["ip", "user", "api_key", "device", "session", "user_agent", "method", "path"];

/// `GET /v1/decision?ip=&user=&api_key=&device=&session=&method=&path=`: the
/// verdict for a request (`ip` required; per-entity questions go to
/// `/v1/decisions` or the admin list). With `method` and `path`, decisions on
/// the request's class (`crate::classes`) count too.
pub(super) async fn decision(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Verdict>, ApiError> {
    check_params(&params, &LOOKUP_PARAMS)?;
    // A request always comes from an address: a lookup without one is a
    // gateway that lost it, which must hear so rather than get a partial verdict.
    let ip = params.get("ip").ok_or_else(|| ApiError::bad_request("ip: required (the client's address)"))?;
    // Either alone says nothing about the request's class.
    let class = match (params.get("method"), params.get("path")) {
        (Some(m), Some(p)) => {
            state.class_of(state.classes.classify(m, p, false), params.get("session").map(String::as_str))
        }
        _ => None,
    };
    let q = Lookup {
        ip: Some(parse_ip("ip", ip)?),
        user: params.get("user").map(String::as_str),
        api_key: params.get("api_key").map(String::as_str),
        device: params.get("device").map(String::as_str),
        session: params.get("session").map(String::as_str),
        user_agent: params.get("user_agent").map(String::as_str),
        class,
    };
    let now = now_ms();
    let v = state.store.lookup(&q, &state.allowlist.load(), now);
    if let Some(id) = v.decision_id
        && v.action != Action::Allow
    {
        let refused = matches!(v.action, Action::Deny | Action::Challenge);
        state.collateral.record(id, q.user, q.session, refused, now);
    }
    Ok(Json(v))
}

/// The client address per the configured header.
fn client_ip(api: &ApiConfig, h: &HeaderMap) -> Result<IpAddr, ApiError> {
    match api.client_ip {
        ClientIpFrom::XRealIp => {
            if h.get_all("x-real-ip").iter().count() > 1 {
                return Err(ApiError::bad_request("X-Real-IP is given more than once"));
            }
            let v = header(h, "x-real-ip")?.ok_or_else(|| ApiError::bad_request("missing X-Real-IP header"))?;
            parse_ip("X-Real-IP", v)
        }
        ClientIpFrom::XForwardedFor => {
            // Several X-Forwarded-For lines are one list, in order (RFC 9110
            // §5.3): a proxy that appends its own line must not let the first
            // line, which the client wrote, choose the address judged.
            let mut hops: Vec<&str> = Vec::new();
            for v in h.get_all("x-forwarded-for") {
                let v = v.to_str().map_err(|_| ApiError::bad_request("header x-forwarded-for is not visible ASCII"))?;
                if v.len() > MAX_PARAM {
                    return Err(ApiError::bad_request(format!(
                        "header x-forwarded-for is longer than {MAX_PARAM} bytes"
                    )));
                }
                hops.extend(v.split(',').map(str::trim).filter(|s| !s.is_empty()));
            }
            if hops.is_empty() {
                return Err(ApiError::bad_request("missing X-Forwarded-For header"));
            }
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

/// The class of the request a gateway forwards, from the original method
/// and URI it passes on: `X-Original-Method` and `X-Original-URI` (nginx
/// `auth_request`, as the shipped configuration sets them) and
/// `X-Forwarded-Method` and `X-Forwarded-Uri` (Traefik ForwardAuth, Caddy
/// `forward_auth`), and `envoy`: the method this request came with and its
/// query when that is a path. Envoy's HTTP `ext_authz` sets no header for
/// either: it asks with the original request's method, at `path_prefix`
/// followed by the original path, so with the README's prefix
/// `/v1/authz?` the query is the original URI. Without any of them no
/// request has a class.
///
/// Each gateway overwrites only its own pair and passes the client's other
/// headers on, so a client could send the pair its gateway does not set. No
/// pair is trusted over the other: a request is in a class when any method
/// and URI given put it there. A client can only put its own request in a
/// class, never take it out. At most four values of each header are read.
/// The URI is read whole and leniently (bytes that are not UTF-8 are
/// replaced): it decides only whether a class decision applies, and
/// refusing an odd spelling would fail the gateway's request instead of
/// judging it.
fn request_class(h: &HeaderMap, envoy: (&Method, &Uri), classes: &crate::classes::ClassConfig) -> Option<&'static str> {
    if classes.login_forms.is_empty() {
        return None;
    }
    let values = |names: [&str; 2]| -> Vec<String> {
        names
            .iter()
            .flat_map(|n| h.get_all(*n).iter().take(4))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
            .collect()
    };
    let envoy_uri = envoy.1.query().filter(|q| q.starts_with('/'));
    let mut methods = values(["x-original-method", "x-forwarded-method"]);
    let mut uris = values(["x-original-uri", "x-forwarded-uri"]);
    if let Some(u) = envoy_uri {
        methods.push(envoy.0.as_str().to_string());
        uris.push(u.to_string());
    }
    if !methods.iter().any(|m| m.eq_ignore_ascii_case("POST")) {
        return None;
    }
    uris.iter().find_map(|u| classes.classify("POST", u, false))
}

/// `/v1/authz`: forward-auth for nginx `auth_request`, Traefik ForwardAuth
/// and Envoy `ext_authz` (which asks with the original request's method,
/// so every method an API serves is answered alike:
/// [`super::AUTHZ_METHODS`]). 200 allows; 403 denies; 429 with
/// `Retry-After` throttles; 403 with `X-Gatewatch-Action: challenge` asks
/// for a challenge.
pub(super) async fn authz(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let api = &state.api;
    let ip = client_ip(api, &headers)?;
    let user = ident_header(&headers, &api.user_header, false)?;
    let api_key = ident_header(&headers, &api.api_key_header, false)?;
    let device = ident_header(&headers, &api.device_header, false)?;
    let session = ident_header(&headers, &api.session_header, false)?;
    let user_agent = ident_header(&headers, "user-agent", true)?;
    let class = state.class_of(request_class(&headers, (&method, &uri), &state.classes), session.as_deref());
    let q = Lookup {
        ip: Some(ip),
        user: user.as_deref(),
        api_key: api_key.as_deref(),
        device: device.as_deref(),
        session: session.as_deref(),
        user_agent: user_agent.as_deref(),
        class,
    };
    let now = now_ms();
    let v = state.store.lookup(&q, &state.allowlist.load(), now);
    let (status, retry_after) = match v.action {
        Action::Allow => (StatusCode::OK, None),
        Action::Deny | Action::Challenge => (StatusCode::FORBIDDEN, None),
        Action::Throttle => {
            let id = v.decision_id.unwrap_or(0);
            let rate = api.throttle_rps;
            let ok = match state.throttles.lock() {
                Ok(mut t) => {
                    // A bucket idle this long has refilled: forgetting it changes nothing.
                    let idle_ms = (rate.max(1.0) / rate * 1000.0).max(60_000.0) as i64;
                    if state.throttles_pruned.load(Ordering::Relaxed) + 10_000 <= now {
                        state.throttles_pruned.store(now, Ordering::Relaxed);
                        t.retain(|_, b| now - b.1 < idle_ms);
                    }
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
    if let Some(id) = v.decision_id
        && v.action != Action::Allow
    {
        state.collateral.record(id, q.user, q.session, status != StatusCode::OK, now);
    }
    let mut resp = status.into_response();
    let h = resp.headers_mut();
    h.insert("x-gatewatch-action", HeaderValue::from_static(v.action.as_str()));
    if let Some(id) = v.decision_id
        && let Ok(val) = HeaderValue::from_str(&id.to_string())
    {
        h.insert("x-gatewatch-decision-id", val);
    }
    if let Some(secs) = retry_after
        && let Ok(val) = HeaderValue::from_str(&secs.to_string())
    {
        h.insert(axum::http::header::RETRY_AFTER, val);
    }
    Ok(resp)
}
