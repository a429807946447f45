//! Ground truth: what a model predicted for each recent request id, joined
//! with the labels that arrive later (hours or days after the answer), and
//! how accurate each version is in production — per statistics window and
//! cumulative — next to the shadow's accuracy on the same ids.
//!
//! The join is an in-memory index of recent predictions by id, bounded by
//! count (`max_predictions`) and age (`keep`); the oldest go first and are
//! counted. A request inserts its prediction with one short lock (the
//! classes or values of its rows, not its tensors); labels, the shadow's
//! answers and readers take the same lock. The index is per model, so a
//! label finds its prediction whichever version made it, and it outlives
//! version swaps.

mod tally;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use tally::{AccuracyReport, Cell, ClassReport, Tally};

use crate::backend::{Signature, TensorSpec};
use crate::error::InvalidLabel;
use crate::monitor::{
    FEEDBACK_EVICTED, FEEDBACK_INDEXED, FEEDBACK_LABELS, FEEDBACK_UNKNOWN, LIVE_ACCURACY, LIVE_MAE,
    LIVE_RMSE,
};
use crate::tensor::{DataType, Tensor, TensorData};
use crate::window::{widen, Classes, RollupSpec};

/// Classes a label may name when the judged output does not say (integer
/// labels `[batch]`); bounds the confusion matrices labels can grow.
pub const MAX_CLASSES: usize = 4096;

/// `[feedback]` in a model's config.toml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// Predictions kept for labels at most this long.
    #[serde(with = "crate::serde_duration")]
    pub keep: Duration,
    /// Predictions kept at most (about 150 bytes each); 0 turns the index,
    /// and so the feedback API, off for the model.
    pub max_predictions: usize,
    /// The output labels are judged against. Default: the gate's `output`,
    /// else the first output that names a class (integer labels, or scores
    /// `[batch, K]`), else the first float output of one value per row.
    pub output: Option<String>,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig {
            keep: Duration::from_secs(7 * 24 * 3600),
            max_predictions: 100_000,
            output: None,
        }
    }
}

/// What a version's answers say, in the terms labels are given in.
#[derive(Debug, Clone, PartialEq)]
pub struct Judge {
    /// The output that is judged.
    pub output: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A class per row: the argmax of scores, or an integer label.
    /// `classes`: how many, when the output's shape says (scores `[b, K]`).
    Classifier {
        classes: Classes,
        count: Option<usize>,
    },
    /// One value per row.
    Regression,
}

impl Judge {
    /// The judge of a version with this signature; `None` when no output
    /// can be judged (or the one named is not there: said at load).
    pub fn of(signature: &Signature, output: Option<&str>) -> Result<Option<Judge>, String> {
        let judge = |spec: &TensorSpec| -> Option<Judge> {
            let kind = match Classes::of(spec) {
                Classes::None => {
                    let float = matches!(
                        spec.datatype,
                        DataType::Fp16 | DataType::Fp32 | DataType::Fp64
                    );
                    let one_per_row =
                        spec.shape.len() == 1 || (spec.shape.len() == 2 && spec.shape[1] == 1);
                    if !(float && one_per_row) {
                        return None;
                    }
                    Kind::Regression
                }
                classes => Kind::Classifier {
                    classes,
                    count: (classes == Classes::Argmax).then(|| spec.shape[1] as usize),
                },
            };
            Some(Judge {
                output: spec.name.clone(),
                kind,
            })
        };
        match output {
            Some(name) => {
                let spec = signature
                    .outputs
                    .iter()
                    .find(|s| s.name == name)
                    .ok_or_else(|| {
                        format!("[feedback] output '{name}' is not an output of the model")
                    })?;
                judge(spec).map(Some).ok_or_else(|| {
                    format!("[feedback] output '{name}' names no class and no single value per row")
                })
            }
            None => {
                let classifier = signature
                    .outputs
                    .iter()
                    .filter(|s| Classes::of(s) != Classes::None)
                    .find_map(judge);
                Ok(classifier.or_else(|| signature.outputs.iter().find_map(judge)))
            }
        }
    }

