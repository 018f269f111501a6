//! `run --role api`: the decisions in force, read from the decisions topic
//! instead of made here, so that any number of API instances behind a load
//! balancer answer alike.
//!
//! The topic is read from its start on every start — last value per key
//! wins, a tombstone ends the decision it names — and nothing relies on the
//! broker having compacted it. The instance is ready once every partition
//! has been read to its end; from then on each record is applied as it
//! arrives. Manual decisions outrank automatic ones exactly as in a single
//! instance ([`LiveStore::put_automatic`]), and a tombstone removes a
//! decision only when it names the one held: a lift that crosses a newer
//! decision on the same entity does not undo it.
//!
//! The engines also publish there the digests of the sessions they saw
//! opened ([`crate::sink::kafka`]); a feed given a registry
//! ([`DecisionFeed::fill_opened_sessions`]) fills it from them as it reads,
//! so that the API tells a made-up session id from a real one whichever
//! engine saw it opened.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::LiveStore;
use super::store::StoreError;
use crate::decision::Decision;
use crate::features::EntityType;
use crate::metrics::Metrics;
use crate::sessions::{OpenedSessions, decode_digests};
use crate::sink::SinkError;
use crate::sink::kafka::{DECISION_ID_HEADER, KafkaSinkSpec, OPENED_SESSIONS, RECORD_HEADER, client_error};

/// One record of the decisions topic, read.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A decision on its entity.
    Put(Decision),
    /// A tombstone: the decision `id` on the entity ended (any decision when
    /// the tombstone names none).
    Lift { entity_type: EntityType, entity: String, id: Option<u64> },
    /// The digests of sessions an engine saw opened ([`crate::sessions`]).
    Opened(Vec<u64>),
}

/// Reads a record from its key, payload (`None`: a tombstone), the
/// tombstone's `decision_id` header and the `record` header (what a record
/// that is not a decision holds).
pub fn read_record(
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    id: Option<&[u8]>,
    record: Option<&[u8]>,
) -> Result<Record, String> {
    if let Some(kind) = record {
        return match kind {
            k if k == OPENED_SESSIONS.as_bytes() => decode_digests(payload.unwrap_or_default())
                .map(Record::Opened)
                .ok_or_else(|| "opened sessions: the payload is not whole digests of eight bytes".to_string()),
            k => Err(format!("unknown {RECORD_HEADER} '{}'", String::from_utf8_lossy(k))),
        };
    }
    match payload {
        Some(p) if !p.is_empty() => {
            let d: Decision = serde_json::from_slice(p).map_err(|e| format!("not a decision: {e}"))?;
            Ok(Record::Put(d))
        }
        _ => {
            let key = key.ok_or("a tombstone without a key")?;
            let key = std::str::from_utf8(key).map_err(|_| "a key that is not UTF-8".to_string())?;
            let (t, entity) = key.split_once(':').ok_or_else(|| format!("key '{key}' is not entity_type:entity"))?;
            let entity_type =
                EntityType::parse_decided(t).ok_or_else(|| format!("key '{key}': unknown entity type"))?;
            let id = match id {
                None => None,
                Some(v) => Some(
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| format!("key '{key}': {DECISION_ID_HEADER} is not a number"))?,
                ),
            };
            Ok(Record::Lift { entity_type, entity: entity.to_string(), id })
        }
    }
}

fn is_manual(d: &Decision) -> bool {
    d.source.starts_with("manual:")
}

/// Whether a tombstone naming decision `id` (any, when `None`) ends `held`.
fn ends(held: &Decision, id: Option<u64>) -> bool {
    id.is_none_or(|id| held.id == id)
}

/// The most decisions from the topic stored in one commit ([`DecisionFeed::follow`]).
const ROUND: usize = 4096;
/// How long a decision from the topic may wait for others to share its commit.
const ROUND_WAIT: Duration = Duration::from_millis(50);

/// The topic read from its start: the last decision per entity.
#[derive(Default)]
pub struct Latest {
    map: HashMap<(EntityType, String), Decision>,
}

