//! The `gatewatch` command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use gatewatch::config::{DEFAULT_PIPELINE_PATH, Pipeline};
use gatewatch::event::Format;
use gatewatch::simulate::{self, OutFormat, SimConfig};
use gatewatch::{analytics, decision, engine, eval};

/// The engine allocates many short-lived Arrow buffers per tick; mimalloc
/// measured ~10% faster end to end than the system allocator here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Behaviour analytics for API gateways: reads access logs, builds per-entity
/// behaviour features, applies rules, and decides whom to deny, challenge or throttle.
#[derive(Parser)]
#[command(name = "gatewatch", version, about, long_about = None)]
struct Cli {
    /// Pipeline file: input format, windows, allowlists and rules.
    #[arg(long, global = true, default_value = DEFAULT_PIPELINE_PATH, value_name = "FILE")]
    pipeline: PathBuf,

    /// Keep transparent huge pages (off for this process by default: a
    /// growing state then costs the kernel a 2 MiB zeroing per first touch;
    /// docs/PERFORMANCE.md). Also GATEWATCH_HUGE_PAGES=1.
    #[arg(long, global = true)]
    huge_pages: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate labelled gateway traffic (benign users, partners, crawlers and attacks).
    Simulate {
        /// Random seed: the same seed always gives the same traffic.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Hours of traffic to generate.
        #[arg(long, default_value_t = 6.0)]
        hours: f64,
        /// Multiplier for the benign user populations.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Only these attack scenarios (comma-separated); default: every one
        /// but those held back from the default mix (`simulate::HELD_BACK`,
        /// none today), which this names to include.
        #[arg(long, value_delimiter = ',')]
        attacks: Option<Vec<String>>,
        /// Log shapes to write.
        #[arg(long, value_delimiter = ',', default_values = ["json", "nginx", "combined"])]
        formats: Vec<OutFormat>,
        /// Output directory (access.jsonl, access.log, access-combined.log, labels.jsonl).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Run the pipeline over a log file as fast as possible, in event time.
    Replay {
        /// Log file to read, or - for stdin.
        #[arg(long, value_name = "FILE", required_unless_present = "kafka")]
        input: Option<PathBuf>,
        /// Read the pipeline's [input.kafka] topics instead, as a member of its
        /// consumer group, from the committed offsets to where each partition
        /// ends; offsets are committed at the end.
        #[arg(long, conflicts_with = "input")]
        kafka: bool,
        /// Input shape; default: the pipeline's [input] format.
        #[arg(long)]
        format: Option<Format>,
        /// Output directory: decisions.jsonl, dead_letters.jsonl, events/, features/, decisions/.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Play labelled traffic against decisions as a gateway would, and report detection and collateral.
    ///
    /// With --pipelines (and --traffic, --out) it replays the traffic through each
    /// pipeline and prints them side by side, as `gatewatch compare` does.
    Eval {
        /// labels.jsonl from `gatewatch simulate` (or your own labelled requests).
        #[arg(long, value_name = "FILE", required_unless_present = "pipelines")]
        labels: Option<PathBuf>,
        /// decisions.jsonl from `gatewatch replay`.
        #[arg(long, value_name = "FILE", required_unless_present = "pipelines")]
        decisions: Option<PathBuf>,
        /// What shadow rules and models decided (default: shadow_decisions.jsonl
        /// beside --decisions, when the run had any): judged alone and as if
        /// promoted, next to the enforced decisions.
        #[arg(long, value_name = "FILE")]
        shadow: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Pipelines to compare on --traffic (comma-separated).
        #[arg(long, value_delimiter = ',', requires_all = ["traffic", "out"])]
        pipelines: Option<Vec<PathBuf>>,
        /// A `gatewatch simulate --out` directory (access.jsonl and labels.jsonl).
        #[arg(long, value_name = "DIR")]
        traffic: Option<PathBuf>,
        /// Where each pipeline's run goes.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The story of one entity: its decisions with the rule or model, the
    /// feature values and the reason; its traffic before and after; the
    /// entities it shares traffic with and the decisions on them.
    Explain {
        /// ip, cidr, user, api_key, device or session.
        #[arg(long, value_name = "TYPE", value_parser = parse_entity_type)]
        entity_type: gatewatch::features::EntityType,
        /// The entity as decisions name it, e.g. 203.0.113.7 or 203.0.113.0/24.
        #[arg(long, value_name = "NAME")]
        entity: String,
        /// A replay's output directory or a state directory; default: the
        /// pipeline's state directory.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Print the story as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// SQL over the tables: events, features, decisions, shadow_decisions, dead_letters.
    Query {
        /// A replay's output directory, or a state directory (every run under
        /// its runs/ is read as one history).
        #[arg(long, value_name = "DIR", required_unless_present = "clickhouse", conflicts_with = "clickhouse")]
        data: Option<PathBuf>,
        /// Ask a ClickHouse server instead (its HTTP interface, e.g. http://127.0.0.1:8123),
        /// read-only; with --file, the file's ClickHouse variant (queries/clickhouse/NAME.sql) when there is one.
        #[arg(long, value_name = "URL")]
        clickhouse: Option<String>,
        /// The database the ClickHouse sink writes (with --clickhouse).
        #[arg(long, default_value = "gatewatch", requires = "clickhouse")]
        database: String,
        /// The SQL statement, e.g. "SELECT action, count(*) FROM decisions GROUP BY action".
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        sql: Option<String>,
        /// Read the statement from a file instead, e.g. one of queries/*.sql.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// A named parameter, NAME=VALUE, used as $NAME in the SQL (bound as text,
        /// never spliced into it). Repeatable.
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Output: a text table, CSV with a header, or JSON lines.
        #[arg(long, value_enum, default_value = "table")]
        format: analytics::OutputFormat,
    },
    /// Follow a log as it grows and serve decisions to gateways over HTTP.
    Run {
        /// Log file to follow (like tail -F, across rotation), or - for stdin;
        /// default: the pipeline's [input] path.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Address to serve the decision API on; default: the pipeline's [api] listen (127.0.0.1:8790).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Read the file from its beginning instead of only new lines.
        #[arg(long)]
        from_start: bool,
        /// What this instance does: `all` (read logs, decide, serve the
        /// decision API); `engine` (read and decide, publish to the decisions
        /// topic; serves only /metrics and health checks); `api` (serve the
        /// decisions read from the pipeline's Kafka decisions topic, read no
        /// log). Several `api` instances behind a load balancer agree.
        #[arg(long, value_enum, default_value = "all")]
        role: RunRole,
    },
    /// Send a log file to a Kafka topic, a line per message keyed by its
    /// client's /24 (an IPv6 client's /48) and stamped with its event time (demos,
    /// tests, backfills).
    Produce {
        /// Log file to send, or - for stdin.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// host:port,...; default: the pipeline's [input.kafka] brokers.
        #[arg(long, value_name = "HOST:PORT")]
        brokers: Option<String>,
        /// Lines of one subnet per message (as a shipper batching lines sends them).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        lines_per_message: u32,
        /// Create the topic with this many partitions if it does not exist.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=10_000))]
        partitions: Option<i32>,
        /// Input shape (to read each line's address and time); default: the pipeline's.
        #[arg(long)]
        format: Option<Format>,
    },
    /// Create, list and revoke the API keys gateways and admins use.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Set up the ClickHouse server the pipeline's clickhouse sink writes to.
    Clickhouse {
        #[command(subcommand)]
        action: ClickhouseCommand,
    },
    /// Replay the same labelled traffic through several pipelines (rules only,
    /// rules + model A, ...) and print detection and collateral side by side.
    Compare {
        /// A `gatewatch simulate --out` directory (access.jsonl and labels.jsonl).
        #[arg(long, value_name = "DIR")]
        traffic: PathBuf,
        /// Pipeline files to compare (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        pipelines: Vec<PathBuf>,
        /// Where each pipeline's run goes (DIR/<pipeline name>/).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Train a model from stored feature snapshots and labels; writes the model and its card.
    Train {
        /// A run directory with a features/ table (`gatewatch replay --out`); give several
        /// (seeds, scales, mixes), each followed by its --labels, to train on all of them.
        #[arg(long, value_name = "DIR", required = true)]
        data: Vec<PathBuf>,
        /// Labels of the --data in the same position: simulator labels.jsonl, or analyst
        /// verdicts {"entity_type","entity","attack","from"?,"to"?}.
        #[arg(long, value_name = "FILE", required = true)]
        labels: Vec<PathBuf>,
        /// anomaly (Gaussian mixture, unsupervised) or classifier (logistic regression on labels).
        #[arg(long)]
        kind: ModelKind,
        /// Entity type whose feature rows the model scores.
        #[arg(long, default_value = "ip")]
        entity: String,
        /// Model directory to write; its name is the model's name.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Version recorded in the model and cited by its decisions.
        #[arg(long, default_value = "1")]
        version: String,
        /// Features to use (comma-separated); default: every feature that varies.
        #[arg(long, value_delimiter = ',')]
        features: Option<Vec<String>>,
        /// Share of benign training rows allowed to reach the threshold.
        #[arg(long, default_value_t = 0.001)]
        target_fpr: f64,
        /// The latest share of the time range kept out of training, for the card's metrics.
        #[arg(long, default_value_t = 0.3)]
        holdout: f64,
        /// Mixture components (anomaly).
        #[arg(long, default_value_t = 4)]
        components: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// L2 penalty of the classifier (larger: smaller coefficients, smoother scores).
        #[arg(long, default_value_t = 0.1)]
        l2: f64,
        /// Most training rows fitted (an evenly spaced sample beyond).
        #[arg(long, default_value_t = 40_000)]
        max_rows: usize,
    },
    /// Simulate, replay, evaluate and print the report; nothing to install.
    Demo {
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 6.0)]
        hours: f64,
        /// Working directory for the demo's files.
        #[arg(long, default_value = "gatewatch-demo", value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once (only a salted hash is kept).
    Create {
        #[arg(long, value_enum)]
        role: gatewatch::api::Role,
        /// A name to recognise the key by, e.g. edge-nginx-1.
        #[arg(long)]
        name: String,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by name or id; a running server stops accepting it within a second.
    Revoke {
        /// The key's name or id.
        key: String,
    },
}

#[derive(Subcommand)]
enum ClickhouseCommand {
    /// Create the database and tables (MergeTree, by day; a TTL where the
    /// server has them and the sink sets retention); safe to run again, and
    /// adds the columns a newer gatewatch writes to existing tables.
    Init {
        /// The server, instead of the pipeline's clickhouse sink (e.g. http://127.0.0.1:8123).
        #[arg(long)]
        url: Option<String>,
        /// Database (with --url; default gatewatch).
        #[arg(long)]
        database: Option<String>,
    },
}

/// Model kinds on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModelKind {
    Anomaly,
    Classifier,
}

impl From<ModelKind> for gatewatch::model::Kind {
    fn from(k: ModelKind) -> Self {
        match k {
            ModelKind::Anomaly => gatewatch::model::Kind::Anomaly,
            ModelKind::Classifier => gatewatch::model::Kind::Classifier,
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // What gatewatch writes holds client data (raw log lines in dead letters,
    // addresses and accounts in decisions and tables) or key hashes: it is
    // created for its own user only.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let cli = Cli::parse();
    if let Err(e) = gatewatch::sysmem::set_at_start(cli.huge_pages) {
        tracing::info!(error = %e, "transparent huge pages left as the system sets them");
    }
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn load(path: &Path) -> Result<Pipeline> {
    Ok(Pipeline::load(path)?)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Simulate { seed, hours, scale, attacks, formats, out } => {
            if !(hours > 0.0 && hours <= 24.0 * 14.0) {
                bail!("--hours must be between 0 and 336");
            }
            if !(scale > 0.0 && scale <= 50.0) {
                bail!("--scale must be between 0 and 50");
            }
            if let Some(list) = &attacks {
                for a in list {
                    if !simulate::ATTACKS.contains(&a.as_str()) && !simulate::HELD_BACK.contains(&a.as_str()) {
                        let held = if simulate::HELD_BACK.is_empty() {
                            String::new()
                        } else {
                            format!(", and held back from the default mix: {}", simulate::HELD_BACK.join(", "))
                        };
                        bail!("unknown attack '{a}'; known: {}{held}", simulate::ATTACKS.join(", "));
                    }
                }
            }
            let mut cfg = SimConfig::new(seed, hours);
            cfg.scale = scale;
            cfg.attacks = attacks;
            let reqs = simulate::generate(&cfg);
            let o =
                simulate::write(&cfg, &reqs, &out, &formats).with_context(|| format!("writing {}", out.display()))?;
            println!("{} requests ({} attack) → {}", o.requests, o.attack_requests, out.display());
        }
        Command::Replay { input, kafka, format, out } => {
            let p = load(&cli.pipeline)?;
            let progress = std::io::stderr().is_terminal();
            let s = match input {
                Some(input) if !kafka => gatewatch::driver::replay_file(p, &input, format, &out, progress)?,
                _ => {
                    let k =
                        p.input.kafka.clone().with_context(|| {
                            format!("--kafka: {} has no [input.kafka] section", cli.pipeline.display())
                        })?;
                    let source = gatewatch::source::KafkaSource::open(&k, p.input.max_line_bytes, true)
                        .with_context(|| format!("cannot read Kafka at {}", k.client.brokers))?;
                    // Continuing a group's work: what it decided before is known.
                    let topic_sink = p
                        .sinks
                        .iter()
                        .find_map(|s| s.kafka.as_deref())
                        .filter(|k| k.decisions_topic.is_some())
                        .cloned();
                    let metrics = std::sync::Arc::new(gatewatch::metrics::Metrics::new()?);
                    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let prepare = |e: &mut engine::Engine| {
                        if let Some(spec) = &topic_sink
                            && let Some(feed) = gatewatch::live::learn::open(spec)
                        {
                            let patience = std::time::Duration::from_millis(spec.learn_wait_ms);
                            gatewatch::live::learn::read_to_end(e, &feed, &metrics, &stop, patience);
                        }
                    };
                    gatewatch::driver::replay_source_with(p, Box::new(source), format, &out, progress, prepare)?
                }
            };
            println!("{}", s.line());
        }
        Command::Produce { input, topic, brokers, lines_per_message, partitions, format } => {
            produce(&cli.pipeline, &input, &topic, brokers, lines_per_message, partitions, format)?;
        }
        Command::Eval { pipelines: Some(pipelines), traffic: Some(traffic), out: Some(out), .. } => {
            compare(&traffic, &pipelines, &out)?;
        }
        Command::Eval { labels, decisions, shadow, json, .. } => {
            let (Some(labels), Some(decisions)) = (labels, decisions) else {
                bail!("eval needs --labels and --decisions, or --pipelines with --traffic and --out");
            };
            let p = load(&cli.pipeline)?;
            let d = eval::read_decisions(&decisions)?;
            let cfg = eval::EvalConfig::for_pipeline(&p);
            let mut r = eval::evaluate(&labels, &d, &p.allowlist, &cfg)?;
            let shadow =
                shadow.or_else(|| Some(decisions.with_file_name("shadow_decisions.jsonl")).filter(|f| f.is_file()));
            if let Some(f) = shadow {
                let s = eval::read_decisions(&f)?;
                r.shadow = Some(Box::new(eval::ShadowReport::evaluate(&labels, &d, &s, &p.allowlist, &cfg)?));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.render());
            }
        }
        Command::Explain { entity_type, entity, data, json } => {
            let data = match data {
                Some(d) => d,
                None => load(&cli.pipeline)?.state_dir,
            };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let story = rt.block_on(analytics::explain::explain(&data, entity_type, &entity))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&story)?);
            } else {
                print!("{}", story.render());
            }
        }
        Command::Query { data, clickhouse, database, sql, file, params, format } => {
            let sql = match (sql, file) {
                (Some(sql), _) => sql,
                (None, Some(mut f)) => {
                    if clickhouse.is_some() {
                        // The dialects differ: a shipped query has its ClickHouse variant beside it.
                        let variant =
                            f.parent().map(|d| d.join("clickhouse")).zip(f.file_name()).map(|(d, n)| d.join(n));
                        if let Some(v) = variant.filter(|v| v.is_file()) {
                            eprintln!("(ClickHouse variant: {})", v.display());
                            f = v;
                        }
                    }
                    let sql = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
                    // A shipped query's header declares its parameters: name the
                    // missing ones before DataFusion reports an unbound placeholder.
                    let missing: Vec<String> = analytics::Investigation::parse(&sql)
                        .params
                        .into_iter()
                        .filter(|p| !params.iter().any(|(k, _)| k == p))
                        .collect();
                    if !missing.is_empty() {
                        bail!(
                            "{} needs {} (see its header)",
                            f.display(),
                            missing.iter().map(|p| format!("--param {p}=…")).collect::<Vec<_>>().join(" ")
                        );
                    }
                    sql
                }
                (None, None) => bail!("give the SQL or --file FILE"),
            };
            let batches = match (clickhouse, data) {
                (Some(url), _) => analytics::clickhouse::query(&url, &database, &sql, &params)?,
                (None, Some(data)) => {
                    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
                    rt.block_on(analytics::query_with(&data, &sql, &params))?
                }
                (None, None) => bail!("give --data DIR or --clickhouse URL"),
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            analytics::write(&batches, format, &mut out)?;
            std::io::Write::flush(&mut out)?;
        }
        Command::Train {
            data,
            labels,
            kind,
            entity,
            out,
            version,
            features,
            target_fpr,
            holdout,
            components,
            seed,
            l2,
            max_rows,
        } => {
            let entity = gatewatch::features::EntityType::parse(&entity).with_context(|| {
                format!("--entity '{entity}' is not one of ip, cidr, user, api_key, device, session")
            })?;
            let cfg = gatewatch::model::train::TrainConfig {
                data,
                labels,
                kind: kind.into(),
                entity,
                out,
                version,
                features,
                target_fpr,
                holdout,
                components,
                seed,
                l2,
                max_train_rows: max_rows,
                command: std::iter::once("gatewatch".to_string())
                    .chain(std::env::args().skip(1))
                    .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let card = gatewatch::model::train::train(&cfg)?;
            print!("{}", gatewatch::model::train::render_card(&card));
        }
        Command::Compare { traffic, pipelines, out } => compare(&traffic, &pipelines, &out)?,
        Command::Demo { seed, hours, out } => demo(&cli.pipeline, seed, hours, &out)?,
        Command::Run { input, listen, from_start, role } => live(&cli.pipeline, input, listen, from_start, role)?,
        Command::Clickhouse { action: ClickhouseCommand::Init { url, database } } => {
            clickhouse_init(&cli.pipeline, url, database)?
        }
        Command::Keys { action } => {
            use gatewatch::api::keys;
            let p = load(&cli.pipeline)?;
            let file = keys::path_in(&p.state_dir);
            match action {
                KeysCommand::Create { role, name } => {
                    let (rec, key) = keys::create(&file, &name, role)?;
                    eprintln!("created {:?} key '{}' (id {}); it is shown only now:", rec.role, rec.name, rec.id);
                    println!("{key}");
                }
                KeysCommand::List => {
                    println!("{:<10} {:<24} {:<8} {:<25} revoked", "id", "name", "role", "created");
                    for k in keys::list(&file)? {
                        println!(
                            "{:<10} {:<24} {:<8} {:<25} {}",
                            k.id,
                            k.name,
                            format!("{:?}", k.role).to_lowercase(),
                            gatewatch::event::time::format_rfc3339(k.created_ms),
                            k.revoked_ms.map(gatewatch::event::time::format_rfc3339).unwrap_or_else(|| "-".into())
                        );
                    }
                }
                KeysCommand::Revoke { key } => {
                    let rec = keys::revoke(&file, &key)?;
                    println!("revoked '{}' (id {})", rec.name, rec.id);
                }
            }
        }
    }
    Ok(())
}

/// `gatewatch clickhouse init`: the pipeline's clickhouse sink, or `--url`.
fn clickhouse_init(pipeline: &Path, url: Option<String>, database: Option<String>) -> Result<()> {
    use gatewatch::sink::clickhouse as ch;
    let p = load(pipeline)?;
    let configured = p.sinks.iter().find_map(|s| s.clickhouse.as_deref().cloned());
    let spec = match (url, configured) {
        (Some(url), c) => ch::ClickHouseSpec {
            url,
            database: database.unwrap_or_else(|| ch::DEFAULT_DATABASE.into()),
            user: c.as_ref().and_then(|c| c.user.clone()),
            password_env: c.as_ref().and_then(|c| c.password_env.clone()),
            tables: ch::TABLES.iter().map(|t| t.to_string()).collect(),
            flush_every_ms: ch::DEFAULT_FLUSH_EVERY_MS,
            batch_rows: ch::DEFAULT_BATCH_ROWS,
            spool_dir: p.state_dir.join("clickhouse-spool"),
            spool_max_bytes: ch::DEFAULT_SPOOL_MAX_BYTES,
            retention_days: c.and_then(|c| c.retention_days),
        },
        (None, Some(mut c)) => {
            if let Some(d) = database {
                c.database = d;
            }
            c
        }
        (None, None) => anyhow::bail!(
            "{}: no [[sinks]] type = \"clickhouse\" in this pipeline; name the server with --url",
            p.file.display()
        ),
    };
    let r = ch::init(&spec)?;
    println!("clickhouse {} at {}, database {}", r.server_version, spec.url, spec.database);
    for t in ch::TABLES {
        let state = if r.created.iter().any(|c| c == t) { "created" } else { "present" };
        println!("  {t:<16} {state}");
    }
    for c in &r.added_columns {
        println!("  added column {c}");
    }
    match (spec.retention_days, r.ttl) {
        (Some(d), true) => println!("  rows kept {d} days (TTL)"),
        (Some(_), false) => println!("  retention: this server has no TTL; drop old day partitions yourself"),
        (None, _) => println!("  rows kept until you drop them (set retention = \"30d\" on the sink for a TTL)"),
    }
    Ok(())
}

fn produce(
    pipeline: &Path,
    input: &Path,
    topic: &str,
    brokers: Option<String>,
    lines_per_message: u32,
    partitions: Option<i32>,
    format: Option<Format>,
) -> Result<()> {
    use gatewatch::kafka::{self, KafkaClient};
    let p = load(pipeline)?;
    let client = match (brokers, &p.input.kafka) {
        (Some(b), _) => KafkaClient::new(&b),
        (None, Some(k)) => k.client.clone(),
        (None, None) => {
            bail!("no brokers: pass --brokers HOST:PORT or set [input.kafka] brokers in {}", pipeline.display())
        }
    };
    if let Some(n) = partitions {
        kafka::create_topic(&client, topic, n)?;
    }
    let mut reader: Box<dyn std::io::BufRead> = if input == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(input).with_context(|| format!("cannot open {}", input.display()))?,
        ))
    };
    let bar = std::io::stderr().is_terminal().then(indicatif::ProgressBar::new_spinner);
    let sent = kafka::produce(
        &client,
        topic,
        reader.as_mut(),
        lines_per_message as usize,
        format.unwrap_or(p.input.format),
        p.input.mapping.as_ref(),
        |n| {
            if let Some(b) = &bar {
                b.set_message(format!("{n} lines"));
                b.tick();
            }
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    println!(
        "{} lines in {} messages → {topic} ({} without an address, sent unkeyed)",
        sent.lines, sent.messages, sent.unkeyed
    );
    Ok(())
}

/// A live engine takes its input in rounds and waits between them; the
/// allocator hands memory freed in a wait back to the kernel, and the next
/// round touches it afresh. With transparent huge pages (`always` on many
/// distributions) each first touch faults and zeroes 2 MiB: two saturated
/// Kafka instances spent 1.5–1.9× the CPU of a file replay of their share,
/// and 0.9–1.4× without huge pages (docs/PERFORMANCE.md, 2026-12-05). Replay
/// keeps them (without, its user time rose by a tenth on the simulator's
/// mix). `MIMALLOC_ALLOW_THP`, set in the service's environment, decides
/// instead.
fn without_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes
        // no memory this process holds, only how later faults are served.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "transparent huge pages left as they are");
        }
    }
}

