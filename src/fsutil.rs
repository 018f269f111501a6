//! File writes that a crash cannot leave half done.

use std::io::Write;
use std::path::Path;

/// A file an engine keeps in its state directory could not be read as
/// one (it is then started without, with a warning).
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a {what} ({why})")]
    Format { path: std::path::PathBuf, what: &'static str, why: &'static str },
}

/// Writes `bytes` to `path` so that after a crash the file holds either the old
/// or the new content: write a temporary file, fsync it, rename it over, fsync
/// the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A name no other writer uses: two processes (or threads) writing the
    // same file at once must not write into, or rename, each other's temp file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    // Keys, allowlists and the like are for gatewatch's user only, whatever
    // the umask of whoever runs the command.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive lock on `path` (through `path.lock` beside it), held until
/// dropped. Read-modify-write cycles on a shared file (the API keys) take it,
/// so that two commands run at once cannot undo each other's change.
pub struct FileLock {
    _file: std::fs::File,
}

/// Waits for the exclusive lock on `path`.
pub fn lock_exclusive(path: &Path) -> std::io::Result<FileLock> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    let file = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(p)?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: flock only acts on this descriptor, which `file` owns;
            // closing it (on drop) releases the lock.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    Ok(FileLock { _file: file })
}

/// Opens a file of lines for appending after a write into it may have failed
/// part-way (a full disk): a last line without its newline is cut off, so
/// that every line a reader finds is whole. Returns the file and its length.
pub fn open_lines_for_append(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    // Back from the end to the last newline, a chunk at a time.
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if keep < len {
        f.set_len(keep)?;
    }
    Ok((f, keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_last_line_is_removed_before_appending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.jsonl");
        for (before, after) in [("", ""), ("a\n", "a\n"), ("a\nbc", "a\n"), ("abc", ""), ("a\nb\n", "a\nb\n")] {
            std::fs::write(&p, before).expect("write");
            let (mut f, len) = open_lines_for_append(&p).expect("open");
            assert_eq!(len, after.len() as u64);
            f.write_all(b"z\n").expect("append");
            assert_eq!(std::fs::read_to_string(&p).expect("read"), format!("{after}z\n"), "{before:?}");
        }
        // A partial line longer than one read chunk.
        let long = format!("ok\n{}", "x".repeat(200_000));
        std::fs::write(&p, &long).expect("write");
        assert_eq!(open_lines_for_append(&p).expect("open").1, 3);
    }
}
