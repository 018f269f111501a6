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
//!
//! It also publishes, on the decisions topic, the digests of the sessions
//! the engine saw opened ([`crate::sessions`]): records with the header
//! `record: opened_sessions`, keyed `opened-sessions:<writer>:<slot>` (a
//! compacted topic keeps a writer's last [`OPENED_SLOTS`] of them), the
//! payload digests of eight bytes each, little-endian. Readers of the topic
//! fill their registry from them, so that an API instance, or an engine
//! that did not read the lines that opened a session, tells it from a
//! made-up id too.
//!
//! With `[sinks.repartition]` it also sends every event to a topic per
//! entity type, keyed by that entity: the repartition topics through which
//! the instances that keep a type's features receive all of an entity's
//! events, whichever instance read them (`docs/SCALING.md`).

use std::collections::{BTreeSet, HashMap};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use datafusion::arrow::array::{Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::{DeadLetter, Sink, SinkError, Wants};
use crate::decision::Decision;
use crate::event::col;
use crate::features::EntityType;
use crate::kafka::{Deliveries, KafkaClient};
use crate::repartition::{Frame, FrameKind};
use crate::sessions::encode_digests;
use crate::source::Position;

/// The header of a tombstone naming the decision it ends.
pub const DECISION_ID_HEADER: &str = "decision_id";

/// The header naming what a record of the decisions topic holds when it is
/// not a decision or a tombstone...
pub const RECORD_HEADER: &str = "record";
/// ...the digests of sessions seen opened.
pub const OPENED_SESSIONS: &str = "opened_sessions";
/// Keys a writer's opened-session records cycle through.
pub const OPENED_SLOTS: u64 = 64;
/// Digests per opened-session record at most (64 KiB).
const OPENED_PER_RECORD: usize = 8192;

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
    /// Repartition topics: every event with an entity of the type is sent to
    /// the type's topic keyed by the entity, for the instances that keep that
    /// type's features (`docs/SCALING.md`). Empty: events are not sent.
    pub repartition: Vec<(EntityType, String)>,
    /// Partitions of a repartition topic this sink creates (one it finds is
    /// used as it is).
    pub repartition_partitions: i32,
    /// How long an engine starting up waits for the decisions topic to give
    /// anything more (a record, a partition's end) before it starts on what
    /// it has learned of the other instances' decisions
    /// ([`crate::live::learn::read_to_end`]).
    pub learn_wait_ms: u64,
}

impl KafkaSinkSpec {
    pub const DEFAULT_FLUSH_TIMEOUT_MS: u64 = 10_000;
    pub const DEFAULT_LEARN_WAIT_MS: u64 = 30_000;
    pub const DEFAULT_REPARTITION_PARTITIONS: i32 = 8;
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
    /// This sink's writer id on the repartition topics (random per run).
    writer: u64,
    /// Each repartition topic and its partition count.
    repartition_partitions: Vec<(String, i32)>,
    /// The newest event time sent on the repartition topics.
    newest_ts: Option<i64>,
    /// When the last watermarks went out, and for which time.
    watermarked: Option<(Instant, i64)>,
    /// The source's share this writer id speaks for ([`Sink::share`]).
    generation: u64,
    /// Since when the source has been waiting for a share.
    awaiting_since: Option<Instant>,
    /// This writer id has sent its end (its source was given nothing to read).
    ended: bool,
    /// Since when the source has been caught up with its share, and whether
    /// this writer id has said so since it last sent lines.
    caught_up_since: Option<Instant>,
    idle_said: bool,
    /// Frames without lines sent so far (a share change sends its own at once).
    frames: u64,
    /// Opened-session records sent so far (their keys cycle through slots).
    opened_records: u64,
}

/// Watermarks go out at checkpoints, at most this often.
const WATERMARK_EVERY: Duration = Duration::from_millis(100);
/// A writer that has sent no event yet says so at most this often.
const HELLO_EVERY: Duration = Duration::from_millis(500);
/// A source waiting this long for its share of the input (a rebalance that
/// does not end) stops announcing itself; its readers read past it after
/// their stall limit, as past any writer silent without saying it caught up.
const AWAIT_AT_MOST: Duration = Duration::from_secs(60);
/// A writer whose source has been caught up this long says so to its
/// readers ([`FrameKind::Idle`]); a busy one vouches with its watermarks.
const IDLE_AFTER: Duration = Duration::from_secs(1);
/// A repartition message holds lines from at most this span of event time
/// (what a reader may hand out ahead of another writer's older events)...
const MESSAGE_SPAN_MS: i64 = 1_000;
/// ...and at most this many bytes of them.
const MESSAGE_BYTES: usize = 256 << 10;

