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

pub mod drift;
pub mod latency;
pub mod sketch;
pub mod summary;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::backend::{Signature, TensorSpec};
use crate::error::ErrorKind;
use crate::sync::lock;
use crate::tensor::{DataType, Tensor, TensorData};
use drift::{BaselineFile, FeatureBins, FeatureDrift};
use latency::LatencyHistogram;
use summary::{Summary, ValueAcc};

/// The drift baseline's file name, next to the model file.
pub const BASELINE_FILE: &str = "baseline.json";

/// Of a large tensor row, at most this many evenly spaced elements feed the
/// whole-tensor quantile sketch (the moments see every element): a
/// 3×64×64 image would otherwise cost 12 288 sketch inserts per row.
const SKETCH_PER_ROW: usize = 256;
/// Elements widened to f64 at a time for the whole-tensor moments.
const WIDEN_BLOCK: usize = 1024;
/// Distinct predicted classes tracked per window; more go to `other`.
const MAX_CLASSES: usize = 1024;

/// How windows are cut and what they summarise.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowConfig {
    pub length: Duration,
    /// Closed windows kept for `/stats`.
    pub keep: usize,
    /// Per-feature summaries for the first this-many features of a
    /// `[batch, features]` tensor.
    pub max_features: usize,
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

/// How a tensor's rows are summarised; fixed at load from the signature.
struct Plan {
    name: String,
    /// Features of a `[batch, features]` tensor, when the model fixes them.
    width: Option<usize>,
    /// Per-feature accumulators (rank-2 tensors with a known width).
    features: usize,
    classes: Classes,
    /// Baseline bins, by feature.
    baseline: Vec<FeatureBins>,
}

/// How an output names a row's predicted class, if it does.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Classes {
    None,
    /// Float scores `[batch, K]`: the predicted class is the argmax.
    Argmax,
    /// Integer labels `[batch]` or `[batch, 1]`: the value is the class.
    Label,
}

impl Classes {
    /// The class kind of an output with this spec.
    pub fn of(spec: &TensorSpec) -> Classes {
        let width = (spec.shape.len() == 2 && spec.shape[1] > 0).then(|| spec.shape[1] as usize);
        let float = matches!(
            spec.datatype,
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64
        );
        let integer = !float && !matches!(spec.datatype, DataType::Bool | DataType::Bytes);
        match width {
            Some(k) if float && k >= 2 => Classes::Argmax,
            Some(1) if integer => Classes::Label,
            None if integer && spec.shape.len() == 1 => Classes::Label,
            _ => Classes::None,
        }
    }

    /// The class of one row, `None` when it has none (NaN scores).
    pub fn of_row(self, row: &[f64]) -> Option<i64> {
        match self {
            Classes::None => None,
            Classes::Label => row.first().filter(|v| v.is_finite()).map(|&v| v as i64),
            Classes::Argmax => {
                let mut best: Option<(usize, f64)> = None;
                for (k, &v) in row.iter().enumerate() {
                    if best.is_none_or(|(_, b)| v > b) && !v.is_nan() {
                        best = Some((k, v));
                    }
                }
                best.map(|(k, _)| k as i64)
            }
        }
    }
}

impl Plan {
    fn new(
        spec: &TensorSpec,
        cfg: &WindowConfig,
        output: bool,
        baseline: Vec<FeatureBins>,
    ) -> Plan {
        let width = (spec.shape.len() == 2 && spec.shape[1] > 0).then(|| spec.shape[1] as usize);
        let classes = if output {
            Classes::of(spec)
        } else {
            Classes::None
        };
        Plan {
            name: spec.name.clone(),
            width,
            features: width.map_or(0, |w| w.min(cfg.max_features)),
            classes,
            baseline,
        }
    }

    fn accumulator(&self) -> TensorAcc {
        TensorAcc {
            rows: 0,
            all: ValueAcc::default(),
            features: vec![ValueAcc::default(); self.features],
            bins: self
                .baseline
                .iter()
                .map(|b| vec![0; b.fractions.len()])
                .collect(),
            classes: BTreeMap::new(),
            other_classes: 0,
        }
    }
}

#[derive(Clone)]
struct TensorAcc {
    rows: u64,
    all: ValueAcc,
    features: Vec<ValueAcc>,
    bins: Vec<Vec<u64>>,
    classes: BTreeMap<i64, u64>,
    other_classes: u64,
}

