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

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

use super::{Poll, Position, Records, Source};
use crate::kafka::KafkaClient;
use crate::repartition::{Frame, FrameKind};

/// A pipeline's `[input.kafka]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaInput {
    pub client: KafkaClient,
    pub topics: Vec<String>,
    /// Which entity types each topic's events count for, in `topics` order
    /// ([`super::Line::entities`]): every type for a topic of gateway logs;
    /// one type for a repartition topic, whose events were re-keyed by that
    /// entity by the instances that read the logs (see `docs/SCALING.md`).
    pub entities: Vec<u8>,
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
    /// How far before its committed position a partition this member takes
    /// over is read again to rebuild feature state (0: start cold).
    pub rebuild_ms: u64,
}

impl KafkaInput {
    /// The longest feature window, plus ten minutes for messages stamped out
    /// of order around its start.
    pub const DEFAULT_REBUILD_MS: u64 = crate::features::LONGEST_WINDOW_MS as u64 + 600_000;
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
    /// Before the partition's committed offset: read to rebuild state only.
    rebuild: bool,
    /// When it was read: how long it has waited for the other partitions.
    arrived: Instant,
}

/// Writers remembered per partition (the oldest heard is forgotten first).
const MAX_WRITERS: usize = 256;
/// Offsets remembered as handed out ahead per partition; past this the
/// record is dropped, and a partition that comes back may count those
/// messages again (logged).
const MAX_AHEAD: usize = 100_000;

/// A writer of a repartition topic, as one partition has heard from it.
#[derive(Debug, Clone, Copy)]
struct Writer {
    /// The newest time it has vouched for in this partition: nothing it
    /// sends later is older (a message's time or a watermark).
    frontier: i64,
    heard: Instant,
    ended: bool,
    /// Its last frame said it had caught up with its input.
    idle: bool,
}

#[derive(Default)]
struct Part {
    /// Queued messages, one queue per writer (0: messages without one, as
    /// every message of a gateway-log topic), each in the partition's order.
    queues: Vec<(u64, VecDeque<Msg>)>,
    /// The writers of a repartition topic heard in this partition.
    writers: HashMap<u64, Writer>,
    /// Offsets handed out past [`Part::handed_through`] (a writer's message
    /// handed before an older-offset one of a slower writer). Kept when the
    /// partition is revoked: should it come back, these are in this member's
    /// state already and are skipped.
    ahead: BTreeSet<i64>,
    /// Offsets to skip when read (see `ahead`).
    skip: BTreeSet<i64>,
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
    /// Messages before this offset are read to rebuild state only (the
    /// partition's committed offset when it was taken over).
    rebuild_until: Option<i64>,
    /// Past it, messages the previous owner handed out ahead of its
    /// committed offset ([`Acked::ahead`]): read to rebuild state only too.
    rebuild_ahead: Vec<(i64, i64)>,
}

impl Part {
    /// Whether this partition, with nothing queued, holds back a message
    /// stamped `ts` that has `waited` in another's queue: it might still
    /// deliver something older. Not when it has already delivered something
    /// at least as new (what it sends next is, by its own order, not older),
    /// or when both it has been silent and the message has waited `idle` —
    /// unless the broker is known to hold more of it (`behind`: its high
    /// watermark is past what was read), in which case it is only slow to
    /// deliver, and is waited for up to [`STALLED`] (Kafka Streams' rule
    /// since KIP-695). Without that, a broker that served one partition's
    /// fetches a few seconds late let the others run an hour ahead: 36 % of
    /// a 100,000-line replay came late.
    ///
    /// Following a stream (`at_end_is_final` false), a partition at its end
    /// is waited for too, and the wait counts from when the message arrived,
    /// as Streams' `max.task.idle.ms` does: "at its end" only says that the
    /// broker had nothing more when last asked, and a producer's next
    /// messages land on the partitions one by one. A partition quiet for a
    /// while is no evidence that it will stay so: when a shipper sent
    /// minutes of logs at once after a pause, the first partition to deliver
    /// was read minutes ahead of the others, up to 40 % of the events came
    /// behind the watermark, and which ticks saw them — hence which
    /// sliding-window thresholds were crossed — changed from run to run.
    /// The price is latency on a quiet partition's neighbours: up to `idle`.
    fn holds_back(
        &self,
        ts: i64,
        waited: Duration,
        idle: Duration,
        at_end_is_final: bool,
        behind: impl FnOnce() -> bool,
    ) -> bool {
        self.is_empty()
            && !(self.eof && at_end_is_final)
            && self.newest.is_none_or(|n| ts > n)
            && self.heard.is_some_and(|h| {
                let silent = h.elapsed();
                // Delivered neither a message nor its end since it was assigned:
                // nothing is known of it yet (a slow broker's first fetches took
                // seconds for three partitions of four, and the fourth ran an
                // hour ahead).
                silent < idle
                    || (!at_end_is_final && waited < idle)
                    || (!self.eof && silent < STALLED.max(idle) && (self.next.is_none() || behind()))
            })
            || self.writer_holds_back(ts, idle)
    }

    /// Whether a writer of this partition with nothing queued, neither
    /// ended nor caught up with its input, has vouched only for times before
    /// `ts`: it may still send something older (the partition rule above,
    /// per writer). A writer says when it has caught up
    /// ([`FrameKind::Idle`]), so its silence is not taken for idleness: it
    /// is waited for up to [`STALLED`] (or `idle`, if longer). Read past
    /// after `max_idle` of silence, an address engine blocked on a loaded
    /// broker for a few seconds had thousands of its copies handed out
    /// behind the readers' watermark, and the entity engines denied the
    /// public mobile app key: its window held an attack without the app's
    /// ordinary traffic.
    fn writer_holds_back(&self, ts: i64, idle: Duration) -> bool {
        self.writers.iter().any(|(id, w)| {
            !w.ended
                && !w.idle
                && w.frontier < ts
                && w.heard.elapsed() < STALLED.max(idle)
                && self.queues.iter().all(|(q, m)| q != id || m.is_empty())
        })
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(|(_, q)| q.is_empty())
    }

    /// Messages queued, over its writers' queues.
    fn queued(&self) -> usize {
        self.queues.iter().map(|(_, q)| q.len()).sum()
    }

    /// The queued message with the smallest time (ties to the earlier
    /// writer queue): its time and its queue.
    fn head(&self) -> Option<(i64, usize)> {
        self.queues.iter().enumerate().filter_map(|(i, (_, q))| q.front().map(|m| (m.ts, i))).min()
    }

    fn push(&mut self, writer: u64, m: Msg) {
        match self.queues.iter_mut().find(|(w, _)| *w == writer) {
            Some((_, q)) => q.push_back(m),
            None => self.queues.push((writer, VecDeque::from([m]))),
        }
    }

    /// Takes the head of queue `i`; an emptied writer queue is dropped.
    fn pop(&mut self, i: usize) -> Option<Msg> {
        let (_, q) = self.queues.get_mut(i)?;
        let m = q.pop_front();
        if q.is_empty() && self.queues.len() > 1 {
            self.queues.swap_remove(i);
        }
        m
    }

    /// The last offset below which every message read has been handed out:
    /// what an acknowledgement may commit (writers' queues are handed out
    /// in time order, not in the partition's).
    /// Messages read only to rebuild state lie before the committed offset
    /// and never hold it back (counting them would commit an offset below
    /// the one the partition was taken over at).
    fn handed_through(&self) -> Option<i64> {
        let first_new = |q: &VecDeque<Msg>| q.iter().find(|m| !m.rebuild).map(|m| m.offset);
        match self.queues.iter().filter_map(|(_, q)| first_new(q)).min() {
            Some(first_queued) => Some(first_queued - 1),
            None => self.next.map(|n| n - 1),
        }
    }

