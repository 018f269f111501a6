//! Prometheus metrics for the engine, the API and the decision feed: a
//! module of its own so that `live` (which counts) and `api` (which
//! serves them) do not import each other.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric gatewatch exports.
pub struct Metrics {
    registry: Registry,
    pub events_in: IntCounter,
    /// Events read again to rebuild feature state (partitions taken over).
    pub events_rebuilt: IntCounter,
    pub dead_letters: IntCounter,
    pub decisions: IntCounterVec,
    /// What shadow rules and models would have decided (never enforced).
    pub shadow_decisions: IntCounterVec,
    pub active_decisions: IntGauge,
    pub api_requests: IntCounterVec,
    pub api_latency: HistogramVec,
    pub store_errors: IntCounter,
    /// Sessions the engine has seen opened, held for the API (`crate::sessions`).
    pub opened_sessions: IntGauge,
    /// Sign-in form posts whose session id the engine never saw opened.
    pub unopened_session_posts: IntCounter,
    pub reloads: IntCounter,
    pub stream_cursor: IntGauge,
    pub stream_readers: IntGauge,
    pub model_info: prometheus::IntGaugeVec,
    /// Input the engine kept or refused other than as it came, by kind:
    /// `reordered` (applied behind the watermark), `late` (older than every
    /// window: dead letter), `future` (stamped ahead of the wall clock: applied
    /// at arrival), `clock_shifted` (stamped by a wall clock that was set
    /// back: moved forward by the step), `unknown_value`, `truncated_field`.
    pub input_anomalies: IntCounterVec,
    pub state_bytes: IntGauge,
    pub state_budget_bytes: IntGauge,
    pub entities: prometheus::IntGaugeVec,
    pub entities_evicted: IntCounter,
    /// Addresses left out of subnet decisions as bystanders (rules' `spare`).
    pub spared_addresses: IntCounter,
    /// Requests a confidential client's key authenticated from a network it
    /// is not established in: judged as anyone's (a leaked secret, or the
    /// client's first hour on a new network).
    pub confidential_away: IntCounter,
    pub api_connections: IntGauge,
    /// Connections closed on arrival, by the limit they met (`total`, `per_address`).
    pub api_connections_refused: IntCounterVec,
    /// Live sinks (`[[sinks]]`): writing now (1) or closed by a failure (0).
    pub sink_up: prometheus::IntGaugeVec,
    pub sink_errors: IntCounterVec,
    /// Records a sink did not receive (or lost) while it had failed.
    pub sink_dropped: IntCounterVec,
    /// The engine's decisions (and expiries) enforced from memory because
    /// the decision store could not be written; 0 once it is written again.
    pub store_unpersisted: IntGauge,
    /// `run --role api`: records of the decisions topic, by what they did
    /// (`stored`, `removed`, `unchanged`, `unreadable`).
    pub feed_records: IntCounterVec,
    /// Manual decisions and lifts the brokers finally refused to take onto
    /// the decisions topic (other instances never saw them).
    pub publish_failed: IntCounter,
    /// Reading Kafka: partitions this member holds, messages behind their
    /// ends, and offset commits that failed (retried).
    pub kafka_assigned: IntGauge,
    pub kafka_lag: IntGauge,
    pub kafka_commit_errors: IntCounter,
    pub kafka_revokes_held: IntCounter,
    pub kafka_revokes_released_early: IntCounter,
    pub kafka_gap_handed: IntCounter,
    pub kafka_queued: IntGauge,
    pub kafka_queued_bytes: IntGauge,
    pub kafka_stalls: IntCounter,
    /// Today's decisions by source, and the scores models decided on (the
    /// console's "rules and models"; Prometheus counters have no day).
    pub fired: std::sync::Arc<crate::fired::Fired>,
}

/// Labels of `gatewatch_api_connections_refused_total`: the limit a refused
/// connection met.
pub const REFUSED_TOTAL: &str = "total";
pub const REFUSED_PER_ADDRESS: &str = "per_address";

