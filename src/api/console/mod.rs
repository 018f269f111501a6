//! The analyst console at `/ui`, served by the API's own process.
//!
//! Pages are static files embedded in the binary (the console makes no
//! request off the machine); everything they show comes from the API's own
//! routes, called with the session cookie, so an action taken in the console
//! goes through the same handlers, checks and audit trail as one taken with
//! `curl`. Signing in trades an admin key, posted once from the login form,
//! for an `HttpOnly`, `SameSite=Strict` cookie ([`sessions`]); requests that
//! change something must also carry [`CSRF_HEADER`], which a page on another
//! site cannot send without the browser asking this server first.

mod assets;
mod decisions;
mod entity;
pub mod rates;
mod reports;
pub mod sessions;

use std::sync::Arc;

use axum::extract::{RawForm, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{AppState, Role, now_ms};

/// The header a signed-in console sends with every request that changes
/// something (CSRF defence beside `SameSite=Strict`).
pub const CSRF_HEADER: &str = "x-gatewatch-console";

/// Longest login form accepted, in bytes (a key is ~60).
const MAX_FORM: usize = 4096;

/// The console's routes (merged into the API router).
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui", get(console))
        .route("/ui/", get(console))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/api/rates", get(rates))
        .route("/ui/api/decisions", get(decisions::page))
        .route("/ui/api/top", get(decisions::top))
        .route("/ui/api/entity", get(entity::entity))
        .route("/ui/api/fired", get(reports::fired))
        .route("/ui/api/investigations", get(reports::investigations))
}

/// `GET /ui/api/rates`: the last hour per second (admin key or console session).
async fn rates(State(state): State<Arc<AppState>>) -> Json<rates::Series> {
    Json(state.rates.series(&state.metrics))
}

/// Whether `path` is one the console's handlers guard themselves (pages
/// redirect to the login page rather than answer 401). Its data routes,
/// under `/ui/api/`, are guarded like the admin API.
pub(super) fn is_console_page(path: &str) -> bool {
    (path == "/ui" || path.starts_with("/ui/")) && !path.starts_with("/ui/api/")
}

/// Headers every console page carries: nothing from elsewhere runs or loads,
/// the page cannot be framed, and its address is not sent to other sites
/// (`same-origin`, not `no-referrer`: under `no-referrer` a browser sends
/// `Origin: null` with the login form, and [`same_origin`] could not tell
/// this server's own page from another site's).
fn page(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(to: &'static str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

/// Whether the request's session stands for a valid, unrevoked admin key.
fn signed_in(state: &AppState, h: &HeaderMap) -> bool {
    sessions::token(h)
        .and_then(|t| state.console.key(t, now_ms()))
        .and_then(|k| state.keys.verify(&k))
        .is_some_and(|r| r >= Role::Admin)
}

async fn console(State(state): State<Arc<AppState>>, h: HeaderMap) -> Response {
    if !signed_in(&state, &h) {
        return redirect("/ui/login");
    }
    page(StatusCode::OK, assets::CONSOLE_HTML.to_string())
}

async fn login_page() -> Response {
    page(StatusCode::OK, login_html(None))
}

/// The login page, with a message (a constant of this module, never input).
fn login_html(message: Option<&'static str>) -> String {
    let m = message.map(|m| format!("<p class=\"error\" role=\"alert\">{m}</p>")).unwrap_or_default();
    assets::LOGIN_HTML.replace("<!--message-->", &m)
}

#[derive(serde::Deserialize)]
struct LoginForm {
    key: String,
}

/// `POST /ui/login` (form `key=`): an admin key opens a session; a gateway
/// key, an unknown key or a malformed form gets the login page again with
/// the reason, and nothing else.
async fn login(State(state): State<Arc<AppState>>, h: HeaderMap, RawForm(body): RawForm) -> Response {
    if !same_origin(&h) {
        return page(StatusCode::FORBIDDEN, login_html(Some("Sign in from this server's own login page.")));
    }
    if body.len() > MAX_FORM {
        return page(StatusCode::PAYLOAD_TOO_LARGE, login_html(Some("The form is too large.")));
    }
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return page(StatusCode::BAD_REQUEST, login_html(Some("Enter an admin key.")));
    };
    let key = form.key.trim();
    match state.keys.verify(key) {
        None => page(StatusCode::UNAUTHORIZED, login_html(Some("Unknown or revoked key."))),
        Some(r) if r < Role::Admin => {
            page(StatusCode::FORBIDDEN, login_html(Some("This is a gateway key: the console needs an admin key.")))
        }
        Some(_) => {
            let token = state.console.open(key.to_string(), now_ms());
            // `Secure` when the browser reached us over TLS (a terminating
            // proxy says so); on plain HTTP a Secure cookie would never return.
            let tls = h.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p == "https");
            let cookie = format!(
                "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                sessions::COOKIE,
                sessions::TTL_MS / 1000,
                if tls { "; Secure" } else { "" }
            );
            let mut r = redirect("/ui");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
    }
}

/// Whether a form post comes from a page of this server. Browsers send
/// `Origin` with every POST; a page elsewhere posting its own key here
/// (login CSRF: the analyst would work, unknowingly, in a session the
/// other side chose) names its own site there. A client that sends no
/// `Origin` (curl, a script) is not a browser led by another page.
fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    let Some((_, host)) = origin.split_once("://") else { return false };
    let ours = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case(host));
    ours("host") || ours("x-forwarded-host")
}

/// `POST /ui/logout`: ends the session and clears the cookie.
async fn logout(State(state): State<Arc<AppState>>, h: HeaderMap) -> Response {
    if let Some(t) = sessions::token(&h) {
        state.console.close(t);
    }
    let mut r = redirect("/ui/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gw_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}
