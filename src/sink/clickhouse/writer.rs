//! The ClickHouse sink: rows go to a writer thread, which inserts each
//! table's rows in batches (by count and by age) and, while the server
//! cannot take them, spools them to disk and sends them when it returns.
//!
//! The engine never waits on the network beyond the channel's bound (a
//! slow server slows the engine: back-pressure; an unreachable one does
//! not: its batches go to the spool at disk speed). Past the spool's bound a
//! batch is dropped, counted by table, and logged as an error.
//!
//! **No batch is stored twice.** Each batch has a random 64-bit identity,
//! written in every row (`batch`). A batch that failed is spooled with it
//! and, before it is sent again, looked up (`count()` of its identity
//! within its time range, a partition or two): an insert is one block and
//! atomic, so either all of its rows are there (the failure was the
//! answer, not the insert) and it is not sent again, or none are.
//!
//! **Durability.** A row is safe once inserted or spooled: at most
//! `flush_every` (default 1 s) of rows sit in memory, as rows of a Parquet
//! part sit in an unfinished file; a crash loses those, a restart sends
//! whatever the spool holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::TimestampMillisecondArray;
use datafusion::arrow::record_batch::RecordBatch;

use super::spool::{Entry, Spool};
use super::{ClickHouseError, ClickHouseSpec, rowbinary, schema};
use crate::decision::Decision;
use crate::sink::deadletter::DeadLetterColumns;
use crate::sink::parquet::DecisionColumns;
use crate::sink::{DeadLetter, Sink, SinkError, SinkHealth, Wants};

/// Decisions and dead letters are gathered to this many rows (or to the
/// next checkpoint) before they go to the writer.
const GATHER_ROWS: usize = 1024;
/// A table's buffer is inserted at this many bytes whatever its rows.
const MAX_BATCH_BYTES: usize = 32 << 20;
/// Spooled batches sent per turn of the writer's loop, so that new rows
/// keep moving while a long outage is caught up.
const DRAIN_PER_TURN: usize = 16;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(10);
/// How long the sink waits for the server when it opens.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// One insert or lookup, at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Shared between the engine's side and the writer.
#[derive(Debug, Default)]
struct Status {
    down: AtomicBool,
    errors: AtomicU64,
    dropped: AtomicU64,
}

enum Msg {
    Rows(usize, RecordBatch),
    /// Insert or spool everything buffered, then answer.
    Sync(SyncSender<()>),
}

/// Index of a table in [`super::TABLES`].
fn slot(table: &str) -> Option<usize> {
    super::TABLES.iter().position(|t| *t == table)
}

/// A sink writing to ClickHouse (`[[sinks]] type = "clickhouse"`).
pub struct ClickHouseSink {
    tx: Option<SyncSender<Msg>>,
    handle: Option<JoinHandle<()>>,
    wants: Wants,
    decisions: DecisionColumns,
    /// Whether `decisions` is configured (the engine also sends decisions when only shadow ones are wanted).
    write_decisions: bool,
    /// Shadow decisions, gathered like the decisions (`None`: the table is not configured).
    shadow: Option<DecisionColumns>,
    dead: DeadLetterColumns,
    status: Arc<Status>,
}