    pub fn classifier(&self) -> bool {
        matches!(self.kind, Kind::Classifier { .. })
    }

    /// What the judged output of an answer says, row by row; `None` when
    /// the answer lacks it.
    pub fn said(&self, outputs: &[Tensor]) -> Option<Said> {
        let t = outputs.iter().find(|t| t.name == self.output)?;
        let n = t.data.len();
        if matches!(t.data, TensorData::Bytes(_)) {
            return None;
        }
        let rows = match t.shape.first() {
            Some(&r) if t.shape.len() > 1 => usize::try_from(r).ok()?,
            _ if t.shape.len() == 1 => n,
            _ => 1,
        };
        // An answer of no rows says nothing to label.
        if rows == 0 || n == 0 || !n.is_multiple_of(rows) {
            return None;
        }
        let per_row = n / rows;
        let mut row = Vec::with_capacity(per_row);
        match self.kind {
            Kind::Classifier { classes, .. } => Some(Said::Classes(
                (0..rows)
                    .map(|r| {
                        row.clear();
                        widen(&t.data, r * per_row..(r + 1) * per_row, &mut row);
                        classes.of_row(&row)
                    })
                    .collect(),
            )),
            Kind::Regression => {
                row.clear();
                widen(&t.data, 0..n, &mut row);
                Some(Said::Values(row.into_iter().step_by(per_row).collect()))
            }
        }
    }
}

/// A prediction's rows: the class of each (`None`: its scores were all
/// NaN), or the value of each.
#[derive(Debug, Clone, PartialEq)]
pub enum Said {
    Classes(Vec<Option<i64>>),
    Values(Vec<f64>),
}

impl Said {
    pub fn rows(&self) -> usize {
        match self {
            Said::Classes(c) => c.len(),
            Said::Values(v) => v.len(),
        }
    }
}

/// One label as sent: the id and a value per row (one value for a request
/// of one row), or why the item is not a label at all.
#[derive(Debug, Clone)]
pub struct LabelIn {
    pub id: String,
    pub values: Result<Vec<f64>, String>,
}

/// What a feedback call did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FeedbackOutcome {
    /// Labels applied (replacements included).
    pub applied: u64,
    /// Of them, labels for ids labelled before: the earlier label is replaced.
    pub replaced: u64,
    /// Ids with no prediction in the index (never seen, evicted, or too old).
    pub unknown: Vec<String>,
    /// Labels refused, with why; the others were applied.
    pub invalid: Vec<InvalidLabel>,
}

/// A prediction waiting for its label.
struct Entry {
    version: u64,
    at: SystemTime,
    judge_classifier: bool,
    said: Said,
    /// Classes a label may take (scores `[b, K]`), when known.
    count: Option<usize>,
    /// The shadow's answer on the same request, once it has run.
    shadow: Option<(String, Said)>,
    /// The label applied, and when it arrived (the window and the periods
    /// it went to).
    label: Option<(Vec<f64>, SystemTime)>,
}

/// One version's tallies: cumulative and by window of label arrival.
#[derive(Default)]
struct VersionTallies {
    classifier: bool,
    cumulative: Tally,
    /// (window number, tally), oldest first; at most `keep` windows.
    windows: VecDeque<(u64, Tally)>,
    /// The same by roll-up period (`State::rollups`, in its order).
    rollups: Vec<VecDeque<(u64, Tally)>>,
    metrics: Option<VersionGauges>,
}

struct VersionGauges {
    accuracy: metrics::Gauge,
    mae: metrics::Gauge,
    rmse: metrics::Gauge,
    labels: metrics::Counter,
}

/// The primary's and the shadow's accuracy on the ids the shadow saw.
#[derive(Default)]
struct Pair {
    classifier: bool,
    primary: Tally,
    shadow: Tally,
}

struct State {
    config: FeedbackConfig,
    window: Duration,
    windows_kept: usize,
    /// Hourly, daily, the checks' period: as the statistics windows'.
    rollups: Vec<RollupSpec>,
    by_id: HashMap<Arc<str>, Entry>,
    /// Ids in the order they were indexed, with when: evicted from the front.
    order: VecDeque<(SystemTime, Arc<str>)>,
    versions: BTreeMap<u64, VersionTallies>,
    /// Keyed by the shadow's target as its report names it.
    pairs: BTreeMap<String, Pair>,
}

