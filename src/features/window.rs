//! Sliding event-time windows as rings of time slots.
//!
//! A window of `K` slots of `G` ms covers the last `K·G` ms up to the slot that
//! holds "now", so its value is exact to within one slot at the old edge. This
//! costs a fixed `K × N` counters per entity and constant time per update,
//! whatever the event rate, which is what keeps memory bounded by the number
//! of active entities rather than by traffic.

/// `K` slots of `N` counters each.
#[derive(Debug, Clone)]
pub struct Ring<const K: usize, const N: usize> {
    /// Absolute slot number (`ts / granularity`) of the newest slot; `i64::MIN` when empty.
    head: i64,
    slots: [[u32; N]; K],
    /// Running sum of all slots, so that reading a window that ends at the
    /// newest slot (the usual case: entities are read right after an update)
    /// costs `N`, not `K × N`. Counters wrap rather than saturate so that the
    /// running sum stays exact when slots are evicted.
    total: [u32; N],
}

impl<const K: usize, const N: usize> Default for Ring<K, N> {
    fn default() -> Self {
        Ring { head: i64::MIN, slots: [[0; N]; K], total: [0; N] }
    }
}

impl<const K: usize, const N: usize> Ring<K, N> {
    /// Returns the counters of absolute slot `slot`, rotating the ring forward if
    /// needed; `None` when the slot has already left the window (a very late event).
    #[inline]
    fn slot_index(&mut self, slot: i64) -> Option<usize> {
        if self.head == i64::MIN {
            self.head = slot;
        } else if slot > self.head {
            let gap = (slot - self.head).min(K as i64);
            for i in 1..=gap {
                let idx = (self.head + i).rem_euclid(K as i64) as usize;
                for (t, v) in self.total.iter_mut().zip(&self.slots[idx]) {
                    *t = t.wrapping_sub(*v);
                }
                self.slots[idx] = [0; N];
            }
            self.head = slot;
        } else if slot <= self.head - K as i64 {
            return None;
        }
        Some(slot.rem_euclid(K as i64) as usize)
    }

    /// Adds `delta` to the counters of absolute slot `slot`, rotating the ring
    /// forward if needed; false when the slot has already left the window.
    #[inline]
    pub fn add(&mut self, slot: i64, delta: &[u32; N]) -> bool {
        let Some(idx) = self.slot_index(slot) else { return false };
        let row = &mut self.slots[idx];
        for i in 0..N {
            row[i] = row[i].wrapping_add(delta[i]);
            self.total[i] = self.total[i].wrapping_add(delta[i]);
        }
        true
    }

    /// Sums every counter over the slots still inside the window that ends at `now_slot`.
    pub fn sums(&self, now_slot: i64) -> [u64; N] {
        let mut out = [0u64; N];
        if self.head == i64::MIN {
            return out;
        }
        if now_slot == self.head {
            for (o, t) in out.iter_mut().zip(&self.total) {
                *o = *t as u64;
            }
            return out;
        }
        for back in 0..K as i64 {
            let s = self.head - back;
            if s <= now_slot - K as i64 {
                break;
            }
            if s > now_slot {
                continue;
            }
            let row = &self.slots[s.rem_euclid(K as i64) as usize];
            for (o, v) in out.iter_mut().zip(row) {
                *o += *v as u64;
            }
        }
        out
    }

    /// Newest slot number, for idle checks.
    pub fn head(&self) -> i64 {
        self.head
    }
}

/// A counter width a [`SparseRing`] can hold its slots in.
trait Width: Copy + Default {
    /// `self + d` (wrapped) and whether it fits. Branch-free, so that adding
    /// a whole row of counters compiles to vector instructions.
    fn add(self, d: u32) -> (Self, bool);
    fn get(self) -> u64;
}

/// `row + delta`, or `None` when a counter would not fit.
#[inline]
fn add_row<T: Width, const N: usize>(row: &[T; N], delta: &[u32; N]) -> Option<[T; N]> {
    let mut out = *row;
    let mut fits = true;
    for ((o, r), d) in out.iter_mut().zip(row).zip(delta) {
        let (v, ok) = r.add(*d);
        *o = v;
        fits &= ok;
    }
    fits.then_some(out)
}

