//! Live mode's clock: the wall clock, with its backward steps undone.
//!
//! Event time is bounded by the wall clock in live mode (a line from the
//! future cannot drag the watermark along). When the host's wall clock is set
//! back — an NTP step, an operator's `date -s` — that bound would fall behind
//! the event time already seen: lines from gateways with a correct clock would
//! look like lines from the future, and lines stamped by the stepped clock
//! (a gateway on the same host) would be minutes late, so windows would stop
//! moving and detection would stall for as long as the step. So engine time
//! runs on: a step back (the wall clock behind where the monotonic clock says
//! it should be) is kept as an offset, and lines stamped by the stepped clock
//! are moved forward by it (see `Engine::admit_time`). A step forward is
//! followed at once (time did pass, or the clock was fixed), consuming the
//! offset first. Small differences (slewing, the time between two readings)
//! are not steps.

/// A change between two readings larger than this is a step, not drift.
pub const STEP_MS: i64 = 1_000;

/// Engine time in live mode.
#[derive(Debug, Clone, Default)]
pub struct StepClock {
    /// The last reading: (engine time, monotonic ms).
    last: Option<(i64, i64)>,
    /// How far the wall clock is behind engine time (≥ 0).
    behind_ms: i64,
    steps: u64,
}

/// One reading of a [`StepClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Engine time (epoch ms): the wall clock plus `behind_ms`.
    pub now_ms: i64,
    /// The wall clock as the host reads it.
    pub wall_ms: i64,
    /// How far the wall clock was set back and not yet forward again.
    pub behind_ms: i64,
}

impl StepClock {
    /// Reads the host's clocks.
    pub fn read(&mut self) -> Reading {
        self.observe(super::time::now_ms(), monotonic_ms())
    }

    /// Takes one reading of the wall clock and a monotonic clock (both in ms).
    pub fn observe(&mut self, wall_ms: i64, mono_ms: i64) -> Reading {
        if let Some((last_now, last_mono)) = self.last {
            let expected = last_now.saturating_add(mono_ms.saturating_sub(last_mono).max(0));
            let now = wall_ms.saturating_add(self.behind_ms);
            let drift = now.saturating_sub(expected);
            if drift < -STEP_MS {
                self.behind_ms = self.behind_ms.saturating_add(-drift);
                self.steps += 1;
                tracing::warn!(
                    back_s = -drift / 1000,
                    behind_s = self.behind_ms / 1000,
                    "the wall clock was set back: engine time runs on, and lines stamped by the stepped clock are \
                     moved forward by the difference"
                );
            } else if drift > STEP_MS && self.behind_ms > 0 {
                self.behind_ms = self.behind_ms.saturating_sub(drift).max(0);
                self.steps += 1;
                tracing::warn!(behind_s = self.behind_ms / 1000, "the wall clock was set forward");
            }
        }
        let now = wall_ms.saturating_add(self.behind_ms);
        self.last = Some((now, mono_ms));
        Reading { now_ms: now, wall_ms, behind_ms: self.behind_ms }
    }

    /// Steps seen so far, back or forward.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// Milliseconds on a clock that no one sets (CLOCK_MONOTONIC), from an arbitrary origin.
fn monotonic_ms() -> i64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_back_are_undone_and_steps_forward_followed() {
        let mut c = StepClock::default();
        let t = 1_800_000_000_000;
        assert_eq!(c.observe(t, 0).now_ms, t);
        // Ordinary running and a little slew: followed.
        assert_eq!(c.observe(t + 1_000, 1_000).now_ms, t + 1_000);
        assert_eq!(c.observe(t + 1_400, 2_000).now_ms, t + 1_400);
        // Set back ten minutes: engine time runs on.
        let r = c.observe(t + 3_000 - 600_000, 3_600);
        assert_eq!((r.now_ms, r.behind_ms), (t + 3_000, 600_000));
        let r = c.observe(t + 4_000 - 600_000, 4_600);
        assert_eq!(r.now_ms, t + 4_000);
        // Set forward again by the same: the offset is gone, nothing jumps.
        let r = c.observe(t + 5_000, 5_600);
        assert_eq!((r.now_ms, r.behind_ms), (t + 5_000, 0));
        // Forward with no offset (a suspended VM resumes, a clock fixed forward): followed.
        let r = c.observe(t + 3_600_000, 6_600);
        assert_eq!((r.now_ms, r.behind_ms), (t + 3_600_000, 0));
        assert_eq!(c.steps(), 2, "the forward jump with nothing to undo is time passing, not counted");
    }
}