/// A model's join of predictions and labels.
pub struct Feedback {
    model: String,
    state: Mutex<State>,
    indexed: metrics::Gauge,
    evicted: metrics::Counter,
    unknown: metrics::Counter,
}

/// The live accuracy of a model: per version, and of the shadow pairs.
#[derive(Debug, Serialize)]
pub struct ModelAccuracy {
    pub model: String,
    /// Predictions in the index now, and its bounds.
    pub indexed: usize,
    pub max_predictions: usize,
    pub keep_seconds: u64,
    pub versions: BTreeMap<String, VersionAccuracy>,
    /// Per shadow target and primary (`version 3 (primary 1)`): the primary
    /// and the shadow on the same labelled ids.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub shadow: BTreeMap<String, PairAccuracy>,
}

#[derive(Debug, Serialize)]
pub struct VersionAccuracy {
    pub task: &'static str,
    pub cumulative: AccuracyReport,
    /// Kept windows, oldest first, by when their labels arrived.
    pub windows: Vec<WindowAccuracy>,
    /// The same by hour and day (UTC), by roll-up name.
    pub rollups: BTreeMap<String, Vec<WindowAccuracy>>,
}

#[derive(Debug, Serialize)]
pub struct WindowAccuracy {
    pub start: String,
    pub end: String,
    #[serde(flatten)]
    pub report: AccuracyReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairAccuracy {
    pub primary: AccuracyReport,
    pub shadow: AccuracyReport,
    /// Shadow accuracy minus the primary's (classifiers).
    pub accuracy_gain: Option<f64>,
}

impl Feedback {
    /// `window`/`windows_kept`: the model's statistics windows, whose
    /// spans the per-window accuracy follows.
    pub fn new(
        model: &str,
        config: FeedbackConfig,
        window: Duration,
        windows_kept: usize,
        rollups: Vec<RollupSpec>,
    ) -> Feedback {
        let m = model.to_string();
        Feedback {
            model: m.clone(),
            state: Mutex::new(State {
                config,
                window: if window.is_zero() {
                    Duration::from_secs(3600)
                } else {
                    window
                },
                windows_kept: windows_kept.max(1),
                rollups,
                by_id: HashMap::new(),
                order: VecDeque::new(),
                versions: BTreeMap::new(),
                pairs: BTreeMap::new(),
            }),
            indexed: metrics::gauge!(FEEDBACK_INDEXED, "model" => m.clone()),
            evicted: metrics::counter!(FEEDBACK_EVICTED, "model" => m.clone()),
            unknown: metrics::counter!(FEEDBACK_UNKNOWN, "model" => m),
        }
    }

    /// New bounds from a changed config.toml; what is indexed stays.
    pub fn configure(
        &self,
        config: FeedbackConfig,
        window: Duration,
        windows_kept: usize,
        rollups: Vec<RollupSpec>,
    ) {
        let mut s = crate::sync::lock(&self.state);
        s.config = config;
        if rollups != s.rollups {
            // Periods are counted in the old lengths: start afresh.
            for t in s.versions.values_mut() {
                t.rollups.clear();
            }
            s.rollups = rollups;
        }
        if !window.is_zero() && window != s.window {
            // Window numbers are counted in the old length: start afresh.
            s.window = window;
            for t in s.versions.values_mut() {
                t.windows.clear();
            }
        }
        s.windows_kept = windows_kept.max(1);
    }

    pub fn enabled(&self) -> bool {
        crate::sync::lock(&self.state).config.max_predictions > 0
    }