fn live(
    pipeline: &Path,
    input: Option<PathBuf>,
    listen: Option<String>,
    from_start: bool,
    role: RunRole,
) -> Result<()> {
    use gatewatch::api::{self, AppState, Metrics, Services};
    use gatewatch::live::allow::AllowOverlay;
    use gatewatch::live::feed::DecisionFeed;
    use gatewatch::live::publish::DecisionPublisher;
    use gatewatch::live::{LiveStore, ShadowLog};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    without_huge_pages();
    let mut p = load(pipeline)?;
    if let Some(l) = listen {
        if l.parse::<std::net::SocketAddr>().is_err() {
            bail!("--listen '{l}' is not an address:port such as 127.0.0.1:8790");
        }
        p.api.listen = l;
    }
    // The decisions topic other instances share, if the pipeline has one.
    let topic_sink = p.sinks.iter().find_map(|s| s.kafka.as_deref()).filter(|k| k.decisions_topic.is_some()).cloned();
    if role == RunRole::Api {
        if input.is_some() || from_start {
            bail!("--role api reads no log (it serves the decisions the engines publish): drop --input/--from-start");
        }
        if topic_sink.is_none() {
            bail!(
                "--role api serves the decisions read from a Kafka decisions topic, and {} has no \
                 [[sinks]] type = \"kafka\" with a decisions_topic",
                pipeline.display()
            );
        }
    }
    let now = api::now_ms();
    let store = Arc::new(LiveStore::open_with_retention(&p.state_dir, now, p.api.stream_retention)?);
    let overlay = AllowOverlay::open(&p.state_dir)?;
    warn_if_shared(&p.state_dir);
    let metrics = Arc::new(Metrics::new()?);
    let ready = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let shadow = Arc::new(ShadowLog::new());
    let mut kafka = None;
    let (reading, worker, allowlist, control, opened_sessions) = if role == RunRole::Api {
        let Some(spec) = &topic_sink else { unreachable!("checked above") };
        let mut feed = DecisionFeed::open(spec).with_context(|| "cannot read the decisions topic")?;
        let opened = Arc::new(gatewatch::sessions::OpenedSessions::new(p.classes.sessions_held));
        feed.fill_opened_sessions(opened.clone());
        let topic = spec.decisions_topic.clone().unwrap_or_default();
        let handle = feed.spawn(store.clone(), metrics.clone(), ready.clone(), stop.clone())?;
        let allowlist = Arc::new(arc_swap::ArcSwap::from_pointee(overlay.apply(&p.allowlist)));
        (format!("reading decisions from the topic {topic}"), Worker::Feed(handle), allowlist, None, opened)
    } else {
        let engine = start_engine(&p, input, from_start, now, &store, &metrics, &shadow, &stop, topic_sink.as_ref())?;
        let allowlist = engine.allowlist.clone();
        allowlist.store(Arc::new(overlay.apply(&p.allowlist)));
        kafka = engine.kafka.clone();
        let opened = engine.opened_sessions;
        (
            format!("following {}", engine.source_name),
            Worker::Engine(engine.thread),
            allowlist,
            Some(engine.control),
            opened,
        )
    };
    let publisher = match (&topic_sink, role) {
        (Some(spec), RunRole::All | RunRole::Api) => DecisionPublisher::open(spec)?.map(Arc::new),
        _ => None,
    };
    let keys = api::KeyRing::open(&api::keys::path_in(&p.state_dir))?;
    if keys.is_empty() {
        eprintln!(
            "gatewatch: no API keys yet; every request but /healthz and /readyz gets 401 until one is created with \
             `gatewatch --pipeline {} keys create --role gateway --name NAME`",
            pipeline.display()
        );
    }
    let listen = p.api.listen.clone();
    let api_workers = p.api.workers;
    let limits = api::serve::conn_limits(&p.api, api::serve::raise_open_files_limit());
    let conn_metrics = metrics.clone();
    let state = Arc::new(AppState::new(Services {
        store: store.clone(),
        pipeline: p,
        overlay,
        allowlist,
        metrics,
        keys,
        ready: ready.clone(),
        control,
        shadow,
        publisher: publisher.clone(),
        opened_sessions: Some(opened_sessions),
    }));
    // Expiry reaches the change stream within a second. Purging commits (and
    // fsyncs) through the store's writer, so it runs on its own thread: an API
    // worker never waits on a disk or on the engine's writes.
    let purge_stop = Arc::new(AtomicBool::new(false));
    // An engine keeps its opened sessions across restarts (an API instance
    // reads them from the decisions topic again).
    let mut keep_sessions = SessionsKeeper::for_role(role, &state);
    let purger = {
        let (store, stop, metrics) = (store.clone(), purge_stop.clone(), state.metrics.clone());
        let publisher = publisher.clone();
        std::thread::Builder::new().name("purge".into()).spawn(move || {
            let mut last = std::time::Instant::now();
            let mut refused = 0;
            while !stop.load(Ordering::Relaxed) {
                if last.elapsed() >= std::time::Duration::from_secs(1) {
                    last = std::time::Instant::now();
                    if let Some(k) = keep_sessions.as_mut() {
                        k.save_every(std::time::Duration::from_secs(60));
                    }
                    if let Err(e) = store.purge_expired(api::now_ms()) {
                        tracing::warn!(error = %e, "purging expired decisions failed");
                    }
                    // What a failed write (a full disk) left in memory only.
                    match store.persist_pending() {
                        Ok(n) => metrics.store_unpersisted.set(n as i64),
                        Err(e) => tracing::warn!(error = %e, "writing the decision store failed"),
                    }
                    if let Some(k) = &kafka {
                        metrics.observe_kafka(k);
                    }
                    if let Some(p) = &publisher {
                        if let Err(e) = p.tombstone_expired(api::now_ms()) {
                            tracing::warn!(error = %e, "tombstones of expired manual decisions not published");
                        }
                        let failed = p.failed();
                        metrics.publish_failed.inc_by(failed.saturating_sub(refused));
                        refused = failed;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            keep_sessions
        })?
    };
    let workers = if api_workers > 0 {
        api_workers
    } else {
        // One core is left to the engine thread (and on a small box, to whatever
        // else runs there): measured on 2 cores, one API worker serves more
        // requests with a shorter tail than two (docs/PERFORMANCE.md).
        std::thread::available_parallelism().map(|n| n.get().saturating_sub(1).max(1)).unwrap_or(1)
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    let served: Result<()> = rt.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        tokio::spawn({
            let state = state.clone();
            async move {
                let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                    return;
                };
                while hup.recv().await.is_some() {
                    match state.reload().await {
                        Ok(r) => eprintln!("gatewatch: reloaded {r}"),
                        Err(e) => eprintln!("gatewatch: reload refused: {}", e.message),
                    }
                }
            }
        });
        let router = if role == RunRole::Engine {
            eprintln!("gatewatch: {reading}, serving metrics and health checks on http://{addr} (role engine: no decision API)");
            api::ops_router(state.clone())
        } else {
            eprintln!("gatewatch: {reading}, serving decisions on http://{addr}");
            api::router(state.clone())
        };
        // An API instance is ready once it has read the decisions topic to its end.
        if role != RunRole::Api {
            ready.store(true, Ordering::Relaxed);
        }
        let closing = state.clone();
        api::serve::serve(
            listener,
            router,
            limits,
            conn_metrics,
            async move {
                shutdown_signal().await;
                closing.close_streams();
            },
            std::time::Duration::from_secs(10),
        )
        .await;
        Ok(())
    });
    // Stop intake, drain, flush sinks, persist: the engine thread finishes its run.
    stop.store(true, Ordering::Relaxed);
    purge_stop.store(true, Ordering::Relaxed);
    // The keeper comes back for a last save once the engine has finished.
    let keep_sessions = purger.join().ok().flatten();
    if let Some(p) = &publisher {
        p.flush();
    }
    let ended = match worker {
        Worker::Engine(h) => {
            let summary = h.join().map_err(|_| anyhow::anyhow!("engine thread panicked"))??;
            summary.line()
        }
        Worker::Feed(h) => {
            h.join().map_err(|_| anyhow::anyhow!("decision feed thread panicked"))?;
            format!("{} decisions in force", store.active(api::now_ms()).len())
        }
    };
    if let Some(mut k) = keep_sessions {
        k.save_every(std::time::Duration::ZERO);
    }
    served?;
    eprintln!("gatewatch: stopped; {ended}");
    Ok(())
}

/// Writes an engine's opened sessions to its state directory
/// ([`gatewatch::sessions::FILE`]) when new ones were recorded.
struct SessionsKeeper {
    sessions: std::sync::Arc<gatewatch::sessions::OpenedSessions>,
    path: PathBuf,
    saved: u64,
    at: std::time::Instant,
}

impl SessionsKeeper {
    fn for_role(role: RunRole, state: &gatewatch::api::AppState) -> Option<SessionsKeeper> {
        let sessions = state.opened_sessions.clone().filter(|_| role != RunRole::Api)?;
        let path = state.state_dir.join(gatewatch::sessions::FILE);
        Some(SessionsKeeper { saved: sessions.added(), sessions, path, at: std::time::Instant::now() })
    }

    /// Saves when new sessions were recorded and `every` has passed since the
    /// last save (`ZERO`: now, at shutdown).
    fn save_every(&mut self, every: std::time::Duration) {
        let added = self.sessions.added();
        if added == self.saved || self.at.elapsed() < every {
            return;
        }
        self.at = std::time::Instant::now();
        match self.sessions.save(&self.path) {
            Ok(()) => self.saved = added,
            Err(e) => tracing::warn!(error = %e, "the opened sessions were not saved (kept in memory)"),
        }
    }
}

/// What reads for a `run` instance: its engine, or its decisions feed.
enum Worker {
    Engine(std::thread::JoinHandle<Result<engine::Summary, engine::EngineError>>),
    Feed(std::thread::JoinHandle<()>),
}

/// A running engine thread and what the API needs of it.
struct RunningEngine {
    thread: std::thread::JoinHandle<Result<engine::Summary, engine::EngineError>>,
    source_name: String,
    allowlist: std::sync::Arc<arc_swap::ArcSwap<gatewatch::config::Allowlist>>,
    control: gatewatch::live::control::Control,
    /// The Kafka source's counters, when it reads Kafka.
    kafka: Option<gatewatch::source::KafkaStats>,
    /// The sessions seen opened: by this engine, and by the others of its
    /// Kafka group as the decisions topic tells.
    opened_sessions: std::sync::Arc<gatewatch::sessions::OpenedSessions>,
}

/// Opens the log source and starts the engine on its own thread, with the
/// decisions in force restored from the store.
#[allow(clippy::too_many_arguments)]
fn start_engine(
    p: &Pipeline,
    input: Option<PathBuf>,
    from_start: bool,
    now: i64,
    store: &std::sync::Arc<gatewatch::live::LiveStore>,
    metrics: &std::sync::Arc<gatewatch::metrics::Metrics>,
    shadow: &std::sync::Arc<gatewatch::live::ShadowLog>,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    topic_sink: Option<&gatewatch::sink::kafka::KafkaSinkSpec>,
) -> Result<RunningEngine> {
    use gatewatch::api;
    use gatewatch::decision::Restored;
    use gatewatch::live::{ShadowSink, StoreSink, control, runner};

    // --input, else the pipeline's Kafka topics, else its [input] path.
    let file = input.or_else(|| if p.input.kafka.is_none() { p.input.path.clone() } else { None });
    let mut kafka = None;
    let source: Box<dyn gatewatch::source::Source> = match (file, &p.input.kafka) {
        (Some(input), _) => gatewatch::source::open(&input, p.input.max_line_bytes, true, from_start)
            .with_context(|| format!("cannot follow {}", input.display()))?,
        (None, Some(k)) => {
            let source = gatewatch::source::KafkaSource::open(k, p.input.max_line_bytes, false)
                .with_context(|| format!("cannot read Kafka at {}", k.client.brokers))?;
            kafka = Some(source.stats());
            Box::new(source)
        }
        (None, None) => {
            bail!("nothing to follow: pass --input FILE (or - for stdin), or set path or [input.kafka] in the pipeline")
        }
    };
    // Each run keeps its own output directory, so a restart never overwrites history.
    let run_dir = p.state_dir.join("runs").join(now.to_string());
    if p.retention.is_set() {
        let (dir, r) = (p.state_dir.clone(), p.retention);
        // Whole hours, at start and every ten minutes; the writer's open hours are left alone.
        std::thread::Builder::new().name("retention".into()).spawn(move || {
            loop {
                match gatewatch::sink::retention::prune(&dir, &r, api::now_ms()) {
                    Ok(p) if p.hours_removed > 0 => tracing::info!(
                        hours = p.hours_removed,
                        bytes = p.bytes_removed,
                        kept_bytes = p.bytes_kept,
                        "retention: removed the history past [state] retention / retention_bytes"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention: could not remove old history"),
                }
                std::thread::sleep(std::time::Duration::from_secs(600));
            }
        })?;
    }
    let source_name = source.name();
    let mut engine = engine::Engine::new(p.clone(), None, &source_name, &run_dir)?;
    engine.keep_deciding_when_sinks_fail();
    engine.count_scores_in(metrics.fired.clone());
    let opened_sessions = std::sync::Arc::new(gatewatch::sessions::OpenedSessions::new(p.classes.sessions_held));
    // What was held before a restart: the people mid-session still have one.
    match opened_sessions.load(&p.state_dir.join(gatewatch::sessions::FILE)) {
        Ok(0) => {}
        Ok(n) => tracing::info!(sessions = n, "opened sessions kept from before the restart"),
        Err(e) => {
            tracing::warn!(error = %e, "the opened sessions kept before the restart are not taken; starting without")
        }
    }
    engine.share_opened_sessions(opened_sessions.clone());
    // Where the partners' servers are: a secret used from elsewhere right
    // after a restart is not learned as their home.
    match engine.keep_homes(p.state_dir.join(gatewatch::features::homes::FILE)) {
        Ok(0) => {}
        Ok(n) => tracing::info!(clients = n, "confidential clients' networks kept from before the restart"),
        Err(e) => {
            tracing::warn!(error = %e, "the confidential clients' networks kept before the restart are not taken")
        }
    }
    // What the engine decided before a restart still counts: decisions in force
    // are not re-made shorter, and repeat offenders keep escalating.
    for (entity_type, entity, offense, at) in store.offenses(now - p.decisions.offense_memory_ms)? {
        let r = Restored {
            entity_type,
            entity: &entity,
            action: decision::Action::Allow,
            created_ms: at,
            expires_ms: at,
            offense,
            spared: &[],
        };
        engine.restore_decision(r);
    }
    for d in store.active(now).iter() {
        if let Some(r) = gatewatch::live::feed::restored(d) {
            engine.restore_decision(r);
        }
    }
    let learner = topic_sink.and_then(|spec| {
        gatewatch::live::learn::start(&mut engine, spec, metrics, stop, Some(opened_sessions.clone()))
    });
    let allowlist = engine.allowlist();
    engine.add_sink_first(Box::new(StoreSink::new(store.clone(), metrics.clone(), p.decisions.max_ttl_ms)));
    engine.add_sink(Box::new(ShadowSink::new(shadow.clone(), metrics.clone())));
    let progress: gatewatch::driver::Progress = {
        let metrics = metrics.clone();
        let mut seen = engine::Summary::default();
        Box::new(move |s: &engine::Summary| metrics.observe_summary(s, &mut seen))
    };
    let (control, inbox) = control::channel_pair();
    let stop = stop.clone();
    let thread = std::thread::Builder::new().name("engine".into()).spawn(move || {
        runner::lower_thread_priority(runner::ENGINE_NICE);
        let between: gatewatch::driver::RoundHook = Box::new(move |e, when| {
            inbox.apply(e);
            match (&learner, when) {
                (Some(l), gatewatch::driver::Between::NewShare) => l.catch_up(e),
                (Some(l), gatewatch::driver::Between::Rounds) => l.apply(e),
                (None, _) => {}
            }
        });
        gatewatch::driver::live(engine, source, stop, Some(between), Some(progress))
    })?;
    Ok(RunningEngine { thread, source_name, allowlist, control, kafka, opened_sessions })
}

/// What a `run` instance does (`run --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RunRole {
    All,
    Engine,
    Api,
}

/// Replays labelled traffic through each pipeline and prints the reports side by side.
fn compare(traffic: &Path, pipelines: &[PathBuf], out: &Path) -> Result<()> {
    let labels = traffic.join("labels.jsonl");
    let mut reports = Vec::new();
    for p in pipelines {
        let pipeline = load(p)?;
        let name = p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "pipeline".into());
        let run = out.join(&name);
        let allow = pipeline.allowlist.clone();
        let cfg = eval::EvalConfig::for_pipeline(&pipeline);
        gatewatch::driver::replay_file(
            pipeline,
            &traffic.join("access.jsonl"),
            None,
            &run,
            std::io::stderr().is_terminal(),
        )?;
        let decisions = eval::read_decisions(&run.join("decisions.jsonl"))?;
        let mut r = eval::evaluate(&labels, &decisions, &allow, &cfg)?;
        let shadow = run.join("shadow_decisions.jsonl");
        if shadow.is_file() {
            let s = eval::read_decisions(&shadow)?;
            r.shadow = Some(Box::new(eval::ShadowReport::evaluate(&labels, &decisions, &s, &allow, &cfg)?));
        }
        reports.push((name, r));
    }
    print!("{}", eval::compare(&reports));
    Ok(())
}

