//! Distinct counts over sliding windows in bounded memory.
//!
//! Exact while small (a list of hash → last-seen time, which answers any window
//! exactly), then a ring of tiny HyperLogLog sketches, one per time slot, whose
//! register-wise max over the slots in a window estimates that window's
//! distinct count. Sketches of two partial aggregates merge the same way, so
//! per-entity state from several instances can be combined.
//!
//! Registers are 4 bits: a rank above 15 needs about 64 × 2¹⁵ ≈ 2 M distinct
//! values in one 5-minute slot of one entity, far past any threshold a rule
//! sets, and half the bytes matter when every busy entity holds a sketch of
//! the paths it requested.

/// Entries kept exactly before switching to sketches.
pub const EXACT_MAX: usize = 32;
const REGISTERS: usize = 64;
const SLOTS: usize = 12;
/// Sketch slot length: 12 × 5 min covers the longest (1 h) window.
pub const SLOT_MS: i64 = 300_000;

#[derive(Debug, Clone)]
pub struct SketchRing {
    head: i64,
    /// Two 4-bit registers per byte.
    slots: [[u8; REGISTERS / 2]; SLOTS],
}

/// Largest register value a 4-bit register holds.
const MAX_RANK: u8 = 15;

/// Longest window any caller asks about; older exact entries are pruned.
const HORIZON_MS: i64 = 3_600_000;

impl SketchRing {
    fn new() -> Self {
        SketchRing { head: i64::MIN, slots: [[0; REGISTERS / 2]; SLOTS] }
    }

    fn insert(&mut self, h: u64, ts: i64) {
        let slot = ts.div_euclid(SLOT_MS);
        if self.head == i64::MIN {
            self.head = slot;
        } else if slot > self.head {
            let gap = (slot - self.head).min(SLOTS as i64);
            for i in 1..=gap {
                self.slots[(self.head + i).rem_euclid(SLOTS as i64) as usize] = [0; REGISTERS / 2];
            }
            self.head = slot;
        } else if slot <= self.head - SLOTS as i64 {
            return;
        }
        let idx = (h >> 58) as usize;
        let rank = (((h << 6) | (1 << 5)).leading_zeros() as u8 + 1).min(MAX_RANK);
        let byte = &mut self.slots[slot.rem_euclid(SLOTS as i64) as usize][idx / 2];
        let shift = (idx % 2) * 4;
        if rank > (*byte >> shift) & 0xf {
            *byte = (*byte & !(0xf << shift)) | (rank << shift);
        }
    }

    /// Estimates for several windows, shortest first, in one walk back over
    /// the slots: the registers merged for a shorter window are where the
    /// next one's merge starts (a feature row asks for 10 minutes and 1 hour).
    fn estimates<const W: usize>(&self, windows_ms: [i64; W], now: i64) -> [f64; W] {
        debug_assert!(windows_ms.is_sorted());
        let now_slot = now.div_euclid(SLOT_MS);
        // Slots whose span overlaps a window; an estimate may include up to
        // one extra slot at the old edge.
        let firsts = windows_ms.map(|w| (now - w).div_euclid(SLOT_MS));
        let mut out = [0.0; W];
        let mut done = 0;
        let mut merged = [0u8; REGISTERS];
        for back in 0..SLOTS as i64 {
            let s = self.head - back;
            if s <= now_slot - SLOTS as i64 {
                break;
            }
            while done < W && s < firsts[done] {
                out[done] = hll_estimate(&merged);
                done += 1;
            }
            if done == W {
                return out;
            }
            if s > now_slot {
                continue;
            }
            for (m, r) in merged.chunks_exact_mut(2).zip(&self.slots[s.rem_euclid(SLOTS as i64) as usize]) {
                m[0] = m[0].max(r & 0xf);
                m[1] = m[1].max(r >> 4);
            }
        }
        let last = hll_estimate(&merged);
        for o in &mut out[done..] {
            *o = last;
        }
        out
    }
}

