//! Per-entity behaviour features over sliding event-time windows.
//!
//! Reads event batches, updates the state of every entity each request names
//! (ip, cidr, user, api_key, device, session), and at each event-time tick emits
//! one Arrow batch per entity type with a row for every entity touched since
//! the previous tick. Rules, models, sinks and analysts all read those batches.
//!
//! Time is the events' own: a tick fires when the watermark (largest event time
//! seen minus the allowed lateness) passes it, so replaying a file and following
//! a live stream produce the same features.

pub mod budget;
pub mod catalog;
pub mod distinct;
pub mod entity;
pub mod homes;
pub mod key;
pub mod state;
pub mod window;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, StringArray, StringBuilder, TimestampMillisecondArray, UInt16Array, UInt32Array, UInt64Array,
    new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use std::fmt::Write as _;

pub use entity::{EntityType, network_of, network56_of, networks_of, partition_key_of, subnet_of};

/// A feature value as a reason or a story shows it: integers without decimals.
pub fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v:.3}") }
}
use key::Key;
use state::{Contribution, EntityState, c, d};

use crate::event::col;

/// Feature columns, in order, with what each means. `docs/FEATURES.md` is written from this.
pub const FEATURES: [(&str, &str); NF] = [
    ("requests_1m", "requests in the last minute"),
    ("requests_10m", "requests in the last 10 minutes"),
    ("requests_1h", "requests in the last hour"),
    ("login_attempts_10m", "credential checks: password grants and requests answered invalid_credentials"),
    ("login_failures_10m", "requests answered auth_result=invalid_credentials"),
    ("login_failures_1h", "as above, last hour"),
    ("login_failure_ratio_10m", "login_failures_10m / login_attempts_10m (null without attempts)"),
    ("auth_ok_10m", "requests that authenticated (auth_result=ok)"),
    ("token_failures_10m", "requests answered invalid_token or invalid_client"),
    ("token_failures_1h", "as above, last hour"),
    ("token_grant_attempts_10m", "token requests with a refresh_token, authorization_code or client_credentials grant"),
    ("token_grant_failures_10m", "such token requests that did not authenticate (auth_result other than ok)"),
    ("token_grant_failure_ratio_10m", "token_grant_failures_10m / token_grant_attempts_10m (null without attempts)"),
    ("attestation_checked_10m", "requests whose app attestation was checked (valid, invalid or missing)"),
    ("attestation_bad_10m", "requests with attestation invalid or missing"),
    ("attestation_bad_ratio_10m", "attestation_bad_10m / attestation_checked_10m (null when none checked)"),
    ("signature_checked_10m", "requests whose HMAC signature was checked"),
    ("signature_invalid_10m", "signature=invalid"),
    ("signature_stale_10m", "signature=stale (timestamp outside the allowed skew)"),
    ("signature_replayed_10m", "signature=replayed (nonce seen before)"),
    ("signature_bad_ratio_10m", "invalid+stale+replayed+missing over checked (null when none checked)"),
    ("status_4xx_10m", "responses 400-499"),
    ("not_found_10m", "responses 404/410"),
    ("unknown_path_404_10m", "404/410 on path templates never seen to exist (probing)"),
    ("unknown_path_404_1h", "as above, last hour"),
    ("static_ratio_10m", "share of requests for static assets (browsers load them, scripts do not)"),
    ("referer_ratio_10m", "share of requests carrying a Referer"),
    ("kib_out_10m", "response KiB sent"),
    ("kib_out_1h", "response KiB sent, last hour"),
    ("id_requests_10m", "requests whose path carries a numeric id"),
    (
        "sequential_ids_10m",
        "id requests within ±32 of one of this entity's 16 most recent ids (enumeration, in any order)",
    ),
    ("sequential_ids_1h", "as above, last hour"),
    ("sequential_ratio_10m", "sequential_ids_10m / id_requests_10m (null without id requests)"),
    ("new_devices_10m", "device ids not active in the last hour that first appeared with this entity"),
    ("new_devices_1h", "as above, last hour"),
    ("country_switches_10m", "consecutive requests from different countries"),
    ("distinct_users_10m", "distinct user ids"),
    ("distinct_users_1h", "distinct user ids, last hour"),
    ("distinct_ips_10m", "distinct client addresses"),
    ("distinct_ips_1h", "distinct client addresses, last hour"),
    ("distinct_countries_1h", "distinct countries, last hour"),
    ("distinct_asns_1h", "distinct autonomous systems, last hour"),
    ("distinct_devices_1h", "distinct device ids, last hour"),
    ("distinct_paths_10m", "distinct request paths"),
    ("distinct_paths_1h", "distinct request paths, last hour"),
    (
        "iat_cv",
        "coefficient of variation of inter-arrival times over recent requests (low = machine-regular; null below 10 requests)",
    ),
    ("age_s", "seconds since the entity was first seen (within state retention)"),
    (
        "confidential_10m",
        "requests authenticated (auth_result=ok) with an API key that has obtained a token with the client-credentials grant and never carried app attestation while held (a server-side integration's own credentials), from a network the key is established in; on an entity that obtained such a token itself from such a network and never carried attestation, all its authenticated requests",
    ),
    (
        "cold_failures_10m",
        "bare failed credential checks (invalid_credentials carrying neither a valid app attestation nor a session the engine saw opened) made while such failures were all the entity had done (within state retention): credentials sent without first opening the page or the app that asks for them",
    ),
    (
        "campaign_cold_share_10m",
        "service-wide, the same on every row of a tick: of the addresses that attempted a login in the last 10 minutes, the share whose first request was a bare failed credential check (null without attempts)",
    ),
    (
        "campaign_cold_addresses_10m",
        "service-wide: addresses first seen in the last 10 minutes whose first request was a bare failed credential check",
    ),
    (
        "new_devices_unattested_10m",
        "of new_devices_10m, those whose first request here failed its app attestation (invalid or missing): device ids minted by a script or an emulator, not an app's users (one rooted phone counts once, however much it calls)",
    ),
    ("new_devices_unattested_1h", "as above, last hour"),
    (
        "cold_reads_10m",
        "looks (requests a second or more after the previous one) that were bare reads, while bare reads are all the entity has done (within state retention; 0 from its first other request): a GET or HEAD of an item (a path with a numeric id) without a session the engine saw opened, an app attestation, an API key or a user",
    ),
    (
        "campaign_cold_readers_10m",
        "service-wide, the same on every row of a tick: addresses that made their second cold look (cold_reads) in the last 10 minutes, each once while held, none the allowlist vouches for (its networks, its verified crawlers)",
    ),
    (
        "campaign_cold_reader_share_10m",
        "service-wide: campaign_cold_readers_10m over the addresses that began reading items in the last 10 minutes (their first item read in 10 minutes; null without item reads)",
    ),
];
pub const NF: usize = 56;
/// Where the service-wide columns sit (filled by the tick, not by an entity).
const CAMPAIGN_SHARE: usize = 49;
const CAMPAIGN_ADDRESSES: usize = 50;
const CAMPAIGN_READERS: usize = 54;
const CAMPAIGN_READER_SHARE: usize = 55;

/// Per minute over the last ten, across every address this engine counts:
/// addresses that began attempting logins (their first attempt in ten
/// minutes), and new addresses whose first request was a bare failed
/// credential check ([`state::Contribution::bare_failure`]); addresses that
/// began reading items, and addresses that made their second cold look
/// ([`state::c::COLD_READ`]). A campaign spread over hundreds of
/// addresses, a few attempts or reads each, shows here and in no single
/// address's window. Counted per address, not per request: one address
/// sending thousands of passwords or reads (a rig the per-address rules
/// catch) does not hide a campaign. A person's landing read is one cold
/// look (the page's own calls follow within a second, then its assets), so
/// the second is what counts.
type Campaign = window::Ring<10, 4>;

/// Whether a request (client address, user agent) comes from a client the
/// operator vouches for.
pub type Vouched = Box<dyn Fn(&str, Option<&str>) -> bool + Send + Sync>;

/// The service-wide columns as of one tick.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub cold_share_10m: f64,
    pub cold_addresses_10m: f64,
    pub cold_readers_10m: f64,
    pub cold_reader_share_10m: f64,
}

impl Context {
    /// No service-wide view (a batch built outside the engine): nulls.
    pub const NONE: Context = Context {
        cold_share_10m: f64::NAN,
        cold_addresses_10m: f64::NAN,
        cold_readers_10m: f64::NAN,
        cold_reader_share_10m: f64::NAN,
    };