    /// [`Acked::ahead`] for an acknowledgement up to `next`: the offsets
    /// from `next` to the newest handed out, less the messages held back.
    fn ahead_ranges(&self, next: i64) -> Vec<(i64, i64)> {
        let Some(&last) = self.ahead.last() else { return Vec::new() };
        let mut held: Vec<i64> = self
            .queues
            .iter()
            .flat_map(|(_, q)| q.iter())
            .filter(|m| !m.rebuild && m.offset >= next && m.offset < last)
            .map(|m| m.offset)
            .collect();
        held.sort_unstable();
        let mut ranges = Vec::new();
        let mut from = next;
        for h in held {
            if h > from {
                ranges.push((from, h - 1));
            }
            from = h + 1;
        }
        if from <= last {
            ranges.push((from, last));
        }
        ranges
    }

    /// Whether the message at `offset` is read only to rebuild state.
    fn rebuilds(&mut self, offset: i64) -> bool {
        if self.rebuild_until.is_some_and(|until| offset < until) {
            return true;
        }
        self.rebuild_until = None;
        while self.rebuild_ahead.first().is_some_and(|(_, to)| *to < offset) {
            self.rebuild_ahead.remove(0);
        }
        self.rebuild_ahead.first().is_some_and(|(from, _)| *from <= offset)
    }

    /// Notes what writer `id` vouched for with a message stamped `ts`.
    fn heard_from(&mut self, id: u64, ts: i64, kind: FrameKind) {
        if !self.writers.contains_key(&id)
            && self.writers.len() >= MAX_WRITERS
            && let Some(oldest) = self.writers.iter().min_by_key(|(_, w)| w.heard).map(|(k, _)| *k)
        {
            self.writers.remove(&oldest);
        }
        let w =
            self.writers.entry(id).or_insert(Writer { frontier: ts, heard: Instant::now(), ended: false, idle: false });
        w.frontier = w.frontier.max(ts);
        w.heard = Instant::now();
        w.ended |= kind == FrameKind::End;
        w.idle = kind == FrameKind::Idle;
    }
}

/// How long a partition the broker holds more of may deliver nothing before
/// the others are read past it (a stalled broker or partition; counted as
/// reordered or late events, and visible as consumer lag).
const STALLED: Duration = Duration::from_secs(30);

/// Messages queued this long with none handed out is past every hold
/// ([`STALLED`], [`HOLD_REVOKE`]): reported with what each partition holds.
const STUCK: Duration = Duration::from_secs(60);

/// What the rebalance callbacks and the source share.
#[derive(Default)]
struct Shared {
    /// Offsets (next to read) acknowledged but not yet committed, with the
    /// newest timestamp acknowledged on the partition (committed as the
    /// offset's metadata: where a rebuild of its windows starts from).
    acked: HashMap<(String, i32), Acked>,
    /// The offset after the newest message of each partition this member has
    /// handed to the engine (what its feature state already holds), kept
    /// after the partition is revoked: a partition that comes back is rebuilt
    /// only from there.
    applied: HashMap<(String, i32), i64>,
    /// Partitions being rebuilt: their committed offset when assigned.
    rebuild_until: HashMap<(String, i32), i64>,
    /// Partitions taken over: what their previous owner handed out past its
    /// committed offset ([`Acked::ahead`]).
    rebuild_ahead: HashMap<(String, i32), Vec<(i64, i64)>>,
    /// Revoked partitions' offsets handed out ahead ([`Part::ahead`]).
    ahead: HashMap<(String, i32), BTreeSet<i64>>,
    /// Partitions gained (with where their rebuild ends, and what else is
    /// read to rebuild only) and lost since the source last looked.
    assigned: Vec<Gained>,
    revoked: Vec<(String, i32)>,
    commit_errors: u64,
    /// Partitions this member reads now.
    assigned_now: usize,
    /// Rebalance callbacks (revokes and assignments) served so far, and
    /// whether the last left this member waiting for a share.
    generation: u64,
    awaiting: bool,
    /// Messages behind the partitions' ends, summed over the assigned ones,
    /// as librdkafka's last statistics said (`None` before the first).
    lag: Option<i64>,
    /// Set while the engine waits on a checkpoint with a round handed out
    /// and not yet acknowledged ([`KafkaSource::keep_alive`]): a revoke that
    /// arrives then is held ([`Shared::held`]) instead of served.
    holding: bool,
    /// Set while [`KafkaSource::poll`] polls its consumer: a revoke that
    /// arrives then is held too, for the partitions' messages held back
    /// behind ones already handed out ([`Part::ahead`]) to go first.
    polling: bool,
    /// A revoke held until the round in flight is acknowledged and the
    /// partitions' held-back messages are handed out, and since when.
    /// librdkafka lets the application answer a rebalance after its
    /// callback returns. Answered at once, the round's offsets were never
    /// committed and the partitions' next owner counted its events again;
    /// and a partition given up with a gap (a slower writer's message not
    /// yet handed out, newer offsets already counted) could be committed
    /// only below the gap, so its next owner counted those newer ones again
    /// (a broker that keeps no commit metadata), or, told only how far the
    /// old owner had read, never counted the gap.
    held: Option<(TopicPartitionList, Instant)>,
    /// The held revoke waits for a round's acknowledgement (it came during
    /// that round's checkpoint).
    held_round: bool,
    /// The held revoke is counted in `revokes_held` (it waited for
    /// something: a round, or held-back messages).
    held_counted: bool,
    /// Messages handed out out of time order because they were held back
    /// behind newer offsets and their partition was being given up.
    gap_handed: u64,
    /// Revokes held so far, and of those, served before their round was
    /// acknowledged because it took longer than [`HOLD_REVOKE`].
    revokes_held: u64,
    revokes_released_early: u64,
    /// Messages read from the brokers and not yet handed to the engine, as
    /// of the last poll.
    queued: u64,
    /// Their payload bytes, which `input.kafka.buffer` bounds.
    queued_bytes: u64,
    /// Times messages sat queued or unread for [`STUCK`] with none handed out.
    stalls: u64,
    /// librdkafka's view of each partition it fetches (its last statistics).
    fetching: Vec<String>,
}

/// Partitions described in a stall report, at most.
const MAX_FETCH_VIEW: usize = 64;

/// A partition assigned to this member, as the rebalance callback planned it.
struct Gained {
    topic: String,
    partition: i32,
    /// [`Part::rebuild_until`], [`Part::rebuild_ahead`].
    rebuild_until: Option<i64>,
    rebuild_ahead: Vec<(i64, i64)>,
}

/// Longest a revoke is held for the round in flight (or a third of
/// `max.poll.interval.ms`, if shorter): the group's other members wait for
/// this one meanwhile (up to that interval, past which it is dropped from
/// the group), so a checkpoint stuck on an unreachable broker gives the
/// partitions up with its round unacknowledged (their next owner reads it
/// again: at-least-once) rather than stall them.
const HOLD_REVOKE: Duration = Duration::from_secs(10);

/// An acknowledged position of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acked {
    next: i64,
    /// Newest message timestamp acknowledged.
    ts: i64,
    /// Offsets past `next` handed out and acknowledged too, as inclusive
    /// ranges: a repartition topic's writers are handed out in time order,
    /// not the partition's, so a slower writer's message may be held back
    /// behind newer offsets already counted. Whoever takes the partition
    /// over after a crash applies these to state only and counts the rest
    /// (a partition given up in a rebalance or at the end of a run hands
    /// its held-back messages out first, and has none).
    ahead: Vec<(i64, i64)>,
}

/// Most ranges of [`Acked::ahead`] a commit carries (Kafka keeps 4 KiB of
/// commit metadata by default); past that, none: the next owner counts
/// those messages again (at-least-once) rather than miss any.
const MAX_AHEAD_RANGES: usize = 100;