    /// Indexes what `version` answered to request `id`. A second answer
    /// under the same id (a client reusing ids) replaces the first.
    pub fn record(&self, id: &str, version: u64, judge: &Judge, said: Said, now: SystemTime) {
        let mut s = crate::sync::lock(&self.state);
        if s.config.max_predictions == 0 {
            return;
        }
        let key: Arc<str> = Arc::from(id);
        let count = match judge.kind {
            Kind::Classifier { count, .. } => count,
            Kind::Regression => None,
        };
        s.by_id.insert(
            key.clone(),
            Entry {
                version,
                at: now,
                judge_classifier: judge.classifier(),
                said,
                count,
                shadow: None,
                label: None,
            },
        );
        s.order.push_back((now, key));
        let evicted = s.evict(now);
        let len = s.by_id.len();
        drop(s);
        if evicted > 0 {
            self.evicted.increment(evicted);
        }
        self.indexed.set(len as f64);
    }

    /// Attaches the shadow's answer to the prediction of `id`. The pair is
    /// the primary that answered and the target: evidence gathered against
    /// another primary (before a promotion, say) never counts for this one.
    pub fn attach_shadow(&self, id: &str, target: &str, said: Said) {
        let mut guard = crate::sync::lock(&self.state);
        let s = &mut *guard;
        let Some(e) = s.by_id.get_mut(id) else {
            return;
        };
        if said.rows() != e.said.rows() {
            return;
        }
        let target = pair_key(e.version, target);
        if let Some((label, _)) = &e.label {
            // Labelled before the shadow answered: counted now.
            let pair = s.pairs.entry(target.clone()).or_default();
            pair.classifier = e.judge_classifier;
            pair.primary.apply(&e.said, label, 1);
            pair.shadow.apply(&said, label, 1);
        }
        e.shadow = Some((target, said));
    }

    /// Applies labels: each valid one to its prediction (replacing an
    /// earlier label of the same id), unknown ids and invalid labels
    /// reported back.
    pub fn label(&self, labels: &[LabelIn], now: SystemTime) -> FeedbackOutcome {
        let mut out = FeedbackOutcome::default();
        let mut guard = crate::sync::lock(&self.state);
        let s = &mut *guard;
        let evicted = s.evict(now);
        let window_no = RollupSpec::period_of(s.window, now);
        let kept = s.windows_kept;
        let rollups = &s.rollups;
        let mut touched = std::collections::BTreeSet::new();
        for (index, item) in labels.iter().enumerate() {
            let invalid = |error: String| InvalidLabel {
                index,
                id: item.id.clone(),
                error,
            };
            let values = match &item.values {
                Ok(v) => v,
                Err(e) => {
                    out.invalid.push(invalid(e.clone()));
                    continue;
                }
            };
            let Some(e) = s.by_id.get_mut(item.id.as_str()) else {
                out.unknown.push(item.id.clone());
                continue;
            };
            if let Err(error) = check(e, values) {
                out.invalid.push(invalid(error));
                continue;
            }
            let tallies = s
                .versions
                .entry(e.version)
                .or_insert_with(|| VersionTallies {
                    classifier: e.judge_classifier,
                    ..VersionTallies::default()
                });
            tallies.rollups.resize_with(rollups.len(), VecDeque::new);
            if let Some((old, arrived)) = e.label.take() {
                tallies.cumulative.apply(&e.said, &old, -1);
                let old_window = RollupSpec::period_of(s.window, arrived);
                if let Some((_, t)) = tallies.windows.iter_mut().find(|(w, _)| *w == old_window) {
                    t.apply(&e.said, &old, -1);
                }
                for (spec, periods) in rollups.iter().zip(&mut tallies.rollups) {
                    let n = RollupSpec::period_of(spec.length, arrived);
                    if let Some((_, t)) = periods.iter_mut().find(|(w, _)| *w == n) {
                        t.apply(&e.said, &old, -1);
                    }
                }
                if let Some((target, shadow_said)) = &e.shadow {
                    if let Some(pair) = s.pairs.get_mut(target) {
                        pair.primary.apply(&e.said, &old, -1);
                        pair.shadow.apply(shadow_said, &old, -1);
                    }
                }
                out.replaced += 1;
            } else {
                let delay = now
                    .duration_since(e.at)
                    .unwrap_or(Duration::ZERO)
                    .as_secs_f64();
                tallies.cumulative.delay(delay);
                window_of(&mut tallies.windows, window_no, kept).delay(delay);
                for (spec, periods) in rollups.iter().zip(&mut tallies.rollups) {
                    let n = RollupSpec::period_of(spec.length, now);
                    window_of(periods, n, spec.keep).delay(delay);
                }
            }
            tallies.cumulative.apply(&e.said, values, 1);
            window_of(&mut tallies.windows, window_no, kept).apply(&e.said, values, 1);
            for (spec, periods) in rollups.iter().zip(&mut tallies.rollups) {
                let n = RollupSpec::period_of(spec.length, now);
                window_of(periods, n, spec.keep).apply(&e.said, values, 1);
            }
            if let Some((target, shadow_said)) = &e.shadow {
                let pair = s.pairs.entry(target.clone()).or_default();
                pair.classifier = e.judge_classifier;
                pair.primary.apply(&e.said, values, 1);
                pair.shadow.apply(shadow_said, values, 1);
            }
            e.label = Some((values.clone(), now));
            out.applied += 1;
            tallies
                .metrics
                .get_or_insert_with(|| VersionGauges::new(&self.model, e.version))
                .labels
                .increment(values.len() as u64);
            touched.insert(e.version);
        }
        // The gauges once per version touched, from the sums (not a whole
        // report per label, under the lock every request also takes).
        for v in touched {
            if let Some(t) = s.versions.get(&v) {
                let (c, rows) = (&t.cumulative, t.cumulative.rows.max(1) as f64);
                if let Some(g) = &t.metrics {
                    if let Some(a) = c.accuracy(t.classifier) {
                        g.accuracy.set(a);
                    } else if c.rows > 0 {
                        g.mae.set(c.abs_error.max(0.0) / rows);
                        g.rmse.set((c.sq_error.max(0.0) / rows).sqrt());
                    }
                }
            }
        }
        let len = s.by_id.len();
        drop(guard);
        if evicted > 0 {
            self.evicted.increment(evicted);
        }
        self.indexed.set(len as f64);
        if !out.unknown.is_empty() {
            self.unknown.increment(out.unknown.len() as u64);
        }
        out
    }

