//! API keys for gateways and admins, stored only as salted hashes.
//!
//! A key is `gw_<id>_<secret>`: the id (8 hex) finds the record in O(1), the
//! secret (32 random bytes, hex) is checked against `SHA-256(salt ‖ secret)` in
//! constant time. Keys live in `STATE/keys.json`, written atomically (temp file,
//! fsync, rename) by `gatewatch keys`; a running server notices changes within a
//! second, so creating or revoking a key needs no restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read decisions, forward-auth, the change stream.
    Gateway,
    /// Everything.
    Admin,
}

/// One key as stored: never the secret itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub salt: String,
    pub hash: String,
    pub created_ms: i64,
    #[serde(default)]
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("a key named '{0}' already exists (revoke it first, or pick another name)")]
    Duplicate(String),
    #[error("no active key named or numbered '{0}'")]
    NotFound(String),
    #[error("key name must be 1–64 letters, digits, '-', '_' or '.'")]
    BadName,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(salt: &str, secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(secret.as_bytes());
    h.finalize().to_vec()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The keys file.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("keys.json")
}

fn load(path: &Path) -> Result<BTreeMap<String, KeyRecord>, KeyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| KeyError::File { path: path.to_path_buf(), message: format!("not a keys file: {e}") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(KeyError::File { path: path.to_path_buf(), message: e.to_string() }),
    }
}

/// Holds off every other `create` or `revoke` on the same file until dropped.
fn lock(path: &Path) -> Result<crate::fsutil::FileLock, KeyError> {
    crate::fsutil::lock_exclusive(path).map_err(|e| KeyError::File { path: path.to_path_buf(), message: e.to_string() })
}

fn save(path: &Path, keys: &BTreeMap<String, KeyRecord>) -> Result<(), KeyError> {
    let bytes = serde_json::to_vec_pretty(keys).unwrap_or_default();
    crate::fsutil::write_atomic(path, &bytes)
        .map_err(|e| KeyError::File { path: path.to_path_buf(), message: e.to_string() })
}

/// Creates a key; returns its record and the full key (shown once, never stored).
pub fn create(path: &Path, name: &str, role: Role) -> Result<(KeyRecord, String), KeyError> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(KeyError::BadName);
    }
    let _lock = lock(path)?;
    let mut keys = load(path)?;
    if keys.values().any(|k| k.name == name && k.revoked_ms.is_none()) {
        return Err(KeyError::Duplicate(name.to_string()));
    }
    let mut rng = rand::rng();
    let mut id = [0u8; 4];
    let (mut secret, mut salt) = ([0u8; 32], [0u8; 16]);
    loop {
        rng.fill_bytes(&mut id);
        if !keys.contains_key(&hex(&id)) {
            break;
        }
    }
    rng.fill_bytes(&mut secret);
    rng.fill_bytes(&mut salt);
    let (id, secret, salt) = (hex(&id), hex(&secret), hex(&salt));
    let rec = KeyRecord {
        id: id.clone(),
        name: name.to_string(),
        role,
        hash: hex(&digest(&salt, &secret)),
        salt,
        created_ms: now_ms(),
        revoked_ms: None,
    };
    keys.insert(id.clone(), rec.clone());
    save(path, &keys)?;
    Ok((rec, format!("gw_{id}_{secret}")))
}

/// Every key, active or revoked.
pub fn list(path: &Path) -> Result<Vec<KeyRecord>, KeyError> {
    Ok(load(path)?.into_values().collect())
}

/// Revokes the active key with this name or id.
pub fn revoke(path: &Path, name_or_id: &str) -> Result<KeyRecord, KeyError> {
    let _lock = lock(path)?;
    let mut keys = load(path)?;
    let rec = keys
        .values_mut()
        .find(|k| k.revoked_ms.is_none() && (k.name == name_or_id || k.id == name_or_id))
        .ok_or_else(|| KeyError::NotFound(name_or_id.to_string()))?;
    rec.revoked_ms = Some(now_ms());
    let out = rec.clone();
    save(path, &keys)?;
    Ok(out)
}

/// The keys a server checks requests against, reloaded when the file changes.
pub struct KeyRing {
    path: PathBuf,
    keys: ArcSwap<BTreeMap<String, KeyRecord>>,
    checked: Mutex<(Instant, Option<SystemTime>)>,
}

impl KeyRing {
    pub fn open(path: &Path) -> Result<Arc<KeyRing>, KeyError> {
        let keys = load(path)?;
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(Arc::new(KeyRing {
            path: path.to_path_buf(),
            keys: ArcSwap::from_pointee(keys),
            checked: Mutex::new((Instant::now(), mtime)),
        }))
    }