/// Kinds of `gatewatch_decision_feed_records_total`.
/// `learned` and `not_learned` are an engine's: decisions read from the topic
/// (other instances' and its own) taken into its decision memory, or dropped
/// because it was too far behind. `opened_sessions`: records of the digests
/// of sessions an engine saw opened ([`crate::sessions`]).
pub const FEED_KINDS: [&str; 7] =
    ["stored", "removed", "unchanged", "unreadable", "learned", "not_learned", "opened_sessions"];

/// Kinds of `gatewatch_input_anomalies_total`.
pub const ANOMALY_KINDS: [&str; 6] =
    ["reordered", "late", "future", "clock_shifted", "unknown_value", "truncated_field"];

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let events_in = IntCounter::new("gatewatch_events_total", "Access-log events parsed")?;
        let events_rebuilt = IntCounter::new(
            "gatewatch_events_rebuilt_total",
            "Events read again from before a taken-over partition's committed offset, to rebuild feature state",
        )?;
        let dead_letters = IntCounter::new("gatewatch_dead_letters_total", "Lines that did not parse")?;
        let decisions = IntCounterVec::new(
            Opts::new("gatewatch_decisions_total", "Decisions made, by source (rule:NAME, manual) and action"),
            &["source", "action"],
        )?;
        let shadow_decisions = IntCounterVec::new(
            Opts::new(
                "gatewatch_shadow_decisions_total",
                "Decisions shadow rules and models would have made (recorded, never enforced), by source and action",
            ),
            &["source", "action"],
        )?;
        registry.register(Box::new(shadow_decisions.clone()))?;
        let active_decisions = IntGauge::new("gatewatch_active_decisions", "Decisions in force")?;
        let api_requests = IntCounterVec::new(
            Opts::new("gatewatch_api_requests_total", "API requests by route and status"),
            &["route", "status"],
        )?;
        let api_latency = HistogramVec::new(
            HistogramOpts::new("gatewatch_api_request_duration_seconds", "API request latency by route")
                .buckets(vec![0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0]),
            &["route"],
        )?;
        let store_errors = IntCounter::new("gatewatch_store_errors_total", "Decisions that could not be persisted")?;
        let reloads = IntCounter::new("gatewatch_reloads_total", "Pipeline reloads applied")?;
        let stream_cursor =
            IntGauge::new("gatewatch_decision_stream_cursor", "Sequence number of the newest decision change")?;
        let stream_readers =
            IntGauge::new("gatewatch_stream_readers", "Long polls and event streams open on the decision stream")?;
        registry.register(Box::new(stream_readers.clone()))?;
        let model_info = prometheus::IntGaugeVec::new(
            Opts::new("gatewatch_model_info", "Models in force (1), by model NAME@VERSION, entity type and kind"),
            &["model", "entity", "kind"],
        )?;
        registry.register(Box::new(model_info.clone()))?;
        let input_anomalies = IntCounterVec::new(
            Opts::new(
                "gatewatch_input_anomalies_total",
                "Events kept or refused other than as they came: reordered (applied behind the watermark), late \
                 (older than every window: dead letter), future (ahead of the wall clock: applied at arrival), \
                 clock_shifted (stamped by a wall clock that was set back: moved forward by the step), \
                 unknown_value, truncated_field",
            ),
            &["kind"],
        )?;
        for k in ANOMALY_KINDS {
            input_anomalies.with_label_values(&[k]);
        }
        registry.register(Box::new(input_anomalies.clone()))?;
        let state_bytes = IntGauge::new("gatewatch_state_bytes", "Bytes held by per-entity feature state")?;
        let state_budget_bytes =
            IntGauge::new("gatewatch_state_budget_bytes", "features.state_budget: evictions keep state below it")?;
        let entities = prometheus::IntGaugeVec::new(
            Opts::new("gatewatch_entities", "Entities held in feature state, by type"),
            &["type"],
        )?;
        let entities_evicted = IntCounter::new(
            "gatewatch_entities_evicted_total",
            "Least recently seen entities evicted to stay within the state budget",
        )?;
        let spared_addresses = IntCounter::new(
            "gatewatch_spared_addresses_total",
            "Addresses left out of the subnet decisions made, as bystanders (a cidr rule's spare; each decision counts its own)",
        )?;
        let confidential_away = IntCounter::new(
            "gatewatch_confidential_away_total",
            "Requests a confidential client's key authenticated from a network it is not established in",
        )?;
        let api_connections = IntGauge::new("gatewatch_api_connections", "Connections open to the API")?;
        let api_connections_refused = IntCounterVec::new(
            Opts::new(
                "gatewatch_api_connections_refused_total",
                "Connections closed on arrival: api.max_connections (total) or api.max_connections_per_ip \
                 (per_address) reached",
            ),
            &["limit"],
        )?;
        for l in [REFUSED_TOTAL, REFUSED_PER_ADDRESS] {
            api_connections_refused.with_label_values(&[l]);
        }
        let sink_up = prometheus::IntGaugeVec::new(
            Opts::new("gatewatch_sink_up", "Each output of the pipeline: writing (1) or closed by a failure (0)"),
            &["sink"],
        )?;
        let sink_errors = IntCounterVec::new(
            Opts::new("gatewatch_sink_errors_total", "Failures of each output (a full disk, a removed directory)"),
            &["sink"],
        )?;
        let sink_dropped = IntCounterVec::new(
            Opts::new(
                "gatewatch_sink_dropped_total",
                "Records (event rows, feature rows, decisions, dead letters) an output did not receive, or lost, \
                 while it had failed",
            ),
            &["sink"],
        )?;
        let store_unpersisted = IntGauge::new(
            "gatewatch_store_unpersisted_decisions",
            "Engine decisions and expiries enforced from memory because the decision store cannot be written",
        )?;
        let feed_records = IntCounterVec::new(
            Opts::new(
                "gatewatch_decision_feed_records_total",
                "Records read from the decisions topic, by what they did to the decisions served (role api) or to an engine's decision memory",
            ),
            &["kind"],
        )?;
        for k in FEED_KINDS {
            feed_records.with_label_values(&[k]);
        }
        let publish_failed = IntCounter::new(
            "gatewatch_decisions_publish_failed_total",
            "Manual decisions and lifts the brokers refused to take onto the decisions topic",
        )?;
        let kafka_assigned =
            IntGauge::new("gatewatch_kafka_assigned_partitions", "Partitions of the input topics this member reads")?;
        let kafka_lag = IntGauge::new(
            "gatewatch_kafka_consumer_lag",
            "Messages of the assigned partitions not read yet (librdkafka's statistics, every 5 s; -1: not known yet, \
             or not reading Kafka)",
        )?;
        kafka_lag.set(-1);
        let kafka_commit_errors = IntCounter::new(
            "gatewatch_kafka_commit_errors_total",
            "Offset commits that failed (retried at the next commit; what they covered may be read again)",
        )?;
        registry.register(Box::new(kafka_assigned.clone()))?;
        registry.register(Box::new(kafka_lag.clone()))?;
        let kafka_revokes_held = IntCounter::new(
            "gatewatch_kafka_revokes_held_total",
            "Rebalances that took partitions away while a round of them was being checkpointed, or while messages of \
             theirs were held back behind newer offsets already handed out, answered once the round was acknowledged \
             and those messages were handed out (so the offsets committed cover exactly what was counted)",
        )?;
        let kafka_revokes_released_early = IntCounter::new(
            "gatewatch_kafka_revokes_released_unacknowledged_total",
            "Of those, answered before that was done because it outlasted the hold (10 s, or a third of \
             max.poll.interval.ms): \
             the partitions' next owner reads what was not acknowledged again",
        )?;
        let kafka_gap_handed = IntCounter::new(
            "gatewatch_kafka_held_back_messages_handed_out_total",
            "Messages of a repartition topic held back behind newer offsets already handed out (a slower writer's, \
             merged by time) that were handed out out of time order because their partition was being given up or \
             the run was ending",
        )?;
        registry.register(Box::new(kafka_gap_handed.clone()))?;
        let kafka_queued = IntGauge::new(
            "gatewatch_kafka_queued_messages",
            "Messages read from the brokers and not yet handed to the engine (merged by time across partitions; with \
             the consumer lag, where the lines not yet counted are)",
        )?;
        let kafka_queued_bytes = IntGauge::new(
            "gatewatch_kafka_queued_bytes",
            "Payload bytes of the messages queued, which input.kafka.buffer bounds (a partition holding its share is \
             paused until half of it is handed out)",
        )?;
        let kafka_stalls = IntCounter::new(
            "gatewatch_kafka_stalls_total",
            "Times a minute passed with nothing handed to the engine while messages sat queued or a partition had \
             more to read, longer than any hold should last (each logged with every partition's state)",
        )?;
        registry.register(Box::new(kafka_queued.clone()))?;
        registry.register(Box::new(kafka_queued_bytes.clone()))?;
        registry.register(Box::new(kafka_stalls.clone()))?;
        registry.register(Box::new(kafka_commit_errors.clone()))?;
        registry.register(Box::new(kafka_revokes_held.clone()))?;
        registry.register(Box::new(kafka_revokes_released_early.clone()))?;
        registry.register(Box::new(feed_records.clone()))?;
        registry.register(Box::new(publish_failed.clone()))?;
        registry.register(Box::new(sink_up.clone()))?;
        registry.register(Box::new(sink_errors.clone()))?;
        registry.register(Box::new(sink_dropped.clone()))?;
        registry.register(Box::new(store_unpersisted.clone()))?;
        registry.register(Box::new(api_connections.clone()))?;
        registry.register(Box::new(api_connections_refused.clone()))?;
        registry.register(Box::new(state_bytes.clone()))?;
        registry.register(Box::new(state_budget_bytes.clone()))?;
        registry.register(Box::new(entities.clone()))?;
        registry.register(Box::new(entities_evicted.clone()))?;
        registry.register(Box::new(spared_addresses.clone()))?;
        registry.register(Box::new(confidential_away.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(stream_cursor.clone()))?;
        registry.register(Box::new(events_in.clone()))?;
        registry.register(Box::new(events_rebuilt.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(active_decisions.clone()))?;
        registry.register(Box::new(api_requests.clone()))?;
        registry.register(Box::new(api_latency.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        let opened_sessions = IntGauge::new(
            "gatewatch_opened_sessions",
            "Sessions the engine has seen opened (a request with the session that was not a bare failed sign-in), \
             held so that a session id counts for request classes only when it stands for one ([classes] \
             sessions_held bounds them)",
        )?;
        registry.register(Box::new(opened_sessions.clone()))?;
        let unopened_session_posts = IntCounter::new(
            "gatewatch_unopened_session_posts_total",
            "Forward-auth and verdict lookups of a sign-in form post carrying a session id the engine never saw \
             opened (a made-up id, or a page that had not reached the engine yet): such a post is in the class \
             bare-login",
        )?;
        registry.register(Box::new(unopened_session_posts.clone()))?;
        Ok(Metrics {
            fired: Default::default(),
            registry,
            events_in,
            events_rebuilt,
            dead_letters,
            decisions,
            shadow_decisions,
            active_decisions,
            api_requests,
            api_latency,
            store_errors,
            opened_sessions,
            unopened_session_posts,
            reloads,
            stream_cursor,
            stream_readers,
            model_info,
            input_anomalies,
            state_bytes,
            state_budget_bytes,
            entities,
            entities_evicted,
            spared_addresses,
            confidential_away,
            api_connections,
            api_connections_refused,
            sink_up,
            sink_errors,
            sink_dropped,
            store_unpersisted,
            feed_records,
            publish_failed,
            kafka_assigned,
            kafka_lag,
            kafka_commit_errors,
            kafka_revokes_held,
            kafka_revokes_released_early,
            kafka_gap_handed,
            kafka_queued,
            kafka_queued_bytes,
            kafka_stalls,
        })
    }

    /// Brings the Kafka source's gauges and counters up to what it reports.
    pub fn observe_kafka(&self, k: &crate::source::KafkaStats) {
        self.kafka_assigned.set(k.assigned() as i64);
        if let Some(lag) = k.lag() {
            self.kafka_lag.set(lag);
        }
        let errors = k.commit_errors();
        self.kafka_commit_errors.inc_by(errors.saturating_sub(self.kafka_commit_errors.get()));
        let (held, early) = k.revokes_held();
        self.kafka_revokes_held.inc_by(held.saturating_sub(self.kafka_revokes_held.get()));
        self.kafka_revokes_released_early.inc_by(early.saturating_sub(self.kafka_revokes_released_early.get()));
        self.kafka_gap_handed.inc_by(k.gap_handed().saturating_sub(self.kafka_gap_handed.get()));
        self.kafka_queued.set(k.queued() as i64);
        self.kafka_queued_bytes.set(k.queued_bytes() as i64);
        self.kafka_stalls.inc_by(k.stalls().saturating_sub(self.kafka_stalls.get()));
    }

    /// Brings the engine's gauges and counters up to its running summary.
    /// `seen` holds what was already counted (counters only go up).
    pub fn observe_summary(&self, s: &crate::engine::Summary, seen: &mut crate::engine::Summary) {
        let add = |c: &IntCounter, now: u64, before: &mut u64| {
            c.inc_by(now.saturating_sub(*before));
            *before = now;
        };
        add(&self.events_in, s.events, &mut seen.events);
        add(&self.events_rebuilt, s.rebuilt_events, &mut seen.rebuilt_events);
        add(&self.dead_letters, s.dead_letters, &mut seen.dead_letters);
        add(&self.entities_evicted, s.evicted_entities, &mut seen.evicted_entities);
        add(&self.spared_addresses, s.spared_addresses, &mut seen.spared_addresses);
        add(&self.confidential_away, s.confidential_away_events, &mut seen.confidential_away_events);
        let kinds = [
            (s.reordered_events, &mut seen.reordered_events),
            (s.late_events, &mut seen.late_events),
            (s.future_events, &mut seen.future_events),
            (s.clock_shifted_events, &mut seen.clock_shifted_events),
            (s.unknown_values, &mut seen.unknown_values),
            (s.truncated_fields, &mut seen.truncated_fields),
        ];
        for (kind, (now, before)) in ANOMALY_KINDS.iter().zip(kinds) {
            add(&self.input_anomalies.with_label_values(&[*kind]), now, before);
        }
        self.state_bytes.set(s.state_bytes as i64);
        self.state_budget_bytes.set(s.state_budget_bytes as i64);
        for (t, n) in &s.active_entities {
            self.entities.with_label_values(&[t.as_str()]).set(*n as i64);
        }
        for (name, h) in &s.sinks {
            let before = seen.sinks.entry(name.clone()).or_default();
            self.sink_up.with_label_values(&[name.as_str()]).set(i64::from(h.up));
            add(&self.sink_errors.with_label_values(&[name.as_str()]), h.errors, &mut before.errors);
            add(&self.sink_dropped.with_label_values(&[name.as_str()]), h.dropped, &mut before.dropped);
        }
    }

    /// Shows exactly these models as in force.
    pub fn set_models(&self, models: &[crate::config::ModelSpec]) {
        self.model_info.reset();
        for m in models {
            self.model_info
                .with_label_values(&[m.model.id().as_str(), m.entity.as_str(), m.model.file.kind.as_str()])
                .set(1);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
