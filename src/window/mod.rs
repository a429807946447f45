//! Per-window distribution statistics of a model version: what went in,
//! what came out, how fast, how often it failed, and how far the inputs
//! have drifted from the training baseline.
//!
//! A window opens with the first request after the previous one closed and
//! lasts the configured length; the clock thread (`clock`) closes it, merges
//! what was recorded, keeps the summary (the last N windows) and publishes
//! it as gauges. Recording never serialises the hot path:
//! - tensors are recorded by the inference threads, once per run (a whole
//!   batch at a time), each into its own shard: the shard's mutex is only
//!   ever contended by the clock, once per window;
//! - request counts, failures and latency are relaxed atomic adds.

mod clock;
pub mod drift;
pub mod latency;
mod plan;
mod report;
pub mod rollup;
pub mod sketch;
pub mod summary;

pub use clock::{clock, manual_epoch, Clock, WindowSource};
pub use plan::{widen, Classes};
use plan::{Plan, TensorAcc};
pub use report::{Distribution, DriftReport, Latency, TensorReport, WindowReport};
use rollup::{Recorded, Rollup};
pub use rollup::{RollupReport, RollupSpec};

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::backend::Signature;
use crate::error::ErrorKind;
use crate::sync::lock;
use crate::tensor::Tensor;
use drift::{BaselineFile, FeatureDrift};
use latency::LatencyHistogram;
use summary::ValueAcc;

/// The drift baseline's file name, next to the model file.
pub const BASELINE_FILE: &str = "baseline.json";

/// How windows are cut and what they summarise.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowConfig {
    pub length: Duration,
    /// Closed windows kept for `/stats`.
    pub keep: usize,
    /// Per-feature summaries for the first this-many features of a
    /// `[batch, features]` tensor.
    pub max_features: usize,
    /// Longer periods the closed windows are merged into (hourly, daily).
    pub rollups: Vec<RollupSpec>,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            length: Duration::from_secs(60),
            keep: 10,
            max_features: 64,
            rollups: RollupSpec::standard(48, 31, None),
        }
    }
}

/// When drift is flagged.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    pub psi_threshold: f64,
    pub ks_threshold: f64,
    /// Fewer rows than this in a window: scores are reported, never flagged.
    pub min_rows: u64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            psi_threshold: 0.25,
            ks_threshold: 0.2,
            min_rows: 100,
        }
    }
}

/// What one inference thread has recorded in the open window.
#[derive(Clone)]
struct Shard {
    inputs: Vec<TensorAcc>,
    outputs: Vec<TensorAcc>,
    /// Scratch: the row being recorded, as f64.
    row: Vec<f64>,
}

/// The windows of one model version.
pub struct Windows {
    model: String,
    version: u64,
    config: WindowConfig,
    drift: DriftConfig,
    inputs: Vec<Plan>,
    outputs: Vec<Plan>,
    shards: Vec<Mutex<Shard>>,
    empty: Shard,
    /// Nanoseconds after the clock's start at which the open window
    /// opened; 0: none open.
    opened: AtomicU64,
    clock: Clock,
    requests: AtomicU64,
    /// By `ErrorKind` (see `KINDS`).
    failures: [AtomicU64; 5],
    /// By schema rule (see `RULES`).
    validation: [AtomicU64; 4],
    /// Requests that lacked an input, by input.
    missing: Vec<AtomicU64>,
    latency: LatencyHistogram,
    closed: Mutex<VecDeque<Arc<WindowReport>>>,
    rollups: Mutex<Vec<Rollup>>,
}

const KINDS: [ErrorKind; 5] = [
    ErrorKind::NotFound,
    ErrorKind::InvalidArgument,
    ErrorKind::Unavailable,
    ErrorKind::Internal,
    ErrorKind::DeadlineExceeded,
];
const RULES: [&str; 4] = ["min", "max", "allowed", "nan"];

