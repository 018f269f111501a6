//! When an entity was last found shared, so that its sharing does not end
//! the moment the count behind `shared_when` dips under its threshold.
//!
//! `shared_when` reads windowed counts (by default `distinct_users_1h >= 30`).
//! A carrier NAT judged while one of its rules fires is challenged, not
//! denied, as long as 30 users are in its hour; when the thirtieth ages out
//! of the window a minute later, the same rule on the same traffic would
//! deny it, the opposite of what the threshold was for (found on a carrier
//! /24 on held-out seed 24: challenged at 30 users, denied 100 s later at
//! 29). The users behind an address do not leave because a window slid, so
//! an entity found shared keeps being judged shared for [`SHARED_MEMORY_MS`]
//! after the last time it was.

use std::collections::HashMap;

use crate::features::EntityType;

/// How long an entity found shared is still judged shared: the span of the
/// longest window `shared_when` reads by default, so a count that needed an
/// hour to build up is not forgotten faster than it was gathered.
pub const SHARED_MEMORY_MS: i64 = 3_600_000;

/// Entities remembered at most; only an entity a rule fired on while it was
/// shared is remembered, so this is far more than a real deployment meets.
pub const SHARED_MEMORY_CAP: usize = 65_536;

/// The last time each entity was found shared when a rule or model judged it.
#[derive(Debug)]
pub struct SharedMemory {
    /// Per entity type ([`EntityType::index`]).
    last: Vec<HashMap<Box<str>, i64>>,
    cap: usize,
}

impl Default for SharedMemory {
    fn default() -> Self {
        SharedMemory::with_cap(SHARED_MEMORY_CAP)
    }
}

impl SharedMemory {
    pub fn with_cap(cap: usize) -> Self {
        SharedMemory { last: EntityType::ALL.iter().map(|_| HashMap::new()).collect(), cap: cap.max(1) }
    }

    /// Records that `entity` was found shared at `now_ms` (event time).
    pub fn found(&mut self, t: EntityType, entity: &str, now_ms: i64) {
        if let Some(at) = self.last[t.index()].get_mut(entity) {
            *at = (*at).max(now_ms);
            return;
        }
        if self.len() >= self.cap {
            self.make_room(now_ms);
        }
        self.last[t.index()].insert(Box::from(entity), now_ms);
    }

    /// When `entity` was last found shared, if that was within
    /// [`SHARED_MEMORY_MS`] of `now_ms`.
    pub fn recalls(&self, t: EntityType, entity: &str, now_ms: i64) -> Option<i64> {
        self.last[t.index()].get(entity).copied().filter(|&at| now_ms - at <= SHARED_MEMORY_MS)
    }

    pub fn len(&self) -> usize {
        self.last.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets what is past the memory; if that frees less than an eighth,
    /// the oldest eighth goes too, so a full map costs one pass per eighth
    /// of its size, not one per entity added.
    fn make_room(&mut self, now_ms: i64) {
        for m in &mut self.last {
            m.retain(|_, at| now_ms - *at <= SHARED_MEMORY_MS);
        }
        let target = self.cap - self.cap / 8 - 1;
        let len = self.len();
        if len <= target {
            return;
        }
        let mut times: Vec<i64> = self.last.iter().flat_map(|m| m.values().copied()).collect();
        let drop = len - target;
        let (_, cut, _) = times.select_nth_unstable(drop - 1);
        let cut = *cut;
        let mut dropped = 0;
        for m in &mut self.last {
            m.retain(|_, at| {
                if *at <= cut && dropped < drop {
                    dropped += 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_for_an_hour_after_the_last_time() {
        let mut m = SharedMemory::default();
        m.found(EntityType::Ip, "100.64.0.1", 1_000);
        assert_eq!(m.recalls(EntityType::Ip, "100.64.0.1", 1_000 + SHARED_MEMORY_MS), Some(1_000));
        assert_eq!(m.recalls(EntityType::Ip, "100.64.0.1", 1_001 + SHARED_MEMORY_MS), None);
        assert_eq!(m.recalls(EntityType::Cidr, "100.64.0.1", 2_000), None, "per entity type");
        // Found again later: remembered from then; an older report moves nothing.
        m.found(EntityType::Ip, "100.64.0.1", 500_000);
        m.found(EntityType::Ip, "100.64.0.1", 2_000);
        assert_eq!(m.recalls(EntityType::Ip, "100.64.0.1", 500_000 + SHARED_MEMORY_MS), Some(500_000));
    }

    #[test]
    fn bounded_and_the_oldest_go_first() {
        let mut m = SharedMemory::with_cap(64);
        for i in 0..1_000 {
            m.found(EntityType::Ip, &format!("10.0.{}.{}", i / 256, i % 256), i);
            assert!(m.len() <= 64);
        }
        assert_eq!(m.recalls(EntityType::Ip, "10.0.3.231", 1_000), Some(999), "the newest is kept");
        assert_eq!(m.recalls(EntityType::Ip, "10.0.0.0", 1_000), None, "the oldest went");
        // Past the memory, all go at once when room is needed.
        let later = 10 * SHARED_MEMORY_MS;
        m.found(EntityType::Cidr, "10.9.0.0/24", later);
        assert_eq!(m.len(), 1);
    }
}
