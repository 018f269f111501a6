//! The console's files, embedded at build time. `ui/vendor/` holds the
//! third-party ones exactly as `scripts/ui-assets.sh` took them from the npm
//! registry (CI checks that they still are).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;

pub const CONSOLE_HTML: &str = include_str!("../../../ui/console.html");
pub const LOGIN_HTML: &str = include_str!("../../../ui/login.html");

/// Name, content type, bytes.
const FILES: [(&str, &str, &[u8]); 4] = [
    ("console.js", "text/javascript; charset=utf-8", include_bytes!("../../../ui/console.js")),
    ("console.css", "text/css; charset=utf-8", include_bytes!("../../../ui/console.css")),
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", include_bytes!("../../../ui/vendor/uPlot.iife.min.js")),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../../../ui/vendor/uPlot.min.css")),
];

/// `GET /ui/assets/NAME`: open to anyone (the files hold no data).
pub(super) async fn serve(Path(name): Path<String>) -> Response {
    let Some((_, kind, bytes)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return ApiError { status: StatusCode::NOT_FOUND, message: "no such console asset".into() }.into_response();
    };
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Revalidated, so a new binary's files are picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
