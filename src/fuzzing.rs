//! One input for each fuzz target: what fuzz/main.rs runs under AFL++
//! (`scripts/fuzz.sh`) and tests/fuzz_regressions.rs replays for every input
//! that ever failed. A target fails only by panicking (afl-fuzz also reports
//! hangs): every input, however malformed, must end in a value or an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::event::{Format, mapping::Mapping};

/// Every target, by name.
pub const TARGETS: [&str; 8] = ["json", "nginx", "auto", "envoy", "kong", "pipeline", "api", "stream"];

/// GET routes the `api` target picks from (its input's first byte).
const ROUTES: [&str; 8] = [
    "/v1/decision",
    "/v1/authz",
    "/v1/decisions",
    "/v1/decisions/stream",
    "/v1/admin/decisions",
    "/v1/admin/allowlist",
    "/v1/admin/models",
    "/metrics",
];

/// A target, set up once, run on many inputs.
pub enum Harness {
    /// Log lines in one format: parsed, normalised, appended to an Arrow batch.
    Lines { format: Format, mapping: Option<Mapping> },
    /// The pipeline loader on an arbitrary file (written to `file`).
    Pipeline { file: PathBuf },
    /// GET requests through the real router: keys, middleware, handlers.
    Api { router: axum::Router, key: String, rt: tokio::runtime::Runtime, stream_only: bool },
}

impl Harness {
    /// Sets up `target`; `repo` holds the shipped pipelines, `scratch` is a
    /// directory of this process's own.
    pub fn new(target: &str, repo: &Path, scratch: &Path) -> Result<Harness, String> {
        let lines = |format, mapping| Ok(Harness::Lines { format, mapping });
        match target {
            "json" => lines(Format::Json, None),
            "nginx" => lines(Format::Nginx, None),
            "auto" => lines(Format::Auto, None),
            "envoy" => lines(Format::Mapped, Some(mapping(repo, "envoy.toml")?)),
            "kong" => lines(Format::Mapped, Some(mapping(repo, "kong.toml")?)),
            "pipeline" => Ok(Harness::Pipeline { file: scratch.join("fuzz.toml") }),
            "api" | "stream" => {
                let (router, key) = router(repo, scratch)?;
                let rt =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
                Ok(Harness::Api { router, key, rt, stream_only: target == "stream" })
            }
            other => Err(format!("unknown target '{other}' (one of {})", TARGETS.join(", "))),
        }
    }

    /// Runs one input; panics on a finding.
    pub fn run(&self, data: &[u8]) {
        match self {
            Harness::Lines { format, mapping } => {
                let Ok(line) = std::str::from_utf8(data) else { return };
                if let Ok(ev) = crate::event::parse_line(line, *format, mapping.as_ref()) {
                    let mut b = crate::event::EventBatchBuilder::with_capacity(1);
                    b.append(&ev);
                    let _ = b.finish();
                }
            }
            Harness::Pipeline { file } => {
                if std::fs::write(file, data).is_ok() {
                    let _ = crate::config::Pipeline::load(file);
                }
            }
            Harness::Api { router, key, rt, stream_only } => {
                let Some(req) = request(data, *stream_only, key) else { return };
                let path = req.uri().path().to_string();
                let Ok(resp) = rt.block_on(tower::ServiceExt::oneshot(router.clone(), req));
                assert!(!resp.status().is_server_error(), "{path}: {}", resp.status());
            }
        }
    }
}

/// The `[input.mapping]` of a shipped pipeline.
fn mapping(repo: &Path, pipeline: &str) -> Result<Mapping, String> {
    let p = crate::config::Pipeline::load(&repo.join("pipelines").join(pipeline)).map_err(|e| e.to_string())?;
    p.input.mapping.ok_or_else(|| format!("{pipeline} has no mapping"))
}

/// A GET request from fuzz input: the first byte picks the route, the first
/// line is the query string, each further line a `name: value` header. What
/// hyper would refuse before routing (an invalid URI or header) is `None`.
fn request(data: &[u8], stream_only: bool, key: &str) -> Option<axum::http::Request<axum::body::Body>> {
    let (&pick, rest) = data.split_first()?;
    let path = if stream_only { "/v1/decisions/stream" } else { ROUTES[pick as usize % ROUTES.len()] };
    let mut parts = rest.split(|b| *b == b'\n');
    let query = std::str::from_utf8(parts.next().unwrap_or_default()).ok()?;
    let uri = format!("{path}?{query}").parse::<axum::http::Uri>().ok()?;
    let mut req = axum::http::Request::builder().method("GET").uri(uri);
    for line in parts {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (axum::http::HeaderName::from_bytes(name), axum::http::HeaderValue::from_bytes(value)) {
            req = req.header(n, v);
        }
    }
    req.header("x-api-key", key).body(axum::body::Body::empty()).ok()
}

/// The decision API over a fresh state directory, with an admin key and a
/// few decisions to find; long polls and event streams end at once.
fn router(repo: &Path, dir: &Path) -> Result<(axum::Router, String), String> {
    use crate::api::{AppState, Metrics, Role, Services};
    use crate::live::{allow::AllowOverlay, store::LiveStore};
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut p = crate::config::Pipeline::load(&repo.join("pipelines/default.toml")).map_err(|x| e(&x))?;
    p.state_dir = dir.to_path_buf();
    let now = crate::event::time::now_ms();
    let store = Arc::new(LiveStore::open(dir, now).map_err(|x| e(&x))?);
    let overlay = AllowOverlay::open(dir).map_err(|x| e(&x))?;
    let allowlist = Arc::new(arc_swap::ArcSwap::from_pointee(overlay.apply(&p.allowlist)));
    let keys_path = crate::api::keys::path_in(dir);
    let _ = std::fs::remove_file(&keys_path);
    let (_, key) = crate::api::keys::create(&keys_path, "fuzz", Role::Admin).map_err(|x| e(&x))?;
    let keys = crate::api::KeyRing::open(&keys_path).map_err(|x| e(&x))?;
    let metrics = Arc::new(Metrics::new().map_err(|x| e(&x))?);
    let state = Arc::new(AppState::new(Services {
        store: store.clone(),
        pipeline: p,
        overlay,
        allowlist,
        metrics,
        keys,
        ready: Arc::new(AtomicBool::new(true)),
        control: None,
        shadow: Arc::new(crate::live::ShadowLog::new()),
        publisher: None,
        opened_sessions: Some(Arc::new(crate::sessions::OpenedSessions::new(1000))),
    }));
    let decisions = [("ip", "203.0.113.77"), ("cidr", "198.51.100.0/24"), ("user", "mallory")];
    let decisions = decisions.iter().enumerate().filter_map(|(i, (t, entity))| {
        Some(crate::decision::Decision {
            id: i as u64 + 1,
            entity_type: crate::features::EntityType::parse(t)?,
            entity: (*entity).to_string(),
            action: crate::decision::Action::Deny,
            reason: "fuzz".into(),
            source: "rule:fuzz".into(),
            score: 1.0,
            created_ms: now,
            expires_ms: now + 3_600_000,
            offense: 0,
            spared: Vec::new(),
        })
    });
    store.put_many(decisions.collect()).map_err(|x| e(&x))?;
    state.close_streams();
    Ok((crate::api::router(state), key))
}
