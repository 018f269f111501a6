//! Decisions in force, shared between the engine (one writer) and the API
//! (many readers), and persisted so that a restart forgets nothing.
//!
//! Readers never wait on the writer: the map is an immutable, structurally
//! shared `imbl` map behind an `ArcSwap`; a lookup loads the current version
//! without a lock, and a write builds the next version (O(log n), sharing
//! everything else) and swaps it in. Every write is first committed to a redb
//! database (copy-on-write B-tree, fsync on commit), so a decision that was
//! served survives `kill -9`; the engine's decisions of a round share one
//! commit ([`LiveStore::put_automatic_many`]).

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;

use crate::config::Allowlist;
use crate::decision::{Action, Decision};
use crate::event::time::format_rfc3339;
use crate::features::EntityType;

const DECISIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("decisions");
/// Store-wide values; `seq` is the number of the newest change.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SEQ: &str = "seq";
/// Entity key → (offence count, when): outlives the decisions themselves, so
/// escalation survives a restart.
const OFFENSES: TableDefinition<&str, (u32, i64)> = TableDefinition::new("offenses");

/// The store could not read or write its database.
#[derive(Debug, thiserror::Error)]
#[error("decision store {path}: {message}")]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

/// The store's key of a decision.
fn store_key(d: &Decision) -> String {
    key_of(d.entity_type, &d.entity)
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
    /// The request's class (`crate::classes`), when it has one.
    pub class: Option<&'a str>,
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

    fn from(d: &Decision) -> Verdict {
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

type Map = imbl::HashMap<String, Arc<Decision>>;

/// What readers see: the decisions, and which subnet prefix lengths they use,
/// so a lookup tries only the prefixes some range decision has.
#[derive(Clone, Default)]
struct Published {
    map: Map,
    /// Range decisions per prefix length: IPv4 `[0..=32]`, IPv6 `[33..=161]`.
    prefixes: Vec<u32>,
}

impl Published {
    fn count_prefix(&mut self, d: &Decision, delta: i64) {
        if d.entity_type != EntityType::Cidr {
            return;
        }
        let Ok(net) = d.entity.parse::<ipnet::IpNet>() else { return };
        let slot = match net {
            ipnet::IpNet::V4(n) => n.prefix_len() as usize,
            ipnet::IpNet::V6(n) => 33 + n.prefix_len() as usize,
        };
        if self.prefixes.len() < 162 {
            self.prefixes.resize(162, 0);
        }
        self.prefixes[slot] = (self.prefixes[slot] as i64 + delta).max(0) as u32;
    }

    fn insert(&mut self, key: String, d: Arc<Decision>) -> Option<Arc<Decision>> {
        self.count_prefix(&d, 1);
        let old = self.map.insert(key, d);
        if let Some(o) = &old {
            self.count_prefix(o, -1);
        }
        old
    }

    fn remove(&mut self, key: &str) -> Option<Arc<Decision>> {
        let old = self.map.remove(key);
        if let Some(o) = &old {
            self.count_prefix(o, -1);
        }
        old
    }

    /// The subnets of `ip` that some range decision could cover.
    fn ranges_of(&self, ip: IpAddr) -> impl Iterator<Item = String> + '_ {
        let (base, max) = match ip {
            IpAddr::V4(_) => (0, 32),
            IpAddr::V6(_) => (33, 128),
        };
        (0..=max)
            .rev()
            .filter(move |len| self.prefixes.get(base + *len as usize).is_some_and(|c| *c > 0))
            .filter_map(move |len| ipnet::IpNet::new(ip, len as u8).ok().map(|n| n.trunc().to_string()))
    }
}

/// How a decision changed, as the change stream reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A decision on an entity that had none in force.
    Created,
    /// A decision replaced the one in force (renewed, escalated, overridden by hand).
    Changed,
    /// Removed by an operator.
    Deleted,
    /// Its TTL ran out.
    Expired,
}

/// One numbered change; sequence numbers have no gaps and never repeat.
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: u64,
    pub kind: ChangeKind,
    /// The decision as it is now (created/changed) or as it was (deleted/expired).
    pub decision: Arc<Decision>,
}

/// The answer to "what changed since cursor C".
#[derive(Debug)]
pub enum Since {
    /// The cursor is unknown or older than what is retained: every decision in
    /// force, as of `cursor`. The reader replaces its whole cache.
    Snapshot { cursor: u64, decisions: Vec<Arc<Decision>> },
    /// The changes after the asked cursor, in order, up to `cursor`; `more` when
    /// the limit cut them short.
    Changes { cursor: u64, changes: Vec<Change>, more: bool },
}

/// Recent changes kept for readers of the stream.
struct ChangeLog {
    /// Sequence number of the newest change (0 before the first).
    last: u64,
    entries: VecDeque<Change>,
    retention: usize,
}

impl ChangeLog {
    /// The oldest sequence number still retained (`last + 1` when none is).
    fn first(&self) -> u64 {
        self.entries.front().map(|c| c.seq).unwrap_or(self.last + 1)
    }

    fn push(&mut self, c: Change) {
        debug_assert_eq!(c.seq, self.last + 1);
        self.last = c.seq;
        self.entries.push_back(c);
        while self.entries.len() > self.retention {
            self.entries.pop_front();
        }
    }
}

