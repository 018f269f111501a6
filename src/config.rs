//! Pipeline files (TOML) → a typed, validated [`Pipeline`].
//!
//! Every error names the file and, where it can, the line and the key, so
//! that a typo in a rule is fixed in seconds. A file may `extends` another:
//! each section it defines replaces the base's whole section, which lets a
//! gateway-specific pipeline reuse the default rules and change only `[input]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::decision::Action;
use crate::event::Format;
use crate::event::mapping::{FieldSpec, Mapping};
use crate::event::time::parse_duration_ms;
use crate::features::{EntityType, FeatureConfig};

/// A configuration problem, located as precisely as the file allows.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The I/O error is part of the message (not a `source`), so that both a
    /// plain and a chained display say it once.
    #[error("{file}: cannot read pipeline file: {error}")]
    Io { file: PathBuf, error: std::io::Error },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid { file: PathBuf, line: usize, key: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    extends: Option<String>,
    input: Option<Spanned<InputSection>>,
    features: Option<Spanned<FeaturesSection>>,
    output: Option<Spanned<OutputSection>>,
    decisions: Option<Spanned<DecisionsSection>>,
    allowlist: Option<Spanned<AllowlistSection>>,
    classes: Option<Spanned<ClassesSection>>,
    state: Option<Spanned<StateSection>>,
    api: Option<Spanned<ApiSection>>,
    #[serde(default)]
    rules: Option<Vec<Spanned<RuleSection>>>,
    #[serde(default)]
    models: Option<Vec<Spanned<ModelSection>>>,
    #[serde(default)]
    sinks: Option<Vec<Spanned<SinkSection>>>,
}

/// One `[[sinks]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkSection {
    #[serde(rename = "type")]
    kind: crate::sink::SinkKind,
    tables: Option<Vec<Spanned<String>>>,
    max_bytes: Option<Spanned<String>>,
    roll_every: Option<Spanned<String>>,
    // ClickHouse only (see `clickhouse_from`).
    url: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    flush_every: Option<Spanned<String>>,
    batch_rows: Option<Spanned<i64>>,
    spool_dir: Option<Spanned<String>>,
    spool_max: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
    // Kafka only (see `kafka_sink_from`).
    brokers: Option<Spanned<String>>,
    decisions_topic: Option<Spanned<String>>,
    dead_letters_topic: Option<Spanned<String>>,
    flush_timeout: Option<Spanned<String>>,
    learn_wait: Option<Spanned<String>>,
    /// Entity type → the topic its events are re-keyed to.
    repartition: Option<Spanned<BTreeMap<String, String>>>,
    repartition_partitions: Option<Spanned<i64>>,
    properties: Option<Spanned<BTreeMap<String, String>>>,
}

/// `[input.kafka]`: read a topic as a member of a consumer group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaInputSection {
    brokers: Spanned<String>,
    topics: Spanned<Vec<String>>,
    group: Spanned<String>,
    commit_every: Option<Spanned<String>>,
    max_idle: Option<Spanned<String>>,
    buffer: Option<Spanned<String>>,
    rebuild: Option<Spanned<String>>,
    /// Topic → the entity types its events count for (default: every type).
    entities: Option<Spanned<BTreeMap<String, Vec<String>>>>,
    properties: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSection {
    path: Spanned<String>,
    entity: Spanned<String>,
    #[serde(default)]
    when: Option<Spanned<String>>,
    #[serde(default)]
    challenge_at: Option<f64>,
    #[serde(default)]
    deny_at: Option<f64>,
    ttl: Spanned<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    shadow: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSection {
    #[serde(default = "default_format")]
    format: Format,
    #[serde(default = "default_max_line")]
    max_line_bytes: usize,
    path: Option<PathBuf>,
    mapping: Option<BTreeMap<String, FieldSpec>>,
    max_future: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    kafka: Option<Spanned<KafkaInputSection>>,
}

fn default_format() -> Format {
    Format::Auto
}
fn default_max_line() -> usize {
    64 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeaturesSection {
    tick: Option<Spanned<String>>,
    lateness: Option<Spanned<String>>,
    state_budget: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSection {
    batch_rows: Option<usize>,
    batch_max_age: Option<Spanned<String>>,
    events: Option<bool>,
    features: Option<bool>,
    features_every: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionsSection {
    max_ttl: Option<Spanned<String>>,
    escalation: Option<f64>,
    offense_memory: Option<Spanned<String>>,
    shared_when: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    listen: Option<String>,
    client_ip: Option<Spanned<String>>,
    trusted_hops: Option<usize>,
    user_header: Option<String>,
    api_key_header: Option<String>,
    device_header: Option<String>,
    session_header: Option<String>,
    throttle_rps: Option<f64>,
    stream_retention: Option<usize>,
    workers: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    header_timeout: Option<Spanned<String>>,
    max_wait: Option<Spanned<String>>,
    query_max_rows: Option<usize>,
    query_timeout: Option<Spanned<String>>,
    query_memory: Option<Spanned<String>>,
}

/// Where forward-auth finds the client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpFrom {
    /// `X-Forwarded-For`, the `trusted_hops`-th address from the right.
    XForwardedFor,
    /// `X-Real-IP`.
    XRealIp,
}

/// The decision API's settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: String,
    pub client_ip: ClientIpFrom,
    /// Proxies that append to `X-Forwarded-For` between the client and gatewatch,
    /// the gateway itself included: the client is that many entries from the right.
    pub trusted_hops: usize,
    pub user_header: String,
    pub api_key_header: String,
    pub device_header: String,
    pub session_header: String,
    /// Requests per second a throttled entity may still make through forward-auth.
    pub throttle_rps: f64,
    /// Changes the decision stream keeps; a reader further behind gets a snapshot.
    pub stream_retention: usize,
    /// Threads serving the API (0: one per core but one, left to the engine).
    pub workers: usize,
    /// Connections open at once; lowered at start to fit the open-file limit.
    pub max_connections: usize,
    /// Connections one client address (IPv6: one /64) may hold; `None`: a
    /// quarter of `max_connections`, `Some(0)`: no such limit.
    pub max_connections_per_ip: Option<usize>,
    /// Time a connection has to send a request head, and the longest a
    /// keep-alive connection stays idle.
    pub header_timeout_ms: i64,
    /// Longest a long poll of the decision stream may wait for a change.
    pub max_wait_ms: i64,
    /// `POST /v1/admin/query`: rows returned at most (more are cut off and
    /// the answer says so), time a query may run, memory it may hold.
    pub query_max_rows: usize,
    pub query_timeout_ms: i64,
    pub query_memory_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8790".into(),
            client_ip: ClientIpFrom::XForwardedFor,
            trusted_hops: 1,
            user_header: "x-user-id".into(),
            api_key_header: "x-api-key-id".into(),
            device_header: "x-device-id".into(),
            session_header: "x-session-id".into(),
            throttle_rps: 1.0,
            stream_retention: 100_000,
            workers: 0,
            max_connections: 4096,
            max_connections_per_ip: None,
            header_timeout_ms: 30_000,
            max_wait_ms: 60_000,
            query_max_rows: 10_000,
            query_timeout_ms: 30_000,
            query_memory_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateSection {
    dir: Option<PathBuf>,
    /// Parquet history kept by age (hours older than this are removed).
    retention: Option<Spanned<String>>,
    /// … and by size (past this, the oldest hours are removed).
    retention_bytes: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowlistSection {
    #[serde(default)]
    cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    crawlers: Vec<Spanned<CrawlerSection>>,
}

/// `[classes]`: which requests a decision on a request class covers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassesSection {
    #[serde(default)]
    login_forms: Vec<Spanned<String>>,
    sessions_held: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CrawlerSection {
    name: String,
    user_agent: String,
    cidrs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSection {
    name: String,
    entity: Spanned<String>,
    when: Spanned<String>,
    action: Spanned<String>,
    ttl: Spanned<String>,
    reason: String,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    on_shared: Option<Spanned<String>>,
    #[serde(default)]
    spare: Option<Spanned<String>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    shadow: bool,
}

/// A rule as configured, before its predicate is compiled (see [`crate::detect`]).
#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub name: String,
    pub entity: EntityType,
    pub when: String,
    pub action: Action,
    pub ttl_ms: i64,
    pub reason: String,
    pub score: f64,
    /// What the action becomes on a shared entity (see [`DecisionConfig::shared_when`]).
    pub on_shared: Action,
    /// A cidr rule's bystanders: a predicate over the feature row of each
    /// address of the subnet that this engine holds; the addresses it holds
    /// for are left out of the decision ([`crate::decision::Decision::spared`]),
    /// with the line it is written on.
    pub spare: Option<(String, usize)>,
    /// Judged on live traffic without being enforced: its decisions go to
    /// their own tables and stream ([`crate::decision::SHADOW_ID_BASE`]).
    pub shadow: bool,
    /// Where the rule is written, for error messages.
    pub file: PathBuf,
    pub line: usize,
}

/// A model scored next to the rules (see [`crate::model`]).
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub model: std::sync::Arc<crate::model::Model>,
    pub entity: EntityType,
    /// Scores at or above this make a `challenge` (default: the model's threshold).
    pub challenge_at: f64,
    /// Scores at or above this make a `deny` (default: never; a model alone challenges).
    pub deny_at: Option<f64>,
    /// Only rows matching this SQL predicate are scored (minimum evidence, like a rule's).
    pub when: Option<String>,
    pub ttl_ms: i64,
    /// Scored and decided on, never enforced (see [`RuleSpec::shadow`]).
    pub shadow: bool,
    pub file: PathBuf,
    pub line: usize,
}

/// Where lines come from and how they are read.
#[derive(Debug, Clone)]
pub struct InputConfig {
    pub format: Format,
    pub max_line_bytes: usize,
    pub path: Option<PathBuf>,
    pub mapping: Option<Mapping>,
    /// Live mode: how far ahead of the wall clock an event may be stamped
    /// before it is applied at its arrival time instead.
    pub max_future_ms: i64,
    /// Live mode: how long to wait before polling again a source that had
    /// nothing more. Each round of live input is evaluated, checkpointed and
    /// acknowledged whatever its size, so a longer wait makes fewer, larger
    /// rounds (less CPU per event) at the cost of that much decision latency.
    pub poll_interval_ms: i64,
    /// `[input.kafka]`: `run` (without `--input`) and `replay --kafka` read these topics.
    pub kafka: Option<crate::source::KafkaInput>,
}

/// Default for `input.max_future`: more than any NTP-synchronised clock is
/// off, less than a tick.
pub const DEFAULT_MAX_FUTURE_MS: i64 = 5_000;

/// Default for `input.poll_interval`. Measured (docs/PERFORMANCE.md,
/// 2026-12-04): a followed file appended at 5,000 lines/s took 2.3–2.4 CPU-s
/// polled every 50 ms and 1.9 every 200 ms; 500 ms saved little more. The
/// default stays 50 ms until the two CI failures of the repartition test
/// seen with 200 ms are understood (PERFORMANCE.md says which).
pub const DEFAULT_POLL_INTERVAL_MS: i64 = 50;

/// What the pipeline writes besides decisions.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    pub batch_rows: usize,
    /// Wall-clock age at which a partial batch is sent on anyway, so that a
    /// slow live stream still reaches the rules promptly.
    pub batch_max_age_ms: i64,
    pub events: bool,
    pub features: bool,
}

pub use crate::decision::{DEFAULT_SHARED_WHEN, DecisionConfig};

/// A verified crawler: its user agent only counts from its operator's networks.
#[derive(Debug, Clone)]
pub struct Crawler {
    pub name: String,
    pub user_agent: regex::Regex,
    pub cidrs: Vec<ipnet::IpNet>,
}

/// Entities that no automatic decision may block.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    pub cidrs: Vec<ipnet::IpNet>,
    pub api_keys: Vec<String>,
    pub crawlers: Vec<Crawler>,
}

/// A loaded, validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub file: PathBuf,
    pub input: InputConfig,
    pub features: FeatureConfig,
    pub output: OutputConfig,
    pub decisions: DecisionConfig,
    pub allowlist: Allowlist,
    /// Which requests belong to the request classes decisions can name.
    pub classes: crate::classes::ClassConfig,
    pub rules: Vec<RuleSpec>,
    pub models: Vec<ModelSpec>,
    pub state_dir: PathBuf,
    /// How much of the Parquet history under `state_dir` live mode keeps.
    pub retention: crate::sink::retention::Retention,
    pub api: ApiConfig,
    /// Outputs of a run, in order; every one receives what it asks for.
    pub sinks: Vec<crate::sink::SinkSpec>,
}