/// `2^-r` for every register value a 64-bit hash can produce.
const INV_POW2: [f64; 66] = {
    let mut t = [0.0; 66];
    let mut i = 0;
    let mut v = 1.0;
    while i < 66 {
        t[i] = v;
        v /= 2.0;
        i += 1;
    }
    t
};

fn hll_estimate(regs: &[u8; REGISTERS]) -> f64 {
    let m = REGISTERS as f64;
    let mut sum = 0.0;
    let mut zeros = 0;
    for &r in regs {
        sum += INV_POW2[(r as usize).min(65)];
        if r == 0 {
            zeros += 1;
        }
    }
    let raw = 0.709 * m * m / sum;
    if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw }
}

/// Kinds of value counted distinctly per entity (users, addresses, ...).
pub const KINDS: usize = 6;

/// One exactly-kept value: 32 bits of its hash and when it was last seen
/// (epoch seconds). Eight bytes, where a full hash and a millisecond time took
/// sixteen: entities hold many of these, and at ≤ [`EXACT_MAX`] values of a
/// kind 32 bits of hash collide about once in ten million entities.
#[derive(Debug, Clone, Copy)]
struct Seen {
    h: u32,
    t: u32,
}

fn secs(ts_ms: i64) -> u32 {
    ts_ms.div_euclid(1000).clamp(0, u32::MAX as i64) as u32
}