    fn of(campaign: &Campaign, now: i64) -> Context {
        let [logins, cold, readers, cold_readers] = campaign.sums(now.div_euclid(state::G10_MS));
        let share = |a: u64, of: u64| if of == 0 { f64::NAN } else { (a as f64 / of as f64).min(1.0) };
        Context {
            cold_share_10m: share(cold, logins),
            cold_addresses_10m: cold as f64,
            cold_readers_10m: cold_readers as f64,
            cold_reader_share_10m: share(cold_readers, readers),
        }
    }
}

/// The longest window any feature covers. An event further behind the newest
/// one than this can update no window, so the engine refuses it (dead letter)
/// instead of pretending to count it.
pub const LONGEST_WINDOW_MS: i64 = state::G60_MS * state::H60_SLOTS as i64;

/// The Arrow schema of the `features` table: when, which entity, then every feature.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
                Field::new("entity_type", DataType::Utf8, false),
                Field::new("entity", DataType::Utf8, false),
            ];
            fields.extend(FEATURES.iter().map(|(n, _)| Field::new(*n, DataType::Float64, true)));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// The `features` table as sinks write it: [`schema`] and then `periodic`,
/// true for a periodic snapshot (every feature computed), false for a row
/// written at a decision between two snapshots (only the features rules and
/// models read; the others are null). Training reads periodic rows only.
pub fn table_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields: Vec<Field> = schema().fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new("periodic", DataType::Boolean, false));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// Windowing and retention settings.
#[derive(Debug, Clone, Copy)]
pub struct FeatureConfig {
    /// Event time between two feature emissions.
    pub tick_ms: i64,
    /// How far behind the newest event another may arrive and still count.
    pub lateness_ms: i64,
    /// An entity idle this long is forgotten (its windows are all empty by then).
    pub idle_ms: i64,
    /// Every this many ticks, a snapshot covers every entity touched since the
    /// previous such snapshot and is marked for persisting; in between, only
    /// entity types that rules judge are computed.
    pub persist_every_ticks: u32,
    /// Bytes entity state may hold; past it the least recently seen entities
    /// are evicted (see [`budget`]).
    pub state_budget_bytes: usize,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            tick_ms: 10_000,
            lateness_ms: 5_000,
            idle_ms: 3_600_000 + 600_000,
            persist_every_ticks: 6,
            state_budget_bytes: budget::default_budget(),
        }
    }
}

/// Feature rows for the entities touched since the previous tick.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Event time the features describe: the newest event applied.
    pub as_of_ms: i64,
    /// One batch per entity type that had activity, in [`EntityType::ALL`] order.
    pub batches: Vec<(EntityType, RecordBatch)>,
    /// Whether this snapshot covers everything since the last persisted one
    /// (and so belongs in the `features` table).
    pub persist: bool,
    /// An early evaluation (live mode, [`FeatureEngine::evaluate_now`]):
    /// windows part-way through a tick, for the rules only.
    pub early: bool,
}

/// Bytes an entity costs besides its state: its map entry (index and hash,
/// and hashbrown's control byte), its slot in `states` and its time in `seen`.
const ENTRY_BYTES: usize = std::mem::size_of::<(u32, u32)>() + 1;
const SLOT_BYTES: usize = std::mem::size_of::<Box<EntityState>>() + std::mem::size_of::<i64>();

/// The entities of one type. The map holds indices into `states` with 32
/// bits of each name's hash, and compares names with the one stored in the
/// state (usually inline, see [`key`]), so a lookup touches the state it is
/// about to update anyway. With the hash in the entry, growing the map (a
/// flood of new entities doubles it again and again) rehashes from the
/// entries alone instead of visiting every state for its name.
/// States are boxed one by one, so the vector that lists them grows by
/// pointers, not by whole states: growing it never copies (or briefly
/// doubles) the state itself.
#[derive(Debug, Default)]
struct Table {
    /// (index into `states`, 32-bit hash of the name).
    map: hashbrown::HashTable<(u32, u32)>,
    hasher: foldhash::fast::RandomState,
    // Boxed on purpose (see above): growth copies pointers, never states.
    #[allow(clippy::vec_box)]
    states: Vec<Box<EntityState>>,
    /// Each state's `last_seen`, side by side: sweeping and eviction scan
    /// these instead of visiting every state (a cache miss each).
    seen: Vec<i64>,
    dirty: Vec<u32>,
    sink_dirty: Vec<u32>,
    /// Touched since the last early evaluation; kept only when `early` is on.
    early_dirty: Vec<u32>,
    early: bool,
    /// Rebuilding state ([`FeatureEngine::ingest_rebuild`]): updates mark nothing.
    quiet: bool,
    /// Σ [`EntityState::bytes`] over `states`, kept as they change.
    state_bytes: usize,
}

/// The 32-bit hash an entry keeps, spread over the 64 bits hashbrown
/// probes with (its top bits tag the entry, its low bits pick the bucket).
#[inline]
fn wide(h: u32) -> u64 {
    (u64::from(h) << 32) | u64::from(h)
}

impl Table {
    /// The one hash of an entity name, for lookups and for the map entry.
    #[inline]
    fn hash(&self, key: &[u8]) -> u32 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key) as u32
    }

    /// Index of `key`, creating its state if new; the flag says whether it was created.
    #[inline]
    fn upsert(&mut self, key: &str, ts: i64) -> (usize, bool) {
        let h = self.hash(key.as_bytes());
        let states = &self.states;
        if let Some(&(i, _)) =
            self.map.find(wide(h), |&(i, eh)| eh == h && states[i as usize].key.as_bytes() == key.as_bytes())
        {
            return (i as usize, false);
        }
        let i = self.states.len();
        let st = Box::new(EntityState::new(Key::new(key), ts));
        self.state_bytes += st.bytes();
        self.states.push(st);
        self.seen.push(ts);
        self.map.insert_unique(wide(h), (i as u32, h), |&(_, eh)| wide(eh));
        (i, true)
    }

    /// The state of `key`, if held.
    fn find(&self, key: &str) -> Option<&EntityState> {
        let h = self.hash(key.as_bytes());
        self.map
            .find(wide(h), |&(i, eh)| eh == h && self.states[i as usize].key.as_bytes() == key.as_bytes())
            .map(|&(i, _)| &*self.states[i as usize])
    }

    /// Points the map entry of the entity at `from` (whose name hashes to
    /// `h`) to `to`, or removes it.
    fn reindex(&mut self, h: u32, from: u32, to: Option<u32>) {
        if let Ok(e) = self.map.find_entry(wide(h), |&(i, _)| i == from) {
            match to {
                Some(to) => e.into_mut().0 = to,
                None => {
                    e.remove();
                }
            }
        }
    }

    /// Applies one request to the state at `idx` and marks it dirty.
    #[inline]
    fn apply(&mut self, idx: usize, k: &Contribution, skip: Option<usize>, new_device: bool) {
        let st = &mut self.states[idx];
        let heap = st.apply(k, skip, new_device);
        self.seen[idx] = st.last_seen;
        self.state_bytes = self.state_bytes.saturating_add_signed(heap);
        self.mark_dirty(idx);
    }

    /// Keeps the state at `idx` held by a request whose rows count
    /// elsewhere: seen now, and marked as [`EntityState::apply`] would mark
    /// it ([`Contribution::marks`]: acted, opened); no window, no row.
    fn hold(&mut self, idx: usize, k: &Contribution) {
        let st = &mut self.states[idx];
        st.last_seen = st.last_seen.max(k.ts);
        st.flags |= k.marks();
        self.seen[idx] = st.last_seen;
    }

    /// Memory held, including the map's and the lists' spare capacity.
    fn bytes(&self) -> usize {
        self.state_bytes + self.map.capacity() * ENTRY_BYTES + self.states.capacity() * SLOT_BYTES
    }

    #[inline]
    fn mark_dirty(&mut self, i: usize) {
        if self.quiet {
            return;
        }
        let s = &mut self.states[i];
        if s.dirty & state::DIRTY_TICK == 0 {
            self.dirty.push(i as u32);
        }
        if s.dirty & state::DIRTY_SINK == 0 {
            self.sink_dirty.push(i as u32);
        }
        if self.early && s.dirty & state::DIRTY_EARLY == 0 {
            self.early_dirty.push(i as u32);
            s.dirty |= state::DIRTY_EARLY;
        }
        s.dirty |= state::DIRTY_TICK | state::DIRTY_SINK;
    }

    /// Forgets entities idle since before `cutoff` whose rows have been emitted.
    fn sweep(&mut self, cutoff: i64) -> usize {
        self.remove_where(|seen, st| seen < cutoff && st.dirty == 0)
    }

    /// Evicts every entity last seen before `cutoff` (or at it, with `inclusive`),
    /// dirty or not.
    fn evict(&mut self, cutoff: i64, inclusive: bool) -> usize {
        self.remove_where(|seen, _| seen < cutoff || (inclusive && seen == cutoff))
    }

    /// Removes the entities `gone` selects (given their last-seen time, which
    /// is checked first, and their state), keeping the dirty lists exact.
    /// A removed entity's place is taken by the last one, so only moved
    /// entities are looked up again in the map: cost follows what is removed,
    /// not what is held.
    fn remove_where(&mut self, gone: impl Fn(i64, &EntityState) -> bool) -> usize {
        let first = match (0..self.states.len()).find(|&i| gone(self.seen[i], &self.states[i])) {
            Some(i) => i,
            None => return 0,
        };
        // `origin[i]`: where the entity now at `i` was before this call.
        let mut origin: Vec<u32> = (0..self.states.len() as u32).collect();
        let mut removed = 0;
        let mut i = first;
        while i < self.states.len() {
            if !gone(self.seen[i], &self.states[i]) {
                i += 1;
                continue;
            }
            let last = self.states.len() as u32 - 1;
            let st = self.states.swap_remove(i);
            self.seen.swap_remove(i);
            origin.swap_remove(i);
            self.state_bytes -= st.bytes();
            self.reindex(self.hash(st.key.as_bytes()), i as u32, None);
            removed += 1;
            if i < self.states.len() {
                let h = self.hash(self.states[i].key.as_bytes());
                self.reindex(h, last, Some(i as u32));
            }
        }
        // After a flood, give back what the map and lists no longer need.
        let n = self.states.len();
        if self.map.capacity() > 4 * n.max(1024) {
            self.map.shrink_to(2 * n, |&(_, eh)| wide(eh));
            self.states.shrink_to(2 * n);
            self.seen.shrink_to(2 * n);
        }
        let mut remap = vec![u32::MAX; origin.len() + removed];
        for (now, &was) in origin.iter().enumerate() {
            remap[was as usize] = now as u32;
        }
        let fix = |v: &mut Vec<u32>| {
            v.retain_mut(|i| {
                *i = remap[*i as usize];
                *i != u32::MAX
            })
        };
        fix(&mut self.dirty);
        fix(&mut self.sink_dirty);
        fix(&mut self.early_dirty);
        removed
    }
}

