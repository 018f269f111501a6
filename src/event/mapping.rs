//! Other gateways' JSON (Envoy, Kong, Traefik, AWS API Gateway) mapped onto the
//! canonical fields by configuration (`access-log-schema.md` §3).
//!
//! A mapping names, per canonical field, a dotted source path and optionally a
//! transform. The mapped object is then validated exactly like a canonical line,
//! so a mapped gateway gets the same errors and the same guarantees.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::json::RawEvent;
use super::{EventRef, ParseError};

/// The canonical fields a mapping may fill.
pub const FIELDS: &[&str] = &[
    "ts",
    "client_ip",
    "method",
    "path",
    "query",
    "status",
    "bytes_sent",
    "latency_ms",
    "user_agent",
    "referer",
    "host",
    "request_id",
    "user_id",
    "api_key_id",
    "session_id",
    "device_id",
    "grant_type",
    "auth_result",
    "attestation",
    "signature",
    "country",
    "asn",
];

/// A value rewrite applied after the source field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// `203.0.113.9:51234` or `[2001:db8::1]:443` → the address alone.
    StripPort,
    /// `/v1/items?x=1` → `/v1/items`.
    PathOnly,
    /// `/v1/items?x=1` → `x=1` (absent when there is no `?`).
    QueryOnly,
    /// A number of seconds → milliseconds (latencies in seconds, epoch seconds).
    SecondsToMs,
    /// A number of microseconds → milliseconds.
    MicrosToMs,
}

/// One field's source, as written in the pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FieldSpec {
    Path(String),
    Full {
        from: String,
        #[serde(default)]
        transform: Option<Transform>,
    },
}

/// A compiled mapping: canonical field → (path segments, transform).
#[derive(Debug, Clone)]
pub struct Mapping {
    fields: Vec<(&'static str, Vec<String>, Option<Transform>)>,
}

impl Mapping {
    /// Compiles a mapping table; refuses unknown canonical fields and a mapping
    /// that cannot produce the required ones.
    pub fn compile(spec: &BTreeMap<String, FieldSpec>) -> Result<Self, String> {
        let mut fields = Vec::new();
        for (name, fs) in spec {
            let canonical = FIELDS
                .iter()
                .find(|f| **f == name.as_str())
                .ok_or_else(|| format!("unknown field '{name}' (fields are: {})", FIELDS.join(", ")))?;
            let (path, transform) = match fs {
                FieldSpec::Path(p) => (p.clone(), None),
                FieldSpec::Full { from, transform } => (from.clone(), *transform),
            };
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(format!(
                    "field '{name}': source path '{path}' is not a dotted path like request.headers.user-agent"
                ));
            }
            fields.push((*canonical, path.split('.').map(str::to_string).collect(), transform));
        }
        for req in ["ts", "client_ip", "method", "path", "status"] {
            if !spec.contains_key(req) {
                return Err(format!("required field '{req}' has no source"));
            }
        }
        Ok(Mapping { fields })
    }

    /// Parses one line of the mapped gateway's JSON.
    pub fn parse<'a>(&self, line: &'a str) -> Result<EventRef<'a>, ParseError> {
        let src: Value = serde_json::from_str(line).map_err(|e| {
            let kind = if e.is_eof() { "truncated JSON" } else { "invalid JSON" };
            ParseError(format!("{kind}: {e}"))
        })?;
        if !src.is_object() {
            return Err(ParseError::new("invalid JSON: not an object"));
        }
        let mut out = Map::with_capacity(self.fields.len());
        for (name, path, transform) in &self.fields {
            let Some(v) = lookup(&src, path) else {
                continue;
            };
            if v.is_null() {
                continue;
            }
            let v = match transform {
                None => v.clone(),
                Some(t) => match apply(*t, v) {
                    Ok(Some(v)) => v,
                    Ok(None) => continue,
                    Err(e) => {
                        return Err(ParseError(format!("{name} (from {}): {e}", path.join("."))));
                    }
                },
            };
            out.insert((*name).to_string(), v);
        }
        let raw: RawEvent<'a> = serde_path_to_error::deserialize(Value::Object(out)).map_err(|e| {
            let p = e.path().to_string();
            ParseError(format!("{p}: {}", e.into_inner()))
        })?;
        raw.validate()
    }
}

