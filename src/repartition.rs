//! The framing of repartition topics: how instances that read gateway logs
//! hand every event on, keyed by user, key, device or session, to the
//! instances that keep that entity type's features (docs/SCALING.md,
//! "Repartition topics"), and how the readers keep those events in time order.
//!
//! A partition of a repartition topic interleaves several writers, each
//! sending in its own time order. Each message says who wrote it and the
//! newest time it covers, in a first line the log formats cannot produce
//! (it starts with the ASCII record separator); a writer also sends
//! watermarks, messages without lines saying it has sent everything before
//! their time, and a last one when it stops. The reader merges the writers
//! of a partition as it merges partitions ([`crate::source::kafka`]).
//!
//! A writer id speaks for one share of the writing instance's input (its
//! partitions between two rebalances): a partition it gains may be behind
//! what it sent, so after a rebalance it writes under a new id that has
//! vouched for nothing, and while it waits for a share it keeps saying so
//! ([`crate::sink::Sink::share`]).
//!
//! The frame is in the payload rather than in Kafka headers: the brokers
//! store a header per record, and the broker the tests run (tansu on SQLite)
//! slowed to a stall when every record carried one. Lines are packed several
//! to a message per partition, and the partition is chosen here (the same
//! hash in every writer), so one message carries many events.

/// How a frame line starts.
const PREFIX: &[u8] = b"\x1egatewatch-repartition ";

/// What a message of a repartition topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Events, one canonical JSON line each, in time order.
    Lines,
    /// No lines: the writer has sent everything stamped before `newest_ts`.
    Watermark,
    /// No lines: the writer has stopped and sends nothing more.
    End,
    /// No lines: the writer has caught up with its input (sent everything
    /// it has read, through `newest_ts`); until it speaks again, readers
    /// need not wait for it. A writer's silence alone says nothing: it may
    /// be blocked on its brokers, or reading a slow partition.
    Idle,
}

/// A message's frame line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The writer (random per run; never 0).
    pub writer: u64,
    /// The newest event time the message covers (its lines', or the watermark's).
    pub newest_ts: i64,
    pub kind: FrameKind,
}

impl Frame {
    /// Appends the frame line, newline included.
    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        out.extend_from_slice(PREFIX);
        let kind = match self.kind {
            FrameKind::Lines => "",
            FrameKind::Watermark => " watermark",
            FrameKind::End => " end",
            FrameKind::Idle => " idle",
        };
        // Writing to a Vec cannot fail.
        let _ = writeln!(out, "{:016x} {}{kind}", self.writer, self.newest_ts);
    }

    /// The frame of `payload` and the lines after it; `None` for a payload
    /// without a well-formed frame line (read as plain lines).
    pub fn read(payload: &[u8]) -> Option<(Frame, &[u8])> {
        let rest = payload.strip_prefix(PREFIX)?;
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = std::str::from_utf8(&rest[..end]).ok()?;
        let lines = rest.get(end + 1..).unwrap_or_default();
        let mut fields = line.split(' ');
        let writer = u64::from_str_radix(fields.next()?, 16).ok().filter(|w| *w != 0)?;
        let newest_ts = fields.next()?.parse().ok()?;
        let kind = match fields.next() {
            None => FrameKind::Lines,
            Some("watermark") => FrameKind::Watermark,
            Some("end") => FrameKind::End,
            Some("idle") => FrameKind::Idle,
            Some(_) => return None,
        };
        if fields.next().is_some() {
            return None;
        }
        Some((Frame { writer, newest_ts, kind }, lines))
    }
}

/// The partition of `entity` among `partitions`: the same in every writer,
/// so all of an entity's events meet in one partition.
pub fn partition_of(entity: &str, partitions: i32) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(entity.as_bytes()) % partitions.max(1) as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_and_anything_else_is_plain_lines() {
        // (i64::MIN: a writer that has sent nothing yet announcing itself.)
        for (kind, newest_ts) in [
            (FrameKind::Lines, 1_772_359_200_123),
            (FrameKind::Watermark, 1_772_359_200_123),
            (FrameKind::End, 1_772_359_200_123),
            (FrameKind::Watermark, i64::MIN),
        ] {
            let f = Frame { writer: 0xfeed_beef, newest_ts, kind };
            let mut out = Vec::new();
            f.write(&mut out);
            out.extend_from_slice(b"{\"a\":1}\n{\"b\":2}");
            assert_eq!(Frame::read(&out), Some((f, &b"{\"a\":1}\n{\"b\":2}"[..])));
        }
        for plain in [
            &b"{\"ts\":1}"[..],
            b"\x1egatewatch-repartition 0 5\n",
            b"\x1egatewatch-repartition zz 5\n",
            b"\x1egatewatch-repartition 1 x\n",
            b"\x1egatewatch-repartition 1 5 later\n",
            b"\x1egatewatch-repartition 1 5 end extra\n",
            b"\x1egatewatch-repartition\n",
        ] {
            assert_eq!(Frame::read(plain), None, "{plain:?}");
        }
        assert_eq!(
            Frame::read(b"\x1egatewatch-repartition 1 5").map(|(f, l)| (f.kind, l.len())),
            Some((FrameKind::Lines, 0))
        );
    }

    #[test]
    fn an_entity_has_one_partition_and_entities_spread() {
        assert_eq!(partition_of("user-1", 8), partition_of("user-1", 8));
        let used: std::collections::BTreeSet<i32> = (0..200).map(|i| partition_of(&format!("u{i}"), 8)).collect();
        assert_eq!(used.len(), 8);
        assert_eq!(partition_of("x", 0), 0);
    }
}
