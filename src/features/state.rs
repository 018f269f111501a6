//! Per-entity behaviour state: windowed counters, distinct sets and a few
//! running statistics, and how one request updates them.

use super::distinct::Distincts;
use super::key::Key;
use super::window::{Ring, SparseRing};

/// Counter slots kept per window slot.
pub mod c {
    pub const REQ: usize = 0;
    pub const LOGIN_ATT: usize = 1;
    pub const LOGIN_FAIL: usize = 2;
    pub const AUTH_OK: usize = 3;
    pub const TOKEN_FAIL: usize = 4;
    pub const ATT_CHK: usize = 5;
    pub const ATT_BAD: usize = 6;
    pub const SIG_CHK: usize = 7;
    pub const SIG_INVALID: usize = 8;
    pub const SIG_STALE: usize = 9;
    pub const SIG_REPLAYED: usize = 10;
    pub const SIG_BAD: usize = 11;
    pub const S4XX: usize = 12;
    pub const NOT_FOUND: usize = 13;
    pub const UNK404: usize = 14;
    pub const STATIC: usize = 15;
    pub const REFERER: usize = 16;
    pub const KIB: usize = 17;
    pub const IDREQ: usize = 18;
    pub const SEQ: usize = 19;
    pub const NEWDEV: usize = 20;
    pub const CSWITCH: usize = 21;
    pub const GRANT_ATT: usize = 22;
    pub const GRANT_FAIL: usize = 23;
    pub const CONF: usize = 24;
    pub const COLD_FAIL: usize = 25;
    /// A device new to the engine whose first request here failed its app
    /// attestation (invalid or missing).
    pub const NEWDEV_BAD: usize = 26;
    /// A cold look: a bare read ([`super::Contribution::bare_read`]) while
    /// bare reads are all the entity has done, a second or more after its
    /// previous request.
    pub const COLD_READ: usize = 27;
    pub const N: usize = 28;
}

/// The counters an hour-long feature reads, and where each sits in the
/// 1-hour ring: only these are kept per 10-minute slot, which more than halves
/// the ring (7 counters instead of 24).
pub mod h {
    use super::c;
    pub const FROM: [usize; N] =
        [c::REQ, c::LOGIN_FAIL, c::TOKEN_FAIL, c::UNK404, c::KIB, c::SEQ, c::NEWDEV, c::NEWDEV_BAD];
    pub const REQ: usize = 0;
    pub const LOGIN_FAIL: usize = 1;
    pub const TOKEN_FAIL: usize = 2;
    pub const UNK404: usize = 3;
    pub const KIB: usize = 4;
    pub const SEQ: usize = 5;
    pub const NEWDEV: usize = 6;
    pub const NEWDEV_BAD: usize = 7;
    pub const N: usize = 8;
}

/// Distinct sets kept per entity.
pub mod d {
    pub const USERS: usize = 0;
    pub const IPS: usize = 1;
    pub const COUNTRIES: usize = 2;
    pub const ASNS: usize = 3;
    pub const DEVICES: usize = 4;
    pub const PATHS: usize = 5;
    pub const N: usize = super::super::distinct::KINDS;
}

/// 1-minute window: 6 slots of 10 s, requests only.
pub const G1_MS: i64 = 10_000;
/// 10-minute window: 10 slots of 1 min.
pub const G10_MS: i64 = 60_000;
/// 1-hour window: 6 slots of 10 min.
pub const G60_MS: i64 = 600_000;
/// Slots of the 1-hour ring.
pub const H60_SLOTS: usize = 6;
/// The two windows distinct counts are kept for.
const M10: i64 = 600_000;
const H1: i64 = 3_600_000;

