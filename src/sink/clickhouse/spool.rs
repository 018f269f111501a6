//! Where insert batches wait while ClickHouse cannot take them: one file per
//! batch, in a directory of the state dir, up to a byte bound.
//!
//! Each process spools into its own subdirectory, locked while it runs
//! (`File::try_lock`), so two runs sharing a state dir never send each
//! other's batches twice. At start a process adopts the batches of every
//! subdirectory whose lock is free (its process is gone), oldest first: a
//! restart after an outage still delivers what the previous run spooled.
//!
//! A file is written under a temporary name, synced, then renamed, so a
//! crash leaves either the whole batch or nothing. Its name carries what
//! the sender needs without reading it: order, table, batch identity, rows
//! and the time range its rows cover (to find the batch in ClickHouse).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One spooled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub table: String,
    pub batch: u64,
    pub rows: u64,
    /// Time range of its rows (ms), for the lookup that makes a retry idempotent.
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
    pub bytes: u64,
}

/// The batches of one process, in the order they were spooled.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Held for as long as the spool is open.
    _lock: File,
    max_bytes: u64,
    bytes: u64,
    next_seq: u64,
    queue: VecDeque<Entry>,
}

const EXT: &str = "rowbinary";

fn name(seq: u64, e: &Entry) -> String {
    format!("{seq:012}.{}.{:016x}.{}.{}.{}.{EXT}", e.table, e.batch, e.rows, e.min_ts_ms, e.max_ts_ms)
}

/// Parses a spool file name back into (sequence, entry without path and bytes).
fn parse(file: &str) -> Option<(u64, Entry)> {
    let stem = file.strip_suffix(&format!(".{EXT}"))?;
    let mut p = stem.split('.');
    let seq = p.next()?.parse().ok()?;
    let table = p.next()?.to_string();
    let batch = u64::from_str_radix(p.next()?, 16).ok()?;
    let rows = p.next()?.parse().ok()?;
    let min_ts_ms = p.next()?.parse().ok()?;
    let max_ts_ms = p.next()?.parse().ok()?;
    if p.next().is_some() || table.is_empty() {
        return None;
    }
    Some((seq, Entry { path: PathBuf::new(), table, batch, rows, min_ts_ms, max_ts_ms, bytes: 0 }))
}

/// Spooled batch files of `dir`, by sequence.
fn listed(dir: &Path) -> std::io::Result<Vec<(u64, Entry)>> {
    let mut out = Vec::new();
    for f in fs::read_dir(dir)? {
        let f = f?;
        let file = f.file_name().to_string_lossy().into_owned();
        if let Some((seq, mut e)) = parse(&file) {
            e.path = f.path();
            e.bytes = f.metadata()?.len();
            out.push((seq, e));
        } else if file.ends_with(".tmp") {
            // Cut off by a crash before its rename: never a whole batch.
            let _ = fs::remove_file(f.path());
        }
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out)
}

impl Spool {
    /// Opens this process's spool under `root`, adopting what earlier
    /// processes left there; at most `max_bytes` are kept.
    pub fn open(root: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        fs::create_dir_all(root)?;
        // `<start ms>-<pid>-<n>`: two spools opened by one process within a
        // millisecond (a sink reopened, two sinks) must not share a directory,
        // or the second finds the first's lock held and fails.
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        let dir = root.join(format!("{now}-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let lock = File::create(dir.join("lock"))?;
        lock.try_lock().map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))?;
        let mut spool = Spool { dir, _lock: lock, max_bytes, bytes: 0, next_seq: 0, queue: VecDeque::new() };
        spool.adopt(root)?;
        Ok(spool)
    }

