//! CrowdSec Local API compatibility, so existing CrowdSec bouncers (firewall,
//! nginx/OpenResty, Traefik, Caddy...) enforce gatewatch decisions unchanged:
//! point the bouncer's `api_url` at gatewatch and give it a gateway key as its
//! `api_key` (sent as `X-Api-Key`).
//!
//! - `GET /v1/decisions?ip=|range=|scope=&value=|type=` (live mode): the
//!   decisions that apply, or `null` when none does.
//! - `GET /v1/decisions/stream?startup=true|false&scopes=ip,range` (stream
//!   mode): `{"new": [...], "deleted": [...]}` since this bouncer's last pull,
//!   tracked per API key; `startup=true` (or a bouncer not seen since gatewatch
//!   started) gets every decision in force as `new`.
//!
//! Mapping: deny → `ban`, challenge → `captcha`, throttle → `throttle`; allow
//! decisions are not sent (CrowdSec has no allow), but a manual allow that
//! replaces a block is sent as the block's deletion, and an allowlisted address
//! gets `null` from the live route. Scopes: ip → `Ip`, cidr → `Range`, and
//! `User`, `ApiKey`, `Device`, `Session` for the rest (only asked-for scopes
//! are streamed; bouncers ask for `ip,range` by default).
//!
//! A subnet decision that spares bystanders (`spared`: addresses of the range
//! that were there before and took no part) is honoured by the live route,
//! which asks about one address; a `Range` in the stream cannot carry
//! exceptions, so a stream-mode bouncer blocks the spared addresses with
//! their range. Where that matters, run the bouncer in live mode or put the
//! gateway's own `/v1/authz` in front.
//!
//! A decision on a request class (`bare-login` while a credential-stuffing
//! campaign lasts) is never given to a bouncer: a bouncer asks about
//! addresses and cannot tell a request's class. Only `/v1/authz` and
//! `/v1/decision`, told the request's method and path, enforce it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller, check_params, now_ms, parse_ip, shorten};
use crate::decision::Action;
use crate::decision::Decision;
use crate::event::time::format_rfc3339;
use crate::features::EntityType;
use crate::live::store::{ChangeKind, Since};

fn scope_of(t: EntityType) -> &'static str {
    match t {
        EntityType::Ip => "Ip",
        // A network's decisions are published as cidr ones: both ranges.
        EntityType::Cidr | EntityType::Network => "Range",
        EntityType::User => "User",
        EntityType::ApiKey => "ApiKey",
        EntityType::Device => "Device",
        EntityType::Session => "Session",
        EntityType::Class => "Class",
    }
}

fn entity_of_scope(scope: &str) -> Option<EntityType> {
    EntityType::ALL.into_iter().find(|t| scope_of(*t).eq_ignore_ascii_case(scope.trim()))
}

fn type_of(a: Action) -> Option<&'static str> {
    match a {
        Action::Deny => Some("ban"),
        Action::Challenge => Some("captcha"),
        Action::Throttle => Some("throttle"),
        Action::Allow => None,
    }
}

/// A Go duration (`1h2m3.5s`), as CrowdSec writes the time left.
fn go_duration(ms: i64) -> String {
    let ms = ms.max(0);
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let secs = if frac == 0 { format!("{s}s") } else { format!("{s}.{frac:03}s") };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

fn origin_of(d: &Decision) -> &'static str {
    if d.source.starts_with("manual:") { "cscli" } else { "gatewatch" }
}

/// One decision in CrowdSec's shape; `kind` overrides the type (deletions of a
/// block replaced by an allow are sent as the block they lift).
fn crowdsec_json(d: &Decision, kind: &str, now: i64) -> Value {
    json!({
        "id": d.id,
        "origin": origin_of(d),
        "type": kind,
        "scope": scope_of(d.entity_type),
        "value": d.entity,
        "duration": go_duration(d.expires_ms - now),
        "until": format_rfc3339(d.expires_ms),
        "scenario": format!("{}: {}", d.source, d.reason),
        "simulated": false,
    })
}

/// Scope, origin and scenario filters bouncers may send. The gatewatch
/// cursor protocol on the same route takes them too, so a gateway that caches
/// only addresses and ranges can say so and skip the rest of the stream.
pub(super) struct Filters {
    scopes: Option<Vec<EntityType>>,
    origins: Option<Vec<String>>,
    containing: Option<Vec<String>>,
    not_containing: Option<Vec<String>>,
}

