//! A Kafka topic (or several) as a source: a member of a consumer group that
//! reads its share of the partitions, hands their lines to the engine in
//! event-time order, and commits offsets only for what the engine has
//! acknowledged (at-least-once: a crash re-reads, never skips).
//!
//! **Partitions are merged by time.** Kafka orders a partition, not a topic,
//! and a consumer catching up receives whole fetches of one partition at a
//! time: minutes of one partition's traffic can arrive before a second of
//! another's, far past any lateness the features accept. So each assigned
//! partition gets a small queue, and the source hands out the message with
//! the smallest timestamp (the producer's CreateTime; `gatewatch produce`
//! sets the line's event time) only when every other partition has a message
//! queued, has reached its end, has already delivered something as new, or
//! has been silent for `max_idle` — the rule Kafka Streams uses
//! (`max.task.idle.ms`, "partition time"). A partition whose queue is full is
//! paused until it drains, so memory stays bounded while a slow one catches up.
//!
//! **Offsets.** The engine acknowledges after each round (features applied,
//! decisions persisted, sinks flushed); the source commits the acknowledged
//! offsets synchronously at most every `commit_every`, on close, and for the
//! partitions it is about to lose at a rebalance. A message is never split
//! across two rounds, so an acknowledgement always covers whole messages.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{Poll, Position, Records, Source};
use crate::kafka::KafkaClient;

/// A pipeline's `[input.kafka]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaInput {
    pub client: KafkaClient,
    pub topics: Vec<String>,
    /// The consumer group: instances with the same group share the partitions.
    pub group: String,
    /// Longest time acknowledged offsets wait before they are committed.
    pub commit_every_ms: u64,
    /// How long a partition with nothing queued (and not at its end) holds
    /// back the others before they are read past it.
    pub max_idle_ms: u64,
    /// Bytes of messages queued across partitions before the fullest are paused.
    pub buffer_bytes: usize,
    /// `input.max_future`: a message stamped further ahead of the wall clock
    /// is merged as if stamped now (+ this), so one forged or skewed
    /// timestamp cannot hold its partition back behind every other.
    pub max_future_ms: i64,
}

impl KafkaInput {
    pub const DEFAULT_COMMIT_EVERY_MS: u64 = 1_000;
    pub const DEFAULT_MAX_IDLE_MS: u64 = 2_000;
    pub const DEFAULT_BUFFER_BYTES: usize = 64 << 20;
}

fn kafka_io(e: KafkaError) -> io::Error {
    io::Error::other(format!("kafka: {e}"))
}

/// A partition of a topic: the topic as its index in the source's list.
type Tp = (u16, i32);

/// One message as read: its lines are handed out together.
struct Msg {
    ts: i64,
    offset: i64,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Part {
    queue: VecDeque<Msg>,
    bytes: usize,
    /// The broker said nothing follows (cleared by the next message).
    eof: bool,
    /// When a message last arrived (or the partition was assigned).
    heard: Option<Instant>,
    paused: bool,
    /// The offset after the newest message read.
    next: Option<i64>,
    /// The largest timestamp read from it (its "partition time").
    newest: Option<i64>,
}

impl Part {
    /// Whether this partition, with nothing queued, holds back a message
    /// stamped `ts` from another: it might still deliver something older.
    /// Not when it said it is at its end, has already delivered something at
    /// least as new (what it sends next is, by its own order, not older), or
    /// has been silent `idle` — unless the broker is known to hold more of it
    /// (`behind`: its high watermark is past what was read), in which case
    /// it is only slow to deliver, and is waited for up to [`STALLED`]
    /// (Kafka Streams' rule since KIP-695). Without that, a broker that
    /// served one partition's fetches a few seconds late let the others run
    /// an hour ahead: 36 % of a 100,000-line replay came late.
    fn holds_back(&self, ts: i64, idle: Duration, behind: impl FnOnce() -> bool) -> bool {
        self.queue.is_empty()
            && !self.eof
            && self.newest.is_none_or(|n| ts > n)
            && self.heard.is_some_and(|h| {
                let silent = h.elapsed();
                // Delivered neither a message nor its end since it was assigned:
                // nothing is known of it yet (a slow broker's first fetches took
                // seconds for three partitions of four, and the fourth ran an
                // hour ahead).
                silent < idle || (silent < STALLED.max(idle) && (self.next.is_none() || behind()))
            })
    }
}

/// How long a partition the broker holds more of may deliver nothing before
/// the others are read past it (a stalled broker or partition; counted as
/// reordered or late events, and visible as consumer lag).
const STALLED: Duration = Duration::from_secs(30);

/// What the rebalance callbacks and the source share.
#[derive(Default)]
struct Shared {
    /// Offsets (next to read) acknowledged but not yet committed.
    acked: HashMap<(String, i32), i64>,
    /// Partitions gained and lost since the source last looked.
    assigned: Vec<(String, i32)>,
    revoked: Vec<(String, i32)>,
    commit_errors: u64,
    /// Partitions this member reads now.
    assigned_now: usize,
    /// Messages behind the partitions' ends, summed over the assigned ones,
    /// as librdkafka's last statistics said (`None` before the first).
    lag: Option<i64>,
}

/// What `/metrics` shows of a Kafka source, readable from another thread.
#[derive(Clone)]
pub struct KafkaStats(Arc<Mutex<Shared>>);

impl KafkaStats {
    /// Commits that failed (and were retried) so far.
    pub fn commit_errors(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).commit_errors
    }

