//! SQL over the tables gatewatch writes (`events`, `features`, `decisions`)
//! with DataFusion.
//!
//! A directory is read as one history: its own tables (a replay's `--out`)
//! and those of every run under its `runs/` (a live server's state directory,
//! which starts a new run directory at every start). An analyst asking what
//! an address did last week should not have to know which restarts happened
//! in between.

pub mod clickhouse;
pub mod explain;
pub mod udf;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

/// The tables a run directory may hold.
pub const TABLES: [&str; 5] = ["events", "features", "decisions", "shadow_decisions", "dead_letters"];

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the query ran longer than the limit of {0} ms and was stopped")]
    Timeout(u64),
    #[error("the query needs more memory than the limit of {limit} bytes: {detail}")]
    Memory { limit: usize, detail: String },
    #[error(
        "{0}: no gatewatch tables here (expected events/, features/ or decisions/ from `gatewatch replay --out`, \
         or runs/*/ under a state directory)"
    )]
    NoTables(String),
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    #[error("writing the result: {0}")]
    Output(String),
}

/// How a result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A text table for people.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row and line.
    Json,
}

/// The schema each table is written with: a run written by an older version
/// that lacks a column reads it as null instead of failing the whole query.
fn table_schema(table: &str) -> SchemaRef {
    match table {
        "events" => crate::event::schema(),
        "features" => crate::features::table_schema(),
        "dead_letters" => crate::sink::deadletter::schema(),
        _ => crate::sink::parquet::decisions_schema(),
    }
}

/// The directories holding `table`'s Parquet files under `data_dir`: its own
/// and each run's, oldest run first.
pub fn table_dirs(data_dir: &Path, table: &str) -> Vec<PathBuf> {
    // Parts sit under date=…/hour=… (older runs: in the table directory itself).
    let has_parquet =
        |dir: &Path| crate::sink::parts::files_under(dir).iter().any(|p| p.extension().is_some_and(|x| x == "parquet"));
    let mut dirs = Vec::new();
    let own = data_dir.join(table);
    if has_parquet(&own) {
        dirs.push(own);
    }
    let mut runs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("runs"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    // Run directories are named by their start time in milliseconds.
    runs.sort_by_key(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (name.parse::<u64>().unwrap_or(u64::MAX), name)
    });
    dirs.extend(runs.into_iter().map(|r| r.join(table)).filter(|d| has_parquet(d)));
    dirs
}

/// A session with every table found under `data_dir` registered.
pub async fn session(data_dir: &Path) -> Result<SessionContext, QueryError> {
    register(SessionContext::new(), data_dir).await
}

/// Registers every table found under `data_dir` (and the `event_entities` view) in `ctx`.
async fn register(ctx: SessionContext, data_dir: &Path) -> Result<SessionContext, QueryError> {
    let mut found = 0;
    let mut absent = Vec::new();
    for t in TABLES {
        let dirs = table_dirs(data_dir, t);
        if dirs.is_empty() {
            absent.push(t);
            continue;
        }
        let urls =
            dirs.iter().map(|d| ListingTableUrl::parse(format!("{}/", d.display()))).collect::<Result<Vec<_>, _>>()?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config =
            ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(table_schema(t));
        ctx.register_table(t, Arc::new(ListingTable::try_new(config)?))?;
        found += 1;
    }
    if found == 0 {
        return Err(QueryError::NoTables(data_dir.display().to_string()));
    }
    // A table with no rows yet (a run without dead letters) is empty, not unknown.
    for t in absent {
        let empty = datafusion::datasource::MemTable::try_new(table_schema(t), vec![vec![]])?;
        ctx.register_table(t, Arc::new(empty))?;
    }
    ctx.register_udf(udf::subnet());
    ctx.register_udf(udf::network());
    ctx.register_udf(udf::network56());
    if ctx.table_exist("events")? {
        ctx.sql(EVENT_ENTITIES).await?;
    }
    Ok(ctx)
}

/// The view `event_entities`: each event once per entity it belongs to
/// (`entity_type`, `entity`, as decisions and features name them), so that
/// "the requests of a decided entity" is one equi-join whatever its type.
/// Addresses map to their subnet (IPv4 /24, IPv6 /64) as the engine's
/// `cidr` entity does ([`udf::subnet`]), and IPv6 addresses to their
/// networks (/48 and /56, [`udf::network`], [`udf::network56`]) under `cidr`
/// too, the type a network's decisions are published as: all are address
/// ranges.
pub const EVENT_ENTITIES: &str = "CREATE VIEW event_entities AS
    SELECT 'ip' AS entity_type, client_ip AS entity, * FROM events
    UNION ALL SELECT 'cidr' AS entity_type, subnet(client_ip) AS entity, * FROM events
    UNION ALL SELECT 'cidr' AS entity_type, network(client_ip) AS entity, * FROM events WHERE network(client_ip) IS NOT NULL
    UNION ALL SELECT 'cidr' AS entity_type, network56(client_ip) AS entity, * FROM events WHERE network56(client_ip) IS NOT NULL
    UNION ALL SELECT 'user' AS entity_type, user_id AS entity, * FROM events WHERE user_id IS NOT NULL
    UNION ALL SELECT 'api_key' AS entity_type, api_key_id AS entity, * FROM events WHERE api_key_id IS NOT NULL
    UNION ALL SELECT 'device' AS entity_type, device_id AS entity, * FROM events WHERE device_id IS NOT NULL
    UNION ALL SELECT 'session' AS entity_type, session_id AS entity, * FROM events WHERE session_id IS NOT NULL";

