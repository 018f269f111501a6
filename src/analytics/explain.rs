//! `gatewatch explain`: the story of one entity, told from the tables.
//!
//! An analyst asking "why was this key blocked, and what else did that
//! address do?" wants, in one place: each decision with its rule or model,
//! the feature values it was made on and its reason; the entity's traffic
//! before and after it was first decided on; and the entities it shares
//! traffic with (the users of an address, the addresses of a user, the other
//! addresses of its subnet) with the decisions on them. Every value is bound
//! as a parameter, never spliced into the SQL.

use std::fmt::Write as _;
use std::path::Path;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use serde::Serialize;

use super::{QueryError, session};
use crate::event::time::format_rfc3339;
use crate::features::{EntityType, FEATURES};

/// Paths, related entities and neighbours listed per section.
const TOP: usize = 5;

/// Requests of the entity over a span of time.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Traffic {
    pub requests: u64,
    pub first: Option<String>,
    pub last: Option<String>,
    /// Responses by class: 2xx, 3xx, 4xx, 5xx, other.
    pub status: StatusMix,
    pub distinct_paths: u64,
    /// The most requested paths, most first.
    pub top_paths: Vec<Count>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StatusMix {
    pub s2xx: u64,
    pub s3xx: u64,
    pub s4xx: u64,
    pub s5xx: u64,
    pub other: u64,
}

/// A value and how many requests carried it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Count {
    pub value: String,
    pub requests: u64,
}

/// One decision on the entity and what it was made on.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionStory {
    pub ts: String,
    pub action: String,
    pub ttl_s: u64,
    pub expires_at: String,
    /// `rule:NAME` or `model:ID@VERSION`.
    pub source: String,
    pub score: f64,
    pub offense: u32,
    pub reason: String,
    /// When the feature values below were taken: the decision's own time
    /// when its row was written, else the nearest snapshot before it.
    pub features_ts: Option<String>,
    /// Every feature with a value at that time, in catalogue order.
    pub features: Vec<(String, f64)>,
}

/// Entities of one type that share requests with the one explained.
#[derive(Debug, Clone, Serialize)]
pub struct Related {
    pub entity_type: String,
    pub distinct: u64,
    /// The ones with the most shared requests, most first.
    pub top: Vec<Count>,
}

/// A decision on a related entity.
#[derive(Debug, Clone, Serialize)]
pub struct RelatedDecision {
    pub ts: String,
    pub entity_type: String,
    pub entity: String,
    pub action: String,
    pub source: String,
}

/// Everything `explain` tells about one entity.
#[derive(Debug, Clone, Serialize)]
pub struct Story {
    pub entity_type: String,
    pub entity: String,
    pub traffic: Traffic,
    /// Before the first decision, and from it on (absent without decisions).
    pub before_first_decision: Option<Traffic>,
    pub since_first_decision: Option<Traffic>,
    pub decisions: Vec<DecisionStory>,
    pub related: Vec<Related>,
    /// An address's subnet and the subnet's other addresses (`ip` and `cidr` only).
    pub neighbours: Option<Related>,
    /// Decisions on the related entities and neighbours listed above.
    pub related_decisions: Vec<RelatedDecision>,
}

/// SQL expression naming each event's entity of type `t` (as the
/// `event_entities` view names it).
fn entity_expr(t: EntityType) -> &'static str {
    match t {
        EntityType::Ip => "client_ip",
        EntityType::Cidr => "subnet(client_ip)",
        EntityType::Network => "network(client_ip)",
        EntityType::User => "user_id",
        EntityType::ApiKey => "api_key_id",
        EntityType::Device => "device_id",
        EntityType::Session => "session_id",
        // A request class is judged on service-wide columns; no event names it.
        EntityType::Class => "CAST(NULL AS VARCHAR)",
    }
}