    /// Partitions assigned to this member now.
    pub fn assigned(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).assigned_now
    }

    /// Messages not yet read, over the assigned partitions (librdkafka's
    /// consumer lag, refreshed every `statistics.interval.ms`).
    pub fn lag(&self) -> Option<i64> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).lag
    }
}

struct Ctx {
    shared: Arc<Mutex<Shared>>,
}

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::kafka::log_client(level, fac, message);
    }

    /// The consumer lag of the partitions being fetched (librdkafka reports
    /// -1 for a partition it does not know the end or position of).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|(id, p)| **id >= 0 && p.consumer_lag >= 0)
            .map(|(_, p)| p.consumer_lag)
            .sum::<i64>();
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).lag = Some(lag);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::log_error(&error, reason);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        // What was acknowledged on the partitions leaving is committed now, so
        // their next owner starts right after it instead of re-reading.
        let mut commit = TopicPartitionList::new();
        for e in tpl.elements() {
            let k = (e.topic().to_string(), e.partition());
            if let Some(next) = s.acked.remove(&k) {
                let _ = commit.add_partition_offset(&k.0, k.1, Offset::Offset(next));
            }
            s.revoked.push(k);
        }
        if commit.count() > 0
            && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
        {
            s.commit_errors += 1;
            tracing::warn!(error = %e, "kafka: committing offsets of revoked partitions failed (they will be read again)");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        for e in tpl.elements() {
            s.assigned.push((e.topic().to_string(), e.partition()));
        }
    }
}

/// The Kafka source (see the module documentation).
pub struct KafkaSource {
    consumer: BaseConsumer<Ctx>,
    shared: Arc<Mutex<Shared>>,
    /// The subscribed topics; positions name them by `&'static str` (leaked
    /// once each, a handful per process) so that a position stays `Copy`.
    topics: Vec<&'static str>,
    /// The same, NUL-terminated for librdkafka's C calls.
    topic_names: Vec<std::ffi::CString>,
    parts: HashMap<Tp, Part>,
    queued_bytes: usize,
    /// The newest offset handed out per partition since the last acknowledgement ...
    handed: HashMap<Tp, i64>,
    /// ... and the newest message handed out of all.
    last_handed: Option<(Tp, i64)>,
    last_commit: Instant,
    spec: KafkaInput,
    keep: usize,
    /// Replay: end once every assigned partition is at its end.
    stop_at_end: bool,
    last_end_check: Option<Instant>,
    name: String,
}