/// What one request contributes, computed once and applied to every entity it names.
#[derive(Debug, Clone, Default)]
pub struct Contribution {
    pub ts: i64,
    pub counts: [u32; c::N],
    /// Hashes of the attributes counted distinctly, `None` when absent.
    pub distinct: [Option<u64>; d::N],
    pub numeric_id: Option<u64>,
    pub country: Option<[u8; 2]>,
    /// [`SEEN_CLIENT_CREDENTIALS`] / [`SEEN_ATTESTATION`]: what the request
    /// shows of its client, kept by every entity it names.
    pub flags: u8,
    /// A bare failed credential check: invalid_credentials, carrying
    /// neither a valid app attestation nor a session (what the login page
    /// starts and the browser sends back with the password). What a
    /// credential list sent by a script looks like; [`c::COLD_FAIL`] counts
    /// it where it is all the entity has done. A post of a sign-in form
    /// without a session that the gateway refused before any check (a
    /// decision on the request class at work) is one too: the credentials
    /// were sent bare, and only the refusal kept them from failing.
    pub bare_failure: bool,
    /// A bare read: a GET or HEAD of an item (a path with a numeric id)
    /// carrying no session the engine saw opened, no app attestation, no
    /// API key and no user. A person's first request to a site is one (the
    /// response sets the session), and so is every request of a scraper
    /// reading through a proxy pool; [`c::COLD_READ`] counts the looks of
    /// an entity that never does anything else.
    pub bare_read: bool,
}

impl Contribution {
    /// The entity-local flags this request sets on every entity it names
    /// ([`ACTED`], [`READ_ACTED`], [`OPENED`]), whether or not its rows
    /// count there.
    #[inline]
    pub fn marks(&self) -> u8 {
        let mut m = 0;
        if !self.bare_failure {
            m |= ACTED;
        }
        if !self.bare_read {
            m |= READ_ACTED;
        }
        if !self.bare_failure && !self.bare_read {
            m |= OPENED;
        }
        m
    }
}

/// Everything known about one entity.
#[derive(Debug, Clone)]
pub struct EntityState {
    pub key: Key,
    pub first_seen: i64,
    pub last_seen: i64,
    r1: Ring<6, 1>,
    r10: SparseRing<10, { c::N }>,
    r60: SparseRing<H60_SLOTS, { h::N }>,
    distinct: Distincts,
    /// The last [`RECENT_IDS`] distinct numeric ids requested (each stored
    /// as its low 32 bits plus one; 0 = empty), a ring: `recent_next` is
    /// where the next one goes, which once the ring is full is the oldest.
    /// Allocated with the first id and grown 4 → 8 → 16 as ids arrive: most
    /// entities request none or a few. (A ring, not a list shifted on every
    /// id: the shift was a `memmove` call.)
    recent_ids: Option<Box<[u32]>>,
    recent_next: u8,
    last_country: [u8; 2],
    iat_mean: f32,
    iat_var: f32,
    iat_n: u32,
    /// [`DIRTY_TICK`], [`DIRTY_SINK`] and [`DIRTY_EARLY`] bits: touched since
    /// the last tick / snapshot / early evaluation.
    pub dirty: u8,
    /// What the entity's requests have shown of their client while it is held
    /// ([`SEEN_CLIENT_CREDENTIALS`], [`SEEN_ATTESTATION`]); sits in what would be padding.
    pub flags: u8,
}

/// The key obtained a token with the client-credentials grant: its secret is
/// held by a server (RFC 6749 §2.1, a confidential client), not shipped in an app.
pub const SEEN_CLIENT_CREDENTIALS: u8 = 1;
/// Requests with the key carried an app attestation: it is an app's public
/// key, whatever grant it was also used with.
pub const SEEN_ATTESTATION: u8 = 2;
/// The entity has made a request other than a bare failed credential check
/// ([`Contribution::bare_failure`]) while held: it loaded a page, called the
/// API, signed in, or failed with a session or an attestation. Until then
/// each of its failures is "cold" ([`c::COLD_FAIL`]): people open the form
/// (which starts a session) and the genuine app carries its attestation
/// before they send a password; a credential list sent by a script does not.
/// Entity-local: never part of a [`Contribution`]'s flags.
pub const ACTED: u8 = 4;
/// The entity has made a request other than a bare read
/// ([`Contribution::bare_read`]) while held: an asset, a request with its
/// session, a sign-in, an app's call. A browser fetches the page's assets
/// and API calls with the session the first response set within a second of
/// landing; a scraper copying a catalogue through a proxy pool, paying for
/// every byte, reads the items and nothing else. Entity-local.
pub const READ_ACTED: u8 = 8;
/// The address has been counted once as a cold reader in the service-wide
/// campaign columns (`campaign_cold_readers_10m`): it counts once while held.
/// Entity-local.
pub const COUNTED_READER: u8 = 16;
/// A request that was neither a bare failed credential check nor a bare
/// read has carried this entity: for a session, the engine has seen it
/// opened. A session id is the client's word; a list of passwords or a
/// proxy pool's reads sent with a made-up one (fresh or reused) never open
/// it, where a browser's first asset or page after the landing read does.
/// Entity-local.
pub const OPENED: u8 = 32;
/// Reads this close after the entity's previous request are one look: a
/// page and the API calls its script makes right away (which carry the
/// session the page set, but one the engine has not seen opened yet).
pub const LOOK_GAP_MS: i64 = 1_000;

