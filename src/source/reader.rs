//! A file or stdin read to its end: what `replay` reads.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::{LineReader, Poll, Records, Source};

/// Reads lines until the end of the input.
pub struct ReaderSource {
    name: String,
    lines: LineReader<Box<dyn BufRead + Send>>,
    total: u64,
}

impl ReaderSource {
    /// `path`, read from its start.
    pub fn file(path: &Path, keep: usize) -> io::Result<Self> {
        let f = File::open(path)?;
        let total = f.metadata().map(|m| m.len()).unwrap_or(0);
        let reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, f));
        Ok(ReaderSource { name: path.display().to_string(), lines: LineReader::new(reader, keep), total })
    }

    /// Standard input until it closes.
    pub fn stdin(keep: usize) -> Self {
        let reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, io::stdin()));
        ReaderSource { name: "-".into(), lines: LineReader::new(reader, keep), total: 0 }
    }
}

impl Source for ReaderSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn poll(&mut self, out: &mut Records, max: usize) -> io::Result<Poll> {
        for _ in 0..max {
            match self.lines.next_line()? {
                Some(l) => out.push(l.bytes, l.len, l.pos),
                None => return Ok(Poll::End),
            }
        }
        Ok(Poll::More)
    }

    fn progress(&self) -> Option<(u64, u64)> {
        (self.total > 0).then(|| (self.lines.bytes_read(), self.total))
    }
}
