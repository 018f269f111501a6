//! Sources: where log lines come from, each line with its position, and the
//! acknowledgement that tells a source when everything up to a position is
//! durably reflected downstream.
//!
//! A source only produces bytes; parsing, features and decisions are the
//! engine's. The driver ([`crate::driver`]) polls a source, feeds the engine,
//! and after a checkpoint (batch applied, decisions persisted, sinks flushed)
//! acknowledges the newest position it covered. A file has nothing to commit;
//! a Kafka source commits its offsets there, so a crash never loses a record it
//! acknowledged (at-least-once).
//!
//! A new source is a file here implementing [`Source`] plus one arm in
//! [`open`]. The shortest one:
//!
//! ```
//! use gatewatch::source::{Poll, Position, Records, Source};
//!
//! /// Lines held in memory (tests, examples).
//! struct Fixed(Vec<&'static str>, u64);
//!
//! impl Source for Fixed {
//!     fn name(&self) -> String {
//!         "fixed".into()
//!     }
//!     fn poll(&mut self, out: &mut Records, max: usize) -> std::io::Result<Poll> {
//!         for line in self.0.drain(..max.min(self.0.len())) {
//!             self.1 += 1;
//!             out.push(line.as_bytes(), line.len() as u64, Position::Line { no: self.1, offset: 0 });
//!         }
//!         Ok(if self.0.is_empty() { Poll::End } else { Poll::More })
//!     }
//! }
//! ```

pub mod follow;
pub mod kafka;
pub mod lines;
pub mod reader;
pub mod stdin;

use std::io;
use std::path::Path;

pub use follow::Follower;
pub use kafka::{KafkaInput, KafkaSource, KafkaStats};
pub use lines::LineReader;
pub use reader::ReaderSource;
pub use stdin::StdinSource;

/// Where a record sits in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Position {
    /// A line of a file or stream: 1-based number and byte offset of its first byte.
    Line {
        #[serde(rename = "line")]
        no: u64,
        offset: u64,
    },
    /// A line of a Kafka message: the message's topic, partition and offset,
    /// and the line's 1-based number within it (a message may hold several).
    Kafka { topic: &'static str, partition: i32, offset: i64, line: u32 },
}

/// One line of input (without its terminator).
#[derive(Debug)]
pub struct Line<'a> {
    pub pos: Position,
    /// The line, or its first `keep` bytes when it is longer.
    pub bytes: &'a [u8],
    /// The full length of the line in bytes.
    pub len: u64,
    /// Read again only to rebuild feature state (a Kafka partition this
    /// instance takes over, from before its committed offset): its effects
    /// (events, decisions, dead letters) were produced when it was first read.
    pub rebuild: bool,
    /// Which entity types the line's event counts for, one bit per
    /// [`crate::features::EntityType::index`] ([`ALL_ENTITIES`] but for a
    /// Kafka topic configured otherwise: a repartitioned copy of an event
    /// counts only for the entity it was re-keyed by).
    pub entities: u8,
}

/// Every entity type: what a line counts for unless its source says otherwise.
pub const ALL_ENTITIES: u8 = (1 << crate::features::EntityType::ALL.len()) - 1;

impl Line<'_> {
    /// Whether the line was longer than the bytes kept.
    pub fn truncated(&self) -> bool {
        (self.bytes.len() as u64) < self.len
    }
}

/// Records a poll produced, their bytes in one reused buffer (no allocation per line).
#[derive(Debug, Default)]
pub struct Records {
    buf: Vec<u8>,
    items: Vec<(usize, usize, u64, Position, bool, u8)>,
}

impl Records {
    /// Appends a record: `bytes` as kept (at most the source's limit), `len` its full length.
    pub fn push(&mut self, bytes: &[u8], len: u64, pos: Position) {
        self.push_as(bytes, len, pos, false, ALL_ENTITIES);
    }