/// Counters the engine reports in its summary and metrics.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct FeatureStats {
    pub events: u64,
    /// Events behind the watermark, applied where their windows are kept.
    pub reordered_events: u64,
    pub ticks: u64,
    pub feature_rows: u64,
    pub entities_forgotten: u64,
    /// Entities evicted before their time to stay within the state budget.
    pub entities_evicted: u64,
    /// Requests a confidential key authenticated from a network it is not
    /// established in ([`homes`]): judged as anyone's, not as the client's.
    pub confidential_away: u64,
}

/// The feature stage.
pub struct FeatureEngine {
    cfg: FeatureConfig,
    tables: [Table; EntityType::ALL.len()],
    catalog: catalog::PathCatalog,
    max_ts: i64,
    next_tick: i64,
    next_sweep: i64,
    stats: FeatureStats,
    subnet_buf: String,
    ticks_since_persist: u32,
    judged: [bool; EntityType::COUNT],
    needed: [[bool; NF]; EntityType::COUNT],
    campaign: Campaign,
    homes: homes::Homes,
    /// The sign-in forms (`[classes] login_forms`), normalised: a refused
    /// post of one without a session is campaign evidence.
    login_forms: Vec<String>,
    /// Whether a request (client address, user agent) comes from a client the
    /// operator vouches for (the allowlist: its networks, its verified
    /// crawlers). A search engine's crawler reads thousands of items without
    /// a session from dozens of addresses, which is no campaign; asked only
    /// when an address would count as campaign evidence.
    vouched: Option<Vouched>,
    /// Sessions seen opened since [`FeatureEngine::take_opened_sessions`]
    /// last took them; collected only when asked for.
    opened: Option<Vec<String>>,
}

const SWEEP_EVERY_MS: i64 = 60_000;
/// Addresses of a wide range judged for a decision's `spare`, the most
/// recently seen first: the others are covered by it.
pub const SPARED_MAX: usize = 1024;
/// Every entity type, one bit per [`EntityType::index`] (see [`FeatureEngine::ingest_for`]).
const ALL: u8 = (1 << EntityType::ALL.len()) - 1;

/// A page asset, by folder or extension: what a browser fetches right after
/// a page, and a scraper that pays for its bandwidth does not.
pub fn is_static_asset(path: &str) -> bool {
    const EXT: [&str; 14] =
        ["js", "css", "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "woff", "woff2", "ttf", "map", "avif"];
    if path.starts_with("/static/") || path.starts_with("/assets/") {
        return true;
    }
    // Byte searches: short paths, where `rsplit('/')`'s `memrchr` costs more
    // than the search itself.
    let b = path.as_bytes();
    let last = &b[b.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1)..];
    match last.iter().rposition(|&c| c == b'.') {
        Some(dot) => EXT.iter().any(|e| last[dot + 1..].eq_ignore_ascii_case(e.as_bytes())),
        None => false,
    }
}

/// Where the last dot of a canonical dotted quad is (four groups of one to
/// three digits, no leading zero, each ≤ 255); `None` for anything else,
/// which then goes through the full parser.
fn canonical_v4_last_dot(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() > 15 {
        return None;
    }
    let mut last_dot = None;
    for (i, g) in b.split(|&c| c == b'.').enumerate() {
        let ok = match g {
            [d] => d.is_ascii_digit(),
            [b'1'..=b'9', d] => d.is_ascii_digit(),
            [b'1', d, e] => d.is_ascii_digit() && e.is_ascii_digit(),
            [b'2', b'0'..=b'4', d] => d.is_ascii_digit(),
            [b'2', b'5', b'0'..=b'5'] => true,
            _ => false,
        };
        match i {
            _ if !ok => return None,
            0..=2 => {}
            3 => last_dot = Some(s.len() - g.len() - 1),
            _ => return None,
        }
    }
    last_dot
}

fn hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// Borrowed typed columns of an events batch.
struct Cols<'a> {
    ts: &'a TimestampMillisecondArray,
    ip: &'a StringArray,
    method: &'a StringArray,
    path: &'a StringArray,
    status: &'a UInt16Array,
    bytes: &'a UInt64Array,
    referer: &'a StringArray,
    user: &'a StringArray,
    key: &'a StringArray,
    session: &'a StringArray,
    device: &'a StringArray,
    grant: &'a StringArray,
    auth: &'a StringArray,
    attest: &'a StringArray,
    sig: &'a StringArray,
    country: &'a StringArray,
    asn: &'a UInt32Array,
    ua: &'a StringArray,
}

fn column<T: 'static>(b: &RecordBatch, i: usize) -> Result<&T, ArrowError> {
    b.column(i)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| ArrowError::SchemaError(format!("events column {i} has an unexpected type")))
}

/// The network a request came from, as [`homes`] tells a confidential
/// client's apart: its autonomous system when the log says it, else the
/// address's /24 (IPv4) or /48 (IPv6), else the address text itself.
fn network(cols: &Cols<'_>, i: usize, ip_text: &str) -> u64 {
    if cols.asn.is_valid(i) {
        return cols.asn.value(i) as u64 ^ 0x9e37_79b9_7f4a_7c15;
    }
    match ip_text.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => xxhash_rust::xxh3::xxh3_64(&(u32::from(v4) >> 8).to_le_bytes()),
        Ok(IpAddr::V6(v6)) => xxhash_rust::xxh3::xxh3_64(&(u128::from(v6) >> 80).to_le_bytes()),
        Err(_) => hash(ip_text),
    }
}

fn opt(a: &StringArray, i: usize) -> Option<&str> {
    if a.is_valid(i) { Some(a.value(i)) } else { None }
}