impl KafkaSource {
    /// Joins the group and subscribes; partitions arrive with the first polls.
    pub fn open(spec: &KafkaInput, keep: usize, stop_at_end: bool) -> io::Result<KafkaSource> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let consumer: BaseConsumer<Ctx> = spec
            .client
            .config(&[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("auto.offset.reset", "earliest"),
                // A record is a few lines; a fetch of 1 MiB per partition keeps the queues short.
                ("max.partition.fetch.bytes", "1048576"),
                // Consumer lag for /metrics.
                ("statistics.interval.ms", "5000"),
            ])
            .set("group.id", &spec.group)
            .create_with_context(Ctx { shared: shared.clone() })
            .map_err(kafka_io)?;
        let topics: Vec<&'static str> = spec.topics.iter().map(|t| &*Box::leak(t.clone().into_boxed_str())).collect();
        consumer.subscribe(&topics).map_err(kafka_io)?;
        // A topic name with a NUL byte cannot have been subscribed to above.
        let topic_names = topics.iter().filter_map(|t| std::ffi::CString::new(*t).ok()).collect();
        Ok(KafkaSource {
            consumer,
            shared,
            topic_names,
            name: format!("kafka:{}", spec.topics.join(",")),
            topics,
            parts: HashMap::new(),
            queued_bytes: 0,
            handed: HashMap::new(),
            last_handed: None,
            last_commit: Instant::now(),
            spec: spec.clone(),
            keep,
            stop_at_end,
            last_end_check: None,
        })
    }

    /// Takes in what the rebalance callbacks recorded (a function of the
    /// fields it changes, so it can run while a message borrows the consumer).
    fn apply_rebalance(
        shared: &Mutex<Shared>,
        topics: &[&'static str],
        parts: &mut HashMap<Tp, Part>,
        queued_bytes: &mut usize,
        handed: &mut HashMap<Tp, i64>,
    ) {
        let (assigned, revoked) = {
            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut s.assigned), std::mem::take(&mut s.revoked))
        };
        let index = |t: &str| topics.iter().position(|x| *x == t).map(|i| i as u16);
        for (t, p) in revoked {
            let Some(i) = index(&t) else { continue };
            if let Some(part) = parts.remove(&(i, p)) {
                // Queued, never handed out: the next owner reads them.
                *queued_bytes -= part.bytes;
            }
            // Handed out but not acknowledged: processed here, and read again by
            // the next owner (at-least-once); never committed from here.
            handed.remove(&(i, p));
            tracing::info!(topic = %t, partition = p, "kafka: partition revoked");
        }
        for (t, p) in assigned {
            if let Some(i) = index(&t) {
                parts.entry((i, p)).or_default().heard = Some(Instant::now());
                tracing::info!(topic = %t, partition = p, "kafka: partition assigned");
            }
        }
        shared.lock().unwrap_or_else(PoisonError::into_inner).assigned_now = parts.len();
    }

    /// Reads what the consumer has ready into the partitions' queues.
    fn fill(&mut self, wait: Duration) {
        let per_part = (self.spec.buffer_bytes / self.parts.len().max(1)).max(1 << 20);
        let mut timeout = wait;
        while self.queued_bytes < self.spec.buffer_bytes {
            let Some(r) = self.consumer.poll(timeout) else { break };
            timeout = Duration::ZERO;
            Self::apply_rebalance(
                &self.shared,
                &self.topics,
                &mut self.parts,
                &mut self.queued_bytes,
                &mut self.handed,
            );
            let m = match r {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(p)) => {
                    // The error names the partition, not the topic: with several
                    // topics, each one's partition p is taken as at its end until
                    // its next message says otherwise (replay's end is checked
                    // against the brokers' watermarks before it is believed).
                    for (tp, part) in self.parts.iter_mut() {
                        if tp.1 == p {
                            part.eof = true;
                        }
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka: consumer error (librdkafka retries)");
                    break;
                }
            };
            let Some(t) = self.topics.iter().position(|x| *x == m.topic()).map(|i| i as u16) else { continue };
            let tp = (t, m.partition());
            let payload = m.payload().unwrap_or_default().to_vec();
            let ts = m
                .timestamp()
                .to_millis()
                .unwrap_or(i64::MIN)
                .min(crate::event::time::now_ms().saturating_add(self.spec.max_future_ms));
            let offset = m.offset();
            let part = self.parts.entry(tp).or_default();
            part.eof = false;
            part.heard = Some(Instant::now());
            part.next = Some(offset + 1);
            part.newest = Some(part.newest.map_or(ts, |n| n.max(ts)));
            part.bytes += payload.len();
            self.queued_bytes += payload.len();
            part.queue.push_back(Msg { ts, offset, payload });
            if part.bytes >= per_part && !part.paused {
                part.paused = true;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(self.topics[t as usize], tp.1);
                if let Err(e) = self.consumer.pause(&tpl) {
                    tracing::warn!(error = %e, "kafka: pausing a full partition failed");
                }
            }
        }
        Self::apply_rebalance(&self.shared, &self.topics, &mut self.parts, &mut self.queued_bytes, &mut self.handed);
    }

    /// The queued head with the smallest time (ties to the lower partition),
    /// if no partition with nothing queued holds it back.
    fn next_ready(&self) -> Option<Tp> {
        let (tp, ts) = self
            .parts
            .iter()
            .filter_map(|(tp, p)| p.queue.front().map(|m| (*tp, m.ts)))
            .min_by_key(|&(tp, ts)| (ts, tp))?;
        let idle = Duration::from_millis(self.spec.max_idle_ms);
        let held = self.parts.iter().any(|(other, p)| p.holds_back(ts, idle, || self.behind(*other, p)));
        (!held).then_some(tp)
    }

    /// Whether the broker holds messages of a partition past those read, by
    /// the high watermark of its last fetch (librdkafka's cache; no request).
    fn behind(&self, tp: Tp, part: &Part) -> bool {
        let Some(topic) = self.topic_names.get(tp.0 as usize) else { return false };
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer lives as long as `self.consumer`; the topic
        // is a NUL-terminated string that outlives the call; librdkafka only
        // writes the two offsets (rdkafka does not wrap this cached lookup).
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                tp.1,
                &mut low,
                &mut high,
            )
        };
        err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            && high >= 0
            && high > part.next.unwrap_or(low)
    }

    fn resume_drained(&mut self) {
        let per_part = (self.spec.buffer_bytes / self.parts.len().max(1)).max(1 << 20);
        let mut tpl = TopicPartitionList::new();
        for (tp, part) in self.parts.iter_mut() {
            if part.paused && part.bytes < per_part / 2 {
                part.paused = false;
                tpl.add_partition(self.topics[tp.0 as usize], tp.1);
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.resume(&tpl)
        {
            tracing::warn!(error = %e, "kafka: resuming a partition failed");
        }
    }

    /// Whether every assigned partition has been read up to the brokers'
    /// high watermark (asked over the network: replay's end only).
    fn at_end(&self) -> bool {
        let timeout = Duration::from_secs(10);
        let committed = match self.consumer.committed(timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kafka: reading committed offsets failed");
                return false;
            }
        };
        self.parts.iter().all(|(tp, part)| {
            let topic = self.topics[tp.0 as usize];
            let Ok((low, high)) = self.consumer.fetch_watermarks(topic, tp.1, timeout) else { return false };
            let start = committed.find_partition(topic, tp.1).and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
            part.next.or(start).unwrap_or(low) >= high
        })
    }

    /// Commits what was acknowledged (synchronously).
    fn commit(&mut self) -> io::Result<()> {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if s.acked.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), next) in &s.acked {
            tpl.add_partition_offset(t, *p, Offset::Offset(*next)).map_err(kafka_io)?;
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                s.acked.clear();
                self.last_commit = Instant::now();
                Ok(())
            }
            // The broker is away or the group is rebalancing: the offsets stay
            // pending and are committed with the next ones (at worst, re-read).
            Err(e) => {
                s.commit_errors += 1;
                tracing::warn!(error = %e, "kafka: committing offsets failed; will retry");
                Ok(())
            }
        }
    }

    /// A handle on the source's counters for `/metrics`.
    pub fn stats(&self) -> KafkaStats {
        KafkaStats(self.shared.clone())
    }
}

