//! Decisions as JSON lines (`decisions.jsonl`): what `eval` reads and what a
//! person greps.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Sink, SinkError, Wants};
use crate::decision::Decision;

pub struct DecisionsJsonl {
    path: PathBuf,
    out: BufWriter<File>,
}

impl DecisionsJsonl {
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        let f = File::create(path).map_err(|source| SinkError::Io { path: path.to_path_buf(), source })?;
        Ok(DecisionsJsonl { path: path.to_path_buf(), out: BufWriter::new(f) })
    }

    /// Continues the file after a failure: a cut-off last line is removed first.
    pub fn append(path: &Path) -> Result<Self, SinkError> {
        let (f, _) = crate::fsutil::open_lines_for_append(path)
            .map_err(|source| SinkError::Io { path: path.to_path_buf(), source })?;
        Ok(DecisionsJsonl { path: path.to_path_buf(), out: BufWriter::new(f) })
    }

    fn io(&self, source: std::io::Error) -> SinkError {
        SinkError::Io { path: self.path.clone(), source }
    }
}

impl Sink for DecisionsJsonl {
    fn name(&self) -> &str {
        "decisions_jsonl"
    }

    fn wants(&self) -> Wants {
        Wants { decisions: true, ..Wants::NONE }
    }

    fn decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, d).map_err(|e| self.io(e.into()))?;
        self.out.write_all(b"\n").map_err(|e| self.io(e))
    }

    fn checkpoint(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.io(e))
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.io(e))
    }
}