impl Acked {
    fn merge(&mut self, other: Acked) {
        self.next = self.next.max(other.next);
        self.ts = self.ts.max(other.ts);
        // The later acknowledgement's view of what is ahead is the current one.
        let next = self.next;
        self.ahead = other.ahead;
        self.ahead.retain(|(_, to)| *to >= next);
    }
}

/// The commit metadata that carries a partition's newest acknowledged
/// message time (and what was handed out past the committed offset): a
/// small JSON object, so other tools can read it.
fn commit_metadata(a: &Acked) -> String {
    if a.ahead.is_empty() || a.ahead.len() > MAX_AHEAD_RANGES {
        return format!("{{\"gatewatch_time_ms\":{}}}", a.ts);
    }
    let ranges: Vec<String> = a.ahead.iter().map(|(from, to)| format!("[{from},{to}]")).collect();
    format!("{{\"gatewatch_time_ms\":{},\"gatewatch_ahead\":[{}]}}", a.ts, ranges.join(","))
}

/// The time [`commit_metadata`] wrote, if these bytes are that (another
/// client may have committed anything, or nothing), and the ranges it
/// handed out ahead.
fn metadata_time(bytes: &[u8]) -> Option<(i64, Vec<(i64, i64)>)> {
    #[derive(serde::Deserialize)]
    struct Meta {
        gatewatch_time_ms: i64,
        #[serde(default)]
        gatewatch_ahead: Vec<(i64, i64)>,
    }
    let m = serde_json::from_slice::<Meta>(bytes).ok()?;
    let mut ahead = m.gatewatch_ahead;
    ahead.retain(|(from, to)| from <= to);
    ahead.truncate(MAX_AHEAD_RANGES);
    Some((m.gatewatch_time_ms, ahead))
}

/// Adds `(topic, partition)` at `a.next` with `a.ts` as metadata.
fn add_acked(tpl: &mut TopicPartitionList, topic: &str, partition: i32, a: &Acked) -> Result<(), KafkaError> {
    let mut e = tpl.add_partition(topic, partition);
    e.set_offset(Offset::Offset(a.next))?;
    e.set_metadata(commit_metadata(a));
    Ok(())
}

/// Each entry's topic, partition, offset and metadata bytes. rdkafka's own
/// `metadata()` panics on bytes that are not UTF-8, and commit metadata is
/// whatever a client of the group wrote: it is read raw here.
fn entries(tpl: &TopicPartitionList) -> Vec<(String, i32, Offset, Vec<u8>)> {
    let raw = tpl.ptr();
    tpl.elements()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            // SAFETY: `elements()` lists the list's `cnt` entries in order, so
            // entry i exists; librdkafka keeps `metadata_size` bytes at
            // `metadata` (or a null pointer) while the list lives, and the
            // bytes are copied before it is dropped.
            let meta = unsafe {
                let el = &*(*raw).elems.add(i);
                if el.metadata.is_null() || el.metadata_size == 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(el.metadata as *const u8, el.metadata_size).to_vec()
                }
            };
            (e.topic().to_string(), e.partition(), e.offset(), meta)
        })
        .collect()
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

    /// Revokes held for a round in flight or for held-back messages, and of
    /// those, released before that was done (its events then count twice:
    /// see [`HOLD_REVOKE`]).
    pub fn revokes_held(&self) -> (u64, u64) {
        let s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (s.revokes_held, s.revokes_released_early)
    }

    /// Messages held back behind newer offsets that were handed out because
    /// their partition was being given up or the run was ending.
    pub fn gap_handed(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).gap_handed
    }

    /// Messages read from the brokers and not yet handed to the engine:
    /// with the consumer lag, where the unread lines are.
    pub fn queued(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).queued
    }

    /// Their payload bytes, as of the last poll: what `input.kafka.buffer`
    /// bounds (a partition is paused once it holds its share).
    pub fn queued_bytes(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).queued_bytes
    }

    /// Times messages sat queued for a minute with none handed out.
    pub fn stalls(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).stalls
    }

    /// Messages not yet read, over the assigned partitions (librdkafka's
    /// consumer lag, refreshed every `statistics.interval.ms`).
    pub fn lag(&self) -> Option<i64> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).lag
    }
}

struct Ctx {
    shared: Arc<Mutex<Shared>>,
    rebuild_ms: u64,
    /// For a consumer outside the group that reads the last message a
    /// committed offset covers, when the offset carries no time.
    probe: rdkafka::ClientConfig,
}

impl Ctx {
    /// The timestamp of the message just before each committed offset (the
    /// last one it covers), read by a consumer outside the group.
    fn times_before(&self, committed: &HashMap<(String, i32), i64>) -> HashMap<(String, i32), i64> {
        let mut out = HashMap::new();
        let consumer: BaseConsumer = match self.probe.create() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kafka: could not open a consumer to read committed positions' times");
                return out;
            }
        };
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in committed {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(o - 1));
        }
        if let Err(e) = consumer.assign(&tpl) {
            tracing::warn!(error = %e, "kafka: could not read committed positions' times");
            return out;
        }
        let started = Instant::now();
        while out.len() < committed.len() && started.elapsed() < REBUILD_LOOKUP {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else { continue };
            let k = (m.topic().to_string(), m.partition());
            if let Some(ts) = m.timestamp().to_millis()
                && committed.get(&k).is_some_and(|o| m.offset() < *o)
            {
                out.entry(k).or_insert(ts);
            }
        }
        out
    }
}

/// How long the rebalance callback waits for the brokers' answers (committed
/// offsets, offsets by time) before it starts a partition without a rebuild.
const REBUILD_LOOKUP: Duration = Duration::from_secs(10);

impl Ctx {
    /// Sets, in the assignment, where each partition taken over starts: the
    /// first message stamped at or after (its committed message time −
    /// `rebuild_ms`), but not before what this member already applied of it.
    /// Messages from there to the committed offset rebuild the partition's
    /// share of feature state (windows up to an hour long) without being
    /// judged or written again. Without it an instance that restarts or takes
    /// a partition over from another starts every entity of it from nothing.
    /// On any failure the partition starts at its committed offset, cold.
    fn plan_rebuild(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        if self.rebuild_ms == 0 || tpl.count() == 0 {
            return;
        }
        let committed = match consumer.committed_offsets(tpl.clone(), REBUILD_LOOKUP) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kafka: reading committed offsets failed; partitions start without a rebuild");
                return;
            }
        };
        let applied = self.shared.lock().unwrap_or_else(PoisonError::into_inner).applied.clone();
        let mut at = HashMap::new();
        let mut time = HashMap::new();
        let mut ahead = HashMap::new();
        for (topic, p, offset, meta) in entries(&committed) {
            // No committed offset: the group has never read it, and starts at its beginning.
            let Offset::Offset(committed) = offset else { continue };
            let k = (topic, p);
            if committed <= 0 || applied.get(&k).is_some_and(|a| *a >= committed) {
                continue; // nothing before it, or held here up to there already
            }
            if let Some((ts, mut handed)) = metadata_time(&meta) {
                time.insert(k.clone(), ts);
                handed.retain(|(_, to)| *to >= committed);
                if !handed.is_empty() {
                    ahead.insert(k.clone(), handed);
                }
            }
            at.insert(k, committed);
        }
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).rebuild_ahead.extend(ahead);
        // Brokers that keep no commit metadata (or offsets committed by
        // another client): the time of the last message the offset covers.
        let unknown: HashMap<_, _> =
            at.iter().filter(|(k, _)| !time.contains_key(*k)).map(|(k, o)| (k.clone(), *o)).collect();
        if !unknown.is_empty() {
            time.extend(self.times_before(&unknown));
        }
        let mut times = TopicPartitionList::new();
        for (k, _) in at.iter() {
            match time.get(k) {
                Some(ts) => {
                    let _ = times.add_partition_offset(
                        &k.0,
                        k.1,
                        Offset::Offset(ts.saturating_sub(self.rebuild_ms as i64)),
                    );
                }
                None => {
                    tracing::warn!(topic = %k.0, partition = k.1, "kafka: the time of the committed position is unknown; the partition starts without a rebuild")
                }
            }
        }
        if times.count() == 0 {
            return;
        }
        let found = match consumer.offsets_for_times(times, REBUILD_LOOKUP) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "kafka: looking up offsets by time failed; partitions start without a rebuild");
                return;
            }
        };
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        for e in found.elements() {
            if e.error().is_err() {
                continue;
            }
            let k = (e.topic().to_string(), e.partition());
            let (Offset::Offset(start), Some(&committed)) = (e.offset(), at.get(&k)) else { continue };
            let start = start.max(applied.get(&k).copied().unwrap_or(0));
            if start < committed && tpl.set_partition_offset(&k.0, k.1, Offset::Offset(start)).is_ok() {
                tracing::info!(topic = %k.0, partition = k.1, from = start, to = committed, "kafka: rebuilding the partition's feature state");
                s.rebuild_until.insert(k, committed);
            }
        }
    }
}