/// Runs one SQL statement and collects its result.
pub async fn query(data_dir: &Path, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    query_with(data_dir, sql, &[]).await
}

/// Runs one SQL statement with named parameters (`$ip` in the SQL, `("ip",
/// "203.0.113.7")` here), bound as text values: a parameter is never spliced
/// into the SQL, so a hostile value cannot change the query.
pub async fn query_with(
    data_dir: &Path,
    sql: &str,
    params: &[(String, String)],
) -> Result<Vec<RecordBatch>, QueryError> {
    let ctx = session(data_dir).await?;
    let mut df = ctx.sql(sql).await?;
    if !params.is_empty() {
        let values: Vec<(String, ScalarValue)> =
            params.iter().map(|(k, v)| (k.clone(), ScalarValue::Utf8(Some(v.clone())))).collect();
        df = df.with_param_values(values)?;
    }
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    // An empty result still has columns: CSV and table output print them.
    Ok(if batches.is_empty() { vec![RecordBatch::new_empty(schema)] } else { batches })
}

/// Bounds on one query asked over the API.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub timeout: std::time::Duration,
    pub memory_bytes: usize,
}

/// A result cut to the row limit.
#[derive(Debug)]
pub struct Limited {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// More rows were there than the limit let through.
    pub truncated: bool,
}

/// Runs one read-only statement within `limits`: DDL, DML and other
/// statements (`CREATE`, `INSERT`, `COPY`, `SET`) are refused before
/// planning; the memory pool is bounded and nothing spills to disk; the rows
/// stop at the limit (the query stops with them) and the whole runs no longer
/// than the timeout. Parameters are bound as in [`query_with`].
pub async fn query_limited(
    data_dir: &Path,
    sql: &str,
    params: &[(String, String)],
    limits: Limits,
) -> Result<Limited, QueryError> {
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use futures_util::StreamExt;

    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
        .build_arc()?;
    let config = datafusion::prelude::SessionConfig::new().with_target_partitions(2);
    let ctx = register(SessionContext::new_with_config_rt(config, runtime), data_dir).await?;
    let memory = |e: DataFusionError| match e.find_root() {
        DataFusionError::ResourcesExhausted(detail) => {
            QueryError::Memory { limit: limits.memory_bytes, detail: detail.clone() }
        }
        _ => QueryError::DataFusion(e),
    };
    let work = async {
        let options = datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let mut df = ctx.sql_with_options(sql, options).await?;
        if !params.is_empty() {
            let values: Vec<(String, ScalarValue)> =
                params.iter().map(|(k, v)| (k.clone(), ScalarValue::Utf8(Some(v.clone())))).collect();
            df = df.with_param_values(values)?;
        }
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await?;
        let (mut batches, mut rows, mut truncated) = (Vec::new(), 0usize, false);
        while let Some(b) = stream.next().await {
            let b = b?;
            let room = limits.max_rows - rows;
            if b.num_rows() > room {
                if room > 0 {
                    batches.push(b.slice(0, room));
                }
                rows += room;
                truncated = true;
                break;
            }
            rows += b.num_rows();
            batches.push(b);
        }
        Ok::<_, DataFusionError>(Limited { schema, batches, rows, truncated })
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(r) => r.map_err(memory),
        Err(_) => Err(QueryError::Timeout(limits.timeout.as_millis() as u64)),
    }
}

/// Renders batches as a text table.
pub fn render(batches: &[RecordBatch]) -> Result<String, QueryError> {
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches).map_err(DataFusionError::from)?.to_string())
}

/// Writes batches in `format` to `out`.
pub fn write(batches: &[RecordBatch], format: OutputFormat, out: &mut impl std::io::Write) -> Result<(), QueryError> {
    let io = |e: std::io::Error| QueryError::Output(e.to_string());
    let arrow = |e: datafusion::arrow::error::ArrowError| QueryError::Output(e.to_string());
    match format {
        OutputFormat::Table => writeln!(out, "{}", render(batches)?).map_err(io),
        OutputFormat::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(out);
            batches.iter().try_for_each(|b| w.write(b)).map_err(arrow)
        }
        OutputFormat::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(out);
            batches.iter().try_for_each(|b| w.write(b)).map_err(arrow)?;
            w.finish().map_err(arrow)
        }
    }
}

/// One shipped investigation query (`queries/*.sql`): its SQL and what its
/// header says. The header is the comment lines at the top: `-- name:`,
/// `-- question:` and one `-- param: NAME  what it is` per parameter.
#[derive(Debug, Clone)]
pub struct Investigation {
    pub name: String,
    pub question: String,
    pub params: Vec<String>,
    pub sql: String,
}

impl Investigation {
    /// Reads the header of `sql`.
    pub fn parse(sql: &str) -> Investigation {
        let mut inv =
            Investigation { name: String::new(), question: String::new(), params: Vec::new(), sql: sql.into() };
        for line in sql.lines().map(str::trim).take_while(|l| l.starts_with("--")) {
            let body = line.trim_start_matches('-').trim();
            if let Some(v) = body.strip_prefix("name:") {
                inv.name = v.trim().into();
            } else if let Some(v) = body.strip_prefix("question:") {
                inv.question = v.trim().into();
            } else if let Some(v) = body.strip_prefix("param:")
                && let Some(p) = v.split_whitespace().next()
            {
                inv.params.push(p.trim_start_matches('$').into());
            }
        }
        inv
    }
}
