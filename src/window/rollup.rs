//! Hourly and daily summaries (and the daily checks' period), merged from
//! the windows that closed in them.
//!
//! A closed window leaves behind what it recorded in mergeable form —
//! counts, shifted moments, quantile sketches, drift bin counts, class
//! counts, latency buckets (`Recorded`) — and that folds into the open
//! period of every roll-up, so a day's summary is the summary of all its
//! rows, not an average of averages: the quantiles are read from the
//! merged sketch, the drift scores from the merged bins. A period is the
//! span of wall-clock time `[n·length, (n+1)·length)` since the Unix epoch
//! (hours and days in UTC); a window belongs to the period it started in.
//! Only the open period keeps its mergeable state; closed ones keep their
//! report.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::plan::TensorAcc;
use super::report::WindowReport;

/// One roll-up: periods of `length`, the last `keep` closed ones kept.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupSpec {
    /// How `/stats` names it: `hourly`, `daily`, `checks`.
    pub name: String,
    pub length: Duration,
    pub keep: usize,
}

pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(86_400);

impl RollupSpec {
    /// The hourly and daily roll-ups (`keep` 0 leaves one out), and one of
    /// the checks' period when it is neither an hour nor a day.
    pub fn standard(hours: usize, days: usize, check: Option<Duration>) -> Vec<RollupSpec> {
        let mut specs = Vec::new();
        let mut add = |name: &str, length: Duration, keep: usize| {
            if keep > 0
                && !length.is_zero()
                && specs.iter().all(|s: &RollupSpec| s.length != length)
            {
                specs.push(RollupSpec {
                    name: name.into(),
                    length,
                    keep,
                });
            }
        };
        // The checks compare a period with the one before: both kept.
        if let Some(every) = check {
            if every == HOUR {
                add("hourly", HOUR, hours.max(2));
            } else if every == DAY {
                add("daily", DAY, days.max(2));
            }
        }
        add("hourly", HOUR, hours);
        add("daily", DAY, days);
        if let Some(every) = check {
            add("checks", every, 2);
        }
        specs
    }

    /// The number of the period `at` falls in.
    pub fn period_of(length: Duration, at: SystemTime) -> u64 {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        (secs / length.as_secs_f64().max(1e-9)) as u64
    }

    /// Where period `n` of `length` starts, as RFC 3339 (whole seconds).
    pub fn period_start(length: Duration, n: u64) -> String {
        humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_secs_f64(n as f64 * length.as_secs_f64()),
        )
        .to_string()
    }
}

/// What one window (or several, merged) recorded, in mergeable form.
#[derive(Clone)]
pub(crate) struct Recorded {
    pub(crate) inputs: Vec<TensorAcc>,
    pub(crate) outputs: Vec<TensorAcc>,
    pub(crate) requests: u64,
    /// By `ErrorKind`, in `KINDS` order.
    pub(crate) failures: [u64; 5],
    /// By schema rule, in `RULES` order.
    pub(crate) validation: [u64; 4],
    pub(crate) missing: Vec<u64>,
    /// Latency bucket counts.
    pub(crate) latency: Vec<u64>,
    /// The first window's start and the last one's end.
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    /// Time covered by windows (the gaps between them are not).
    pub(crate) seconds: f64,
    pub(crate) windows: u64,
}

impl Recorded {
    pub(crate) fn merge(&mut self, o: &Recorded) {
        for (a, b) in self.inputs.iter_mut().zip(&o.inputs) {
            a.merge(b);
        }
        for (a, b) in self.outputs.iter_mut().zip(&o.outputs) {
            a.merge(b);
        }
        self.requests += o.requests;
        for (a, b) in self.failures.iter_mut().zip(&o.failures) {
            *a += b;
        }
        for (a, b) in self.validation.iter_mut().zip(&o.validation) {
            *a += b;
        }
        for (a, b) in self.missing.iter_mut().zip(&o.missing) {
            *a += b;
        }
        if self.latency.len() < o.latency.len() {
            self.latency.resize(o.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
        self.start = self.start.min(o.start);
        self.end = self.end.max(o.end);
        self.seconds += o.seconds;
        self.windows += o.windows;
    }
}

/// One period's summary, as `/stats` and the checks read it.
#[derive(Debug, Clone, Serialize)]
pub struct RollupReport {
    /// The period's number: `period_start` is `period · length` seconds
    /// after the Unix epoch.
    pub period: u64,
    pub period_start: String,
    pub period_end: String,
    /// The period is over (no window of it can close any more).
    pub complete: bool,
    /// Windows merged into it; `start`/`end` are the first one's start and
    /// the last one's end, `duration_seconds` the time they cover.
    pub windows: u64,
    #[serde(flatten)]
    pub report: WindowReport,
}

pub(crate) struct Rollup {
    pub(crate) spec: RollupSpec,
    /// The open period: its number and what its windows recorded.
    pub(crate) open: Option<(u64, Recorded)>,
    pub(crate) closed: VecDeque<Arc<RollupReport>>,
}

impl Rollup {
    pub(crate) fn new(spec: RollupSpec) -> Rollup {
        Rollup {
            spec,
            open: None,
            closed: VecDeque::new(),
        }
    }

    /// Folds a closed window in. `report` makes a period's report when a
    /// later window closes it.
    pub(crate) fn fold(&mut self, window: &Recorded, report: impl Fn(&Recorded) -> WindowReport) {
        let n = RollupSpec::period_of(self.spec.length, window.start);
        match &mut self.open {
            // A window that started before the open period (it cannot, as
            // windows follow each other; but never lose it): the open one.
            Some((open, acc)) if n <= *open => acc.merge(window),
            _ => {
                if let Some((open, acc)) = self.open.take() {
                    let done = self.report(open, &acc, true, &report);
                    self.closed.push_back(Arc::new(done));
                    while self.closed.len() > self.spec.keep.max(1) {
                        self.closed.pop_front();
                    }
                }
                self.open = Some((n, window.clone()));
            }
        }
    }

    pub(crate) fn report(
        &self,
        period: u64,
        acc: &Recorded,
        complete: bool,
        report: impl Fn(&Recorded) -> WindowReport,
    ) -> RollupReport {
        let stamp = |n: u64| RollupSpec::period_start(self.spec.length, n);
        RollupReport {
            period,
            period_start: stamp(period),
            period_end: stamp(period + 1),
            complete,
            windows: acc.windows,
            report: report(acc),
        }
    }
}
