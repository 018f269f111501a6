//! Decisions in force, shared between the engine (one writer) and the API
//! (many readers), and persisted so that a restart forgets nothing.
//!
//! Readers never wait on the writer: the map is an immutable, structurally
//! shared `imbl` map behind an `ArcSwap`; a lookup loads the current version
//! without a lock, and a write builds the next version (O(log n), sharing
//! everything else) and swaps it in. Every write is first committed to a redb
//! database (copy-on-write B-tree, fsync on commit), so a decision that was
//! acknowledged survives `kill -9`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::config::Allowlist;
use crate::decision::{Action, Decision};
use crate::event::time::{format_rfc3339, parse_rfc3339};
use crate::features::{EntityType, subnet_of};

const DECISIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("decisions");

/// The store could not read or write its database.
#[derive(Debug, thiserror::Error)]
#[error("decision store {path}: {message}")]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

/// A decision as the API serves it; times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveDecision {
    pub id: u64,
    pub entity_type: EntityType,
    pub entity: String,
    pub action: Action,
    pub reason: String,
    pub source: String,
    pub score: f64,
    pub created_ms: i64,
    pub expires_ms: i64,
}

impl LiveDecision {
    /// From an engine decision (its times are event time).
    pub fn from_decision(d: &Decision) -> Option<LiveDecision> {
        let created = parse_rfc3339(&d.ts).ok()?;
        Some(LiveDecision {
            id: d.id,
            entity_type: d.entity_type,
            entity: d.entity.clone(),
            action: d.action,
            reason: d.reason.clone(),
            source: d.source.clone(),
            score: d.score,
            created_ms: created,
            expires_ms: created + d.ttl_s as i64 * 1000,
        })
    }

    fn key(&self) -> String {
        key_of(self.entity_type, &self.entity)
    }
}

fn key_of(t: EntityType, entity: &str) -> String {
    format!("{}\u{1f}{}", t.as_str(), entity)
}

/// What a request carries, for a lookup.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    pub ip: Option<IpAddr>,
    pub user: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub device: Option<&'a str>,
    pub session: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub action: Action,
    pub entity_type: Option<EntityType>,
    pub entity: Option<String>,
    pub reason: Option<String>,
    pub source: Option<String>,
    /// RFC 3339 expiry of the deciding decision.
    pub expires_at: Option<String>,
    pub decision_id: Option<u64>,
    #[serde(skip)]
    pub expires_ms: Option<i64>,
}

impl Verdict {
    fn allow() -> Verdict {
        Verdict {
            action: Action::Allow,
            entity_type: None,
            entity: None,
            reason: None,
            source: None,
            expires_at: None,
            decision_id: None,
            expires_ms: None,
        }
    }

    fn from(d: &LiveDecision) -> Verdict {
        Verdict {
            action: d.action,
            entity_type: Some(d.entity_type),
            entity: Some(d.entity.clone()),
            reason: Some(d.reason.clone()),
            source: Some(d.source.clone()),
            expires_at: Some(format_rfc3339(d.expires_ms)),
            decision_id: Some(d.id),
            expires_ms: Some(d.expires_ms),
        }
    }
}

type Map = imbl::HashMap<String, Arc<LiveDecision>>;

/// Decisions in force.
pub struct LiveStore {
    path: PathBuf,
    map: ArcSwap<Map>,
    db: Mutex<redb::Database>,
}

