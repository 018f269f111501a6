//! Standard input in live mode: a thread reads it (a blocking read must not
//! stall the engine loop, which also keeps event time moving when input is
//! quiet) and hands lines over a bounded channel.

use std::io::{self, BufRead};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};

use super::{LineReader, Poll, Position, Records, Source};

/// Lines from stdin, read on a thread of their own.
pub struct StdinSource {
    rx: Receiver<(Vec<u8>, u64, Position)>,
    eof: bool,
}

impl StdinSource {
    /// Starts the reader thread; lines beyond `keep` bytes are cut (and counted whole).
    pub fn spawn(keep: usize) -> Self {
        let (tx, rx) = sync_channel(65_536);
        let spawned = std::thread::Builder::new().name("stdin".into()).spawn(move || {
            let stdin = io::stdin();
            let mut r = LineReader::new(stdin.lock(), keep);
            while let Ok(Some(l)) = r.next_line() {
                if tx.send((l.bytes.to_vec(), l.len, l.pos)).is_err() {
                    break;
                }
            }
            let _ = io::stdin().lock().fill_buf();
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the stdin reader");
        }
        StdinSource { rx, eof: false }
    }
}

impl Source for StdinSource {
    fn name(&self) -> String {
        "-".into()
    }

    fn poll(&mut self, out: &mut Records, max: usize) -> io::Result<Poll> {
        let mut n = 0;
        while n < max && !self.eof {
            match self.rx.try_recv() {
                Ok((bytes, len, pos)) => {
                    out.push(&bytes, len, pos);
                    n += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.eof = true,
            }
        }
        Ok(if self.eof {
            Poll::End
        } else if n == 0 {
            Poll::Idle
        } else {
            Poll::More
        })
    }
}