impl Ctx {
    /// Commits what was acknowledged of the partitions leaving, then gives
    /// them up (at the callback, or later for a revoke that was held).
    fn give_up(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) -> rdkafka::error::KafkaResult<()> {
        use rdkafka::consumer::RebalanceProtocol;
        self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
        match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        }
    }
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
        // librdkafka's view of the partitions it fetches, for a stall report.
        let fetching: Vec<String> = statistics
            .topics
            .iter()
            .flat_map(|(name, t)| t.partitions.iter().map(move |(id, p)| (name, id, p)))
            .filter(|(_, id, p)| **id >= 0 && p.desired)
            .take(MAX_FETCH_VIEW)
            .map(|(name, id, p)| {
                format!(
                    "{name}/{id}: fetch_state={} next={} app={} committed={} hi={} fetchq={}",
                    p.fetch_state, p.next_offset, p.app_offset, p.committed_offset, p.hi_offset, p.fetchq_cnt
                )
            })
            .collect();
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.lag = Some(lag);
        s.fetching = fetching;
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::log_error(&error, reason);
    }
}

impl ConsumerContext for Ctx {
    /// rdkafka's own sequence (revoke, assign, callbacks), with the
    /// assignment's start offsets set for a rebuild first.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr;
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.plan_rebuild(consumer, tpl);
                let r = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                // The source starts a gained partition unpaused, and so never
                // resumes it; an assignment clears only librdkafka's own pause
                // flag, not the application's, which outlives the unassign:
                // a partition paused with its queue full when the group took
                // it back was never fetched again (`tests/kafka.rs::
                // a_partition_paused_with_its_queue_full_…`, the bench's
                // stall). The two are made to agree here. Resuming a
                // partition that is not paused does nothing.
                if r.is_ok()
                    && let Err(e) = consumer.resume(tpl)
                {
                    tracing::warn!(error = %e, "kafka: resuming assigned partitions failed");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
                r
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
                if (s.holding || s.polling) && s.held.is_none() {
                    s.held = Some((tpl.clone(), Instant::now()));
                    s.held_round = s.holding;
                    s.held_counted = s.holding;
                    s.revokes_held += u64::from(s.holding);
                    tracing::debug!(
                        partitions = tpl.count(),
                        "kafka: revoke held for the round in flight and the partitions' held-back messages"
                    );
                    return;
                }
                drop(s);
                self.give_up(consumer, tpl)
            }
            other => {
                tracing::warn!(error = ?other, "kafka: rebalance failed; dropping the assignment");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "kafka: applying a rebalance failed");
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        // What was acknowledged on the partitions leaving is committed now, so
        // their next owner starts right after it instead of re-reading.
        let mut commit = TopicPartitionList::new();
        for e in tpl.elements() {
            let k = (e.topic().to_string(), e.partition());
            if let Some(a) = s.acked.remove(&k) {
                let _ = add_acked(&mut commit, &k.0, k.1, &a);
            }
            s.rebuild_until.remove(&k);
            s.rebuild_ahead.remove(&k);
            s.revoked.push(k);
        }
        s.generation += 1;
        s.awaiting = true;
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
            let k = (e.topic().to_string(), e.partition());
            let rebuild_until = s.rebuild_until.remove(&k);
            let rebuild_ahead = s.rebuild_ahead.remove(&k).unwrap_or_default();
            s.assigned.push(Gained { topic: k.0, partition: k.1, rebuild_until, rebuild_ahead });
        }
        s.generation += 1;
        s.awaiting = false;
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
    // Looked up several times per message: a fast hash of two small
    // integers the brokers assigned (SipHash was most of this source's own cost).
    parts: FxHashMap<Tp, Part>,
    queued_bytes: usize,
    /// The newest offset and message time handed out per partition since
    /// the last acknowledgement (messages read to rebuild state excepted) ...
    handed: FxHashMap<Tp, (i64, i64)>,
    /// ... and the newest message handed out of all.
    last_handed: Option<(Tp, i64)>,
    last_commit: Instant,
    spec: KafkaInput,
    keep: usize,
    /// Replay: end once every assigned partition is at its end.
    stop_at_end: bool,
    /// Replay: since when it has been waiting for the group to give it partitions.
    awaiting_since: Option<Instant>,
    last_end_check: Option<Instant>,
    name: String,
    /// The newest message time handed out (rebuild excepted), and when an
    /// older one was last reported ([`KafkaSource::report_behind`]).
    newest_handed: i64,
    behind_reported: Option<Instant>,
    /// The last poll handed records out.
    emitted: bool,
    /// `max.poll.interval.ms` (librdkafka's default unless configured).
    poll_interval: Duration,
    /// The run is ending ([`Source::wind_down`]): polls hand out only
    /// messages held back behind ones already handed out.
    winding_down: bool,
    /// Since when messages have been queued with none handed out, and when
    /// that was last reported ([`KafkaSource::watch_for_stall`]).
    stuck_since: Option<Instant>,
    stuck_reported: Option<Instant>,
}

impl KafkaSource {
    /// Joins the group and subscribes; partitions arrive with the first polls.
    pub fn open(spec: &KafkaInput, keep: usize, stop_at_end: bool) -> io::Result<KafkaSource> {
        let shared = Arc::new(Mutex::new(Shared { awaiting: true, ..Shared::default() }));
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
            .create_with_context(Ctx {
                shared: shared.clone(),
                rebuild_ms: spec.rebuild_ms,
                probe: spec
                    .client
                    .config(&[("enable.auto.commit", "false"), ("auto.offset.reset", "error")])
                    .set("group.id", format!("{}.rebuild-probe", spec.group))
                    .clone(),
            })
            .map_err(kafka_io)?;
        let topics: Vec<&'static str> = spec.topics.iter().map(|t| &*Box::leak(t.clone().into_boxed_str())).collect();
        consumer.subscribe(&topics).map_err(kafka_io)?;
        // A topic name with a NUL byte cannot have been subscribed to above.
        let topic_names = topics.iter().filter_map(|t| std::ffi::CString::new(*t).ok()).collect();
        let interval = spec.client.properties.get("max.poll.interval.ms").and_then(|v| v.parse::<u64>().ok());
        let poll_interval = Duration::from_millis(interval.unwrap_or(300_000));
        Ok(KafkaSource {
            consumer,
            shared,
            topic_names,
            name: format!("kafka:{}", spec.topics.join(",")),
            topics,
            parts: FxHashMap::default(),
            queued_bytes: 0,
            handed: FxHashMap::default(),
            last_handed: None,
            last_commit: Instant::now(),
            spec: spec.clone(),
            keep,
            stop_at_end,
            awaiting_since: None,
            last_end_check: None,
            newest_handed: i64::MIN,
            behind_reported: None,
            emitted: false,
            poll_interval,
            winding_down: false,
            stuck_since: None,
            stuck_reported: None,
        })
    }