/// The `[[sinks]]` of one file, checked: known tables, and dead letters kept somewhere.
fn sinks_from(
    f: &Located<PipelineFile>,
    output: &OutputConfig,
    state_dir: &Path,
) -> Result<Vec<crate::sink::SinkSpec>, ConfigError> {
    use crate::sink::{SinkKind, SinkSpec};
    const TABLES: [&str; 4] = ["events", "features", "decisions", "dead_letters"];

    let mut out = Vec::new();
    let sections = f.value.sinks.as_deref().unwrap_or_default();
    for sec in sections {
        let v = sec.get_ref();
        if v.kind == SinkKind::ClickHouse {
            kafka_keys_absent(f, v)?;
            out.push(SinkSpec {
                clickhouse: Some(Box::new(clickhouse_from(f, sec, state_dir)?)),
                ..SinkSpec::of(SinkKind::ClickHouse)
            });
            continue;
        }
        for (key, present) in [
            ("url", v.url.as_ref().map(|x| x.span())),
            ("database", v.database.as_ref().map(|x| x.span())),
            ("user", v.user.as_ref().map(|x| x.span())),
            ("password_env", v.password_env.as_ref().map(|x| x.span())),
            ("flush_every", v.flush_every.as_ref().map(|x| x.span())),
            ("batch_rows", v.batch_rows.as_ref().map(|x| x.span())),
            ("spool_dir", v.spool_dir.as_ref().map(|x| x.span())),
            ("spool_max", v.spool_max.as_ref().map(|x| x.span())),
            ("retention", v.retention.as_ref().map(|x| x.span())),
        ] {
            if let Some(span) = present {
                return Err(invalid(&f.file, &f.src, span, &format!("sinks.{key}"), "only a clickhouse sink has it"));
            }
        }
        if v.kind == SinkKind::Kafka {
            if let Some(t) = &v.tables {
                return Err(invalid(&f.file, &f.src, t[0].span(), "sinks.tables", "a kafka sink names its topics"));
            }
            out.push(SinkSpec { kafka: Some(Box::new(kafka_sink_from(f, sec)?)), ..SinkSpec::of(SinkKind::Kafka) });
            continue;
        }
        kafka_keys_absent(f, v)?;
        let tables = match (&v.tables, v.kind) {
            // Without a list, the [output] flags choose, as they do without [[sinks]].
            (None, SinkKind::Parquet) => SinkSpec::defaults(output.events, output.features).remove(0).tables,
            (None, _) => Vec::new(),
            (Some(_), k) if k != SinkKind::Parquet => {
                return Err(invalid(&f.file, &f.src, sec.span(), "sinks.tables", "only a parquet sink has tables"));
            }
            (Some(ts), _) => {
                let mut names = Vec::new();
                for t in ts {
                    if !TABLES.contains(&t.get_ref().as_str()) {
                        return Err(invalid(
                            &f.file,
                            &f.src,
                            t.span(),
                            "sinks.tables",
                            format!("unknown table '{}' (expected {})", t.get_ref(), TABLES.join(", ")),
                        ));
                    }
                    names.push(t.get_ref().clone());
                }
                names
            }
        };
        let max_bytes = match (&v.max_bytes, v.kind) {
            (None, _) => None,
            (Some(b), SinkKind::DeadLetters) => {
                let n = crate::features::budget::parse_size(b.get_ref())
                    .map_err(|m| invalid(&f.file, &f.src, b.span(), "sinks.max_bytes", m))?;
                if n < 4096 {
                    return Err(invalid(&f.file, &f.src, b.span(), "sinks.max_bytes", "must be at least 4KiB"));
                }
                Some(n as u64)
            }
            (Some(b), _) => {
                return Err(invalid(
                    &f.file,
                    &f.src,
                    b.span(),
                    "sinks.max_bytes",
                    "only a dead_letters sink has a size limit",
                ));
            }
        };
        let roll_every_ms = match (&v.roll_every, v.kind) {
            (None, _) => None,
            (Some(t), SinkKind::Parquet) => {
                Some(duration_in(&f.file, &f.src, t, "sinks.roll_every", 1_000..=86_400_000, "must be from 1s to 24h")?)
            }
            (Some(t), _) => {
                return Err(invalid(&f.file, &f.src, t.span(), "sinks.roll_every", "only a parquet sink rolls files"));
            }
        };
        out.push(SinkSpec { tables, max_bytes, roll_every_ms, ..SinkSpec::of(v.kind) });
    }
    let keeps_dead_letters = |s: &SinkSpec| {
        s.kind == SinkKind::DeadLetters || s.kafka.as_ref().is_some_and(|k| k.dead_letters_topic.is_some())
    };
    if !out.iter().any(keeps_dead_letters) {
        let span = sections.first().map(|s| s.span()).unwrap_or(0..0);
        return Err(invalid(
            &f.file,
            &f.src,
            span,
            "sinks",
            "no sink keeps dead letters: add [[sinks]] type = \"dead_letters\" (bad lines must never vanish)",
        ));
    }
    Ok(out)
}