    /// Live accuracy of every version that has labels, and of the shadows.
    pub fn report(&self) -> ModelAccuracy {
        let s = crate::sync::lock(&self.state);
        let periods = |length: Duration, tallies: &VecDeque<(u64, Tally)>, classifier: bool| {
            tallies
                .iter()
                .map(|(w, tally)| WindowAccuracy {
                    start: RollupSpec::period_start(length, *w),
                    end: RollupSpec::period_start(length, *w + 1),
                    report: tally.report(classifier),
                })
                .collect::<Vec<_>>()
        };
        ModelAccuracy {
            model: self.model.clone(),
            indexed: s.by_id.len(),
            max_predictions: s.config.max_predictions,
            keep_seconds: s.config.keep.as_secs(),
            versions: s
                .versions
                .iter()
                .map(|(v, t)| {
                    (
                        v.to_string(),
                        VersionAccuracy {
                            task: if t.classifier {
                                "classification"
                            } else {
                                "regression"
                            },
                            cumulative: t.cumulative.report(t.classifier),
                            windows: periods(s.window, &t.windows, t.classifier),
                            rollups: s
                                .rollups
                                .iter()
                                .zip(&t.rollups)
                                .map(|(spec, p)| {
                                    (spec.name.clone(), periods(spec.length, p, t.classifier))
                                })
                                .collect(),
                        },
                    )
                })
                .collect(),
            shadow: s
                .pairs
                .iter()
                .map(|(k, p)| (k.clone(), p.report()))
                .collect(),
        }
    }

    /// Cumulative live accuracy of one version and its labelled rows.
    pub fn accuracy_of(&self, version: u64) -> Option<(f64, u64)> {
        let s = crate::sync::lock(&self.state);
        let t = s.versions.get(&version)?;
        Some((t.cumulative.accuracy(t.classifier)?, t.cumulative.rows))
    }

    /// Live accuracy of `version` from the labels that arrived in period
    /// `number` of the roll-up of `length`, when it is kept.
    pub fn period(&self, version: u64, length: Duration, number: u64) -> Option<AccuracyReport> {
        let s = crate::sync::lock(&self.state);
        let t = s.versions.get(&version)?;
        let i = s.rollups.iter().position(|r| r.length == length)?;
        let (_, tally) = t.rollups.get(i)?.iter().find(|(n, _)| *n == number)?;
        Some(tally.report(t.classifier))
    }