impl Width for u16 {
    #[inline]
    fn add(self, d: u32) -> (u16, bool) {
        let sum = u32::from(self) + d.min(u16::MAX as u32 + 1);
        (sum as u16, sum <= u16::MAX as u32)
    }
    #[inline]
    fn get(self) -> u64 {
        u64::from(self)
    }
}

impl Width for u32 {
    #[inline]
    fn add(self, d: u32) -> (u32, bool) {
        (self.wrapping_add(d), true)
    }
    #[inline]
    fn get(self) -> u64 {
        u64::from(self)
    }
}

/// `K` slots of `N` counters like [`Ring`], but holding only the slots that
/// saw an event, in 16-bit counters until one would overflow (then in 32).
///
/// Most entities are short-lived (a session, a device, a casual user's
/// address) and touch one or two slots of a window; a dense ring would give
/// each the full `K × N` counters. This holds 4 + 2·`N` bytes per slot used, so
/// state per entity follows its activity, and a heavy entity costs at most
/// about what a dense ring of 16-bit counters would.
///
/// The newest slot sits inline, the older ones in a list. Nearly every update
/// goes to the newest slot; held in a list of its own it was a separate heap
/// block, a cache miss on every update of an entity not touched for a while,
/// and an allocation for every new entity (a flood is nothing but new
/// entities). Inline it shares the state's memory, and an entity seen in one
/// slot only (most of them) allocates nothing.
#[derive(Debug, Clone)]
pub struct SparseRing<const K: usize, const N: usize> {
    /// Absolute slot number of `head`, valid when `has_head`.
    head_slot: u32,
    /// False until the first update, and once the ring is wide (every slot
    /// then lives in `older`).
    has_head: bool,
    head: [u16; N],
    /// Slots older than `head`, oldest first (narrow); or every slot (wide).
    older: Slots<N>,
}

#[derive(Debug, Clone)]
enum Slots<const N: usize> {
    Narrow(Vec<(u32, [u16; N])>),
    Wide(Vec<(u32, [u32; N])>),
}

impl<const K: usize, const N: usize> Default for SparseRing<K, N> {
    fn default() -> Self {
        SparseRing { head_slot: 0, has_head: false, head: [0; N], older: Slots::Narrow(Vec::new()) }
    }
}

/// Why a slot could not take an update.
enum Refused {
    /// The slot has left the window.
    TooOld,
    /// A 16-bit counter would overflow.
    Overflow,
}

/// Slot numbers are stored in 32 bits (minutes since 1970 fit until the year
/// 10,000); times outside that range are clamped, never wrapped.
fn clamp_slot(slot: i64) -> u32 {
    slot.clamp(0, u32::MAX as i64) as u32
}

/// Adds `delta` to slot `slot` of the sorted list `v`, inserting the slot
/// where it belongs when it is not there. The caller has checked that `slot`
/// is inside the window.
#[inline]
fn add_listed<T: Width, const N: usize>(
    v: &mut Vec<(u32, [T; N])>,
    slot: u32,
    delta: &[u32; N],
) -> Result<(), Refused> {
    let pos = v.iter().rposition(|e| e.0 <= slot).map_or(0, |p| p + 1);
    if pos > 0 && v[pos - 1].0 == slot {
        let row = &mut v[pos - 1].1;
        *row = add_row(row, delta).ok_or(Refused::Overflow)?;
    } else {
        let row = add_row(&[T::default(); N], delta).ok_or(Refused::Overflow)?;
        if v.len() == v.capacity() {
            v.reserve_exact(1);
        }
        v.insert(pos, (slot, row));
    }
    Ok(())
}

/// Drops the slots of `v` that have left a window of `K` slots ending at `newest`.
fn expire<T, const K: usize>(v: &mut Vec<(u32, T)>, newest: u32) {
    let expired = v.iter().take_while(|e| i64::from(e.0) <= i64::from(newest) - K as i64).count();
    v.drain(..expired);
}

