//! The sessions the engine has seen opened, shared with the API so that a
//! session id counts as a session only when it stands for one.
//!
//! A session id in a log line or a forward-auth header is whatever the
//! client sent: a credential list posted with a made-up cookie would
//! otherwise step out of the class `bare-login` ([`crate::classes`]) and out
//! of the campaign columns that judge it. A session is *opened* once a
//! request carrying it did something other than fail a credential check
//! bare or read an item bare (loaded the form or a page's assets, signed
//! in: [`crate::features`], `OPENED`); a session id seen only on failed
//! sign-ins and item reads, or never seen, is no session.
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
//! Held as digests in hash sets keyed per process (so a client cannot
//! crowd a table's buckets with ids it chose), in two
//! generations: a lookup checks both, an insert goes to the newer, and once
//! the newer holds half the capacity the older is dropped. Memory is bounded
//! by the capacity whatever the traffic; what is forgotten first is what
//! was opened longest ago, which costs the person behind it at most a
//! challenge while a campaign lasts.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Digests as bytes: eight each, little-endian (an opened-session record's
/// payload on the decisions topic, and the registry's file).
pub fn encode_digests(digests: &[u64]) -> Vec<u8> {
    digests.iter().flat_map(|d| d.to_le_bytes()).collect()
}

/// What [`encode_digests`] wrote; `None` when the length is not a multiple
/// of eight.
pub fn decode_digests(bytes: &[u8]) -> Option<Vec<u64>> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    Some(bytes.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
}

/// Sessions held by default: two generations of half a million digests,
/// ~20 MB at most.
pub const DEFAULT_HELD: usize = 1_000_000;

/// Where an engine keeps its registry across restarts, in its state
/// directory: without it, every person in the middle of a session when the
/// engine restarts would be challenged on the form while a campaign's class
/// decision (kept in the store) is in force, until their next page reached
/// the engine.
pub const FILE: &str = "opened-sessions.bin";
/// The file's first eight bytes; the digests follow, little-endian, oldest
/// first.
const MAGIC: &[u8; 8] = b"gwopen01";

/// The registry's file could not be read as one.
pub use crate::fsutil::StateFileError as FileError;

/// Opened sessions, as their [`digest`]s in sets hashed under keys of this
/// process.
#[derive(Debug)]
pub struct OpenedSessions {
    half: usize,
    gens: Mutex<Generations>,
    /// Digests inserted that were not held (what a saver asks about).
    added: AtomicU64,
}

#[derive(Debug, Default)]
struct Generations {
    newer: HashSet<u64, RandomState>,
    older: HashSet<u64, RandomState>,
}

impl Generations {
    fn holds(&self, d: u64) -> bool {
        self.newer.contains(&d) || self.older.contains(&d)
    }
}

impl OpenedSessions {
    /// Holds up to `capacity` sessions (at least 2).
    pub fn new(capacity: usize) -> Self {
        OpenedSessions { half: (capacity / 2).max(1), gens: Mutex::default(), added: AtomicU64::new(0) }
    }

    fn gens(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic elsewhere cannot leave the sets half-written: an insert is
        // one call, so the data is usable whatever poisoned the lock.
        self.gens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records sessions seen opened.
    pub fn insert_all<'a>(&self, sessions: impl IntoIterator<Item = &'a str>) {
        self.insert_digests(sessions.into_iter().map(digest).collect::<Vec<_>>());
    }

    /// Records sessions seen opened, by their [`digest`]s (another
    /// instance's, read from the decisions topic).
    pub fn insert_digests(&self, digests: impl IntoIterator<Item = u64>) {
        let mut added = 0;
        let mut g = self.gens();
        for d in digests {
            if g.holds(d) {
                continue;
            }
            if g.newer.len() >= self.half {
                g.older = std::mem::take(&mut g.newer);
            }
            g.newer.insert(d);
            added += 1;
        }
        self.added.fetch_add(added, Ordering::Relaxed);
    }

