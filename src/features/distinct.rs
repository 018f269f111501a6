//! Distinct counts over sliding windows in bounded memory.
//!
//! Exact while small (a list of hash → last-seen time, which answers any window
//! exactly), then a ring of tiny HyperLogLog sketches, one per time slot, whose
//! register-wise max over the slots in a window estimates that window's
//! distinct count. Sketches of two partial aggregates merge the same way, so
//! per-entity state from several instances can be combined.

/// Entries kept exactly before switching to sketches.
pub const EXACT_MAX: usize = 32;
const REGISTERS: usize = 64;
const SLOTS: usize = 12;
/// Sketch slot length: 12 × 5 min covers the longest (1 h) window.
pub const SLOT_MS: i64 = 300_000;

#[derive(Debug, Clone)]
pub struct SketchRing {
    head: i64,
    slots: [[u8; REGISTERS]; SLOTS],
}

/// A sliding-window distinct counter.
#[derive(Debug, Clone)]
pub enum SlidingDistinct {
    Exact(Vec<(u64, i64)>),
    Sketch(Box<SketchRing>),
}

impl Default for SlidingDistinct {
    fn default() -> Self {
        SlidingDistinct::Exact(Vec::new())
    }
}

/// Longest window any caller asks about; older exact entries are pruned.
const HORIZON_MS: i64 = 3_600_000;

impl SketchRing {
    fn new() -> Self {
        SketchRing { head: i64::MIN, slots: [[0; REGISTERS]; SLOTS] }
    }

    fn insert(&mut self, h: u64, ts: i64) {
        let slot = ts.div_euclid(SLOT_MS);
        if self.head == i64::MIN {
            self.head = slot;
        } else if slot > self.head {
            let gap = (slot - self.head).min(SLOTS as i64);
            for i in 1..=gap {
                self.slots[(self.head + i).rem_euclid(SLOTS as i64) as usize] = [0; REGISTERS];
            }
            self.head = slot;
        } else if slot <= self.head - SLOTS as i64 {
            return;
        }
        let idx = (h >> 58) as usize;
        let rank = ((h << 6) | (1 << 5)).leading_zeros() as u8 + 1;
        let reg = &mut self.slots[slot.rem_euclid(SLOTS as i64) as usize][idx];
        if rank > *reg {
            *reg = rank;
        }
    }

    fn estimate(&self, window_ms: i64, now: i64) -> f64 {
        let now_slot = now.div_euclid(SLOT_MS);
        // Slots whose span overlaps the window; the estimate may include up to one
        // extra slot at the old edge.
        let first = (now - window_ms).div_euclid(SLOT_MS);
        let mut merged = [0u8; REGISTERS];
        for back in 0..SLOTS as i64 {
            let s = self.head - back;
            if s < first || s <= now_slot - SLOTS as i64 {
                break;
            }
            if s > now_slot {
                continue;
            }
            for (m, r) in merged.iter_mut().zip(&self.slots[s.rem_euclid(SLOTS as i64) as usize]) {
                *m = (*m).max(*r);
            }
        }
        hll_estimate(&merged)
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

impl SlidingDistinct {
    /// Records value hash `h` seen at `ts`; returns the change in heap bytes
    /// (for the state budget's running total).
    #[inline]
    pub fn insert(&mut self, h: u64, ts: i64) -> isize {
        let before = self.heap_bytes();
        self.insert_inner(h, ts);
        self.heap_bytes() as isize - before as isize
    }

    #[inline]
    fn insert_inner(&mut self, h: u64, ts: i64) {
        match self {
            SlidingDistinct::Exact(v) => {
                if let Some(e) = v.iter_mut().find(|e| e.0 == h) {
                    e.1 = e.1.max(ts);
                    return;
                }
                if v.len() >= EXACT_MAX {
                    let cutoff = ts - HORIZON_MS;
                    v.retain(|e| e.1 > cutoff);
                }
                if v.len() < EXACT_MAX {
                    v.push((h, ts));
                    return;
                }
                let mut sk = Box::new(SketchRing::new());
                let mut entries = std::mem::take(v);
                entries.sort_by_key(|e| e.1);
                for (eh, ets) in entries {
                    sk.insert(eh, ets);
                }
                sk.insert(h, ts);
                *self = SlidingDistinct::Sketch(sk);
            }
            SlidingDistinct::Sketch(sk) => sk.insert(h, ts),
        }
    }

    /// Distinct values seen in `(now - window_ms, now]`.
    pub fn count(&self, window_ms: i64, now: i64) -> f64 {
        match self {
            SlidingDistinct::Exact(v) => v.iter().filter(|e| e.1 > now - window_ms && e.1 <= now).count() as f64,
            SlidingDistinct::Sketch(sk) => sk.estimate(window_ms, now).round(),
        }
    }

    /// Heap bytes held, for the memory accounting in `docs/PERFORMANCE.md`.
    pub fn heap_bytes(&self) -> usize {
        match self {
            SlidingDistinct::Exact(v) => v.capacity() * 16,
            SlidingDistinct::Sketch(_) => std::mem::size_of::<SketchRing>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes())
    }

    #[test]
    fn exact_window() {
        let mut d = SlidingDistinct::default();
        d.insert(h(1), 0);
        d.insert(h(2), 500_000);
        d.insert(h(1), 700_000);
        assert_eq!(d.count(600_000, 700_000), 2.0);
        assert_eq!(d.count(100_000, 700_000), 1.0);
        assert!(matches!(d, SlidingDistinct::Exact(_)));
    }

    #[test]
    fn sketch_is_close_and_bounded() {
        let mut d = SlidingDistinct::default();
        for i in 0..5000u64 {
            d.insert(h(i), (i as i64) * 100);
        }
        assert!(matches!(d, SlidingDistinct::Sketch(_)));
        let est = d.count(3_600_000, 500_000);
        assert!((est - 5000.0).abs() / 5000.0 < 0.35, "estimate {est}");
        // A new window forgets the old values.
        let mut later = d.clone();
        for i in 0..10u64 {
            later.insert(h(100_000 + i), 10_000_000);
        }
        let est = later.count(600_000, 10_000_000);
        assert!(est <= 14.0, "estimate {est}");
    }
}
