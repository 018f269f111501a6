//! What the Kafka source ([`crate::source::kafka`]), the Kafka sink
//! ([`crate::sink::kafka`]) and `gatewatch produce` share: the brokers and the
//! librdkafka properties a pipeline names, and how a log line is keyed.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

/// Brokers and any librdkafka property (`security.protocol`, `sasl.*`,
/// `session.timeout.ms`, ...), applied after gatewatch's own defaults so an
/// operator can override every one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaClient {
    pub brokers: String,
    pub properties: BTreeMap<String, String>,
}

impl KafkaClient {
    /// A client of `brokers` with no extra property.
    pub fn new(brokers: &str) -> KafkaClient {
        KafkaClient { brokers: brokers.to_string(), properties: BTreeMap::new() }
    }

    /// librdkafka settings: `defaults` first, then the pipeline's properties.
    pub fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Counts what the brokers refused, from librdkafka's delivery reports
/// (the sink and `produce` check it after each flush).
#[derive(Default)]
pub struct Deliveries {
    pub failed: std::sync::atomic::AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log_client(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        log_error(&error, reason);
    }
}

/// librdkafka's own log lines, through `tracing`. It retries what fails
/// (a broker that went away is reconnected to), so its errors are warnings here.
pub(crate) fn log_client(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
            tracing::warn!(target: "librdkafka", facility = fac, "{message}")
        }
        L::Notice | L::Info => tracing::info!(target: "librdkafka", facility = fac, "{message}"),
        L::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
    }
}

/// librdkafka's global errors: a partition's end is news, not an error.
pub(crate) fn log_error(error: &rdkafka::error::KafkaError, reason: &str) {
    use rdkafka::error::{KafkaError as E, RDKafkaErrorCode as C};
    if matches!(error, E::PartitionEOF(_) | E::Global(C::PartitionEOF)) {
        return;
    }
    tracing::warn!(target: "librdkafka", "{error}: {reason}");
}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
        }
    }
}

/// Why a Kafka client could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka ({brokers}): {message}")]
    Client { brokers: String, message: String },
}

/// Properties a pipeline may not set, because the engine's guarantees rest on them.
pub const RESERVED: [&str; 4] = ["enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers"];

/// The key and timestamp a log line is produced with. The key is the client
/// address's network where it has one (IPv6 /48, the engine's `network`
/// entity), else its subnet (IPv4 /24, its `cidr`): every request of an
/// address, of its subnet *and* of its network lands in one partition, in
/// order, and the one instance that reads it holds the three entities'
/// complete features (docs/SCALING.md). The timestamp is the line's event time, which
/// the source merges partitions by. `None` when the line cannot be read (it is
/// still sent, without a key, and becomes a dead letter where it is consumed).
pub fn key_and_time(
    line: &str,
    format: crate::event::Format,
    mapping: Option<&crate::event::mapping::Mapping>,
) -> Option<(String, i64)> {
    let e = crate::event::parse_line(line, format, mapping).ok()?;
    let ip: std::net::IpAddr = e.client_ip.parse().ok()?;
    Some((crate::features::partition_key_of(ip), e.ts_ms))
}

/// The longest a message of several lines spans, in event time.
const BATCH_SPAN_MS: i64 = 1_000;

/// What `produce` sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub lines: u64,
    pub messages: u64,
    /// Lines that could not be read as an event (sent without a key all the same).
    pub unkeyed: u64,
}

/// Creates `topic` with `partitions` (replication 1) unless it exists.
/// How long start-up keeps asking the brokers for a topic's metadata while
/// they time out.
const METADATA_PATIENCE: Duration = Duration::from_secs(60);

/// A topic's metadata, asked again while the brokers time out or cannot be
/// reached, for at most a minute; any other error at once. One request waits
/// 10 s: a broker busy with other clients answered later than that, and the
/// engine ended at start-up before reading a line (a supervisor would only
/// have restarted it into the same wait).
pub fn fetch_metadata_patiently<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Result<rdkafka::metadata::Metadata, rdkafka::error::KafkaError> {
    use rdkafka::error::KafkaError as E;
    use rdkafka::types::RDKafkaErrorCode as Code;
    let started = std::time::Instant::now();
    loop {
        match client.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Err(E::MetadataFetch(Code::OperationTimedOut | Code::BrokerTransportFailure | Code::AllBrokersDown))
                if started.elapsed() < METADATA_PATIENCE =>
            {
                tracing::warn!(topic, "kafka: the brokers did not answer a metadata request in 10 s; asking again");
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

pub fn create_topic(client: &KafkaClient, topic: &str, partitions: i32) -> Result<(), KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let err = |m: String| KafkaError::Client { brokers: client.brokers.clone(), message: m };
    let admin: AdminClient<DefaultClientContext> = client.config(&[]).create().map_err(|e| err(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| err(e.to_string()))?;
    let topics = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    let opts = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(30)));
    let results =
        rt.block_on(admin.create_topics(&topics, &opts)).map_err(|e| err(format!("create topic {topic}: {e}")))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(err(format!("create topic {t}: {code}"))),
        }
    }
    Ok(())
}