impl ClickHouseSink {
    /// Opens the sink: checks that the tables exist when the server answers
    /// (an unreachable server is not an error: rows wait in the spool),
    /// opens the spool and starts the writer.
    pub fn open(spec: &ClickHouseSpec) -> Result<Self, SinkError> {
        let rt = super::runtime()?;
        let client = super::client(spec);
        match super::block_on(
            &rt,
            &spec.url,
            PROBE_TIMEOUT,
            client
                .query("SELECT table, name FROM system.columns WHERE database = ?")
                .bind(spec.database.as_str())
                .fetch_all::<(String, String)>(),
        ) {
            Ok(present) => {
                // A table, or a column a newer gatewatch writes, that `init`
                // has not made yet: every insert would fail, so refuse now.
                let mut missing = Vec::new();
                for name in &spec.tables {
                    let Some(t) = schema::table(name) else { continue };
                    if !present.iter().any(|(pt, _)| pt == name) {
                        missing.push(name.clone());
                        continue;
                    }
                    for col in t.columns().map_err(ClickHouseError::from)? {
                        if !present.iter().any(|(pt, pc)| pt == name && *pc == col.name) {
                            missing.push(format!("{name}.{}", col.name));
                        }
                    }
                }
                if !missing.is_empty() {
                    return Err(ClickHouseError::Missing {
                        database: spec.database.clone(),
                        missing: missing.join(", "),
                    }
                    .into());
                }
            }
            Err(e) => tracing::warn!(error = %e, "clickhouse unreachable at start: rows are spooled until it answers"),
        }
        let spool = Spool::open(&spec.spool_dir, spec.spool_max_bytes)
            .map_err(|source| ClickHouseError::Spool { path: spec.spool_dir.clone(), source })?;
        let mut bufs = Vec::new();
        for name in super::TABLES {
            let t = schema::table(name).ok_or_else(|| {
                ClickHouseError::from(rowbinary::Unmapped { column: name.into(), ty: "table".into() })
            })?;
            let cols: Vec<String> =
                t.columns().map_err(ClickHouseError::from)?.iter().map(|c| schema::ident(&c.name)).collect();
            bufs.push(Buf {
                table: name,
                insert: format!(
                    "INSERT INTO {}.{} ({}) FORMAT RowBinary",
                    schema::ident(&spec.database),
                    schema::ident(name),
                    cols.join(", ")
                ),
                ..Buf::default()
            });
        }
        let status = Arc::new(Status::default());
        let (tx, rx) = sync_channel(64);
        let mut writer = Writer {
            rt,
            client,
            url: spec.url.clone(),
            database: spec.database.clone(),
            flush_every: Duration::from_millis(spec.flush_every_ms),
            batch_rows: spec.batch_rows as u64,
            bufs,
            spool,
            retry_at: None,
            pause: FIRST_RETRY,
            status: status.clone(),
            dropped: BTreeMap::new(),
            last_drop_log: None,
        };
        let handle = std::thread::Builder::new()
            .name("sink-clickhouse".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| SinkError::Writer { table: "clickhouse".into(), message: e.to_string() })?;
        let want = |t: &str| spec.tables.iter().any(|n| n == t);
        Ok(ClickHouseSink {
            tx: Some(tx),
            handle: Some(handle),
            wants: Wants {
                events: want("events"),
                features: want("features"),
                // Shadow decisions travel with the decisions.
                decisions: want("decisions") || want("shadow_decisions"),
                dead_letters: want("dead_letters"),
                opened_sessions: false,
            },
            decisions: DecisionColumns::default(),
            write_decisions: want("decisions"),
            shadow: want("shadow_decisions").then(DecisionColumns::default),
            dead: DeadLetterColumns::default(),
            status,
        })
    }

    fn send(&self, msg: Msg) -> Result<(), SinkError> {
        match &self.tx {
            Some(tx) => tx.send(msg).map_err(|_| SinkError::Writer {
                table: "clickhouse".into(),
                message: "the writer thread stopped".into(),
            }),
            None => Ok(()),
        }
    }

    fn gathered(&mut self) -> Result<(), SinkError> {
        let arrow = |source| SinkError::Arrow { table: "clickhouse".into(), source };
        if self.decisions.rows > 0 {
            let b = self.decisions.finish().map_err(arrow)?;
            self.send(Msg::Rows(2, b))?;
        }
        if self.dead.rows() > 0 {
            let b = self.dead.finish().map_err(arrow)?;
            self.send(Msg::Rows(3, b))?;
        }
        if let Some(b) = self.shadow.as_mut().filter(|s| s.rows > 0).map(DecisionColumns::finish) {
            self.send(Msg::Rows(4, b.map_err(arrow)?))?;
        }
        Ok(())
    }

    /// Inserts or spools everything handed over so far (tests, shutdown).
    pub fn sync(&mut self) -> Result<(), SinkError> {
        self.gathered()?;
        let (ack, done) = sync_channel(1);
        self.send(Msg::Sync(ack))?;
        let _ = done.recv();
        Ok(())
    }
}

impl Sink for ClickHouseSink {
    fn name(&self) -> &str {
        "clickhouse"
    }

    fn wants(&self) -> Wants {
        self.wants
    }

    fn events(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.send(Msg::Rows(0, batch.clone()))
    }

    fn features(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.send(Msg::Rows(1, batch.clone()))
    }