impl Source for KafkaSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn poll(&mut self, out: &mut Records, max: usize) -> io::Result<Poll> {
        // Acknowledged offsets are committed even when nothing new arrives.
        if self.last_commit.elapsed() >= Duration::from_millis(self.spec.commit_every_ms) {
            self.commit()?;
        }
        let before = out.len();
        let wait = if self.next_ready().is_some() { Duration::ZERO } else { Duration::from_millis(50) };
        self.fill(wait);
        while out.len() - before < max {
            let Some(tp) = self.next_ready() else { break };
            let topic = self.topics[tp.0 as usize];
            let Some(part) = self.parts.get_mut(&tp) else { break };
            let Some(msg) = part.queue.pop_front() else { break };
            part.bytes -= msg.payload.len();
            self.queued_bytes -= msg.payload.len();
            let mut line_no = 0u32;
            for line in msg.payload.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    continue;
                }
                line_no += 1;
                let pos = Position::Kafka { topic, partition: tp.1, offset: msg.offset, line: line_no };
                out.push(&line[..line.len().min(self.keep)], line.len() as u64, pos);
            }
            self.handed.insert(tp, msg.offset);
            self.last_handed = Some((tp, msg.offset));
        }
        self.resume_drained();
        let emitted = out.len() > before;
        if self.stop_at_end
            && !emitted
            && !self.parts.is_empty()
            && self.parts.values().all(|p| p.eof && p.queue.is_empty())
            && self.last_end_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last_end_check = Some(Instant::now());
            if self.at_end() {
                return Ok(Poll::End);
            }
        }
        Ok(if emitted { Poll::More } else { Poll::Idle })
    }

    fn ack(&mut self, pos: Position) -> io::Result<()> {
        let Position::Kafka { topic, partition, offset, .. } = pos else { return Ok(()) };
        // Only an acknowledgement of the newest message handed out covers every
        // partition's (the driver's, after each round); an older one is left
        // for the next, which is never wrong, only later.
        if self.last_handed.is_none_or(|(tp, o)| (self.topics[tp.0 as usize], tp.1, o) != (topic, partition, offset)) {
            return Ok(());
        }
        self.last_handed = None;
        {
            let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            for ((t, p), o) in self.handed.drain() {
                let next = s.acked.entry((self.topics[t as usize].to_string(), p)).or_insert(o + 1);
                *next = (*next).max(o + 1);
            }
        }
        if self.last_commit.elapsed() >= Duration::from_millis(self.spec.commit_every_ms) {
            self.commit()?;
        }
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        self.commit()
    }
}

