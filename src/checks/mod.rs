//! The daily checks: the scheduled tests of MLOps practice, per model.
//!
//! Once a period (`[checks] every`, a day by default, aligned to UTC), or
//! when asked (`POST /v2/models/{m}/checks`), each ready version's last
//! period is judged item by item from its roll-up (`window::rollup`: every
//! window of the period merged) and from the labels that arrived in it
//! (`feedback`):
//! - `requests`: the period had traffic; its error rate (`[health]`'s
//!   `error_rate_warn`/`_fail`);
//! - data quality: `schema_refusals` (requests refused by the schema),
//!   `non_finite` (NaN/Inf input elements), `missing` (requests that lacked
//!   an input), each a rate against `quality_warn`/`quality_fail`;
//! - `drift` over the whole period against the training baseline;
//! - `accuracy_vs_training`: live accuracy against the version's training
//!   accuracy (metadata `heldout_accuracy`), over at least `[health]
//!   min_labels` labelled rows, failing beyond `max_accuracy_drop` and
//!   warning beyond half of it;
//! - `accuracy_vs_previous`: the same against the previous period's.
//!
//! An item that cannot be judged (no baseline, too few labels, a
//! regression model's accuracy) says `skip` and why. The report is kept
//! (`GET …/checks`), published as gauges and logged in one line.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::feedback::AccuracyReport;
use crate::monitor::HealthConfig;
use crate::window::{RollupSpec, WindowReport};

pub const CHECK_STATUS: &str = "infergate_check_status";
pub const CHECK_RUNS: &str = "infergate_check_runs_total";
pub const CHECK_TIMESTAMP: &str = "infergate_check_timestamp_seconds";

/// `[checks]` in a model's config.toml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    /// The period checked; a check runs when one ends.
    #[serde(with = "crate::serde_duration")]
    pub every: Duration,
    /// Refusal, NaN/Inf and missing-input rates above which an item warns,
    /// and fails.
    pub quality_warn: f64,
    pub quality_fail: f64,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        ChecksConfig {
            every: crate::window::rollup::DAY,
            quality_warn: 0.01,
            quality_fail: 0.05,
        }
    }
}

impl ChecksConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.every < Duration::from_secs(1) {
            return Err(format!(
                "[checks] every = {:?} is shorter than a second",
                self.every
            ));
        }
        if !(0.0..=1.0).contains(&self.quality_warn)
            || !(0.0..=1.0).contains(&self.quality_fail)
            || self.quality_warn > self.quality_fail
        {
            return Err(format!(
                "[checks] quality_warn {} and quality_fail {} must be rates with warn <= fail",
                self.quality_warn, self.quality_fail
            ));
        }
        Ok(())
    }
}

/// An item's outcome; a version's is its worst item's (`skip` counts as
/// `pass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Skip,
    Warn,
    Fail,
}

impl Verdict {
    /// As the gauge says it: pass 0, warn 1, fail 2, skip -1.
    fn gauge(self) -> f64 {
        match self {
            Verdict::Pass => 0.0,
            Verdict::Warn => 1.0,
            Verdict::Fail => 2.0,
            Verdict::Skip => -1.0,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Skip => "skip",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    pub name: &'static str,
    pub verdict: Verdict,
    pub reason: String,
    /// The figures the verdict came from.
    pub figures: BTreeMap<&'static str, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionCheck {
    pub verdict: Verdict,
    pub items: Vec<CheckItem>,
}

/// What `GET …/checks` returns: the last check of a model.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub model: String,
    /// `schedule` (a period ended) or `request` (`POST …/checks`).
    pub trigger: &'static str,
    pub ran_at: String,
    pub every_seconds: u64,
    /// The period checked: its number (`period_start` is `period ·
    /// every_seconds` after the Unix epoch), span, and whether it is over
    /// (a check on request looks at the period so far).
    pub period: u64,
    pub period_start: String,
    pub period_end: String,
    pub complete: bool,
    pub verdict: Verdict,
    pub versions: BTreeMap<String, VersionCheck>,
}

/// What one version's check is judged from.
pub struct Evidence<'a> {
    /// The version keeps statistics windows (`[stats] window` is not 0).
    pub stats_on: bool,
    /// The period's roll-up of the version's windows.
    pub data: Option<&'a WindowReport>,
    /// Labels that arrived in the period, and in the one before.
    pub accuracy: Option<&'a AccuracyReport>,
    pub previous_accuracy: Option<&'a AccuracyReport>,
    /// Metadata `heldout_accuracy`.
    pub training_accuracy: Option<f64>,
}

