//! Splitting a byte stream into lines with positions.
//!
//! Lines are read as bytes, not `String`s, so that invalid UTF-8 becomes a dead
//! letter instead of an I/O error that would stop the stream, and a line longer
//! than the limit is measured and skipped without being held in memory whole.

use std::io::{self, BufRead};

use super::{Line, Position};

/// Splits a byte stream into lines, keeping at most `keep` bytes of each.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    keep: usize,
    no: u64,
    offset: u64,
    bytes_read: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, keep: usize) -> Self {
        LineReader { inner, buf: Vec::with_capacity(4096), keep, no: 0, offset: 0, bytes_read: 0 }
    }

    /// Bytes consumed so far (for progress).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next line, `None` at end of input. A final line without a newline counts.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let start = self.bytes_read;
        let mut len: u64 = 0;
        let mut saw_any = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            saw_any = true;
            let (take, done) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            let room = self.keep.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..take.min(room)]);
            len += take as u64;
            let consumed = if done { take + 1 } else { take };
            self.inner.consume(consumed);
            self.bytes_read += consumed as u64;
            if done {
                break;
            }
        }
        if !saw_any {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\r') && (self.buf.len() as u64) == len {
            self.buf.pop();
            len -= 1;
        }
        self.no += 1;
        self.offset = start;
        Ok(Some(Line {
            pos: Position::Line { no: self.no, offset: self.offset },
            bytes: &self.buf,
            len,
            rebuild: false,
            entities: super::ALL_ENTITIES,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_positions_and_limits() {
        let data = b"ab\r\ncdefgh\n\nlast".to_vec();
        let mut r = LineReader::new(io::BufReader::with_capacity(3, &data[..]), 4);
        let l = r.next_line().unwrap().unwrap();
        let at = |no, offset| Position::Line { no, offset };
        assert_eq!((l.pos, l.bytes, l.len), (at(1, 0), &b"ab"[..], 2));
        let l = r.next_line().unwrap().unwrap();
        assert_eq!((l.pos, l.bytes, l.len, l.truncated()), (at(2, 4), &b"cdef"[..], 6, true));
        let l = r.next_line().unwrap().unwrap();
        assert_eq!((l.pos, l.bytes.len()), (at(3, 11), 0));
        let l = r.next_line().unwrap().unwrap();
        assert_eq!((l.pos, l.bytes), (at(4, 12), &b"last"[..]));
        assert!(r.next_line().unwrap().is_none());
    }

    #[test]
    fn empty_input() {
        let mut r = LineReader::new(&b""[..], 10);
        assert!(r.next_line().unwrap().is_none());
    }
}