    /// Takes in what the rebalance callbacks recorded (a function of the
    /// fields it changes, so it can run while a message borrows the consumer).
    fn apply_rebalance(
        shared: &Mutex<Shared>,
        topics: &[&'static str],
        parts: &mut FxHashMap<Tp, Part>,
        queued_bytes: &mut usize,
        handed: &mut FxHashMap<Tp, (i64, i64)>,
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
                if !part.ahead.is_empty() {
                    shared.lock().unwrap_or_else(PoisonError::into_inner).ahead.insert((t.clone(), p), part.ahead);
                }
            }
            // Handed out but not acknowledged: processed here, and read again by
            // the next owner (at-least-once); never committed from here.
            handed.remove(&(i, p));
            tracing::info!(topic = %t, partition = p, "kafka: partition revoked");
        }
        for Gained { topic: t, partition: p, rebuild_until, rebuild_ahead } in assigned {
            if let Some(i) = index(&t) {
                let skip = shared.lock().unwrap_or_else(PoisonError::into_inner).ahead.remove(&(t.clone(), p));
                let part = parts.entry((i, p)).or_default();
                part.heard = Some(Instant::now());
                // Resumed by the assignment (see `Ctx::rebalance`).
                part.paused = false;
                part.rebuild_until = rebuild_until;
                part.rebuild_ahead = rebuild_ahead;
                part.skip = skip.unwrap_or_default();
                tracing::info!(topic = %t, partition = p, "kafka: partition assigned");
            }
        }
        shared.lock().unwrap_or_else(PoisonError::into_inner).assigned_now = parts.len();
    }

    /// Reads what the consumer has ready into the partitions' queues. With
    /// `always`, the consumer is polled at least once even when the queues
    /// are full (a full partition is paused, so this adds at most a message
    /// already fetched): a poll is what keeps this member in its group.
    fn fill(&mut self, wait: Duration, always: bool) {
        let per_part = (self.spec.buffer_bytes / self.parts.len().max(1)).max(1 << 20);
        let mut timeout = wait;
        let mut first = always;
        // The clocks, read again every 256 messages (the first may have been
        // waited for; those after it come without waiting, well within a
        // millisecond each): three readings per message were 2 % of an
        // instance's work.
        let mut clocks: Option<(i64, Instant)> = None;
        let mut taken = 0u32;
        while std::mem::take(&mut first) || self.queued_bytes < self.spec.buffer_bytes {
            let Some(r) = self.consumer.poll(timeout) else { break };
            timeout = Duration::ZERO;
            if taken.is_multiple_of(256) {
                clocks = None;
            }
            taken = taken.wrapping_add(1);
            let (now_ms, now) = *clocks.get_or_insert_with(|| (crate::event::time::now_ms(), Instant::now()));
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
            // A repartition topic's messages carry their writer in a frame
            // line (crate::repartition); a gateway log's lines are never read so.
            let repartitioned = self.spec.entities.get(t as usize).is_some_and(|e| *e != super::ALL_ENTITIES);
            let raw = m.payload().unwrap_or_default();
            let (frame, lines) = match repartitioned.then(|| Frame::read(raw)).flatten() {
                Some((f, lines)) => (Some(f), lines),
                None => (None, raw),
            };
            let ts = m.timestamp().to_millis().unwrap_or(i64::MIN).min(now_ms.saturating_add(self.spec.max_future_ms));
            let offset = m.offset();
            let part = self.parts.entry(tp).or_default();
            let rebuild = part.rebuilds(offset);
            part.eof = false;
            part.heard = Some(now);
            part.next = Some(offset + 1);
            let mut writer = 0;
            if let Some(f) = frame {
                writer = f.writer;
                part.heard_from(f.writer, f.newest_ts, f.kind);
                if f.kind != FrameKind::Lines {
                    // No lines: committed with the messages around it.
                    continue;
                }
            }
            if !part.skip.is_empty() && part.skip.remove(&offset) {
                // Applied here before the partition went and came back.
                continue;
            }
            let payload = lines.to_vec();
            part.newest = Some(part.newest.map_or(ts, |n| n.max(ts)));
            part.bytes += payload.len();
            self.queued_bytes += payload.len();
            part.push(writer, Msg { ts, offset, payload, rebuild, arrived: now });
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
        let (ts, tp, q) = self.parts.iter().filter_map(|(tp, p)| p.head().map(|(ts, q)| (ts, *tp, q))).min()?;
        let waited = self.parts[&tp].queues[q].1.front().map_or(Duration::ZERO, |m| m.arrived.elapsed());
        let idle = Duration::from_millis(self.spec.max_idle_ms);
        let final_end = self.stop_at_end;
        let held =
            self.parts.iter().any(|(other, p)| p.holds_back(ts, waited, idle, final_end, || self.behind(*other, p)));
        (!held).then_some(tp)
    }

    /// Logs (at debug level, at most once a second) a message handed out
    /// older than one handed before it — an event the engine will count as
    /// reordered — with what every partition and writer looked like then:
    /// which one was read past, and whether it had been silent, at its end
    /// or never heard from.
    fn report_behind(&mut self, tp: Tp, writer: u64, ts: i64) {
        if !tracing::enabled!(tracing::Level::DEBUG)
            || self.behind_reported.is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.behind_reported = Some(Instant::now());
        let parts = self.describe_parts();
        tracing::debug!(
            topic = self.topics[tp.0 as usize],
            partition = tp.1,
            writer = format!("{writer:x}"),
            ts,
            newest_handed = self.newest_handed,
            behind_ms = self.newest_handed - ts,
            "kafka: a message handed out behind an earlier one; partitions: {parts}"
        );
    }

    /// Every partition's state, for a log line: what it last delivered,
    /// whether it is at its end, paused or behind the brokers, what it has
    /// queued, and whether it holds back the next message.
    fn describe_parts(&self) -> String {
        let ms = |i: Instant| i.elapsed().as_millis();
        let head =
            self.parts.values().filter_map(|p| p.head().map(|(ts, q)| (ts, p.queues[q].1.front()))).min_by_key(|h| h.0);
        let waited = head.and_then(|h| h.1).map_or(Duration::ZERO, |m| m.arrived.elapsed());
        let idle = Duration::from_millis(self.spec.max_idle_ms);
        let mut parts: Vec<String> = Vec::with_capacity(self.parts.len());
        for (tp, part) in &self.parts {
            let writers: Vec<String> = part
                .writers
                .iter()
                .map(|(id, w)| {
                    format!(
                        "{id:x}:frontier={},heard={}ms ago,ended={},idle={}",
                        w.frontier,
                        ms(w.heard),
                        w.ended,
                        w.idle
                    )
                })
                .collect();
            let holds = head
                .is_some_and(|(ts, _)| part.holds_back(ts, waited, idle, self.stop_at_end, || self.behind(*tp, part)));
            parts.push(format!(
                "{}/{}: newest={:?} next={:?} eof={} paused={} behind={} heard={:?}ms ago queued={} ({} B, head {:?}) \
                 ahead={} rebuild_until={:?} holds_back={holds} writers=[{}]",
                self.topics[tp.0 as usize],
                tp.1,
                part.newest,
                part.next,
                part.eof,
                part.paused,
                self.behind(*tp, part),
                part.heard.map(ms),
                part.queued(),
                part.bytes,
                part.head().and_then(|(_, q)| part.queues[q].1.front()).map(|m| (m.offset, m.ts)),
                part.ahead.len(),
                part.rebuild_until,
                writers.join(" ")
            ));
        }
        parts.join("; ")
    }

    /// Counts what is queued for `/metrics` and, when messages have sat
    /// queued with none handed out for [`STUCK`] — longer than any hold
    /// should last — or a partition has had more to read for as long with
    /// nothing handed out, says so once a minute with every partition's
    /// state and librdkafka's, and counts it, so that a stall is seen and
    /// can be explained; the partitions not paused here are resumed.
    fn watch_for_stall(&mut self, emitted: bool) {
        let queued: usize = self.parts.values().map(Part::queued).sum();
        {
            let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.queued = queued as u64;
            s.queued_bytes = self.queued_bytes as u64;
        }
        // Or nothing queued, but a partition the brokers hold more of than
        // was read, or one that has delivered neither a message nor its end.
        let unread = || self.parts.iter().any(|(tp, p)| self.behind(*tp, p) || (p.next.is_none() && !p.eof));
        if emitted || (queued == 0 && !unread()) {
            self.stuck_since = None;
            return;
        }
        let since = *self.stuck_since.get_or_insert_with(Instant::now);
        if since.elapsed() < STUCK || self.stuck_reported.is_some_and(|t| t.elapsed() < STUCK) {
            return;
        }
        self.stuck_reported = Some(Instant::now());
        let (held, held_round, fetching) = {
            let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.stalls += 1;
            (
                s.held.as_ref().map(|(tpl, since)| (tpl.count(), since.elapsed().as_millis())),
                s.held_round,
                s.fetching.join("; "),
            )
        };
        // A partition librdkafka will not fetch for a reason this source
        // does not know of is asked again: every one not paused here is
        // resumed (a no-op for those that are fetching).
        let mut tpl = TopicPartitionList::new();
        for (tp, part) in &self.parts {
            if !part.paused {
                tpl.add_partition(self.topics[tp.0 as usize], tp.1);
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.resume(&tpl)
        {
            tracing::warn!(error = %e, "kafka: resuming stalled partitions failed");
        }
        tracing::warn!(
            queued,
            queued_bytes = self.queued_bytes,
            stuck_s = since.elapsed().as_secs(),
            winding_down = self.winding_down,
            draining = ?self.draining(),
            held_revoke = ?held,
            held_round,
            "kafka: nothing handed out for a minute with messages queued or unread; partitions: {}; librdkafka: {fetching}",
            self.describe_parts()
        );
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

    /// Replay: whether the group gave this reader no partition at all (its
    /// other members hold them all), which ends the replay at once; an
    /// error when no assignment came for longer than the group may take to
    /// rebalance (`max.poll.interval.ms`, which a member that died holds
    /// its partitions for, plus a margin), instead of waiting forever.
    fn replay_has_nothing_to_read(&mut self) -> io::Result<bool> {
        let share = Source::share(self);
        if !share.awaiting {
            self.awaiting_since = None;
            if share.empty {
                tracing::warn!(
                    group = %self.spec.group,
                    "kafka: the group gave this reader no partition (its other members hold them all): nothing to replay"
                );
            }
            return Ok(share.empty);
        }
        let since = *self.awaiting_since.get_or_insert_with(Instant::now);
        let limit = self.poll_interval + Duration::from_secs(30);
        if since.elapsed() > limit {
            return Err(io::Error::other(format!(
                "no partition of {} assigned in {} s (group {}): are the brokers' group coordinator and the group's other members well?",
                self.spec.topics.join(","),
                limit.as_secs(),
                self.spec.group
            )));
        }
        Ok(false)
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

    /// Commits what was acknowledged (synchronously), each offset with its
    /// partition's newest acknowledged message time as metadata.
    fn commit(&mut self) -> io::Result<()> {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if s.acked.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), a) in &s.acked {
            add_acked(&mut tpl, t, *p, a).map_err(kafka_io)?;
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

    /// Answers a held revoke once nothing keeps it: the round in flight is
    /// acknowledged and no partition leaving has a message held back behind
    /// newer offsets already handed out. What was acknowledged of the
    /// partitions is committed, then they are given up (and dropped here
    /// at once, so that nothing more of them is handed out). With `force`
    /// (closing), or once held [`HOLD_REVOKE`], they go as they are.
    fn release_held_revoke(&mut self, force: bool) {
        let hold = HOLD_REVOKE.min(self.poll_interval / 3);
        let (tpl, early) = {
            let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            let early = match s.held.as_ref() {
                None => return,
                Some((tpl, since)) => {
                    let waiting = s.held_round || self.has_gap(tpl);
                    if waiting && !force && since.elapsed() < hold {
                        return;
                    }
                    waiting
                }
            };
            s.held_round = false;
            if early {
                s.revokes_released_early += 1;
            }
            let Some((tpl, _)) = s.held.take() else { return };
            (tpl, early)
        };
        if early {
            tracing::warn!(
                held_ms = hold.as_millis() as u64,
                "kafka: a revoke waited as long as it may for the round in flight or for messages held back; the partitions go as they are (their next owner reads again what was not acknowledged)"
            );
        }
        if let Err(e) = self.consumer.context().give_up(&self.consumer, &tpl) {
            tracing::warn!(error = %e, "kafka: giving up revoked partitions failed");
        }
        Self::apply_rebalance(&self.shared, &self.topics, &mut self.parts, &mut self.queued_bytes, &mut self.handed);
    }

    /// Whether a partition of `tpl` has messages held back behind newer
    /// offsets already handed out.
    fn has_gap(&self, tpl: &TopicPartitionList) -> bool {
        tpl.elements().iter().any(|e| self.tp(e.topic(), e.partition()).is_some_and(|tp| self.gap(tp)))
    }

    fn gap(&self, tp: Tp) -> bool {
        self.parts.get(&tp).is_some_and(|p| !p.ahead.is_empty())
    }

    fn tp(&self, topic: &str, partition: i32) -> Option<Tp> {
        self.topics.iter().position(|t| *t == topic).map(|i| (i as u16, partition))
    }

    /// The partitions whose held-back messages go out before anything else:
    /// those of a held revoke, or every one when the run is ending (`None`:
    /// none, read as usual).
    fn draining(&self) -> Option<Vec<Tp>> {
        if self.winding_down {
            return Some(self.parts.keys().copied().filter(|tp| self.gap(*tp)).collect());
        }
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let (tpl, _) = s.held.as_ref()?;
        let tps = tpl.elements().into_iter().filter_map(|e| self.tp(e.topic(), e.partition()));
        Some(tps.filter(|tp| self.gap(*tp)).collect())
    }

    /// Hands out, in offset order, the messages of `tps` held back behind
    /// newer offsets already handed out (a slower writer's, merged by
    /// time), so that what is committed covers exactly what was counted.
    fn hand_out_gaps(&mut self, tps: &[Tp], out: &mut Records, max: usize, applied: &mut Vec<(Tp, i64)>) {
        let before = out.len();
        let handed = applied.len();
        for &tp in tps {
            while out.len() - before < max {
                let Some(part) = self.parts.get_mut(&tp) else { break };
                let Some(&last) = part.ahead.last() else { break };
                let lowest =
                    part.queues.iter().enumerate().filter_map(|(i, (_, q))| q.front().map(|m| (m.offset, i))).min();
                match lowest {
                    Some((offset, q)) if offset < last => self.hand_out(tp, q, out, applied),
                    // Nothing queued below what was handed out: no gap after all.
                    _ => {
                        part.ahead.clear();
                        break;
                    }
                }
            }
        }
        let gap = (applied.len() - handed) as u64;
        if gap > 0 {
            let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.gap_handed += gap;
            if s.held.is_some() && !s.held_counted {
                s.held_counted = true;
                s.revokes_held += 1;
            }
        }
    }

    /// Hands out the head of queue `q` of partition `tp`, line by line.
    fn hand_out(&mut self, tp: Tp, q: usize, out: &mut Records, applied: &mut Vec<(Tp, i64)>) {
        let topic = self.topics[tp.0 as usize];
        let Some(part) = self.parts.get_mut(&tp) else { return };
        let writer = part.queues.get(q).map_or(0, |(w, _)| *w);
        let Some(msg) = part.pop(q) else { return };
        part.bytes -= msg.payload.len();
        self.queued_bytes -= msg.payload.len();
        let entities = self.spec.entities.get(tp.0 as usize).copied().unwrap_or(super::ALL_ENTITIES);
        let mut line_no = 0u32;
        // memchr finds the newlines a vector at a time: splitting byte by
        // byte cost ~2,700 instructions a line, 6 % of an instance's work
        // (docs/PERFORMANCE.md, "counted in instructions").
        let mut from = 0;
        let ends = memchr::memchr_iter(b'\n', &msg.payload).chain(std::iter::once(msg.payload.len()));
        for end in ends {
            let line = &msg.payload[from..end];
            from = end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            line_no += 1;
            let pos = Position::Kafka { topic, partition: tp.1, offset: msg.offset, line: line_no };
            let kept = &line[..line.len().min(self.keep)];
            out.push_as(kept, line.len() as u64, pos, msg.rebuild, entities);
        }
        if !msg.rebuild {
            let through = part.handed_through().unwrap_or(msg.offset);
            if msg.offset > through {
                if part.ahead.len() >= MAX_AHEAD {
                    tracing::warn!(
                        topic,
                        partition = tp.1,
                        "kafka: too many messages handed out ahead of a slower writer to remember; should the partition come back here, some may count twice"
                    );
                    part.ahead.clear();
                }
                part.ahead.insert(msg.offset);
            }
            if part.ahead.first().is_some_and(|o| *o <= through) {
                part.ahead = part.ahead.split_off(&(through + 1));
            }
            let h = self.handed.entry(tp).or_insert((through, msg.ts));
            *h = (h.0.max(through), h.1.max(msg.ts));
        }
        applied.push((tp, msg.offset + 1));
        self.last_handed = Some((tp, msg.offset));
        if !msg.rebuild {
            if msg.ts < self.newest_handed {
                self.report_behind(tp, writer, msg.ts);
            }
            self.newest_handed = self.newest_handed.max(msg.ts);
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
        // A revoke held for a round whose acknowledgement never came (a
        // checkpoint that failed is the end of the run; belt and braces)
        // waits no longer for it, only for held-back messages.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).held_round = false;
        self.release_held_revoke(false);
        // Acknowledged offsets are committed even when nothing new arrives.
        if self.last_commit.elapsed() >= Duration::from_millis(self.spec.commit_every_ms) {
            self.commit()?;
        }
        let before = out.len();
        if !self.winding_down {
            let wait = if self.next_ready().is_some() { Duration::ZERO } else { Duration::from_millis(50) };
            self.shared.lock().unwrap_or_else(PoisonError::into_inner).polling = true;
            self.fill(wait, false);
            self.shared.lock().unwrap_or_else(PoisonError::into_inner).polling = false;
            // A revoke that came meanwhile is answered now unless messages
            // of its partitions are held back (handed out just below).
            self.release_held_revoke(false);
        }
        let mut applied: Vec<(Tp, i64)> = Vec::new();
        if let Some(tps) = self.draining() {
            self.hand_out_gaps(&tps, out, max, &mut applied);
        } else {
            while out.len() - before < max {
                let Some(tp) = self.next_ready() else { break };
                let Some((_, queue)) = self.parts.get(&tp).and_then(Part::head) else { break };
                self.hand_out(tp, queue, out, &mut applied);
            }
        }
        if !applied.is_empty() {
            let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            for (tp, next) in applied {
                let e = s.applied.entry((self.topics[tp.0 as usize].to_string(), tp.1)).or_insert(next);
                *e = (*e).max(next);
            }
        }
        self.resume_drained();
        let emitted = out.len() > before;
        self.emitted = emitted;
        self.watch_for_stall(emitted);
        if self.stop_at_end && !emitted && self.replay_has_nothing_to_read()? {
            return Ok(Poll::End);
        }
        if self.stop_at_end
            && !emitted
            && !self.parts.is_empty()
            && self.parts.values().all(|p| p.eof && p.is_empty())
            && self.last_end_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last_end_check = Some(Instant::now());
            if self.at_end() {
                return Ok(Poll::End);
            }
        }
        Ok(if emitted { Poll::More } else { Poll::Idle })
    }

    /// A checkpoint that waits on the brokers (a repartition sink's events
    /// not yet acknowledged) must not cost this member its place in the
    /// group: past `max.poll.interval.ms` without a poll it leaves, and a
    /// rebalance it cannot answer while it waits evicts it; either way the
    /// records it handed out since its last commit are read and counted
    /// again by the partitions' next owner. Polled here, an assignment is
    /// served as it comes and a revoke is held until the round in flight is
    /// acknowledged ([`Shared::held`], at most [`HOLD_REVOKE`]).
    fn keep_alive(&mut self) {
        {
            let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.holding = true;
            // A revoke held for held-back messages now waits for the round
            // that hands them out, too.
            s.held_round |= s.held.is_some();
        }
        // Only a revoke held too long goes now.
        self.release_held_revoke(false);
        self.fill(Duration::ZERO, true);
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).holding = false;
    }

    fn share(&self) -> super::Share {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        super::Share {
            generation: s.generation,
            awaiting: s.awaiting,
            empty: !s.awaiting && s.assigned_now == 0,
            // Only after a poll that handed nothing out: what the poll before
            // handed out has been pushed and checkpointed by then.
            caught_up: !s.awaiting && !self.emitted && self.parts.values().all(|p| p.eof && p.is_empty()),
        }
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
            for ((t, p), (o, ts)) in self.handed.drain() {
                let ahead = self.parts.get(&(t, p)).map(|part| part.ahead_ranges(o + 1)).unwrap_or_default();
                let a = Acked { next: o + 1, ts, ahead };
                match s.acked.entry((self.topics[t as usize].to_string(), p)) {
                    std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(a),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(a);
                    }
                }
            }
        }
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).held_round = false;
        self.release_held_revoke(false);
        if self.last_commit.elapsed() >= Duration::from_millis(self.spec.commit_every_ms) {
            self.commit()?;
        }
        Ok(())
    }

    fn wind_down(&mut self) -> bool {
        self.winding_down = true;
        true
    }

    fn close(&mut self) -> io::Result<()> {
        self.release_held_revoke(true);
        self.commit()
    }
}