const IAT_ALPHA: f32 = 0.1;

/// How many recent ids a new id is compared with. A walk over ids is dense
/// in id space whatever the order its requests arrive in (parallel workers,
/// a multi-worker log, partitions read side by side); comparing with the one
/// previous id only recognised walks logged strictly in order.
pub const RECENT_IDS: usize = 16;
/// Distance in id space within which two ids count as one walk.
const ID_NEAR: u32 = 32;

/// Touched since the last tick.
pub const DIRTY_TICK: u8 = 1;
/// Touched since the last persisted snapshot.
pub const DIRTY_SINK: u8 = 2;
/// Touched since the last early evaluation (live mode).
pub const DIRTY_EARLY: u8 = 4;

impl EntityState {
    pub fn new(key: Key, ts: i64) -> Self {
        EntityState {
            key,
            first_seen: ts,
            last_seen: ts,
            r1: Ring::default(),
            r10: SparseRing::default(),
            r60: SparseRing::default(),
            distinct: Distincts::default(),
            recent_ids: None,
            recent_next: 0,
            last_country: [0, 0],
            iat_mean: 0.0,
            iat_var: 0.0,
            iat_n: 0,
            dirty: 0,
            flags: 0,
        }
    }

    /// A confidential client by what it has done while held: a
    /// client-credentials token, and never an app's attestation. For an API
    /// key this is the client itself; for an address (or a user, a session)
    /// it is where such a client runs.
    pub fn is_confidential_client(&self) -> bool {
        self.flags & (SEEN_CLIENT_CREDENTIALS | SEEN_ATTESTATION) == SEEN_CLIENT_CREDENTIALS
    }

    /// Whether `k` would be a cold look of this entity ([`c::COLD_READ`]):
    /// a bare read, nothing else done while held, and not part of the
    /// previous look (the first request, or a second or more after the
    /// previous one; a read logged before an earlier one is part of it).
    #[inline]
    pub fn cold_look(&self, k: &Contribution) -> bool {
        k.bare_read && self.flags & READ_ACTED == 0 && (self.iat_n == 0 || k.ts - self.last_seen >= LOOK_GAP_MS)
    }

    /// Distinct addresses in the last ten minutes and the last hour as of
    /// `now` (the `distinct_ips_10m` and `distinct_ips_1h` columns).
    pub fn distinct_ips(&self, now: i64) -> [f64; 2] {
        [self.distinct.count(d::IPS, M10, now), self.distinct.count(d::IPS, H1, now)]
    }

    /// One 10-minute counter ([`c`]) as of `now`.
    pub fn count_10m(&self, counter: usize, now: i64) -> u64 {
        self.r10.sum_one(counter, now.div_euclid(G10_MS))
    }

    /// Applies one request. `skip_distinct` is the entity's own attribute (an IP
    /// does not count its own address). Returns the change in heap bytes.
    #[inline]
    pub fn apply(&mut self, k: &Contribution, skip_distinct: Option<usize>, new_device: bool) -> isize {
        let before = self.heap_bytes();
        self.apply_inner(k, skip_distinct, new_device);
        self.heap_bytes() as isize - before as isize
    }