fn lookup<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |cur, seg| cur.as_object()?.get(seg))
}

fn as_number(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| "not a number".to_string()),
        Value::String(s) => s.trim().parse().map_err(|_| format!("'{s}' is not a number")),
        other => Err(format!("{other} is not a number")),
    }
}

fn apply(t: Transform, v: &Value) -> Result<Option<Value>, String> {
    let text = || v.as_str().ok_or_else(|| format!("{v} is not a string"));
    Ok(match t {
        Transform::StripPort => {
            let s = text()?;
            let ip = if let Some(rest) = s.strip_prefix('[') {
                rest.split(']').next().unwrap_or(rest)
            } else if s.matches(':').count() == 1 {
                s.split(':').next().unwrap_or(s)
            } else {
                s
            };
            Some(Value::String(ip.to_string()))
        }
        Transform::PathOnly => {
            let s = text()?;
            Some(Value::String(s.split('?').next().unwrap_or(s).to_string()))
        }
        Transform::QueryOnly => {
            text()?.split_once('?').map(|(_, q)| q).filter(|q| !q.is_empty()).map(|q| Value::String(q.to_string()))
        }
        Transform::SecondsToMs => Some(ms_value(as_number(v)? * 1000.0)),
        Transform::MicrosToMs => Some(ms_value(as_number(v)? / 1000.0)),
    })
}

/// Keeps whole milliseconds integral so that `ts` stays an integer.
fn ms_value(ms: f64) -> Value {
    if ms.fract() == 0.0 && ms.abs() < 9.0e15 {
        Value::from(ms as i64)
    } else if ms.abs() > 1.0e11 {
        Value::from(ms.round() as i64)
    } else {
        serde_json::Number::from_f64(ms).map(Value::Number).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(toml_src: &str) -> Mapping {
        let spec: BTreeMap<String, FieldSpec> = toml::from_str(toml_src).unwrap();
        Mapping::compile(&spec).unwrap()
    }

    #[test]
    fn transforms_and_nesting() {
        let m = mapping(
            r#"
            ts = { from = "started_at" }
            client_ip = { from = "peer", transform = "strip_port" }
            method = "request.method"
            path = { from = "request.uri", transform = "path_only" }
            query = { from = "request.uri", transform = "query_only" }
            status = "response.status"
            latency_ms = { from = "lat", transform = "seconds_to_ms" }
            user_agent = "request.headers.user-agent"
            "#,
        );
        let e = m
            .parse(r#"{"started_at":1795860902113,"peer":"[2001:db8::1]:443","request":{"method":"GET","uri":"/a/b?c=1","headers":{"user-agent":"curl/8"}},"response":{"status":204},"lat":0.25}"#)
            .unwrap();
        assert_eq!(e.client_ip, "2001:db8::1");
        assert_eq!(e.path, "/a/b");
        assert_eq!(e.query.as_deref(), Some("c=1"));
        assert_eq!(e.status, 204);
        assert_eq!(e.latency_ms, Some(250.0));
        assert_eq!(e.user_agent.as_deref(), Some("curl/8"));
    }

    #[test]
    fn compile_errors() {
        let spec: BTreeMap<String, FieldSpec> = toml::from_str(r#"tss = "a""#).unwrap();
        assert!(Mapping::compile(&spec).unwrap_err().contains("unknown field 'tss'"));
        let spec: BTreeMap<String, FieldSpec> = toml::from_str(r#"ts = "a""#).unwrap();
        assert!(Mapping::compile(&spec).unwrap_err().contains("required field"));
    }
}