impl Latest {
    /// Applies a record as [`apply_to_store`] would, judging whether a
    /// manual decision is in force at `now_ms`.
    pub fn apply(&mut self, r: Record, now_ms: i64) {
        match r {
            Record::Put(d) => {
                let key = (d.entity_type, d.entity.clone());
                let held = self.map.get(&key);
                let manual_in_force = held.is_some_and(|c| is_manual(c) && c.expires_ms > now_ms);
                // The same id is the same decision made again (an engine that
                // re-read lines another had judged): the first one stands.
                let again = held.is_some_and(|c| c.id == d.id);
                if !again && (is_manual(&d) || !manual_in_force) {
                    self.map.insert(key, d);
                }
            }
            Record::Lift { entity_type, entity, id } => {
                let key = (entity_type, entity);
                if self.map.get(&key).is_some_and(|c| ends(c, id)) {
                    self.map.remove(&key);
                }
            }
            Record::Opened(_) => {}
        }
    }

    /// The decisions still in force at `now_ms`.
    pub fn in_force(self, now_ms: i64) -> Vec<Decision> {
        self.map.into_values().filter(|d| d.expires_ms > now_ms).collect()
    }
}

/// A decision (read from the topic, [`super::learn`], or from this engine's
/// store after a restart) as an engine's decision memory takes it; `None`
/// for a manual decision, which is not the engine's (it outranks the
/// engine's where decisions are served).
pub fn restored(d: &Decision) -> Option<crate::decision::Restored<'_>> {
    (!is_manual(d)).then_some(crate::decision::Restored {
        entity_type: d.entity_type,
        entity: &d.entity,
        action: d.action,
        created_ms: d.created_ms,
        expires_ms: d.expires_ms,
        offense: d.offense,
        spared: &d.spared,
    })
}

/// What a record did to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Stored,
    Removed,
    /// Already so, expired, or outranked by a manual decision.
    Unchanged,
}

/// Whether `d` changes nothing: expired, held already, or the same decision
/// made again (same id, see `Latest::apply`).
fn nothing_new(store: &LiveStore, d: &Decision, now_ms: i64) -> bool {
    d.expires_ms <= now_ms || store.get(d.entity_type, &d.entity, now_ms).is_some_and(|c| c.id == d.id)
}

/// Applies one record to the store the API serves.
pub fn apply_to_store(store: &LiveStore, r: Record, now_ms: i64) -> Result<Applied, StoreError> {
    match r {
        Record::Put(d) => {
            if nothing_new(store, &d, now_ms) {
                return Ok(Applied::Unchanged);
            }
            if is_manual(&d) {
                store.put(d)?;
                Ok(Applied::Stored)
            } else if store.put_automatic(d, now_ms)? {
                Ok(Applied::Stored)
            } else {
                Ok(Applied::Unchanged)
            }
        }
        Record::Lift { entity_type, entity, id } => {
            let held = store.get(entity_type, &entity, now_ms);
            if held.is_some_and(|c| ends(&c, id)) {
                store.remove(entity_type, &entity)?;
                Ok(Applied::Removed)
            } else {
                Ok(Applied::Unchanged)
            }
        }
        Record::Opened(_) => Ok(Applied::Unchanged),
    }
}

/// Makes the store hold exactly `latest` (what the topic says is in force),
/// in as few commits as it takes; returns (stored, removed).
pub fn reconcile(store: &LiveStore, latest: Vec<Decision>, now_ms: i64) -> Result<(usize, usize), StoreError> {
    let wanted: HashSet<(EntityType, String)> = latest.iter().map(|d| (d.entity_type, d.entity.clone())).collect();
    let changed: Vec<Decision> = latest
        .into_iter()
        .filter(|d| store.get(d.entity_type, &d.entity, now_ms).is_none_or(|c| c.id != d.id))
        .collect();
    let stored = changed.len();
    if !changed.is_empty() {
        store.put_many(changed)?;
    }
    let mut removed = 0;
    for d in store.active(now_ms) {
        if !wanted.contains(&(d.entity_type, d.entity.clone())) {
            store.remove(d.entity_type, &d.entity)?;
            removed += 1;
        }
    }
    Ok((stored, removed))
}

/// How a read of the topic to its end ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// Every partition read to its end: the records read.
    Read(u64),
    /// Stopped first.
    Stopped,
    /// Nothing came for the whole patience: the records read until then.
    Stalled(u64),
}