impl Filters {
    /// The filters in `params`; `default_scopes` applies when `scopes` is absent
    /// (CrowdSec's stream: addresses and ranges; its live query: every scope).
    pub(super) fn from(params: &HashMap<String, String>, default_scopes: Option<&[EntityType]>) -> Filters {
        let list = |k: &str| {
            params
                .get(k)
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        };
        // An unknown scope matches nothing, as in CrowdSec's own API.
        let scopes = match params.get("scopes") {
            Some(s) => Some(s.split(',').filter(|s| !s.trim().is_empty()).filter_map(entity_of_scope).collect()),
            None => default_scopes.map(<[EntityType]>::to_vec),
        };
        Filters {
            scopes,
            origins: list("origins"),
            containing: list("scenarios_containing"),
            not_containing: list("scenarios_not_containing"),
        }
    }

    pub(super) fn keep(&self, d: &Decision) -> bool {
        // A bouncer is asked about addresses and cannot tell a request's
        // class: a class decision given to it would be read as a block on
        // whatever its value looks like, or not at all.
        if d.entity_type == EntityType::Class {
            return false;
        }
        if self.scopes.as_ref().is_some_and(|s| !s.contains(&d.entity_type)) {
            return false;
        }
        if self.origins.is_none() && self.containing.is_none() && self.not_containing.is_none() {
            return true;
        }
        let scenario = format!("{}: {}", d.source, d.reason).to_ascii_lowercase();
        self.origins.as_ref().is_none_or(|o| o.iter().any(|o| o == origin_of(d)))
            && self.containing.as_ref().is_none_or(|c| c.iter().any(|c| scenario.contains(c.as_str())))
            && self.not_containing.as_ref().is_none_or(|c| !c.iter().any(|c| scenario.contains(c.as_str())))
    }
}

/// `startup=true|false`, as CrowdSec bouncers send it (also checks
/// `community_pull` and `additional_pull`, which gatewatch, having no
/// community or third-party lists, takes and ignores).
pub(super) fn startup(params: &HashMap<String, String>) -> Result<bool, ApiError> {
    flag(params, "community_pull")?;
    flag(params, "additional_pull")?;
    Ok(flag(params, "startup")?.unwrap_or(false))
}

/// A boolean query parameter: `true` or `false`.
fn flag(params: &HashMap<String, String>, name: &str) -> Result<Option<bool>, ApiError> {
    match params.get(name).map(|s| s.trim()) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(format!("{name}: '{}' is not true or false", shorten(other)))),
    }
}

/// Parameters of `GET /v1/decisions/stream`, in either protocol.
pub(super) const STREAM_PARAMS: [&str; 10] = [
    "cursor",
    "wait",
    "limit",
    "startup",
    "scopes",
    "origins",
    "scenarios_containing",
    "scenarios_not_containing",
    "community_pull",
    "additional_pull",
];

/// `GET /v1/decisions`: CrowdSec's live-mode query.
pub(super) async fn decisions(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_params(
        &params,
        &[
            "ip",
            "range",
            "scope",
            "value",
            "type",
            "contains",
            "origins",
            "scenarios_containing",
            "scenarios_not_containing",
        ],
    )?;
    let now = now_ms();
    let filters = Filters::from(&params, None);
    let want_type = params.get("type").map(|t| t.trim().to_ascii_lowercase());
    if let Some(t) = &want_type
        && !["ban", "captcha", "throttle"].contains(&t.as_str())
    {
        return Err(ApiError::bad_request(format!("type: '{}' is not one of ban, captcha, throttle", shorten(t))));
    }
    let contains = flag(&params, "contains")?.unwrap_or(true);
    // Every parameter given is checked, even one the precedence below
    // (ip, then range, then scope) leaves unused: a typo is reported, not ignored.
    let ip = params.get("ip").map(|ip| parse_ip("ip", ip)).transpose()?;
    let range = params
        .get("range")
        .map(|r| {
            r.trim().parse::<ipnet::IpNet>().map_err(|_| {
                ApiError::bad_request(format!("range: '{}' is not a CIDR such as 203.0.113.0/24", shorten(r)))
            })
        })
        .transpose()?;
    let scope = params
        .get("scope")
        .map(|scope| {
            entity_of_scope(scope).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "scope: '{}' is not one of Ip, Range, User, ApiKey, Device, Session",
                    shorten(scope)
                ))
            })
        })
        .transpose()?;
    let found: Vec<Arc<Decision>> = if let Some(ip) = ip {
        if state.allowlist.load().allows_request(ip, None, None) {
            return Ok(Json(Value::Null));
        }
        let covering = state.store.covering(ip, now);
        // An allow on the address or a range holding it lifts every block, as in /v1/decision.
        if covering.iter().any(|d| d.action == Action::Allow) {
            return Ok(Json(Value::Null));
        }
        covering
    } else if let Some(net) = range {
        state
            .store
            .active(now)
            .into_iter()
            .filter(|d| match d.entity_type {
                EntityType::Cidr => d
                    .entity
                    .parse::<ipnet::IpNet>()
                    .is_ok_and(|n| if contains { net.contains(&n) } else { n.contains(&net) }),
                EntityType::Ip => contains && d.entity.parse::<std::net::IpAddr>().is_ok_and(|ip| net.contains(&ip)),
                _ => false,
            })
            .collect()
    } else if let Some(t) = scope {
        match params.get("value") {
            Some(v) => state.store.get(t, v.trim(), now).into_iter().collect(),
            None => state.store.active(now).into_iter().filter(|d| d.entity_type == t).collect(),
        }
    } else {
        state.store.active(now)
    };
    let out: Vec<Value> = found
        .iter()
        .filter(|d| filters.keep(d))
        .filter_map(|d| type_of(d.action).map(|k| (d, k)))
        .filter(|(_, k)| want_type.as_deref().is_none_or(|t| t == *k))
        .map(|(d, k)| crowdsec_json(d, k, now))
        .collect();
    Ok(Json(if out.is_empty() { Value::Null } else { Value::Array(out) }))
}