    /// The primary (version `primary`) and the shadow on the ids the
    /// shadow saw.
    pub fn pair(&self, primary: u64, target: &str) -> Option<PairAccuracy> {
        let s = crate::sync::lock(&self.state);
        s.pairs.get(&pair_key(primary, target)).map(Pair::report)
    }
}

impl Pair {
    fn report(&self) -> PairAccuracy {
        let primary = self.primary.report(self.classifier);
        let shadow = self.shadow.report(self.classifier);
        let accuracy_gain = match (primary.accuracy, shadow.accuracy) {
            (Some(p), Some(s)) => Some(s - p),
            _ => None,
        };
        PairAccuracy {
            primary,
            shadow,
            accuracy_gain,
        }
    }
}

impl VersionGauges {
    fn new(model: &str, version: u64) -> VersionGauges {
        let (m, v) = (model.to_string(), version.to_string());
        VersionGauges {
            accuracy: metrics::gauge!(LIVE_ACCURACY, "model" => m.clone(), "version" => v.clone()),
            mae: metrics::gauge!(LIVE_MAE, "model" => m.clone(), "version" => v.clone()),
            rmse: metrics::gauge!(LIVE_RMSE, "model" => m.clone(), "version" => v.clone()),
            labels: metrics::counter!(FEEDBACK_LABELS, "model" => m, "version" => v),
        }
    }
}

/// How reports name a pair: `version 3 (primary 1)`.
fn pair_key(primary: u64, target: &str) -> String {
    format!("{target} (primary {primary})")
}

/// The tally of window `number`, opened when missing; old ones dropped.
fn window_of(windows: &mut VecDeque<(u64, Tally)>, number: u64, kept: usize) -> &mut Tally {
    if windows.back().is_none_or(|(w, _)| *w < number) {
        windows.push_back((number, Tally::default()));
        while windows.len() > kept {
            windows.pop_front();
        }
    }
    let i = windows
        .iter()
        .rposition(|(w, _)| *w <= number)
        .unwrap_or(windows.len() - 1);
    &mut windows[i].1
}

/// Whether a label fits its prediction: one value per row, and for a
/// classifier whole classes in range.
fn check(e: &Entry, values: &[f64]) -> Result<(), String> {
    if values.len() != e.said.rows() {
        return Err(format!(
            "the request had {} row(s) but {} label value(s) were given",
            e.said.rows(),
            values.len()
        ));
    }
    if e.judge_classifier {
        // Classes a label may name: what the output's shape says, else
        // MAX_CLASSES (each new class is a confusion cell kept for good).
        let k = e.count.unwrap_or(MAX_CLASSES);
        for (row, &v) in values.iter().enumerate() {
            let whole = v.is_finite() && v.fract() == 0.0 && v >= 0.0;
            if !whole || v >= k as f64 {
                return Err(format!("row {row}: label {v} is not a class in 0..{k}"));
            }
        }
    } else if let Some(row) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "row {row}: label {} is not a finite number",
            values[row]
        ));
    }
    Ok(())
}

impl State {
    /// Drops predictions beyond the count and older than `keep`.
    fn evict(&mut self, now: SystemTime) -> u64 {
        let mut evicted = 0;
        let oldest = now
            .checked_sub(self.config.keep)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        while let Some((at, id)) = self.order.front() {
            // Ids indexed again leave stale places in the order: bounded too.
            let over = self.by_id.len() > self.config.max_predictions
                || self.order.len() > 2 * self.config.max_predictions.max(1);
            if !over && *at >= oldest {
                break;
            }
            // The order may hold an id that was indexed again later: only
            // the entry of this time goes.
            if self.by_id.get(id).is_some_and(|e| e.at == *at) {
                self.by_id.remove(id);
                evicted += 1;
            }
            self.order.pop_front();
        }
        evicted
    }
}

#[cfg(test)]
mod tests;