impl FeatureEngine {
    pub fn new(cfg: FeatureConfig) -> Self {
        FeatureEngine {
            cfg,
            tables: Default::default(),
            catalog: Default::default(),
            max_ts: i64::MIN,
            next_tick: i64::MIN,
            next_sweep: i64::MIN,
            stats: FeatureStats::default(),
            subnet_buf: String::with_capacity(48),
            ticks_since_persist: 0,
            judged: [true, true, true, true, true, true, false, false],
            needed: [[true; NF]; EntityType::COUNT],
            campaign: Campaign::default(),
            homes: homes::Homes::default(),
            login_forms: Vec::new(),
            vouched: None,
            opened: None,
        }
    }

    /// Sets how to tell the clients the operator vouches for
    /// (the allowlist); none by default.
    pub fn set_vouched(&mut self, vouched: Vouched) {
        self.vouched = Some(vouched);
    }

    /// Collects the sessions seen opened, for the API to tell a session
    /// from a made-up id ([`crate::sessions`]): taken with
    /// [`FeatureEngine::take_opened_sessions`].
    pub fn collect_opened_sessions(&mut self) {
        self.opened.get_or_insert_with(Vec::new);
    }

    /// The sessions seen opened since the last call (none unless collected).
    pub fn take_opened_sessions(&mut self) -> Vec<String> {
        self.opened.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Where each confidential client is at home ([`homes`]): what an engine
    /// keeps across restarts.
    pub fn homes(&mut self) -> &mut homes::Homes {
        &mut self.homes
    }

    /// Which entity types something evaluates every tick (rules, models); the
    /// others are only computed for persisted snapshots.
    /// The sign-in forms of the request classes. Once a gateway refuses the
    /// class `bare-login`, a campaign's posts reach the log as refusals
    /// (403 or 429, no credential check): counted as the bare failures
    /// they stand for, they keep the campaign columns, and so the decision,
    /// in place while the campaign lasts, instead of letting it lapse
    /// because it worked.
    pub fn set_classes(&mut self, classes: &crate::classes::ClassConfig) {
        self.login_forms = classes.login_forms.iter().map(|f| crate::classes::normalize(f)).collect();
    }

    /// Indexed by [`EntityType::index`], request classes last. Networks
    /// are the one type kept only when judged: most pipelines name none,
    /// and their table would cost every event a lookup for nothing.
    pub fn set_judged(&mut self, judged: [bool; EntityType::COUNT]) {
        self.judged = judged;
    }

    /// Which feature columns the per-tick evaluation of each entity type reads;
    /// the others may be left null between persisted snapshots.
    pub fn set_needed(&mut self, needed: [[bool; NF]; EntityType::COUNT]) {
        self.needed = needed;
    }

    pub fn stats(&self) -> FeatureStats {
        self.stats
    }

    /// Newest event time applied (`None` before the first event).
    pub fn max_ts(&self) -> Option<i64> {
        (self.max_ts != i64::MIN).then_some(self.max_ts)
    }

    /// Entities held per type, in [`EntityType::ALL`] order.
    pub fn active_entities(&self) -> [usize; EntityType::ALL.len()] {
        std::array::from_fn(|i| self.tables[i].states.len())
    }

    /// Bytes of entity state held: states, keys, sketches, and the maps'
    /// capacity. This is what [`FeatureConfig::state_budget_bytes`] bounds.
    pub fn state_bytes(&self) -> usize {
        self.tables.iter().map(Table::bytes).sum()
    }

    /// The state budget in force.
    pub fn budget_bytes(&self) -> usize {
        self.cfg.state_budget_bytes
    }

    /// Evicts the least recently seen entities (by event time, across every
    /// type) until state is back to three quarters of the budget. Cost is
    /// linear in the entities held, paid once per quarter-budget of growth.
    fn enforce_budget(&mut self) {
        let budget = self.cfg.state_budget_bytes;
        let held = self.state_bytes();
        if held <= budget {
            return;
        }
        let target = budget / 4 * 3;
        let entity_bytes: usize = self.tables.iter().map(|t| t.state_bytes).sum();
        let count: usize = self.tables.iter().map(|t| t.states.len()).sum();
        if count == 0 {
            return;
        }
        // The share of entities to drop, if they weigh the average.
        let share = ((held - target) as f64 / entity_bytes.max(1) as f64).clamp(0.0, 1.0);
        // A strided sample of last-seen times (deterministic) gives the cutoff.
        let stride = (count / 65_536).max(1);
        let mut sample: Vec<i64> = Vec::with_capacity(count / stride + 6);
        for t in &self.tables {
            sample.extend(t.seen.iter().step_by(stride));
        }
        sample.sort_unstable();
        let k = ((sample.len() as f64 * share).ceil() as usize).clamp(1, sample.len()) - 1;
        let cutoff = sample[k];
        let mut evicted = 0;
        for t in &mut self.tables {
            evicted += t.evict(cutoff, false);
        }
        if self.state_bytes() > target {
            for t in &mut self.tables {
                evicted += t.evict(cutoff, true);
            }
        }
        self.stats.entities_evicted += evicted as u64;
        tracing::debug!(evicted, held, budget, "state budget: evicted the least recently seen entities");
    }

    /// Applies an events batch; returns the snapshots of the ticks it crossed.
    /// The feature rows, as of `now`, of the addresses of `subnet` (a cidr
    /// or network entity) that this engine holds, with each row's address:
    /// what a range rule's `spare` judges. An IPv4 /24 or narrower is walked
    /// address by address (256 lookups); a wider range (a network's /16 or
    /// /48, an IPv6 /64) is found by a scan of the addresses held, the
    /// nearest ones first, at most [`SPARED_MAX`] of them: a decision names
    /// its bystanders one by one, and a residential block can hold
    /// thousands. `None` when none is held.
    pub fn addresses_in(&self, subnet: &str, now: i64) -> Result<Option<(Vec<IpAddr>, RecordBatch)>, ArrowError> {
        let Ok(net) = subnet.parse::<ipnet::IpNet>() else {
            return Ok(None);
        };
        let table = &self.tables[EntityType::Ip.index()];
        let (mut addrs, mut states) = (Vec::new(), Vec::new());
        match net {
            ipnet::IpNet::V4(v4) if v4.prefix_len() >= 24 => {
                let first = u32::from(v4.network());
                let last = u32::from(v4.broadcast());
                let mut name = String::with_capacity(15);
                for a in first..=last {
                    let ip = std::net::Ipv4Addr::from(a);
                    name.clear();
                    let _ = write!(name, "{ip}");
                    if let Some(st) = table.find(&name) {
                        addrs.push(IpAddr::V4(ip));
                        states.push(st);
                    }
                }
            }
            _ => {
                // Addresses are held in canonical text: a cheap look at it
                // leaves out most of them before any is parsed.
                let v4_text = match net {
                    ipnet::IpNet::V4(v4) => {
                        let o = v4.network().octets();
                        Some(match v4.prefix_len() {
                            0..8 => String::new(),
                            8..16 => format!("{}.", o[0]),
                            _ => format!("{}.{}.", o[0], o[1]),
                        })
                    }
                    ipnet::IpNet::V6(_) => None,
                };
                let parse = |key: &str| match &v4_text {
                    Some(start) if key.starts_with(start.as_str()) => key.parse().ok().map(IpAddr::V4),
                    None if key.contains(':') => key.parse().ok().map(IpAddr::V6),
                    _ => None,
                };
                let mut held: Vec<(IpAddr, &EntityState)> = table
                    .states
                    .iter()
                    .filter_map(|st| {
                        let ip = parse(st.key.as_str())?;
                        net.contains(&ip).then_some((ip, &**st))
                    })
                    .collect();
                // The most recently seen first, then by address: the same
                // cut in every engine holding the same state.
                held.sort_unstable_by(|a, b| b.1.last_seen.cmp(&a.1.last_seen).then(a.0.cmp(&b.0)));
                held.truncate(SPARED_MAX);
                for (ip, st) in held {
                    addrs.push(ip);
                    states.push(st);
                }
            }
        }
        if states.is_empty() {
            return Ok(None);
        }
        Ok(Some((addrs, build_batch(EntityType::Ip, now, states.into_iter())?)))
    }

    /// The feature rows, as of `now`, of those of `addrs` this engine
    /// holds, with each row's address ([`Self::addresses_in`] for a list).
    pub fn addresses(&self, addrs: &[IpAddr], now: i64) -> Result<Option<(Vec<IpAddr>, RecordBatch)>, ArrowError> {
        let table = &self.tables[EntityType::Ip.index()];
        let mut name = String::with_capacity(39);
        let (mut held, mut states) = (Vec::new(), Vec::new());
        for ip in addrs {
            name.clear();
            let _ = write!(name, "{ip}");
            if let Some(st) = table.find(&name) {
                held.push(*ip);
                states.push(st);
            }
        }
        if states.is_empty() {
            return Ok(None);
        }
        Ok(Some((held, build_batch(EntityType::Ip, now, states.into_iter())?)))
    }

    /// Whether one /56 of the IPv6 network `net48` (a `/48` name) held
    /// at least half of its distinct addresses both in the last ten
    /// minutes and in the last hour. A network decision on the /48 is for
    /// rotation through the /48; where one /56 holds most of its
    /// addresses, the rotation is that /56's (a household's delegation, in
    /// a provider's /48 that other households share). The hour keeps a
    /// holder walking its /48's /64s in order (one /56 at a time, a quarter
    /// of an hour each) judged as the /48's. `false` when `net48` is not a
    /// held /48.
    pub fn one_56_holds(&self, net48: &str, now: i64) -> bool {
        let Some(net) = net48.parse::<ipnet::Ipv6Net>().ok().filter(|n| n.prefix_len() == 48) else {
            return false;
        };
        let table = &self.tables[EntityType::Network.index()];
        let Some(whole) = table.find(net48).map(|st| st.distinct_ips(now)) else {
            return false;
        };
        let s = net.network().segments();
        let mut busiest = [0.0f64; 2];
        let mut name = String::with_capacity(40);
        for b in 0..=255u16 {
            name.clear();
            let _ = write!(name, "{}/56", std::net::Ipv6Addr::new(s[0], s[1], s[2], b << 8, 0, 0, 0, 0));
            if let Some(st) = table.find(&name) {
                let n = st.distinct_ips(now);
                busiest = [busiest[0].max(n[0]), busiest[1].max(n[1])];
            }
        }
        busiest[0] * 2.0 >= whole[0] && busiest[1] * 2.0 >= whole[1]
    }

    pub fn ingest(&mut self, batch: &RecordBatch) -> Result<Vec<Snapshot>, ArrowError> {
        self.ingest_for(batch, &[])
    }

    /// [`Self::ingest`], row `i` counting only for the entity types in
    /// `entities[i]` (one bit per [`EntityType::index`]; a row past the end
    /// of `entities` counts for every type). An instance reading events
    /// re-keyed by user, say, keeps that user's features exact without
    /// counting the copy again for the address it came from.
    pub fn ingest_for(&mut self, batch: &RecordBatch, entities: &[u8]) -> Result<Vec<Snapshot>, ArrowError> {
        let cols = Cols {
            ts: column(batch, col::TS)?,
            ip: column(batch, col::CLIENT_IP)?,
            method: column(batch, col::METHOD)?,
            path: column(batch, col::PATH)?,
            status: column(batch, col::STATUS)?,
            bytes: column(batch, col::BYTES_SENT)?,
            referer: column(batch, col::REFERER)?,
            user: column(batch, col::USER_ID)?,
            key: column(batch, col::API_KEY_ID)?,
            session: column(batch, col::SESSION_ID)?,
            device: column(batch, col::DEVICE_ID)?,
            grant: column(batch, col::GRANT_TYPE)?,
            auth: column(batch, col::AUTH_RESULT)?,
            attest: column(batch, col::ATTESTATION)?,
            sig: column(batch, col::SIGNATURE)?,
            country: column(batch, col::COUNTRY)?,
            asn: column(batch, col::ASN)?,
            ua: column(batch, col::USER_AGENT)?,
        };
        let mut out = Vec::new();
        for i in 0..batch.num_rows() {
            let ts = cols.ts.value(i);
            // A late event (behind the watermark) still counts in every window
            // that holds its time: rings and sketches take it in its own slot.
            // The engine has already refused events older than every window.
            if self.max_ts != i64::MIN && ts < self.max_ts - self.cfg.lateness_ms && !self.tables[0].quiet {
                self.stats.reordered_events += 1;
            }
            self.advance(ts, &mut out)?;
            self.apply(&cols, i, ts, entities.get(i).copied().unwrap_or(ALL));
            if self.state_bytes() > self.cfg.state_budget_bytes {
                self.enforce_budget();
            }
        }
        Ok(out)
    }

    /// Applies events read again only to rebuild state (an instance taking
    /// over a Kafka partition replays the longest window before its committed
    /// offset): windows, sketches and the path catalogue take them as any
    /// event, but no entity is marked for a tick or for the `features` table,
    /// so nothing is judged or persisted twice. An entity is judged with this
    /// history when its next new event arrives. Ticks the events cross still
    /// emit what new events had marked.
    pub fn ingest_rebuild(&mut self, batch: &RecordBatch, entities: &[u8]) -> Result<Vec<Snapshot>, ArrowError> {
        self.tables.iter_mut().for_each(|t| t.quiet = true);
        let out = self.ingest_for(batch, entities);
        self.tables.iter_mut().for_each(|t| t.quiet = false);
        out
    }

    /// Moves event time forward to `ts`, emitting every tick the watermark passes.
    /// Live mode also calls this from the wall clock when input is idle.
    pub fn advance(&mut self, ts: i64, out: &mut Vec<Snapshot>) -> Result<(), ArrowError> {
        if self.next_tick == i64::MIN {
            self.next_tick = (ts.div_euclid(self.cfg.tick_ms) + 1) * self.cfg.tick_ms;
            self.next_sweep = ts + SWEEP_EVERY_MS;
        }
        let new_max = self.max_ts.max(ts);
        while new_max - self.cfg.lateness_ms >= self.next_tick {
            self.ticks_since_persist += 1;
            let persist = self.ticks_since_persist >= self.cfg.persist_every_ticks.max(1);
            if persist {
                self.ticks_since_persist = 0;
            }
            if let Some(s) = self.tick(persist)? {
                out.push(s);
            }
            self.next_tick += self.cfg.tick_ms;
            if self.next_tick >= self.next_sweep {
                self.sweep();
            }
        }
        Ok(())
    }

    /// Emits rows for the entities touched since the last tick right away,
    /// without waiting for the watermark: live mode calls this after every
    /// batch so that a line reaches the rules within the batch age, not a tick
    /// plus the lateness later. Replay never calls it, so replay stays a pure
    /// function of its input.
    pub fn evaluate_now(&mut self) -> Result<Option<Snapshot>, ArrowError> {
        if !self.tables[0].early {
            // From now on every touch is tracked for early evaluation too,
            // starting with what the next tick will judge.
            for t in &mut self.tables {
                t.early = true;
                t.early_dirty = t.dirty.clone();
                for &i in &t.early_dirty {
                    t.states[i as usize].dirty |= state::DIRTY_EARLY;
                }
            }
        }
        self.tick_with(Emit::Early)
    }

    /// Emits the pending rows now (end of input, shutdown).
    pub fn flush(&mut self) -> Result<Option<Snapshot>, ArrowError> {
        self.ticks_since_persist = 0;
        self.tick(true)
    }

    fn sweep(&mut self) {
        let cutoff = self.max_ts - self.cfg.idle_ms;
        for t in &mut self.tables {
            self.stats.entities_forgotten += t.sweep(cutoff) as u64;
        }
        self.homes.sweep(cutoff);
        self.next_sweep = self.next_tick + SWEEP_EVERY_MS;
    }

    /// Applies row `i` to the entity types in `only`. A key's standing and a
    /// device's novelty are part of what the row contributes to every
    /// entity, so those two tables learn from every row (the entity is held)
    /// even where the row does not count for them.
    fn apply(&mut self, cols: &Cols<'_>, i: usize, ts: i64, only: u8) {
        let counts = |t: EntityType| only & (1 << t.index()) != 0;
        self.stats.events += 1;
        self.max_ts = self.max_ts.max(ts);
        let ip_text = cols.ip.value(i);
        let path = cols.path.value(i);
        let status = cols.status.value(i);
        let user = opt(cols.user, i);
        let key = opt(cols.key, i);
        let session = opt(cols.session, i);
        let device = opt(cols.device, i);
        let country = opt(cols.country, i);

        let mut k = Contribution { ts, ..Default::default() };
        let n = &mut k.counts;
        n[c::REQ] = 1;
        let auth = opt(cols.auth, i);
        let grant = opt(cols.grant, i);
        let login = grant == Some("password") || auth == Some("invalid_credentials");
        n[c::LOGIN_ATT] = login as u32;
        // A session id is what the client sent: it stands for a session
        // only once the engine has seen the session opened (a request with
        // it that was neither a bare failed sign-in nor a bare read). A
        // credential list posted, or a catalogue read, with made-up session
        // ids is as bare as one sent without. The
        // session is held by every engine, whether or not its rows count
        // here, so that each one judges this alike.
        let mut held_session = None;
        if let Some(s) = session {
            let t = &mut self.tables[EntityType::Session.index()];
            let (idx, created) = t.upsert(s, ts);
            held_session = Some((idx, !created && t.states[idx].flags & state::OPENED != 0));
        }
        let session_opened = held_session.is_some_and(|(_, opened)| opened);
        let bare = opt(cols.attest, i) != Some("valid") && !session_opened;
        // Refused by the gateway before any check: the request class at work.
        let refused_post = bare
            && auth.is_none()
            && matches!(status, 403 | 429)
            && !self.login_forms.is_empty()
            && cols.method.value(i).eq_ignore_ascii_case("POST")
            && self.login_forms.contains(&crate::classes::normalize(path));
        k.bare_failure = bare && (auth == Some("invalid_credentials") || refused_post);
        n[c::LOGIN_FAIL] = (auth == Some("invalid_credentials")) as u32;
        n[c::AUTH_OK] = (auth == Some("ok")) as u32;
        n[c::TOKEN_FAIL] = matches!(auth, Some("invalid_token" | "invalid_client")) as u32;
        if matches!(grant, Some("refresh_token" | "authorization_code" | "client_credentials")) {
            n[c::GRANT_ATT] = 1;
            n[c::GRANT_FAIL] = (auth.is_some() && auth != Some("ok")) as u32;
        }
        if let Some(a) = opt(cols.attest, i) {
            n[c::ATT_CHK] = 1;
            n[c::ATT_BAD] = (a != "valid") as u32;
        }
        if let Some(s) = opt(cols.sig, i) {
            n[c::SIG_CHK] = 1;
            n[c::SIG_INVALID] = (s == "invalid") as u32;
            n[c::SIG_STALE] = (s == "stale") as u32;
            n[c::SIG_REPLAYED] = (s == "replayed") as u32;
            n[c::SIG_BAD] = (s != "valid") as u32;
        }
        n[c::S4XX] = (400..500).contains(&status) as u32;
        let not_found = status == 404 || status == 410;
        n[c::NOT_FOUND] = not_found as u32;
        n[c::UNK404] = self.catalog.observe(path, status) as u32;
        n[c::STATIC] = is_static_asset(path) as u32;
        n[c::REFERER] = cols.referer.is_valid(i) as u32;
        if cols.bytes.is_valid(i) {
            n[c::KIB] = ((cols.bytes.value(i).saturating_add(512)) / 1024).min(u32::MAX as u64) as u32;
        }
        k.numeric_id = catalog::numeric_id(path);
        n[c::IDREQ] = k.numeric_id.is_some() as u32;
        k.bare_read = bare
            && k.numeric_id.is_some()
            && n[c::STATIC] == 0
            && user.is_none()
            && key.is_none()
            && (cols.method.value(i).eq_ignore_ascii_case("GET") || cols.method.value(i).eq_ignore_ascii_case("HEAD"));
        k.country = country.and_then(|c| {
            let b = c.as_bytes();
            (b.len() == 2).then(|| [b[0], b[1]])
        });
        k.distinct[d::USERS] = user.map(hash);
        k.distinct[d::IPS] = Some(hash(ip_text));
        k.distinct[d::COUNTRIES] = country.map(hash);
        // Hashed like every other value: the distinct sets keep a hash's
        // high half, which an ASN merely XORed with a constant leaves
        // the same for every ASN (every entity then had one).
        k.distinct[d::ASNS] =
            cols.asn.is_valid(i).then(|| xxhash_rust::xxh3::xxh3_64(&cols.asn.value(i).to_le_bytes()));
        k.distinct[d::DEVICES] = device.map(hash);
        k.distinct[d::PATHS] = Some(hash(path));

        // The key's standing first: whether this request comes from a
        // confidential client is part of what it contributes everywhere.
        if grant == Some("client_credentials") && auth == Some("ok") {
            k.flags |= state::SEEN_CLIENT_CREDENTIALS;
        }
        if cols.attest.is_valid(i) {
            k.flags |= state::SEEN_ATTESTATION;
        }
        let mut key_idx = None;
        if let Some(name) = key {
            let t = &mut self.tables[EntityType::ApiKey.index()];
            let (idx, _) = t.upsert(name, ts);
            let st = &mut t.states[idx];
            st.flags |= k.flags;
            let confidential = st.is_confidential_client() && auth == Some("ok");
            // The standing is the secret's where its owner uses it; from
            // another network it may be a thief's (see `homes`), and nothing
            // this request touches learns it from there.
            let home = !confidential || self.homes.observe(hash(name), network(cols, i, ip_text), ts);
            if !home {
                k.flags &= !state::SEEN_CLIENT_CREDENTIALS;
                self.stats.confidential_away += 1;
            }
            k.counts[c::CONF] = (confidential && home) as u32;
            key_idx = Some(idx);
        }

        // The device next, so the others learn whether it is new.
        let mut new_device = false;
        if let Some(dev) = device {
            let t = &mut self.tables[EntityType::Device.index()];
            let (idx, created) = t.upsert(dev, ts);
            new_device = created;
            if counts(EntityType::Device) {
                t.apply(idx, &k, Some(d::DEVICES), false);
            }
        }
        if counts(EntityType::Ip) {
            let t = &mut self.tables[EntityType::Ip.index()];
            let (idx, created) = t.upsert(ip_text, ts);
            let st = &t.states[idx];
            let first_login = (login && st.count_10m(c::LOGIN_ATT, ts) == 0) || (refused_post && created);
            let cold = k.bare_failure && st.flags & state::ACTED == 0 && created;
            let first_read = k.numeric_id.is_some() && st.count_10m(c::IDREQ, ts) == 0;
            // Its second cold look makes an address a cold reader, once; a
            // client the operator vouches for is asked about once and never counts.
            let second_look =
                st.cold_look(&k) && st.flags & state::COUNTED_READER == 0 && st.count_10m(c::COLD_READ, ts) >= 1;
            let cold_reader = second_look && !self.vouched.as_ref().is_some_and(|v| v(ip_text, opt(cols.ua, i)));
            if second_look {
                t.states[idx].flags |= state::COUNTED_READER;
            }
            t.apply(idx, &k, Some(d::IPS), new_device);
            let seen = [first_login as u32, cold as u32, first_read as u32, cold_reader as u32];
            self.campaign.add(ts.div_euclid(state::G10_MS), &seen);
        }
        self.subnet_buf.clear();
        if counts(EntityType::Cidr) {
            if let Some(dot) = canonical_v4_last_dot(ip_text) {
                // The parsers store addresses canonical (no leading zeros), so
                // the text up to the last dot is the /24; no second parse.
                self.subnet_buf.push_str(&ip_text[..dot]);
                self.subnet_buf.push_str(".0/24");
            } else {
                match ip_text.parse::<IpAddr>() {
                    Ok(IpAddr::V4(v4)) => {
                        let o = v4.octets();
                        let _ = write!(self.subnet_buf, "{}.{}.{}.0/24", o[0], o[1], o[2]);
                    }
                    Ok(ip @ IpAddr::V6(_)) => self.subnet_buf.push_str(&subnet_of(ip)),
                    Err(_) => {}
                }
            }
        }
        if !self.subnet_buf.is_empty() {
            let buf = std::mem::take(&mut self.subnet_buf);
            self.touch(EntityType::Cidr, &buf, &k, None, new_device);
            self.subnet_buf = buf;
        }
        if counts(EntityType::Network)
            && self.judged[EntityType::Network.index()]
            && ip_text.contains(':')
            && let Ok(ip) = ip_text.parse::<IpAddr>()
        {
            for net in networks_of(ip) {
                self.touch(EntityType::Network, &net, &k, None, new_device);
            }
        }
        if let Some(u) = user.filter(|_| counts(EntityType::User)) {
            self.touch(EntityType::User, u, &k, Some(d::USERS), new_device);
        }
        if let Some(idx) = key_idx.filter(|_| counts(EntityType::ApiKey)) {
            self.tables[EntityType::ApiKey.index()].apply(idx, &k, None, new_device);
        }
        if let Some((idx, was_opened)) = held_session {
            let t = &mut self.tables[EntityType::Session.index()];
            if counts(EntityType::Session) {
                t.apply(idx, &k, None, new_device);
            } else {
                t.hold(idx, &k);
            }
            if !was_opened
                && !k.bare_failure
                && !k.bare_read
                && let (Some(opened), Some(s)) = (&mut self.opened, session)
            {
                opened.push(s.to_string());
            }
        }
    }

    #[inline]
    fn touch(&mut self, t: EntityType, key: &str, k: &Contribution, skip: Option<usize>, new_device: bool) {
        let table = &mut self.tables[t.index()];
        let (idx, _) = table.upsert(key, k.ts);
        table.apply(idx, k, skip, new_device);
    }

    /// Emits the rows due at this tick. Invariants: `dirty` lists exactly the
    /// entities with `DIRTY_TICK`, `sink_dirty` those with `DIRTY_SINK`,
    /// `early_dirty` at least those with `DIRTY_EARLY` (a tick clears the bit
    /// of what it judged and leaves the list, which the next early
    /// evaluation drains), and `dirty ∪ early_dirty ⊆ sink_dirty` (marking
    /// sets them all; only a persisted tick clears the last).
    fn tick(&mut self, persist: bool) -> Result<Option<Snapshot>, ArrowError> {
        self.tick_with(if persist { Emit::Persist } else { Emit::Tick })
    }

    fn tick_with(&mut self, emit: Emit) -> Result<Option<Snapshot>, ArrowError> {
        self.stats.ticks += u64::from(emit != Emit::Early);
        if self.max_ts == i64::MIN {
            return Ok(None);
        }
        let now = self.max_ts;
        let context = Context::of(&self.campaign, now);
        let mut batches = Vec::new();
        for t in EntityType::ALL {
            let table = &mut self.tables[t.index()];
            let rows = match emit {
                Emit::Persist => {
                    table.dirty.clear();
                    table.early_dirty.clear();
                    let rows = std::mem::take(&mut table.sink_dirty);
                    for &i in &rows {
                        table.states[i as usize].dirty = 0;
                    }
                    rows
                }
                // An early evaluation leaves the tick's own list alone, so
                // that every tick judges exactly what it would in a replay.
                // A tick judges an entity's whole state, so an early
                // evaluation after it, with nothing new since, would judge
                // the same again: it skips what a tick judged. Rounds of live
                // input that span many ticks (catching up, a burst) then cost
                // what a replay's ticks do, not twice that.
                Emit::Tick => {
                    let rows = std::mem::take(&mut table.dirty);
                    for &i in &rows {
                        table.states[i as usize].dirty &= !(state::DIRTY_TICK | state::DIRTY_EARLY);
                    }
                    if !self.judged[t.index()] {
                        continue;
                    }
                    rows
                }
                Emit::Early => {
                    let mut rows = std::mem::take(&mut table.early_dirty);
                    // Once each, and only if no tick judged it since its touch.
                    rows.retain(|&i| {
                        let s = &mut table.states[i as usize];
                        let due = s.dirty & state::DIRTY_EARLY != 0;
                        s.dirty &= !state::DIRTY_EARLY;
                        due
                    });
                    if !self.judged[t.index()] {
                        continue;
                    }
                    rows
                }
            };
            if rows.is_empty() {
                continue;
            }
            let need = if emit == Emit::Persist { &[true; NF] } else { &self.needed[t.index()] };
            let states = rows.iter().map(|&i| &*table.states[i as usize]);
            let batch = build_batch_in(t, now, states, need, context)?;
            self.stats.feature_rows += batch.num_rows() as u64;
            batches.push((t, batch));
        }
        // The request classes, when something judges them: one row each, of
        // the service-wide columns only, while logins are attempted at all.
        if self.judged[EntityType::Class.index()] && !context.cold_share_10m.is_nan() {
            let mut need = [false; NF];
            need[CAMPAIGN_SHARE] = true;
            need[CAMPAIGN_ADDRESSES] = true;
            let class = EntityState::new(Key::new(crate::classes::BARE_LOGIN), now);
            let batch = build_batch_in(EntityType::Class, now, std::iter::once(&class), &need, context)?;
            self.stats.feature_rows += 1;
            batches.push((EntityType::Class, batch));
        }
        Ok((!batches.is_empty()).then_some(Snapshot {
            as_of_ms: now,
            batches,
            persist: emit == Emit::Persist,
            early: emit == Emit::Early,
        }))
    }
}

/// What a tick emits rows for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    /// Entities touched since the last tick.
    Tick,
    /// Every entity touched since the last persisted snapshot, every feature.
    Persist,
    /// Entities touched since the last early evaluation (live mode).
    Early,
}