/// Lines on their way to one partition of a repartition topic.
#[derive(Default)]
struct Packed {
    lines: Vec<u8>,
    first_ts: i64,
    newest_ts: i64,
}

/// How long a checkpoint waits on the brokers between two calls of its
/// caller's `waiting` ([`Sink::checkpoint_while`]).
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// How long a checkpoint waits for acknowledgements before it serves the
/// delivery reports that came meanwhile ([`KafkaSink::flush_a_little`]).
const FLUSH_SLICE_MS: i32 = 5;

/// A writer id for the repartition topics: random, never 0.
fn new_writer() -> u64 {
    rand::random::<u64>() | 1
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
    partitions: i32,
) -> Result<(), SinkError> {
    let meta = crate::kafka::fetch_metadata_patiently(client, topic)
        .map_err(|e| client_error(spec, format!("{topic}: {e}")))?;
    let missing = meta.topics().iter().any(|t| {
        t.name() == topic
            && matches!(
                t.error().map(RDKafkaErrorCode::from),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
            )
    });
    if missing {
        tracing::info!(topic, partitions, "kafka: creating the topic (create it beforehand to choose otherwise)");
        crate::kafka::create_topic(&spec.client, topic, partitions).map_err(SinkError::Kafka)?;
    }
    Ok(())
}

