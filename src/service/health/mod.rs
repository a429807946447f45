//! The four questions of a prediction system that predicts badly, answered
//! from what the server already knows about a model version:
//! 1. is the pipeline erroring? (failures and schema refusals, recent window)
//! 2. is the right model deployed? (version, file sha256, load and training time)
//! 3. is the input data off? (NaN/Inf/missing, refusals, drift)
//! 4. is the model stale or wrong? (age since trained_at against
//!    max_age_days; live accuracy from ground truth against the accuracy
//!    it was trained to, once `min_labels` rows are labelled)
//!
//! Each answer carries a verdict, `ok` < `warn` < `fail`, and the report's
//! verdict is the worst of them. "Recent" is the last closed statistics window.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::checks::rate;
use crate::model::{ModelEntry, ModelVersion};
use crate::monitor::HealthConfig;
use crate::window::{DriftReport, WindowReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub model: String,
    pub version: String,
    pub verdict: Verdict,
    /// The window the rates come from; `None` before one has closed.
    pub window: Option<WindowSpan>,
    pub pipeline: Pipeline,
    pub deployment: Deployment,
    pub input_data: InputData,
    pub staleness: Staleness,
}

#[derive(Debug, Serialize)]
pub struct WindowSpan {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Serialize)]
pub struct Pipeline {
    pub verdict: Verdict,
    pub reason: String,
    pub requests: u64,
    pub failed: u64,
    pub error_rate: f64,
    pub failures: BTreeMap<&'static str, u64>,
    pub validation_failures: BTreeMap<&'static str, u64>,
    pub error_rate_warn: f64,
    pub error_rate_fail: f64,
}

#[derive(Debug, Serialize)]
pub struct Deployment {
    pub verdict: Verdict,
    pub reason: String,
    pub version: String,
    pub sha256: String,
    pub loaded_at: String,
    pub trained_at: Option<String>,
    /// Versions of the model that did not load, with why.
    pub unavailable: BTreeMap<String, String>,
    /// The version requests without a version go to (this one, unless a
    /// version was named), if any is ready.
    pub primary: Option<String>,
    /// Where the primary's traffic is mirrored (`version 3`, `model m`),
    /// if anywhere: `GET …/shadow` has its report.
    pub shadow: Option<String>,
    /// Whether the model keeps its predictions for labels (`[feedback]`):
    /// `GET …/accuracy` has its live accuracy.
    pub feedback: bool,
}

#[derive(Debug, Serialize)]
pub struct InputData {
    pub verdict: Verdict,
    pub reason: String,
    /// NaN (and infinite) elements over all input elements.
    pub nan_rate: f64,
    pub inf_rate: f64,
    /// Requests that lacked an input over all requests.
    pub missing_rate: f64,
    /// Schema refusals over all requests.
    pub validation_failure_rate: f64,
    pub drift: Option<DriftSummary>,
}