impl TensorAcc {
    fn merge(&mut self, o: &TensorAcc) {
        self.rows += o.rows;
        self.all.merge(&o.all);
        for (a, b) in self.features.iter_mut().zip(&o.features) {
            a.merge(b);
        }
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        for (&k, &c) in &o.classes {
            self.count_class(k, c);
        }
        self.other_classes += o.other_classes;
    }

    fn count_class(&mut self, class: i64, n: u64) {
        if self.classes.len() < MAX_CLASSES || self.classes.contains_key(&class) {
            *self.classes.entry(class).or_default() += n;
        } else {
            self.other_classes += n;
        }
    }

    /// One tensor of a run: every row, every element. Rows are widened to
    /// f64 into `row` (reused across calls), then each accumulator walks the
    /// part of the row it owns without a per-element branch on its index.
    fn record(&mut self, plan: &Plan, t: &Tensor, row: &mut Vec<f64>) {
        let n = t.data.len();
        let rows = match t.shape.first() {
            Some(&r) if r > 0 => r as usize,
            _ => 1,
        };
        if n == 0 || !n.is_multiple_of(rows) || matches!(t.data, TensorData::Bytes(_)) {
            return;
        }
        let per_row = n / rows;
        self.rows += rows as u64;
        let features = self.features.len().min(per_row);
        // When every feature has its own accumulator, the whole tensor's
        // summary is their merge (see `summary_of_all`): each element is
        // accumulated once. Otherwise the moments see every element and the
        // quantile sketch evenly spaced ones.
        let whole = (features < per_row).then(|| per_row.div_ceil(SKETCH_PER_ROW));
        let binned = self.bins.len().min(per_row);
        // The leading elements each row's per-feature work reads.
        let leading = if plan.classes == Classes::None {
            features.max(binned)
        } else {
            per_row
        };
        for r in 0..rows {
            let base = r * per_row;
            if let Some(stride) = whole {
                // In L1-sized blocks: a 3x64x64 image widened at once
                // would be 96 KiB of f64.
                let mut start = 0;
                while start < per_row {
                    let end = (start + WIDEN_BLOCK).min(per_row);
                    row.clear();
                    widen(&t.data, base + start..base + end, row);
                    self.all.add_moments_slice(row);
                    let first = start.next_multiple_of(stride).min(end);
                    for &v in row[first - start..].iter().step_by(stride) {
                        if v.is_finite() {
                            self.all.add_sketch(v);
                        }
                    }
                    start = end;
                }
            }
            row.clear();
            widen(&t.data, base..base + leading, row);
            for (acc, &v) in self.features.iter_mut().zip(&row[..features]) {
                acc.add(v);
            }
            for ((counts, bins), &v) in self.bins.iter_mut().zip(&plan.baseline).zip(&row[..binned])
            {
                if !v.is_nan() {
                    counts[bins.bin(v)] += 1;
                }
            }
            if let Some(class) = plan.classes.of_row(row) {
                self.count_class(class, 1);
            }
        }
    }

    /// The whole-tensor summary (see `record` for where its quantiles
    /// come from).
    fn summary_of_all(&self, plan: &Plan) -> Summary {
        if plan.features > 0 && Some(plan.features) == plan.width {
            let mut all = ValueAcc::default();
            for f in &self.features {
                all.merge(f);
            }
            all.summary()
        } else {
            self.all.summary()
        }
    }
}

/// Appends elements `range` of `data` to `out` as f64 (BYTES have none).
pub fn widen(data: &TensorData, range: std::ops::Range<usize>, out: &mut Vec<f64>) {
    macro_rules! each {
        ($v:expr) => {
            out.extend($v[range].iter().map(|&x| x as f64))
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v[range].iter().map(|&b| b as u8 as f64)),
        TensorData::Uint8(v) => each!(v),
        TensorData::Uint16(v) => each!(v),
        TensorData::Uint32(v) => each!(v),
        TensorData::Uint64(v) => each!(v),
        TensorData::Int8(v) => each!(v),
        TensorData::Int16(v) => each!(v),
        TensorData::Int32(v) => each!(v),
        TensorData::Int64(v) => each!(v),
        TensorData::Fp16(v) => out.extend(v[range].iter().map(|x| x.to_f64())),
        TensorData::Fp32(v) => each!(v),
        TensorData::Fp64(v) => each!(v),
        TensorData::Bytes(_) => {}
    }
}

