//! The V2 statistics extension's per-version counters (`…/stats`,
//! gRPC ModelStatistics): kept by the inference path, read by the adapters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Cumulative counters of the V2 statistics extension, updated with relaxed
/// atomics: exact totals, no lock on the request path.
#[derive(Default)]
pub struct VersionStats {
    pub inference_count: AtomicU64,
    pub execution_count: AtomicU64,
    pub success: DurationStat,
    pub fail: DurationStat,
    pub queue: DurationStat,
    pub compute_infer: DurationStat,
    /// Milliseconds since the epoch.
    pub last_inference_ms: AtomicU64,
}

#[derive(Default)]
pub struct DurationStat {
    pub count: AtomicU64,
    pub ns: AtomicU64,
}

impl DurationStat {
    pub fn record(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.ns.load(Ordering::Relaxed),
        )
    }
}

impl VersionStats {
    pub fn touch(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_inference_ms.store(ms, Ordering::Relaxed);
    }
}
