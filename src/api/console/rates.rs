//! The last hour of requests, decisions and dead letters per second, so the
//! console's plots start full when a page opens rather than empty: a thread
//! samples the counters every [`EVERY`] into a ring of fixed size.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus::core::Collector;
use serde::Serialize;

use crate::api::{Metrics, now_ms};

/// How often the counters are read.
pub const EVERY: Duration = Duration::from_secs(5);
/// Samples kept: an hour, plus the one each rate starts from.
const KEEP: usize = 721;

#[derive(Clone, Copy)]
struct Sample {
    ms: i64,
    events: u64,
    decisions: u64,
    dead_letters: u64,
}

impl Sample {
    fn read(m: &Metrics) -> Sample {
        let decisions =
            m.decisions.collect().iter().flat_map(|f| f.get_metric()).map(|c| c.get_counter().get_value() as u64).sum();
        Sample { ms: now_ms(), events: m.events_in.get(), decisions, dead_letters: m.dead_letters.get() }
    }
}

/// Rates between consecutive samples, as columns (what uPlot plots).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Series {
    /// Seconds since the epoch, at the end of each interval.
    pub t: Vec<f64>,
    pub events: Vec<f64>,
    pub decisions: Vec<f64>,
    pub dead_letters: Vec<f64>,
}

/// The sampled counters.
#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
}

impl Rates {
    /// Starts sampling `metrics`; the thread ends once the returned value is dropped.
    pub fn start(metrics: Arc<Metrics>) -> Arc<Rates> {
        let rates = Arc::new(Rates::default());
        rates.push(Sample::read(&metrics));
        let weak: Weak<Rates> = Arc::downgrade(&rates);
        let spawned = std::thread::Builder::new().name("console-rates".into()).spawn(move || {
            loop {
                std::thread::sleep(EVERY);
                let Some(r) = weak.upgrade() else { break };
                r.push(Sample::read(&metrics));
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "the console's rate sampler did not start; its plots stay empty");
        }
        rates
    }

    fn push(&self, s: Sample) {
        if let Ok(mut q) = self.samples.lock() {
            if q.len() == KEEP {
                q.pop_front();
            }
            q.push_back(s);
        }
    }

    /// The sampled hour, with the interval up to `now` (the counters read
    /// again) as its last point.
    pub fn series(&self, metrics: &Metrics) -> Series {
        let now = Sample::read(metrics);
        let Ok(q) = self.samples.lock() else { return Series::default() };
        let mut out = Series::default();
        let points = q.iter().copied().chain(std::iter::once(now));
        let mut prev: Option<Sample> = None;
        for s in points {
            if let Some(p) = prev
                && s.ms > p.ms
            {
                let secs = (s.ms - p.ms) as f64 / 1000.0;
                let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                out.t.push(s.ms as f64 / 1000.0);
                out.events.push(rate(s.events, p.events));
                out.decisions.push(rate(s.decisions, p.decisions));
                out.dead_letters.push(rate(s.dead_letters, p.dead_letters));
            }
            prev = Some(s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_counter_differences_over_time_and_the_ring_is_bounded() {
        let r = Rates::default();
        for i in 0..(KEEP as i64 + 50) {
            r.push(Sample { ms: i * 5_000, events: (i * 500) as u64, decisions: i as u64, dead_letters: 0 });
        }
        assert_eq!(r.samples.lock().unwrap().len(), KEEP);
        let m = Metrics::new().unwrap();
        let s = r.series(&m);
        // KEEP - 1 intervals between samples; the counters read now are
        // below the samples (a fresh registry), which is no negative rate.
        assert_eq!(s.t.len(), KEEP);
        assert!(s.events[..KEEP - 1].iter().all(|&e| (e - 100.0).abs() < 1e-9), "{:?}", &s.events[..3]);
        assert!(s.decisions[..KEEP - 1].iter().all(|&d| (d - 0.2).abs() < 1e-9));
        assert!(s.events.iter().chain(&s.decisions).all(|&x| x >= 0.0));
    }
}