/// Where the windows' time comes from: the monotonic clock, or one that a
/// test moves by hand (nanoseconds since its start), so that window
/// lengths are checked exactly rather than against sleeps.
#[derive(Clone)]
pub enum Clock {
    Monotonic(Instant),
    Manual(Arc<AtomicU64>),
}

impl Clock {
    fn elapsed(&self) -> Duration {
        match self {
            Clock::Monotonic(start) => start.elapsed(),
            Clock::Manual(nanos) => Duration::from_nanos(nanos.load(Ordering::Relaxed)),
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
    failures: [AtomicU64; 4],
    /// By schema rule (see `RULES`).
    validation: [AtomicU64; 4],
    /// Requests that lacked an input, by input.
    missing: Vec<AtomicU64>,
    latency: LatencyHistogram,
    closed: Mutex<VecDeque<Arc<WindowReport>>>,
}

const KINDS: [ErrorKind; 4] = [
    ErrorKind::NotFound,
    ErrorKind::InvalidArgument,
    ErrorKind::Unavailable,
    ErrorKind::Internal,
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
    ) -> Result<Windows, String> {
        let mut baseline = baseline.map(|b| b.inputs).unwrap_or_default();
        for (name, b) in &baseline {
            let spec = signature.input(name).ok_or_else(|| {
                format!("baseline names input '{name}', which the model does not have")
            })?;
            if spec.shape.len() != 2
                || (spec.shape[1] > 0 && b.features.len() > spec.shape[1] as usize)
            {
                return Err(format!(
                    "baseline of '{name}' has {} features; the input's shape is {:?} ([batch, features] needed)",
                    b.features.len(),
                    spec.shape
                ));
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
        Ok(Windows {
            model: model.to_string(),
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
        if opened == 0 {
            return None;
        }
        let now = self.clock.elapsed();
        let age = now.saturating_sub(Duration::from_nanos(opened));
        if age < self.config.length {
            return None;
        }
        self.close(age)
    }

    /// Closes the open window now, whatever its age.
    fn close(&self, age: Duration) -> Option<Arc<WindowReport>> {
        // New records open the next window from here on.
        self.opened.store(0, Ordering::Relaxed);
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
        let requests = self.requests.swap(0, Ordering::Relaxed);
        let failures: BTreeMap<&'static str, u64> = KINDS
            .iter()
            .zip(&self.failures)
            .map(|(k, c)| (k.as_str(), c.swap(0, Ordering::Relaxed)))
            .filter(|&(_, c)| c > 0)
            .collect();
        let validation: BTreeMap<&'static str, u64> = RULES
            .iter()
            .zip(&self.validation)
            .map(|(&r, c)| (r, c.swap(0, Ordering::Relaxed)))
            .filter(|&(_, c)| c > 0)
            .collect();
        let missing: Vec<u64> = self
            .missing
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed))
            .collect();
        let latency = self.latency.take();

        let end = SystemTime::now();
        let seconds = age.as_secs_f64();
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
        let drift = self.has_baseline().then(|| self.drift_report(&merged));
        let failed = failures.values().sum();
        let report = Arc::new(WindowReport {
            start: humantime::format_rfc3339_millis(end - age).to_string(),
            end: humantime::format_rfc3339_millis(end).to_string(),
            duration_seconds: seconds,
            requests,
            failed,
            failures,
            validation_failures: validation,
            qps: requests as f64 / seconds.max(1e-9),
            latency_us: Latency {
                p50: latency::quantile(&latency, 0.5),
                p90: latency::quantile(&latency, 0.9),
                p99: latency::quantile(&latency, 0.99),
            },
            inputs: self
                .inputs
                .iter()
                .zip(&merged.inputs)
                .zip(missing)
                .map(|((p, a), m)| tensor(p, a, Some(m)))
                .collect(),
            outputs: self
                .outputs
                .iter()
                .zip(&merged.outputs)
                .map(|(p, a)| tensor(p, a, None))
                .collect(),
            drift,
        });
        let mut closed = lock(&self.closed);
        closed.push_back(report.clone());
        while closed.len() > self.config.keep.max(1) {
            closed.pop_front();
        }
        Some(report)
    }

    fn drift_report(&self, merged: &Shard) -> DriftReport {
        let mut features = Vec::new();
        let mut rows = u64::MAX;
        for (plan, acc) in self.inputs.iter().zip(&merged.inputs) {
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
        }
    }

    /// The closed windows, oldest first.
    pub fn closed(&self) -> Vec<Arc<WindowReport>> {
        lock(&self.closed).iter().cloned().collect()
    }

    /// When the open window opened, if one is open.
    pub fn open_for(&self) -> Option<Duration> {
        let opened = self.opened.load(Ordering::Relaxed);
        (opened != 0).then(|| {
            self.clock
                .elapsed()
                .saturating_sub(Duration::from_nanos(opened))
        })
    }

    pub fn model(&self) -> (&str, u64) {
        (&self.model, self.version)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    pub window_seconds: f64,
    pub windows_kept: usize,
    /// Age of the open window; `None` when no request arrived since the
    /// last one closed.
    pub open_for_seconds: Option<f64>,
    pub windows: Vec<Arc<WindowReport>>,
}

/// One closed window, as `/stats` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    pub start: String,
    pub end: String,
    pub duration_seconds: f64,
    pub requests: u64,
    pub failed: u64,
    /// By error kind (`invalid_argument`, `unavailable`, ...).
    pub failures: BTreeMap<&'static str, u64>,
    /// Schema refusals by rule (`min`, `max`, `allowed`, `nan`).
    pub validation_failures: BTreeMap<&'static str, u64>,
    pub qps: f64,
    /// Of successful requests.
    pub latency_us: Latency,
    pub inputs: Vec<TensorReport>,
    pub outputs: Vec<TensorReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub rows: u64,
    /// Requests that lacked this input (inputs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<u64>,
    /// Every element of the tensor.
    #[serde(flatten)]
    pub summary: Summary,
    /// `features[i]`: feature i of a `[batch, features]` tensor.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<Summary>,
    /// Predicted class → rows (classifier outputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_class: Option<BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    /// Rows the scores come from.
    pub rows: u64,
    pub psi_max: Option<f64>,
    pub ks_max: Option<f64>,
    pub psi_threshold: f64,
    pub ks_threshold: f64,
    pub min_rows: u64,
    pub drifted: bool,
    pub features: Vec<FeatureDrift>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows of `length` on a clock the test moves; one FP32 [-1, 2] input.
    fn windows(length: Duration, keep: usize) -> (Windows, Arc<AtomicU64>) {
        let signature = Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 2],
            }],
            outputs: vec![],
        };
        let config = WindowConfig {
            length,
            keep,
            max_features: 2,
        };
        on_manual_clock(&signature, config, DriftConfig::default(), None, 1)
    }

    /// Windows of model "m" version 1 on a clock the test moves (it starts
    /// at 1 ns: 0 means "no window open").
    fn on_manual_clock(
        signature: &Signature,
        config: WindowConfig,
        drift: DriftConfig,
        baseline: Option<BaselineFile>,
        shards: usize,
    ) -> (Windows, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1));
        let w = Windows::new("m", 1, signature, config, drift, baseline, shards)
            .unwrap()
            .with_clock(Clock::Manual(now.clone()));
        (w, now)
    }

    fn advance(now: &AtomicU64, by: Duration) {
        now.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
    }

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    fn fp32(name: &str, rows: i64, v: Vec<f32>) -> Tensor {
        let width = v.len() as i64 / rows;
        Tensor {
            name: name.into(),
            shape: vec![rows, width],
            data: TensorData::Fp32(v),
        }
    }

    #[test]
    fn classes_of_each_kind_of_output() {
        use DataType::*;
        for (datatype, shape, want) in [
            (Fp32, &[-1, 3][..], Classes::Argmax),
            (Fp64, &[-1, 2], Classes::Argmax),
            (Fp32, &[-1, 1], Classes::None),
            (Fp32, &[-1], Classes::None),
            (Fp32, &[-1, -1], Classes::None),
            (Int64, &[-1], Classes::Label),
            (Int64, &[-1, 1], Classes::Label),
            (Uint8, &[-1], Classes::Label),
            (Int64, &[-1, 3], Classes::None),
            (Int64, &[-1, -1], Classes::None),
            (Int32, &[-1, 1, 1], Classes::None),
            (Bool, &[-1], Classes::None),
            (Bytes, &[-1], Classes::None),
        ] {
            assert_eq!(
                Classes::of(&spec("o", datatype, shape)),
                want,
                "{datatype} {shape:?}"
            );
        }
        let nan = f64::NAN;
        // Argmax: the first of equal maxima; NaN never wins.
        assert_eq!(Classes::Argmax.of_row(&[nan, 1.0, 3.0, 3.0]), Some(2));
        assert_eq!(Classes::Argmax.of_row(&[-5.0, -7.0]), Some(0));
        assert_eq!(Classes::Argmax.of_row(&[nan, nan]), None);
        assert_eq!(Classes::Label.of_row(&[4.0]), Some(4));
        assert_eq!(Classes::Label.of_row(&[-2.0]), Some(-2));
        assert_eq!(Classes::Label.of_row(&[nan]), None);
        assert_eq!(Classes::None.of_row(&[1.0]), None);
    }

    /// Every figure of a closed window against what this test computes
    /// from the rows it records, over two shards (their merge included).
    #[test]
    fn a_window_reports_what_was_recorded() {
        let signature = Signature {
            inputs: vec![spec("x", DataType::Fp32, &[-1, 4])],
            outputs: vec![
                spec("scores", DataType::Fp32, &[-1, 3]),
                spec("label", DataType::Int64, &[-1]),
            ],
        };
        let config = WindowConfig {
            length: Duration::from_secs(1),
            keep: 3,
            max_features: 2,
        };
        let bins = || FeatureBins::new(vec![0.5, 1.5], vec![0.3, 0.4, 0.3]);
        let baseline = BaselineFile {
            inputs: BTreeMap::from([(
                "x".to_string(),
                drift::InputBaseline {
                    features: vec![bins(), bins()],
                },
            )]),
            rows: None,
            source: None,
        };
        let drift_config = DriftConfig {
            min_rows: 1,
            ..DriftConfig::default()
        };
        let (w, now) = on_manual_clock(&signature, config, drift_config, Some(baseline), 2);
        assert!(w.has_baseline());
        let (nan, inf) = (f32::NAN, f32::INFINITY);
        w.record_inputs(
            0,
            &[fp32("x", 2, vec![0.0, 1.0, 2.0, 3.0, 1.0, nan, 5.0, inf])],
        );
        w.record_outputs(
            0,
            &[
                fp32("scores", 2, vec![0.1, 0.7, 0.2, nan, 0.3, 0.9]),
                Tensor {
                    name: "label".into(),
                    shape: vec![2],
                    data: TensorData::Int64(vec![1, 2]),
                },
            ],
        );
        w.record_inputs(1, &[fp32("x", 1, vec![2.0, 2.0, -1.0, 0.5])]);
        w.record_outputs(
            1,
            &[
                fp32("scores", 1, vec![0.5, 0.5, 0.1]),
                Tensor {
                    name: "label".into(),
                    shape: vec![1],
                    data: TensorData::Int64(vec![7]),
                },
            ],
        );
        for failure in [None, None, Some(ErrorKind::InvalidArgument)] {
            w.record_request(Duration::from_micros(250), failure);
        }
        w.record_validation("max");
        w.record_missing("x");
        // Closed by the first tick past its length: 2 s old here.
        advance(&now, Duration::from_nanos(2_000_000_000));
        let r = w.tick().expect("two seconds have passed");

        assert_eq!(w.model(), ("m", 1));
        assert_eq!((r.requests, r.failed), (3, 1));
        assert_eq!(r.failures, BTreeMap::from([("invalid_argument", 1)]));
        assert_eq!(r.validation_failures, BTreeMap::from([("max", 1)]));
        assert_eq!((r.duration_seconds, r.qps), (2.0, 1.5));
        let start = humantime::parse_rfc3339(&r.start).unwrap();
        let end = humantime::parse_rfc3339(&r.end).unwrap();
        assert_eq!(end.duration_since(start).unwrap(), Duration::from_secs(2));
        assert!(r
            .latency_us
            .p50
            .is_some_and(|p| (200.0..=300.0).contains(&p)));

        let x = &r.inputs[0];
        assert_eq!((x.rows, x.missing), (3, Some(1)));
        // The whole tensor: 12 elements, 10 finite.
        let finite = [0.0, 1.0, 2.0, 3.0, 1.0, 5.0, 2.0, 2.0, -1.0, 0.5];
        let mean = finite.iter().sum::<f64>() / 10.0;
        let std = (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 10.0).sqrt();
        let all = &x.summary;
        assert_eq!((all.count, all.nan, all.inf), (12, 1, 1));
        assert!((all.mean.unwrap() - mean).abs() < 1e-12, "{all:?}");
        assert!((all.std.unwrap() - std).abs() < 1e-12, "{all:?}");
        assert_eq!((all.min, all.max), (Some(-1.0), Some(5.0)));
        // Per feature: the first max_features = 2 columns.
        assert_eq!(x.features.len(), 2);
        let f0 = &x.features[0];
        assert_eq!(
            (f0.count, f0.mean, f0.min, f0.max),
            (3, Some(1.0), Some(0.0), Some(2.0))
        );
        let f1 = &x.features[1];
        assert_eq!((f1.count, f1.nan, f1.mean), (3, 1, Some(1.5)));
        // Drift: each feature's values counted in the baseline's bins
        // (edges 0.5, 1.5): feature 0 holds 0, 1, 2; feature 1 holds 1, 2.
        let d = r.drift.as_ref().unwrap();
        assert_eq!(d.rows, 3);
        for (feature, counts) in [(0, [1, 1, 1]), (1, [0, 1, 1])] {
            let (psi, ks) = drift::score(&bins(), &counts).unwrap();
            let got = d.features.iter().find(|f| f.feature == feature).unwrap();
            assert_eq!((got.psi, got.ks), (psi, ks), "feature {feature}");
        }
        // Predicted classes: argmax of the scores (NaN skipped, first of a
        // tie), and the labels as they are.
        let classes = |name: &str| {
            r.outputs
                .iter()
                .find(|o| o.name == name)
                .unwrap()
                .predicted_class
                .clone()
                .unwrap()
        };
        let map = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(classes("scores"), map(&[("0", 1), ("1", 1), ("2", 1)]));
        assert_eq!(classes("label"), map(&[("1", 1), ("2", 1), ("7", 1)]));
        // The next window starts empty.
        w.record_request(Duration::from_micros(1), None);
        advance(&now, Duration::from_nanos(1_000_000_000));
        let next = w.tick().unwrap();
        assert_eq!((next.requests, next.failed, next.inputs[0].rows), (1, 0, 0));
        assert!(next.failures.is_empty() && next.validation_failures.is_empty());
        assert_eq!(next.inputs[0].missing, Some(0));
    }

    /// Drift is flagged when a score passes its threshold over at least
    /// min_rows rows: PSI alone suffices (KS's threshold is out of reach
    /// here), and too few rows never flag.
    #[test]
    fn drift_is_flagged_over_min_rows_by_either_score() {
        let flagged = |min_rows: u64, psi_threshold: f64| {
            let signature = Signature {
                inputs: vec![spec("x", DataType::Fp32, &[-1, 1])],
                outputs: vec![],
            };
            let baseline = BaselineFile {
                inputs: BTreeMap::from([(
                    "x".to_string(),
                    drift::InputBaseline {
                        features: vec![FeatureBins::new(vec![0.5], vec![0.5, 0.5])],
                    },
                )]),
                rows: None,
                source: None,
            };
            let config = WindowConfig {
                length: Duration::from_secs(1),
                keep: 1,
                max_features: 1,
            };
            let drift = DriftConfig {
                psi_threshold,
                ks_threshold: 2.0,
                min_rows,
            };
            let (w, now) = on_manual_clock(&signature, config, drift, Some(baseline), 1);
            // Every row above the edge: PSI about 3.9, KS 0.5.
            w.record_inputs(0, &[fp32("x", 4, vec![1.0; 4])]);
            advance(&now, Duration::from_nanos(1_000_000_000));
            let d = w.tick().unwrap().drift.clone().unwrap();
            assert!(d.psi_max.unwrap() > 3.0 && d.ks_max == Some(0.5), "{d:?}");
            d.drifted
        };
        assert!(flagged(4, 0.25));
        assert!(!flagged(5, 0.25), "4 rows < min_rows 5");
        assert!(!flagged(4, 10.0), "neither score over its threshold");
    }

    /// Tensors the statistics skip: BYTES, and an empty batch.
    #[test]
    fn bytes_and_empty_tensors_add_no_rows() {
        let signature = Signature {
            inputs: vec![
                spec("s", DataType::Bytes, &[-1]),
                spec("x", DataType::Fp32, &[-1, 4]),
            ],
            outputs: vec![],
        };
        let config = WindowConfig {
            length: Duration::from_secs(1),
            keep: 1,
            max_features: 4,
        };
        let (w, now) = on_manual_clock(&signature, config, DriftConfig::default(), None, 1);
        w.record_inputs(
            0,
            &[
                Tensor {
                    name: "s".into(),
                    shape: vec![2],
                    data: TensorData::Bytes(vec![b"a".to_vec(), b"b".to_vec()]),
                },
                Tensor {
                    name: "x".into(),
                    shape: vec![0, 4],
                    data: TensorData::Fp32(vec![]),
                },
            ],
        );
        w.record_request(Duration::from_micros(5), None);
        advance(&now, Duration::from_nanos(1_000_000_000));
        let r = w.tick().unwrap();
        assert_eq!((r.inputs[0].rows, r.inputs[0].summary.count), (0, 0));
        assert_eq!((r.inputs[1].rows, r.inputs[1].summary.count), (0, 0));
        assert!(r.inputs[1].features.iter().all(|f| f.count == 0));
    }

    /// A tensor whose every feature has its own summary: the whole-tensor
    /// summary is their merge; and classes past the first MAX_CLASSES are
    /// counted as "other", while known ones keep counting.
    #[test]
    fn whole_tensor_from_features_and_classes_beyond_the_limit() {
        let signature = Signature {
            inputs: vec![spec("x", DataType::Fp32, &[-1, 2])],
            outputs: vec![spec("label", DataType::Int64, &[-1])],
        };
        let config = WindowConfig {
            length: Duration::from_secs(1),
            keep: 1,
            max_features: 8,
        };
        let (w, now) = on_manual_clock(&signature, config, DriftConfig::default(), None, 1);
        assert!(!w.has_baseline());
        w.record_inputs(0, &[fp32("x", 3, vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0])]);
        let labels: Vec<i64> = (0..MAX_CLASSES as i64 + 1).chain([5]).collect();
        w.record_outputs(
            0,
            &[Tensor {
                name: "label".into(),
                shape: vec![labels.len() as i64],
                data: TensorData::Int64(labels),
            }],
        );
        advance(&now, Duration::from_nanos(1_000_000_000));
        let r = w.tick().unwrap();
        let x = &r.inputs[0];
        assert_eq!(x.features.len(), 2);
        assert_eq!(x.summary.count, 6);
        assert_eq!(x.summary.mean, Some(11.0));
        assert_eq!((x.summary.min, x.summary.max), (Some(1.0), Some(30.0)));
        let classes = r.outputs[0].predicted_class.as_ref().unwrap();
        assert_eq!(classes.len(), MAX_CLASSES + 1, "1024 classes and other");
        assert_eq!(classes["other"], 1);
        assert_eq!(classes["5"], 2);
        assert!(!classes.contains_key(&MAX_CLASSES.to_string()));
        assert!(r.drift.is_none());
    }

    #[test]
    fn a_window_closes_at_its_length_and_only_the_last_n_are_kept() {
        let ms = Duration::from_millis;
        let (w, now) = windows(ms(300), 2);
        advance(&now, ms(5));
        assert!(w.tick().is_none(), "nothing recorded, nothing open");
        let row = Tensor {
            name: "x".into(),
            shape: vec![1, 2],
            data: TensorData::Fp32(vec![1.0, 2.0]),
        };
        for round in 0..4u64 {
            for _ in 0..=round {
                w.record_inputs(0, std::slice::from_ref(&row));
                w.record_request(Duration::from_micros(100), None);
                advance(&now, ms(1));
            }
            // Opened by the round's first record, `round + 1` ms ago.
            advance(&now, ms(299 - (round + 1)));
            assert!(w.tick().is_none(), "round {round}: 299 ms is short of 300");
            assert_eq!(w.open_for(), Some(ms(299)));
            advance(&now, ms(1));
            let closed = w.tick().expect("closes at 300 ms");
            assert_eq!(closed.requests, round + 1);
            assert_eq!(closed.inputs[0].rows, round + 1);
            assert_eq!(closed.duration_seconds, 0.3);
            // None open until the next record, however long the gap.
            advance(&now, ms(1000));
            assert!(w.tick().is_none() && w.open_for().is_none());
        }
        let kept = w.closed();
        assert_eq!(kept.len(), 2, "keep = 2");
        assert_eq!((kept[0].requests, kept[1].requests), (3, 4), "oldest first");
    }
}
