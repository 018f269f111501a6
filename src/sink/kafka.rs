//! Decisions and dead letters to Kafka topics: every decision keyed by its
//! entity (`entity_type:entity`, so one entity's decisions stay in order in
//! one partition and a reader keeps the last per key), and every rejected
//! line with its raw bytes as the payload and why it was rejected in the
//! headers. The producer is idempotent (no duplicate from its own retries),
//! and a checkpoint waits until everything sent is acknowledged by the
//! brokers, so a source commits its offsets only after the decisions they
//! caused are in the topic.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::{DeadLetter, Sink, SinkError, Wants};
use crate::decision::Decision;
use crate::kafka::{Deliveries, KafkaClient};
use crate::source::Position;

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
}

fn client_error(spec: &KafkaSinkSpec, e: impl std::fmt::Display) -> SinkError {
    SinkError::Kafka(crate::kafka::KafkaError::Client { brokers: spec.client.brokers.clone(), message: e.to_string() })
}

/// Creates `topic` (one partition) when the brokers do not know it, so that a
/// first run does not wait on a topic nobody made; where it exists (or the
/// cluster makes topics itself), nothing changes.
fn ensure_topic(producer: &BaseProducer<Deliveries>, spec: &KafkaSinkSpec, topic: &str) -> Result<(), SinkError> {
    let meta = producer
        .client()
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
            ensure_topic(&producer, spec, topic)?;
        }
        Ok(KafkaSink { producer, spec: spec.clone(), reported: 0, buf: Vec::with_capacity(512) })
    }

    /// Queues a record; when librdkafka's queue is full, serves delivery
    /// reports until it has room, for at most the flush timeout.
    fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
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
        let key = format!("{}:{}", d.entity_type.as_str(), d.entity);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        serde_json::to_writer(&mut buf, d).map_err(|e| client_error(&self.spec, e))?;
        let r = self.send(&topic, key.as_bytes(), &buf, None);
        self.buf = buf;
        r
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
        self.send(&topic, &key, &raw, Some(headers))
    }

    fn checkpoint(&mut self) -> Result<(), SinkError> {
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