/// Sums rows of slots (newest first) inside the window that ends at `now_slot`.
#[inline]
fn sums_of<'a, T: Width + 'a, const K: usize, const N: usize>(
    newest_first: impl Iterator<Item = (u32, &'a [T; N])>,
    now_slot: i64,
) -> [u64; N] {
    let mut out = [0u64; N];
    for (s, row) in newest_first {
        let s = i64::from(s);
        if s <= now_slot - K as i64 {
            break;
        }
        if s > now_slot {
            continue;
        }
        for (o, c) in out.iter_mut().zip(row) {
            *o += c.get();
        }
    }
    out
}

impl<const K: usize, const N: usize> SparseRing<K, N> {
    /// Adds `delta` to the counters of absolute slot `slot`; false when the
    /// slot has already left the window (a very late event).
    #[inline]
    pub fn add(&mut self, slot: i64, delta: &[u32; N]) -> bool {
        let slot = clamp_slot(slot);
        match self.add_narrow(slot, delta) {
            Ok(()) => true,
            Err(Refused::TooOld) => false,
            Err(Refused::Overflow) => {
                self.widen();
                self.add_wide(slot, delta)
            }
        }
    }

    #[inline]
    fn add_narrow(&mut self, slot: u32, delta: &[u32; N]) -> Result<(), Refused> {
        let Slots::Narrow(older) = &mut self.older else {
            return if self.add_wide(slot, delta) { Ok(()) } else { Err(Refused::TooOld) };
        };
        if !self.has_head || slot > self.head_slot {
            let row = add_row(&[0u16; N], delta).ok_or(Refused::Overflow)?;
            if self.has_head {
                if i64::from(self.head_slot) > i64::from(slot) - K as i64 {
                    if older.len() == older.capacity() {
                        older.reserve_exact(1);
                    }
                    older.push((self.head_slot, self.head));
                }
                expire::<_, K>(older, slot);
            }
            self.head_slot = slot;
            self.head = row;
            self.has_head = true;
            Ok(())
        } else if slot == self.head_slot {
            self.head = add_row(&self.head, delta).ok_or(Refused::Overflow)?;
            Ok(())
        } else if i64::from(slot) <= i64::from(self.head_slot) - K as i64 {
            Err(Refused::TooOld)
        } else {
            // A reordered event: a few slots back.
            add_listed(older, slot, delta)
        }
    }

    /// Adds to a wide ring (every slot in the list); false when too old.
    fn add_wide(&mut self, slot: u32, delta: &[u32; N]) -> bool {
        let Slots::Wide(v) = &mut self.older else { return false };
        match v.last().map(|e| e.0) {
            Some(newest) if i64::from(slot) <= i64::from(newest) - K as i64 => false,
            Some(newest) if slot <= newest => add_listed(v, slot, delta).is_ok(),
            _ => {
                expire::<_, K>(v, slot);
                add_listed(v, slot, delta).is_ok()
            }
        }
    }

    /// Moves every slot, the inline head included, into a list of 32-bit counters.
    fn widen(&mut self) {
        if let Slots::Narrow(v) = &self.older {
            let mut wide: Vec<(u32, [u32; N])> = Vec::with_capacity(v.len() + 1);
            wide.extend(v.iter().map(|(s, row)| (*s, row.map(u32::from))));
            if self.has_head {
                wide.push((self.head_slot, self.head.map(u32::from)));
            }
            self.older = Slots::Wide(wide);
            self.has_head = false;
        }
    }

    /// Sums every counter over the slots inside the window that ends at `now_slot`.
    #[inline]
    pub fn sums(&self, now_slot: i64) -> [u64; N] {
        match &self.older {
            Slots::Narrow(v) => {
                let head = self.has_head.then_some((self.head_slot, &self.head));
                sums_of::<u16, K, N>(head.into_iter().chain(v.iter().rev().map(|(s, r)| (*s, r))), now_slot)
            }
            Slots::Wide(v) => sums_of::<u32, K, N>(v.iter().rev().map(|(s, r)| (*s, r)), now_slot),
        }
    }

    /// One counter of [`Self::sums`], without summing the others.
    #[inline]
    pub fn sum_one(&self, counter: usize, now_slot: i64) -> u64 {
        let inside = |s: u32| i64::from(s) > now_slot - K as i64 && i64::from(s) <= now_slot;
        match &self.older {
            Slots::Narrow(v) => {
                let head = if self.has_head && inside(self.head_slot) { u64::from(self.head[counter]) } else { 0 };
                head + v.iter().filter(|(s, _)| inside(*s)).map(|(_, r)| u64::from(r[counter])).sum::<u64>()
            }
            Slots::Wide(v) => v.iter().filter(|(s, _)| inside(*s)).map(|(_, r)| u64::from(r[counter])).sum(),
        }
    }

    /// Heap bytes held by the list of older slots.
    pub fn heap_bytes(&self) -> usize {
        match &self.older {
            Slots::Narrow(v) => v.capacity() * std::mem::size_of::<(u32, [u16; N])>(),
            Slots::Wide(v) => v.capacity() * std::mem::size_of::<(u32, [u32; N])>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides_and_expires() {
        let mut r: Ring<3, 1> = Ring::default();
        assert!(r.add(10, &[1]));
        assert!(r.add(11, &[2]));
        assert!(r.add(12, &[4]));
        assert_eq!(r.sums(12)[0], 7);
        assert_eq!(r.sums(13)[0], 6, "slot 10 left the window");
        assert_eq!(r.sums(20)[0], 0);
        assert!(r.add(11, &[8]), "late but inside the window");
        assert_eq!(r.sums(12)[0], 15);
        assert!(!r.add(9, &[1]), "too late");
        assert!(r.add(13, &[16]));
        assert_eq!(r.sums(13)[0], 30, "running total drops the evicted slot");
        assert!(r.add(100, &[1]), "long gap clears everything");
        assert_eq!(r.sums(100)[0], 1);
    }

    /// The sparse ring answers exactly what the dense one does, whatever the
    /// order of updates, and widens instead of wrapping a 16-bit counter —
    /// whether the overflowing update goes to the newest slot, an older one,
    /// a new one, or is the very first.
    #[test]
    fn sparse_matches_dense() {
        for (seed, big_at) in [(7u64, 2500u64), (11, 0), (13, 41), (17, 3999), (19, u64::MAX)] {
            let mut dense: Ring<5, 2> = Ring::default();
            let mut sparse: SparseRing<5, 2> = SparseRing::default();
            let mut x: u64 = seed;
            for step in 0..4000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let base = 100 + (step / 40) as i64;
                let slot = base - ((x >> 33) % 7) as i64;
                let big = if step == big_at { 70_000 } else { 0 };
                let delta = [1, ((x >> 40) % 900) as u32 + big];
                assert_eq!(dense.add(slot, &delta), sparse.add(slot, &delta), "seed {seed} step {step}");
                for now in [base, base + 1, base + 3, base + 6] {
                    let sums = sparse.sums(now);
                    assert_eq!(dense.sums(now), sums, "seed {seed} step {step} now {now}");
                    assert_eq!([sparse.sum_one(0, now), sparse.sum_one(1, now)], sums, "one counter at a time");
                }
            }
            assert_eq!(matches!(sparse.older, Slots::Wide(_)), big_at < 4000, "seed {seed}");
            assert!(sparse.heap_bytes() <= 5 * 24);
        }
    }

    /// An entity seen in one slot holds nothing on the heap.
    #[test]
    fn one_slot_allocates_nothing() {
        let mut r: SparseRing<10, 3> = SparseRing::default();
        for _ in 0..100 {
            assert!(r.add(500, &[1, 2, 3]));
        }
        assert_eq!(r.heap_bytes(), 0);
        assert_eq!(r.sums(500), [100, 200, 300]);
        assert!(r.add(501, &[1, 0, 0]));
        assert!(r.heap_bytes() > 0, "the older slot moved to the list");
        assert_eq!(r.sums(501), [101, 200, 300]);
        assert!(r.add(600, &[1, 0, 0]), "a long gap expires both");
        assert_eq!(r.sums(600), [1, 0, 0]);
        assert!(!r.add(590, &[1, 0, 0]), "left the window");
    }
}