/// Sends the lines of `input` to `topic`, each keyed by its client address
/// and stamped with its event time, `lines_per_message` lines of one address
/// to a message; waits until the brokers have acknowledged every one.
pub fn produce(
    client: &KafkaClient,
    topic: &str,
    input: &mut dyn std::io::BufRead,
    lines_per_message: usize,
    format: crate::event::Format,
    mapping: Option<&crate::event::mapping::Mapping>,
    mut progress: impl FnMut(u64),
) -> Result<Produced, KafkaError> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::types::RDKafkaErrorCode;
    use std::collections::HashMap;
    use std::time::Duration;

    let err = |m: String| KafkaError::Client { brokers: client.brokers.clone(), message: m };
    let producer: BaseProducer<Deliveries> = client
        .config(&[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "20"), ("compression.type", "lz4")])
        .create_with_context(Deliveries::default())
        .map_err(|e| err(e.to_string()))?;
    let send = |key: Option<&str>, ts: Option<i64>, payload: &[u8]| -> Result<(), KafkaError> {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(t) = ts {
            record = record.timestamp(t);
        }
        loop {
            match producer.send(record) {
                Ok(()) => {
                    producer.poll(Duration::ZERO);
                    return Ok(());
                }
                Err((rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(err(format!("{topic}: {e}"))),
            }
        }
    };
    let n = lines_per_message.max(1);
    let mut out = Produced::default();
    // Lines waiting for their network's message to fill: (lines, first line's
    // time, count), and the order they started in. A message holds at most
    // one second of its network's lines, as a shipper's batch does: lines
    // minutes apart in one message would reach the engine minutes early.
    let mut pending: HashMap<String, (Vec<u8>, i64, usize)> = HashMap::new();
    let mut started: std::collections::VecDeque<(i64, String)> = std::collections::VecDeque::new();
    let mut line = String::new();
    loop {
        line.clear();
        let read = input.read_line(&mut line).map_err(|e| err(format!("reading the input: {e}")))?;
        if read == 0 {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            continue;
        }
        out.lines += 1;
        match key_and_time(text, format, mapping) {
            None => {
                out.unkeyed += 1;
                send(None, None, text.as_bytes())?;
                out.messages += 1;
            }
            Some((key, ts)) if n == 1 => {
                send(Some(&key), Some(ts), text.as_bytes())?;
                out.messages += 1;
            }
            Some((key, ts)) => {
                // Messages whose first line is more than a second older than this one go now.
                while let Some((t0, k)) = started.front().filter(|(t0, _)| *t0 < ts - BATCH_SPAN_MS).cloned() {
                    started.pop_front();
                    // (A message of the same network that started later keeps its own entry.)
                    if pending.get(&k).is_some_and(|(_, t, _)| *t == t0)
                        && let Some((body, t, _)) = pending.remove(&k)
                    {
                        send(Some(&k), Some(t), &body)?;
                        out.messages += 1;
                    }
                }
                let e = pending.entry(key.clone()).or_insert_with(|| {
                    started.push_back((ts, key.clone()));
                    (Vec::new(), ts, 0)
                });
                if e.2 > 0 {
                    e.0.push(b'\n');
                }
                e.0.extend_from_slice(text.as_bytes());
                e.2 += 1;
                if e.2 >= n
                    && let Some((body, t, _)) = pending.remove(&key)
                {
                    send(Some(&key), Some(t), &body)?;
                    out.messages += 1;
                }
            }
        }
        if out.lines % 10_000 == 0 {
            progress(out.lines);
        }
    }
    let mut rest: Vec<_> = pending.into_iter().collect();
    rest.sort_by_key(|(_, (_, t, _))| *t);
    for (k, (body, t, _)) in rest {
        send(Some(&k), Some(t), &body)?;
        out.messages += 1;
    }
    producer.flush(Duration::from_secs(120)).map_err(|e| err(format!("flushing to {topic}: {e}")))?;
    let failed = producer.context().failed.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        let last = producer.context().last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        return Err(err(format!("{failed} message(s) not delivered to {topic}: {}", last.unwrap_or_default())));
    }
    progress(out.lines);
    Ok(out)
}
