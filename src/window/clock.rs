//! Time for the windows, and the thread that closes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

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
}

/// Something that holds windows: the clock asks it for them on every tick.
pub trait WindowSource: Send + Sync + 'static {
    fn windows(&self) -> Vec<Arc<Windows>>;
    /// A window closed (publish it: gauges, logs).
    fn closed(&self, windows: &Windows, report: &WindowReport);
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
        })
        .map(|_| ())
}