/// A sink other than Kafka given a Kafka key.
fn kafka_keys_absent(f: &Located<PipelineFile>, v: &SinkSection) -> Result<(), ConfigError> {
    for (key, present) in [
        ("brokers", v.brokers.as_ref().map(|x| x.span())),
        ("decisions_topic", v.decisions_topic.as_ref().map(|x| x.span())),
        ("dead_letters_topic", v.dead_letters_topic.as_ref().map(|x| x.span())),
        ("flush_timeout", v.flush_timeout.as_ref().map(|x| x.span())),
        ("learn_wait", v.learn_wait.as_ref().map(|x| x.span())),
        ("repartition", v.repartition.as_ref().map(|x| x.span())),
        ("repartition_partitions", v.repartition_partitions.as_ref().map(|x| x.span())),
        ("properties", v.properties.as_ref().map(|x| x.span())),
    ] {
        if let Some(span) = present {
            return Err(invalid(&f.file, &f.src, span, &format!("sinks.{key}"), "only a kafka sink has it"));
        }
    }
    Ok(())
}

/// Brokers and librdkafka properties, checked: a list of host:port, and none
/// of the properties the engine's guarantees rest on.
fn kafka_client_from(
    f: &Located<PipelineFile>,
    brokers: &Spanned<String>,
    properties: Option<&Spanned<BTreeMap<String, String>>>,
    section: &str,
) -> Result<crate::kafka::KafkaClient, ConfigError> {
    let b = brokers.get_ref().trim();
    let ok = !b.is_empty()
        && b.split(',').all(|h| {
            let h = h.trim();
            let h = h.strip_prefix("tcp://").unwrap_or(h);
            h.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        });
    if !ok {
        return Err(invalid(
            &f.file,
            &f.src,
            brokers.span(),
            &format!("{section}.brokers"),
            "a comma-separated list of host:port, e.g. \"kafka-1:9092,kafka-2:9092\"",
        ));
    }
    let mut client = crate::kafka::KafkaClient::new(b);
    if let Some(p) = properties {
        for (k, v) in p.get_ref() {
            if crate::kafka::RESERVED.contains(&k.as_str()) {
                return Err(invalid(
                    &f.file,
                    &f.src,
                    p.span(),
                    &format!("{section}.properties"),
                    format!(
                        "'{k}' is set by gatewatch (offsets are committed after effects; brokers and group have their own keys)"
                    ),
                ));
            }
            client.properties.insert(k.clone(), v.clone());
        }
    }
    Ok(client)
}

fn kafka_topic(f: &Located<PipelineFile>, t: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let name = t.get_ref();
    // Kafka's own rule for topic names.
    if name.is_empty()
        || name.len() > 249
        || name == "."
        || name == ".."
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid(
            &f.file,
            &f.src,
            t.span(),
            key,
            "a topic name: letters, digits, '.', '_', '-' (at most 249)",
        ));
    }
    Ok(name.clone())
}

fn kafka_input_from(
    f: &Located<PipelineFile>,
    sec: &Spanned<KafkaInputSection>,
) -> Result<crate::source::KafkaInput, ConfigError> {
    use crate::source::KafkaInput;
    let v = sec.get_ref();
    let client = kafka_client_from(f, &v.brokers, v.properties.as_ref(), "input.kafka")?;
    if v.topics.get_ref().is_empty() || v.topics.get_ref().len() > 64 {
        return Err(invalid(&f.file, &f.src, v.topics.span(), "input.kafka.topics", "from 1 to 64 topics"));
    }
    let mut topics = Vec::new();
    for t in v.topics.get_ref() {
        let spanned = Spanned::new(v.topics.span(), t.clone());
        topics.push(kafka_topic(f, &spanned, "input.kafka.topics")?);
    }
    let group = v.group.get_ref().trim();
    if group.is_empty() || group.len() > 255 {
        return Err(invalid(
            &f.file,
            &f.src,
            v.group.span(),
            "input.kafka.group",
            "a consumer group name (1 to 255 characters)",
        ));
    }
    let ms = |d: &Option<Spanned<String>>, key: &str, default: u64, range: std::ops::RangeInclusive<i64>| match d {
        None => Ok(default),
        Some(d) => {
            let ms = duration(&f.file, &f.src, d, key)?;
            if !range.contains(&ms) {
                return Err(invalid(
                    &f.file,
                    &f.src,
                    d.span(),
                    key,
                    format!("must be from {}ms to {}ms", range.start(), range.end()),
                ));
            }
            Ok(ms as u64)
        }
    };
    let commit_every_ms =
        ms(&v.commit_every, "input.kafka.commit_every", KafkaInput::DEFAULT_COMMIT_EVERY_MS, 10..=600_000)?;
    let max_idle_ms = ms(&v.max_idle, "input.kafka.max_idle", KafkaInput::DEFAULT_MAX_IDLE_MS, 1..=600_000)?;
    // "off": a partition taken over starts cold (its entities from nothing).
    let rebuild_ms = match &v.rebuild {
        Some(r) if r.get_ref() == "off" => 0,
        r => ms(r, "input.kafka.rebuild", KafkaInput::DEFAULT_REBUILD_MS, 1..=86_400_000)?,
    };
    let buffer_bytes = match &v.buffer {
        None => KafkaInput::DEFAULT_BUFFER_BYTES,
        Some(b) => {
            let n = crate::features::budget::parse_size(b.get_ref())
                .map_err(|m| invalid(&f.file, &f.src, b.span(), "input.kafka.buffer", m))?;
            if !((1 << 20)..=(16usize << 30)).contains(&n) {
                return Err(invalid(&f.file, &f.src, b.span(), "input.kafka.buffer", "must be from 1MiB to 16GiB"));
            }
            n
        }
    };
    let mut entities = vec![crate::source::ALL_ENTITIES; topics.len()];
    if let Some(e) = &v.entities {
        let key = "input.kafka.entities";
        for (topic, types) in e.get_ref() {
            let Some(i) = topics.iter().position(|t| t == topic) else {
                return Err(invalid(
                    &f.file,
                    &f.src,
                    e.span(),
                    key,
                    format!("'{topic}' is not one of input.kafka.topics"),
                ));
            };
            let mut mask = 0u8;
            for name in types {
                let t = crate::features::EntityType::parse(name).ok_or_else(|| {
                    invalid(
                        &f.file,
                        &f.src,
                        e.span(),
                        key,
                        format!(
                            "'{name}' (for '{topic}') is not an entity type: ip, cidr, user, api_key, device, session, network"
                        ),
                    )
                })?;
                mask |= 1 << t.index();
            }
            if mask == 0 {
                return Err(invalid(&f.file, &f.src, e.span(), key, format!("'{topic}' counts for no entity type")));
            }
            entities[i] = mask;
        }
    }
    Ok(KafkaInput {
        client,
        topics,
        entities,
        group: group.to_string(),
        commit_every_ms,
        max_idle_ms,
        buffer_bytes,
        max_future_ms: crate::config::DEFAULT_MAX_FUTURE_MS,
        rebuild_ms,
    })
}

fn kafka_sink_from(
    f: &Located<PipelineFile>,
    sec: &Spanned<SinkSection>,
) -> Result<crate::sink::KafkaSinkSpec, ConfigError> {
    use crate::sink::KafkaSinkSpec;
    let v = sec.get_ref();
    for (key, present) in
        [("max_bytes", v.max_bytes.as_ref().map(|x| x.span())), ("roll_every", v.roll_every.as_ref().map(|x| x.span()))]
    {
        if let Some(span) = present {
            return Err(invalid(&f.file, &f.src, span, &format!("sinks.{key}"), "a kafka sink does not have it"));
        }
    }
    let brokers = v.brokers.as_ref().ok_or_else(|| {
        invalid(&f.file, &f.src, sec.span(), "sinks.brokers", "a kafka sink needs brokers (host:port, comma-separated)")
    })?;
    let client = kafka_client_from(f, brokers, v.properties.as_ref(), "sinks")?;
    let decisions_topic = v.decisions_topic.as_ref().map(|t| kafka_topic(f, t, "sinks.decisions_topic")).transpose()?;
    let dead_letters_topic =
        v.dead_letters_topic.as_ref().map(|t| kafka_topic(f, t, "sinks.dead_letters_topic")).transpose()?;
    let mut repartition = Vec::new();
    if let Some(r) = &v.repartition {
        for (name, topic) in r.get_ref() {
            let t = crate::features::EntityType::parse(name)
                .filter(|t| *t != crate::features::EntityType::Cidr)
                .ok_or_else(|| {
                    invalid(
                        &f.file,
                        &f.src,
                        r.span(),
                        "sinks.repartition",
                        format!(
                            "'{name}' is not an entity type events can be keyed by: ip, user, api_key, device, session, network"
                        ),
                    )
                })?;
            let spanned = Spanned::new(r.span(), topic.clone());
            repartition.push((t, kafka_topic(f, &spanned, "sinks.repartition")?));
        }
    }
    let repartition_partitions = match &v.repartition_partitions {
        None => KafkaSinkSpec::DEFAULT_REPARTITION_PARTITIONS,
        Some(n) => i32::try_from(*n.get_ref()).ok().filter(|n| (1..=10_000).contains(n)).ok_or_else(|| {
            invalid(&f.file, &f.src, n.span(), "sinks.repartition_partitions", "must be from 1 to 10000")
        })?,
    };
    if decisions_topic.is_none() && dead_letters_topic.is_none() && repartition.is_empty() {
        return Err(invalid(
            &f.file,
            &f.src,
            sec.span(),
            "sinks.decisions_topic",
            "a kafka sink needs decisions_topic, dead_letters_topic, repartition or several",
        ));
    }
    let flush_timeout_ms = match &v.flush_timeout {
        None => KafkaSinkSpec::DEFAULT_FLUSH_TIMEOUT_MS,
        Some(t) => {
            duration_in(&f.file, &f.src, t, "sinks.flush_timeout", 100..=600_000, "must be from 100ms to 10m")? as u64
        }
    };
    let learn_wait_ms = match &v.learn_wait {
        None => KafkaSinkSpec::DEFAULT_LEARN_WAIT_MS,
        Some(t) => {
            let ms = duration(&f.file, &f.src, t, "sinks.learn_wait")?;
            if decisions_topic.is_none() {
                return Err(invalid(
                    &f.file,
                    &f.src,
                    t.span(),
                    "sinks.learn_wait",
                    "only a sink with decisions_topic reads one",
                ));
            }
            if !(1_000..=86_400_000).contains(&ms) {
                return Err(invalid(&f.file, &f.src, t.span(), "sinks.learn_wait", "must be from 1s to 24h"));
            }
            ms as u64
        }
    };
    Ok(KafkaSinkSpec {
        client,
        decisions_topic,
        dead_letters_topic,
        flush_timeout_ms,
        repartition,
        repartition_partitions,
        learn_wait_ms,
    })
}

