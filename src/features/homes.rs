//! Where each confidential client is at home.
//!
//! A confidential client (a partner's or a vendor's own server, holding a
//! client secret: RFC 6749 §2.1) calls from a few networks that change
//! rarely: its data centre, its cloud account. Its standing exempts the
//! id walks and bulk reads it is entitled to from the rules that judge
//! anonymous addresses (`confidential_10m`). That standing belongs to the
//! *secret*, and a secret leaks (a repository, a CI log, a laptop): whoever
//! holds it mints tokens of their own from their own network. Were the
//! standing given wherever the secret is used, a leaked secret would be a
//! way around every rule that spares integrations.
//!
//! So a confidential key's requests count as its own only from the networks
//! it is established in: those it used in its first [`BOOTSTRAP_MS`] in the
//! engine's memory (nothing older is known to judge them by), and those it
//! has used for at least [`ESTABLISH_MS`] since. A request from any other
//! network is *away*: judged as anyone's. A network is the autonomous system
//! when the log says it, else the address's /24 (IPv4) or /48 (IPv6).
//!
//! What was learned outlives a restart: an engine keeps it in its state
//! directory ([`FILE`]). Without it, every restart (a deploy) began a new
//! bootstrap, and a thief using a leaked secret at that moment was learned
//! as the client's home for as long as the key was used.
//!
//! Limits (docs/FEATURES.md, "Confidential clients"): a thief in the same
//! autonomous system as the client (one cloud provider for both) is at home;
//! a secret used from elsewhere since before the engine's memory began (or
//! before an instance without the file took the key's partition over, which
//! replays the last hour) is learned as home; and a client that moves to a
//! new network is judged as anyone for its first hour there.

use std::collections::HashMap;
use std::path::Path;

use crate::fsutil::StateFileError;

/// Where an engine keeps what it learned, in its state directory.
pub const FILE: &str = "confidential-homes.bin";
/// The file's first eight bytes; then per key: its hash, first and last
/// request (ms), the number of networks, and each network's hash and first
/// request, all little-endian.
const MAGIC: &[u8; 8] = b"gwhome01";
const WHAT: &str = "record of confidential clients' networks";

/// A key's networks seen within this long of its first request are home:
/// the engine cannot tell the oldest of them apart.
pub const BOOTSTRAP_MS: i64 = 10 * 60_000;
/// A network the key has used for this long (its first request from there
/// is at least this old) is home: as long as every window a rule reads.
pub const ESTABLISH_MS: i64 = 60 * 60_000;
/// Networks remembered per key. A key used from more is at home only in
/// the first [`NETS_PER_KEY`] (the others stay away: counted, not trusted).
pub const NETS_PER_KEY: usize = 16;
/// Keys remembered. Only a key that obtained a token with valid client
/// credentials enters, so the count is that of real integrations; past it,
/// a new key is trusted everywhere (the behaviour without this map) and
/// counted in [`Homes::untracked`].
pub const MAX_KEYS: usize = 65_536;

#[derive(Debug, Clone)]
struct Home {
    first_ms: i64,
    last_ms: i64,
    /// (network, first request from it), in order of first use.
    nets: Vec<(u64, i64)>,
}

/// The networks of each confidential key, by the key's hash.
#[derive(Debug, Default)]
pub struct Homes {
    keys: HashMap<u64, Home>,
    /// Requests of keys not remembered because [`MAX_KEYS`] were held.
    pub untracked: u64,
    /// Requests observed so far (what a saver asks about: a key's last
    /// request matters too, as what the sweep keeps it by).
    observed: u64,
}

impl Homes {
    /// Records that confidential key `key` authenticated a request from
    /// network `net` at `ts`; true when the key is at home there.
    pub fn observe(&mut self, key: u64, net: u64, ts: i64) -> bool {
        if !self.keys.contains_key(&key) && self.keys.len() >= MAX_KEYS {
            if self.untracked == 0 {
                tracing::warn!(
                    keys = MAX_KEYS,
                    "confidential keys: this many remembered; a further key is trusted wherever it is used"
                );
            }
            self.untracked += 1;
            return true;
        }
        self.observed += 1;
        let home = self.keys.entry(key).or_insert_with(|| Home { first_ms: ts, last_ms: ts, nets: Vec::new() });
        home.last_ms = home.last_ms.max(ts);
        // A shuffled log can show the key's requests before its first one.
        home.first_ms = home.first_ms.min(ts);
        let first_ms = home.first_ms;
        match home.nets.iter_mut().find(|(n, _)| *n == net) {
            Some((_, since)) => {
                *since = (*since).min(ts);
                *since <= first_ms + BOOTSTRAP_MS || ts - *since >= ESTABLISH_MS
            }
            None => {
                if home.nets.len() < NETS_PER_KEY {
                    home.nets.push((net, ts));
                }
                ts <= first_ms + BOOTSTRAP_MS
            }
        }
    }

    /// Forgets the keys not seen since `cutoff`: their standing is relearned
    /// with their next token, as the key's own state is.
    pub fn sweep(&mut self, cutoff: i64) {
        self.keys.retain(|_, h| h.last_ms >= cutoff);
    }

    /// Requests observed since this record was made: a saver writes the
    /// file again only when this moved.
    pub fn observed(&self) -> u64 {
        self.observed
    }

