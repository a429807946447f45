//! Prometheus metrics: the recorder, the names, and the `/metrics` endpoint
//! on its own port. The full set (windows, drift, model facts) grows here.

mod recorder;
mod serve;
pub mod stats;
mod version;
mod window;

pub use recorder::{Recorder, RunRecorder};
pub use serve::scrape;
pub use version::{epoch_seconds, VersionMetrics, WorkerMetrics};
pub use window::publish_window;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `[health]` in a model's config.toml: the thresholds by which the health
/// report judges what this module measures (stale, failing).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// A model older than this (days since `trained_at`) is stale.
    pub max_age_days: f64,
    /// Failed / all requests in the recent window above which the pipeline
    /// answer is `warn`, and `fail`.
    pub error_rate_warn: f64,
    pub error_rate_fail: f64,
    /// Labelled rows needed before live accuracy is judged.
    pub min_labels: u64,
    /// Live accuracy this far below the training accuracy (metadata's
    /// `heldout_accuracy`): the model is wrong.
    pub max_accuracy_drop: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            max_age_days: 90.0,
            error_rate_warn: 0.01,
            error_rate_fail: 0.05,
            min_labels: 100,
            max_accuracy_drop: 0.05,
        }
    }
}

/// Which adapter a request came through: a metric label, nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
    /// A mirrored request to a shadow model (see `rollout::shadow`).
    Shadow,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
            Transport::Shadow => "shadow",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

pub const REQUESTS: &str = "infergate_requests_total";
pub const INFERENCES: &str = "infergate_inferences_total";
pub const REQUEST_FAILURES: &str = "infergate_request_failures_total";
pub const REQUESTS_CANCELLED: &str = "infergate_requests_cancelled_total";
pub const VALIDATION_FAILURES: &str = "infergate_validation_failures_total";
pub const REQUEST_DURATION: &str = "infergate_request_duration_seconds";
pub const QUEUE_DURATION: &str = "infergate_queue_duration_seconds";
pub const COMPUTE_DURATION: &str = "infergate_compute_duration_seconds";
pub const BATCH_SIZE: &str = "infergate_batch_size";
pub const INFLIGHT: &str = "infergate_inflight_requests";
pub const HTTP_INFLIGHT: &str = "infergate_http_requests_in_flight";
pub const QUEUE_DEPTH: &str = "infergate_queue_depth";
pub const MODEL_INFO: &str = "infergate_model_info";
pub const MODEL_LOADED: &str = "infergate_model_loaded_timestamp_seconds";
pub const MODEL_AGE: &str = "infergate_model_age_days";
pub const MODEL_ACCURACY: &str = "infergate_model_training_accuracy";
pub const MODEL_TRAINING_DURATION: &str = "infergate_model_training_duration_seconds";
pub const WINDOW_QPS: &str = "infergate_window_requests_per_second";
pub const WINDOW_ERROR_RATIO: &str = "infergate_window_error_ratio";
pub const WINDOW_LATENCY: &str = "infergate_window_latency_seconds";
pub const WINDOW_VALUE: &str = "infergate_window_value";
pub const WINDOW_NAN: &str = "infergate_window_nan_values";
pub const WINDOW_INF: &str = "infergate_window_inf_values";
pub const WINDOW_MISSING: &str = "infergate_window_missing_inputs";
pub const WINDOW_CLASS: &str = "infergate_window_predicted_class_ratio";
pub const DRIFT_PSI: &str = "infergate_drift_psi";
pub const DRIFT_KS: &str = "infergate_drift_ks";
pub const DRIFT_PSI_MAX: &str = "infergate_drift_psi_max";
pub const DRIFT_KS_MAX: &str = "infergate_drift_ks_max";
pub const DRIFT_DETECTED: &str = "infergate_drift_detected";
pub const DRIFT_PSI_THRESHOLD: &str = "infergate_drift_psi_threshold";
pub const DRIFT_KS_THRESHOLD: &str = "infergate_drift_ks_threshold";
pub const SHADOW_REQUESTS: &str = "infergate_shadow_requests_total";
pub const SHADOW_AGREEMENT: &str = "infergate_shadow_agreement_ratio";
pub const SHADOW_MEAN_ABS_DIFF: &str = "infergate_shadow_mean_abs_diff";
pub const LIVE_ACCURACY: &str = "infergate_live_accuracy";
pub const LIVE_MAE: &str = "infergate_live_mae";
pub const LIVE_RMSE: &str = "infergate_live_rmse";
pub const FEEDBACK_LABELS: &str = "infergate_feedback_labels_total";
pub const FEEDBACK_UNKNOWN: &str = "infergate_feedback_unknown_total";
pub const FEEDBACK_EVICTED: &str = "infergate_feedback_evicted_total";
pub const FEEDBACK_INDEXED: &str = "infergate_feedback_predictions";
pub const LOG_RECORDS: &str = "infergate_log_records_total";
pub const LOG_DROPPED: &str = "infergate_log_dropped_total";
pub const LOG_ERRORS: &str = "infergate_log_errors_total";
pub const LOG_FILES: &str = "infergate_log_files_total";
pub const MODEL_LOAD_FAILURES: &str = "infergate_model_load_failures_total";
pub const MODEL_VERSIONS: &str = "infergate_model_versions";
pub const MODEL_PRIMARY: &str = "infergate_model_primary";
pub const ROLLOUT_GENERATION: &str = "infergate_rollout_generation";

