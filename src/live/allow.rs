//! Allowlist entries added by operators through the admin API, kept in
//! `STATE/allowlist.json` next to the pipeline file's own allowlist (which only
//! an edit of that file changes). The allowlist in force is the union.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Allowlist;

/// The operator allowlist could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("allowlist {path}: {message}")]
pub struct AllowError {
    pub path: PathBuf,
    pub message: String,
}

/// What an entry protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowKind {
    /// An address or network (an address is stored as /32 or /128).
    Cidr,
    /// An API key id.
    ApiKey,
}

/// One operator entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllowEntry {
    pub kind: AllowKind,
    pub value: String,
    pub reason: String,
    pub added_by: String,
    pub added_at: String,
}

/// The operator entries and their file.
#[derive(Debug)]
pub struct AllowOverlay {
    path: PathBuf,
    entries: Vec<AllowEntry>,
}

#[derive(Serialize, Deserialize, Default)]
struct File {
    entries: Vec<AllowEntry>,
}

impl AllowOverlay {
    /// Loads `dir/allowlist.json` (none yet: empty).
    pub fn open(dir: &Path) -> Result<AllowOverlay, AllowError> {
        let path = dir.join("allowlist.json");
        let err = |m: String| AllowError { path: path.clone(), message: m };
        let entries = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<File>(&b).map_err(|e| err(e.to_string()))?.entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        for e in &entries {
            if e.kind == AllowKind::Cidr && e.value.parse::<ipnet::IpNet>().is_err() {
                return Err(err(format!("entry '{}' is not a network", e.value)));
            }
        }
        Ok(AllowOverlay { path, entries })
    }

    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }

    /// Adds (or replaces) the entry for its kind and value; persists before returning.
    pub fn add(&mut self, e: AllowEntry) -> Result<(), AllowError> {
        let mut next = self.entries.clone();
        next.retain(|x| !(x.kind == e.kind && x.value == e.value));
        next.push(e);
        self.save(next)
    }

    /// Removes an entry; persists before returning it.
    pub fn remove(&mut self, kind: AllowKind, value: &str) -> Result<Option<AllowEntry>, AllowError> {
        let Some(i) = self.entries.iter().position(|x| x.kind == kind && x.value == value) else { return Ok(None) };
        let mut next = self.entries.clone();
        let removed = next.remove(i);
        self.save(next)?;
        Ok(Some(removed))
    }

    fn save(&mut self, entries: Vec<AllowEntry>) -> Result<(), AllowError> {
        let bytes = serde_json::to_vec_pretty(&File { entries }).map_err(|e| self.err(e))?;
        crate::fsutil::write_atomic(&self.path, &bytes).map_err(|e| self.err(e))?;
        self.entries = serde_json::from_slice::<File>(&bytes).map_err(|e| self.err(e))?.entries;
        Ok(())
    }

    fn err(&self, e: impl ToString) -> AllowError {
        AllowError { path: self.path.clone(), message: e.to_string() }
    }

    /// The allowlist in force: `base` (the pipeline file's) plus these entries.
    pub fn apply(&self, base: &Allowlist) -> Allowlist {
        let mut out = base.clone();
        for e in &self.entries {
            match e.kind {
                AllowKind::Cidr => {
                    if let Ok(n) = e.value.parse() {
                        out.cidrs.push(n);
                    }
                }
                AllowKind::ApiKey => out.api_keys.push(e.value.clone()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: AllowKind, value: &str) -> AllowEntry {
        AllowEntry { kind, value: value.into(), reason: "r".into(), added_by: "t".into(), added_at: "now".into() }
    }

    #[test]
    fn add_remove_persist_apply() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = AllowOverlay::open(dir.path()).unwrap();
        o.add(entry(AllowKind::Cidr, "192.0.2.0/24")).unwrap();
        o.add(entry(AllowKind::ApiKey, "partner-x")).unwrap();
        o.add(entry(AllowKind::Cidr, "192.0.2.0/24")).unwrap();
        assert_eq!(o.entries().len(), 2, "same kind and value replaces");
        let o2 = AllowOverlay::open(dir.path()).unwrap();
        assert_eq!(o2.entries(), o.entries());
        let a = o2.apply(&Allowlist::default());
        assert!(a.allows_request("192.0.2.9".parse().unwrap(), None, None));
        assert!(a.api_keys.contains(&"partner-x".to_string()));
        assert!(o.remove(AllowKind::Cidr, "192.0.2.0/24").unwrap().is_some());
        assert!(o.remove(AllowKind::Cidr, "192.0.2.0/24").unwrap().is_none());
        assert_eq!(AllowOverlay::open(dir.path()).unwrap().entries().len(), 1);
        std::fs::write(dir.path().join("allowlist.json"), b"{not json").unwrap();
        let e = AllowOverlay::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("allowlist.json"), "{e}");
    }
}