/// What only the (single) writer touches.
struct Writer {
    /// `None` after a write failed: redb refuses every later transaction
    /// until the database is closed and opened again, which the next write tries.
    db: Option<redb::Database>,
    seq: u64,
    /// (expires_ms, key) of every decision held, to purge without a scan.
    expiry: BTreeSet<(i64, String)>,
    /// Keys whose published state is not on disk yet: the engine's decisions
    /// (and expiries) made while the store could not be written. Every later
    /// commit writes them too; [`LiveStore::persist_pending`] retries alone.
    unpersisted: BTreeSet<String>,
    /// Transactions written (tests count them).
    transactions: u64,
    /// After a failed write, when to try the disk again: a burst of decisions
    /// on a full disk must not make each of them open (and repair) the file.
    retry_at: Option<(std::time::Instant, String)>,
}

/// The pause between attempts to write a store that failed.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A commit's edits: key, the decision now (`None`: removed), how it changed.
type Edits = Vec<(String, Option<Arc<Decision>>, ChangeKind)>;

/// Whether a commit may be published when it cannot be written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// An operator's change: refused unless on disk, so the caller learns it
    /// did not happen.
    Required,
    /// The engine's decisions and expiries: enforced from memory at once and
    /// written when the disk allows, since a full disk must not switch
    /// detection off.
    Deferred,
}

