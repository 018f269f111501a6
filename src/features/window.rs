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
}

impl<const K: usize, const N: usize> Default for Ring<K, N> {
    fn default() -> Self {
        Ring { head: i64::MIN, slots: [[0; N]; K] }
    }
}

impl<const K: usize, const N: usize> Ring<K, N> {
    /// Returns the counters of absolute slot `slot`, rotating the ring forward if
    /// needed; `None` when the slot has already left the window (a very late event).
    #[inline]
    pub fn slot_mut(&mut self, slot: i64) -> Option<&mut [u32; N]> {
        if self.head == i64::MIN {
            self.head = slot;
        } else if slot > self.head {
            let gap = (slot - self.head).min(K as i64);
            for i in 1..=gap {
                let idx = (self.head + i).rem_euclid(K as i64) as usize;
                self.slots[idx] = [0; N];
            }
            self.head = slot;
        } else if slot <= self.head - K as i64 {
            return None;
        }
        Some(&mut self.slots[slot.rem_euclid(K as i64) as usize])
    }

    /// Sums every counter over the slots still inside the window that ends at `now_slot`.
    pub fn sums(&self, now_slot: i64) -> [u64; N] {
        let mut out = [0u64; N];
        if self.head == i64::MIN {
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
        r.slot_mut(10).unwrap()[0] += 1;
        r.slot_mut(11).unwrap()[0] += 2;
        r.slot_mut(12).unwrap()[0] += 4;
        assert_eq!(r.sums(12)[0], 7);
        assert_eq!(r.sums(13)[0], 6, "slot 10 left the window");
        assert_eq!(r.sums(20)[0], 0);
        r.slot_mut(11).unwrap()[0] += 8; // late but inside the window
        assert_eq!(r.sums(12)[0], 15);
        assert!(r.slot_mut(9).is_none(), "too late");
        r.slot_mut(100).unwrap()[0] += 1; // long gap clears everything
        assert_eq!(r.sums(100)[0], 1);
    }
}