    #[inline]
    fn apply_inner(&mut self, k: &Contribution, skip_distinct: Option<usize>, new_device: bool) {
        let ts = k.ts;
        self.flags |= k.flags;
        let mut extra = [0u32; c::N];
        extra[c::COLD_FAIL] = (k.bare_failure && self.flags & ACTED == 0) as u32;
        extra[c::COLD_READ] = self.cold_look(k) as u32;
        self.flags |= k.marks();
        self.r1.add(ts.div_euclid(G1_MS), &[1]);
        if let Some(id) = k.numeric_id {
            let v = (id as u32).wrapping_add(1);
            let near = |r: u32| r != 0 && r != v && r.wrapping_sub(v).min(v.wrapping_sub(r)) <= ID_NEAR;
            let recent = self.recent_ids.get_or_insert_with(|| vec![0; 4].into_boxed_slice());
            if recent.iter().any(|&r| near(r)) {
                extra[c::SEQ] = 1;
            }
            if !recent.contains(&v) {
                let len = recent.len();
                let next = usize::from(self.recent_next) % len;
                // Full: grow (up to RECENT_IDS) rather than forget the oldest.
                if recent[next] != 0 && len < RECENT_IDS {
                    let mut bigger = vec![0; (len * 2).min(RECENT_IDS)];
                    for (i, b) in bigger[..len].iter_mut().enumerate() {
                        *b = recent[(next + i) % len];
                    }
                    *recent = bigger.into_boxed_slice();
                    self.recent_next = len as u8;
                }
                let len = recent.len();
                let at = usize::from(self.recent_next) % len;
                recent[at] = v;
                self.recent_next = ((at + 1) % len) as u8;
            }
        }
        if let Some(cc) = k.country {
            if self.last_country != [0, 0] && self.last_country != cc {
                extra[c::CSWITCH] = 1;
            }
            self.last_country = cc;
        }
        if new_device {
            extra[c::NEWDEV] = 1;
            extra[c::NEWDEV_BAD] = k.counts[c::ATT_BAD];
        }
        let mut delta = k.counts;
        for (d, e) in delta.iter_mut().zip(&extra) {
            *d += *e;
        }
        self.r10.add(ts.div_euclid(G10_MS), &delta);
        self.r60.add(ts.div_euclid(G60_MS), &h::FROM.map(|i| delta[i]));
        for (i, h) in k.distinct.iter().enumerate() {
            if let Some(h) = h
                && Some(i) != skip_distinct
            {
                self.distinct.insert(i, *h, ts);
            }
        }
        // `last_seen` is the previous newest request (the gaps are between arrivals in time order).
        if self.iat_n > 0 && ts >= self.last_seen {
            let gap = (ts - self.last_seen) as f32;
            if self.iat_n == 1 {
                self.iat_mean = gap;
            } else {
                let diff = gap - self.iat_mean;
                self.iat_mean += IAT_ALPHA * diff;
                self.iat_var = (1.0 - IAT_ALPHA) * (self.iat_var + IAT_ALPHA * diff * diff);
            }
        }
        self.iat_n = self.iat_n.saturating_add(1);
        self.last_seen = self.last_seen.max(ts);
    }

    /// Feature values as of event time `now`, in [`super::FEATURES`] order.
    pub fn features(&self, now: i64) -> [f64; super::NF] {
        self.features_masked(now, &[true; super::NF])
    }