/// What one poll of the topic gave.
#[derive(Debug)]
enum Polled {
    Record(Record),
    /// A record not handed on: one that does not read as one (counted and
    /// logged), or opened sessions, taken by the feed itself.
    Skipped,
    /// Nothing within the wait (or an error, logged).
    Nothing,
    /// The end of this partition.
    End(i32),
}

/// The loop of [`DecisionFeed::read_to_end_with`] over `next`, apart from
/// the consumer.
fn drain(
    partitions: usize,
    mut next: impl FnMut(Duration) -> Polled,
    stop: &AtomicBool,
    patience: Option<Duration>,
    mut each: impl FnMut(Record),
) -> ReadEnd {
    let mut ended: HashSet<i32> = HashSet::new();
    let mut records = 0u64;
    let mut heard = Instant::now();
    while ended.len() < partitions {
        if stop.load(Ordering::Relaxed) {
            return ReadEnd::Stopped;
        }
        if patience.is_some_and(|p| heard.elapsed() >= p) {
            return ReadEnd::Stalled(records);
        }
        match next(Duration::from_millis(200)) {
            Polled::Record(r) => {
                records += 1;
                heard = Instant::now();
                each(r);
            }
            // Unreadable, but the broker is there.
            Polled::Skipped => heard = Instant::now(),
            Polled::Nothing => {}
            Polled::End(p) => {
                heard = Instant::now();
                ended.insert(p);
            }
        }
    }
    ReadEnd::Read(records)
}

/// librdkafka's log lines and errors through `tracing`, as elsewhere.
pub struct FeedContext;