#[derive(Debug, Serialize)]
pub struct DriftSummary {
    pub rows: u64,
    pub drifted: bool,
    pub psi_max: Option<f64>,
    pub ks_max: Option<f64>,
    pub psi_threshold: f64,
    pub ks_threshold: f64,
    /// The features with the highest PSI: `input[feature]`.
    pub worst_features: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Staleness {
    pub verdict: Verdict,
    pub reason: String,
    pub age_days: Option<f64>,
    pub max_age_days: f64,
    pub live_accuracy: LiveAccuracy,
}

/// Ground truth's part of question 4.
#[derive(Debug, Serialize)]
pub struct LiveAccuracy {
    pub verdict: Verdict,
    pub reason: String,
    pub accuracy: Option<f64>,
    pub labelled_rows: u64,
    /// From the version's metadata (`heldout_accuracy`).
    pub training_accuracy: Option<f64>,
    pub min_labels: u64,
    pub max_accuracy_drop: f64,
}

/// The report of `version`, one of `entry`'s versions.
pub fn report(version: &ModelVersion, entry: &ModelEntry) -> HealthReport {
    let window = version
        .record
        .windows
        .as_ref()
        .and_then(|w| w.closed().pop());
    let w = window.as_deref();
    let stats_on = version.record.windows.is_some();
    let h = &version.health;
    let pipeline = pipeline(stats_on, h, w);
    let deployment = deployment(version, entry);
    let input_data = input_data(stats_on, w);
    let trained_at = version.properties.get("trained_at").map(String::as_str);
    let mut staleness = staleness(trained_at, h.max_age_days, SystemTime::now());
    let live = entry
        .feedback
        .as_ref()
        .and_then(|f| f.accuracy_of(version.version));
    let training = version
        .properties
        .get("heldout_accuracy")
        .and_then(|a| a.parse::<f64>().ok());
    staleness.live_accuracy = live_accuracy(live, training, h);
    if staleness.live_accuracy.verdict > staleness.verdict {
        staleness.verdict = staleness.live_accuracy.verdict;
        staleness.reason = format!("{}; {}", staleness.live_accuracy.reason, staleness.reason);
    }
    let verdict = [
        pipeline.verdict,
        deployment.verdict,
        input_data.verdict,
        staleness.verdict,
    ]
    .into_iter()
    .max()
    .unwrap_or(Verdict::Ok);
    HealthReport {
        model: version.model.clone(),
        version: version.version.to_string(),
        verdict,
        window: w.map(|w| WindowSpan {
            start: w.start.clone(),
            end: w.end.clone(),
        }),
        pipeline,
        deployment,
        input_data,
        staleness,
    }
}

/// Question 1, from the last closed window (`stats_on`: windows are kept).
fn pipeline(stats_on: bool, h: &HealthConfig, w: Option<&WindowReport>) -> Pipeline {
    let (verdict, reason, requests, failed, failures, validation) = match (stats_on, w) {
        (false, _) => (
            Verdict::Warn,
            "window statistics are off (--stats-window 0): error rates unknown".to_string(),
            0,
            0,
            BTreeMap::new(),
            BTreeMap::new(),
        ),
        (true, None) => (
            Verdict::Ok,
            "no statistics window has closed yet".to_string(),
            0,
            0,
            BTreeMap::new(),
            BTreeMap::new(),
        ),
        (true, Some(w)) => {
            let r = rate(w.failed, w.requests);
            let verdict = if r > h.error_rate_fail {
                Verdict::Fail
            } else if r > h.error_rate_warn {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            let reason = match verdict {
                Verdict::Ok => format!("{} of {} requests failed", w.failed, w.requests),
                _ => format!(
                    "{} of {} requests failed ({:.1} %), above the {} threshold of {:.1} %",
                    w.failed,
                    w.requests,
                    r * 100.0,
                    if verdict == Verdict::Fail {
                        "fail"
                    } else {
                        "warn"
                    },
                    if verdict == Verdict::Fail {
                        h.error_rate_fail
                    } else {
                        h.error_rate_warn
                    } * 100.0
                ),
            };
            (
                verdict,
                reason,
                w.requests,
                w.failed,
                w.failures.clone(),
                w.validation_failures.clone(),
            )
        }
    };
    Pipeline {
        verdict,
        reason,
        requests,
        failed,
        error_rate: rate(failed, requests),
        failures,
        validation_failures: validation,
        error_rate_warn: h.error_rate_warn,
        error_rate_fail: h.error_rate_fail,
    }
}

fn deployment(version: &ModelVersion, entry: &ModelEntry) -> Deployment {
    let unavailable: BTreeMap<String, String> = entry
        .not_ready()
        .map(|(v, reason)| (v.to_string(), reason.to_string()))
        .collect();
    let newest_ready = entry.serving().map(|v| v.version);
    let (verdict, reason) =
        deployment_verdict(version.version, &version.sha256, &unavailable, newest_ready);
    Deployment {
        verdict,
        reason,
        version: version.version.to_string(),
        sha256: version.sha256.clone(),
        loaded_at: humantime::format_rfc3339_seconds(version.loaded_at).to_string(),
        trained_at: version.properties.get("trained_at").cloned(),
        unavailable,
        primary: newest_ready.map(|v| v.to_string()),
        shadow: entry.shadow.as_ref().map(|s| s.spec.target.key()),
        feedback: entry.feedback.is_some(),
    }
}

/// Question 2 for `version`: warn when a newer version on disk failed to
/// load, or the file's sha256 is unknown.
fn deployment_verdict(
    version: u64,
    sha256: &str,
    unavailable: &BTreeMap<String, String>,
    newest_ready: Option<u64>,
) -> (Verdict, String) {
    let newer_failed: Vec<&String> = unavailable
        .keys()
        .filter(|v| v.parse::<u64>().is_ok_and(|v| v > version))
        .collect();
    if !newer_failed.is_empty() {
        let failed = newer_failed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let serving = if newest_ready == Some(version) {
            format!("version {version} serves instead")
        } else {
            format!(
                "requests without a version go to version {}",
                newest_ready.map_or("none".into(), |v| v.to_string())
            )
        };
        (
            Verdict::Warn,
            format!("version {failed} is on disk but failed to load; {serving}"),
        )
    } else if newest_ready != Some(version) {
        (
            Verdict::Ok,
            format!(
                "version {version} is ready; requests without a version go to version {}",
                newest_ready.map_or("none".into(), |v| v.to_string())
            ),
        )
    } else if sha256.is_empty() {
        (Verdict::Warn, "the model file's sha256 is unknown".into())
    } else {
        (Verdict::Ok, format!("version {version} serves"))
    }
}

/// Question 3, from the last closed window.
fn input_data(stats_on: bool, w: Option<&WindowReport>) -> InputData {
    let Some(w) = w else {
        let reason = if !stats_on {
            "window statistics are off (--stats-window 0): inputs are not summarised"
        } else {
            "no statistics window has closed yet"
        };
        let verdict = if !stats_on {
            Verdict::Warn
        } else {
            Verdict::Ok
        };
        return InputData {
            verdict,
            reason: reason.into(),
            nan_rate: 0.0,
            inf_rate: 0.0,
            missing_rate: 0.0,
            validation_failure_rate: 0.0,
            drift: None,
        };
    };
    let elements: u64 = w.inputs.iter().map(|t| t.summary.count).sum();
    let nan: u64 = w.inputs.iter().map(|t| t.summary.nan).sum();
    let inf: u64 = w.inputs.iter().map(|t| t.summary.inf).sum();
    let missing: u64 = w.inputs.iter().filter_map(|t| t.missing).sum();
    let refused: u64 = w.validation_failures.values().sum();
    let drift = w.drift.as_ref().map(drift_summary);
    let mut problems = Vec::new();
    if nan + inf > 0 {
        problems.push(format!("{nan} NaN and {inf} infinite input values"));
    }
    if missing > 0 {
        problems.push(format!("{missing} requests lacked an input"));
    }
    if refused > 0 {
        problems.push(format!("{refused} requests refused by the input schema"));
    }
    let verdict = match &drift {
        Some(d) if d.drifted => Verdict::Fail,
        _ if !problems.is_empty() => Verdict::Warn,
        _ => Verdict::Ok,
    };
    let mut reason = match &drift {
        Some(d) if d.drifted => format!(
            "inputs drifted from the training baseline (psi_max {:.3} vs {}, ks_max {:.3} vs {}; worst: {})",
            d.psi_max.unwrap_or(0.0),
            d.psi_threshold,
            d.ks_max.unwrap_or(0.0),
            d.ks_threshold,
            d.worst_features.join(", ")
        ),
        Some(d) => format!(
            "no drift from the training baseline (psi_max {:.3}, ks_max {:.3} over {} rows)",
            d.psi_max.unwrap_or(0.0),
            d.ks_max.unwrap_or(0.0),
            d.rows
        ),
        None => "no training baseline: drift not checked".to_string(),
    };
    if !problems.is_empty() {
        reason = format!("{reason}; {}", problems.join("; "));
    }
    InputData {
        verdict,
        reason,
        nan_rate: rate(nan, elements),
        inf_rate: rate(inf, elements),
        missing_rate: rate(missing, w.requests),
        validation_failure_rate: rate(refused, w.requests),
        drift,
    }
}

fn drift_summary(d: &DriftReport) -> DriftSummary {
    DriftSummary {
        rows: d.rows,
        drifted: d.drifted,
        psi_max: d.psi_max,
        ks_max: d.ks_max,
        psi_threshold: d.psi_threshold,
        ks_threshold: d.ks_threshold,
        worst_features: d
            .worst(3)
            .iter()
            .map(|f| format!("{}[{}]", f.input, f.feature))
            .collect(),
    }
}

/// Question 4: days from `trained_at` to `now` against `max` days.
fn staleness(trained_at: Option<&str>, max: f64, now: SystemTime) -> Staleness {
    let age = trained_at
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .map(|t| {
            now.duration_since(t)
                .map_or(0.0, |d| d.as_secs_f64() / 86_400.0)
        });
    let (verdict, reason) = match age {
        None => (
            Verdict::Warn,
            "the model carries no trained_at: its age is unknown".to_string(),
        ),
        Some(a) if a > max => (
            Verdict::Fail,
            format!("trained {a:.1} days ago, older than max_age_days {max}"),
        ),
        Some(a) if a > 0.8 * max => (
            Verdict::Warn,
            format!("trained {a:.1} days ago, near max_age_days {max}"),
        ),
        Some(a) => (
            Verdict::Ok,
            format!("trained {a:.1} days ago (max_age_days {max})"),
        ),
    };
    Staleness {
        verdict,
        reason,
        age_days: age,
        max_age_days: max,
        live_accuracy: live_accuracy(None, None, &HealthConfig::default()),
    }
}

/// Live accuracy (`live`: accuracy and labelled rows) against the training
/// accuracy: fails when it fell more than `max_accuracy_drop` below it.
pub fn live_accuracy(
    live: Option<(f64, u64)>,
    training: Option<f64>,
    h: &HealthConfig,
) -> LiveAccuracy {
    let (accuracy, rows) = live.map_or((None, 0), |(a, n)| (Some(a), n));
    let (verdict, reason) = match (accuracy, training) {
        (None, _) => (Verdict::Ok, "no labels yet: live accuracy unknown".to_string()),
        (Some(a), _) if rows < h.min_labels => (
            Verdict::Ok,
            format!(
                "live accuracy {a:.3} over {rows} labelled rows, fewer than min_labels {}: not judged",
                h.min_labels
            ),
        ),
        (Some(a), None) => (
            Verdict::Ok,
            format!("live accuracy {a:.3} over {rows} labelled rows; no training accuracy to compare with"),
        ),
        (Some(a), Some(t)) if t - a > h.max_accuracy_drop => (
            Verdict::Fail,
            format!(
                "live accuracy {a:.3} over {rows} labelled rows is {:.3} below the training accuracy {t:.3} (max_accuracy_drop {})",
                t - a,
                h.max_accuracy_drop
            ),
        ),
        (Some(a), Some(t)) => (
            Verdict::Ok,
            format!("live accuracy {a:.3} over {rows} labelled rows (training {t:.3})"),
        ),
    };
    LiveAccuracy {
        verdict,
        reason,
        accuracy,
        labelled_rows: rows,
        training_accuracy: training,
        min_labels: h.min_labels,
        max_accuracy_drop: h.max_accuracy_drop,
    }
}

#[cfg(test)]
mod tests;