    /// Moves in the batches of every other subdirectory of `root` whose lock
    /// is free, oldest directory first, and removes those directories.
    fn adopt(&mut self, root: &Path) -> std::io::Result<()> {
        let mut others: Vec<PathBuf> = fs::read_dir(root)?
            .filter_map(|d| d.ok())
            .map(|d| d.path())
            .filter(|p| p.is_dir() && *p != self.dir)
            .collect();
        // Named `<start ms>-<pid>-<n>`: by start time (numerically), so batches keep their order.
        others.sort_by_key(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let mut parts = name.split('-');
            let ms = parts.next().and_then(|n| n.parse::<u128>().ok()).unwrap_or(0);
            let n = parts.nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            (ms, n)
        });
        for other in others {
            let lock = match File::options().write(true).create(true).truncate(false).open(other.join("lock")) {
                Ok(f) => f,
                Err(_) => continue,
            };
            if lock.try_lock().is_err() {
                continue; // A live process owns it.
            }
            for (_, e) in listed(&other)? {
                let seq = self.next_seq;
                self.next_seq += 1;
                let path = self.dir.join(name(seq, &e));
                fs::rename(&e.path, &path)?;
                self.bytes += e.bytes;
                self.queue.push_back(Entry { path, ..e });
            }
            drop(lock);
            let _ = fs::remove_file(other.join("lock"));
            let _ = fs::remove_dir(&other);
        }
        if !self.queue.is_empty() {
            tracing::info!(
                batches = self.queue.len(),
                bytes = self.bytes,
                "clickhouse: batches spooled by an earlier run will be sent"
            );
        }
        Ok(())
    }

    /// Spools a batch; `Ok(false)` when it would pass the byte bound (the
    /// caller counts it as dropped).
    pub fn push(&mut self, table: &str, batch: u64, rows: u64, ts: (i64, i64), data: &[u8]) -> std::io::Result<bool> {
        if self.bytes + data.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        let seq = self.next_seq;
        let mut e = Entry {
            path: PathBuf::new(),
            table: table.to_string(),
            batch,
            rows,
            min_ts_ms: ts.0,
            max_ts_ms: ts.1,
            bytes: data.len() as u64,
        };
        let path = self.dir.join(name(seq, &e));
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        self.next_seq += 1;
        self.bytes += e.bytes;
        e.path = path;
        self.queue.push_back(e);
        Ok(true)
    }

    /// The oldest batch waiting.
    pub fn front(&self) -> Option<&Entry> {
        self.queue.front()
    }

    /// The bytes of a waiting batch.
    pub fn read(&self, e: &Entry) -> std::io::Result<Vec<u8>> {
        fs::read(&e.path)
    }

    /// Forgets the oldest batch (delivered).
    pub fn pop_front(&mut self) -> std::io::Result<()> {
        if let Some(e) = self.queue.pop_front() {
            self.bytes -= e.bytes;
            fs::remove_file(&e.path)?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Rows waiting.
    pub fn rows(&self) -> u64 {
        self.queue.iter().map(|e| e.rows).sum()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // An empty spool leaves nothing behind; a full one stays for the next run.
        if self.queue.is_empty() {
            let _ = fs::remove_file(self.dir.join("lock"));
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let e = Entry {
            path: PathBuf::new(),
            table: "dead_letters".into(),
            batch: 0xdead_beef,
            rows: 12,
            min_ts_ms: -5,
            max_ts_ms: 1_700_000_000_000,
            bytes: 0,
        };
        let (seq, back) = parse(&name(42, &e)).expect("parses");
        assert_eq!((seq, back), (42, e));
        assert!(parse("000000000001.events.zz.1.0.0.rowbinary").is_none());
        assert!(parse("lock").is_none());
    }

    #[test]
    fn batches_wait_in_order_within_the_bound_and_outlive_their_process() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut a = Spool::open(root.path(), 100).expect("open");
        assert!(a.push("events", 1, 3, (10, 20), &[1; 40]).expect("push"));
        assert!(a.push("features", 2, 1, (10, 20), &[2; 40]).expect("push"));
        assert!(!a.push("events", 3, 1, (10, 20), &[3; 40]).expect("push"), "past the bound");
        assert_eq!((a.len(), a.bytes(), a.rows()), (2, 80, 4));
        // A second process cannot take a live one's batches.
        let b = Spool::open(root.path(), 100).expect("open");
        assert!(b.is_empty());
        drop(b);
        drop(a); // Not empty: stays on disk.
        let mut c = Spool::open(root.path(), 100).expect("open");
        assert_eq!(c.len(), 2);
        let first = c.front().cloned().expect("front");
        assert_eq!((first.table.as_str(), first.batch, first.rows), ("events", 1, 3));
        assert_eq!(c.read(&first).expect("read"), vec![1; 40]);
        c.pop_front().expect("pop");
        assert_eq!(c.front().map(|e| e.batch), Some(2));
        c.pop_front().expect("pop");
        drop(c);
        assert_eq!(fs::read_dir(root.path()).expect("root").count(), 0, "an emptied spool leaves nothing");
    }
}