impl rdkafka::ClientContext for FeedContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::kafka::log_client(level, fac, message);
    }

    fn error(&self, error: RdError, reason: &str) {
        crate::kafka::log_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for FeedContext {}

/// A reader of the decisions topic (every partition, from the start, no
/// consumer group: each API instance reads all of it).
pub struct DecisionFeed {
    consumer: BaseConsumer<FeedContext>,
    topic: String,
    partitions: Vec<i32>,
    /// Per partition, the offset after the last record [`Self::follow_with`]
    /// has handed on: another thread asks whether that reaches the topic's
    /// end ([`Self::has_read`]).
    handed: Mutex<HashMap<i32, i64>>,
    /// Where the opened-session records go as they are read.
    opened: Option<Arc<OpenedSessions>>,
}

impl DecisionFeed {
    /// Assigns every partition of the sink's decisions topic from its start.
    pub fn open(spec: &KafkaSinkSpec) -> Result<DecisionFeed, SinkError> {
        let topic = spec
            .decisions_topic
            .clone()
            .ok_or_else(|| client_error(spec, "the kafka sink names no decisions_topic to read"))?;
        // librdkafka wants a group even for assigned partitions; this one never
        // joins (no subscribe) and never commits, so it is private to the process.
        let group = format!("gatewatch-api-{}-{}", std::process::id(), crate::event::time::now_ms());
        let consumer: BaseConsumer<FeedContext> = spec
            .client
            .config(&[
                ("group.id", group.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
            ])
            .create_with_context(FeedContext)
            .map_err(|e| client_error(spec, e))?;
        let meta = crate::kafka::fetch_metadata_patiently(consumer.client(), &topic)
            .map_err(|e| client_error(spec, format!("{topic}: {e}")))?;
        let partitions: Vec<i32> = meta
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(client_error(spec, format!("{topic}: no partitions (does the topic exist?)")));
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning).map_err(|e| client_error(spec, e))?;
        }
        consumer.assign(&tpl).map_err(|e| client_error(spec, e))?;
        Ok(DecisionFeed { consumer, topic, partitions, handed: Mutex::default(), opened: None })
    }

    /// Puts the opened-session records read from now on into `to`: the
    /// feed takes them as it reads, so they never wait behind the decisions
    /// or in a queue, and are not handed on.
    pub fn fill_opened_sessions(&mut self, to: Arc<OpenedSessions>) {
        self.opened = Some(to);
    }

    /// What came within `wait`, and the partition and offset of a message.
    fn next_at(&self, wait: Duration, metrics: &Metrics) -> (Polled, Option<(i32, i64)>) {
        match self.consumer.poll(wait) {
            None => (Polled::Nothing, None),
            Some(Err(RdError::PartitionEOF(p))) => (Polled::End(p), None),
            Some(Err(e)) => {
                tracing::warn!(topic = %self.topic, error = %e, "reading the decisions topic");
                (Polled::Nothing, None)
            }
            Some(Ok(m)) => {
                let at = Some((m.partition(), m.offset()));
                let header =
                    |name: &str| m.headers().and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value));
                let polled = match read_record(m.key(), m.payload(), header(DECISION_ID_HEADER), header(RECORD_HEADER))
                {
                    Ok(Record::Opened(digests)) => {
                        if let Some(to) = &self.opened {
                            to.insert_digests(digests);
                        }
                        metrics.feed_records.with_label_values(&["opened_sessions"]).inc();
                        Polled::Skipped
                    }
                    Ok(r) => Polled::Record(r),
                    Err(why) => {
                        metrics.feed_records.with_label_values(&["unreadable"]).inc();
                        tracing::warn!(
                            topic = %self.topic,
                            partition = m.partition(),
                            offset = m.offset(),
                            "decisions topic: record skipped: {why}"
                        );
                        Polled::Skipped
                    }
                };
                (polled, at)
            }
        }
    }

    /// Each partition's first and next offsets at the brokers now (the
    /// topic's end as of this call); `None` if they do not answer in `wait`.
    pub fn ends(&self, wait: Duration) -> Option<Vec<(i32, i64, i64)>> {
        self.partitions
            .iter()
            .map(|&p| self.consumer.fetch_watermarks(&self.topic, p, wait).ok().map(|(low, high)| (p, low, high)))
            .collect()
    }

    fn note_handed(&self, partition: i32, offset: i64) {
        let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        let h = handed.entry(partition).or_insert(offset + 1);
        *h = (*h).max(offset + 1);
    }

    /// Whether every record before `ends` has been handed on.
    pub fn has_read(&self, ends: &[(i32, i64, i64)]) -> bool {
        let handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        ends.iter().all(|(p, low, high)| high <= low || handed.get(p).is_some_and(|h| h >= high))
    }

    /// Hands every record to `each` until every partition has been read to
    /// its end, `stop` is set, or (with `patience`) the topic gives nothing
    /// — no record, no partition's end — for that long: a broker that
    /// vanished mid-read would otherwise hold the caller forever.
    pub fn read_to_end_with(
        &self,
        metrics: &Metrics,
        stop: &AtomicBool,
        patience: Option<Duration>,
        each: impl FnMut(Record),
    ) -> ReadEnd {
        // Noted before `each` sees the record: on this thread, which is the
        // one that asks (an engine starting), nothing runs in between.
        let next = |wait| {
            let (polled, at) = self.next_at(wait, metrics);
            if let Some((p, offset)) = at {
                self.note_handed(p, offset);
            }
            polled
        };
        drain(self.partitions.len(), next, stop, patience, each)
    }

    /// Reads every partition to its end: the last decision per entity and the
    /// number of records read, `None` when stopped first.
    pub fn read_to_end(&self, metrics: &Metrics, stop: &AtomicBool) -> Option<(Latest, u64)> {
        let mut latest = Latest::default();
        match self.read_to_end_with(metrics, stop, None, |r| latest.apply(r, crate::event::time::now_ms())) {
            ReadEnd::Read(records) => Some((latest, records)),
            ReadEnd::Stopped | ReadEnd::Stalled(_) => None,
        }
    }

    /// Reads every partition to its end, then makes the store hold what the
    /// topic says is in force. Returns false when stopped first.
    pub fn catch_up(&self, store: &LiveStore, metrics: &Metrics, stop: &AtomicBool) -> Result<bool, StoreError> {
        let Some((latest, records)) = self.read_to_end(metrics, stop) else { return Ok(false) };
        let now = crate::event::time::now_ms();
        let (stored, removed) = reconcile(store, latest.in_force(now), now)?;
        tracing::info!(
            topic = %self.topic,
            records,
            stored,
            removed,
            in_force = store.active(now).len(),
            "decisions topic read to its end"
        );
        Ok(true)
    }

    /// Hands each record to `each` as it arrives, and `None` when the topic
    /// has nothing more at once, until `stop`.
    pub fn follow_with(&self, metrics: &Metrics, stop: &AtomicBool, mut each: impl FnMut(Option<Record>)) {
        while !stop.load(Ordering::Relaxed) {
            let (polled, at) = self.next_at(Duration::from_millis(200), metrics);
            match polled {
                Polled::Record(r) => each(Some(r)),
                Polled::Skipped => {}
                Polled::Nothing | Polled::End(_) => each(None),
            }
            if let Some((p, offset)) = at {
                self.note_handed(p, offset);
            }
        }
    }

    /// Applies records to the store as they arrive until `stop`. The
    /// engines' decisions of a burst are stored in one commit (one fsync),
    /// once the topic has nothing more at once, [`ROUND`] of them are held
    /// or the first has waited [`ROUND_WAIT`]: one commit each held an API
    /// instance to the disk's pace while an attack made thousands a second.
    /// An operator's decision or a lift is applied at once, after them.
    pub fn follow(&self, store: &LiveStore, metrics: &Metrics, stop: &AtomicBool) {
        let mut round: Vec<Decision> = Vec::new();
        let mut first = Instant::now();
        let count = |kind: &str, n: u64| metrics.feed_records.with_label_values(&[kind]).inc_by(n);
        let store_round = |round: &mut Vec<Decision>| {
            if round.is_empty() {
                return;
            }
            let n = round.len() as u64;
            match store.put_automatic_many(std::mem::take(round), crate::event::time::now_ms()) {
                Ok(stored) => {
                    count("stored", stored as u64);
                    count("unchanged", n - stored as u64);
                }
                Err(e) => {
                    metrics.store_errors.inc_by(n);
                    tracing::error!(error = %e, "decisions from the topic were not stored");
                }
            }
        };
        self.follow_with(metrics, stop, |polled| {
            let now = crate::event::time::now_ms();
            match polled {
                Some(Record::Put(d)) if !is_manual(&d) => {
                    if nothing_new(store, &d, now) {
                        count("unchanged", 1);
                    } else {
                        if round.is_empty() {
                            first = Instant::now();
                        }
                        round.push(d);
                    }
                }
                Some(r) => {
                    store_round(&mut round);
                    match apply_to_store(store, r, now) {
                        Ok(Applied::Stored) => count("stored", 1),
                        Ok(Applied::Removed) => count("removed", 1),
                        Ok(Applied::Unchanged) => count("unchanged", 1),
                        Err(e) => {
                            metrics.store_errors.inc();
                            tracing::error!(error = %e, "a decision from the topic was not stored");
                        }
                    }
                }
                None => store_round(&mut round),
            }
            if round.len() >= ROUND || first.elapsed() >= ROUND_WAIT {
                store_round(&mut round);
            }
        });
        store_round(&mut round);
    }

    /// Reads the topic on its own thread: catches up, sets `ready`, follows.
    pub fn spawn(
        self,
        store: Arc<LiveStore>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("decision-feed".into()).spawn(move || {
            match self.catch_up(&store, &metrics, &stop) {
                Ok(true) => ready.store(true, Ordering::Relaxed),
                Ok(false) => return,
                Err(e) => {
                    // Serving what the store held is better than serving nothing;
                    // the records that follow are still applied.
                    metrics.store_errors.inc();
                    tracing::error!(error = %e, "the decisions read could not all be stored");
                    ready.store(true, Ordering::Relaxed);
                }
            }
            self.follow(&store, &metrics, &stop);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Action;

    fn decision(id: u64, entity: &str, source: &str, expires_ms: i64) -> Decision {
        Decision {
            id,
            entity_type: EntityType::Ip,
            entity: entity.into(),
            action: Action::Deny,
            reason: "test".into(),
            source: source.into(),
            score: 1.0,
            created_ms: 0,
            expires_ms,
            offense: 1,
            spared: Vec::new(),
        }
    }

    /// A topic of `records` records over `partitions` partitions as `next`
    /// sees it: the records, then each partition's end, then silence when
    /// `ends` is false (a broker gone mid-read).
    fn topic(records: usize, partitions: i32, ends: bool) -> impl FnMut(Duration) -> Polled {
        let mut calls = 0usize;
        move |wait| {
            calls += 1;
            if calls <= records {
                return Polled::Record(lift("192.0.2.1", Some(calls as u64)));
            }
            let p = (calls - records - 1) as i32;
            if ends && p < partitions {
                return Polled::End(p);
            }
            std::thread::sleep(wait.min(Duration::from_millis(5)));
            Polled::Nothing
        }
    }

    #[test]
    fn a_read_to_the_end_waits_for_a_silent_topic_only_as_long_as_it_was_told() {
        let go = AtomicBool::new(false);
        let mut seen = 0;
        assert_eq!(drain(3, topic(5, 3, true), &go, Some(Duration::from_secs(60)), |_| seen += 1), ReadEnd::Read(5));
        assert_eq!(seen, 5);
        // Records, then nothing: the broker went away before the ends came.
        let patience = Duration::from_millis(50);
        assert_eq!(drain(3, topic(5, 3, false), &go, Some(patience), |_| {}), ReadEnd::Stalled(5));
        // No patience: only `stop` ends the wait.
        let stop = AtomicBool::new(false);
        let mut polls = 0;
        let next = |wait| {
            polls += 1;
            if polls == 20 {
                stop.store(true, Ordering::Relaxed);
            }
            topic(0, 1, false)(wait)
        };
        assert_eq!(drain(1, next, &stop, None, |_| {}), ReadEnd::Stopped);
        // Patience counts from the last thing heard, not from the start: a
        // slow topic that keeps giving is read to its end.
        let mut calls = 0;
        let slow = |_wait| {
            calls += 1;
            std::thread::sleep(Duration::from_millis(2));
            match calls {
                1..=20 => Polled::Record(lift("192.0.2.2", None)),
                // Records that do not read are still the broker talking.
                21..=40 => Polled::Skipped,
                41 => Polled::End(0),
                _ => Polled::Nothing,
            }
        };
        assert_eq!(drain(1, slow, &go, Some(Duration::from_millis(60)), |_| {}), ReadEnd::Read(20));
    }

    fn lift(entity: &str, id: Option<u64>) -> Record {
        Record::Lift { entity_type: EntityType::Ip, entity: entity.into(), id }
    }

    #[test]
    fn records_are_read_from_key_payload_and_header() {
        let d = decision(7, "2001:db8::1", "rule:x", 10);
        let payload = serde_json::to_vec(&d).unwrap();
        assert_eq!(read_record(Some(b"ip:2001:db8::1"), Some(&payload), None, None), Ok(Record::Put(d)));
        assert_eq!(read_record(Some(b"ip:2001:db8::1"), None, Some(b"7"), None), Ok(lift("2001:db8::1", Some(7))));
        assert_eq!(read_record(Some(b"ip:10.0.0.1"), Some(b""), None, None), Ok(lift("10.0.0.1", None)));
        assert!(read_record(Some(b"planet:x"), None, None, None).is_err());
        assert!(read_record(Some(b"ip:x"), None, Some(b"seven"), None).is_err());
        assert!(read_record(None, None, None, None).is_err());
        assert!(read_record(Some(b"ip:x"), Some(b"{"), None, None).is_err());
        let digests = crate::sessions::encode_digests(&[7, 9]);
        let opened = Some(OPENED_SESSIONS.as_bytes());
        assert_eq!(
            read_record(Some(b"opened-sessions:1:0"), Some(&digests), None, opened),
            Ok(Record::Opened(vec![7, 9]))
        );
        assert!(read_record(Some(b"opened-sessions:1:0"), Some(&digests[..5]), None, opened).is_err());
        assert!(read_record(Some(b"x"), Some(&digests), None, Some(b"planets")).is_err());
    }

    #[test]
    fn the_last_value_wins_and_a_tombstone_ends_only_the_decision_it_names() {
        let mut l = Latest::default();
        l.apply(Record::Put(decision(1, "a", "rule:x", 100)), 0);
        l.apply(Record::Put(decision(2, "a", "rule:x", 200)), 0);
        // A lift of decision 1 crossing decision 2 leaves 2 in force.
        l.apply(lift("a", Some(1)), 0);
        l.apply(Record::Put(decision(3, "b", "rule:x", 100)), 0);
        l.apply(lift("b", Some(3)), 0);
        l.apply(Record::Put(decision(4, "c", "rule:x", 100)), 0);
        l.apply(lift("c", None), 0);
        // Expired by now: not in force.
        l.apply(Record::Put(decision(5, "d", "rule:x", 50)), 0);
        let mut got: Vec<u64> = l.in_force(60).iter().map(|d| d.id).collect();
        got.sort();
        assert_eq!(got, [2]);
    }

    #[test]
    fn a_decision_made_again_by_another_engine_changes_nothing() {
        // The second engine saw one more offence, so its copy lasts longer:
        // it is still the same decision (same id), and the first one stands.
        let again = Decision { offense: 2, ..decision(7, "a", "rule:x", 900) };
        let mut l = Latest::default();
        l.apply(Record::Put(decision(7, "a", "rule:x", 500)), 0);
        l.apply(Record::Put(again.clone()), 0);
        assert_eq!(l.in_force(0).iter().map(|d| (d.id, d.expires_ms)).collect::<Vec<_>>(), [(7, 500)]);
        let dir = tempfile::tempdir().unwrap();
        let store = LiveStore::open(dir.path(), 0).unwrap();
        assert_eq!(apply_to_store(&store, Record::Put(decision(7, "a", "rule:x", 500)), 0).unwrap(), Applied::Stored);
        let cursor = store.cursor();
        assert_eq!(apply_to_store(&store, Record::Put(again), 0).unwrap(), Applied::Unchanged);
        assert_eq!(store.cursor(), cursor, "no change reaches the gateways");
        // A new decision on the entity (another id) replaces it.
        assert_eq!(apply_to_store(&store, Record::Put(decision(8, "a", "rule:x", 900)), 0).unwrap(), Applied::Stored);
    }

    #[test]
    fn a_manual_decision_outranks_an_automatic_one_until_it_ends() {
        let mut l = Latest::default();
        l.apply(Record::Put(decision(1, "a", "manual:ops", 100)), 0);
        l.apply(Record::Put(decision(2, "a", "rule:x", 200)), 10);
        assert_eq!(l.map.values().map(|d| d.id).collect::<Vec<_>>(), [1]);
        // Once the manual one has expired, the engine's next decision holds.
        l.apply(Record::Put(decision(3, "a", "rule:x", 300)), 150);
        assert_eq!(l.map.values().map(|d| d.id).collect::<Vec<_>>(), [3]);
        // A manual one replaces whatever is there.
        l.apply(Record::Put(decision(4, "a", "manual:ops", 400)), 160);
        assert_eq!(l.in_force(160).iter().map(|d| d.id).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn the_store_is_made_to_hold_what_the_topic_says() {
        let dir = tempfile::tempdir().unwrap();
        let store = LiveStore::open(dir.path(), 0).unwrap();
        store.put(decision(1, "stale", "rule:x", 1_000)).unwrap();
        store.put(decision(2, "kept", "rule:x", 1_000)).unwrap();
        let (stored, removed) =
            reconcile(&store, vec![decision(2, "kept", "rule:x", 1_000), decision(3, "new", "rule:x", 1_000)], 10)
                .unwrap();
        assert_eq!((stored, removed), (1, 1));
        let mut held: Vec<u64> = store.active(10).iter().map(|d| d.id).collect();
        held.sort();
        assert_eq!(held, [2, 3]);
        // Then record by record.
        assert_eq!(apply_to_store(&store, lift("new", Some(99)), 10).unwrap(), Applied::Unchanged);
        assert_eq!(apply_to_store(&store, lift("new", Some(3)), 10).unwrap(), Applied::Removed);
        assert_eq!(
            apply_to_store(&store, Record::Put(decision(2, "kept", "rule:x", 1_000)), 10).unwrap(),
            Applied::Unchanged
        );
        assert_eq!(
            apply_to_store(&store, Record::Put(decision(5, "m", "manual:ops", 1_000)), 10).unwrap(),
            Applied::Stored
        );
        assert_eq!(
            apply_to_store(&store, Record::Put(decision(6, "m", "rule:x", 1_000)), 10).unwrap(),
            Applied::Unchanged
        );
        assert_eq!(
            apply_to_store(&store, Record::Put(decision(7, "old", "rule:x", 5)), 10).unwrap(),
            Applied::Unchanged
        );
    }
}