/// The partitions assigned right now (tests, the summary).
pub fn assigned(source: &KafkaSource) -> HashSet<(String, i32)> {
    source.parts.keys().map(|(t, p)| (source.topics[*t as usize].to_string(), *p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(queued: bool, eof: bool, heard_ago: Option<Duration>, newest: Option<i64>) -> Part {
        let mut p = Part { eof, newest, next: newest.map(|_| 1), ..Part::default() };
        p.heard = heard_ago.map(|d| Instant::now() - d);
        if queued {
            p.queue.push_back(Msg { ts: 0, offset: 0, payload: Vec::new() });
        }
        p
    }

    #[test]
    fn an_empty_partition_holds_back_only_what_it_might_still_precede() {
        let idle = Duration::from_secs(2);
        let recent = Some(Duration::from_millis(10));
        let (behind, caught_up) = (|| true, || false);
        // Nothing queued, heard from lately, its newest older than the head: wait.
        assert!(part(false, false, recent, Some(100)).holds_back(150, idle, caught_up));
        assert!(part(false, false, recent, None).holds_back(150, idle, caught_up), "assigned, nothing read yet");
        // Its own newest is as new as the head: what it sends next is not older.
        assert!(!part(false, false, recent, Some(150)).holds_back(150, idle, behind));
        assert!(!part(false, false, recent, Some(200)).holds_back(150, idle, behind));
        // Something queued (the merge compares heads), at its end, or silent too long.
        assert!(!part(true, false, recent, Some(100)).holds_back(150, idle, behind));
        assert!(!part(false, true, recent, Some(100)).holds_back(150, idle, behind));
        let silent = Some(Duration::from_secs(3));
        assert!(!part(false, false, silent, Some(100)).holds_back(150, idle, caught_up));
        // Silent since it was assigned, nothing read: unknown, so waited for.
        let assigned = part(false, false, silent, None);
        assert!(assigned.holds_back(150, idle, caught_up), "nothing known of it yet");
        assert!(!part(false, false, Some(STALLED + idle), None).holds_back(150, idle, caught_up));
        // Silent, but the broker holds more of it: slow, not idle; waited for
        // until it is stalled.
        assert!(part(false, false, silent, Some(100)).holds_back(150, idle, behind));
        assert!(!part(false, false, Some(STALLED + idle), Some(100)).holds_back(150, idle, behind));
    }
}