    fn decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        if !self.write_decisions {
            return Ok(());
        }
        self.decisions.push(d);
        if self.decisions.rows >= GATHER_ROWS {
            self.gathered()?;
        }
        Ok(())
    }

    fn shadow_decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        let Some(shadow) = self.shadow.as_mut() else { return Ok(()) };
        shadow.push(d);
        if shadow.rows >= GATHER_ROWS {
            self.gathered()?;
        }
        Ok(())
    }

    fn dead_letter(&mut self, dl: &DeadLetter<'_>) -> Result<(), SinkError> {
        self.dead.push(dl, crate::sink::deadletter::now_ms());
        if self.dead.rows() >= GATHER_ROWS {
            self.gathered()?;
        }
        Ok(())
    }

    /// Hands the gathered decisions and dead letters to the writer, which
    /// inserts them within `flush_every`.
    fn checkpoint(&mut self) -> Result<(), SinkError> {
        self.gathered()
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.gathered()?;
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            h.join().map_err(|_| SinkError::Writer { table: "clickhouse".into(), message: "panicked".into() })?;
        }
        Ok(())
    }

    fn health(&self) -> Option<SinkHealth> {
        Some(SinkHealth {
            up: !self.status.down.load(Ordering::Relaxed),
            errors: self.status.errors.load(Ordering::Relaxed),
            dropped: self.status.dropped.load(Ordering::Relaxed),
        })
    }
}