    /// Re-reads the file if it changed, at most once a second.
    fn refresh(&self) {
        let Ok(mut c) = self.checked.try_lock() else { return };
        if c.0.elapsed() < Duration::from_secs(1) {
            return;
        }
        c.0 = Instant::now();
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if mtime != c.1 {
            match load(&self.path) {
                Ok(keys) => {
                    self.keys.store(Arc::new(keys));
                    c.1 = mtime;
                }
                Err(e) => tracing::warn!(error = %e, "keys file not reloaded"),
            }
        }
    }

    /// The role of a presented key, if it is a valid, unrevoked key.
    pub fn verify(&self, presented: &str) -> Option<Role> {
        self.verify_named(presented).map(|(r, _)| r)
    }

    /// The role and name of a presented key, if it is a valid, unrevoked key.
    pub fn verify_named(&self, presented: &str) -> Option<(Role, String)> {
        self.verify_caller(presented).map(|(r, c)| (r, c.name))
    }

    /// The role, id and name of a presented key, if it is a valid, unrevoked key.
    pub fn verify_caller(&self, presented: &str) -> Option<(Role, super::Caller)> {
        self.refresh();
        let rest = presented.strip_prefix("gw_")?;
        let (id, secret) = rest.split_once('_')?;
        let keys = self.keys.load();
        let rec = keys.get(id)?;
        if rec.revoked_ms.is_some() {
            return None;
        }
        let want = (0..rec.hash.len() / 2)
            .map(|i| u8::from_str_radix(rec.hash.get(2 * i..2 * i + 2).unwrap_or("zz"), 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let got = digest(&rec.salt, secret);
        bool::from(got.ct_eq(&want)).then(|| (rec.role, super::Caller { id: rec.id.clone(), name: rec.name.clone() }))
    }

    /// Whether any active key exists (a server with none refuses every guarded request).
    pub fn is_empty(&self) -> bool {
        self.keys.load().values().all(|k| k.revoked_ms.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_verify_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_in(dir.path());
        let (rec, key) = create(&p, "edge-1", Role::Gateway).unwrap();
        assert!(key.starts_with(&format!("gw_{}_", rec.id)));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains(key.rsplit('_').next().unwrap()), "the secret is never stored");
        let ring = KeyRing::open(&p).unwrap();
        assert_eq!(ring.verify(&key), Some(Role::Gateway));
        assert_eq!(ring.verify(&format!("{key}0")), None);
        assert_eq!(ring.verify("gw_00000000_abc"), None);
        assert_eq!(ring.verify("nonsense"), None);
        assert!(matches!(create(&p, "edge-1", Role::Admin), Err(KeyError::Duplicate(_))));
        let (_, admin) = create(&p, "ops", Role::Admin).unwrap();
        revoke(&p, "edge-1").unwrap();
        let ring = KeyRing::open(&p).unwrap();
        assert_eq!(ring.verify(&key), None, "revoked");
        assert_eq!(ring.verify(&admin), Some(Role::Admin));
        assert_eq!(list(&p).unwrap().len(), 2);
        assert!(matches!(create(&p, "bad name", Role::Admin), Err(KeyError::BadName)));
    }

    /// Revocations run beside creations are neither undone nor lost, and
    /// the file stays readable (each command holds the lock across its
    /// read-modify-write, and writers never share a temp file).
    #[test]
    fn concurrent_creates_and_revokes_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_in(dir.path());
        for i in 0..10 {
            create(&p, &format!("old-{i}"), Role::Gateway).unwrap();
        }
        let workers: Vec<_> = (0..10)
            .flat_map(|i| {
                let (a, b) = (p.clone(), p.clone());
                [
                    std::thread::spawn(move || revoke(&a, &format!("old-{i}")).map(|_| ())),
                    std::thread::spawn(move || create(&b, &format!("new-{i}"), Role::Gateway).map(|_| ())),
                ]
            })
            .collect();
        for w in workers {
            w.join().unwrap().unwrap();
        }
        let keys = list(&p).unwrap();
        for i in 0..10 {
            let old = keys.iter().find(|k| k.name == format!("old-{i}")).unwrap();
            assert!(old.revoked_ms.is_some(), "revocation of old-{i} was undone");
            assert!(keys.iter().any(|k| k.name == format!("new-{i}")), "new-{i} is missing");
        }
        assert_eq!(keys.len(), 20);
    }
}
