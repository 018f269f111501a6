//! Decisions as JSON lines (`decisions.jsonl`): what `eval` reads and what a
//! person greps. Shadow decisions go to `shadow_decisions.jsonl` beside it,
//! created with the first one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Sink, SinkError, Wants};
use crate::decision::Decision;

pub struct DecisionsJsonl {
    path: PathBuf,
    out: BufWriter<File>,
    /// `shadow_decisions.jsonl`, once a shadow rule or model decided.
    shadow: Option<BufWriter<File>>,
    /// Continuing after a failure: the shadow file is appended to, not replaced.
    resumed: bool,
}

impl DecisionsJsonl {
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        let f = File::create(path).map_err(|source| SinkError::Io { path: path.to_path_buf(), source })?;
        Ok(DecisionsJsonl { path: path.to_path_buf(), out: BufWriter::new(f), shadow: None, resumed: false })
    }

    /// Continues the file after a failure: a cut-off last line is removed first.
    pub fn append(path: &Path) -> Result<Self, SinkError> {
        let (f, _) = crate::fsutil::open_lines_for_append(path)
            .map_err(|source| SinkError::Io { path: path.to_path_buf(), source })?;
        Ok(DecisionsJsonl { path: path.to_path_buf(), out: BufWriter::new(f), shadow: None, resumed: true })
    }

    fn shadow_path(&self) -> PathBuf {
        self.path.with_file_name("shadow_decisions.jsonl")
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.io(e))?;
        if let Some(s) = self.shadow.as_mut() {
            s.flush()
                .map_err(|source| SinkError::Io { path: self.path.with_file_name("shadow_decisions.jsonl"), source })?;
        }
        Ok(())
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

    fn shadow_decision(&mut self, d: &Decision) -> Result<(), SinkError> {
        let path = self.shadow_path();
        let io = |source| SinkError::Io { path: path.clone(), source };
        if self.shadow.is_none() {
            let f = if self.resumed {
                crate::fsutil::open_lines_for_append(&path).map(|(f, _)| f)
            } else {
                File::create(&path)
            };
            self.shadow = Some(BufWriter::new(f.map_err(io)?));
        }
        if let Some(out) = self.shadow.as_mut() {
            serde_json::to_writer(&mut *out, d).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), SinkError> {
        self.flush()
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.flush()
    }
}