struct Located<T> {
    file: PathBuf,
    src: String,
    value: T,
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// A `[[sinks]] type = "clickhouse"` entry: the server (`url`, required),
/// what to write and how often, and where rows wait while it is away.
fn clickhouse_from(
    f: &Located<PipelineFile>,
    sec: &Spanned<SinkSection>,
    state_dir: &Path,
) -> Result<crate::sink::clickhouse::ClickHouseSpec, ConfigError> {
    use crate::sink::clickhouse as ch;
    let v = sec.get_ref();
    let bad = |span: std::ops::Range<usize>, key: &str, m: String| invalid(&f.file, &f.src, span, key, m);
    if let Some(b) = &v.max_bytes {
        return Err(bad(b.span(), "sinks.max_bytes", "a clickhouse sink bounds its spool with spool_max".into()));
    }
    if let Some(r) = &v.roll_every {
        return Err(bad(r.span(), "sinks.roll_every", "only a parquet sink rolls files".into()));
    }
    let url = v.url.as_ref().ok_or_else(|| {
        bad(
            sec.span(),
            "sinks.url",
            "a clickhouse sink needs url (its HTTP interface, e.g. http://127.0.0.1:8123)".into(),
        )
    })?;
    let parsed = url::Url::parse(url.get_ref()).map_err(|e| bad(url.span(), "sinks.url", e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(url.span(), "sinks.url", "must be an http:// or https:// address".into()));
    }
    let database = match &v.database {
        Some(d)
            if d.get_ref().is_empty()
                || d.get_ref().len() > 64
                || !d.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            return Err(bad(d.span(), "sinks.database", "letters, digits and _ only (at most 64)".into()));
        }
        Some(d) => d.get_ref().clone(),
        None => ch::DEFAULT_DATABASE.to_string(),
    };
    let tables = match &v.tables {
        None => ch::TABLES.iter().map(|t| t.to_string()).collect(),
        Some(ts) => {
            let mut names = Vec::new();
            for t in ts {
                if !ch::TABLES.contains(&t.get_ref().as_str()) {
                    return Err(bad(
                        t.span(),
                        "sinks.tables",
                        format!("unknown table '{}' (expected {})", t.get_ref(), ch::TABLES.join(", ")),
                    ));
                }
                names.push(t.get_ref().clone());
            }
            names
        }
    };
    let flush_every_ms = match &v.flush_every {
        None => ch::DEFAULT_FLUSH_EVERY_MS,
        Some(t) => {
            let ms = duration(&f.file, &f.src, t, "sinks.flush_every")?;
            if !(100..=600_000).contains(&ms) {
                return Err(bad(t.span(), "sinks.flush_every", "must be from 100ms to 10m".into()));
            }
            ms as u64
        }
    };
    let batch_rows = match &v.batch_rows {
        None => ch::DEFAULT_BATCH_ROWS,
        // An insert is atomic up to ClickHouse's max_insert_block_size (1,048,576 rows).
        Some(n) if (1..=1_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => return Err(bad(n.span(), "sinks.batch_rows", "must be from 1 to 1000000".into())),
    };
    let spool_max_bytes = match &v.spool_max {
        None => ch::DEFAULT_SPOOL_MAX_BYTES,
        Some(b) => {
            let n =
                crate::features::budget::parse_size(b.get_ref()).map_err(|m| bad(b.span(), "sinks.spool_max", m))?;
            if n < (1 << 20) {
                return Err(bad(b.span(), "sinks.spool_max", "must be at least 1MiB".into()));
            }
            n as u64
        }
    };
    let retention_days = match &v.retention {
        None => None,
        Some(r) => {
            let ms = duration(&f.file, &f.src, r, "sinks.retention")?;
            if ms % 86_400_000 != 0 {
                return Err(bad(r.span(), "sinks.retention", "whole days, e.g. \"30d\"".into()));
            }
            Some(u32::try_from(ms / 86_400_000).map_err(|_| bad(r.span(), "sinks.retention", "too long".into()))?)
        }
    };
    let spool_dir = match &v.spool_dir {
        Some(d) => state_dir.join(d.get_ref()),
        None => state_dir.join("clickhouse-spool"),
    };
    Ok(ch::ClickHouseSpec {
        url: url.get_ref().clone(),
        database,
        user: v.user.as_ref().map(|u| u.get_ref().clone()),
        password_env: v.password_env.as_ref().map(|p| p.get_ref().clone()),
        tables,
        flush_every_ms,
        batch_rows,
        spool_dir,
        spool_max_bytes,
        retention_days,
    })
}

fn invalid(file: &Path, src: &str, span: std::ops::Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        line: line_of(src, span.start),
        key: key.to_string(),
        message: message.into(),
    }
}

fn duration(file: &Path, src: &str, v: &Spanned<String>, key: &str) -> Result<i64, ConfigError> {
    let ms = parse_duration_ms(v.get_ref()).map_err(|m| invalid(file, src, v.span(), key, m))?;
    if ms <= 0 {
        return Err(invalid(file, src, v.span(), key, "must be longer than zero"));
    }
    Ok(ms)
}

/// [`duration`], within `range` (ms); outside it the error says `bounds`.
fn duration_in(
    file: &Path,
    src: &str,
    v: &Spanned<String>,
    key: &str,
    range: std::ops::RangeInclusive<i64>,
    bounds: &str,
) -> Result<i64, ConfigError> {
    let ms = duration(file, src, v, key)?;
    if !range.contains(&ms) {
        return Err(invalid(file, src, v.span(), key, bounds));
    }
    Ok(ms)
}

/// The pipeline used when none is named: `pipelines/default.toml`, shipped in the binary
/// too so that `gatewatch demo` runs from any directory.
pub const DEFAULT_PIPELINE: &str = include_str!("../pipelines/default.toml");
pub const DEFAULT_PIPELINE_PATH: &str = "pipelines/default.toml";

fn read_file(path: &Path) -> Result<String, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PIPELINE_PATH) => {
            Ok(DEFAULT_PIPELINE.to_string())
        }
        Err(error) => Err(ConfigError::Io { file: path.to_path_buf(), error }),
    }
}

