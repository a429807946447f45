//! A lock-free latency histogram for the current window: log-spaced
//! buckets of atomic counters (2 % wide, 1 µs to ~100 s), so that every
//! request records with one relaxed add, from any thread, and the window's
//! close reads and resets the buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const GAMMA: f64 = 1.02;
const MIN_US: f64 = 1.0;
/// ln(1e8) / ln(1.02): buckets up to 1e8 µs.
pub const BUCKETS: usize = 931;

pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

pub fn bucket(us: f64) -> usize {
    if us <= MIN_US {
        return 0;
    }
    ((us / MIN_US).ln() / GAMMA.ln())
        .ceil()
        .min((BUCKETS - 1) as f64) as usize
}

/// The middle of a bucket, in µs: within 1 % of every value in it.
fn value(bucket: usize) -> f64 {
    if bucket == 0 {
        return MIN_US;
    }
    MIN_US * GAMMA.powi(bucket as i32) * 2.0 / (1.0 + GAMMA)
}

impl LatencyHistogram {
    #[inline]
    pub fn record(&self, d: Duration) {
        self.buckets[bucket(d.as_secs_f64() * 1e6)].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the counts, leaving zeros: what arrives meanwhile goes to the
    /// next window.
    pub fn take(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect()
    }
}

/// Quantiles (µs) of taken counts; `None` when there are none.
pub fn quantile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The value of rank ceil(q·n) (1-based), as Prometheus and HdrHistogram read it.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(value(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_within_a_bucket() {
        let h = LatencyHistogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us * 100));
        }
        let counts = h.take();
        for (q, want) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0)] {
            let got = quantile(&counts, q).unwrap();
            assert!((got - want).abs() <= 0.02 * want, "q{q}: {got} vs {want}");
        }
        assert_eq!(quantile(&h.take(), 0.5), None, "take resets");
    }

    #[test]
    fn small_and_huge_latencies_keep_their_bucket() {
        // Every value reads back within 1 % of itself, a few µs included.
        for us in [1.5, 2.0, 3.0, 7.0, 40.0, 1e3, 1e6, 5e7] {
            let got = value(bucket(us));
            assert!((got - us).abs() <= 0.01 * us, "{us} µs reads {got}");
        }
        assert_eq!(bucket(0.5), 0);
        assert_eq!(value(0), 1.0);
        // Past 100 s everything lands in the last bucket, none beyond it.
        let h = LatencyHistogram::default();
        h.record(Duration::from_secs(1000));
        let counts = h.take();
        assert_eq!(counts.len(), BUCKETS);
        assert_eq!(counts[BUCKETS - 1], 1);
    }
}