/// Tells the story of `entity` of type `entity_type` from the tables under `data_dir`.
pub async fn explain(data_dir: &Path, entity_type: EntityType, entity: &str) -> Result<Story, QueryError> {
    let ctx = session(data_dir).await?;
    let has = |t: &str| ctx.table_exist(t).unwrap_or(false);
    let me = Me { t: entity_type.as_str().to_string(), e: entity.to_string() };

    let decisions = if has("decisions") { decisions(&ctx, &me, has("features")).await? } else { Vec::new() };
    let (mut traffic, mut before, mut since) = (Traffic::default(), None, None);
    let (mut related, mut neighbours) = (Vec::new(), None);
    if has("events") {
        traffic = self::traffic(&ctx, &me, None).await?;
        if let Some(first) = decisions.first() {
            let at = crate::event::time::parse_rfc3339(&first.ts).map_err(|e| QueryError::Output(e.to_string()))?;
            before = Some(self::traffic(&ctx, &me, Some((false, at))).await?);
            since = Some(self::traffic(&ctx, &me, Some((true, at))).await?);
        }
        for other in EntityType::ALL.into_iter().filter(|&o| o != entity_type) {
            let r = shared_with(&ctx, &me, other).await?;
            if r.distinct > 0 {
                related.push(r);
            }
        }
        neighbours = match entity_type {
            EntityType::Ip => subnet_neighbours(&ctx, entity).await?,
            _ => None,
        };
    }
    let related_decisions = if has("decisions") {
        let mut names: Vec<(String, String)> = Vec::new();
        for r in related.iter().chain(neighbours.iter()) {
            names.extend(r.top.iter().map(|c| (r.entity_type.clone(), c.value.clone())));
        }
        decisions_on(&ctx, &names).await?
    } else {
        Vec::new()
    };
    Ok(Story {
        entity_type: me.t,
        entity: me.e,
        traffic,
        before_first_decision: before,
        since_first_decision: since,
        decisions,
        related,
        neighbours,
        related_decisions,
    })
}

/// The entity explained, as bound parameters.
struct Me {
    t: String,
    e: String,
}

impl Me {
    fn params(&self) -> Vec<(String, ScalarValue)> {
        vec![
            ("t".into(), ScalarValue::Utf8(Some(self.t.clone()))),
            ("e".into(), ScalarValue::Utf8(Some(self.e.clone()))),
        ]
    }
}

async fn run(
    ctx: &SessionContext,
    sql: &str,
    params: Vec<(String, ScalarValue)>,
) -> Result<Vec<RecordBatch>, QueryError> {
    let mut df = ctx.sql(sql).await?;
    if !params.is_empty() {
        df = df.with_param_values(params)?;
    }
    Ok(df.collect().await?)
}

/// A column of every batch, cast to `to` (so the readers below need one type each).
fn column(batches: &[RecordBatch], i: usize, to: &DataType) -> Result<Vec<ArrayRef>, QueryError> {
    batches.iter().map(|b| cast(b.column(i), to).map_err(|e| QueryError::Output(e.to_string()))).collect()
}

fn strings(batches: &[RecordBatch], i: usize) -> Result<Vec<Option<String>>, QueryError> {
    let mut out = Vec::new();
    for a in column(batches, i, &DataType::Utf8)? {
        if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
            out.extend(s.iter().map(|v| v.map(str::to_string)));
        }
    }
    Ok(out)
}

fn ints(batches: &[RecordBatch], i: usize) -> Result<Vec<i64>, QueryError> {
    let mut out = Vec::new();
    for a in column(batches, i, &DataType::Int64)? {
        if let Some(s) = a.as_any().downcast_ref::<Int64Array>() {
            out.extend(s.iter().map(|v| v.unwrap_or(0)));
        }
    }
    Ok(out)
}

fn floats(batches: &[RecordBatch], i: usize) -> Result<Vec<Option<f64>>, QueryError> {
    let mut out = Vec::new();
    for a in column(batches, i, &DataType::Float64)? {
        if let Some(s) = a.as_any().downcast_ref::<Float64Array>() {
            out.extend(s.iter());
        }
    }
    Ok(out)
}

/// Timestamps as epoch milliseconds rendered in RFC 3339.
fn times(batches: &[RecordBatch], i: usize) -> Result<Vec<Option<String>>, QueryError> {
    let mut out = Vec::new();
    for b in batches {
        let a = cast(b.column(i), &DataType::Int64).map_err(|e| QueryError::Output(e.to_string()))?;
        if let Some(s) = a.as_any().downcast_ref::<Int64Array>() {
            out.extend(s.iter().map(|v| v.map(format_rfc3339)));
        }
    }
    Ok(out)
}