/// Spreads a stored 32-bit hash over 64 bits for a sketch. Values moved
/// from the exact list and values inserted later go through the same
/// function, so a value is never counted twice for having been both.
fn widen(h: u32) -> u64 {
    let mut z = u64::from(h).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Sliding-window distinct counts of every kind for one entity.
///
/// The exact values of all kinds share one list, grouped by kind (`lens`
/// says how many of each), so an entity that has seen one user, one address
/// and a few paths pays one small allocation, not six. A kind that exceeds
/// [`EXACT_MAX`] values within the horizon moves to its own sketch ring.
#[derive(Debug, Clone, Default)]
pub struct Distincts {
    exact: Vec<Seen>,
    lens: [u8; KINDS],
    /// Bit `k` set: kind `k` is counted by a sketch.
    sketched: u8,
    /// The sketches, in kind order of the `sketched` bits (rebuilt when one
    /// is added, which happens at most once per kind).
    sketches: Box<[SketchRing]>,
}

impl Distincts {
    fn range(&self, kind: usize) -> std::ops::Range<usize> {
        let start: usize = self.lens[..kind].iter().map(|&n| n as usize).sum();
        start..start + self.lens[kind] as usize
    }

    fn sketch_index(&self, kind: usize) -> usize {
        (self.sketched & ((1u8 << kind) - 1)).count_ones() as usize
    }

    /// Records value hash `h` of `kind` seen at `ts` (ms).
    #[inline]
    pub fn insert(&mut self, kind: usize, h: u64, ts: i64) {
        let h = (h >> 32) as u32;
        if self.sketched & (1 << kind) != 0 {
            let i = self.sketch_index(kind);
            self.sketches[i].insert(widen(h), ts);
            return;
        }
        let t = secs(ts);
        let r = self.range(kind);
        if let Some(e) = self.exact[r.clone()].iter_mut().find(|e| e.h == h) {
            e.t = e.t.max(t);
            return;
        }
        let mut end = r.end;
        if r.len() >= EXACT_MAX {
            // Values older than the longest window count for nothing: drop them first.
            let cutoff = secs(ts - HORIZON_MS);
            let mut keep = r.start;
            for i in r.clone() {
                if self.exact[i].t > cutoff {
                    self.exact[keep] = self.exact[i];
                    keep += 1;
                }
            }
            self.exact.drain(keep..r.end);
            self.lens[kind] = (keep - r.start) as u8;
            end = keep;
        }
        if end - r.start < EXACT_MAX {
            if self.exact.len() == self.exact.capacity() {
                // Grow by a quarter, not double: most entities stop at a few values.
                self.exact.reserve_exact((self.exact.len() / 4).max(4));
            }
            self.exact.insert(end, Seen { h, t });
            self.lens[kind] += 1;
            return;
        }
        let mut entries: Vec<Seen> = self.exact.drain(r.start..end).collect();
        self.lens[kind] = 0;
        entries.sort_by_key(|e| e.t);
        let mut sk = SketchRing::new();
        for e in entries {
            sk.insert(widen(e.h), i64::from(e.t) * 1000);
        }
        sk.insert(widen(h), ts);
        let i = self.sketch_index(kind);
        let mut all = std::mem::take(&mut self.sketches).into_vec();
        all.insert(i, sk);
        self.sketches = all.into_boxed_slice();
        self.sketched |= 1 << kind;
    }

    /// Distinct values of `kind` seen in `(now - window_ms, now]`.
    pub fn count(&self, kind: usize, window_ms: i64, now: i64) -> f64 {
        if self.sketched & (1 << kind) != 0 {
            return self.sketches[self.sketch_index(kind)].estimates([window_ms], now)[0].round();
        }
        let (lo, hi) = ((now - window_ms).div_euclid(1000), now.div_euclid(1000));
        self.exact[self.range(kind)].iter().filter(|e| i64::from(e.t) > lo && i64::from(e.t) <= hi).count() as f64
    }

    /// Exact distinct counts of every kind over the last `windows` (ms) as of
    /// `now`, in one pass over the exact list; a kind counted by a sketch
    /// reads 0 here (ask [`Self::count`], which knows). A feature row reads
    /// nine counts of six kinds: one pass instead of one range sum and one
    /// scan per count.
    pub fn exact_counts<const W: usize>(&self, windows: [i64; W], now: i64) -> [[u32; W]; KINDS] {
        let hi = now.div_euclid(1000);
        let lo = windows.map(|w| (now - w).div_euclid(1000));
        let mut out = [[0u32; W]; KINDS];
        let mut at = 0;
        for (kind, &n) in self.lens.iter().enumerate() {
            for e in &self.exact[at..at + n as usize] {
                let t = i64::from(e.t);
                if t <= hi {
                    for (c, &l) in out[kind].iter_mut().zip(&lo) {
                        *c += u32::from(t > l);
                    }
                }
            }
            at += n as usize;
        }
        out
    }

    /// A sketched kind's counts over several windows (shortest first), as
    /// [`Self::count`] gives them one by one; `None` when `kind` is exact.
    pub fn sketch_counts<const W: usize>(&self, kind: usize, windows_ms: [i64; W], now: i64) -> Option<[f64; W]> {
        self.is_sketched(kind)
            .then(|| self.sketches[self.sketch_index(kind)].estimates(windows_ms, now).map(f64::round))
    }

    /// Whether any kind is counted by a sketch (most entities: none).
    #[inline]
    pub fn any_sketched(&self) -> bool {
        self.sketched != 0
    }

    /// Whether `kind` is counted by a sketch rather than exactly.
    pub fn is_sketched(&self, kind: usize) -> bool {
        self.sketched & (1 << kind) != 0
    }

    /// Heap bytes held, for the state budget.
    pub fn heap_bytes(&self) -> usize {
        self.exact.capacity() * std::mem::size_of::<Seen>() + self.sketches.len() * std::mem::size_of::<SketchRing>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes())
    }

    /// The one-pass counts are the per-kind counts, for every kind still
    /// counted exactly, at window edges too.
    #[test]
    fn exact_counts_match_count() {
        let mut x: u64 = 7;
        for round in 0..200 {
            let mut d = Distincts::default();
            let n = round % 90;
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let kind = (x % KINDS as u64) as usize;
                let ts = 1_000_000 + ((x >> 8) % 4_000) as i64 * 1000;
                d.insert(kind, h(x >> 20 & 63), ts);
            }
            for now in [1_000_000, 1_600_000, 3_000_000, 4_600_000, 5_000_000, 9_000_000] {
                let c = d.exact_counts([600_000, 3_600_000], now);
                for (kind, [m10, h1]) in c.into_iter().enumerate() {
                    if d.is_sketched(kind) {
                        continue;
                    }
                    assert_eq!(f64::from(m10), d.count(kind, 600_000, now), "round {round} kind {kind} at {now}");
                    assert_eq!(f64::from(h1), d.count(kind, 3_600_000, now), "round {round} kind {kind} at {now}");
                }
            }
        }
    }

    #[test]
    fn exact_window() {
        let mut d = Distincts::default();
        d.insert(1, h(1), 0);
        d.insert(1, h(2), 500_000);
        d.insert(1, h(1), 700_000);
        d.insert(3, h(1), 700_000);
        assert_eq!(d.count(1, 600_000, 700_000), 2.0);
        assert_eq!(d.count(1, 100_000, 700_000), 1.0);
        assert_eq!(d.count(3, 600_000, 700_000), 1.0);
        assert_eq!(d.count(0, 600_000, 700_000), 0.0);
        assert_eq!(d.sketched, 0);
    }

    #[test]
    fn kinds_do_not_mix_and_old_values_make_room() {
        let mut d = Distincts::default();
        // 32 values an hour ago, 32 now: the old ones are dropped, no sketch.
        for i in 0..32u64 {
            d.insert(2, h(i), 0);
            d.insert(4, h(i), 0);
        }
        for i in 100..132u64 {
            d.insert(2, h(i), 3_700_000);
        }
        assert_eq!(d.sketched, 0);
        assert_eq!(d.count(2, 3_600_000, 3_700_000), 32.0);
        assert_eq!(d.count(4, 3_600_000, 3_000_000), 32.0);
    }

    #[test]
    fn sketch_counts_are_the_counts_one_window_at_a_time() {
        let mut d = Distincts::default();
        // 4,000 values over 100 minutes, then asked at times that put the
        // window edges inside, between and beyond the sketch's slots.
        for i in 0..4000u64 {
            d.insert(3, h(i), (i as i64) * 1_500);
        }
        assert!(d.is_sketched(3));
        assert_eq!(d.sketch_counts(0, [600_000, 3_600_000], 1_000), None);
        for now in [0, 299_999, 300_000, 3_000_000, 5_999_999, 6_000_000, 6_400_000, 9_000_000, 99_000_000] {
            let both = d.sketch_counts(3, [600_000, 3_600_000], now).unwrap();
            assert_eq!(both, [d.count(3, 600_000, now), d.count(3, 3_600_000, now)], "now = {now}");
        }
    }

    #[test]
    fn sketch_is_close_and_bounded() {
        let mut d = Distincts::default();
        for i in 0..5000u64 {
            d.insert(5, h(i), (i as i64) * 100);
            d.insert(0, h(i % 3), (i as i64) * 100);
        }
        assert_eq!(d.sketched, 1 << 5);
        assert_eq!(d.count(0, 3_600_000, 500_000), 3.0);
        let est = d.count(5, 3_600_000, 500_000);
        assert!((est - 5000.0).abs() / 5000.0 < 0.35, "estimate {est}");
        // A new window forgets the old values.
        let mut later = d.clone();
        for i in 0..10u64 {
            later.insert(5, h(100_000 + i), 10_000_000);
        }
        let est = later.count(5, 600_000, 10_000_000);
        assert!(est <= 14.0, "estimate {est}");
    }

    #[test]
    fn moving_to_a_sketch_keeps_the_count() {
        // The values seen exactly are carried into the sketch; seeing them
        // again afterwards adds nothing.
        let mut d = Distincts::default();
        for i in 0..40u64 {
            d.insert(1, h(i), 1_000);
        }
        let before = d.count(1, 600_000, 2_000);
        for i in 0..40u64 {
            d.insert(1, h(i), 2_000);
        }
        assert_eq!(d.count(1, 600_000, 2_000), before);
        assert!((before - 40.0).abs() <= 12.0, "{before}");
    }
}