impl Pipeline {
    /// Loads and validates a pipeline file (following `extends`).
    pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
        let src = read_file(path)?;
        Self::from_source(path, &src)
    }

    /// Parses pipeline text as if read from `path` (relative `extends` resolve against it).
    pub fn from_source(path: &Path, src: &str) -> Result<Pipeline, ConfigError> {
        let mut chain = vec![Self::parse_file(path, src.to_string())?];
        while let Some(base) = chain.last().and_then(|f| f.value.extends.clone()) {
            if chain.len() > 8 {
                return Err(ConfigError::Syntax {
                    file: path.to_path_buf(),
                    message: "extends: chain longer than 8 files (a cycle?)".into(),
                });
            }
            let cur = &chain[chain.len() - 1].file;
            let base_path = cur.parent().unwrap_or(Path::new(".")).join(&base);
            let base_src = read_file(&base_path)?;
            chain.push(Self::parse_file(&base_path, base_src)?);
        }
        Self::resolve(path, &chain)
    }

    fn parse_file(path: &Path, src: String) -> Result<Located<PipelineFile>, ConfigError> {
        let value: PipelineFile = toml::from_str(&src).map_err(|e| ConfigError::Syntax {
            file: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Ok(Located { file: path.to_path_buf(), src, value })
    }

    /// Takes each section from the first file in the chain that defines it.
    fn resolve(path: &Path, chain: &[Located<PipelineFile>]) -> Result<Pipeline, ConfigError> {
        macro_rules! pick {
            ($field:ident) => {
                chain.iter().find_map(|f| f.value.$field.as_ref().map(|v| (f, v)))
            };
        }

        let input = match pick!(input) {
            None => InputConfig {
                format: Format::Auto,
                max_line_bytes: default_max_line(),
                path: None,
                mapping: None,
                max_future_ms: DEFAULT_MAX_FUTURE_MS,
                poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
                kafka: None,
            },
            Some((f, s)) => {
                let v = s.get_ref();
                let mapping = v
                    .mapping
                    .as_ref()
                    .map(|m| Mapping::compile(m).map_err(|e| invalid(&f.file, &f.src, s.span(), "input.mapping", e)))
                    .transpose()?;
                if v.format == Format::Mapped && mapping.is_none() {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        s.span(),
                        "input.format",
                        "'mapped' needs an [input.mapping] table",
                    ));
                }
                if v.max_line_bytes < 256 {
                    return Err(invalid(&f.file, &f.src, s.span(), "input.max_line_bytes", "must be at least 256"));
                }
                let path = v.path.as_ref().map(|p| f.file.parent().unwrap_or(Path::new(".")).join(p));
                let max_future_ms = match &v.max_future {
                    Some(d) => duration(&f.file, &f.src, d, "input.max_future")?,
                    None => DEFAULT_MAX_FUTURE_MS,
                };
                let poll_interval_ms = match &v.poll_interval {
                    Some(d) => {
                        duration_in(&f.file, &f.src, d, "input.poll_interval", 1..=10_000, "must be from 1ms to 10s")?
                    }
                    None => DEFAULT_POLL_INTERVAL_MS,
                };
                let mut kafka = v.kafka.as_ref().map(|k| kafka_input_from(f, k)).transpose()?;
                if let Some(k) = kafka.as_mut() {
                    k.max_future_ms = max_future_ms;
                }
                InputConfig {
                    format: v.format,
                    max_line_bytes: v.max_line_bytes,
                    path,
                    mapping,
                    max_future_ms,
                    poll_interval_ms,
                    kafka,
                }
            }
        };

        let mut features = FeatureConfig::default();
        if let Some((f, s)) = pick!(features) {
            let v = s.get_ref();
            if let Some(t) = &v.tick {
                features.tick_ms = duration(&f.file, &f.src, t, "features.tick")?;
            }
            if let Some(l) = &v.lateness {
                features.lateness_ms = parse_duration_ms(l.get_ref())
                    .map_err(|m| invalid(&f.file, &f.src, l.span(), "features.lateness", m))?;
            }
            features.idle_ms = 3_600_000 + features.lateness_ms + 600_000;
            if let Some(b) = &v.state_budget {
                features.state_budget_bytes = crate::features::budget::parse_bytes(b.get_ref())
                    .map_err(|m| invalid(&f.file, &f.src, b.span(), "features.state_budget", m))?;
            }
        }

        let mut output = OutputConfig { batch_rows: 8192, batch_max_age_ms: 200, events: true, features: true };
        if let Some((f, s)) = pick!(output) {
            let v = s.get_ref();
            if let Some(n) = v.batch_rows {
                if !(1..=1_000_000).contains(&n) {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        s.span(),
                        "output.batch_rows",
                        "must be between 1 and 1000000",
                    ));
                }
                output.batch_rows = n;
            }
            if let Some(a) = &v.batch_max_age {
                output.batch_max_age_ms = duration(&f.file, &f.src, a, "output.batch_max_age")?;
            }
            output.events = v.events.unwrap_or(true);
            output.features = v.features.unwrap_or(true);
            if let Some(e) = &v.features_every {
                let ms = duration(&f.file, &f.src, e, "output.features_every")?;
                if ms < features.tick_ms || ms % features.tick_ms != 0 {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        e.span(),
                        "output.features_every",
                        "must be a whole number of features.tick",
                    ));
                }
                features.persist_every_ticks = (ms / features.tick_ms) as u32;
            }
        }

        let mut decisions = DecisionConfig {
            escalation: 2.0,
            max_ttl_ms: 86_400_000,
            offense_memory_ms: 86_400_000,
            shared_when: DEFAULT_SHARED_WHEN.to_string(),
            shared_when_at: (path.to_path_buf(), 0),
        };
        if let Some((f, s)) = pick!(decisions) {
            let v = s.get_ref();
            if let Some(t) = &v.max_ttl {
                decisions.max_ttl_ms = duration(&f.file, &f.src, t, "decisions.max_ttl")?;
            }
            if let Some(t) = &v.offense_memory {
                decisions.offense_memory_ms = duration(&f.file, &f.src, t, "decisions.offense_memory")?;
            }
            if let Some(e) = v.escalation {
                if !(1.0..=10.0).contains(&e) {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        s.span(),
                        "decisions.escalation",
                        "must be between 1.0 and 10.0",
                    ));
                }
                decisions.escalation = e;
            }
            if let Some(w) = &v.shared_when {
                decisions.shared_when = w.get_ref().clone();
                decisions.shared_when_at = (f.file.clone(), line_of(&f.src, w.span().start));
            }
        }

        let mut allowlist = Allowlist::default();
        if let Some((f, s)) = pick!(allowlist) {
            let v = s.get_ref();
            for c in &v.cidrs {
                allowlist.cidrs.push(
                    parse_net(c.get_ref()).map_err(|m| invalid(&f.file, &f.src, c.span(), "allowlist.cidrs", m))?,
                );
            }
            allowlist.api_keys = v.api_keys.clone();
            for cr in &v.crawlers {
                let c = cr.get_ref();
                let key = format!("allowlist.crawlers '{}'", c.name);
                let user_agent = regex::Regex::new(&c.user_agent).map_err(|e| {
                    invalid(&f.file, &f.src, cr.span(), &key, format!("user_agent is not a valid regex: {e}"))
                })?;
                let cidrs = c
                    .cidrs
                    .iter()
                    .map(|n| parse_net(n))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| invalid(&f.file, &f.src, cr.span(), &key, m))?;
                if cidrs.is_empty() {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        cr.span(),
                        &key,
                        "a crawler needs the networks it is verified from",
                    ));
                }
                allowlist.crawlers.push(Crawler { name: c.name.clone(), user_agent, cidrs });
            }
        }

        let mut classes = crate::classes::ClassConfig::default();
        if let Some((f, s)) = pick!(classes) {
            for p in &s.get_ref().login_forms {
                let v = p.get_ref();
                if !v.starts_with('/') || v.len() > 1024 || v.contains(['?', '#']) {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        p.span(),
                        "classes.login_forms",
                        format!("'{v}' is not a path (starting with '/', no query, at most 1024 bytes)"),
                    ));
                }
                classes.login_forms.push(v.clone());
            }
            if let Some(n) = &s.get_ref().sessions_held {
                let v = *n.get_ref();
                if !(2..=100_000_000).contains(&v) {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        n.span(),
                        "classes.sessions_held",
                        format!("{v}: must be 2 to 100000000 sessions"),
                    ));
                }
                classes.sessions_held = v as usize;
            }
        }

        let state_dir = match pick!(state) {
            Some((f, s)) => match &s.get_ref().dir {
                Some(d) => f.file.parent().unwrap_or(Path::new(".")).join(d),
                None => PathBuf::from("gatewatch-state"),
            },
            None => PathBuf::from("gatewatch-state"),
        };
        let mut retention = crate::sink::retention::Retention::default();
        if let Some((f, s)) = pick!(state) {
            let s = s.get_ref();
            if let Some(r) = &s.retention {
                let ms = duration(&f.file, &f.src, r, "state.retention")?;
                if ms < 3_600_000 {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        r.span(),
                        "state.retention",
                        "must be at least 1h (hours are removed whole)",
                    ));
                }
                retention.max_age_ms = Some(ms);
            }
            if let Some(b) = &s.retention_bytes {
                let n = crate::features::budget::parse_size(b.get_ref())
                    .map_err(|m| invalid(&f.file, &f.src, b.span(), "state.retention_bytes", m))?;
                if n < (1 << 20) {
                    return Err(invalid(&f.file, &f.src, b.span(), "state.retention_bytes", "must be at least 1MiB"));
                }
                retention.max_bytes = Some(n as u64);
            }
        }

        let mut rules = Vec::new();
        if let Some(f) = chain.iter().find(|f| f.value.rules.is_some()) {
            let mut names = std::collections::HashSet::new();
            for r in f.value.rules.iter().flatten() {
                let span = r.span();
                let v = r.get_ref();
                if v.enabled == Some(false) {
                    continue;
                }
                let key = format!("rule '{}'", v.name);
                let bad = |sp: std::ops::Range<usize>, m: String| invalid(&f.file, &f.src, sp, &key, m);
                if v.name.is_empty() || !v.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    return Err(bad(span, "name must be non-empty letters, digits, '-' or '_'".into()));
                }
                if !names.insert(v.name.clone()) {
                    return Err(bad(span, "a rule with this name is already defined".into()));
                }
                let entity = EntityType::parse_decided(v.entity.get_ref()).ok_or_else(|| {
                    bad(
                        v.entity.span(),
                        format!(
                            "entity '{}' is not one of ip, cidr, user, api_key, device, session, class",
                            v.entity.get_ref()
                        ),
                    )
                })?;
                let action = Action::parse(v.action.get_ref()).filter(|a| *a != Action::Allow).ok_or_else(|| {
                    bad(
                        v.action.span(),
                        format!("action '{}' is not one of deny, challenge, throttle", v.action.get_ref()),
                    )
                })?;
                let on_shared = match &v.on_shared {
                    None => Action::Challenge.min(action),
                    Some(s) => Action::parse(s.get_ref()).ok_or_else(|| {
                        bad(
                            s.span(),
                            format!("on_shared '{}' is not one of deny, challenge, throttle, allow", s.get_ref()),
                        )
                    })?,
                };
                let ttl_ms = duration(&f.file, &f.src, &v.ttl, &format!("{key} ttl"))?;
                let score = v.score.unwrap_or(1.0);
                if !(0.0..=1.0).contains(&score) {
                    return Err(bad(span, "score must be between 0 and 1".into()));
                }
                if v.when.get_ref().trim().is_empty() {
                    return Err(bad(v.when.span(), "when: empty predicate".into()));
                }
                let spare = match &v.spare {
                    None => None,
                    Some(_) if !entity.is_range() => {
                        return Err(bad(
                            span,
                            "spare: only a cidr or network rule's decision covers addresses other than its entity"
                                .into(),
                        ));
                    }
                    Some(s) if s.get_ref().trim().is_empty() => {
                        return Err(bad(s.span(), "spare: empty predicate".into()));
                    }
                    Some(s) => Some((s.get_ref().clone(), line_of(&f.src, s.span().start))),
                };
                rules.push(RuleSpec {
                    name: v.name.clone(),
                    entity,
                    when: v.when.get_ref().clone(),
                    action,
                    ttl_ms,
                    reason: v.reason.clone(),
                    score,
                    on_shared,
                    spare,
                    shadow: v.shadow,
                    file: f.file.clone(),
                    line: line_of(&f.src, v.when.span().start),
                });
            }
        }

        let mut models = Vec::new();
        if let Some(f) = chain.iter().find(|f| f.value.models.is_some()) {
            for m in f.value.models.iter().flatten() {
                let v = m.get_ref();
                if v.enabled == Some(false) {
                    continue;
                }
                let key = format!("model '{}'", v.path.get_ref());
                let bad = |sp: std::ops::Range<usize>, msg: String| invalid(&f.file, &f.src, sp, &key, msg);
                let entity = EntityType::parse(v.entity.get_ref()).ok_or_else(|| {
                    bad(v.entity.span(), format!("entity '{}' is not an entity type", v.entity.get_ref()))
                })?;
                let path = f.file.parent().unwrap_or(Path::new(".")).join(v.path.get_ref());
                let model = match crate::model::Model::load(&path) {
                    Ok(m) => m,
                    // The embedded default pipeline, run outside the repository, uses the built-in copies.
                    Err(crate::model::ModelError::Io { .. })
                        if f.file == Path::new(DEFAULT_PIPELINE_PATH) && !Path::new(DEFAULT_PIPELINE_PATH).exists() =>
                    {
                        let name = Path::new(v.path.get_ref()).file_name().and_then(|n| n.to_str()).unwrap_or("");
                        crate::model::Model::embedded(name).ok_or_else(|| {
                            bad(v.path.span(), format!("{}: no such model (and none built in)", path.display()))
                        })?
                    }
                    Err(e) => return Err(bad(v.path.span(), e.to_string())),
                };
                if model.file.entity != entity {
                    return Err(bad(
                        v.entity.span(),
                        format!("the model scores {} rows, not {}", model.file.entity.as_str(), entity.as_str()),
                    ));
                }
                let challenge_at = v.challenge_at.unwrap_or(model.file.threshold);
                if !challenge_at.is_finite() || v.deny_at.is_some_and(|d| !d.is_finite() || d < challenge_at) {
                    return Err(bad(
                        m.span(),
                        "challenge_at and deny_at must be numbers, deny_at ≥ challenge_at".into(),
                    ));
                }
                let ttl_ms = duration(&f.file, &f.src, &v.ttl, &format!("{key} ttl"))?;
                models.push(ModelSpec {
                    model: std::sync::Arc::new(model),
                    entity,
                    challenge_at,
                    deny_at: v.deny_at,
                    when: v.when.as_ref().map(|w| w.get_ref().clone()),
                    ttl_ms,
                    shadow: v.shadow,
                    file: f.file.clone(),
                    line: line_of(&f.src, m.span().start),
                });
            }
        }

        let mut api = ApiConfig::default();
        if let Some((f, s)) = pick!(api) {
            let v = s.get_ref();
            if let Some(l) = &v.listen {
                if l.parse::<std::net::SocketAddr>().is_err() {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        s.span(),
                        "api.listen",
                        format!("'{l}' is not an address:port"),
                    ));
                }
                api.listen = l.clone();
            }
            if let Some(c) = &v.client_ip {
                api.client_ip = match c.get_ref().to_ascii_lowercase().as_str() {
                    "x-forwarded-for" => ClientIpFrom::XForwardedFor,
                    "x-real-ip" => ClientIpFrom::XRealIp,
                    other => {
                        return Err(invalid(
                            &f.file,
                            &f.src,
                            c.span(),
                            "api.client_ip",
                            format!("'{other}' is not x-forwarded-for or x-real-ip"),
                        ));
                    }
                };
            }
            if let Some(h) = v.trusted_hops {
                if h == 0 {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        s.span(),
                        "api.trusted_hops",
                        "must be at least 1 (the gateway itself)",
                    ));
                }
                api.trusted_hops = h;
            }
            for (slot, val) in [
                (&mut api.user_header, &v.user_header),
                (&mut api.api_key_header, &v.api_key_header),
                (&mut api.device_header, &v.device_header),
                (&mut api.session_header, &v.session_header),
            ] {
                if let Some(h) = val {
                    *slot = h.to_ascii_lowercase();
                }
            }
            if let Some(r) = v.throttle_rps {
                if !(r > 0.0 && r <= 1_000_000.0) {
                    return Err(invalid(&f.file, &f.src, s.span(), "api.throttle_rps", "must be a positive rate"));
                }
                api.throttle_rps = r;
            }
            if let Some(n) = v.workers {
                if n > 1024 {
                    return Err(invalid(&f.file, &f.src, s.span(), "api.workers", "must be 0 (one per core) to 1024"));
                }
                api.workers = n;
            }
            if let Some(n) = v.max_connections {
                if !(16..=1_000_000).contains(&n) {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        s.span(),
                        "api.max_connections",
                        "must be 16 to 1000000 connections",
                    ));
                }
                api.max_connections = n;
            }
            if let Some(n) = v.max_connections_per_ip {
                if n > api.max_connections {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        s.span(),
                        "api.max_connections_per_ip",
                        format!("must be 0 (no limit) to max_connections ({})", api.max_connections),
                    ));
                }
                api.max_connections_per_ip = Some(n);
            }
            if let Some(t) = &v.header_timeout {
                let ms = duration(&f.file, &f.src, t, "api.header_timeout")?;
                if ms > 3_600_000 {
                    return Err(invalid(&f.file, &f.src, t.span(), "api.header_timeout", "must be at most 1h"));
                }
                api.header_timeout_ms = ms;
            }
            if let Some(t) = &v.max_wait {
                api.max_wait_ms =
                    duration_in(&f.file, &f.src, t, "api.max_wait", 1_000..=600_000, "must be from 1s to 10m")?;
            }
            if let Some(n) = v.stream_retention {
                if !(1..=10_000_000).contains(&n) {
                    return Err(invalid(
                        &f.file,
                        &f.src,
                        s.span(),
                        "api.stream_retention",
                        "must be 1 to 10000000 changes",
                    ));
                }
                api.stream_retention = n;
            }
            if let Some(n) = v.query_max_rows {
                if !(1..=1_000_000).contains(&n) {
                    return Err(invalid(&f.file, &f.src, s.span(), "api.query_max_rows", "must be 1 to 1000000 rows"));
                }
                api.query_max_rows = n;
            }
            if let Some(t) = &v.query_timeout {
                api.query_timeout_ms =
                    duration_in(&f.file, &f.src, t, "api.query_timeout", 100..=3_600_000, "must be from 100ms to 1h")?;
            }
            if let Some(b) = &v.query_memory {
                let n = crate::features::budget::parse_size(b.get_ref())
                    .map_err(|m| invalid(&f.file, &f.src, b.span(), "api.query_memory", m))?;
                if n < (1 << 20) {
                    return Err(invalid(&f.file, &f.src, b.span(), "api.query_memory", "must be at least 1MiB"));
                }
                api.query_memory_bytes = n;
            }
        }

        let sinks = match chain.iter().find(|f| f.value.sinks.is_some()) {
            None => crate::sink::SinkSpec::defaults(output.events, output.features),
            Some(f) => sinks_from(f, &output, &state_dir)?,
        };

        Ok(Pipeline {
            file: path.to_path_buf(),
            input,
            features,
            output,
            decisions,
            allowlist,
            classes,
            rules,
            models,
            state_dir,
            retention,
            api,
            sinks,
        })
    }
}

fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("'{s}' is not a CIDR (e.g. 203.0.113.0/24) or an address"))
}

impl Allowlist {
    /// Whether requests from `ip` with this user agent may never be blocked automatically.
    pub fn allows_request(&self, ip: std::net::IpAddr, user_agent: Option<&str>, api_key: Option<&str>) -> bool {
        if self.cidrs.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        if let Some(k) = api_key
            && self.api_keys.iter().any(|a| a == k)
        {
            return true;
        }
        if let Some(ua) = user_agent {
            return self.crawlers.iter().any(|c| c.cidrs.iter().any(|n| n.contains(&ip)) && c.user_agent.is_match(ua));
        }
        false
    }

    /// Whether an automatic decision on this entity must be suppressed. An address or
    /// subnet inside a verified crawler's networks is protected: those networks are
    /// the crawler operator's own.
    pub fn protects_entity(&self, t: EntityType, entity: &str) -> bool {
        match t {
            EntityType::Ip => match entity.parse::<std::net::IpAddr>() {
                Ok(ip) => {
                    self.cidrs.iter().any(|n| n.contains(&ip))
                        || self.crawlers.iter().any(|c| c.cidrs.iter().any(|n| n.contains(&ip)))
                }
                Err(_) => false,
            },
            EntityType::Cidr => match entity.parse::<ipnet::IpNet>() {
                Ok(net) => {
                    let overlaps = |n: &ipnet::IpNet| n.contains(&net.network()) || net.contains(&n.network());
                    self.cidrs.iter().any(overlaps) || self.crawlers.iter().any(|c| c.cidrs.iter().any(overlaps))
                }
                Err(_) => false,
            },
            EntityType::ApiKey => self.api_keys.iter().any(|k| k == entity),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<Pipeline, ConfigError> {
        Pipeline::from_source(Path::new("test.toml"), src)
    }

    const RULE: &str = r#"
[[rules]]
name = "r1"
entity = "ip"
when = "requests_1m > 10"
action = "deny"
ttl = "10m"
reason = "too fast"
"#;

    #[test]
    fn minimal_rule() {
        let p = load(RULE).unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].ttl_ms, 600_000);
        assert_eq!(p.rules[0].line, 5);
        assert_eq!(p.rules[0].on_shared, Action::Challenge);
        assert!(!p.rules[0].shadow, "enforced unless marked");
        let p = load(&format!("{RULE}shadow = true\n")).unwrap();
        assert!(p.rules[0].shadow);
        let e = load(&format!("{RULE}shadow = \"yes\"\n")).unwrap_err().to_string();
        assert!(e.contains("test.toml") && e.contains("shadow"), "{e}");
    }