/// The entity's requests, all of them or on one side of `at` (ms):
/// `(true, at)` from `at` on, `(false, at)` before it.
async fn traffic(ctx: &SessionContext, me: &Me, split: Option<(bool, i64)>) -> Result<Traffic, QueryError> {
    let mut params = me.params();
    let when = match split {
        None => "",
        Some((since, at)) => {
            params.push(("at".into(), ScalarValue::Int64(Some(at))));
            if since { " AND ts >= to_timestamp_millis($at)" } else { " AND ts < to_timestamp_millis($at)" }
        }
    };
    let mine = format!("SELECT * FROM event_entities WHERE entity_type = $t AND entity = $e{when}");
    let b = run(
        ctx,
        &format!(
            "SELECT count(*), CAST(min(ts) AS BIGINT), CAST(max(ts) AS BIGINT),
                sum(CASE WHEN status BETWEEN 200 AND 299 THEN 1 ELSE 0 END),
                sum(CASE WHEN status BETWEEN 300 AND 399 THEN 1 ELSE 0 END),
                sum(CASE WHEN status BETWEEN 400 AND 499 THEN 1 ELSE 0 END),
                sum(CASE WHEN status BETWEEN 500 AND 599 THEN 1 ELSE 0 END),
                count(DISTINCT path)
             FROM ({mine})"
        ),
        params.clone(),
    )
    .await?;
    let col = |i| ints(&b, i).map(|v| v.first().copied().unwrap_or(0));
    let requests = col(0)? as u64;
    if requests == 0 {
        return Ok(Traffic::default());
    }
    let (first, last) = (col(1)?, col(2)?);
    let status =
        StatusMix { s2xx: col(3)? as u64, s3xx: col(4)? as u64, s4xx: col(5)? as u64, s5xx: col(6)? as u64, other: 0 };
    let other = requests.saturating_sub(status.s2xx + status.s3xx + status.s4xx + status.s5xx);
    let paths = run(
        ctx,
        &format!("SELECT path, count(*) AS n FROM ({mine}) GROUP BY path ORDER BY n DESC, path LIMIT {TOP}"),
        params,
    )
    .await?;
    Ok(Traffic {
        requests,
        first: Some(format_rfc3339(first)),
        last: Some(format_rfc3339(last)),
        status: StatusMix { other, ..status },
        distinct_paths: col(7)? as u64,
        top_paths: counts(&paths)?,
    })
}

/// `(value, n)` rows as counts.
fn counts(b: &[RecordBatch]) -> Result<Vec<Count>, QueryError> {
    Ok(strings(b, 0)?
        .into_iter()
        .zip(ints(b, 1)?)
        .map(|(v, n)| Count { value: v.unwrap_or_default(), requests: n as u64 })
        .collect())
}

/// Entities of type `other` seen in the entity's requests.
async fn shared_with(ctx: &SessionContext, me: &Me, other: EntityType) -> Result<Related, QueryError> {
    let expr = entity_expr(other);
    let mine = format!(
        "SELECT {expr} AS other FROM event_entities WHERE entity_type = $t AND entity = $e AND {expr} IS NOT NULL"
    );
    let n = run(ctx, &format!("SELECT count(DISTINCT other) FROM ({mine})"), me.params()).await?;
    let top = run(
        ctx,
        &format!("SELECT other, count(*) AS n FROM ({mine}) GROUP BY other ORDER BY n DESC, other LIMIT {TOP}"),
        me.params(),
    )
    .await?;
    Ok(Related {
        entity_type: other.as_str().to_string(),
        distinct: ints(&n, 0)?.first().copied().unwrap_or(0) as u64,
        top: counts(&top)?,
    })
}

/// The other addresses of an address's subnet (IPv4 /24, IPv6 /64).
async fn subnet_neighbours(ctx: &SessionContext, ip: &str) -> Result<Option<Related>, QueryError> {
    let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
        return Ok(None);
    };
    let cidr = crate::features::entity::subnet_of(addr);
    let params =
        vec![("c".into(), ScalarValue::Utf8(Some(cidr))), ("e".into(), ScalarValue::Utf8(Some(ip.to_string())))];
    let mine = "SELECT client_ip FROM event_entities WHERE entity_type = 'cidr' AND entity = $c AND client_ip <> $e";
    let n = run(ctx, &format!("SELECT count(DISTINCT client_ip) FROM ({mine})"), params.clone()).await?;
    let top = run(
        ctx,
        &format!(
            "SELECT client_ip, count(*) AS n FROM ({mine}) GROUP BY client_ip ORDER BY n DESC, client_ip LIMIT {TOP}"
        ),
        params,
    )
    .await?;
    Ok(Some(Related {
        entity_type: "ip".into(),
        distinct: ints(&n, 0)?.first().copied().unwrap_or(0) as u64,
        top: counts(&top)?,
    }))
}