/// Builds one feature batch for `states` of entity type `t` as of `now`.
pub fn build_batch<'a>(
    t: EntityType,
    now: i64,
    states: impl ExactSizeIterator<Item = &'a EntityState>,
) -> Result<RecordBatch, ArrowError> {
    build_batch_in(t, now, states, &[true; NF], Context::NONE)
}

/// Rows computed at a time before they are spread into columns: small
/// enough that the rows stay in cache while each column reads its value.
const ROW_CHUNK: usize = 256;

/// Like [`build_batch`], filling only the columns marked in `need` (the
/// others are null), and the service-wide ones from `context`.
///
/// Built column by column: each entity's values are computed once into a
/// row, a chunk of rows is spread into plain value vectors, and each column
/// becomes an array with a validity bitmap only if it holds a null (NaN).
/// Appending every value to its own builder cost a capacity check and a
/// bitmap bit per value, with 51 values per row.
fn build_batch_in<'a>(
    t: EntityType,
    now: i64,
    states: impl ExactSizeIterator<Item = &'a EntityState>,
    need: &[bool; NF],
    context: Context,
) -> Result<RecordBatch, ArrowError> {
    use datafusion::arrow::array::Float64Array;
    use datafusion::arrow::buffer::NullBuffer;

    let n = states.len();
    let mut ent = StringBuilder::with_capacity(n, n * 24);
    let wanted: Vec<usize> = (0..NF).filter(|&j| need[j]).collect();
    let mut values: Vec<Vec<f64>> = wanted.iter().map(|_| Vec::with_capacity(n)).collect();
    let mut rows: Vec<[f64; NF]> = Vec::with_capacity(ROW_CHUNK.min(n));
    let mut spread = |rows: &mut Vec<[f64; NF]>| {
        for (v, &j) in values.iter_mut().zip(&wanted) {
            v.extend(rows.iter().map(|r| r[j]));
        }
        rows.clear();
    };
    for s in states {
        ent.append_value(s.key.as_str());
        // Each entity is described as of its own newest event: when input
        // arrives out of order, "now" (the newest event of all) may be minutes
        // past an entity whose events are still arriving, and its short windows
        // would be read as empty. In order, the two differ by less than a tick.
        let mut row = s.features_masked(s.last_seen.min(now), need);
        row[CAMPAIGN_SHARE] = context.cold_share_10m;
        row[CAMPAIGN_ADDRESSES] = context.cold_addresses_10m;
        row[CAMPAIGN_READERS] = context.cold_readers_10m;
        row[CAMPAIGN_READER_SHARE] = context.cold_reader_share_10m;
        rows.push(row);
        if rows.len() == ROW_CHUNK {
            spread(&mut rows);
        }
    }
    spread(&mut rows);
    let ts = TimestampMillisecondArray::from(vec![now; n]).with_timezone("UTC");
    let et = StringArray::from_iter_values(std::iter::repeat_n(t.as_str(), n));
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(NF + 3);
    cols.extend([Arc::new(ts) as ArrayRef, Arc::new(et), Arc::new(ent.finish())]);
    // One all-null column serves every feature left out: allocating (and
    // zeroing) one per column was a tenth of the cost of a tick.
    let mut nulls: Option<ArrayRef> = None;
    // `values` holds one vector per wanted column, in column order.
    let mut filled = values.into_iter();
    for &wanted in need {
        let col = match if wanted { filled.next() } else { None } {
            Some(mut v) => {
                let validity =
                    v.iter().any(|x| x.is_nan()).then(|| NullBuffer::from_iter(v.iter().map(|x| !x.is_nan())));
                if validity.is_some() {
                    // What a builder leaves under a null, so batches compare equal.
                    v.iter_mut().filter(|x| x.is_nan()).for_each(|x| *x = 0.0);
                }
                Arc::new(Float64Array::new(v.into(), validity)) as ArrayRef
            }
            None => nulls.get_or_insert_with(|| new_null_array(&DataType::Float64, n)).clone(),
        };
        cols.push(col);
    }
    RecordBatch::try_new(schema(), cols)
}