impl KafkaSink {
    pub fn open(spec: &KafkaSinkSpec) -> Result<KafkaSink, SinkError> {
        // `linger.ms` well above a round's length: what a round sends goes
        // out at its checkpoint's flush, one request per partition. At 5 ms a
        // round's records left in many small requests; an idempotent producer
        // keeps at most five in flight per partition, and librdkafka serves a
        // partition with records waiting behind them again at once, so on a
        // broker slow to acknowledge its broker thread spun (two engines
        // spent 4.9–5.2 CPU-s on 129 k lines, 2.1–2.3 at 100 ms).
        let producer: BaseProducer<Deliveries> = spec
            .client
            .config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "100"),
                ("compression.type", "lz4"),
            ])
            .create_with_context(Deliveries::default())
            .map_err(|e| client_error(spec, e))?;
        for topic in [&spec.decisions_topic, &spec.dead_letters_topic].into_iter().flatten() {
            ensure_topic(producer.client(), spec, topic, 1)?;
        }
        let mut repartition_partitions = Vec::new();
        for (_, topic) in &spec.repartition {
            ensure_topic(producer.client(), spec, topic, spec.repartition_partitions)?;
            let meta = crate::kafka::fetch_metadata_patiently(producer.client(), topic)
                .map_err(|e| client_error(spec, format!("{topic}: {e}")))?;
            let n = meta.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
            if n == 0 {
                return Err(client_error(spec, format!("{topic}: the brokers list no partition of it")));
            }
            repartition_partitions.push((topic.clone(), n as i32));
        }
        let mut sink = KafkaSink {
            producer,
            spec: spec.clone(),
            reported: 0,
            buf: Vec::with_capacity(512),
            expiring: ExpiryTracker::default(),
            writer: new_writer(),
            repartition_partitions,
            newest_ts: None,
            watermarked: None,
            generation: 0,
            awaiting_since: None,
            ended: false,
            caught_up_since: None,
            idle_said: false,
            frames: 0,
            opened_records: 0,
        };
        sink.watermark(false)?;
        Ok(sink)
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
        self.send_at(topic, key, payload, headers, None, None)
    }

    /// [`Self::send`] with the record's timestamp set (`None`: the producer's clock).
    fn send_at(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        ts_ms: Option<i64>,
        partition: Option<i32>,
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key);
        if let Some(ts) = ts_ms {
            record = record.timestamp(ts);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let mut warned = started;
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    return Ok(());
                }
                // The producer's queue is full: the brokers are slow or away.
                // A sink that feeds other instances waits as its checkpoint
                // does (until the brokers take the records or librdkafka gives
                // up on the queued ones); any other gives up after the flush
                // timeout and is closed and retried ([`crate::sink::Resilient`]).
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if !self.spec.repartition.is_empty()
                        || started.elapsed() < Duration::from_millis(self.spec.flush_timeout_ms) =>
                {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                    self.check_deliveries()?;
                    if warned.elapsed() >= Duration::from_secs(10) {
                        warned = Instant::now();
                        tracing::warn!(
                            topic,
                            waited_s = started.elapsed().as_secs(),
                            "kafka: the producer's queue is full (brokers slow or away); still waiting to send"
                        );
                    }
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

    /// A watermark to every partition of every repartition topic: nothing
    /// this writer sends later is stamped before `newest_ts` (its events go
    /// out in the order its source merged them), or, at the `end`, nothing
    /// follows. Readers hold other writers' newer events until then
    /// ([`crate::repartition`]).
    ///
    /// Before its first event a writer vouches for nothing (the oldest
    /// time), at open and at each checkpoint while it rebuilds: readers then
    /// wait for what it is about to send. Unknown to them until its first
    /// event, an engine that joined its group and spent seconds rebuilding
    /// found the other writer, catching up, minutes ahead in event time, and
    /// its events all came behind the readers' watermark. A writer with no
    /// input checkpoints nothing and is read past after `max_idle`.
    fn watermark(&mut self, end: bool) -> Result<(), SinkError> {
        let (ts, every) = match self.newest_ts {
            Some(ts) => (ts, WATERMARK_EVERY),
            None if self.repartition_partitions.is_empty() => return Ok(()),
            None => (i64::MIN, HELLO_EVERY),
        };
        if !end
            && (self.ended
                || self
                    .watermarked
                    .is_some_and(|(at, w)| (w == ts && self.newest_ts.is_some()) || at.elapsed() < every))
        {
            return Ok(());
        }
        let kind = if end { FrameKind::End } else { FrameKind::Watermark };
        self.send_to_every_partition(Frame { writer: self.writer, newest_ts: ts, kind }, self.newest_ts)?;
        self.watermarked = Some((Instant::now(), ts));
        Ok(())
    }

    /// Sends a frame without lines to every partition of every repartition
    /// topic, stamped `stamp` (the event time; `None`: the clock's, before any).
    fn send_to_every_partition(&mut self, frame: Frame, stamp: Option<i64>) -> Result<(), SinkError> {
        self.frames += 1;
        let mut payload = Vec::with_capacity(64);
        frame.write(&mut payload);
        for (topic, n) in self.repartition_partitions.clone() {
            for p in 0..n {
                self.send_at(&topic, b"", Some(&payload), None, stamp, Some(p))?;
            }
        }
        Ok(())
    }

    /// Tells the readers that this writer has caught up with its input, once
    /// it has been so for [`IDLE_AFTER`]: they need not wait for it until it
    /// speaks again. Silent without saying so, it is waited for (it may be
    /// blocked on its brokers, or on a slow partition of its input).
    fn say_idle(&mut self) -> Result<(), SinkError> {
        if self.repartition_partitions.is_empty()
            || self.ended
            || self.idle_said
            || self.caught_up_since.is_none_or(|t| t.elapsed() < IDLE_AFTER)
        {
            return Ok(());
        }
        let frame = Frame { writer: self.writer, newest_ts: self.newest_ts.unwrap_or(i64::MIN), kind: FrameKind::Idle };
        self.send_to_every_partition(frame, self.newest_ts)?;
        self.idle_said = true;
        Ok(())
    }

    /// Sends the lines packed for partition `p` of repartition topic `t`.
    fn send_packed(&mut self, t: usize, p: i32, packed: &Packed) -> Result<(), SinkError> {
        self.idle_said = false;
        let mut payload = Vec::with_capacity(packed.lines.len() + 64);
        Frame { writer: self.writer, newest_ts: packed.newest_ts, kind: FrameKind::Lines }.write(&mut payload);
        payload.extend_from_slice(&packed.lines);
        let topic = self.repartition_partitions[t].0.clone();
        self.send_at(&topic, b"", Some(&payload), None, Some(packed.first_ts), Some(p))
    }

    /// Sends what is queued at once and waits a few milliseconds for the
    /// brokers' acknowledgements; true once every record is acknowledged.
    /// rdkafka's own `flush` serves delivery reports in polls that last
    /// their whole slice (100 ms), so every checkpoint that had sent
    /// anything took a tenth of a second (one engine on a filled topic:
    /// 7.3–7.4 s wall for 129 k lines, 6.3 s with this).
    fn flush_a_little(&mut self) -> bool {
        // SAFETY: the client pointer lives as long as `self.producer`. The
        // call only waits (librdkafka's flushing mode sends queued records
        // without lingering); the delivery reports it waits for are served
        // by the polls below, on this thread, as rdkafka's `flush` does.
        unsafe {
            rdkafka::bindings::rd_kafka_flush(self.producer.client().native_ptr(), FLUSH_SLICE_MS);
        }
        // One delivery report event per poll; a few more than there can be
        // waiting, then the count says whether anything is still out.
        for _ in 0..16 {
            if self.producer.in_flight_count() == 0 {
                return true;
            }
            self.producer.poll(Duration::ZERO);
        }
        self.producer.in_flight_count() == 0
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
            events: !self.spec.repartition.is_empty(),
            decisions: self.spec.decisions_topic.is_some(),
            dead_letters: self.spec.dead_letters_topic.is_some(),
            opened_sessions: self.spec.decisions_topic.is_some(),
            ..Wants::NONE
        }
    }

    /// Each event once per repartition topic whose entity it has, keyed by
    /// that entity and stamped with the event's time (what the reading
    /// instances merge their partitions by).
    fn events(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        if self.spec.repartition.is_empty() {
            return Ok(());
        }
        let ts = batch
            .column(col::TS)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| client_error(&self.spec, "events batch without its ts column"))?
            .clone();
        // (the entity column, the topic's index and partition count, and
        // whether the key is the address's network rather than the column)
        let keys: Vec<(StringArray, usize, i32, bool)> = self
            .spec
            .repartition
            .iter()
            .enumerate()
            .filter_map(|(i, (t, _))| {
                let c = match t {
                    EntityType::User => col::USER_ID,
                    EntityType::ApiKey => col::API_KEY_ID,
                    EntityType::Device => col::DEVICE_ID,
                    EntityType::Session => col::SESSION_ID,
                    EntityType::Ip | EntityType::Network => col::CLIENT_IP,
                    // Subnets follow their addresses; a request class is no key.
                    EntityType::Cidr | EntityType::Class => return None,
                };
                let a = batch.column(c).as_any().downcast_ref::<StringArray>()?.clone();
                Some((a, i, self.repartition_partitions.get(i)?.1, *t == EntityType::Network))
            })
            .collect();
        let mut packed: HashMap<(usize, i32), Packed> = HashMap::new();
        let mut row_json = std::mem::take(&mut self.buf);
        let mut result = Ok(());
        'rows: for row in 0..batch.num_rows() {
            row_json.clear();
            let at = ts.value(row);
            for (a, t, n, by_network) in &keys {
                if a.is_null(row) {
                    continue;
                }
                let network;
                let entity = if *by_network {
                    // An IPv4 address has no network entity.
                    let Some(n) = a.value(row).parse().ok().and_then(crate::features::network_of) else { continue };
                    network = n;
                    network.as_str()
                } else {
                    a.value(row)
                };
                if row_json.is_empty() {
                    crate::event::json::write_row(batch, row, &mut row_json);
                    row_json.push(b'\n');
                    self.newest_ts = Some(self.newest_ts.map_or(at, |n| n.max(at)));
                }
                let key = (*t, crate::repartition::partition_of(entity, *n));
                let pk = packed.entry(key).or_default();
                if !pk.lines.is_empty()
                    && (at > pk.first_ts.saturating_add(MESSAGE_SPAN_MS)
                        || pk.lines.len() + row_json.len() > MESSAGE_BYTES)
                {
                    let full = std::mem::take(pk);
                    result = self.send_packed(key.0, key.1, &full);
                    if result.is_err() {
                        break 'rows;
                    }
                }
                let pk = packed.entry(key).or_default();
                if pk.lines.is_empty() {
                    pk.first_ts = at;
                    pk.newest_ts = at;
                }
                pk.newest_ts = pk.newest_ts.max(at);
                pk.lines.extend_from_slice(&row_json);
            }
        }
        self.buf = row_json;
        result?;
        // What is packed goes now: the batch's events are in the topic
        // before the checkpoint that acknowledges them.
        let mut rest: Vec<((usize, i32), Packed)> = packed.into_iter().filter(|(_, p)| !p.lines.is_empty()).collect();
        rest.sort_by_key(|(k, p)| (p.first_ts, *k));
        for ((t, p), pk) in rest {
            self.send_packed(t, p, &pk)?;
        }
        Ok(())
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

    fn sessions_opened(&mut self, digests: &[u64]) -> Result<(), SinkError> {
        let Some(topic) = self.spec.decisions_topic.clone() else { return Ok(()) };
        for chunk in digests.chunks(OPENED_PER_RECORD) {
            let key = format!("opened-sessions:{:016x}:{}", self.writer, self.opened_records % OPENED_SLOTS);
            self.opened_records += 1;
            let headers = OwnedHeaders::new().insert(Header { key: RECORD_HEADER, value: Some(OPENED_SESSIONS) });
            self.send(&topic, key.as_bytes(), Some(&encode_digests(chunk)), Some(headers))?;
        }
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
        self.checkpoint_while(&mut || {})
    }

    fn checkpoint_while(&mut self, waiting: &mut dyn FnMut()) -> Result<(), SinkError> {
        self.tombstone_expired()?;
        self.watermark(false)?;
        if self.producer.in_flight_count() == 0 {
            self.producer.poll(Duration::ZERO);
            return self.check_deliveries();
        }
        let (started, timeout) = (Instant::now(), Duration::from_millis(self.spec.flush_timeout_ms));
        let mut warned = started;
        let mut slice = started;
        // In slices, so that the caller's source keeps its place in its
        // consumer group meanwhile: on a loaded broker this wait passed
        // `max.poll.interval.ms`, the address engine left its group, and
        // the next owners of its partitions sent thousands of its events to
        // the repartition topics again.
        while !self.flush_a_little() {
            if slice.elapsed() < WAIT_SLICE {
                continue;
            }
            slice = Instant::now();
            let e = format!("{} record(s) not acknowledged yet", self.producer.in_flight_count());
            // Repartitioned events are the entity engines' only input: a
            // checkpoint waits until the brokers have them, or until
            // librdkafka gives them up (`message.timeout.ms`, then the run
            // ends and resumes from the offsets committed before). Skipped,
            // they were lost while their offsets were committed.
            if self.spec.repartition.is_empty() && started.elapsed() >= timeout {
                return Err(client_error(&self.spec, format!("records not acknowledged in time: {e}")));
            }
            self.check_deliveries()?;
            if warned.elapsed() >= timeout {
                warned = Instant::now();
                tracing::warn!(
                    waited_s = started.elapsed().as_secs(),
                    error = %e,
                    "kafka: the brokers have not acknowledged repartitioned events yet; still waiting"
                );
            }
            waiting();
        }
        self.check_deliveries()
    }

    /// A writer id speaks for one share of the source. When the share
    /// changes, this instance goes on as a new writer that has vouched for
    /// nothing yet, because a partition it gained may be behind what it sent
    /// so far; the new id says so before the old one ends, so its readers
    /// never lose sight of this instance. While its source waits for a share
    /// it keeps saying so (it may be given partitions behind every other
    /// writer). Without this, an engine that joined its group and waited four
    /// seconds for its partitions was read past: the other writer, alone,
    /// sent nine minutes of event time, and the joining one's first events
    /// all came behind the readers' watermark.
    fn share(&mut self, share: crate::source::Share) -> Result<(), SinkError> {
        if self.repartition_partitions.is_empty() {
            return Ok(());
        }
        let frames = self.frames;
        if share.generation != self.generation {
            let (old, old_newest) = (self.writer, self.newest_ts);
            self.generation = share.generation;
            self.writer = new_writer();
            self.newest_ts = None;
            self.watermarked = None;
            self.ended = false;
            self.idle_said = false;
            self.watermark(false)?;
            let end = Frame { writer: old, newest_ts: old_newest.unwrap_or(i64::MIN), kind: FrameKind::End };
            self.send_to_every_partition(end, old_newest)?;
        }
        if share.awaiting {
            let since = *self.awaiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() < AWAIT_AT_MOST {
                self.watermark(false)?;
            }
        } else {
            self.awaiting_since = None;
            if share.empty && !self.ended && self.newest_ts.is_none() {
                // Given nothing to read: nothing to wait for.
                self.watermark(true)?;
                self.ended = true;
            }
        }
        match (share.caught_up, self.caught_up_since) {
            (true, None) => self.caught_up_since = Some(Instant::now()),
            (false, Some(_)) => {
                self.caught_up_since = None;
                if std::mem::take(&mut self.idle_said) {
                    // Reading again: from now on its readers wait for it.
                    self.watermarked = None;
                    self.watermark(false)?;
                }
            }
            _ => {}
        }
        self.say_idle()?;
        // The frames a share change sends (a hello, an end, a writer waiting
        // or idle) tell readers whom to wait for, and no checkpoint's flush
        // follows them: left to `linger.ms`, a waiting writer's hello reached
        // its reader 100 ms after the other writer's newer lines, which were
        // handed out past it.
        if self.frames != frames {
            self.flush_a_little();
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.watermark(true)?;
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