/// The entity's decisions, oldest first, each with the features it was made on.
async fn decisions(ctx: &SessionContext, me: &Me, with_features: bool) -> Result<Vec<DecisionStory>, QueryError> {
    let b = run(
        ctx,
        "SELECT ts, action, ttl_s, expires_at, source, score, offense, reason, CAST(ts AS BIGINT) AS ms
         FROM decisions WHERE entity_type = $t AND entity = $e ORDER BY ts, id",
        me.params(),
    )
    .await?;
    let (ts, action, ttl, expires, source) =
        (times(&b, 0)?, strings(&b, 1)?, ints(&b, 2)?, times(&b, 3)?, strings(&b, 4)?);
    let (score, offense, reason, ms) = (floats(&b, 5)?, ints(&b, 6)?, strings(&b, 7)?, ints(&b, 8)?);
    let mut out = Vec::with_capacity(ts.len());
    for i in 0..ts.len() {
        let (features_ts, features) =
            if with_features { features_at(ctx, me, ms[i]).await? } else { (None, Vec::new()) };
        out.push(DecisionStory {
            ts: ts[i].clone().unwrap_or_default(),
            action: action[i].clone().unwrap_or_default(),
            ttl_s: ttl[i] as u64,
            expires_at: expires[i].clone().unwrap_or_default(),
            source: source[i].clone().unwrap_or_default(),
            score: score[i].unwrap_or(0.0),
            offense: offense[i] as u32,
            reason: reason[i].clone().unwrap_or_default(),
            features_ts,
            features,
        });
    }
    Ok(out)
}

/// The entity's feature row at `at` (ms), or the nearest one before it.
async fn features_at(
    ctx: &SessionContext,
    me: &Me,
    at: i64,
) -> Result<(Option<String>, Vec<(String, f64)>), QueryError> {
    let mut params = me.params();
    params.push(("at".into(), ScalarValue::Int64(Some(at))));
    let b = run(
        ctx,
        "SELECT * FROM features WHERE entity_type = $t AND entity = $e AND ts <= to_timestamp_millis($at)
         ORDER BY ts DESC LIMIT 1",
        params,
    )
    .await?;
    let Some(batch) = b.iter().find(|b| b.num_rows() > 0) else {
        return Ok((None, Vec::new()));
    };
    let when = times(std::slice::from_ref(batch), 0)?.into_iter().next().flatten();
    let mut values = Vec::new();
    for (name, _) in FEATURES {
        let Ok(i) = batch.schema().index_of(name) else { continue };
        if let Some(Some(v)) = floats(std::slice::from_ref(batch), i)?.first() {
            values.push((name.to_string(), *v));
        }
    }
    Ok((when, values))
}

/// Decisions on any of `names` (`(entity_type, entity)`), oldest first.
async fn decisions_on(ctx: &SessionContext, names: &[(String, String)]) -> Result<Vec<RelatedDecision>, QueryError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut params = Vec::new();
    let mut alts = Vec::new();
    for (i, (t, e)) in names.iter().enumerate() {
        alts.push(format!("(entity_type = $t{i} AND entity = $e{i})"));
        params.push((format!("t{i}"), ScalarValue::Utf8(Some(t.clone()))));
        params.push((format!("e{i}"), ScalarValue::Utf8(Some(e.clone()))));
    }
    let b = run(
        ctx,
        &format!(
            "SELECT ts, entity_type, entity, action, source FROM decisions WHERE {} ORDER BY ts, id LIMIT 50",
            alts.join(" OR ")
        ),
        params,
    )
    .await?;
    let (ts, t, e, a, s) = (times(&b, 0)?, strings(&b, 1)?, strings(&b, 2)?, strings(&b, 3)?, strings(&b, 4)?);
    Ok((0..ts.len())
        .map(|i| RelatedDecision {
            ts: ts[i].clone().unwrap_or_default(),
            entity_type: t[i].clone().unwrap_or_default(),
            entity: e[i].clone().unwrap_or_default(),
            action: a[i].clone().unwrap_or_default(),
            source: s[i].clone().unwrap_or_default(),
        })
        .collect())
}