impl LiveStore {
    /// Opens (or creates) `dir/decisions.redb` and loads the decisions still in force.
    pub fn open(dir: &Path, now_ms: i64) -> Result<LiveStore, StoreError> {
        let path = dir.join("decisions.redb");
        let err = |m: String| StoreError { path: path.clone(), message: m };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let db = redb::Database::create(&path).map_err(|e| err(e.to_string()))?;
        let mut map = Map::new();
        let mut expired = Vec::new();
        {
            let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
            tx.open_table(DECISIONS).map_err(|e| err(e.to_string()))?;
            tx.commit().map_err(|e| err(e.to_string()))?;
        }
        {
            let tx = db.begin_read().map_err(|e| err(e.to_string()))?;
            let table = tx.open_table(DECISIONS).map_err(|e| err(e.to_string()))?;
            for row in table.iter().map_err(|e| err(e.to_string()))? {
                let (k, v) = row.map_err(|e| err(e.to_string()))?;
                match serde_json::from_slice::<LiveDecision>(v.value()) {
                    Ok(d) if d.expires_ms > now_ms => {
                        map.insert(k.value().to_string(), Arc::new(d));
                    }
                    _ => expired.push(k.value().to_string()),
                }
            }
        }
        let store = LiveStore { path: path.clone(), map: ArcSwap::from_pointee(map), db: Mutex::new(db) };
        store.delete_keys(&expired)?;
        Ok(store)
    }

    fn err(&self, m: impl ToString) -> StoreError {
        StoreError { path: self.path.clone(), message: m.to_string() }
    }

