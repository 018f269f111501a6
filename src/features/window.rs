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
}