    /// Writes what is remembered to `path` (whole or not at all).
    pub fn save(&self, path: &Path) -> Result<(), StateFileError> {
        let mut b = MAGIC.to_vec();
        let mut keys: Vec<(&u64, &Home)> = self.keys.iter().collect();
        keys.sort_unstable_by_key(|(k, _)| **k);
        for (key, h) in keys {
            b.extend_from_slice(&key.to_le_bytes());
            b.extend_from_slice(&h.first_ms.to_le_bytes());
            b.extend_from_slice(&h.last_ms.to_le_bytes());
            b.push(h.nets.len() as u8);
            for (net, since) in &h.nets {
                b.extend_from_slice(&net.to_le_bytes());
                b.extend_from_slice(&since.to_le_bytes());
            }
        }
        crate::fsutil::write_atomic(path, &b).map_err(|source| StateFileError::Io { path: path.to_path_buf(), source })
    }

    /// Takes what [`Homes::save`] wrote to `path` in place of what is held;
    /// the number of keys, 0 when there is no such file. Nothing is taken
    /// from a file that is not one.
    pub fn load(&mut self, path: &Path) -> Result<usize, StateFileError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(StateFileError::Io { path: path.to_path_buf(), source }),
        };
        let format = |why| StateFileError::Format { path: path.to_path_buf(), what: WHAT, why };
        let body = bytes.strip_prefix(MAGIC).ok_or(format("it does not begin with its mark"))?;
        let mut r = Reader { body, at: 0 };
        let mut keys = HashMap::new();
        let cut = || format("it ends within a key");
        while let Some(key) = r.word() {
            let first_ms = i64::from_le_bytes(r.word().ok_or_else(cut)?);
            let last_ms = i64::from_le_bytes(r.word().ok_or_else(cut)?);
            let n = r.byte().ok_or_else(cut)? as usize;
            if n > NETS_PER_KEY || keys.len() >= MAX_KEYS {
                return Err(format("it holds more than a record may"));
            }
            let mut nets = Vec::with_capacity(n);
            for _ in 0..n {
                let net = u64::from_le_bytes(r.word().ok_or_else(cut)?);
                nets.push((net, i64::from_le_bytes(r.word().ok_or_else(cut)?)));
            }
            keys.insert(u64::from_le_bytes(key), Home { first_ms, last_ms, nets });
        }
        if r.at != body.len() {
            return Err(cut());
        }
        let n = keys.len();
        self.keys = keys;
        Ok(n)
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Reads a record's file front to back.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    /// The next eight bytes; `None` (nothing taken) past the end.
    fn word(&mut self) -> Option<[u8; 8]> {
        let w = self.body.get(self.at..self.at + 8)?.try_into().ok()?;
        self.at += 8;
        Some(w)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.body.get(self.at)?;
        self.at += 1;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn a_key_is_at_home_where_it_began_and_away_elsewhere_until_established() {
        let mut h = Homes::default();
        assert!(h.observe(1, 10, 0));
        assert!(h.observe(1, 11, 9 * MIN), "a second network within the bootstrap is home");
        assert!(!h.observe(1, 12, 30 * MIN), "a new network after the bootstrap is away");
        assert!(!h.observe(1, 12, 89 * MIN));
        assert!(h.observe(1, 12, 90 * MIN), "an hour after its first use it is established");
        assert!(h.observe(1, 10, 200 * MIN));
        // Another key learns its own networks.
        assert!(h.observe(2, 12, 200 * MIN));
        assert!(!h.observe(2, 10, 220 * MIN));
    }

    /// What was learned outlives a restart: the bootstrap does not begin
    /// again, so a network first used after it stays away.
    #[test]
    fn kept_across_a_restart_and_refused_when_it_is_not_a_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        let mut h = Homes::default();
        assert_eq!(h.load(&path).expect("no file yet"), 0);
        assert!(h.observe(1, 10, 0));
        assert!(h.observe(1, 11, 5 * MIN));
        assert!(h.observe(2, 20, 7 * MIN));
        h.save(&path).expect("save");
        let mut after = Homes::default();
        assert_eq!(after.load(&path).expect("load"), 2);
        // A thief's network an hour later, right after the restart: away.
        assert!(!after.observe(1, 99, 60 * MIN), "no new bootstrap after a restart");
        assert!(after.observe(1, 11, 61 * MIN) && after.observe(2, 20, 61 * MIN));
        // Without the file, the thief would have been learned as home.
        assert!(Homes::default().observe(1, 99, 60 * MIN));
        // A file that is not a record, or is cut, is refused and nothing taken.
        let bytes = std::fs::read(&path).expect("read");
        for bad in [&b"gwopen01"[..], &bytes[..bytes.len() - 3]] {
            std::fs::write(&path, bad).expect("write");
            let mut h = Homes::default();
            assert!(h.observe(3, 30, 0));
            assert!(matches!(h.load(&path), Err(StateFileError::Format { .. })));
            assert_eq!(h.len(), 1);
        }
    }

    #[test]
    fn a_shuffled_log_showing_a_key_late_at_home_first_keeps_it_home() {
        let mut h = Homes::default();
        // The key's requests from network 10 arrive out of order, the
        // earliest last; network 10 is home throughout.
        assert!(h.observe(1, 10, 12 * MIN));
        assert!(h.observe(1, 10, 3 * MIN));
        assert!(h.observe(1, 10, 20 * MIN));
        assert!(!h.observe(1, 11, 25 * MIN), "13 minutes after the key's first request");
    }

    #[test]
    fn memory_is_bounded_by_keys_and_networks() {
        let mut h = Homes::default();
        for n in 0..100 {
            h.observe(1, n, 30 * MIN + n as i64);
        }
        assert_eq!(h.keys[&1].nets.len(), NETS_PER_KEY);
        assert!(!h.observe(1, 99, 300 * MIN), "a network past the cap is never established");
        for k in 0..MAX_KEYS as u64 + 10 {
            h.observe(k + 2, 0, 0);
        }
        assert_eq!(h.len(), MAX_KEYS);
        assert!(h.untracked >= 10);
        h.sweep(1_000 * MIN);
        assert!(h.is_empty());
    }
}
