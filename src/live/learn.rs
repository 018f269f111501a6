//! What the other engines decided, taught to this one from the decisions
//! topic.
//!
//! Several engines in one consumer group each judge the partitions they hold;
//! when a partition changes hands (a restart, an instance joining or dying),
//! its new reader must know what the previous one decided, or it makes the
//! decision again — or a weaker one, which on the topic (the last value per
//! key is what API instances serve) lifts the stronger. Each engine that
//! publishes to a decisions topic therefore reads it to its end before it
//! judges its first line, then follows it; every decision read (another
//! engine's or its own) goes into its decision memory, as a restart restores
//! its own from the state directory.
//!
//! Tombstones are not applied: expiry tombstones follow the wall clock while
//! the memory keeps event time (a replay of last month's log) and remembers
//! offences past expiry, and an operator's lift does not make a single engine
//! forget a decision either. The memory keeps one decision per entity,
//! whatever the topic holds.
//!
//! The sessions the other engines saw opened go, as the feed reads them,
//! into the registry this instance's API judges session ids by
//! ([`crate::sessions`]); the engine's own features judge only by the lines
//! it reads, so that a replay of the same lines decides alike.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use super::feed::{DecisionFeed, ReadEnd, Record, restored};
use crate::decision::Decision;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::sink::kafka::KafkaSinkSpec;

/// Decisions read while the engine runs that wait for it, at most; past
/// that they are counted (`not_learned`) and dropped, which costs at most a
/// decision made twice.
pub const QUEUE: usize = 10_000;

/// The topic's reader, or `None` (logged) when it cannot be read: the engine
/// then decides on what it knows itself.
pub fn open(spec: &KafkaSinkSpec) -> Option<DecisionFeed> {
    match DecisionFeed::open(spec) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(error = %e, "the decisions topic cannot be read: this engine knows only its own decisions");
            None
        }
    }
}

/// Teaches `engine` every decision on the topic up to its end; the number
/// learned, `None` when stopped first.
///
/// When the topic gives nothing for `patience` (the sink's `learn_wait`:
/// the broker went away mid-read), the engine starts on what it has
/// learned, logged as a warning, rather than wait with its API closed: the
/// decision API serves only once the engine has started, and the gateways
/// need it more than this engine needs the last of the others' decisions,
/// which it learns as they arrive once the broker is back ([`start`]
/// follows the topic from where this read stopped). Until then it may
/// decide again on an entity another instance decided on.
pub fn read_to_end(
    engine: &mut Engine,
    feed: &DecisionFeed,
    metrics: &Metrics,
    stop: &AtomicBool,
    patience: Duration,
) -> Option<u64> {
    let mut learned = 0u64;
    let end = feed.read_to_end_with(metrics, stop, Some(patience), |r| {
        if let Record::Put(d) = r
            && let Some(r) = restored(&d)
        {
            engine.restore_decision(r);
            learned += 1;
        }
    });
    metrics.feed_records.with_label_values(&["learned"]).inc_by(learned);
    match end {
        ReadEnd::Read(records) => {
            tracing::info!(records, learned, "decisions topic read to its end: what every instance decided is known")
        }
        ReadEnd::Stalled(records) => tracing::warn!(
            records,
            learned,
            waited_ms = patience.as_millis() as u64,
            "the decisions topic gave nothing for learn_wait before its end: starting on what is known; \
             the rest is learned as it arrives"
        ),
        ReadEnd::Stopped => return None,
    }
    Some(learned)
}

/// Decisions read from the topic since the engine last took them.
pub struct Learner {
    rx: Receiver<Decision>,
    feed: Arc<DecisionFeed>,
    /// How long [`Learner::catch_up`] waits for the topic at most.
    patience: Duration,
}

impl Learner {
    /// Gives the engine what was read since; called between two rounds of
    /// input, on the engine's thread.
    pub fn apply(&self, engine: &mut Engine) {
        while let Ok(d) = self.rx.try_recv() {
            if let Some(r) = restored(&d) {
                engine.restore_decision(r);
            }
        }
    }

    /// Gives the engine every decision on the topic up to its end as of
    /// now; called when the source's share changed (a rebalance gave this
    /// engine partitions), before anything read under it is judged. The
    /// previous owner published its decisions before it committed and let
    /// the partitions go, so they are on the topic by then, but the thread
    /// following it may not have read them yet: judged first, the new owner
    /// decided again (a `challenge` beside the previous owner's `deny` of
    /// the addresses' /24). Waits at most the sink's `learn_wait`, then
    /// goes on with what it has (logged).
    pub fn catch_up(&self, engine: &mut Engine) {
        let started = Instant::now();
        let Some(ends) = self.feed.ends(self.patience.min(Duration::from_secs(5))) else {
            tracing::warn!(
                "the decisions topic's end is unknown (brokers away): judging the new share on what is known"
            );
            self.apply(engine);
            return;
        };
        while !self.feed.has_read(&ends) {
            if started.elapsed() >= self.patience {
                tracing::warn!(
                    waited_ms = started.elapsed().as_millis() as u64,
                    "the decisions topic was not read to its end in learn_wait: judging the new share on what is known"
                );
                break;
            }
            self.apply(engine);
            std::thread::sleep(Duration::from_millis(5));
        }
        self.apply(engine);
        tracing::debug!(
            waited_ms = started.elapsed().as_millis() as u64,
            "decisions topic read to its end before judging a new share"
        );
    }
}

/// Reads the topic to its end into `engine` (and its opened sessions into
/// `opened`), then follows it on a thread of its own until `stop`. `None`
/// when the topic cannot be read or followed.
pub fn start(
    engine: &mut Engine,
    spec: &KafkaSinkSpec,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
    opened: Option<Arc<crate::sessions::OpenedSessions>>,
) -> Option<Learner> {
    let mut feed = open(spec)?;
    if let Some(o) = opened {
        feed.fill_opened_sessions(o);
    }
    let feed = Arc::new(feed);
    let patience = Duration::from_millis(spec.learn_wait_ms);
    read_to_end(engine, &feed, metrics, stop, patience)?;
    let (tx, rx) = sync_channel(QUEUE);
    let (metrics, stop, follower) = (metrics.clone(), stop.clone(), feed.clone());
    let spawned = std::thread::Builder::new().name("decision-learn".into()).spawn(move || {
        let feed = follower;
        feed.follow_with(&metrics, &stop, |r| {
            let Some(Record::Put(d)) = r else { return };
            let kind = if tx.try_send(d).is_ok() { "learned" } else { "not_learned" };
            metrics.feed_records.with_label_values(&[kind]).inc();
        })
    });
    match spawned {
        Ok(_) => Some(Learner { rx, feed, patience }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow the decisions topic: later decisions of other instances are not known");
            None
        }
    }
}
