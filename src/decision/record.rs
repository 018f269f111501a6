//! The one decision type: made by the engine, written by every sink, held by
//! the live store and served by the API. Times are epoch milliseconds; the
//! serialised form adds RFC 3339 times and the TTL for people reading
//! `decisions.jsonl`, and reading accepts either form.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Action;
use crate::event::time::{format_rfc3339, parse_rfc3339};
use crate::features::EntityType;

/// One verdict on one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Engine decisions are numbered from 1 within a state directory, shadow
    /// ones from [`super::SHADOW_ID_BASE`] within a run; manual ones from
    /// [`crate::api::MANUAL_ID_BASE`].
    pub id: u64,
    pub entity_type: EntityType,
    pub entity: String,
    pub action: Action,
    pub reason: String,
    /// `rule:NAME`, `model:NAME@VERSION` or `manual:WHO`.
    pub source: String,
    pub score: f64,
    /// When decided: event time for the engine's, wall clock for manual ones.
    pub created_ms: i64,
    pub expires_ms: i64,
    /// Which repeat offence of its entity an automatic decision answers (0: manual).
    pub offense: u32,
    /// Addresses of a subnet (cidr) decision's range it does not cover:
    /// bystanders that were there before and took no part in what the
    /// subnet was judged for (an uptime checker renting in the hosting /24
    /// a scraper also rents in). Empty on every other decision.
    pub spared: Vec<IpAddr>,
}

impl Decision {
    /// Lifetime in whole seconds.
    pub fn ttl_s(&self) -> u64 {
        ((self.expires_ms - self.created_ms).max(0) / 1000) as u64
    }
}

/// The serialised shape: both time forms, so people and programs each read theirs.
#[derive(Serialize)]
struct WireOut<'a> {
    ts: String,
    entity_type: EntityType,
    entity: &'a str,
    action: Action,
    ttl_s: u64,
    reason: &'a str,
    source: &'a str,
    score: f64,
    id: u64,
    expires_at: String,
    offense: u32,
    created_ms: i64,
    expires_ms: i64,
    #[serde(skip_serializing_if = "<[IpAddr]>::is_empty")]
    spared: &'a [IpAddr],
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireOut {
            ts: format_rfc3339(self.created_ms),
            entity_type: self.entity_type,
            entity: &self.entity,
            action: self.action,
            ttl_s: self.ttl_s(),
            reason: &self.reason,
            source: &self.source,
            score: self.score,
            id: self.id,
            expires_at: format_rfc3339(self.expires_ms),
            offense: self.offense,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            spared: &self.spared,
        }
        .serialize(s)
    }
}

#[derive(Deserialize)]
struct WireIn {
    id: u64,
    entity_type: EntityType,
    entity: String,
    action: Action,
    reason: String,
    source: String,
    score: f64,
    #[serde(default)]
    offense: u32,
    created_ms: Option<i64>,
    expires_ms: Option<i64>,
    ts: Option<String>,
    expires_at: Option<String>,
    ttl_s: Option<u64>,
    #[serde(default)]
    spared: Vec<IpAddr>,
}

impl<'de> Deserialize<'de> for Decision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let w = WireIn::deserialize(d)?;
        let time = |s: &Option<String>, field: &str| -> Result<Option<i64>, D::Error> {
            s.as_deref().map(|t| parse_rfc3339(t).map_err(|e| D::Error::custom(format!("{field}: {e}")))).transpose()
        };
        let created_ms = match w.created_ms {
            Some(ms) => ms,
            None => time(&w.ts, "ts")?.ok_or_else(|| D::Error::missing_field("created_ms"))?,
        };
        // The millisecond fields win; the RFC 3339 ones are read only when
        // they are all there is (they refuse times outside 2000–2100).
        let expires_ms = match (w.expires_ms, &w.expires_at, w.ttl_s) {
            (Some(ms), _, _) => ms,
            (None, Some(_), _) => time(&w.expires_at, "expires_at")?.unwrap_or(created_ms),
            (None, None, Some(ttl)) => created_ms + ttl as i64 * 1000,
            (None, None, None) => return Err(D::Error::missing_field("expires_ms")),
        };
        Ok(Decision {
            id: w.id,
            entity_type: w.entity_type,
            entity: w.entity,
            action: w.action,
            reason: w.reason,
            source: w.source,
            score: w.score,
            created_ms,
            expires_ms,
            offense: w.offense,
            spared: w.spared,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_older_shapes() {
        let d = Decision {
            id: 7,
            entity_type: EntityType::Ip,
            entity: "203.0.113.9".into(),
            action: Action::Deny,
            reason: "r".into(),
            source: "rule:x".into(),
            score: 0.9,
            created_ms: 1_795_860_902_113,
            expires_ms: 1_795_864_502_113,
            offense: 1,
            spared: Vec::new(),
        };
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.starts_with(r#"{"ts":"2026-11-28T10:15:02.113Z""#), "{text}");
        assert!(text.contains(r#""ttl_s":3600"#) && text.contains(r#""expires_at":"2026-11-28T11:15:02.113Z""#));
        assert_eq!(serde_json::from_str::<Decision>(&text).unwrap(), d);
        // decisions.jsonl as earlier versions wrote it.
        let old = r#"{"ts":"2026-11-28T10:15:02.113Z","entity_type":"ip","entity":"203.0.113.9","action":"deny","ttl_s":3600,"reason":"r","source":"rule:x","score":0.9,"id":7,"expires_at":"2026-11-28T11:15:02.113Z","offense":1}"#;
        assert_eq!(serde_json::from_str::<Decision>(old).unwrap(), d);
        // The live store's records as earlier versions persisted them.
        let stored = r#"{"id":7,"entity_type":"ip","entity":"203.0.113.9","action":"deny","reason":"r","source":"rule:x","score":0.9,"created_ms":1795860902113,"expires_ms":1795864502113,"offense":1}"#;
        assert_eq!(serde_json::from_str::<Decision>(stored).unwrap(), d);
        // Times outside the RFC 3339 parser's range (tests, epoch 0) survive a round trip.
        let early = Decision { created_ms: 0, expires_ms: 10_000, ..d.clone() };
        assert_eq!(serde_json::from_str::<Decision>(&serde_json::to_string(&early).unwrap()).unwrap(), early);
        // A subnet decision's spared addresses, written only where there are some.
        assert!(!text.contains("spared"));
        let range = Decision {
            entity_type: EntityType::Cidr,
            entity: "203.0.113.0/24".into(),
            spared: vec!["203.0.113.14".parse().unwrap(), "203.0.113.200".parse().unwrap()],
            ..d
        };
        let text = serde_json::to_string(&range).unwrap();
        assert!(text.ends_with(r#""spared":["203.0.113.14","203.0.113.200"]}"#), "{text}");
        assert_eq!(serde_json::from_str::<Decision>(&text).unwrap(), range);
    }
}
