//! Lines that could not be parsed, kept with their reason and position so that
//! nothing is lost and every failure can be found in its source.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;

use super::{Sink, SinkError, Wants};
use crate::source::Position;

/// Bytes of a rejected line kept verbatim; longer lines keep this prefix and say so.
pub const MAX_RAW_BYTES: usize = 1 << 20;

/// One rejected line.
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    /// Input name (file path, `-` for stdin).
    pub source: &'a str,
    /// Where in the source (`line` and byte `offset` for files).
    #[serde(flatten)]
    pub pos: Position,
    pub reason: &'a str,
    /// The line, when it is valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<&'a str>,
    /// The line's bytes in base64, when it is not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_base64: Option<String>,
    /// Full length of the line in bytes.
    pub bytes: u64,
    /// True when only the first [`MAX_RAW_BYTES`] were kept.
    pub truncated: bool,
}

impl<'a> DeadLetter<'a> {
    pub fn new(source: &'a str, pos: Position, reason: &'a str, raw: &'a [u8], total_bytes: u64) -> Self {
        let kept = &raw[..raw.len().min(MAX_RAW_BYTES)];
        let (raw, raw_base64) = match std::str::from_utf8(kept) {
            Ok(s) => (Some(s), None),
            Err(e) if e.error_len().is_none() && kept.len() < raw.len() => {
                // Cut in the middle of a character by the size limit only.
                (std::str::from_utf8(&kept[..e.valid_up_to()]).ok(), None)
            }
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(kept))),
        };
        DeadLetter {
            source,
            pos,
            reason,
            raw,
            raw_base64,
            bytes: total_bytes,
            truncated: (kept.len() as u64) < total_bytes,
        }
    }
}

/// Appends dead letters as JSON lines.
pub struct DeadLetterSink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    count: u64,
}

impl DeadLetterSink {
    /// The file is created on the first dead letter, so a clean run leaves none.
    pub fn new(path: &Path) -> Self {
        DeadLetterSink { path: path.to_path_buf(), out: None, count: 0 }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, d: &DeadLetter<'_>) -> Result<(), SinkError> {
        let io = |source| SinkError::Io { path: self.path.clone(), source };
        if self.out.is_none() {
            self.out = Some(BufWriter::new(File::create(&self.path).map_err(io)?));
        }
        if let Some(out) = self.out.as_mut() {
            serde_json::to_writer(&mut *out, d)
                .map_err(|e| SinkError::Io { path: self.path.clone(), source: e.into() })?;
            out.write_all(b"\n").map_err(|source| SinkError::Io { path: self.path.clone(), source })?;
        }
        self.count += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(|source| SinkError::Io { path: self.path.clone(), source })?;
        }
        Ok(())
    }
}

impl Sink for DeadLetterSink {
    fn name(&self) -> &str {
        "dead_letters"
    }

    fn wants(&self) -> Wants {
        Wants { dead_letters: true, ..Wants::NONE }
    }

    fn dead_letter(&mut self, dl: &DeadLetter<'_>) -> Result<(), SinkError> {
        self.write(dl)
    }

    fn checkpoint(&mut self) -> Result<(), SinkError> {
        self.flush()
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.flush()
    }
}
