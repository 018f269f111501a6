//! Decisions and dead letters to Kafka topics: every decision keyed by its
//! entity (`entity_type:entity`, so one entity's decisions stay in order in
//! one partition and a reader keeps the last per key), and every rejected
//! line with its raw bytes as the payload and why it was rejected in the
//! headers. The producer is idempotent (no duplicate from its own retries),
//! and a checkpoint waits until everything sent is acknowledged by the
//! brokers, so a source commits its offsets only after the decisions they
//! caused are in the topic.
//!
//! When a decision it published expires, the sink publishes a tombstone for
//! its key (an empty payload, the ended decision's id in a `decision_id`
//! header) through the same producer, so the tombstone can never overtake a
//! newer decision on the same entity: a compacted topic forgets what no
//! longer holds, and a reader (`run --role api`, [`crate::live::feed`])
//! removes a decision only when the id matches the one it holds.

use std::collections::{BTreeSet, HashMap};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::{DeadLetter, Sink, SinkError, Wants};
use crate::decision::Decision;
use crate::features::EntityType;
use crate::kafka::{Deliveries, KafkaClient};
use crate::source::Position;

/// The header of a tombstone naming the decision it ends.
pub const DECISION_ID_HEADER: &str = "decision_id";

/// The key of an entity's decisions: `entity_type:entity` (an entity may
/// hold colons, an IPv6 address does; the type never does).
pub fn decision_key(t: EntityType, entity: &str) -> String {
    format!("{}:{}", t.as_str(), entity)
}

/// Decisions tracked for their expiry tombstone at most; past it, the
/// earliest to expire go untracked (a reader still ignores an expired
/// decision; only the topic's compaction misses them).
const MAX_TRACKED: usize = 1 << 20;

/// The decisions published and not yet ended, by expiry: what needs a
/// tombstone, and when.
#[derive(Default)]
pub struct ExpiryTracker {
    by_key: HashMap<String, (u64, i64)>,
    by_expiry: BTreeSet<(i64, String)>,
}

impl ExpiryTracker {
    /// `key` now holds decision `id` until `expires_ms` (a newer decision on
    /// the key replaces the older one's tombstone).
    pub fn track(&mut self, key: String, id: u64, expires_ms: i64) {
        if let Some((_, old)) = self.by_key.insert(key.clone(), (id, expires_ms)) {
            self.by_expiry.remove(&(old, key.clone()));
        }
        self.by_expiry.insert((expires_ms, key));
        while self.by_key.len() > MAX_TRACKED {
            let Some((_, k)) = self.by_expiry.pop_first() else { break };
            self.by_key.remove(&k);
        }
    }

    /// Stops tracking `key` (its decision was lifted and tombstoned).
    pub fn forget(&mut self, key: &str) {
        if let Some((_, expires)) = self.by_key.remove(key) {
            self.by_expiry.remove(&(expires, key.to_string()));
        }
    }

    /// The (key, id) of every decision expired at `now_ms`, no longer tracked.
    pub fn expired(&mut self, now_ms: i64) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while let Some((expires, _)) = self.by_expiry.first() {
            if *expires > now_ms {
                break;
            }
            let Some((_, key)) = self.by_expiry.pop_first() else { break };
            if let Some((id, _)) = self.by_key.remove(&key) {
                out.push((key, id));
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The headers of a tombstone for decision `id`.
pub fn tombstone_headers(id: u64) -> OwnedHeaders {
    let id = id.to_string();
    OwnedHeaders::new().insert(Header { key: DECISION_ID_HEADER, value: Some(id.as_str()) })
}

/// A `[[sinks]] type = "kafka"` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSinkSpec {
    pub client: KafkaClient,
    /// Where decisions go (`None`: not written).
    pub decisions_topic: Option<String>,
    /// Where dead letters go (`None`: not written).
    pub dead_letters_topic: Option<String>,
    /// Longest a checkpoint waits for the brokers to acknowledge what was sent.
    pub flush_timeout_ms: u64,
}

impl KafkaSinkSpec {
    pub const DEFAULT_FLUSH_TIMEOUT_MS: u64 = 10_000;
}

/// The Kafka sink (see the module documentation).
pub struct KafkaSink {
    producer: BaseProducer<Deliveries>,
    spec: KafkaSinkSpec,
    /// Failures already reported as an error.
    reported: u64,
    buf: Vec<u8>,
    /// What needs a tombstone when it expires.
    expiring: ExpiryTracker,
}

pub(crate) fn client_error(spec: &KafkaSinkSpec, e: impl std::fmt::Display) -> SinkError {
    SinkError::Kafka(crate::kafka::KafkaError::Client { brokers: spec.client.brokers.clone(), message: e.to_string() })
}

/// Creates `topic` (one partition) when the brokers do not know it, so that a
/// first run does not wait on a topic nobody made; where it exists (or the
/// cluster makes topics itself), nothing changes.
pub(crate) fn ensure_topic(
    client: &rdkafka::client::Client<Deliveries>,
    spec: &KafkaSinkSpec,
    topic: &str,
) -> Result<(), SinkError> {
    let meta = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| client_error(spec, format!("{topic}: {e}")))?;
    let missing = meta.topics().iter().any(|t| {
        t.name() == topic
            && matches!(
                t.error().map(RDKafkaErrorCode::from),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
            )
    });
    if missing {
        tracing::info!(topic, "kafka: creating the topic (1 partition; create it beforehand for more)");
        crate::kafka::create_topic(&spec.client, topic, 1).map_err(SinkError::Kafka)?;
    }
    Ok(())
}

impl KafkaSink {
    pub fn open(spec: &KafkaSinkSpec) -> Result<KafkaSink, SinkError> {
        let producer: BaseProducer<Deliveries> = spec
            .client
            .config(&[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "5"), ("compression.type", "lz4")])
            .create_with_context(Deliveries::default())
            .map_err(|e| client_error(spec, e))?;
        for topic in [&spec.decisions_topic, &spec.dead_letters_topic].into_iter().flatten() {
            ensure_topic(producer.client(), spec, topic)?;
        }
        Ok(KafkaSink {
            producer,
            spec: spec.clone(),
            reported: 0,
            buf: Vec::with_capacity(512),
            expiring: ExpiryTracker::default(),
        })
    }

