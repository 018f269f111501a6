//! ClickHouse: the long history when one machine's disk is not enough.
//!
//! [`schema`] says what the tables are (derived from the Arrow schemas the
//! Parquet tables use), [`rowbinary`] how rows travel, [`spool`] where they
//! wait while the server is away, and [`writer`] is the sink that puts them
//! together. `gatewatch clickhouse init` runs [`init`]. The sink itself is [`ClickHouseSink`].

pub mod rowbinary;
pub mod schema;
pub mod spool;
pub mod writer;

use std::path::PathBuf;
use std::time::Duration;

pub use writer::ClickHouseSink;

/// A `[[sinks]] type = "clickhouse"` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseSpec {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub database: String,
    pub user: Option<String>,
    /// The environment variable holding the password (never the password itself in a file).
    pub password_env: Option<String>,
    /// Tables written: `events`, `features`, `decisions`, `dead_letters`.
    pub tables: Vec<String>,
    /// A table's rows are inserted at least this often …
    pub flush_every_ms: u64,
    /// … or when this many are waiting.
    pub batch_rows: usize,
    /// Where batches wait while the server is unreachable (default: `clickhouse-spool` in the state dir).
    pub spool_dir: PathBuf,
    /// Bytes the spool may hold; past it, batches are dropped and counted.
    pub spool_max_bytes: u64,
    /// Days rows are kept (a TTL, on servers that have them); `None`: forever.
    pub retention_days: Option<u32>,
}

/// Defaults of the optional keys.
pub const DEFAULT_DATABASE: &str = "gatewatch";
pub const DEFAULT_FLUSH_EVERY_MS: u64 = 1_000;
pub const DEFAULT_BATCH_ROWS: usize = 65_536;
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Every table the sink can write (the writer indexes its buffers by this order).
pub const TABLES: [&str; 5] = ["events", "features", "decisions", "dead_letters", "shadow_decisions"];

/// What went wrong talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    #[error("clickhouse at {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("clickhouse at {url}: no answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{0}")]
    Schema(#[from] rowbinary::Unmapped),
    #[error(
        "clickhouse: tables or columns missing in database {database}: {missing} (run `gatewatch clickhouse init`)"
    )]
    Missing { database: String, missing: String },
    #[error("clickhouse: cannot start its runtime: {0}")]
    Runtime(std::io::Error),
    #[error("clickhouse spool {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A client for `spec`'s server (no database selected: statements name it).
pub fn client(spec: &ClickHouseSpec) -> clickhouse::Client {
    let mut c = clickhouse::Client::default().with_url(&spec.url).with_validation(false);
    if let Some(u) = &spec.user {
        c = c.with_user(u);
    }
    if let Some(p) = spec.password_env.as_deref().and_then(|v| std::env::var(v).ok()) {
        c = c.with_password(p);
    }
    c
}

/// Runs `f` on a one-thread runtime of its own, bounded by `timeout`.
pub(crate) fn block_on<T>(
    rt: &tokio::runtime::Runtime,
    url: &str,
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, ClickHouseError> {
    rt.block_on(async { tokio::time::timeout(timeout, f).await })
        .map_err(|_| ClickHouseError::Timeout { url: url.to_string(), secs: timeout.as_secs() })?
        .map_err(|source| ClickHouseError::Client { url: url.to_string(), source })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ClickHouseError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ClickHouseError::Runtime)
}

/// What [`init`] did.
#[derive(Debug, Default)]
pub struct InitReport {
    pub server_version: String,
    /// Tables that did not exist before.
    pub created: Vec<String>,
    /// Columns added to tables that existed without them (`table.column`).
    pub added_columns: Vec<String>,
    /// Whether retention was set as a TTL (`false`: not asked for, or the server has no TTL).
    pub ttl: bool,
}

/// Creates the database and every table (or adds the columns a newer
/// gatewatch writes to tables an older one created). Safe to run again.
pub fn init(spec: &ClickHouseSpec) -> Result<InitReport, ClickHouseError> {
    let rt = runtime()?;
    let c = client(spec);
    let url = spec.url.as_str();
    let t = Duration::from_secs(30);
    let mut report = InitReport {
        server_version: block_on(&rt, url, t, c.query_raw("SELECT version()").fetch_one::<String>())?,
        ..InitReport::default()
    };
    let ttl = spec.retention_days.filter(|_| schema::supports_ttl(&report.server_version));
    if spec.retention_days.is_some() && ttl.is_none() {
        tracing::warn!(
            version = %report.server_version,
            "clickhouse: this server has no table TTL (19.6 and later do): retention is not set; drop old \
             partitions (one per day) yourself"
        );
    }
    report.ttl = ttl.is_some();
    let db = schema::ident(&spec.database);
    block_on(&rt, url, t, c.query_raw(&format!("CREATE DATABASE IF NOT EXISTS {db}")).execute())?;
    for table in schema::tables() {
        let existing: Vec<String> = block_on(
            &rt,
            url,
            t,
            // Bound client-side: 18.16 has no server-side query parameters.
            c.query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
                .bind(spec.database.as_str())
                .bind(table.name)
                .fetch_all::<String>(),
        )?;
        if existing.is_empty() {
            block_on(&rt, url, t, c.query_raw(&schema::create_table(&spec.database, &table, ttl)?).execute())?;
            report.created.push(table.name.to_string());
            continue;
        }
        let mut after: Option<String> = None;
        for col in table.columns()? {
            if !existing.contains(&col.name) {
                let place = after.as_deref().map(|a| format!(" AFTER {}", schema::ident(a))).unwrap_or_default();
                let sql = format!(
                    "ALTER TABLE {db}.{} ADD COLUMN {} {}{place}",
                    schema::ident(table.name),
                    schema::ident(&col.name),
                    col.ty
                );
                block_on(&rt, url, t, c.query_raw(&sql).execute())?;
                report.added_columns.push(format!("{}.{}", table.name, col.name));
            }
            after = Some(col.name);
        }
    }
    let view = format!("{db}.{}", schema::ident("event_entities"));
    block_on(&rt, url, t, c.query_raw(&format!("DROP TABLE IF EXISTS {view}")).execute())?;
    block_on(&rt, url, t, c.query_raw(&schema::event_entities(&spec.database)).execute())?;
    Ok(report)
}
