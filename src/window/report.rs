//! What a closed window says: the documents `/stats` returns.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::drift::FeatureDrift;
use super::summary::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    pub window_seconds: f64,
    pub windows_kept: usize,
    /// Age of the open window; `None` when no request arrived since the
    /// last one closed.
    pub open_for_seconds: Option<f64>,
    pub windows: Vec<Arc<WindowReport>>,
    /// Hourly and daily summaries merged from the windows, by roll-up.
    pub rollups: BTreeMap<String, Vec<Arc<super::RollupReport>>>,
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

impl DriftReport {
    /// The `n` features that drifted most (by PSI), worst first: what the
    /// log warning and the health report name.
    pub fn worst(&self, n: usize) -> Vec<&FeatureDrift> {
        let mut worst: Vec<_> = self.features.iter().collect();
        worst.sort_by(|a, b| b.psi.total_cmp(&a.psi));
        worst.truncate(n);
        worst
    }
}
