//! Following a growing log file like `tail -F`: new lines as they are
//! appended, across rotation (the path now names a new file) and truncation.
//!
//! Polling rather than inotify: it works on every filesystem (including network
//! mounts and container overlays), and a 50 ms poll is far inside the one-second
//! budget from append to decision.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Poll, Position, Records, Source};

/// Follows one path.
pub struct Follower {
    path: PathBuf,
    keep: usize,
    file: Option<File>,
    ino: u64,
    pos: u64,
    from_start: bool,
    opened_once: bool,
    partial: Vec<u8>,
    partial_len: u64,
    partial_offset: u64,
    line_no: u64,
    buf: Vec<u8>,
}

impl Follower {
    /// Starts at the end of the current file unless `from_start`; files that
    /// appear later (after rotation) are always read from their start.
    pub fn new(path: &Path, keep: usize, from_start: bool) -> Self {
        Follower {
            path: path.to_path_buf(),
            keep,
            file: None,
            ino: 0,
            pos: 0,
            from_start,
            opened_once: false,
            partial: Vec::new(),
            partial_len: 0,
            partial_offset: 0,
            line_no: 0,
            buf: vec![0; 64 * 1024],
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file now (if it exists), fixing the position following starts
    /// from; call before announcing readiness so that no line appended after
    /// that moment is skipped.
    pub fn start(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            self.open()?;
        }
        Ok(())
    }

    fn open(&mut self) -> io::Result<bool> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let meta = f.metadata()?;
        self.ino = meta.ino();
        self.pos = if !self.opened_once && !self.from_start { f.seek(SeekFrom::End(0))? } else { 0 };
        self.opened_once = true;
        self.file = Some(f);
        self.partial_offset = self.pos;
        Ok(true)
    }

    /// Appends complete new lines to `out` (at most about `max` per call). A line
    /// still being written (no newline yet) waits for the next call.
    pub fn poll_lines(&mut self, out: &mut Records, max: usize) -> io::Result<()> {
        if self.file.is_none() && !self.open()? {
            return Ok(());
        }
        let start = out.len();
        loop {
            let Some(f) = self.file.as_mut() else { return Ok(()) };
            let n = f.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            let mut chunk_start = 0;
            while let Some(k) = memchr::memchr(b'\n', &self.buf[chunk_start..n]) {
                let i = chunk_start + k;
                self.take_part(chunk_start, i);
                let mut len = self.partial_len;
                if self.partial.last() == Some(&b'\r') && self.partial.len() as u64 == len {
                    self.partial.pop();
                    len -= 1;
                }
                self.line_no += 1;
                out.push(&self.partial, len, Position::Line { no: self.line_no, offset: self.partial_offset });
                self.partial.clear();
                self.partial_len = 0;
                self.partial_offset = self.pos + i as u64 + 1;
                chunk_start = i + 1;
            }
            self.take_part(chunk_start, n);
            self.pos += n as u64;
            if out.len() - start >= max {
                return Ok(());
            }
        }
        // At the end of what is there: has the path moved on to a new file, or shrunk?
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.ino() != self.ino => {
                // Rotated: the old file is finished (a last line without newline counts).
                self.finish_partial(out);
                self.file = None;
                self.line_no = 0;
                if self.open()? {
                    return self.poll_lines(out, max.saturating_sub(out.len() - start));
                }
            }
            Ok(meta) if meta.len() < self.pos => {
                // Truncated in place (copytruncate): start over. A line cut
                // off by the truncation is passed on as it is (the parser
                // keeps what it can or dead-letters it), never dropped unseen.
                self.finish_partial(out);
                if let Some(f) = self.file.as_mut() {
                    f.seek(SeekFrom::Start(0))?;
                }
                self.pos = 0;
                self.partial_offset = 0;
                self.line_no = 0;
            }
            _ => {}
        }
        Ok(())
    }

    fn take_part(&mut self, from: usize, to: usize) {
        let room = self.keep.saturating_sub(self.partial.len());
        let take = (to - from).min(room);
        self.partial.extend_from_slice(&self.buf[from..from + take]);
        self.partial_len += (to - from) as u64;
    }

    fn finish_partial(&mut self, out: &mut Records) {
        if self.partial_len > 0 {
            self.line_no += 1;
            out.push(&self.partial, self.partial_len, Position::Line { no: self.line_no, offset: self.partial_offset });
            self.partial.clear();
            self.partial_len = 0;
        }
    }
}

impl Source for Follower {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn poll(&mut self, out: &mut Records, max: usize) -> io::Result<Poll> {
        let before = out.len();
        self.poll_lines(out, max)?;
        Ok(if out.len() > before { Poll::More } else { Poll::Idle })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn texts(v: &Records) -> Vec<String> {
        v.iter().map(|l| String::from_utf8_lossy(l.bytes).into_owned()).collect()
    }

    #[test]
    fn follows_appends_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access.log");
        std::fs::write(&p, "old 1\nold 2\n").unwrap();
        let mut f = Follower::new(&p, 1024, false);
        let mut out = Records::default();
        f.poll_lines(&mut out, 100).unwrap();
        assert!(out.is_empty(), "starts at the end like tail -F");
        let mut w = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        write!(w, "new 1\nnew 2 partial").unwrap();
        w.flush().unwrap();
        f.poll_lines(&mut out, 100).unwrap();
        assert_eq!(texts(&out), ["new 1"]);
        writeln!(w, " done").unwrap();
        f.poll_lines(&mut out, 100).unwrap();
        assert_eq!(texts(&out), ["new 1", "new 2 partial done"]);
        // Rotation: move away, create anew.
        writeln!(w, "last of old").unwrap();
        std::fs::rename(&p, dir.path().join("access.log.1")).unwrap();
        std::fs::write(&p, "rotated 1\n").unwrap();
        out.clear();
        f.poll_lines(&mut out, 100).unwrap();
        f.poll_lines(&mut out, 100).unwrap();
        assert_eq!(texts(&out), ["last of old", "rotated 1"]);
        // Truncation in place, in the middle of a line: the half line is
        // passed on, then the file is read from its start.
        let mut w = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        write!(w, "half a li").unwrap();
        w.flush().unwrap();
        out.clear();
        f.poll_lines(&mut out, 100).unwrap();
        assert!(out.is_empty());
        std::fs::write(&p, "").unwrap();
        f.poll_lines(&mut out, 100).unwrap();
        std::fs::write(&p, "after truncate\n").unwrap();
        f.poll_lines(&mut out, 100).unwrap();
        assert_eq!(texts(&out), ["half a li", "after truncate"]);
    }

    #[test]
    fn waits_for_a_file_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("later.log");
        let mut f = Follower::new(&p, 1024, false);
        let mut out = Records::default();
        f.poll_lines(&mut out, 10).unwrap();
        std::fs::write(&p, "x\n").unwrap();
        f.poll_lines(&mut out, 10).unwrap();
        // The first file opened is read from its end unless from_start; a created-later file
        // counts as the first, so nothing yet.
        assert!(out.is_empty());
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"y\n").unwrap();
        f.poll_lines(&mut out, 10).unwrap();
        assert_eq!(texts(&out), ["y"]);
    }
}