    /// Like [`Self::features`], but the distinct counts (the costly part) not
    /// marked in `need` are left NaN (null); callers drop the other unneeded values.
    pub fn features_masked(&self, now: i64, need: &[bool; super::NF]) -> [f64; super::NF] {
        let s1 = self.r1.sums(now.div_euclid(G1_MS));
        let s10 = self.r10.sums(now.div_euclid(G10_MS));
        let s60 = self.r60.sums(now.div_euclid(G60_MS));
        let ratio = |a: u64, b: u64| {
            if b == 0 { f64::NAN } else { a as f64 / b as f64 }
        };
        // Columns 36..=44 are the distinct counts (see the test below).
        let exact =
            if need[36..=44].contains(&true) { self.distinct.exact_counts([M10, H1], now) } else { Default::default() };
        // A sketched kind's windows that are needed, both in one walk over
        // its slots when both are. (Most entities have no sketch: then
        // nothing here runs.)
        let sketched = self.distinct.any_sketched().then(|| self.sketched_counts(need, now));
        let dc = |col: usize, i: usize, w: i64| {
            debug_assert!(w == M10 || w == H1);
            let wi = usize::from(w == H1);
            if !need[col] {
                f64::NAN
            } else if let Some(c) = sketched.as_ref().and_then(|s| s[i]) {
                c[wi]
            } else {
                f64::from(exact[i][wi])
            }
        };
        let iat_cv = if self.iat_n >= 10 && self.iat_mean > 0.0 {
            (self.iat_var.sqrt() / self.iat_mean) as f64
        } else {
            f64::NAN
        };
        [
            s1[0] as f64,
            s10[c::REQ] as f64,
            s60[h::REQ] as f64,
            s10[c::LOGIN_ATT] as f64,
            s10[c::LOGIN_FAIL] as f64,
            s60[h::LOGIN_FAIL] as f64,
            ratio(s10[c::LOGIN_FAIL], s10[c::LOGIN_ATT]),
            s10[c::AUTH_OK] as f64,
            s10[c::TOKEN_FAIL] as f64,
            s60[h::TOKEN_FAIL] as f64,
            s10[c::GRANT_ATT] as f64,
            s10[c::GRANT_FAIL] as f64,
            ratio(s10[c::GRANT_FAIL], s10[c::GRANT_ATT]),
            s10[c::ATT_CHK] as f64,
            s10[c::ATT_BAD] as f64,
            ratio(s10[c::ATT_BAD], s10[c::ATT_CHK]),
            s10[c::SIG_CHK] as f64,
            s10[c::SIG_INVALID] as f64,
            s10[c::SIG_STALE] as f64,
            s10[c::SIG_REPLAYED] as f64,
            ratio(s10[c::SIG_BAD], s10[c::SIG_CHK]),
            s10[c::S4XX] as f64,
            s10[c::NOT_FOUND] as f64,
            s10[c::UNK404] as f64,
            s60[h::UNK404] as f64,
            ratio(s10[c::STATIC], s10[c::REQ]),
            ratio(s10[c::REFERER], s10[c::REQ]),
            s10[c::KIB] as f64,
            s60[h::KIB] as f64,
            s10[c::IDREQ] as f64,
            s10[c::SEQ] as f64,
            s60[h::SEQ] as f64,
            ratio(s10[c::SEQ], s10[c::IDREQ]),
            s10[c::NEWDEV] as f64,
            s60[h::NEWDEV] as f64,
            s10[c::CSWITCH] as f64,
            dc(36, d::USERS, M10),
            dc(37, d::USERS, H1),
            dc(38, d::IPS, M10),
            dc(39, d::IPS, H1),
            dc(40, d::COUNTRIES, H1),
            dc(41, d::ASNS, H1),
            dc(42, d::DEVICES, H1),
            dc(43, d::PATHS, M10),
            dc(44, d::PATHS, H1),
            iat_cv,
            ((now - self.first_seen).max(0) / 1000) as f64,
            // Where the client itself obtained a client-credentials token,
            // every authenticated request is its own, whichever order the
            // token request and the first calls were logged in; elsewhere,
            // the requests whose key was known confidential when applied.
            if self.is_confidential_client() { s10[c::AUTH_OK] } else { s10[c::CONF] } as f64,
            s10[c::COLD_FAIL] as f64,
            // The service-wide columns: filled in by the tick (`Context`).
            f64::NAN,
            f64::NAN,
            s10[c::NEWDEV_BAD] as f64,
            s60[h::NEWDEV_BAD] as f64,
            // Nothing once the entity has done anything but bare reads.
            if self.flags & READ_ACTED == 0 { s10[c::COLD_READ] as f64 } else { 0.0 },
            // The service-wide read columns: filled in by the tick (`Context`).
            f64::NAN,
            f64::NAN,
        ]
    }

