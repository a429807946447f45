//! Time for the windows, and the thread that closes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::{WindowReport, Windows};

/// Where the windows' time comes from: the monotonic clock, or one that a
/// test moves by hand (nanoseconds since its start), so that window
/// lengths are checked exactly rather than against sleeps.
#[derive(Clone)]
pub enum Clock {
    Monotonic(Instant),
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub(crate) fn elapsed(&self) -> Duration {
        match self {
            Clock::Monotonic(start) => start.elapsed(),
            Clock::Manual(nanos) => Duration::from_nanos(nanos.load(Ordering::Relaxed)),
        }
    }

    /// Wall-clock time: the system's, or for a manual clock
    /// `manual_epoch()` plus its time (so that periods line up with hours
    /// and days in tests).
    pub(crate) fn wall(&self) -> SystemTime {
        match self {
            Clock::Monotonic(_) => SystemTime::now(),
            Clock::Manual(_) => manual_epoch() + self.elapsed(),
        }
    }
}

/// Where a manual clock's wall time starts: 2026-01-01T00:00:00Z.
pub fn manual_epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// Something that holds windows: the clock asks it for them on every tick.
pub trait WindowSource: Send + Sync + 'static {
    fn windows(&self) -> Vec<Arc<Windows>>;
    /// A window closed (publish it: gauges, logs).
    fn closed(&self, windows: &Windows, report: &WindowReport);
    /// After every tick of the windows: what else runs on the clock (the
    /// scheduled checks).
    fn ticked(&self) {}
}

/// Starts the thread that closes windows on time (checking every `every`).
/// It ends when the source is dropped.
pub fn clock<S: WindowSource>(source: Weak<S>, every: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("window-clock".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(source) = source.upgrade() else {
                return;
            };
            for w in source.windows() {
                if let Some(report) = w.tick() {
                    source.closed(&w, &report);
                }
            }
            source.ticked();
        })
        .map(|_| ())
}