/// Rows per model run.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// 50 µs to 10 s, roughly ×2.5 apart.
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// How often histogram samples are folded into their buckets between
/// scrapes (the exporter's own default upkeep period).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// CPU, resident memory, threads, open file descriptors: read from /proc
/// when /metrics is scraped.
pub(crate) static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the process-wide recorder once (tests start many servers in one
/// process) and describes every metric.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .expect("bucket list is not empty")
                .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding
            // program's); then ours only renders what it records itself.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // The exporter keeps every histogram sample until a render or
            // an upkeep drains it into the buckets: a server nobody
            // scrapes would grow by every request's samples (the soak
            // found it). The exporter's own `install()` runs this;
            // `build_recorder` leaves it to us.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

/// Every metric, described once: a list, one entry per metric, hence long.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS,
        "Inference requests, by model, version and status."
    );
    describe_counter!(
        INFERENCES,
        "Inferences (batch rows) answered, by model and version."
    );
    describe_counter!(
        VALIDATION_FAILURES,
        "Requests refused by the input schema, by model, input and rule."
    );
    describe_counter!(
        REQUEST_FAILURES,
        "Failed inference requests, by model, version and reason (deadline_exceeded: the deadline passed first)."
    );
    describe_counter!(
        REQUESTS_CANCELLED,
        "Inference requests whose caller went away before the answer (not run unless already in a batch)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "From a decoded request to its answer."
    );
    describe_histogram!(
        QUEUE_DURATION,
        Unit::Seconds,
        "Time a request waited for an inference thread."
    );
    describe_histogram!(
        COMPUTE_DURATION,
        Unit::Seconds,
        "Time of the model run a request was part of."
    );
    describe_histogram!(
        BATCH_SIZE,
        "Rows per model run (dynamic batching merges requests)."
    );
    describe_gauge!(INFLIGHT, "Requests being answered now.");
    describe_gauge!(
        HTTP_INFLIGHT,
        "HTTP requests whose headers were read and whose answer is not yet made (bodies still arriving included)."
    );
    describe_gauge!(QUEUE_DEPTH, "Requests waiting for an inference thread.");
    describe_gauge!(
        MODEL_INFO,
        "1 for every loaded model version (0 once unloaded), with its file's sha256 and backend."
    );
    describe_gauge!(
        MODEL_LOADED,
        Unit::Seconds,
        "When the version was loaded, seconds since the epoch."
    );
    describe_gauge!(
        MODEL_AGE,
        "Days since the version was trained (its trained_at metadata)."
    );
    describe_gauge!(
        MODEL_ACCURACY,
        "Held-out accuracy recorded at training time."
    );
    describe_gauge!(
        MODEL_TRAINING_DURATION,
        Unit::Seconds,
        "How long training took."
    );
    describe_gauge!(
        WINDOW_QPS,
        "Requests per second in the last closed statistics window."
    );
    describe_gauge!(
        WINDOW_ERROR_RATIO,
        "Failed / all requests in the last closed window."
    );
    describe_gauge!(
        WINDOW_LATENCY,
        Unit::Seconds,
        "Request latency quantiles of the last closed window."
    );
    describe_gauge!(
        WINDOW_VALUE,
        "Distribution of a tensor (feature=\"all\") or of one feature in the last closed window: stat = mean, std, min, max, p5, median, p95."
    );
    describe_gauge!(
        WINDOW_NAN,
        "NaN elements of a tensor in the last closed window."
    );
    describe_gauge!(
        WINDOW_INF,
        "Infinite elements of a tensor in the last closed window."
    );
    describe_gauge!(
        WINDOW_MISSING,
        "Requests that lacked an input in the last closed window."
    );
    describe_gauge!(
        WINDOW_CLASS,
        "Share of rows predicted as each class in the last closed window."
    );
    describe_gauge!(
        DRIFT_PSI,
        "Population stability index of a feature against the training baseline (last window)."
    );
    describe_gauge!(
        DRIFT_KS,
        "Kolmogorov-Smirnov statistic of a feature against the training baseline (last window)."
    );
    describe_gauge!(DRIFT_PSI_MAX, "Largest feature PSI of the last window.");
    describe_gauge!(
        DRIFT_PSI_THRESHOLD,
        "The PSI above which a feature counts as drifted ([drift] psi_threshold)."
    );
    describe_gauge!(
        DRIFT_KS_THRESHOLD,
        "The KS statistic above which a feature counts as drifted ([drift] ks_threshold)."
    );
    describe_gauge!(
        DRIFT_KS_MAX,
        "Largest feature KS statistic of the last window."
    );
    describe_gauge!(
        DRIFT_DETECTED,
        "1 when the last window crossed a drift threshold, else 0."
    );
    describe_gauge!(
        LIVE_ACCURACY,
        "Right rows over labelled rows since the version loaded (ground truth from the feedback API)."
    );
    describe_gauge!(
        LIVE_MAE,
        "Mean absolute error over labelled rows (regression)."
    );
    describe_gauge!(
        LIVE_RMSE,
        "Root mean squared error over labelled rows (regression)."
    );
    describe_counter!(
        FEEDBACK_LABELS,
        "Labelled rows applied, by model and version."
    );
    describe_counter!(
        FEEDBACK_UNKNOWN,
        "Labels for ids with no prediction in the index (never seen, evicted or too old)."
    );
    describe_counter!(
        FEEDBACK_EVICTED,
        "Predictions dropped from the feedback index before a label came (count or age bound)."
    );
    describe_gauge!(FEEDBACK_INDEXED, "Predictions held for labels now.");
    describe_counter!(LOG_RECORDS, "Records written to the prediction log.");
    describe_counter!(
        LOG_DROPPED,
        "Prediction log records dropped, by reason (queue_full: the writer lagged; write_error)."
    );
    describe_counter!(
        LOG_ERRORS,
        "Prediction log files that could not be opened, written or closed."
    );
    describe_counter!(
        LOG_FILES,
        "Prediction log files closed and renamed into place."
    );
    describe_counter!(
        MODEL_LOAD_FAILURES,
        "Versions that failed to load (reason=load) or were refused by the deployment gate (reason=gate)."
    );
    describe_gauge!(
        MODEL_VERSIONS,
        "Versions of a model on this server, by state (READY; UNAVAILABLE: did not load; FAILED: refused by the gate; UNLOADED: through the API)."
    );
    describe_gauge!(
        MODEL_PRIMARY,
        "The version requests without a version go to (0: none ready; replicas should agree)."
    );
    describe_gauge!(
        ROLLOUT_GENERATION,
        "The generation of the model's rollout.toml this server last applied or wrote (0: none)."
    );
    PROCESS
        .get_or_init(metrics_process::Collector::default)
        .describe();
}