/// `n` of `of` as a fraction; 0 of nothing is 0.
pub fn rate(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

/// `pass` up to `warn`, `warn` up to `fail`, `fail` above.
fn ladder(r: f64, warn: f64, fail: f64) -> Verdict {
    if r > fail {
        Verdict::Fail
    } else if r > warn {
        Verdict::Warn
    } else {
        Verdict::Pass
    }
}

fn item(
    name: &'static str,
    verdict: Verdict,
    reason: String,
    figures: &[(&'static str, f64)],
) -> CheckItem {
    CheckItem {
        name,
        verdict,
        reason,
        figures: figures.iter().copied().collect(),
    }
}

/// Judges one version's period.
pub fn evaluate(e: &Evidence, c: &ChecksConfig, h: &HealthConfig) -> VersionCheck {
    let mut items = Vec::new();
    let requests = e.data.map_or(0, |d| d.requests);
    match e.data.filter(|d| d.requests > 0) {
        _ if !e.stats_on => items.push(item(
            "requests",
            Verdict::Skip,
            "statistics windows are off ([stats] window = \"0s\"): no data checks".into(),
            &[],
        )),
        None => items.push(item(
            "requests",
            Verdict::Warn,
            "no requests in the period".into(),
            &[("requests", 0.0)],
        )),
        Some(d) => {
            let r = rate(d.failed, d.requests);
            let verdict = ladder(r, h.error_rate_warn, h.error_rate_fail);
            items.push(item(
                "requests",
                verdict,
                format!(
                    "{} requests, {} failed ({:.2}%; warn above {}%, fail above {}%)",
                    d.requests,
                    d.failed,
                    100.0 * r,
                    100.0 * h.error_rate_warn,
                    100.0 * h.error_rate_fail
                ),
                &[
                    ("requests", d.requests as f64),
                    ("failed", d.failed as f64),
                    ("error_rate", r),
                ],
            ));
        }
    }
    let quality = |name: &'static str, what: &str, n: u64, of: u64, unit: &str| {
        if of == 0 {
            return item(name, Verdict::Skip, format!("no {unit} in the period"), &[]);
        }
        let r = rate(n, of);
        let verdict = ladder(r, c.quality_warn, c.quality_fail);
        item(
            name,
            verdict,
            format!(
                "{n} of {of} {unit} {what} ({:.3}%; warn above {}%, fail above {}%)",
                100.0 * r,
                100.0 * c.quality_warn,
                100.0 * c.quality_fail
            ),
            &[("count", n as f64), ("of", of as f64), ("rate", r)],
        )
    };
    let (refused, non_finite, elements, missing) = e.data.map_or((0, 0, 0, 0), |d| {
        let inputs = &d.inputs;
        (
            d.validation_failures.values().sum(),
            inputs.iter().map(|t| t.summary.nan + t.summary.inf).sum(),
            inputs.iter().map(|t| t.summary.count).sum(),
            inputs.iter().filter_map(|t| t.missing).sum(),
        )
    });
    items.push(quality(
        "schema_refusals",
        "refused by the input schema",
        refused,
        requests,
        "requests",
    ));
    items.push(quality(
        "non_finite",
        "NaN or Inf",
        non_finite,
        elements,
        "input elements",
    ));
    items.push(quality(
        "missing",
        "lacking an input",
        missing,
        requests,
        "requests",
    ));
    items.push(match e.data.and_then(|d| d.drift.as_ref()) {
        None => item(
            "drift",
            Verdict::Skip,
            "no training baseline (baseline.json) to compare with".into(),
            &[],
        ),
        Some(d) => {
            let figures = [
                ("rows", d.rows as f64),
                ("psi_max", d.psi_max.unwrap_or(0.0)),
                ("ks_max", d.ks_max.unwrap_or(0.0)),
                ("psi_threshold", d.psi_threshold),
                ("ks_threshold", d.ks_threshold),
            ];
            let worst: Vec<String> = d
                .worst(3)
                .iter()
                .map(|f| format!("{}[{}] psi={:.3} ks={:.3}", f.input, f.feature, f.psi, f.ks))
                .collect();
            if d.rows < d.min_rows {
                item(
                    "drift",
                    Verdict::Skip,
                    format!(
                        "{} rows, fewer than min_rows {}: not judged",
                        d.rows, d.min_rows
                    ),
                    &figures,
                )
            } else if d.drifted {
                item(
                    "drift",
                    Verdict::Fail,
                    format!(
                        "inputs drifted over the period's {} rows: {}",
                        d.rows,
                        worst.join(", ")
                    ),
                    &figures,
                )
            } else {
                item(
                    "drift",
                    Verdict::Pass,
                    format!("no drift over the period's {} rows", d.rows),
                    &figures,
                )
            }
        }
    });
    items.push(accuracy_item(
        "accuracy_vs_training",
        "the training accuracy",
        e.accuracy,
        e.training_accuracy.map(|t| (t, None)),
        h,
    ));
    items.push(accuracy_item(
        "accuracy_vs_previous",
        "the previous period's",
        e.accuracy,
        e.previous_accuracy.and_then(|p| {
            p.accuracy
                .filter(|_| p.labelled_rows >= h.min_labels)
                .map(|a| (a, Some(p.labelled_rows)))
        }),
        h,
    ));
    let verdict = items
        .iter()
        .map(|i| match i.verdict {
            Verdict::Skip => Verdict::Pass,
            v => v,
        })
        .max()
        .unwrap_or(Verdict::Pass);
    VersionCheck { verdict, items }
}

/// Live accuracy of the period against `reference` (accuracy, and its
/// labelled rows when it is a period's).
fn accuracy_item(
    name: &'static str,
    against: &str,
    live: Option<&AccuracyReport>,
    reference: Option<(f64, Option<u64>)>,
    h: &HealthConfig,
) -> CheckItem {
    let Some(live) = live.filter(|l| l.labelled_rows > 0) else {
        return item(
            name,
            Verdict::Skip,
            "no labels arrived in the period".into(),
            &[],
        );
    };
    let rows = live.labelled_rows;
    let Some(a) = live.accuracy else {
        return item(
            name,
            Verdict::Skip,
            format!(
                "a regression model (MAE {:.4}, RMSE {:.4} over {rows} labelled rows): no accuracy to compare",
                live.mae.unwrap_or(0.0),
                live.rmse.unwrap_or(0.0)
            ),
            &[("labelled_rows", rows as f64), ("mae", live.mae.unwrap_or(0.0)), ("rmse", live.rmse.unwrap_or(0.0))],
        );
    };
    if rows < h.min_labels {
        return item(
            name,
            Verdict::Skip,
            format!(
                "live accuracy {a:.4} over {rows} labelled rows, fewer than min_labels {}: not judged",
                h.min_labels
            ),
            &[("accuracy", a), ("labelled_rows", rows as f64)],
        );
    }
    let Some((r, r_rows)) = reference else {
        return item(
            name,
            Verdict::Skip,
            format!("live accuracy {a:.4} over {rows} labelled rows; nothing to compare with ({against}: none, or too few labels)"),
            &[("accuracy", a), ("labelled_rows", rows as f64)],
        );
    };
    let drop = r - a;
    let verdict = ladder(drop, h.max_accuracy_drop / 2.0, h.max_accuracy_drop);
    let mut figures = vec![
        ("accuracy", a),
        ("labelled_rows", rows as f64),
        ("reference", r),
        ("drop", drop),
        ("max_accuracy_drop", h.max_accuracy_drop),
    ];
    if let Some(n) = r_rows {
        figures.push(("reference_rows", n as f64));
    }
    item(
        name,
        verdict,
        format!(
            "live accuracy {a:.4} over {rows} labelled rows against {against} {r:.4}: {} {:.4} (warn beyond {:.4}, fail beyond {})",
            if drop > 0.0 { "down" } else { "up" },
            drop.abs(),
            h.max_accuracy_drop / 2.0,
            h.max_accuracy_drop
        ),
        &figures,
    )
}

/// A model's checks: the config, when the next scheduled one is due, and
/// the last reports. One per model, so that it outlives version swaps.
pub struct Checks {
    model: String,
    state: Mutex<State>,
}

struct State {
    config: ChecksConfig,
    scheduled: bool,
    /// The period the schedule is in; a later one means it ended.
    watching: Option<u64>,
    last: Option<Arc<CheckReport>>,
    previous: Option<Arc<CheckReport>>,
}

/// What `GET …/checks` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ChecksView {
    pub model: String,
    /// Checks run on schedule (`[checks]` is in config.toml).
    pub scheduled: bool,
    pub every_seconds: u64,
    /// When the next scheduled check runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_at: Option<String>,
    pub last: Option<Arc<CheckReport>>,
    pub previous: Option<Arc<CheckReport>>,
}

impl Checks {
    /// `config`: `[checks]`; `None`: checks run only when asked for.
    pub fn new(model: &str, config: Option<ChecksConfig>) -> Checks {
        metrics::describe_gauge!(
            CHECK_STATUS,
            "The last check of a model version, by item: pass 0, warn 1, fail 2, skip -1 (item \"all\": the version's verdict)."
        );
        metrics::describe_counter!(CHECK_RUNS, "Checks run, by model and verdict.");
        metrics::describe_gauge!(
            CHECK_TIMESTAMP,
            "When the model's last check ran (Unix seconds)."
        );
        Checks {
            model: model.to_string(),
            state: Mutex::new(State {
                scheduled: config.is_some(),
                config: config.unwrap_or_default(),
                watching: None,
                last: None,
                previous: None,
            }),
        }
    }

    /// A changed config.toml: the reports stay.
    pub fn configure(&self, config: Option<ChecksConfig>) {
        let mut s = crate::sync::lock(&self.state);
        let scheduled = config.is_some();
        let config = config.unwrap_or_default();
        if config.every != s.config.every || !scheduled {
            s.watching = None;
        }
        s.config = config;
        s.scheduled = scheduled;
    }

    pub fn config(&self) -> ChecksConfig {
        crate::sync::lock(&self.state).config.clone()
    }

    /// The period a scheduled check should judge now, if one just ended:
    /// the last complete one (after a pause of several, only the last).
    pub fn due(&self, now: SystemTime) -> Option<u64> {
        let mut s = crate::sync::lock(&self.state);
        if !s.scheduled {
            return None;
        }
        let current = RollupSpec::period_of(s.config.every, now);
        match s.watching.replace(current) {
            Some(w) if current > w => Some(current - 1),
            _ => None,
        }
    }

    /// Keeps a finished check, publishes its gauges and logs it.
    pub fn record(&self, report: CheckReport) -> Arc<CheckReport> {
        let report = Arc::new(report);
        {
            let mut s = crate::sync::lock(&self.state);
            s.previous = s.last.replace(report.clone());
        }
        let m = self.model.clone();
        for (version, v) in &report.versions {
            let gauge = |item: &'static str, verdict: Verdict| {
                metrics::gauge!(CHECK_STATUS, "model" => m.clone(), "version" => version.clone(), "item" => item)
                    .set(verdict.gauge());
            };
            gauge("all", v.verdict);
            for i in &v.items {
                gauge(i.name, i.verdict);
            }
        }
        metrics::counter!(CHECK_RUNS, "model" => m.clone(), "verdict" => report.verdict.as_str())
            .increment(1);
        metrics::gauge!(CHECK_TIMESTAMP, "model" => m)
            .set(crate::monitor::epoch_seconds(SystemTime::now()));
        let failing: Vec<String> = report
            .versions
            .iter()
            .flat_map(|(v, c)| {
                c.items
                    .iter()
                    .filter(|i| i.verdict >= Verdict::Warn)
                    .map(move |i| format!("v{v} {} {}: {}", i.name, i.verdict.as_str(), i.reason))
            })
            .collect();
        let (model, verdict, trigger) = (&report.model, report.verdict.as_str(), report.trigger);
        let (start, end) = (&report.period_start, &report.period_end);
        if report.verdict >= Verdict::Warn {
            tracing::warn!(model = %model, verdict, trigger, period_start = %start, period_end = %end, items = %failing.join("; "), "model checks");
        } else {
            tracing::info!(model = %model, verdict, trigger, period_start = %start, period_end = %end, "model checks passed");
        }
        report
    }

    pub fn view(&self, now: SystemTime) -> ChecksView {
        let s = crate::sync::lock(&self.state);
        let every = s.config.every;
        let next = RollupSpec::period_of(every, now) + 1;
        ChecksView {
            model: self.model.clone(),
            scheduled: s.scheduled,
            every_seconds: every.as_secs(),
            next_at: s.scheduled.then(|| RollupSpec::period_start(every, next)),
            last: s.last.clone(),
            previous: s.previous.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