impl Story {
    /// The story as text for a person.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{} {}", self.entity_type, self.entity);
        if self.traffic.requests == 0 {
            let _ = writeln!(o, "  no requests in the events table");
        } else {
            let _ = writeln!(o, "  traffic: {}", traffic_line(&self.traffic));
        }
        if self.decisions.is_empty() {
            let _ = writeln!(o, "\ndecisions: none");
        } else {
            let _ = writeln!(o, "\ndecisions ({}):", self.decisions.len());
            for d in &self.decisions {
                let _ = writeln!(
                    o,
                    "  {}  {} for {}s (until {}), offence {}, by {} (score {:.3})",
                    d.ts, d.action, d.ttl_s, d.expires_at, d.offense, d.source, d.score
                );
                let _ = writeln!(o, "    reason: {}", d.reason);
                if let Some(at) = &d.features_ts {
                    let same = at == &d.ts;
                    let shown: Vec<String> = d
                        .features
                        .iter()
                        .filter(|(_, v)| *v != 0.0)
                        .map(|(n, v)| format!("{n}={}", crate::features::fmt_value(*v)))
                        .collect();
                    let _ = writeln!(
                        o,
                        "    features {} (non-zero): {}",
                        if same { "at the decision".to_string() } else { format!("as of {at}") },
                        if shown.is_empty() { "none".into() } else { shown.join(", ") }
                    );
                }
            }
        }
        if let (Some(b), Some(s)) = (&self.before_first_decision, &self.since_first_decision) {
            let _ = writeln!(o, "\nbefore the first decision: {}", traffic_line(b));
            let _ = writeln!(o, "since the first decision:  {}", traffic_line(s));
        }
        if !self.traffic.top_paths.is_empty() {
            let _ = writeln!(o, "\ntop paths: {}", count_list(&self.traffic.top_paths));
        }
        if !self.related.is_empty() {
            let _ = writeln!(o, "\nshares traffic with:");
            for r in &self.related {
                let _ = writeln!(o, "  {} {}: {}", r.distinct, plural(&r.entity_type, r.distinct), count_list(&r.top));
            }
        }
        if let Some(n) = &self.neighbours {
            let _ = writeln!(
                o,
                "\nother addresses of its /{}: {}{}",
                if self.entity.contains(':') { 64 } else { 24 },
                n.distinct,
                if n.top.is_empty() { String::new() } else { format!(": {}", count_list(&n.top)) }
            );
        }
        if !self.related_decisions.is_empty() {
            let _ = writeln!(o, "\ndecisions on those:");
            for d in &self.related_decisions {
                let _ = writeln!(o, "  {}  {} {}  {} by {}", d.ts, d.entity_type, d.entity, d.action, d.source);
            }
        }
        o
    }
}

fn traffic_line(t: &Traffic) -> String {
    if t.requests == 0 {
        return "no requests".into();
    }
    let s = &t.status;
    format!(
        "{} requests from {} to {}; status 2xx {}, 3xx {}, 4xx {}, 5xx {}{}; {} distinct paths",
        t.requests,
        t.first.as_deref().unwrap_or("?"),
        t.last.as_deref().unwrap_or("?"),
        s.s2xx,
        s.s3xx,
        s.s4xx,
        s.s5xx,
        if s.other > 0 { format!(", other {}", s.other) } else { String::new() },
        t.distinct_paths
    )
}

fn count_list(c: &[Count]) -> String {
    c.iter().map(|c| format!("{} ({})", c.value, c.requests)).collect::<Vec<_>>().join(", ")
}

fn plural(entity_type: &str, n: u64) -> String {
    let name = match entity_type {
        "ip" => "address",
        "cidr" => "subnet",
        "network" => "network",
        "api_key" => "API key",
        other => other,
    };
    match (n, name) {
        (1, _) => name.to_string(),
        (_, "address") => "addresses".into(),
        _ => format!("{name}s"),
    }
}