/// A version failed to load, or the deployment gate refused it.
pub fn load_failed(model: &str, refused_by_gate: bool) {
    let reason = if refused_by_gate { "gate" } else { "load" };
    metrics::counter!(MODEL_LOAD_FAILURES, "model" => model.to_string(), "reason" => reason)
        .increment(1);
}

/// What a model's entry holds now, as this server sees it: versions by
/// state, the primary, the rollout file's generation.
pub fn rollout_state(
    model: &str,
    versions: [(&'static str, usize); 4],
    primary: Option<u64>,
    generation: u64,
) {
    for (state, n) in versions {
        metrics::gauge!(MODEL_VERSIONS, "model" => model.to_string(), "state" => state)
            .set(n as f64);
    }
    let primary_gauge = metrics::gauge!(MODEL_PRIMARY, "model" => model.to_string());
    match primary {
        Some(v) => primary_gauge.set(v as f64),
        None => primary_gauge.set(0.0),
    }
    metrics::gauge!(ROLLOUT_GENERATION, "model" => model.to_string()).set(generation as f64);
}

pub struct InflightGuard<'a>(&'a metrics::Gauge);

impl<'a> InflightGuard<'a> {
    /// Counts one in on an in-flight gauge; dropping the guard counts it
    /// out, however the work ends (a future dropped mid-way included).
    pub fn enter(gauge: &'a metrics::Gauge) -> InflightGuard<'a> {
        gauge.increment(1.0);
        InflightGuard(gauge)
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
