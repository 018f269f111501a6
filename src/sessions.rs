//! The sessions the engine has seen opened, shared with the API so that a
//! session id counts as a session only when it stands for one.
//!
//! A session id in a log line or a forward-auth header is whatever the
//! client sent: a credential list posted with a made-up cookie would
//! otherwise step out of the class `bare-login` ([`crate::classes`]) and out
//! of the campaign columns that judge it. A session is *opened* once a
//! request carrying it did something other than fail a credential check
//! bare (loaded the form, signed in: [`crate::features`], `ACTED`); a
//! session id seen only on failed sign-ins, or never seen, is no session.
//!
//! A session is known by its [`digest`], which every instance computes
//! alike, so that engines can publish the digests of the sessions they saw
//! opened on the decisions topic ([`crate::sink::kafka`]) and every API
//! instance and engine of a group fill their registry from it
//! ([`crate::live::feed`]). The digest is cut from SHA-256: with its
//! function public, a client still cannot make up an id whose digest
//! matches a session opened by somebody else, nor many ids matching one
//! session it opened itself (a second preimage of 64 bits).
//!
//! Held as keyed 64-bit hashes of the digests (a key per process, so a
//! client cannot crowd the table's buckets with ids it chose) in two
//! generations: a lookup checks both, an insert goes to the newer, and once
//! the newer holds half the capacity the older is dropped. Memory is bounded
//! by the capacity whatever the traffic; what is forgotten first is what
//! was opened longest ago, which costs the person behind it at most a
//! challenge while a campaign lasts.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

/// A session id's digest: the same in every instance, what the decisions
/// topic carries (never the id itself, which stands for a signed-in person).
pub fn digest(session: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"gatewatch opened session\0");
    h.update(session.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_le_bytes(first)
}

/// Sessions held by default: two generations of half a million hashes,
/// ~20 MB at most.
pub const DEFAULT_HELD: usize = 1_000_000;

/// Opened sessions, as their [`digest`]s hashed again under a key of this
/// process.
#[derive(Debug)]
pub struct OpenedSessions {
    hasher: RandomState,
    half: usize,
    gens: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    newer: HashSet<u64, Prehashed>,
    older: HashSet<u64, Prehashed>,
}

impl Generations {
    fn holds(&self, h: u64) -> bool {
        self.newer.contains(&h) || self.older.contains(&h)
    }
}

/// The values are already keyed hashes: hashing them again adds nothing.
#[derive(Debug, Default, Clone, Copy)]
struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = Passthrough;
    fn build_hasher(&self) -> Passthrough {
        Passthrough(0)
    }
}

#[derive(Debug, Default)]
struct Passthrough(u64);

impl std::hash::Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

impl OpenedSessions {
    /// Holds up to `capacity` sessions (at least 2).
    pub fn new(capacity: usize) -> Self {
        OpenedSessions { hasher: RandomState::new(), half: (capacity / 2).max(1), gens: Mutex::default() }
    }

    fn hash(&self, session: &str) -> u64 {
        self.keyed(digest(session))
    }

    fn keyed(&self, digest: u64) -> u64 {
        self.hasher.hash_one(digest)
    }

    /// Records sessions seen opened.
    pub fn insert_all<'a>(&self, sessions: impl IntoIterator<Item = &'a str>) {
        self.insert_digests(sessions.into_iter().map(digest));
    }

    /// Records sessions seen opened, by their [`digest`]s (another
    /// instance's, read from the decisions topic).
    pub fn insert_digests(&self, digests: impl IntoIterator<Item = u64>) {
        let hashes: Vec<u64> = digests.into_iter().map(|d| self.keyed(d)).collect();
        if hashes.is_empty() {
            return;
        }
        // A panic elsewhere cannot leave the sets half-written: an insert is
        // one call, so the data is usable whatever poisoned the lock.
        let mut g = self.gens.lock().unwrap_or_else(PoisonError::into_inner);
        for h in hashes {
            if g.newer.len() >= self.half {
                g.older = std::mem::take(&mut g.newer);
            }
            g.newer.insert(h);
        }
    }

    /// Whether `session` has been seen opened (and not yet forgotten).
    pub fn contains(&self, session: &str) -> bool {
        let h = self.hash(session);
        self.gens.lock().unwrap_or_else(PoisonError::into_inner).holds(h)
    }

    /// Whether a request carrying `session` counts as having a session: the
    /// session was seen opened, or no session has been seen opened at all.
    /// A log without session ids (a format or mapping that leaves them out,
    /// while the gateway passes the header) opens none, and there the
    /// features count every failure bare anyway; judging the header there
    /// would put every person's post in the class while a campaign lasts.
    pub fn admits(&self, session: &str) -> bool {
        let h = self.hash(session);
        let g = self.gens.lock().unwrap_or_else(PoisonError::into_inner);
        (g.newer.is_empty() && g.older.is_empty()) || g.holds(h)
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        let g = self.gens.lock().unwrap_or_else(PoisonError::into_inner);
        g.newer.len() + g.older.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_was_opened_and_nothing_else() {
        let s = OpenedSessions::new(100);
        s.insert_all(["ws-1", "ws-2"]);
        assert!(s.contains("ws-1") && s.contains("ws-2"));
        assert!(!s.contains("ws-3") && !s.contains("") && !s.contains("ws-10"));
    }

    #[test]
    fn admits_any_session_only_while_none_was_opened() {
        let s = OpenedSessions::new(100);
        assert!(s.admits("anything"), "a log without sessions opens none: the header is all there is");
        s.insert_all(["ws-1"]);
        assert!(s.admits("ws-1") && !s.admits("anything"));
    }

    #[test]
    fn bounded_and_forgets_the_oldest_first() {
        let s = OpenedSessions::new(10);
        let names: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
        for n in &names {
            s.insert_all([n.as_str()]);
            assert!(s.len() <= 10, "{} held", s.len());
        }
        // The newest half is always held; the oldest is long gone.
        assert!(names[995..].iter().all(|n| s.contains(n)));
        assert!(!s.contains("s0") && !s.contains("s500"));
    }

    #[test]
    fn digests_name_the_same_sessions_in_every_instance() {
        let (engine, api) = (OpenedSessions::new(100), OpenedSessions::new(100));
        engine.insert_all(["ws-1"]);
        api.insert_digests([digest("ws-1")]);
        assert!(api.contains("ws-1") && !api.contains("ws-2"));
        assert_eq!(digest("ws-1"), digest("ws-1"));
        assert_ne!(digest("ws-1"), digest("ws-2"));
    }

    #[test]
    fn keyed_per_process() {
        let (a, b) = (OpenedSessions::new(10), OpenedSessions::new(10));
        assert_ne!(a.hash("ws-1"), b.hash("ws-1"), "two registries hash alike");
    }
}