/// `GET /v1/decisions/stream` in CrowdSec's protocol (see the module docs).
pub(super) fn stream(
    state: &AppState,
    caller: &Caller,
    params: &HashMap<String, String>,
) -> Result<Json<Value>, ApiError> {
    check_params(params, &STREAM_PARAMS)?;
    let startup = startup(params)?;
    let filters = Filters::from(params, Some(&[EntityType::Ip, EntityType::Cidr]));
    let keep = |d: &Decision| filters.keep(d);
    let now = now_ms();
    let mut bouncers = state.bouncers.lock().map_err(|_| ApiError::internal("bouncer cursors lock poisoned"))?;
    let cursor = if startup { None } else { bouncers.get(&caller.id).copied() };
    let since = state.store.since(cursor, usize::MAX, now).map_err(ApiError::internal)?;
    let (mut new, mut deleted) = (Vec::new(), Vec::new());
    let next = match since {
        Since::Snapshot { cursor, decisions } => {
            for d in decisions.iter().filter(|d| keep(d)) {
                if let Some(k) = type_of(d.action) {
                    new.push(crowdsec_json(d, k, now));
                }
            }
            cursor
        }
        Since::Changes { cursor, changes, .. } => {
            // Only the last change per entity matters to a bouncer's cache;
            // `before` is what the bouncer last heard about that entity.
            let mut last: HashMap<(EntityType, &str), (&crate::live::store::Change, Option<Action>)> = HashMap::new();
            for c in &changes {
                let key = (c.decision.entity_type, c.decision.entity.as_str());
                let before = last.get(&key).map(|(prev, before)| {
                    if matches!(prev.kind, ChangeKind::Deleted | ChangeKind::Expired) {
                        None
                    } else {
                        Some(prev.decision.action)
                    }
                    .or(*before)
                });
                last.insert(key, (c, before.flatten()));
            }
            let mut ordered: Vec<_> = last.into_values().collect();
            ordered.sort_by_key(|(c, _)| c.seq);
            for (c, before) in ordered {
                let d = &c.decision;
                if !keep(d) {
                    continue;
                }
                match (c.kind, type_of(d.action)) {
                    (ChangeKind::Created | ChangeKind::Changed, Some(k)) if d.expires_ms > now => {
                        new.push(crowdsec_json(d, k, now))
                    }
                    (ChangeKind::Created | ChangeKind::Changed, _) => {
                        // Replaced by an allow (or already over): the bouncer drops what it holds.
                        let k = before.and_then(type_of).unwrap_or("ban");
                        deleted.push(crowdsec_json(d, k, now));
                    }
                    (ChangeKind::Deleted | ChangeKind::Expired, Some(k)) => deleted.push(crowdsec_json(d, k, now)),
                    (ChangeKind::Deleted | ChangeKind::Expired, None) => {}
                }
            }
            cursor
        }
    };
    bouncers.insert(caller.id.clone(), next);
    Ok(Json(json!({ "new": new, "deleted": deleted })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(3_600_000 * 3 + 59 * 60_000 + 58_000), "3h59m58s");
        assert_eq!(go_duration(61_500), "1m1.500s");
        assert_eq!(go_duration(999), "0.999s");
        assert_eq!(go_duration(-5), "0s");
    }
}