    /// Persists, then publishes, a decision: it replaces whatever was in force for its entity.
    pub fn put(&self, d: LiveDecision) -> Result<(), StoreError> {
        let key = d.key();
        let bytes = serde_json::to_vec(&d).map_err(|e| self.err(e))?;
        let db = self.db.lock().map_err(|_| self.err("lock poisoned"))?;
        let tx = db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(DECISIONS).map_err(|e| self.err(e))?;
            t.insert(key.as_str(), bytes.as_slice()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        let mut next = (**self.map.load()).clone();
        next.insert(key, Arc::new(d));
        self.map.store(Arc::new(next));
        Ok(())
    }

    /// Publishes an automatic decision unless a manual one is in force on the
    /// same entity: what an operator decided (an allow above all) is not undone
    /// by the next rule hit. Returns whether it was stored.
    pub fn put_automatic(&self, d: LiveDecision, now_ms: i64) -> Result<bool, StoreError> {
        if let Some(cur) = self.get(d.entity_type, &d.entity, now_ms) {
            if cur.source.starts_with("manual:") {
                return Ok(false);
            }
        }
        self.put(d)?;
        Ok(true)
    }

    /// Removes the decision on an entity; returns it if there was one.
    pub fn remove(&self, t: EntityType, entity: &str) -> Result<Option<Arc<LiveDecision>>, StoreError> {
        let key = key_of(t, entity);
        let _db = self.db.lock().map_err(|_| self.err("lock poisoned"))?;
        drop(_db);
        self.delete_keys(std::slice::from_ref(&key))?;
        let mut next = (**self.map.load()).clone();
        let old = next.remove(&key);
        self.map.store(Arc::new(next));
        Ok(old)
    }

    fn delete_keys(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let db = self.db.lock().map_err(|_| self.err("lock poisoned"))?;
        let tx = db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(DECISIONS).map_err(|e| self.err(e))?;
            for k in keys {
                t.remove(k.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Drops expired decisions from memory and disk.
    pub fn purge_expired(&self, now_ms: i64) -> Result<usize, StoreError> {
        let current = self.map.load();
        let expired: Vec<String> =
            current.iter().filter(|(_, d)| d.expires_ms <= now_ms).map(|(k, _)| k.clone()).collect();
        if expired.is_empty() {
            return Ok(0);
        }
        self.delete_keys(&expired)?;
        let mut next = (**self.map.load()).clone();
        for k in &expired {
            next.remove(k);
        }
        self.map.store(Arc::new(next));
        Ok(expired.len())
    }

    /// The largest decision id below `limit` (0 when none).
    pub fn max_id_below(&self, limit: u64) -> u64 {
        self.map.load().values().map(|d| d.id).filter(|id| *id < limit).max().unwrap_or(0)
    }

    /// The largest decision id held (0 when empty).
    pub fn max_id(&self) -> u64 {
        self.map.load().values().map(|d| d.id).max().unwrap_or(0)
    }

    /// Decisions in force at `now_ms`.
    pub fn active(&self, now_ms: i64) -> Vec<Arc<LiveDecision>> {
        let mut v: Vec<_> = self.map.load().values().filter(|d| d.expires_ms > now_ms).cloned().collect();
        v.sort_by_key(|d| d.id);
        v
    }

    /// The decision in force on one entity.
    pub fn get(&self, t: EntityType, entity: &str, now_ms: i64) -> Option<Arc<LiveDecision>> {
        self.map.load().get(&key_of(t, entity)).filter(|d| d.expires_ms > now_ms).cloned()
    }

    /// The verdict for a request: allowlists first, then a manual allow on any of
    /// its entities, then the strongest decision in force on any of them.
    pub fn lookup(&self, q: &Query<'_>, allowlist: &Allowlist, now_ms: i64) -> Verdict {
        if let Some(ip) = q.ip {
            if allowlist.allows_request(ip, q.user_agent, q.api_key) {
                return Verdict::allow();
            }
        } else if let Some(k) = q.api_key {
            if allowlist.api_keys.iter().any(|a| a == k) {
                return Verdict::allow();
            }
        }
        let map = self.map.load();
        let subnet = q.ip.map(subnet_of);
        let ip_text = q.ip.map(|ip| ip.to_string());
        let keys = [
            (EntityType::Ip, ip_text.as_deref()),
            (EntityType::Cidr, subnet.as_deref()),
            (EntityType::User, q.user),
            (EntityType::ApiKey, q.api_key),
            (EntityType::Device, q.device),
            (EntityType::Session, q.session),
        ];
        let mut best: Option<&Arc<LiveDecision>> = None;
        for (t, v) in keys {
            let Some(v) = v else { continue };
            let Some(d) = map.get(&key_of(t, v)) else { continue };
            if d.expires_ms <= now_ms {
                continue;
            }
            if d.action == Action::Allow {
                return Verdict::from(d);
            }
            if best.is_none_or(|b| d.action > b.action) {
                best = Some(d);
            }
        }
        best.map(|d| Verdict::from(d)).unwrap_or_else(Verdict::allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: u64, t: EntityType, e: &str, action: Action, expires: i64) -> LiveDecision {
        LiveDecision {
            id,
            entity_type: t,
            entity: e.into(),
            action,
            reason: "r".into(),
            source: "rule:x".into(),
            score: 1.0,
            created_ms: 0,
            expires_ms: expires,
        }
    }

    #[test]
    fn lookup_precedence_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let s = LiveStore::open(dir.path(), 0).unwrap();
        let none = Allowlist::default();
        s.put(d(1, EntityType::Cidr, "203.0.113.0/24", Action::Challenge, 10_000)).unwrap();
        s.put(d(2, EntityType::User, "alice", Action::Deny, 10_000)).unwrap();
        s.put(d(3, EntityType::Ip, "198.51.100.7", Action::Deny, 100)).unwrap();
        let q = |ip: &str, user: Option<&'static str>| Query { ip: ip.parse().ok(), user, ..Default::default() };
        assert_eq!(s.lookup(&q("203.0.113.9", None), &none, 50).action, Action::Challenge);
        let v = s.lookup(&q("203.0.113.9", Some("alice")), &none, 50);
        assert_eq!((v.action, v.decision_id), (Action::Deny, Some(2)));
        assert_eq!(s.lookup(&q("198.51.100.7", None), &none, 50).action, Action::Deny);
        assert_eq!(s.lookup(&q("198.51.100.7", None), &none, 100).action, Action::Allow, "expired at 100");
        // A manual allow on the user lifts the block on everything else.
        s.put(d(4, EntityType::User, "alice", Action::Allow, 10_000)).unwrap();
        assert_eq!(s.lookup(&q("203.0.113.9", Some("alice")), &none, 50).action, Action::Allow);
        drop(s);
        // Reopen: decisions in force come back, expired ones are gone.
        let s = LiveStore::open(dir.path(), 150).unwrap();
        assert_eq!(s.active(150).len(), 2);
        assert_eq!(s.lookup(&q("203.0.113.9", None), &none, 150).action, Action::Challenge);
        assert!(s.remove(EntityType::Cidr, "203.0.113.0/24").unwrap().is_some());
        assert_eq!(s.lookup(&q("203.0.113.9", None), &none, 150).action, Action::Allow);
    }
}
