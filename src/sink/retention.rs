//! Retention of the Parquet history: whole hours of a state directory's
//! runs are removed once they are older than `[state] retention`, or, oldest
//! first, while the history is larger than `[state] retention_bytes`.
//!
//! The unit is an hour directory (`runs/*/TABLE/date=…/hour=…/`, see
//! [`super::parts`]): removing one is a directory removal, never a rewrite,
//! and a query never meets half an hour. An hour with a part still being
//! written (`.writing`) is left alone whatever its age, so a live writer
//! never loses the file under it; it is removed on a later pass. Runs
//! written before the hourly layout (one `part-0.parquet` per table) have
//! no hours and are not touched.

use std::path::{Path, PathBuf};

/// How much history to keep; `None` on both: all of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Hours that ended longer ago than this go.
    pub max_age_ms: Option<i64>,
    /// Past this many bytes of part files, the oldest hours go.
    pub max_bytes: Option<u64>,
}

impl Retention {
    pub fn is_set(&self) -> bool {
        self.max_age_ms.is_some() || self.max_bytes.is_some()
    }
}

/// What a pass removed and what is left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub hours_removed: usize,
    pub bytes_removed: u64,
    pub bytes_kept: u64,
}

struct Hour {
    path: PathBuf,
    start_ms: i64,
    bytes: u64,
    open: bool,
}

const HOUR_MS: i64 = 3_600_000;

/// The start (ms) of the hour a `date=YYYY-MM-DD/hour=HH` pair names.
fn hour_start(date: &str, hour: &str) -> Option<i64> {
    let date = date.strip_prefix("date=")?;
    let hour: u32 = hour.strip_prefix("hour=")?.parse().ok().filter(|h| *h < 24)?;
    let day = crate::event::time::parse_rfc3339(&format!("{date}T00:00:00Z")).ok()?;
    Some(day + i64::from(hour) * HOUR_MS)
}

fn dirs(p: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir())
}

fn name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

/// Every hour directory of every run under `state_dir`.
fn hours(state_dir: &Path) -> Vec<Hour> {
    let mut out = Vec::new();
    for run in dirs(&state_dir.join("runs")) {
        for table in dirs(&run) {
            for date in dirs(&table).filter(|d| name(d).starts_with("date=")) {
                for hour in dirs(&date) {
                    let Some(start_ms) = hour_start(name(&date), name(&hour)) else { continue };
                    let files = super::parts::files_under(&hour);
                    let bytes = files.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
                    let open = files.iter().any(|f| name(f).ends_with(super::parts::WRITING));
                    out.push(Hour { path: hour, start_ms, bytes, open });
                }
            }
        }
    }
    out
}

/// Removes what `r` no longer keeps of the history under `state_dir`, as of `now_ms`.
pub fn prune(state_dir: &Path, r: &Retention, now_ms: i64) -> std::io::Result<Pruned> {
    let mut hours = hours(state_dir);
    // Oldest first; within an hour, by path, so that passes are repeatable.
    hours.sort_by(|a, b| (a.start_ms, &a.path).cmp(&(b.start_ms, &b.path)));
    let mut kept: u64 = hours.iter().map(|h| h.bytes).sum();
    let mut out = Pruned::default();
    for h in &hours {
        let too_old = r.max_age_ms.is_some_and(|age| h.start_ms + HOUR_MS <= now_ms.saturating_sub(age));
        let too_big = r.max_bytes.is_some_and(|max| kept > max);
        if !(too_old || too_big) || h.open {
            continue;
        }
        std::fs::remove_dir_all(&h.path)?;
        out.hours_removed += 1;
        out.bytes_removed += h.bytes;
        kept -= h.bytes;
        if let Some(date) = h.path.parent() {
            // An emptied day goes too (fails harmlessly while it holds hours).
            let _ = std::fs::remove_dir(date);
        }
    }
    out.bytes_kept = kept;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(root: &Path, run: &str, table: &str, date: &str, h: u32, file: &str, bytes: usize) -> PathBuf {
        let d = root.join("runs").join(run).join(table).join(format!("date={date}")).join(format!("hour={h:02}"));
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join(file), vec![0u8; bytes]).expect("file");
        d
    }

    const DAY2: i64 = 1_793_577_600_000; // 2026-11-02T00:00:00Z

    #[test]
    fn hour_directories_name_their_hour() {
        assert_eq!(hour_start("date=2026-11-02", "hour=05"), Some(DAY2 + 5 * HOUR_MS));
        assert_eq!(hour_start("date=2026-11-02", "hour=24"), None);
        assert_eq!(hour_start("date=nope", "hour=01"), None);
    }

    #[test]
    fn old_hours_go_by_age_and_open_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let old = hour(root, "1", "events", "2026-11-01", 23, "part-0.parquet", 100);
        let open = hour(root, "1", "events", "2026-11-01", 22, "part-1.parquet.writing", 100);
        let recent = hour(root, "2", "features", "2026-11-02", 10, "part-0.parquet", 100);
        let flat = root.join("runs/0/events");
        std::fs::create_dir_all(&flat).expect("flat");
        std::fs::write(flat.join("part-0.parquet"), b"old layout").expect("flat part");
        // Keep 12 hours as of 2026-11-02T12:00Z: the 23:00 hour ended 12 h ago and goes.
        let r = Retention { max_age_ms: Some(12 * HOUR_MS), max_bytes: None };
        let p = prune(root, &r, DAY2 + 12 * HOUR_MS).expect("prune");
        assert_eq!((p.hours_removed, p.bytes_removed, p.bytes_kept), (1, 100, 200));
        assert!(!old.exists() && open.exists() && recent.exists() && flat.join("part-0.parquet").exists());
        // Once finished, the open hour goes on the next pass.
        std::fs::rename(open.join("part-1.parquet.writing"), open.join("part-1.parquet")).expect("finish");
        assert_eq!(prune(root, &r, DAY2 + 12 * HOUR_MS).expect("prune").hours_removed, 1);
        assert!(!root.join("runs/1/events/date=2026-11-01").exists(), "the emptied day goes too");
    }

    #[test]
    fn past_the_size_bound_the_oldest_hours_go_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let a = hour(root, "1", "events", "2026-11-02", 1, "part-0.parquet", 400);
        let b = hour(root, "1", "decisions", "2026-11-02", 2, "part-0.parquet", 400);
        let c = hour(root, "2", "events", "2026-11-02", 3, "part-0.parquet", 400);
        let r = Retention { max_age_ms: None, max_bytes: Some(900) };
        let p = prune(root, &r, DAY2).expect("prune");
        assert_eq!((p.hours_removed, p.bytes_kept), (1, 800));
        assert!(!a.exists() && b.exists() && c.exists());
        assert_eq!(prune(root, &r, DAY2).expect("prune").hours_removed, 0, "within the bound: nothing more");
        assert_eq!(prune(root, &Retention::default(), DAY2).expect("prune").hours_removed, 0);
    }
}