/// Opens the store at `path`, creating it only where no file exists.
///
/// A file that exists but is empty was cut short (redb never leaves one empty
/// once created: a new store is made under another name and renamed into
/// place), and opening it would start a new store over the decisions it held
/// — every manual deny gone, without a word. It is refused instead, as a
/// damaged store is, with what to do.
fn open_db(path: &Path) -> Result<redb::Database, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => Err(format!(
            "the decision store is empty (0 bytes): it was truncated, and the decisions it held are gone. \
             Move it aside (or delete it) to start with no decisions: mv {} {}.broken",
            path.display(),
            path.display()
        )),
        Ok(_) => redb::Database::open(path).map_err(|e| {
            format!("cannot open the decision store ({e}); if it is damaged, move it aside to start with no decisions")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(format!(".{}.new", std::process::id()));
            let tmp = PathBuf::from(tmp);
            let _ = std::fs::remove_file(&tmp);
            drop(redb::Database::create(&tmp).map_err(|e| e.to_string())?);
            std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
            redb::Database::open(path).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Logs a stored decision that no longer parses and appends it, verbatim, to
/// `unreadable-decisions.jsonl` beside the store.
fn keep_unreadable(dir: &Path, key: &str, raw: &[u8], why: &str) {
    tracing::error!(
        entity = key,
        error = why,
        "a stored decision does not parse: dropped, kept in unreadable-decisions.jsonl"
    );
    let line = serde_json::json!({ "key": key, "error": why, "raw": String::from_utf8_lossy(raw) }).to_string() + "\n";
    let kept = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("unreadable-decisions.jsonl"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = kept {
        tracing::error!(error = %e, "cannot keep the unreadable decision");
    }
}

/// Changes kept for the stream unless configured otherwise.
pub const DEFAULT_RETENTION: usize = 100_000;

/// Decisions in force.
pub struct LiveStore {
    path: PathBuf,
    published: ArcSwap<Published>,
    writer: Mutex<Writer>,
    log: Mutex<ChangeLog>,
    notify: tokio::sync::watch::Sender<u64>,
}

impl LiveStore {
    /// Opens (or creates) `dir/decisions.redb` and loads the decisions still in
    /// force; those that expired while the store was closed are removed and
    /// reported as expired changes.
    pub fn open(dir: &Path, now_ms: i64) -> Result<LiveStore, StoreError> {
        Self::open_with_retention(dir, now_ms, DEFAULT_RETENTION)
    }

    /// Like [`LiveStore::open`], keeping `retention` changes for the stream.
    pub fn open_with_retention(dir: &Path, now_ms: i64, retention: usize) -> Result<LiveStore, StoreError> {
        let path = dir.join("decisions.redb");
        let err = |m: String| StoreError { path: path.clone(), message: m };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let db = open_db(&path).map_err(err)?;
        let mut published = Published::default();
        let mut expiry = BTreeSet::new();
        let mut seq = 0;
        {
            let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
            tx.open_table(DECISIONS).map_err(|e| err(e.to_string()))?;
            tx.open_table(META).map_err(|e| err(e.to_string()))?;
            tx.open_table(OFFENSES).map_err(|e| err(e.to_string()))?;
            tx.commit().map_err(|e| err(e.to_string()))?;
        }
        {
            let tx = db.begin_read().map_err(|e| err(e.to_string()))?;
            let meta = tx.open_table(META).map_err(|e| err(e.to_string()))?;
            if let Some(v) = meta.get(SEQ).map_err(|e| err(e.to_string()))? {
                seq = v.value();
            }
            let table = tx.open_table(DECISIONS).map_err(|e| err(e.to_string()))?;
            for row in table.iter().map_err(|e| err(e.to_string()))? {
                let (k, v) = row.map_err(|e| err(e.to_string()))?;
                // A row that does not parse cannot be served; it is dropped (and
                // reported as expired) rather than keeping the store from opening,
                // but never silently: it is logged and kept verbatim beside the store.
                let d = serde_json::from_slice::<Decision>(v.value()).unwrap_or_else(|e| {
                    keep_unreadable(dir, k.value(), v.value(), &e.to_string());
                    Decision {
                        id: 0,
                        entity_type: EntityType::Ip,
                        entity: k.value().to_string(),
                        action: Action::Allow,
                        reason: "unreadable record".into(),
                        source: "store".into(),
                        score: 0.0,
                        created_ms: 0,
                        expires_ms: i64::MIN,
                        offense: 0,
                        spared: Vec::new(),
                    }
                });
                expiry.insert((d.expires_ms, k.value().to_string()));
                published.insert(k.value().to_string(), Arc::new(d));
            }
        }
        let (notify, _) = tokio::sync::watch::channel(seq);
        let store = LiveStore {
            path: path.clone(),
            published: ArcSwap::from_pointee(published),
            writer: Mutex::new(Writer {
                db: Some(db),
                seq,
                expiry,
                unpersisted: BTreeSet::new(),
                transactions: 0,
                retry_at: None,
            }),
            log: Mutex::new(ChangeLog { last: seq, entries: VecDeque::new(), retention: retention.max(1) }),
            notify,
        };
        store.purge_expired(now_ms)?;
        Ok(store)
    }

    fn err(&self, m: impl ToString) -> StoreError {
        StoreError { path: self.path.clone(), message: m.to_string() }
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, Writer>, StoreError> {
        self.writer.lock().map_err(|_| self.err("writer lock poisoned"))
    }

    /// Commits `puts` and `deletes` with their sequence numbers in one
    /// transaction, then publishes them to readers and to the change log.
    /// Called with the writer lock held, so changes are numbered, stored and
    /// published in one order.
    fn commit(&self, w: &mut Writer, mut edits: Edits, durability: Durability) -> Result<Vec<Change>, StoreError> {
        {
            let current = self.published.load();
            edits.retain(|(k, d, _)| d.is_some() || current.map.contains_key(k));
        }
        if edits.is_empty() {
            return Ok(Vec::new());
        }
        let first_failure = w.unpersisted.is_empty();
        if let Err(e) = self.persist(w, &edits) {
            if durability == Durability::Required {
                return Err(e);
            }
            if first_failure {
                unwritable(&e);
            }
            w.unpersisted.extend(edits.iter().map(|(k, _, _)| k.clone()));
        }
        let mut next = (**self.published.load()).clone();
        let mut changes = Vec::with_capacity(edits.len());
        for (key, d, kind) in edits {
            let old = match &d {
                Some(d) => {
                    w.expiry.insert((d.expires_ms, key.clone()));
                    next.insert(key.clone(), d.clone())
                }
                None => next.remove(&key),
            };
            if let Some(o) = &old
                && d.as_ref().is_none_or(|d| d.expires_ms != o.expires_ms)
            {
                w.expiry.remove(&(o.expires_ms, key.clone()));
            }
            let Some(decision) = d.or(old) else { continue };
            w.seq += 1;
            changes.push(Change { seq: w.seq, kind, decision });
        }
        {
            // Publishing under the log lock makes a snapshot's cursor exact: a
            // reader sees either both the new map and its changes, or neither.
            let mut log = self.log.lock().map_err(|_| self.err("log lock poisoned"))?;
            self.published.store(Arc::new(next));
            for c in &changes {
                log.push(c.clone());
            }
        }
        self.notify.send_replace(w.seq);
        Ok(changes)
    }

    /// The open database, opening it again after a failed write.
    fn db<'w>(&self, w: &'w mut Writer) -> Result<&'w redb::Database, StoreError> {
        if w.db.is_none() {
            if let Some((at, why)) = &w.retry_at
                && std::time::Instant::now() < *at
            {
                return Err(self.err(format!("{why} (tried again every second)")));
            }
            let db = redb::Database::open(&self.path).map_err(|e| self.err(format!("cannot open again: {e}")))?;
            tracing::debug!(path = %self.path.display(), "decision store opened again after a failed write");
            w.db = Some(db);
        }
        w.db.as_ref().ok_or_else(|| self.err("not open"))
    }

    /// Writes `edits`, and every key still waiting from an earlier failure,
    /// in one transaction. On failure the database is closed (redb refuses
    /// every later transaction until it is opened again) and nothing counts
    /// as written.
    fn persist(&self, w: &mut Writer, edits: &Edits) -> Result<(), StoreError> {
        let pending: Vec<(String, Option<Arc<Decision>>)> = {
            let current = self.published.load();
            w.unpersisted
                .iter()
                .filter(|k| !edits.iter().any(|(e, _, _)| e == *k))
                .map(|k| (k.clone(), current.map.get(k).cloned()))
                .collect()
        };
        let writes = edits.iter().map(|(k, d, _)| (k, d.as_ref())).chain(pending.iter().map(|(k, d)| (k, d.as_ref())));
        let seq = w.seq + edits.len() as u64;
        let written = self.db(w).and_then(|db| write_tx(db, writes, seq).map_err(|e| self.err(e)));
        match written {
            Ok(()) => {
                w.retry_at = None;
                w.transactions += 1;
                if !w.unpersisted.is_empty() {
                    tracing::info!(decisions = w.unpersisted.len(), "decision store written again");
                    w.unpersisted.clear();
                }
                Ok(())
            }
            Err(e) => {
                w.db = None;
                w.retry_at = Some((std::time::Instant::now() + STORE_RETRY, e.message.clone()));
                Err(e)
            }
        }
    }

    /// Writes what a failed write left in memory only; returns how many keys
    /// are still waiting. Called periodically by `run`.
    pub fn persist_pending(&self) -> Result<usize, StoreError> {
        let mut w = self.writer()?;
        if w.unpersisted.is_empty() {
            return Ok(0);
        }
        match self.persist(&mut w, &Vec::new()) {
            Ok(()) => Ok(0),
            Err(e) => {
                tracing::debug!(error = %e, "decision store still cannot be written");
                Ok(w.unpersisted.len())
            }
        }
    }

    /// Decisions (and expiries) enforced but not yet on disk.
    pub fn unpersisted(&self) -> usize {
        self.writer().map(|w| w.unpersisted.len()).unwrap_or(0)
    }

    /// Persists, then publishes, a decision: it replaces whatever was in force for its entity.
    pub fn put(&self, d: Decision) -> Result<(), StoreError> {
        self.put_if(d, i64::MIN, Durability::Required, |_| true).map(|_| ())
    }

    /// Stores many decisions in one transaction: all or none.
    pub fn put_many(&self, ds: Vec<Decision>) -> Result<(), StoreError> {
        let mut w = self.writer()?;
        let current = self.published.load();
        let mut seen = std::collections::HashSet::new();
        let edits = ds
            .into_iter()
            .map(|d| {
                let key = store_key(&d);
                let in_force =
                    seen.contains(&key) || current.map.get(&key).is_some_and(|c| c.expires_ms > d.created_ms);
                seen.insert(key.clone());
                (key, Some(Arc::new(d)), if in_force { ChangeKind::Changed } else { ChangeKind::Created })
            })
            .collect();
        drop(current);
        self.commit(&mut w, edits, Durability::Required)?;
        Ok(())
    }

    /// Publishes an automatic decision unless a manual one is in force on the
    /// same entity: what an operator decided (an allow above all) is not undone
    /// by the next rule hit. Returns whether it was stored.
    pub fn put_automatic(&self, d: Decision, now_ms: i64) -> Result<bool, StoreError> {
        self.put_if(d, now_ms, Durability::Deferred, Self::not_manual)
    }

    /// [`LiveStore::put_automatic`] for the engine's decisions of a round,
    /// in one commit (one fsync): one per decision held the engine to the
    /// disk's pace, a few thousand decisions a second here and a few hundred
    /// on a slow volume, fewer than an attack across many addresses makes.
    /// Returns how many were stored.
    pub fn put_automatic_many(&self, ds: Vec<Decision>, now_ms: i64) -> Result<usize, StoreError> {
        let mut w = self.writer()?;
        let edits: Edits = {
            let current = self.published.load();
            let mut held: std::collections::HashSet<String> = std::collections::HashSet::new();
            ds.into_iter()
                .filter_map(|d| {
                    let key = store_key(&d);
                    let cur = current.map.get(&key).filter(|c| c.expires_ms > now_ms);
                    if !Self::not_manual(cur.map(|c| &**c)) {
                        return None;
                    }
                    let kind =
                        if cur.is_some() || held.contains(&key) { ChangeKind::Changed } else { ChangeKind::Created };
                    held.insert(key.clone());
                    Some((key, Some(Arc::new(d)), kind))
                })
                .collect()
        };
        let n = edits.len();
        self.commit(&mut w, edits, Durability::Deferred)?;
        Ok(n)
    }

    fn not_manual(cur: Option<&Decision>) -> bool {
        !cur.is_some_and(|c| c.source.starts_with("manual:"))
    }

    /// Stores `d` if `allowed` accepts the decision in force on its entity (checked
    /// under the writer lock, so no other write slips in between).
    fn put_if(
        &self,
        d: Decision,
        now_ms: i64,
        durability: Durability,
        allowed: impl Fn(Option<&Decision>) -> bool,
    ) -> Result<bool, StoreError> {
        let key = store_key(&d);
        let mut w = self.writer()?;
        let cur = self.published.load().map.get(&key).cloned();
        let in_force = cur.as_deref().filter(|c| c.expires_ms > now_ms);
        if !allowed(in_force) {
            return Ok(false);
        }
        let kind = if in_force.is_some() { ChangeKind::Changed } else { ChangeKind::Created };
        self.commit(&mut w, vec![(key, Some(Arc::new(d)), kind)], durability)?;
        Ok(true)
    }

    /// Removes the decision on an entity; returns it if there was one.
    pub fn remove(&self, t: EntityType, entity: &str) -> Result<Option<Arc<Decision>>, StoreError> {
        let key = key_of(t, entity);
        let mut w = self.writer()?;
        if !self.published.load().map.contains_key(&key) {
            return Ok(None);
        }
        let changes = self.commit(&mut w, vec![(key, None, ChangeKind::Deleted)], Durability::Required)?;
        Ok(changes.into_iter().next().map(|c| c.decision))
    }

    /// Drops expired decisions from memory and disk, reporting each as expired.
    pub fn purge_expired(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut w = self.writer()?;
        let due: Vec<String> =
            w.expiry.range(..(now_ms.saturating_add(1), String::new())).map(|(_, k)| k.clone()).collect();
        let edits: Vec<_> = due.into_iter().map(|k| (k, None, ChangeKind::Expired)).collect();
        Ok(self.commit(&mut w, edits, Durability::Deferred)?.len())
    }

    /// Offences recorded since `since_ms`: (entity type, entity, count, when).
    /// Older ones are deleted: they no longer count towards escalation.
    pub fn offenses(&self, since_ms: i64) -> Result<Vec<(EntityType, String, u32, i64)>, StoreError> {
        let mut w = self.writer()?;
        let tx = self.db(&mut w)?.begin_write().map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        {
            let mut t = tx.open_table(OFFENSES).map_err(|e| self.err(e))?;
            let mut old = Vec::new();
            for row in t.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                let (count, at) = v.value();
                let parsed =
                    k.value().split_once('\u{1f}').and_then(|(t, e)| EntityType::parse_decided(t).map(|t| (t, e)));
                match parsed {
                    Some((t, e)) if at >= since_ms => out.push((t, e.to_string(), count, at)),
                    _ => old.push(k.value().to_string()),
                }
            }
            for k in old {
                t.remove(k.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// The largest decision id held (0 when empty).
    pub fn max_id(&self) -> u64 {
        self.published.load().map.values().map(|d| d.id).max().unwrap_or(0)
    }

    /// Decisions in force at `now_ms`.
    pub fn active(&self, now_ms: i64) -> Vec<Arc<Decision>> {
        active_in(&self.published.load().map, now_ms)
    }

    /// The decision in force on one entity.
    pub fn get(&self, t: EntityType, entity: &str, now_ms: i64) -> Option<Arc<Decision>> {
        self.published.load().map.get(&key_of(t, entity)).filter(|d| d.expires_ms > now_ms).cloned()
    }

    /// The sequence number of the newest change.
    pub fn cursor(&self) -> u64 {
        *self.notify.borrow()
    }

    /// Wakes when a change after the current one is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// The changes after `cursor` (at most `limit`), or a snapshot when the
    /// cursor is absent, unknown (ahead of the newest change, e.g. from before
    /// the store was wiped) or older than the retained changes (cursor 0 reads
    /// from the first change, if that is still retained).
    pub fn since(&self, cursor: Option<u64>, limit: usize, now_ms: i64) -> Result<Since, StoreError> {
        let log = self.log.lock().map_err(|_| self.err("log lock poisoned"))?;
        match cursor {
            Some(c) if c <= log.last && c + 1 >= log.first() => {
                let skip = (c + 1 - log.first()) as usize;
                let changes: Vec<Change> = log.entries.iter().skip(skip).take(limit.max(1)).cloned().collect();
                let cursor = changes.last().map(|ch| ch.seq).unwrap_or(c);
                Ok(Since::Changes { cursor, more: cursor < log.last, changes })
            }
            _ => {
                let (cursor, published) = (log.last, self.published.load_full());
                drop(log);
                Ok(Since::Snapshot { cursor, decisions: active_in(&published.map, now_ms) })
            }
        }
    }

    /// The verdict for a request: allowlists first, then a manual allow on any of
    /// its entities, then the strongest decision in force on any of them.
    pub fn lookup(&self, q: &Query<'_>, allowlist: &Allowlist, now_ms: i64) -> Verdict {
        if let Some(ip) = q.ip {
            if allowlist.allows_request(ip, q.user_agent, q.api_key) {
                return Verdict::allow();
            }
        } else if let Some(k) = q.api_key
            && allowlist.api_keys.iter().any(|a| a == k)
        {
            return Verdict::allow();
        }
        let published = self.published.load();
        let map = &published.map;
        let ip_text = q.ip.map(|ip| ip.to_string());
        let ranges: Vec<String> = q.ip.map(|ip| published.ranges_of(ip).collect()).unwrap_or_default();
        let keys = [
            (EntityType::Ip, ip_text.as_deref()),
            (EntityType::User, q.user),
            (EntityType::ApiKey, q.api_key),
            (EntityType::Device, q.device),
            (EntityType::Session, q.session),
            (EntityType::Class, q.class),
        ];
        let candidates = keys
            .into_iter()
            .filter_map(|(t, v)| v.map(|v| key_of(t, v)))
            .chain(ranges.iter().map(|r| key_of(EntityType::Cidr, r)));
        let mut best: Option<&Arc<Decision>> = None;
        for key in candidates {
            let Some(d) = map.get(&key) else { continue };
            if d.expires_ms <= now_ms || spares(d, q.ip) {
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

    /// Decisions in force on `ip` itself or on any range that contains it.
    pub fn covering(&self, ip: IpAddr, now_ms: i64) -> Vec<Arc<Decision>> {
        let published = self.published.load();
        std::iter::once(key_of(EntityType::Ip, &ip.to_string()))
            .chain(published.ranges_of(ip).map(|r| key_of(EntityType::Cidr, &r)))
            .filter_map(|k| published.map.get(&k).filter(|d| d.expires_ms > now_ms && !spares(d, Some(ip))).cloned())
            .collect()
    }
}

/// Whether `d` (a subnet decision) leaves `ip` out as a bystander.
fn spares(d: &Decision, ip: Option<IpAddr>) -> bool {
    !d.spared.is_empty() && ip.is_some_and(|ip| d.spared.contains(&ip.to_canonical()))
}

/// One transaction: each key's decision written (or removed), its offence
/// recorded, the sequence number stored.
/// Said once when the engine's decisions start waiting for the disk.
fn unwritable(e: &StoreError) {
    tracing::error!(
        error = %e,
        "decision store cannot be written: the engine's decisions are enforced from memory and \
         written when it can be (gatewatch_store_unpersisted_decisions)"
    );
}

fn write_tx<'a>(
    db: &redb::Database,
    writes: impl Iterator<Item = (&'a String, Option<&'a Arc<Decision>>)>,
    seq: u64,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let tx = db.begin_write().map_err(|x| e(&x))?;
    {
        let mut t = tx.open_table(DECISIONS).map_err(|x| e(&x))?;
        let mut offenses = tx.open_table(OFFENSES).map_err(|x| e(&x))?;
        for (key, d) in writes {
            match d {
                Some(d) => {
                    let bytes = serde_json::to_vec(&**d).map_err(|x| e(&x))?;
                    t.insert(key.as_str(), bytes.as_slice()).map_err(|x| e(&x))?;
                    if d.offense > 0 {
                        offenses.insert(key.as_str(), (d.offense, d.created_ms)).map_err(|x| e(&x))?;
                    }
                }
                None => {
                    t.remove(key.as_str()).map_err(|x| e(&x))?;
                }
            }
        }
        let mut meta = tx.open_table(META).map_err(|x| e(&x))?;
        meta.insert(SEQ, seq).map_err(|x| e(&x))?;
    }
    tx.commit().map_err(|x| e(&x))
}

fn active_in(map: &Map, now_ms: i64) -> Vec<Arc<Decision>> {
    let mut v: Vec<_> = map.values().filter(|d| d.expires_ms > now_ms).cloned().collect();
    v.sort_by_key(|d| d.id);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: u64, t: EntityType, e: &str, action: Action, expires: i64) -> Decision {
        Decision {
            id,
            entity_type: t,
            entity: e.into(),
            action,
            reason: "r".into(),
            source: "rule:x".into(),
            score: 1.0,
            created_ms: 0,
            expires_ms: expires,
            offense: 0,
            spared: Vec::new(),
        }
    }

    /// The real full disk is in `tests/drills.rs`; here the file is replaced
    /// by a directory, so that neither writing nor opening it again works.
    #[test]
    fn a_store_that_cannot_be_written_still_enforces_the_engines_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let s = LiveStore::open(dir.path(), 0).unwrap();
        let path = dir.path().join("decisions.redb");
        s.writer().unwrap().db = None;
        std::fs::rename(&path, dir.path().join("aside")).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(s.put_automatic(d(1, EntityType::Ip, "203.0.113.7", Action::Deny, 10_000), 0).unwrap());
        assert_eq!(s.get(EntityType::Ip, "203.0.113.7", 0).map(|d| d.action), Some(Action::Deny), "enforced");
        assert_eq!(s.unpersisted(), 1);
        let round = vec![d(3, EntityType::Ip, "203.0.113.8", Action::Deny, 10_000)];
        assert_eq!(s.put_automatic_many(round, 0).unwrap(), 1, "a round's decisions too");
        assert_eq!(s.unpersisted(), 2, "and they wait with the others");
        assert_eq!(s.get(EntityType::Ip, "203.0.113.8", 0).map(|d| d.action), Some(Action::Deny), "enforced");
        let e = s
            .put(d(2, EntityType::User, "alice", Action::Deny, 10_000))
            .expect_err("an operator's change needs the disk");
        assert!(e.to_string().contains("decisions.redb"), "{e}");
        assert!(s.get(EntityType::User, "alice", 0).is_none(), "and is not made without it");
        assert_eq!(s.persist_pending().unwrap(), 2, "still waiting");
        // Room again, and the pause between attempts over.
        std::fs::remove_dir(&path).unwrap();
        std::fs::rename(dir.path().join("aside"), &path).unwrap();
        s.writer().unwrap().retry_at = None;
        assert_eq!(s.persist_pending().unwrap(), 0);
        drop(s);
        let s = LiveStore::open(dir.path(), 0).unwrap();
        assert_eq!(s.get(EntityType::Ip, "203.0.113.7", 0).map(|d| d.id), Some(1), "written once it could be");
        assert_eq!(s.get(EntityType::Ip, "203.0.113.8", 0).map(|d| d.id), Some(3));
    }

    /// An attack across many addresses makes thousands of decisions a
    /// second; written one transaction (one fsync) each, they held the
    /// engine to the disk's pace.
    #[test]
    fn the_engines_decisions_of_a_round_share_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = LiveStore::open(dir.path(), 0).unwrap();
        let addr = |i: u64| format!("10.0.{}.{}", i / 256, i % 256);
        // An operator's allow on one of the addresses outranks the engine.
        let mut manual = d(1, EntityType::Ip, &addr(7), Action::Allow, 10_000);
        manual.source = "manual:ops".into();
        s.put(manual).unwrap();
        let before = s.writer().unwrap().transactions;
        let mut round: Vec<Decision> =
            (0..600).map(|i| d(i + 10, EntityType::Ip, &addr(i), Action::Deny, 10_000)).collect();
        // The same entity twice in a round: the later decision stands.
        round.push(d(700, EntityType::Ip, &addr(3), Action::Challenge, 20_000));
        let cursor = s.cursor();
        assert_eq!(s.put_automatic_many(round, 0).unwrap(), 600, "all but the one an operator decided");
        assert_eq!(s.writer().unwrap().transactions, before + 1, "one transaction for the round");
        assert_eq!(s.get(EntityType::Ip, &addr(599), 0).map(|d| d.id), Some(609), "enforced");
        assert_eq!(s.get(EntityType::Ip, &addr(7), 0).map(|d| d.action), Some(Action::Allow));
        match s.since(Some(cursor), 1000, 0).unwrap() {
            Since::Changes { changes, .. } => assert_eq!(changes.len(), 600, "each on the change stream"),
            Since::Snapshot { .. } => panic!("the changes are retained"),
        }
        drop(s);
        let s = LiveStore::open(dir.path(), 0).unwrap();
        assert_eq!(s.active(0).len(), 600, "every decision written");
        assert_eq!(s.get(EntityType::Ip, &addr(3), 0).map(|d| d.id), Some(700));
        assert_eq!(s.get(EntityType::Ip, &addr(7), 0).map(|d| d.action), Some(Action::Allow));
    }

    #[test]
    fn a_truncated_store_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let s = LiveStore::open(dir.path(), 0).unwrap();
        s.put(d(1, EntityType::User, "mallory", Action::Deny, 10_000)).unwrap();
        drop(s);
        let path = dir.path().join("decisions.redb");
        std::fs::File::create(&path).unwrap();
        let e = LiveStore::open(dir.path(), 0).err().expect("an empty store is an error");
        assert!(e.to_string().contains("truncated") && e.to_string().contains("decisions.redb"), "{e}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "the evidence is left as it was");
        // Moved aside, as the message says: a new store starts.
        std::fs::rename(&path, dir.path().join("decisions.redb.broken")).unwrap();
        assert!(LiveStore::open(dir.path(), 0).unwrap().active(0).is_empty());
        assert!(!dir.path().read_dir().unwrap().any(|f| f.unwrap().file_name().to_string_lossy().ends_with(".new")));
    }

    #[test]
    fn an_unreadable_record_is_kept_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let s = LiveStore::open(dir.path(), 0).unwrap();
        s.put(d(1, EntityType::User, "alice", Action::Deny, 10_000)).unwrap();
        s.put(d(2, EntityType::User, "bob", Action::Deny, 10_000)).unwrap();
        {
            let w = s.writer().unwrap();
            let tx = w.db.as_ref().unwrap().begin_write().unwrap();
            tx.open_table(DECISIONS)
                .unwrap()
                .insert(key_of(EntityType::User, "bob").as_str(), b"{\"id\":2,\"entity\":".as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        drop(s);
        let s = LiveStore::open(dir.path(), 0).unwrap();
        assert_eq!(s.active(0).len(), 1, "alice stays");
        let kept = std::fs::read_to_string(dir.path().join("unreadable-decisions.jsonl")).expect("kept");
        let v: serde_json::Value = serde_json::from_str(kept.trim()).unwrap();
        assert_eq!(v["key"], key_of(EntityType::User, "bob"));
        assert_eq!(v["raw"], "{\"id\":2,\"entity\":");
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
        // A subnet decision's spared bystander is not covered by it, and
        // still answers for decisions of its own; its neighbours are covered.
        let range = Decision {
            spared: vec!["203.0.113.14".parse().unwrap()],
            ..d(5, EntityType::Cidr, "203.0.113.0/24", Action::Deny, 10_000)
        };
        s.put(range).unwrap();
        assert_eq!(s.lookup(&q("203.0.113.14", None), &none, 150).action, Action::Allow);
        assert_eq!(s.lookup(&q("::ffff:203.0.113.14", None), &none, 150).action, Action::Allow);
        assert_eq!(s.lookup(&q("203.0.113.15", None), &none, 150).action, Action::Deny);
        assert!(s.covering("203.0.113.14".parse().unwrap(), 150).is_empty());
        assert_eq!(s.covering("203.0.113.15".parse().unwrap(), 150).len(), 1);
        s.put(d(6, EntityType::User, "carol", Action::Challenge, 10_000)).unwrap();
        assert_eq!(s.lookup(&q("203.0.113.14", Some("carol")), &none, 150).action, Action::Challenge);
        // A decision on a request class covers that class from any address,
        // an address never seen included, and nothing else; an allowlisted
        // address is still let through.
        s.put(d(7, EntityType::Class, "bare-login", Action::Challenge, 10_000)).unwrap();
        let bare = |ip: &str| Query { ip: ip.parse().ok(), class: Some("bare-login"), ..Default::default() };
        let v = s.lookup(&bare("192.0.2.200"), &none, 150);
        assert_eq!((v.action, v.decision_id), (Action::Challenge, Some(7)));
        assert_eq!(s.lookup(&q("192.0.2.200", None), &none, 150).action, Action::Allow);
        let trusted = Allowlist { cidrs: vec!["192.0.2.0/24".parse().unwrap()], ..Default::default() };
        assert_eq!(s.lookup(&bare("192.0.2.200"), &trusted, 150).action, Action::Allow);
    }

    fn apply(cache: &mut std::collections::HashMap<String, Decision>, since: Since, seen: &mut Vec<u64>) -> u64 {
        match since {
            Since::Snapshot { cursor, decisions } => {
                cache.clear();
                for d in decisions {
                    cache.insert(store_key(&d), (*d).clone());
                }
                cursor
            }
            Since::Changes { cursor, changes, .. } => {
                for c in changes {
                    seen.push(c.seq);
                    match c.kind {
                        ChangeKind::Created | ChangeKind::Changed => {
                            cache.insert(store_key(&c.decision), (*c.decision).clone());
                        }
                        ChangeKind::Deleted | ChangeKind::Expired => {
                            cache.remove(&store_key(&c.decision));
                        }
                    }
                }
                cursor
            }
        }
    }

    #[test]
    fn change_log_numbers_every_change_and_snapshots_out_of_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = LiveStore::open_with_retention(dir.path(), 0, 4).unwrap();
        assert!(matches!(s.since(None, 10, 0).unwrap(), Since::Snapshot { cursor: 0, .. }));
        s.put(d(1, EntityType::Ip, "192.0.2.1", Action::Deny, 1_000)).unwrap();
        s.put(d(2, EntityType::Ip, "192.0.2.1", Action::Deny, 2_000)).unwrap();
        s.put(d(3, EntityType::User, "bob", Action::Challenge, 500)).unwrap();
        assert!(s.remove(EntityType::User, "nobody").unwrap().is_none(), "no change for a missing entity");
        let Since::Changes { cursor, changes, more } = s.since(Some(1), 10, 0).unwrap() else { panic!("changes") };
        assert_eq!((cursor, more), (3, false));
        let kinds: Vec<_> = changes.iter().map(|c| (c.seq, c.kind)).collect();
        assert_eq!(kinds, vec![(2, ChangeKind::Changed), (3, ChangeKind::Created)]);
        assert_eq!(s.purge_expired(600).unwrap(), 1);
        let Since::Changes { changes, .. } = s.since(Some(3), 10, 600).unwrap() else { panic!("changes") };
        assert_eq!(
            (changes[0].seq, changes[0].kind, changes[0].decision.entity.as_str()),
            (4, ChangeKind::Expired, "bob")
        );
        // The limit pages through.
        let Since::Changes { cursor, changes, more } = s.since(Some(1), 1, 600).unwrap() else { panic!("changes") };
        assert_eq!((cursor, changes.len(), more), (2, 1, true));
        // Up to date: nothing, same cursor.
        let Since::Changes { cursor, changes, .. } = s.since(Some(4), 10, 600).unwrap() else { panic!("changes") };
        assert_eq!((cursor, changes.len()), (4, 0));
        // Push seq 1 out of the 4 retained: cursor 0 or 1 now gets a snapshot; so does one from the future.
        s.remove(EntityType::Ip, "192.0.2.1").unwrap();
        assert!(matches!(s.since(Some(1), 10, 600).unwrap(), Since::Changes { .. }), "seq 2.. still retained");
        s.put(d(5, EntityType::Device, "d1", Action::Deny, 9_000)).unwrap();
        assert!(matches!(s.since(Some(1), 10, 600).unwrap(), Since::Snapshot { cursor: 6, .. }));
        assert!(matches!(s.since(Some(99), 10, 600).unwrap(), Since::Snapshot { cursor: 6, .. }));
        drop(s);
        // The sequence survives a restart; a cursor from before it gets a snapshot.
        let s = LiveStore::open_with_retention(dir.path(), 600, 4).unwrap();
        assert_eq!(s.cursor(), 6);
        let Since::Snapshot { decisions, .. } = s.since(Some(5), 10, 600).unwrap() else { panic!("snapshot") };
        assert_eq!(decisions.len(), 1);
        let Since::Changes { changes, .. } = s.since(Some(6), 10, 600).unwrap() else { panic!("changes") };
        assert!(changes.is_empty());
    }

    #[test]
    fn concurrent_writers_a_follower_misses_nothing_and_sees_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LiveStore::open(dir.path(), 0).unwrap());
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..150u64 {
                        let e = format!("10.{w}.0.{}", i % 37);
                        if i % 5 == 4 {
                            s.remove(EntityType::Ip, &e).unwrap();
                        } else {
                            s.put(d(w * 1000 + i, EntityType::Ip, &e, Action::Deny, 1_000_000 + i as i64)).unwrap();
                        }
                    }
                })
            })
            .collect();
        let mut cache = std::collections::HashMap::new();
        let mut seen = Vec::new();
        let mut cursor = apply(&mut cache, s.since(None, 7, 0).unwrap(), &mut seen);
        while writers.iter().any(|w| !w.is_finished()) {
            cursor = apply(&mut cache, s.since(Some(cursor).filter(|c| *c > 0), 7, 0).unwrap(), &mut seen);
        }
        for w in writers {
            w.join().unwrap();
        }
        loop {
            let since = s.since(Some(cursor).filter(|c| *c > 0), 7, 0).unwrap();
            let done = matches!(&since, Since::Changes { more: false, .. });
            cursor = apply(&mut cache, since, &mut seen);
            if done {
                break;
            }
        }
        assert_eq!(cursor, s.cursor());
        let first = seen.first().copied().unwrap_or(cursor + 1);
        assert_eq!(seen, (first..=cursor).collect::<Vec<_>>(), "consecutive, no gap, no repeat");
        let truth: std::collections::HashMap<_, _> =
            s.active(0).iter().map(|d| (store_key(d), (**d).clone())).collect();
        assert_eq!(cache, truth);
    }

    #[test]
    fn ranges_of_any_prefix_match() {
        let dir = tempfile::tempdir().unwrap();
        let s = LiveStore::open(dir.path(), 0).unwrap();
        let none = Allowlist::default();
        s.put(d(1, EntityType::Cidr, "198.18.0.0/15", Action::Deny, 10_000)).unwrap();
        let q = |ip: &str| Query { ip: ip.parse().ok(), ..Default::default() };
        assert_eq!(s.lookup(&q("198.19.4.4"), &none, 0).action, Action::Deny);
        assert_eq!(s.lookup(&q("198.20.4.4"), &none, 0).action, Action::Allow);
        assert_eq!(s.covering("198.19.4.4".parse().unwrap(), 0).len(), 1);
        s.remove(EntityType::Cidr, "198.18.0.0/15").unwrap();
        assert_eq!(s.lookup(&q("198.19.4.4"), &none, 0).action, Action::Allow);
    }
}