impl Windows {
    /// Windows for a version with this signature, one shard per inference
    /// thread. The baseline, when there is one, must fit the signature.
    pub fn new(
        model: &str,
        version: u64,
        signature: &Signature,
        config: WindowConfig,
        drift: DriftConfig,
        baseline: Option<BaselineFile>,
        shards: usize,
    ) -> Result<Windows, drift::BaselineError> {
        let mut baseline = baseline.map(|b| b.inputs).unwrap_or_default();
        for (name, b) in &baseline {
            let spec = signature.input(name).ok_or_else(|| {
                drift::BaselineError(format!(
                    "baseline names input '{name}', which the model does not have"
                ))
            })?;
            if spec.shape.len() != 2
                || (spec.shape[1] > 0 && b.features.len() > spec.shape[1] as usize)
            {
                return Err(drift::BaselineError(format!(
                    "baseline of '{name}' has {} features; the input's shape is {:?} ([batch, features] needed)",
                    b.features.len(),
                    spec.shape
                )));
            }
        }
        let inputs: Vec<Plan> = signature
            .inputs
            .iter()
            .map(|s| {
                let bins = baseline
                    .remove(&s.name)
                    .map(|b| b.features)
                    .unwrap_or_default();
                Plan::new(s, &config, false, bins)
            })
            .collect();
        let outputs: Vec<Plan> = signature
            .outputs
            .iter()
            .map(|s| Plan::new(s, &config, true, Vec::new()))
            .collect();
        let empty = Shard {
            inputs: inputs.iter().map(Plan::accumulator).collect(),
            outputs: outputs.iter().map(Plan::accumulator).collect(),
            row: Vec::new(),
        };
        let rollups = config.rollups.iter().cloned().map(Rollup::new).collect();
        Ok(Windows {
            model: model.to_string(),
            rollups: Mutex::new(rollups),
            version,
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(empty.clone()))
                .collect(),
            missing: inputs.iter().map(|_| AtomicU64::new(0)).collect(),
            empty,
            inputs,
            outputs,
            config,
            drift,
            opened: AtomicU64::new(0),
            clock: Clock::Monotonic(Instant::now()),
            requests: AtomicU64::new(0),
            failures: Default::default(),
            validation: Default::default(),
            latency: LatencyHistogram::default(),
            closed: Mutex::new(VecDeque::new()),
        })
    }

    /// The same windows on another clock (tests drive a manual one).
    pub fn with_clock(mut self, clock: Clock) -> Windows {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    pub fn has_baseline(&self) -> bool {
        self.inputs.iter().any(|p| !p.baseline.is_empty())
    }

    #[inline]
    fn open(&self) {
        if self.opened.load(Ordering::Relaxed) == 0 {
            let now = (self.clock.elapsed().as_nanos() as u64).max(1);
            let _ = self
                .opened
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The inputs of one run, by the inference thread `shard`.
    pub fn record_inputs(&self, shard: usize, inputs: &[Tensor]) {
        self.open();
        let mut guard = lock(&self.shards[shard % self.shards.len()]);
        let s = &mut *guard;
        for t in inputs {
            if let Some(i) = self.inputs.iter().position(|p| p.name == t.name) {
                s.inputs[i].record(&self.inputs[i], t, &mut s.row);
            }
        }
    }

    /// The outputs of one run.
    pub fn record_outputs(&self, shard: usize, outputs: &[Tensor]) {
        let mut guard = lock(&self.shards[shard % self.shards.len()]);
        let s = &mut *guard;
        for t in outputs {
            if let Some(i) = self.outputs.iter().position(|p| p.name == t.name) {
                s.outputs[i].record(&self.outputs[i], t, &mut s.row);
            }
        }
    }

    /// A finished request: its latency, or what it failed with.
    pub fn record_request(&self, took: Duration, failure: Option<ErrorKind>) {
        self.open();
        self.requests.fetch_add(1, Ordering::Relaxed);
        match failure {
            None => self.latency.record(took),
            Some(kind) => {
                if let Some(i) = KINDS.iter().position(|&k| k == kind) {
                    self.failures[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// A request refused by the schema, by rule.
    pub fn record_validation(&self, rule: &str) {
        if let Some(i) = RULES.iter().position(|&r| r == rule) {
            self.validation[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request that lacked `input`.
    pub fn record_missing(&self, input: &str) {
        if let Some(i) = self.inputs.iter().position(|p| p.name == input) {
            self.missing[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes the open window when its time is up. Returns the summary of
    /// the window it closed.
    pub fn tick(&self) -> Option<Arc<WindowReport>> {
        let opened = self.opened.load(Ordering::Relaxed);
        if opened == 0 || self.age(opened) < self.config.length {
            return None;
        }
        self.close()
    }

    /// The age of a window that opened at `opened` (the field's units).
    fn age(&self, opened: u64) -> Duration {
        self.clock
            .elapsed()
            .saturating_sub(Duration::from_nanos(opened))
    }

    /// Closes the open window now, whatever its age (a check wants every
    /// request so far); `None` when none is open.
    pub fn close_now(&self) -> Option<Arc<WindowReport>> {
        self.close()
    }

    fn close(&self) -> Option<Arc<WindowReport>> {
        // New records open the next window from here on; of two closers
        // (the clock, a check) only one finds it open.
        let opened = self.opened.swap(0, Ordering::Relaxed);
        if opened == 0 {
            return None;
        }
        let recorded = self.take(self.age(opened));
        let report = Arc::new(self.report(&recorded));
        {
            let mut closed = lock(&self.closed);
            closed.push_back(report.clone());
            while closed.len() > self.config.keep.max(1) {
                closed.pop_front();
            }
        }
        for r in lock(&self.rollups).iter_mut() {
            r.fold(&recorded, |acc| self.report(acc));
        }
        Some(report)
    }

    /// Takes what the shards and counters recorded, leaving them empty.
    fn take(&self, age: Duration) -> Recorded {
        let mut merged = self.empty.clone();
        for shard in &self.shards {
            let taken = std::mem::replace(&mut *lock(shard), self.empty.clone());
            for (a, b) in merged.inputs.iter_mut().zip(&taken.inputs) {
                a.merge(b);
            }
            for (a, b) in merged.outputs.iter_mut().zip(&taken.outputs) {
                a.merge(b);
            }
        }
        let swap = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let end = self.clock.wall();
        Recorded {
            inputs: merged.inputs,
            outputs: merged.outputs,
            requests: swap(&self.requests),
            failures: std::array::from_fn(|i| swap(&self.failures[i])),
            validation: std::array::from_fn(|i| swap(&self.validation[i])),
            missing: self.missing.iter().map(swap).collect(),
            latency: self.latency.take(),
            start: end - age,
            end,
            seconds: age.as_secs_f64(),
            windows: 1,
        }
    }

    /// The summary of what one window (or a period's windows) recorded.
    fn report(&self, r: &Recorded) -> WindowReport {
        let failures: BTreeMap<&'static str, u64> = KINDS
            .iter()
            .zip(&r.failures)
            .map(|(k, &c)| (k.as_str(), c))
            .filter(|&(_, c)| c > 0)
            .collect();
        let validation: BTreeMap<&'static str, u64> = RULES
            .iter()
            .zip(&r.validation)
            .map(|(&k, &c)| (k, c))
            .filter(|&(_, c)| c > 0)
            .collect();
        let tensor = |plan: &Plan, acc: &TensorAcc, missing: Option<u64>| TensorReport {
            name: plan.name.clone(),
            rows: acc.rows,
            missing,
            summary: acc.summary_of_all(plan),
            features: acc.features.iter().map(ValueAcc::summary).collect(),
            predicted_class: (plan.classes != Classes::None).then(|| {
                let mut m: BTreeMap<String, u64> = acc
                    .classes
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect();
                if acc.other_classes > 0 {
                    m.insert("other".into(), acc.other_classes);
                }
                m
            }),
        };
        let drift = self.has_baseline().then(|| self.drift_report(&r.inputs));
        WindowReport {
            start: humantime::format_rfc3339_millis(r.start).to_string(),
            end: humantime::format_rfc3339_millis(r.end).to_string(),
            duration_seconds: r.seconds,
            requests: r.requests,
            failed: failures.values().sum(),
            failures,
            validation_failures: validation,
            qps: r.requests as f64 / r.seconds.max(1e-9),
            latency_us: Latency {
                p50: latency::quantile(&r.latency, 0.5),
                p90: latency::quantile(&r.latency, 0.9),
                p99: latency::quantile(&r.latency, 0.99),
            },
            inputs: self
                .inputs
                .iter()
                .zip(&r.inputs)
                .zip(&r.missing)
                .map(|((p, a), &m)| tensor(p, a, Some(m)))
                .collect(),
            outputs: self
                .outputs
                .iter()
                .zip(&r.outputs)
                .map(|(p, a)| tensor(p, a, None))
                .collect(),
            drift,
        }
    }

    /// Every roll-up's periods by name, oldest first, the open one last
    /// (`complete` once its time is over).
    pub fn rollups(&self) -> BTreeMap<String, Vec<Arc<RollupReport>>> {
        let now = self.clock.wall();
        lock(&self.rollups)
            .iter()
            .map(|r| {
                let mut periods: Vec<_> = r.closed.iter().cloned().collect();
                if let Some((n, acc)) = &r.open {
                    let complete = RollupSpec::period_of(r.spec.length, now) > *n;
                    periods.push(Arc::new(r.report(*n, acc, complete, |a| self.report(a))));
                }
                (r.spec.name.clone(), periods)
            })
            .collect()
    }

    /// Period `number` of the roll-up of `length`, when it is kept and had
    /// a window.
    pub fn rollup(&self, length: Duration, number: u64) -> Option<Arc<RollupReport>> {
        let now = self.clock.wall();
        let rollups = lock(&self.rollups);
        let r = rollups.iter().find(|r| r.spec.length == length)?;
        match &r.open {
            Some((n, acc)) if *n == number => {
                let complete = RollupSpec::period_of(length, now) > number;
                Some(Arc::new(
                    r.report(number, acc, complete, |a| self.report(a)),
                ))
            }
            _ => r.closed.iter().find(|p| p.period == number).cloned(),
        }
    }

    /// The wall-clock time the windows go by.
    pub fn now(&self) -> SystemTime {
        self.clock.wall()
    }

    fn drift_report(&self, inputs: &[TensorAcc]) -> DriftReport {
        let mut features = Vec::new();
        let mut rows = u64::MAX;
        for (plan, acc) in self.inputs.iter().zip(inputs) {
            if plan.baseline.is_empty() {
                continue;
            }
            rows = rows.min(acc.rows);
            for (i, (bins, counts)) in plan.baseline.iter().zip(&acc.bins).enumerate() {
                if let Some((psi, ks)) = drift::score(bins, counts) {
                    features.push(FeatureDrift {
                        input: plan.name.clone(),
                        feature: i,
                        psi,
                        ks,
                    });
                }
            }
        }
        let max = |f: fn(&FeatureDrift) -> f64| {
            features
                .iter()
                .map(f)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        };
        let (psi_max, ks_max) = (max(|f| f.psi), max(|f| f.ks));
        let rows = if rows == u64::MAX { 0 } else { rows };
        let drifted = rows >= self.drift.min_rows
            && (psi_max.is_some_and(|p| p > self.drift.psi_threshold)
                || ks_max.is_some_and(|k| k > self.drift.ks_threshold));
        DriftReport {
            rows,
            psi_max,
            ks_max,
            psi_threshold: self.drift.psi_threshold,
            ks_threshold: self.drift.ks_threshold,
            min_rows: self.drift.min_rows,
            drifted,
            features,
        }
    }

    /// What `/stats` shows: the settings, the open window's age and the
    /// closed windows, oldest first.
    pub fn distribution(&self) -> Distribution {
        Distribution {
            window_seconds: self.config.length.as_secs_f64(),
            windows_kept: self.config.keep,
            open_for_seconds: self.open_for().map(|d| d.as_secs_f64()),
            windows: self.closed(),
            rollups: self.rollups(),
        }
    }

    /// The closed windows, oldest first.
    pub fn closed(&self) -> Vec<Arc<WindowReport>> {
        lock(&self.closed).iter().cloned().collect()
    }

    /// When the open window opened, if one is open.
    pub fn open_for(&self) -> Option<Duration> {
        let opened = self.opened.load(Ordering::Relaxed);
        (opened != 0).then(|| self.age(opened))
    }

    pub fn model(&self) -> (&str, u64) {
        (&self.model, self.version)
    }
}

#[cfg(test)]
mod tests;