    /// Appends a record, read again only to rebuild state when `rebuild`
    /// ([`Line::rebuild`]), counting for the entity types in `entities`
    /// ([`Line::entities`]).
    pub fn push_as(&mut self, bytes: &[u8], len: u64, pos: Position, rebuild: bool, entities: u8) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.items.push((start, self.buf.len(), len, pos, rebuild, entities));
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Line<'_>> {
        self.items.iter().map(|&(s, e, len, pos, rebuild, entities)| Line {
            pos,
            bytes: &self.buf[s..e],
            len,
            rebuild,
            entities,
        })
    }

    /// Position of the newest record, what an acknowledgement after these covers.
    pub fn last_position(&self) -> Option<Position> {
        self.items.last().map(|i| i.3)
    }
}

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Records were appended, and more may be ready at once.
    More,
    /// Nothing new for now (a followed file or stream): poll again later.
    Idle,
    /// The input has ended (records may have been appended by this call).
    End,
}

/// Which part of its input a source reads, where readers split one input
/// between them (a member of a Kafka consumer group); a file is read whole
/// and keeps the default.
///
/// The writers of repartition topics need it ([`crate::repartition`]): an
/// instance whose share of the input changes may next send events older
/// than what it sent before (a partition it gained is behind), and one that
/// waits for its share may be about to, so its readers must hold the other
/// writers' newer events until it speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    /// Changes each time the share is taken away or given (a rebalance).
    pub generation: u64,
    /// In the group but not yet given a share (joining, or between a
    /// revoke and the next assignment).
    pub awaiting: bool,
    /// Given a share, and it is empty (more members than partitions).
    pub empty: bool,
    /// Everything of the share read so far has been handed out and the
    /// brokers had nothing more when last asked (a writer of repartition
    /// topics then tells its readers not to wait for it).
    pub caught_up: bool,
}

/// A source of log lines.
pub trait Source: Send {
    /// Shown in dead letters and errors (a path, `-`, a topic).
    fn name(&self) -> String;

    /// Appends at most `max` records to `out`.
    fn poll(&mut self, out: &mut Records, max: usize) -> io::Result<Poll>;

    /// Everything up to and including `pos` is reflected in feature state,
    /// persisted decisions and flushed sinks; a source with offsets commits here.
    fn ack(&mut self, _pos: Position) -> io::Result<()> {
        Ok(())
    }

    /// The input is done with (end of input, shutdown), after the engine has
    /// finished and flushed every sink: a source with offsets commits the last
    /// acknowledged ones here.
    fn close(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Bytes read and total bytes, when known (replay's progress bar).
    fn progress(&self) -> Option<(u64, u64)> {
        None
    }

    /// This source's share of its input as of the last poll: the records
    /// that poll returned were read under it.
    fn share(&self) -> Share {
        Share::default()
    }

    /// Called while the engine waits on something else (a broker
    /// acknowledging what a sink sent) between two polls: a source that must
    /// show signs of life (a consumer group drops a member that does not poll
    /// within `max.poll.interval.ms`, and its partitions' uncommitted records
    /// are then read again elsewhere) does so here, keeping what it reads for
    /// the next poll. A change of share found here is reported by
    /// [`Source::share`] after the next poll, as any other.
    fn keep_alive(&mut self) {}

    /// The run is ending: the next polls hand out only what was held back
    /// behind records already handed out (a Kafka partition's slower
    /// writer, merged by time), then nothing, so that the positions
    /// committed on [`Source::close`] cover exactly what was counted.
    /// Returns whether it may have such records; a source that holds
    /// nothing back (a file, stdin) says no and is not polled again, so a
    /// busy followed file cannot keep a stopping run reading.
    fn wind_down(&mut self) -> bool {
        false
    }
}

/// The source for `path` (`-` is stdin): read to the end (`follow = false`,
/// replay) or followed as it grows (`follow = true`, live mode; a file that
/// exists is opened at once, so following starts from this moment).
pub fn open(path: &Path, keep: usize, follow: bool, from_start: bool) -> io::Result<Box<dyn Source>> {
    let stdin = path == Path::new("-");
    Ok(match (stdin, follow) {
        (true, true) => Box::new(StdinSource::spawn(keep)),
        (false, true) => {
            let mut f = Follower::new(path, keep, from_start);
            f.start()?;
            Box::new(f)
        }
        (true, false) => Box::new(ReaderSource::stdin(keep)),
        (false, false) => Box::new(ReaderSource::file(path, keep)?),
    })
}