/// Says so when other users may read the state directory (made before
/// gatewatch made it, or widened since): it keeps raw log lines and decisions.
fn warn_if_shared(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(dir) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{mode:o}"),
                "the state directory is open to other users; it holds raw log lines and decisions: chmod 700 it"
            );
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

fn demo(pipeline: &Path, seed: u64, hours: f64, out: &Path) -> Result<()> {
    let p = load(pipeline)?;
    let traffic = out.join("traffic");
    let run_dir = out.join("run");
    println!("1/3 simulating {hours} h of gateway traffic (seed {seed}) …");
    let cfg = SimConfig::new(seed, hours);
    let reqs = simulate::generate(&cfg);
    let o = simulate::write(&cfg, &reqs, &traffic, &[OutFormat::Json])?;
    drop(reqs);
    println!("    {} requests, {} of them attacks → {}", o.requests, o.attack_requests, traffic.display());
    println!("2/3 replaying through {} …", p.file.display());
    let allow = p.allowlist.clone();
    let cfg = eval::EvalConfig::for_pipeline(&p);
    let s = gatewatch::driver::replay_file(
        p,
        &traffic.join("access.jsonl"),
        None,
        &run_dir,
        std::io::stderr().is_terminal(),
    )?;
    println!("    {}", s.line());
    println!("3/3 playing the decisions as a gateway would:\n");
    let d = eval::read_decisions(&run_dir.join("decisions.jsonl"))?;
    let r = eval::evaluate(&o.labels, &d, &allow, &cfg)?;
    print!("{}", r.render());
    println!(
        "\nexplore: gatewatch query --data {} \"SELECT source, action, count(*) AS n FROM decisions GROUP BY source, action ORDER BY n DESC\"",
        run_dir.display()
    );
    Ok(())
}

/// An entity type as decisions name it.
fn parse_entity_type(s: &str) -> Result<gatewatch::features::EntityType, String> {
    gatewatch::features::EntityType::parse_decided(s)
        .ok_or_else(|| format!("'{s}': expected ip, cidr, user, api_key, device, session or class"))
}

/// `NAME=VALUE` of `query --param`.
fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("'{s}': expected NAME=VALUE, NAME of letters, digits and _")),
    }
}