impl Drop for ClickHouseSink {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One table's rows waiting to be inserted.
#[derive(Default)]
struct Buf {
    table: &'static str,
    insert: String,
    /// Identity of the batch being gathered, in every row of it.
    id: u64,
    data: Vec<u8>,
    rows: u64,
    min_ts: i64,
    max_ts: i64,
    since: Option<Instant>,
}

struct Writer {
    rt: tokio::runtime::Runtime,
    client: clickhouse::Client,
    url: String,
    database: String,
    flush_every: Duration,
    batch_rows: u64,
    bufs: Vec<Buf>,
    spool: Spool,
    /// While the server is away: when to try again.
    retry_at: Option<Instant>,
    pause: Duration,
    status: Arc<Status>,
    dropped: BTreeMap<&'static str, u64>,
    last_drop_log: Option<Instant>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Msg::Rows(i, batch)) => self.add(i, &batch),
                Ok(Msg::Sync(ack)) => {
                    self.flush_all();
                    self.drain();
                    let _ = ack.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            for i in 0..self.bufs.len() {
                if self.bufs[i].since.is_some_and(|s| s.elapsed() >= self.flush_every) {
                    self.flush(i);
                }
            }
            self.drain();
        }
        self.flush_all();
        self.drain();
        if !self.spool.is_empty() {
            tracing::warn!(
                batches = self.spool.len(),
                rows = self.spool.rows(),
                "clickhouse: rows wait in the spool; the next run sends them"
            );
        }
    }

    fn add(&mut self, i: usize, batch: &RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        let b = &mut self.bufs[i];
        if b.rows == 0 {
            // A new batch, and its identity, start with its first rows.
            b.id = rand::random::<u64>();
        }
        if let Err(e) = rowbinary::encode(batch, b.id, &mut b.data) {
            // The schemas are the engine's own: this is a bug, not input.
            tracing::error!(table = b.table, error = %e, "clickhouse: rows cannot be encoded; dropped");
            self.count_dropped(i, batch.num_rows() as u64);
            return;
        }
        let ts = batch.column(0).as_any().downcast_ref::<TimestampMillisecondArray>();
        if let Some(ts) = ts {
            let (lo, hi) = ts.values().iter().fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            if b.rows == 0 {
                (b.min_ts, b.max_ts) = (lo, hi);
            } else {
                (b.min_ts, b.max_ts) = (b.min_ts.min(lo), b.max_ts.max(hi));
            }
        }
        b.rows += batch.num_rows() as u64;
        b.since.get_or_insert_with(Instant::now);
        if b.rows >= self.batch_rows || b.data.len() >= MAX_BATCH_BYTES {
            self.flush(i);
        }
    }

    fn flush_all(&mut self) {
        for i in 0..self.bufs.len() {
            self.flush(i);
        }
    }

    fn down(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() < t)
    }

    /// Inserts table `i`'s buffer, or spools it when the server is away or
    /// older batches wait (so they keep their order).
    fn flush(&mut self, i: usize) {
        let b = &mut self.bufs[i];
        if b.rows == 0 {
            return;
        }
        let data = std::mem::take(&mut b.data);
        let (id, rows, range) = (b.id, std::mem::take(&mut b.rows), (b.min_ts, b.max_ts));
        b.since = None;
        let data = bytes::Bytes::from(data);
        if self.spool.is_empty() && !self.down() {
            match self.insert(i, data.clone()) {
                Ok(()) => return,
                Err(e) => self.went_down(&e),
            }
        }
        self.spool_batch(i, id, rows, range, &data);
    }

    fn insert(&self, i: usize, data: bytes::Bytes) -> Result<(), ClickHouseError> {
        let sql = self.bufs[i].insert.clone();
        let client = &self.client;
        super::block_on(&self.rt, &self.url, REQUEST_TIMEOUT, async move {
            let mut ins = client.insert_formatted_with(sql);
            ins.send(data).await?;
            ins.end().await
        })
    }

    fn spool_batch(&mut self, i: usize, id: u64, rows: u64, range: (i64, i64), data: &[u8]) {
        let table = self.bufs[i].table;
        match self.spool.push(table, id, rows, range, data) {
            Ok(true) => {}
            Ok(false) => self.count_dropped(i, rows),
            Err(e) => {
                tracing::error!(table, error = %e, "clickhouse: cannot spool a batch");
                self.count_dropped(i, rows);
            }
        }
    }

    fn count_dropped(&mut self, i: usize, rows: u64) {
        let table = self.bufs[i].table;
        *self.dropped.entry(table).or_default() += rows;
        self.status.dropped.fetch_add(rows, Ordering::Relaxed);
        if self.last_drop_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            self.last_drop_log = Some(Instant::now());
            tracing::error!(
                dropped = ?self.dropped,
                spooled_bytes = self.spool.bytes(),
                "clickhouse unreachable and its spool full: rows DROPPED (rows by table since start)"
            );
        }
    }

    fn went_down(&mut self, e: &ClickHouseError) {
        self.status.errors.fetch_add(1, Ordering::Relaxed);
        if !self.status.down.swap(true, Ordering::Relaxed) {
            tracing::error!(error = %e, "clickhouse unreachable: rows are spooled to disk and sent when it answers");
        }
        self.retry_at = Some(Instant::now() + self.pause);
        self.pause = (self.pause * 2).min(LAST_RETRY);
    }

    /// Sends spooled batches, oldest first, while the server takes them.
    fn drain(&mut self) {
        for _ in 0..DRAIN_PER_TURN {
            if self.down() {
                return;
            }
            let Some(e) = self.spool.front().cloned() else { break };
            match self.deliver(&e) {
                Ok(()) => {
                    if let Err(err) = self.spool.pop_front() {
                        tracing::error!(error = %err, path = %e.path.display(), "clickhouse: cannot remove a sent batch");
                    }
                }
                Err(err) => {
                    self.went_down(&err);
                    return;
                }
            }
        }
        if self.spool.is_empty() && self.retry_at.is_some() {
            self.retry_at = None;
            self.pause = FIRST_RETRY;
        }
        if self.spool.is_empty() && self.status.down.swap(false, Ordering::Relaxed) {
            tracing::info!("clickhouse answers again: every spooled batch is in");
        }
    }

    /// Sends one spooled batch unless it is already there.
    fn deliver(&self, e: &Entry) -> Result<(), ClickHouseError> {
        let Some(i) = slot(&e.table) else {
            tracing::error!(table = %e.table, "clickhouse: spooled batch of an unknown table; discarded");
            return Ok(());
        };
        let secs = |ms: i64| ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32;
        let sql = format!(
            "SELECT count() FROM {}.{} WHERE ts >= toDateTime(?) AND ts <= toDateTime(?) AND batch = ?",
            schema::ident(&self.database),
            schema::ident(&e.table)
        );
        let q = self.client.query(&sql).bind(secs(e.min_ts_ms)).bind(secs(e.max_ts_ms)).bind(e.batch);
        let there: u64 = super::block_on(&self.rt, &self.url, REQUEST_TIMEOUT, q.fetch_one::<u64>())?;
        if there > 0 {
            if there != e.rows {
                tracing::warn!(table = %e.table, batch = e.batch, there, rows = e.rows, "clickhouse: batch partly present");
            }
            return Ok(());
        }
        let data = self.spool.read(e).map_err(|source| ClickHouseError::Spool { path: e.path.clone(), source })?;
        self.insert(i, data.into())
    }
}