    /// Queues a record (`None` payload: a tombstone); when librdkafka's queue
    /// is full, serves delivery reports until it has room, for at most the
    /// flush timeout.
    fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if started.elapsed() < Duration::from_millis(self.spec.flush_timeout_ms) =>
                {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(client_error(&self.spec, format!("{topic}: {e}"))),
            }
        }
    }

    /// Tombstones for the published decisions that have expired by the wall
    /// clock (what readers and the API judge expiry by).
    fn tombstone_expired(&mut self) -> Result<(), SinkError> {
        let Some(topic) = self.spec.decisions_topic.clone() else { return Ok(()) };
        for (key, id) in self.expiring.expired(crate::event::time::now_ms()) {
            self.send(&topic, key.as_bytes(), None, Some(tombstone_headers(id)))?;
        }
        Ok(())
    }

    fn check_deliveries(&mut self) -> Result<(), SinkError> {
        let deliveries = self.producer.context();
        let failed = deliveries.failed.load(Ordering::Relaxed);
        if failed > self.reported {
            let n = failed - self.reported;
            self.reported = failed;
            let last = deliveries.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
            return Err(client_error(
                &self.spec,
                format!("{n} record(s) not delivered: {}", last.unwrap_or_else(|| "unknown error".into())),
            ));
        }
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        "kafka"
    }

    fn wants(&self) -> Wants {
        Wants {
            decisions: self.spec.decisions_topic.is_some(),
            dead_letters: self.spec.dead_letters_topic.is_some(),
            ..Wants::NONE
        }
    }

    fn decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        let Some(topic) = self.spec.decisions_topic.clone() else { return Ok(()) };
        let key = decision_key(d.entity_type, &d.entity);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        serde_json::to_writer(&mut buf, d).map_err(|e| client_error(&self.spec, e))?;
        let r = self.send(&topic, key.as_bytes(), Some(&buf), None);
        self.buf = buf;
        r?;
        self.expiring.track(key, d.id, d.expires_ms);
        Ok(())
    }

    fn dead_letter(&mut self, dl: &DeadLetter<'_>) -> Result<(), SinkError> {
        let Some(topic) = self.spec.dead_letters_topic.clone() else { return Ok(()) };
        let raw: Vec<u8> = match (dl.raw, &dl.raw_base64) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        let (line, offset, partition, from) = match dl.pos {
            Position::Line { no, offset } => (no, offset.to_string(), None, dl.source.to_string()),
            Position::Kafka { topic, partition, offset, line } => {
                (u64::from(line), offset.to_string(), Some(partition.to_string()), topic.to_string())
            }
        };
        let line = line.to_string();
        let bytes = dl.bytes.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "reason", value: Some(dl.reason) })
            .insert(Header { key: "source", value: Some(from.as_str()) })
            .insert(Header { key: "line", value: Some(line.as_str()) })
            .insert(Header { key: "offset", value: Some(offset.as_str()) })
            .insert(Header { key: "bytes", value: Some(bytes.as_str()) })
            .insert(Header { key: "truncated", value: Some(if dl.truncated { "true" } else { "false" }) });
        if let Some(p) = &partition {
            headers = headers.insert(Header { key: "partition", value: Some(p.as_str()) });
        }
        let key = from.into_bytes();
        self.send(&topic, &key, Some(&raw), Some(headers))
    }

    fn checkpoint(&mut self) -> Result<(), SinkError> {
        self.tombstone_expired()?;
        if self.producer.in_flight_count() > 0 {
            self.producer
                .flush(Duration::from_millis(self.spec.flush_timeout_ms))
                .map_err(|e| client_error(&self.spec, format!("records not acknowledged in time: {e}")))?;
        } else {
            self.producer.poll(Duration::ZERO);
        }
        self.check_deliveries()
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.checkpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_tombstoned_once_for_its_newest_decision_when_that_expires() {
        let mut t = ExpiryTracker::default();
        t.track("ip:a".into(), 1, 100);
        t.track("ip:b".into(), 2, 50);
        // A newer decision on a replaces the older one's tombstone.
        t.track("ip:a".into(), 3, 300);
        t.track("ip:c".into(), 4, 60);
        t.forget("ip:c");
        assert_eq!(t.expired(99), [("ip:b".to_string(), 2)]);
        assert!(t.expired(200).is_empty(), "decision 1 was replaced before it expired");
        assert_eq!(t.expired(300), [("ip:a".to_string(), 3)]);
        assert!(t.is_empty());
    }

    #[test]
    fn keys_hold_the_entity_whole() {
        assert_eq!(decision_key(EntityType::Ip, "2001:db8::1"), "ip:2001:db8::1");
        assert_eq!(decision_key(EntityType::ApiKey, "k"), "api_key:k");
    }
}
