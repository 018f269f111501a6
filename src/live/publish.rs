//! What an operator decides through one instance's admin API, to the
//! decisions topic: manual decisions as values, lifts (and the expiry of the
//! manual decisions this instance published) as tombstones naming the
//! decision they end. Every API instance reading the topic
//! ([`super::feed`]) then serves the same answer, whichever instance the
//! operator used.
//!
//! The producer is idempotent and retries on its own (librdkafka's
//! `message.timeout.ms`), so an operator's change made while the brokers are
//! away still reaches them when they return; what is finally refused is
//! counted (`failed`) and logged.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};

use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::decision::Decision;
use crate::kafka::Deliveries;
use crate::sink::SinkError;
use crate::sink::kafka::{ExpiryTracker, KafkaSinkSpec, client_error, decision_key, ensure_topic, tombstone_headers};

/// Publishes an instance's manual decisions and lifts (see the module documentation).
pub struct DecisionPublisher {
    producer: ThreadedProducer<Deliveries>,
    spec: KafkaSinkSpec,
    topic: String,
    expiring: Mutex<ExpiryTracker>,
}

impl DecisionPublisher {
    /// A publisher to the sink's decisions topic (made if the cluster lacks
    /// it); `None` when the sink writes no decisions.
    pub fn open(spec: &KafkaSinkSpec) -> Result<Option<DecisionPublisher>, SinkError> {
        let Some(topic) = spec.decisions_topic.clone() else { return Ok(None) };
        let producer: ThreadedProducer<Deliveries> = spec
            .client
            .config(&[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "5")])
            .create_with_context(Deliveries::default())
            .map_err(|e| client_error(spec, e))?;
        ensure_topic(producer.client(), spec, &topic, 1)?;
        Ok(Some(DecisionPublisher { producer, spec: spec.clone(), topic, expiring: Mutex::default() }))
    }

    fn send(&self, key: &str, payload: Option<&[u8]>, id: Option<u64>) -> Result<(), SinkError> {
        let mut record = BaseRecord::<str, [u8]>::to(&self.topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(id) = id {
            record = record.headers(tombstone_headers(id));
        }
        self.producer.send(record).map_err(|(e, _)| client_error(&self.spec, format!("{}: {e}", self.topic)))
    }

    /// Publishes decisions an operator made.
    pub fn publish(&self, ds: &[Decision]) -> Result<(), SinkError> {
        let mut expiring = self.expiring.lock().unwrap_or_else(PoisonError::into_inner);
        for d in ds {
            let key = decision_key(d.entity_type, &d.entity);
            let payload = serde_json::to_vec(d).map_err(|e| client_error(&self.spec, e))?;
            self.send(&key, Some(&payload), None)?;
            expiring.track(key, d.id, d.expires_ms);
        }
        Ok(())
    }

    /// Publishes that an operator lifted decision `d`.
    pub fn lift(&self, d: &Decision) -> Result<(), SinkError> {
        let key = decision_key(d.entity_type, &d.entity);
        self.expiring.lock().unwrap_or_else(PoisonError::into_inner).forget(&key);
        self.send(&key, None, Some(d.id))
    }

    /// Tombstones for the manual decisions this instance published that
    /// have expired at `now_ms`; returns how many.
    pub fn tombstone_expired(&self, now_ms: i64) -> Result<usize, SinkError> {
        let expired = self.expiring.lock().unwrap_or_else(PoisonError::into_inner).expired(now_ms);
        for (key, id) in &expired {
            self.send(key, None, Some(*id))?;
        }
        Ok(expired.len())
    }

    /// Records the brokers finally refused.
    pub fn failed(&self) -> u64 {
        self.producer.context().failed.load(Ordering::Relaxed)
    }

    /// Waits up to the sink's flush timeout for what is queued (at shutdown).
    pub fn flush(&self) {
        let timeout = std::time::Duration::from_millis(self.spec.flush_timeout_ms);
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(topic = %self.topic, error = %e, "decisions not all published before shutdown");
        }
    }
}