    /// The sketched kinds' distinct counts `need` asks for, [10 min, 1 h]
    /// (NaN where not needed); `None` for a kind counted exactly.
    #[inline(never)]
    fn sketched_counts(&self, need: &[bool; super::NF], now: i64) -> [Option<[f64; 2]>; d::N] {
        let mut out = [None; d::N];
        for (kind, m10, h1) in [
            (d::USERS, Some(36), 37),
            (d::IPS, Some(38), 39),
            (d::COUNTRIES, None, 40),
            (d::ASNS, None, 41),
            (d::DEVICES, None, 42),
            (d::PATHS, Some(43), 44),
        ] {
            out[kind] = match (m10.is_some_and(|c| need[c]), need[h1]) {
                (true, true) => self.distinct.sketch_counts(kind, [M10, H1], now),
                (true, false) => self.distinct.sketch_counts(kind, [M10], now).map(|[a]| [a, f64::NAN]),
                (false, true) => self.distinct.sketch_counts(kind, [H1], now).map(|[b]| [f64::NAN, b]),
                (false, false) => None,
            };
        }
        out
    }

    /// Bytes this entity holds, inline and on the heap (excluding the map entry).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.key.heap_bytes() + self.heap_bytes()
    }

    fn heap_bytes(&self) -> usize {
        self.r10.heap_bytes()
            + self.r60.heap_bytes()
            + self.distinct.heap_bytes()
            + self.recent_ids.as_ref().map_or(0, |r| r.len() * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::super::FEATURES;
    use super::{c, h};

    #[test]
    fn hour_ring_indices_match_their_counters() {
        let pairs = [
            (h::REQ, c::REQ),
            (h::LOGIN_FAIL, c::LOGIN_FAIL),
            (h::TOKEN_FAIL, c::TOKEN_FAIL),
            (h::UNK404, c::UNK404),
            (h::KIB, c::KIB),
            (h::SEQ, c::SEQ),
            (h::NEWDEV, c::NEWDEV),
            (h::NEWDEV_BAD, c::NEWDEV_BAD),
        ];
        for (hi, ci) in pairs {
            assert_eq!(h::FROM[hi], ci);
        }
    }

    /// The recent ids are the last [`super::RECENT_IDS`] distinct ones, the
    /// oldest forgotten first, however the ring has grown on the way.
    #[test]
    fn recent_ids_forget_the_oldest_first() {
        use super::{Contribution, EntityState, RECENT_IDS};
        let mut st = EntityState::new("1.2.3.4".into(), 0);
        let seq = |st: &mut EntityState, id: u64| {
            let k = Contribution { ts: 1_000, numeric_id: Some(id), ..Default::default() };
            st.apply(&k, None, false);
            st.features(1_000)[30]
        };
        // Ids 1000 apart: none is near another.
        for i in 0..RECENT_IDS as u64 {
            assert_eq!(seq(&mut st, 10_000 + i * 1000), 0.0, "id {i}");
        }
        // A repeat is not new: nothing is forgotten for it.
        assert_eq!(seq(&mut st, 10_000), 0.0);
        // A seventeenth distinct id forgets the first (10,000) ...
        assert_eq!(seq(&mut st, 500_000), 0.0);
        assert_eq!(seq(&mut st, 10_010), 0.0, "the first id was forgotten");
        // ... and the next one the second (11,000), not the third.
        assert_eq!(seq(&mut st, 12_010), 1.0, "near the third id, still remembered");
        assert_eq!(FEATURES[30].0, "sequential_ids_10m");
    }

    #[test]
    fn masked_columns_are_the_distinct_counts() {
        // `features_masked` names distinct-count columns by position; keep them in step.
        let names: Vec<&str> = (36..=44).map(|i| FEATURES[i].0).collect();
        assert_eq!(
            names,
            [
                "distinct_users_10m",
                "distinct_users_1h",
                "distinct_ips_10m",
                "distinct_ips_1h",
                "distinct_countries_1h",
                "distinct_asns_1h",
                "distinct_devices_1h",
                "distinct_paths_10m",
                "distinct_paths_1h"
            ]
        );
    }
}