    /// Whether `session` has been seen opened (and not yet forgotten).
    pub fn contains(&self, session: &str) -> bool {
        let d = digest(session);
        self.gens().holds(d)
    }

    /// Whether a request carrying `session` counts as having a session: the
    /// session was seen opened, or no session has been seen opened at all.
    /// A log without session ids (a format or mapping that leaves them out,
    /// while the gateway passes the header) opens none, and there the
    /// features count every failure bare anyway; judging the header there
    /// would put every person's post in the class while a campaign lasts.
    pub fn admits(&self, session: &str) -> bool {
        let d = digest(session);
        let g = self.gens();
        (g.newer.is_empty() && g.older.is_empty()) || g.holds(d)
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        let g = self.gens();
        g.newer.len() + g.older.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// New sessions recorded since this registry was made: a saver writes
    /// the file again only when this moved.
    pub fn added(&self) -> u64 {
        self.added.load(Ordering::Relaxed)
    }

    /// Writes the digests held to `path` (whole or not at all), older
    /// generation first, so a registry loading it forgets in the same order.
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        let digests: Vec<u64> = {
            let g = self.gens();
            g.older.iter().chain(g.newer.iter()).copied().collect()
        };
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&encode_digests(&digests));
        crate::fsutil::write_atomic(path, &bytes).map_err(|source| FileError::Io { path: path.to_path_buf(), source })
    }

    /// Takes what [`OpenedSessions::save`] wrote to `path`, the newest up
    /// to this registry's capacity; 0 when there is no such file.
    pub fn load(&self, path: &Path) -> Result<usize, FileError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(FileError::Io { path: path.to_path_buf(), source }),
        };
        let format = |why| FileError::Format { path: path.to_path_buf(), what: "registry of opened sessions", why };
        let body = bytes.strip_prefix(MAGIC).ok_or(format("it does not begin with its mark"))?;
        let digests = decode_digests(body).ok_or(format("it ends within a digest"))?;
        let keep = digests.len().min(2 * self.half);
        self.insert_digests(digests[digests.len() - keep..].iter().copied());
        Ok(keep)
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
    fn digests_survive_their_bytes_and_cut_bytes_are_refused() {
        let ds = [0u64, 1, u64::MAX, digest("ws-1")];
        let bytes = encode_digests(&ds);
        assert_eq!(bytes.len(), 32);
        assert_eq!(decode_digests(&bytes).as_deref(), Some(&ds[..]));
        assert_eq!(decode_digests(&bytes[..31]), None);
        assert_eq!(decode_digests(&[]).as_deref(), Some(&[][..]));
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
    fn kept_across_a_restart_and_refused_when_it_is_not_a_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        let before = OpenedSessions::new(100);
        assert_eq!(before.load(&path).expect("no file yet"), 0);
        before.insert_all(["ws-1", "ws-2"]);
        before.insert_all(["ws-1"]);
        assert_eq!(before.added(), 2, "a session opened again is not new");
        before.save(&path).expect("save");
        let after = OpenedSessions::new(100);
        assert_eq!(after.load(&path).expect("load"), 2);
        assert!(after.contains("ws-1") && after.contains("ws-2") && !after.contains("ws-3"));
        // A smaller registry keeps the newer generation.
        let names: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
        let big = OpenedSessions::new(20);
        big.insert_all(names.iter().map(String::as_str));
        big.save(&path).expect("save");
        let small = OpenedSessions::new(10);
        assert_eq!(small.load(&path).expect("load"), 10);
        assert!(names[40..].iter().all(|n| small.contains(n)), "the newest ten");
        assert!(!small.contains("s39") && !small.contains("s0"));
        std::fs::write(&path, b"gwopen01abc").expect("write");
        assert!(matches!(OpenedSessions::new(10).load(&path), Err(FileError::Format { .. })));
        std::fs::write(&path, b"not-mine-at-all!").expect("write");
        assert!(matches!(OpenedSessions::new(10).load(&path), Err(FileError::Format { .. })));
    }
}