/// A revoke left held would keep the group waiting on this member until
/// librdkafka's close gave up on it.
impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.release_held_revoke(true);
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
            p.push(0, Msg { ts: 0, offset: 0, payload: Vec::new(), rebuild: false, arrived: Instant::now() });
        }
        p
    }

    #[test]
    fn commit_metadata_carries_the_time_and_anything_else_is_no_time() {
        let acked = |next, ts, ahead: &[(i64, i64)]| Acked { next, ts, ahead: ahead.to_vec() };
        let t = 1_793_600_454_992;
        assert_eq!(metadata_time(commit_metadata(&acked(5, t, &[])).as_bytes()), Some((t, vec![])));
        let ahead = [(6, 8), (10, 10)];
        assert_eq!(metadata_time(commit_metadata(&acked(5, t, &ahead)).as_bytes()), Some((t, ahead.to_vec())));
        // Too many ranges for Kafka's 4 KiB of metadata: none (counted again, never missed).
        let many: Vec<(i64, i64)> = (0..=MAX_AHEAD_RANGES as i64).map(|i| (10 + 2 * i, 10 + 2 * i)).collect();
        let text = commit_metadata(&acked(5, t, &many));
        assert!(text.len() < 4096);
        assert_eq!(metadata_time(text.as_bytes()), Some((t, vec![])));
        let most: Vec<(i64, i64)> =
            many[..MAX_AHEAD_RANGES].iter().map(|(f, _)| (*f * 1_000_000, *f * 1_000_000)).collect();
        assert!(commit_metadata(&acked(5, t, &most)).len() < 4096, "the most ranges a commit carries fit");
        for other in
            [&b""[..], b"\xff\xfe", b"{}", b"{\"gatewatch_time_ms\":\"x\"}", b"12345", b"{\"gatewatch_time_ms\":1e400}"]
        {
            assert_eq!(metadata_time(other), None, "{other:?}");
        }
        let mut a = acked(10, 500, &[(12, 12)]);
        a.merge(acked(11, 900, &[(13, 14)]));
        assert_eq!(a, acked(11, 900, &[(13, 14)]), "the furthest offset, the newest time, the later view ahead");
    }

    #[test]
    fn what_was_handed_out_ahead_is_told_in_ranges_around_what_was_held_back() {
        let msg = |offset| Msg { ts: 0, offset, payload: Vec::new(), rebuild: false, arrived: Instant::now() };
        let mut p = Part::default();
        // Offsets 3 and 6 held back (a slower writer's); 4, 5, 7, 8 handed out.
        p.push(1, msg(3));
        p.push(1, msg(6));
        p.push(2, msg(9));
        p.ahead = [4, 5, 7, 8].into_iter().collect();
        assert_eq!(p.ahead_ranges(3), [(4, 5), (7, 8)]);
        assert_eq!(Part::default().ahead_ranges(3), [], "nothing ahead");
        // The next owner: before 3 and in those ranges, state only.
        let mut next = Part { rebuild_until: Some(3), rebuild_ahead: p.ahead_ranges(3), ..Part::default() };
        let rebuilt: Vec<i64> = (0..11).filter(|o| next.rebuilds(*o)).collect();
        assert_eq!(rebuilt, [0, 1, 2, 4, 5, 7, 8]);
    }

    #[test]
    fn an_empty_partition_holds_back_only_what_it_might_still_precede() {
        let idle = Duration::from_secs(2);
        let recent = Some(Duration::from_millis(10));
        let (behind, caught_up) = (|| true, || false);
        // How long the message at stake has waited (past `idle` unless said).
        let long = Duration::from_secs(3);
        // Nothing queued, heard from lately, its newest older than the head: wait.
        assert!(part(false, false, recent, Some(100)).holds_back(150, long, idle, true, caught_up));
        assert!(
            part(false, false, recent, None).holds_back(150, long, idle, true, caught_up),
            "assigned, nothing read yet"
        );
        // Its own newest is as new as the head: what it sends next is not older.
        assert!(!part(false, false, recent, Some(150)).holds_back(150, long, idle, true, behind));
        assert!(!part(false, false, recent, Some(200)).holds_back(150, long, idle, true, behind));
        // Something queued (the merge compares heads), at its end, or silent too long.
        assert!(!part(true, false, recent, Some(100)).holds_back(150, long, idle, true, behind));
        assert!(!part(false, true, recent, Some(100)).holds_back(150, long, idle, true, behind));
        // Following a stream, its end is only where the broker was when last
        // asked: waited for `idle` as any partition heard from lately.
        assert!(part(false, true, recent, Some(100)).holds_back(150, long, idle, false, caught_up));
        let quiet = part(false, true, Some(Duration::from_secs(60)), Some(100));
        assert!(!quiet.holds_back(150, long, idle, false, behind));
        // ... and however long it has been quiet, a message that has just
        // arrived waits `idle` for it (a burst after a pause lands on the
        // partitions one by one).
        assert!(quiet.holds_back(150, Duration::ZERO, idle, false, caught_up));
        assert!(!quiet.holds_back(150, Duration::ZERO, idle, true, caught_up), "a replay's end is final");
        let silent = Some(Duration::from_secs(3));
        assert!(!part(false, false, silent, Some(100)).holds_back(150, long, idle, true, caught_up));
        // Silent since it was assigned, nothing read: unknown, so waited for.
        let assigned = part(false, false, silent, None);
        assert!(assigned.holds_back(150, long, idle, true, caught_up), "nothing known of it yet");
        assert!(!part(false, false, Some(STALLED + idle), None).holds_back(150, long, idle, true, caught_up));
        // Silent, but the broker holds more of it: slow, not idle; waited for
        // until it is stalled.
        assert!(part(false, false, silent, Some(100)).holds_back(150, long, idle, true, behind));
        assert!(!part(false, false, Some(STALLED + idle), Some(100)).holds_back(150, long, idle, true, behind));
    }

    /// A partition of a repartition topic interleaves writers, each in its
    /// own time order: its messages go out by time across the writers' queues,
    /// a writer that has vouched only for older times holds newer ones back
    /// (even at the partition's end), and acknowledgements cover only what
    /// was handed out without a gap.
    #[test]
    fn a_partitions_writers_are_merged_by_time_and_the_slowest_holds_back() {
        let msg = |ts, offset| Msg { ts, offset, payload: Vec::new(), rebuild: false, arrived: Instant::now() };
        let idle = Duration::from_secs(2);
        let long = Duration::from_secs(3);
        let mut p = Part { eof: true, ..Part::default() };
        // Writer 1 is an hour ahead of writer 2, in the same partition.
        for (w, ts, offset) in [(1, 3_600_000, 0), (1, 3_600_500, 1), (2, 1_000, 2), (2, 2_000, 3)] {
            p.heard_from(w, ts, FrameKind::Lines);
            p.push(w, msg(ts, offset));
            p.next = Some(offset + 1);
        }
        let mut order = Vec::new();
        while let Some((ts, q)) = p.head() {
            if p.holds_back(ts, long, idle, true, || false) {
                break;
            }
            order.push(p.pop(q).expect("queued").offset);
            if order.len() == 2 {
                // Writer 2's queue is empty and it vouched for 2,000 only.
                assert_eq!(p.handed_through(), Some(-1), "offset 0 and 1 wait behind 2 and 3");
            }
        }
        assert_eq!(order, [2, 3], "writer 2's older events first; writer 1's wait for writer 2");
        // A watermark (or newer data) from writer 2 releases writer 1's.
        p.heard_from(2, 3_600_000, FrameKind::Watermark);
        let (ts, _) = p.head().expect("queued");
        assert!(!p.holds_back(ts, long, idle, true, || false));
        assert!(p.holds_back(3_600_001, long, idle, true, || false), "writer 2 has not vouched for later");
        // A writer that ended, or said it caught up, holds nothing; one
        // silent past max_idle still does, until STALLED.
        p.heard_from(2, 3_600_000, FrameKind::End);
        assert!(!p.holds_back(3_600_001, long, idle, true, || false));
        let silent =
            |secs| Writer { frontier: 0, heard: Instant::now() - Duration::from_secs(secs), ended: false, idle: false };
        p.writers.insert(3, silent(3));
        assert!(p.holds_back(3_600_001, long, idle, true, || false), "silent is not idle");
        p.heard_from(3, 0, FrameKind::Idle);
        assert!(!p.holds_back(3_600_001, long, idle, true, || false), "caught up");
        p.heard_from(3, 0, FrameKind::Watermark);
        assert!(p.holds_back(3_600_001, long, idle, true, || false), "speaking again");
        p.writers.insert(3, silent(STALLED.as_secs() + 1));
        assert!(!p.holds_back(3_600_001, long, idle, true, || false), "stalled");
        while let Some((_, q)) = p.head() {
            order.push(p.pop(q).expect("queued").offset);
        }
        assert_eq!(order, [2, 3, 0, 1]);
        assert_eq!(p.handed_through(), Some(3), "everything read was handed out");
    }
}
