//! One recorder per model version: every event of a request is recorded
//! through it once, and it writes each where it is read — the V2
//! statistics (`VersionStats`), Prometheus (`VersionMetrics`), and the
//! statistics windows (`Windows`, when on).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::stats::VersionStats;
use super::{InflightGuard, Transport, VersionMetrics, WorkerMetrics, VALIDATION_FAILURES};
use crate::error::ErrorKind;
use crate::window::Windows;

pub struct Recorder {
    model: String,
    /// Shared with the inference threads, which count executions.
    pub stats: Arc<VersionStats>,
    pub metrics: VersionMetrics,
    /// Per-window distribution statistics and drift; `None` when off.
    pub windows: Option<Arc<Windows>>,
}

/// What the inference threads record into, per run rather than per request.
pub struct RunRecorder {
    pub stats: Arc<VersionStats>,
    pub metrics: WorkerMetrics,
    /// Each instance records its runs' tensors in its own shard.
    pub windows: Option<Arc<Windows>>,
}

impl Recorder {
    /// Registers the version's metrics and publishes its facts (see
    /// [`VersionMetrics::new`]).
    pub fn new(
        model: &str,
        version: u64,
        backend: &'static str,
        sha256: &str,
        properties: &BTreeMap<String, String>,
        windows: Option<Arc<Windows>>,
    ) -> Recorder {
        Recorder {
            model: model.to_string(),
            stats: Arc::new(VersionStats::default()),
            metrics: VersionMetrics::new(model, version, backend, sha256, properties),
            windows,
        }
    }

    /// The inference threads' part.
    pub fn for_runs(&self) -> RunRecorder {
        RunRecorder {
            stats: self.stats.clone(),
            metrics: self.metrics.worker.clone(),
            windows: self.windows.clone(),
        }
    }

    /// A request entered the core; the guard counts it out however it ends.
    pub fn start(&self) -> InflightGuard<'_> {
        self.metrics.start()
    }

    /// A request was answered (or failed, with the kind of failure).
    pub fn answered(&self, transport: Transport, took: Duration, failure: Option<ErrorKind>) {
        self.stats.touch();
        match failure {
            None => self.stats.success.record(took),
            Some(_) => self.stats.fail.record(took),
        }
        self.metrics
            .record(transport, took, failure.map(|k| k.as_str()));
        if let Some(w) = &self.windows {
            w.record_request(took, failure);
        }
    }

    /// A request whose caller went away before it was answered (it ran
    /// only if a batch had taken it already).
    pub fn cancelled(&self, transport: Transport) {
        self.metrics.cancelled(transport);
    }

    /// A request was answered by a run: its rows, queue and run time.
    pub fn ran(&self, rows: u64, queue: Duration, compute: Duration) {
        self.stats.queue.record(queue);
        self.stats.compute_infer.record(compute);
        self.stats
            .inference_count
            .fetch_add(rows, Ordering::Relaxed);
        self.metrics.ran(rows, queue, compute);
    }

    /// A request broke the model's schema: `rule` on `input`.
    pub fn refused(&self, input: &str, rule: &'static str) {
        metrics::counter!(VALIDATION_FAILURES,
            "model" => self.model.clone(), "input" => input.to_string(), "rule" => rule)
        .increment(1);
        if let Some(w) = &self.windows {
            w.record_validation(rule);
        }
    }

    /// A request lacked `input`.
    pub fn missing(&self, input: &str) {
        if let Some(w) = &self.windows {
            w.record_missing(input);
        }
    }
}