    #[test]
    fn spare_is_a_cidr_rules_own_and_names_its_line() {
        let e = load(&format!("{RULE}spare = \"age_s >= 600\"\n")).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:") && e.contains("spare: only a cidr or network rule"), "{e}");
        let cidr = RULE.replace("entity = \"ip\"", "entity = \"cidr\"");
        let p = load(&format!("{cidr}spare = \"age_s >= 600\"\n")).unwrap();
        assert_eq!(p.rules[0].spare, Some(("age_s >= 600".to_string(), 9)));
        let p = load(&format!("{cidr}spare = \"age_z >= 600\"\n")).unwrap();
        let e = crate::detect::RuleSet::compile(&p.rules).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:9: rule 'r1': spare:") && e.contains("age_z"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = load(&RULE.replace("\"ip\"", "\"planet\"")).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:4: rule 'r1': entity 'planet'"), "{e}");
        let e = load(&RULE.replace("\"10m\"", "\"ten minutes\"")).unwrap_err().to_string();
        assert!(e.contains("test.toml:7: rule 'r1' ttl:"), "{e}");
        let e = load(&RULE.replace("reason", "raison")).unwrap_err().to_string();
        assert!(e.contains("test.toml") && e.contains("line") && e.contains("raison"), "{e}");
        let e = load("[allowlist]\ncidrs = [\"10.0.0.0/33\"]\n").unwrap_err().to_string();
        assert!(e.starts_with("test.toml:2: allowlist.cidrs"), "{e}");
    }

    #[test]
    fn request_classes() {
        let p = load("[classes]\nlogin_forms = [\"/login\", \"/account/sign-in\"]\n").unwrap();
        assert_eq!(p.classes.login_forms, ["/login", "/account/sign-in"]);
        assert_eq!(p.classes.classify("POST", "/account/sign-in/", false), Some(crate::classes::BARE_LOGIN));
        assert!(load("").unwrap().classes.login_forms.is_empty(), "no class without forms");
        for bad in ["login", "/login?x=1", ""] {
            let e = load(&format!("[classes]\nlogin_forms = [\n  \"{bad}\"]\n")).unwrap_err().to_string();
            assert!(e.starts_with("test.toml:3: classes.login_forms: "), "{e}");
        }
        assert_eq!(load("").unwrap().classes.sessions_held, crate::sessions::DEFAULT_HELD);
        assert_eq!(load("[classes]\nsessions_held = 5000\n").unwrap().classes.sessions_held, 5000);
        for bad in ["1", "-3", "1000000000"] {
            let e = load(&format!("[classes]\nsessions_held = {bad}\n")).unwrap_err().to_string();
            assert!(e.starts_with("test.toml:2: classes.sessions_held: "), "{e}");
        }
        // A rule may judge a class; a model may not (nothing is kept per class).
        let rule = "[[rules]]\nname = \"c\"\nentity = \"class\"\nwhen = \"campaign_cold_share_10m >= 0.25\"\n\
                    action = \"challenge\"\nttl = \"10m\"\nreason = \"r\"\n";
        assert_eq!(load(rule).unwrap().rules[0].entity, EntityType::Class);
        let e = load("[[models]]\npath = \"m\"\nentity = \"class\"\nttl = \"10m\"\n").unwrap_err().to_string();
        assert!(e.starts_with("test.toml:3: model 'm': entity 'class' is not an entity type"), "{e}");
    }

    #[test]
    fn clickhouse_sink_keys() {
        let dl = "[[sinks]]\ntype = \"dead_letters\"\n";
        let p = load(&format!(
            "[state]\ndir = \"st\"\n{dl}[[sinks]]\ntype = \"clickhouse\"\nurl = \"http://127.0.0.1:8123\"\n\
             retention = \"30d\"\nflush_every = \"2s\"\ntables = [\"decisions\"]\n"
        ))
        .unwrap();
        let ch = p.sinks[1].clickhouse.as_deref().expect("clickhouse settings");
        assert_eq!((ch.database.as_str(), ch.retention_days, ch.flush_every_ms), ("gatewatch", Some(30), 2000));
        assert_eq!(ch.tables, ["decisions"]);
        assert_eq!(ch.spool_dir, Path::new("st/clickhouse-spool"), "the spool lives in the state dir");
        for (toml, want) in [
            ("type = \"clickhouse\"\n", "test.toml:3: sinks.url: a clickhouse sink needs url"),
            ("type = \"clickhouse\"\nurl = \"ftp://x\"\n", "test.toml:5: sinks.url: must be an http"),
            ("type = \"clickhouse\"\nurl = \"http://x\"\ndatabase = \"a;b\"\n", "test.toml:6: sinks.database"),
            (
                "type = \"clickhouse\"\nurl = \"http://x\"\nretention = \"36h\"\n",
                "test.toml:6: sinks.retention: whole days",
            ),
            (
                "type = \"clickhouse\"\nurl = \"http://x\"\ntables = [\"users\"]\n",
                "test.toml:6: sinks.tables: unknown table 'users'",
            ),
            ("type = \"clickhouse\"\nurl = \"http://x\"\nbatch_rows = 0\n", "test.toml:6: sinks.batch_rows"),
            ("type = \"parquet\"\nurl = \"http://x\"\n", "test.toml:5: sinks.url: only a clickhouse sink has it"),
        ] {
            let e = load(&format!("{dl}[[sinks]]\n{toml}")).unwrap_err().to_string();
            assert!(e.starts_with(want), "{toml}: {e}");
        }
    }

    #[test]
    fn kafka_input_and_sink_keys() {
        let p = load(
            "[input.kafka]\nbrokers = \"k1:9092,k2:9092\"\ntopics = [\"access-logs\"]\ngroup = \"gw\"\n\
             commit_every = \"2s\"\n[input.kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
             [[sinks]]\ntype = \"kafka\"\nbrokers = \"k1:9092\"\ndead_letters_topic = \"dlq\"\n",
        )
        .unwrap();
        let k = p.input.kafka.as_ref().expect("kafka input");
        assert_eq!((k.client.brokers.as_str(), k.group.as_str(), k.commit_every_ms), ("k1:9092,k2:9092", "gw", 2000));
        assert_eq!(k.client.properties.get("session.timeout.ms").map(String::as_str), Some("6000"));
        assert_eq!(k.rebuild_ms, 70 * 60_000, "the longest window and ten minutes");
        let s = p.sinks[0].kafka.as_deref().expect("kafka sink");
        assert_eq!((s.decisions_topic.as_deref(), s.dead_letters_topic.as_deref()), (None, Some("dlq")));
        // A Kafka dead-letter topic keeps dead letters: no other sink is needed.
        assert_eq!(p.sinks.len(), 1);

        // The two stages of a repartitioned group (docs/SCALING.md).
        let p = load(
            "[input.kafka]\nbrokers = \"k:9092\"\ntopics = [\"logs\", \"by-user\"]\ngroup = \"g\"\n\
             [input.kafka.entities]\nlogs = [\"ip\", \"subnet\"]\nby-user = [\"user\"]\n\
             [[sinks]]\ntype = \"dead_letters\"\n[[sinks]]\ntype = \"kafka\"\nbrokers = \"k:1\"\nrepartition_partitions = 12\n\
             [sinks.repartition]\nuser = \"by-user\"\napi_key = \"by-key\"\nnetwork = \"by-network\"\n",
        )
        .unwrap();
        assert_eq!(p.input.kafka.as_ref().map(|k| k.entities.clone()), Some(vec![0b11, 0b100]));
        let s = p.sinks[1].kafka.as_deref().expect("kafka sink");
        use crate::features::EntityType;
        assert_eq!(
            s.repartition,
            vec![
                (EntityType::ApiKey, "by-key".to_string()),
                (EntityType::Network, "by-network".to_string()),
                (EntityType::User, "by-user".to_string())
            ]
        );
        assert_eq!(s.repartition_partitions, 12);
        assert_eq!(s.learn_wait_ms, crate::sink::KafkaSinkSpec::DEFAULT_LEARN_WAIT_MS);

        let input = "[input.kafka]\nbrokers = \"k:9092\"\ntopics = [\"a\"]\ngroup = \"g\"\n";
        for (v, ms) in [("off", 0), ("30m", 1_800_000)] {
            let p = load(&format!("{input}rebuild = \"{v}\"\n")).unwrap();
            assert_eq!(p.input.kafka.as_ref().map(|k| k.rebuild_ms), Some(ms), "{v}");
        }
        let dl = "[[sinks]]\ntype = \"dead_letters\"\n";
        for (toml, want) in [
            (input.replace("k:9092", "k"), "test.toml:2: input.kafka.brokers: a comma-separated list of host:port"),
            (input.replace("[\"a\"]", "[\"a b\"]"), "test.toml:3: input.kafka.topics: a topic name"),
            (input.replace("[\"a\"]", "[]"), "test.toml:3: input.kafka.topics: from 1 to 64 topics"),
            (input.replace("\"g\"", "\"\""), "test.toml:4: input.kafka.group"),
            (format!("{input}max_idle = \"never\"\n"), "test.toml:5: input.kafka.max_idle"),
            (format!("{input}rebuild = \"soon\"\n"), "test.toml:5: input.kafka.rebuild"),
            (format!("{input}rebuild = \"2d\"\n"), "test.toml:5: input.kafka.rebuild: must be from"),
            (
                format!("{input}[input.kafka.properties]\n\"enable.auto.commit\" = \"true\"\n"),
                "test.toml:5: input.kafka.properties: 'enable.auto.commit' is set by gatewatch",
            ),
            (format!("{dl}[[sinks]]\ntype = \"kafka\"\n"), "test.toml:3: sinks.brokers: a kafka sink needs brokers"),
            (
                format!("{dl}[[sinks]]\ntype = \"kafka\"\nbrokers = \"k:1\"\n"),
                "test.toml:3: sinks.decisions_topic: a kafka sink needs",
            ),
            (
                format!(
                    "{dl}[[sinks]]\ntype = \"kafka\"\nbrokers = \"k:1\"\ndecisions_topic = \"d\"\nurl = \"http://x\"\n"
                ),
                "test.toml:7: sinks.url: only a clickhouse sink has it",
            ),
            (
                format!("{dl}[[sinks]]\ntype = \"parquet\"\nbrokers = \"k:1\"\n"),
                "test.toml:5: sinks.brokers: only a kafka sink has it",
            ),
            (
                format!(
                    "{dl}[[sinks]]\ntype = \"kafka\"\nbrokers = \"k:1\"\ndecisions_topic = \"d\"\nlearn_wait = \"500ms\"\n"
                ),
                "test.toml:7: sinks.learn_wait: must be from 1s to 24h",
            ),
            (
                format!(
                    "{dl}[[sinks]]\ntype = \"kafka\"\nbrokers = \"k:1\"\ndead_letters_topic = \"x\"\nlearn_wait = \"5s\"\n"
                ),
                "test.toml:7: sinks.learn_wait: only a sink with decisions_topic reads one",
            ),
            (
                format!("{input}[input.kafka.entities]\nb = [\"user\"]\n"),
                "test.toml:5: input.kafka.entities: 'b' is not one of input.kafka.topics",
            ),
            (
                format!("{input}[input.kafka.entities]\na = [\"users\"]\n"),
                "test.toml:5: input.kafka.entities: 'users' (for 'a') is not an entity type",
            ),
            (
                format!("{input}[input.kafka.entities]\na = []\n"),
                "test.toml:5: input.kafka.entities: 'a' counts for no",
            ),
            (
                format!("{dl}[[sinks]]\ntype = \"kafka\"\nbrokers = \"k:1\"\n[sinks.repartition]\ncidr = \"c\"\n"),
                "test.toml:6: sinks.repartition: 'cidr' is not an entity type events can be keyed by",
            ),
            (
                format!(
                    "{dl}[[sinks]]\ntype = \"kafka\"\nbrokers = \"k:1\"\nrepartition_partitions = 0\n[sinks.repartition]\nuser = \"u\"\n"
                ),
                "test.toml:6: sinks.repartition_partitions: must be from 1 to 10000",
            ),
        ] {
            let e = load(&toml).unwrap_err().to_string();
            assert!(e.starts_with(want), "{toml}: {e}");
        }
    }

    #[test]
    fn state_retention_keys() {
        let p = load("[state]\ndir = \"st\"\nretention = \"30d\"\nretention_bytes = \"2GiB\"\n").unwrap();
        assert_eq!(p.retention.max_age_ms, Some(30 * 86_400_000));
        assert_eq!(p.retention.max_bytes, Some(2 << 30));
        assert_eq!(load("[state]\ndir = \"st\"\n").unwrap().retention.max_age_ms, None, "default keeps all");
        for (toml, want) in [
            ("retention = \"30m\"\n", "test.toml:3: state.retention: must be at least 1h"),
            ("retention = \"soon\"\n", "test.toml:3: state.retention"),
            ("retention_bytes = \"10KiB\"\n", "test.toml:3: state.retention_bytes: must be at least 1MiB"),
            ("retention_bytes = \"lots\"\n", "test.toml:3: state.retention_bytes"),
        ] {
            let e = load(&format!("[state]\ndir = \"st\"\n{toml}")).unwrap_err().to_string();
            assert!(e.starts_with(want), "{toml}: {e}");
        }
    }

    #[test]
    fn input_poll_interval() {
        assert_eq!(load("").unwrap().input.poll_interval_ms, DEFAULT_POLL_INTERVAL_MS);
        assert_eq!(load("[input]\npoll_interval = \"200ms\"\n").unwrap().input.poll_interval_ms, 200);
        for (v, want) in [
            ("\"20s\"", "test.toml:2: input.poll_interval: must be from 1ms to 10s"),
            ("\"0s\"", "test.toml:2: input.poll_interval"),
            ("\"soon\"", "test.toml:2: input.poll_interval"),
        ] {
            let e = load(&format!("[input]\npoll_interval = {v}\n")).unwrap_err().to_string();
            assert!(e.starts_with(want), "{v}: {e}");
        }
    }

    #[test]
    fn allowlist_semantics() {
        let p = load(
            r#"
[allowlist]
cidrs = ["192.0.2.0/24"]
api_keys = ["partner"]
[[allowlist.crawlers]]
name = "googlebot"
user_agent = "Googlebot/"
cidrs = ["66.249.64.0/19"]
"#,
        )
        .unwrap();
        let a = &p.allowlist;
        assert!(a.allows_request("192.0.2.7".parse().unwrap(), None, None));
        assert!(a.allows_request(
            "66.249.66.1".parse().unwrap(),
            Some("Mozilla/5.0 (compatible; Googlebot/2.1)"),
            None
        ));
        assert!(!a.allows_request(
            "203.0.113.5".parse().unwrap(),
            Some("Mozilla/5.0 (compatible; Googlebot/2.1)"),
            None
        ));
        assert!(a.protects_entity(EntityType::Cidr, "66.249.66.0/24"));
        assert!(a.protects_entity(EntityType::ApiKey, "partner"));
        assert!(!a.protects_entity(EntityType::Ip, "203.0.113.5"));
    }
}