#[cfg(test)]
mod tests {
    use super::{IpAddr, canonical_v4_last_dot, is_static_asset};

    #[test]
    fn canonical_dotted_quads_only() {
        for ok in ["1.2.3.4", "0.0.0.0", "255.255.255.255", "10.200.199.9", "192.168.100.1"] {
            let dot = canonical_v4_last_dot(ok).unwrap_or_else(|| panic!("{ok}"));
            let want = match ok.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) => v4.octets(),
                _ => unreachable!(),
            };
            assert_eq!(format!("{}.0/24", &ok[..dot]), format!("{}.{}.{}.0/24", want[0], want[1], want[2]));
        }
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "256.1.1.1",
            "1.2.3.",
            ".1.2.3",
            "1..2.3",
            "::1",
            "1.2.3.4a",
            "",
            "300.1.1.1",
        ] {
            assert_eq!(canonical_v4_last_dot(bad), None, "{bad}");
        }
    }

    /// The addresses of a range, walked (a /24) or found by a scan (a /16,
    /// a /48), the most recently seen first, and those of a list.
    #[test]
    fn the_addresses_of_a_range_or_a_list() {
        use super::{FeatureConfig, FeatureEngine};
        use std::net::IpAddr;
        let ips = ["203.0.113.9", "203.0.7.1", "203.1.0.1", "2001:db8:1:2::1", "2001:db8:1:ffff::9", "2001:db8:2::1"];
        let mut b = crate::event::EventBatchBuilder::with_capacity(ips.len());
        for (i, ip) in ips.iter().enumerate() {
            let ts = 1_772_359_200_000 + i as i64 * 1_000;
            let line = format!(r#"{{"ts":{ts},"client_ip":"{ip}","method":"GET","path":"/","status":200}}"#);
            b.append(&crate::event::parse_line(&line, crate::event::Format::Json, None).expect("parses"));
        }
        let mut f = FeatureEngine::new(FeatureConfig::default());
        f.ingest(&b.finish().expect("batch")).expect("ingest");
        let now = 1_772_359_300_000;
        let found = |range: &str| -> Vec<String> {
            f.addresses_in(range, now)
                .expect("rows")
                .map(|(a, rows)| {
                    assert_eq!(rows.num_rows(), a.len());
                    a.iter().map(IpAddr::to_string).collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(found("203.0.113.0/24"), ["203.0.113.9"]);
        // Newest first.
        assert_eq!(found("203.0.0.0/16"), ["203.0.7.1", "203.0.113.9"]);
        assert_eq!(found("2001:db8:1::/48"), ["2001:db8:1:ffff::9", "2001:db8:1:2::1"]);
        assert!(found("2001:db8:3::/48").is_empty());
        assert!(found("not a range").is_empty());
        let listed: Vec<IpAddr> = ["2001:db8:2::1", "198.51.100.1"].iter().map(|a| a.parse().expect("ip")).collect();
        let (held, rows) = f.addresses(&listed, now).expect("rows").expect("one held");
        assert_eq!((held, rows.num_rows()), (vec![listed[0]], 1));
    }

    /// Live mode evaluates what it touched after every round, and ticks
    /// judge it too: an entity a tick judged since its last touch is not
    /// judged again by the next early evaluation, and one touched again is,
    /// once.
    #[test]
    fn an_early_evaluation_skips_what_a_tick_judged_since() {
        use super::{EntityType, FeatureConfig, FeatureEngine, Snapshot};
        use datafusion::arrow::array::AsArray;
        let t0 = 1_772_359_200_000i64;
        let batch = |ips: &[&str], ts: i64| {
            let mut b = crate::event::EventBatchBuilder::with_capacity(ips.len());
            for ip in ips {
                let line = format!(r#"{{"ts":{ts},"client_ip":"{ip}","method":"GET","path":"/","status":200}}"#);
                b.append(&crate::event::parse_line(&line, crate::event::Format::Json, None).expect("parses"));
            }
            b.finish().expect("batch")
        };
        let ips = |snaps: &[Snapshot]| -> Vec<String> {
            let mut v: Vec<String> = snaps
                .iter()
                .flat_map(|s| s.batches.iter())
                .filter(|(t, _)| *t == EntityType::Ip)
                .flat_map(|(_, b)| {
                    b.column_by_name("entity")
                        .expect("entity")
                        .as_string::<i32>()
                        .iter()
                        .flatten()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            v.sort();
            v
        };
        let mut f = FeatureEngine::new(FeatureConfig::default());
        assert!(f.evaluate_now().expect("early").is_none(), "nothing touched yet");
        f.ingest(&batch(&["203.0.113.1", "203.0.113.2"], t0)).expect("ingest");
        f.ingest(&batch(&["203.0.113.2"], t0 + 1)).expect("ingest");
        let early: Vec<Snapshot> = f.evaluate_now().expect("early").into_iter().collect();
        assert_eq!(ips(&early), ["203.0.113.1", "203.0.113.2"], "each once");
        f.ingest(&batch(&["203.0.113.3"], t0 + 2)).expect("ingest");
        // Time passes: the ticks judge every entity touched.
        let mut ticks = Vec::new();
        f.advance(t0 + 600_000, &mut ticks).expect("advance");
        assert!(ips(&ticks).contains(&"203.0.113.3".to_string()), "{:?}", ips(&ticks));
        let early: Vec<Snapshot> = f.evaluate_now().expect("early").into_iter().collect();
        assert!(ips(&early).is_empty(), "judged by a tick already: {:?}", ips(&early));
        f.ingest(&batch(&["203.0.113.3"], t0 + 600_001)).expect("ingest");
        let early: Vec<Snapshot> = f.evaluate_now().expect("early").into_iter().collect();
        assert_eq!(ips(&early), ["203.0.113.3"]);
    }

    /// A row counts only for the types its mask names: a repartitioned copy
    /// keyed by user leaves the address, key, device and session alone
    /// (though the key's standing, the device's novelty and whether the
    /// session was opened are still learned).
    #[test]
    fn a_masked_row_counts_only_for_its_entity_types() {
        use super::{EntityType, FeatureConfig, FeatureEngine};
        let line = r#"{"ts":1772359200000,"client_ip":"2001:db8::1","method":"GET","path":"/v1/a","status":200,"user_id":"u","api_key_id":"k","device_id":"d","session_id":"s"}"#;
        let ev = crate::event::parse_line(line, crate::event::Format::Json, None).expect("parses");
        let mut b = crate::event::EventBatchBuilder::with_capacity(1);
        b.append(&ev);
        let batch = b.finish().expect("batch");
        let types_judged = |mask: &[u8], networks: bool| {
            let mut f = FeatureEngine::new(FeatureConfig::default());
            let mut judged = [true; EntityType::COUNT];
            judged[EntityType::Network.index()] = networks;
            f.set_judged(judged);
            f.ingest_for(&batch, mask).expect("ingest");
            let held = f.active_entities();
            let snap = f.flush().expect("flush").expect("rows");
            (snap.batches.iter().map(|(t, _)| *t).collect::<Vec<_>>(), held)
        };
        let types = |mask: &[u8]| types_judged(mask, true);
        let user = 1 << EntityType::User.index();
        assert_eq!(types(&[user]), (vec![EntityType::User], [0, 0, 1, 1, 1, 1, 0]));
        let (all, held) = types(&[]);
        assert_eq!(all, EntityType::ALL.to_vec());
        // An IPv6 address is in two networks, its /48 and its /56.
        assert_eq!(held, [1, 1, 1, 1, 1, 1, 2]);
        // Networks are kept only where something judges them.
        let (all, held) = types_judged(&[], false);
        assert_eq!(all, EntityType::ALL[..6].to_vec());
        assert_eq!(held, [1, 1, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn static_assets_by_folder_or_extension() {
        for p in ["/static/x", "/assets/app", "/app.js", "/a/b/Logo.PNG", "/f.woff2", "/x/y.min.css", "main.map"] {
            assert!(is_static_asset(p), "{p}");
        }
        for p in ["/", "", "/v1/products/7", "/v1/data.json", "/js/app", "/a.js/b", "/a.", "/.", "/ünï.css.x", "/x.jsx"]
        {
            assert!(!is_static_asset(p), "{p}");
        }
    }
}
