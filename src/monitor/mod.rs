//! Prometheus metrics: the recorder, the names, and the `/metrics` endpoint
//! on its own port. The full set (windows, drift, model facts) grows here.

pub mod stats;

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use tokio::net::TcpListener;
use tokio::sync::watch;

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
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            max_age_days: 90.0,
            error_rate_warn: 0.01,
            error_rate_fail: 0.05,
        }
    }
}

/// Which adapter a request came through: a metric label, nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
    /// A mirrored request to a shadow model (see `shadow.rs`).
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

/// Rows per model run.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// 50 µs to 10 s, roughly ×2.5 apart.
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// CPU, resident memory, threads, open file descriptors: read from /proc
/// when /metrics is scraped.
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

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
            handle
        })
        .clone()
}

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
        "Failed inference requests, by model, version and reason."
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
        DRIFT_KS_MAX,
        "Largest feature KS statistic of the last window."
    );
    describe_gauge!(
        DRIFT_DETECTED,
        "1 when the last window crossed a drift threshold, else 0."
    );
    PROCESS
        .get_or_init(metrics_process::Collector::default)
        .describe();
}

/// The metric handles of one model version, registered once when it loads
/// so that recording a request is a few atomic adds: no label strings to
/// build, no registry look-up, no lock on the request path.
pub struct VersionMetrics {
    /// Indexed by `Transport::index()`.
    by_transport: [TransportMetrics; 3],
    inferences: metrics::Counter,
    queue: metrics::Histogram,
    compute: metrics::Histogram,
    inflight: metrics::Gauge,
    info: metrics::Gauge,
    age_days: metrics::Gauge,
    /// Seconds since the epoch, from the model's `trained_at`.
    trained_at: Option<f64>,
    /// For the inference threads.
    pub worker: WorkerMetrics,
}

/// Request outcomes through one transport.
struct TransportMetrics {
    ok: metrics::Counter,
    failed: metrics::Counter,
    /// By `ErrorKind::as_str()`.
    failures: [(&'static str, metrics::Counter); 4],
    duration: metrics::Histogram,
}

impl TransportMetrics {
    fn new(m: &str, v: &str, transport: Transport) -> TransportMetrics {
        use crate::error::ErrorKind as K;
        let p = transport.as_str();
        let failure = |reason: &'static str| {
            (
                reason,
                metrics::counter!(REQUEST_FAILURES, "model" => m.to_string(), "version" => v.to_string(), "protocol" => p, "reason" => reason),
            )
        };
        TransportMetrics {
            ok: metrics::counter!(REQUESTS, "model" => m.to_string(), "version" => v.to_string(), "protocol" => p, "status" => "ok"),
            failed: metrics::counter!(REQUESTS, "model" => m.to_string(), "version" => v.to_string(), "protocol" => p, "status" => "error"),
            failures: [
                failure(K::NotFound.as_str()),
                failure(K::InvalidArgument.as_str()),
                failure(K::Unavailable.as_str()),
                failure(K::Internal.as_str()),
            ],
            duration: metrics::histogram!(REQUEST_DURATION, "model" => m.to_string(), "version" => v.to_string(), "protocol" => p),
        }
    }
}

/// What the inference threads record: per run, not per request.
#[derive(Clone)]
pub struct WorkerMetrics {
    pub batch_size: metrics::Histogram,
    pub queue_depth: metrics::Gauge,
}

fn epoch_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl VersionMetrics {
    /// Registers the version's metrics and publishes its facts (sha256,
    /// backend, load time, training metadata from the model file).
    pub fn new(
        model: &str,
        version: u64,
        backend: &'static str,
        sha256: &str,
        properties: &std::collections::BTreeMap<String, String>,
    ) -> VersionMetrics {
        let (m, v) = (model.to_string(), version.to_string());
        let fact = |name: &'static str| metrics::gauge!(name, "model" => m.clone(), "version" => v.clone());
        let number = |key: &str| properties.get(key).and_then(|x| x.parse::<f64>().ok());
        let info = metrics::gauge!(MODEL_INFO, "model" => m.clone(), "version" => v.clone(),
            "sha256" => sha256.to_string(), "backend" => backend);
        info.set(1.0);
        fact(MODEL_LOADED).set(epoch_seconds(std::time::SystemTime::now()));
        if let Some(a) = number("heldout_accuracy") {
            fact(MODEL_ACCURACY).set(a);
        }
        if let Some(t) = number("training_seconds") {
            fact(MODEL_TRAINING_DURATION).set(t);
        }
        let trained_at = properties
            .get("trained_at")
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .map(epoch_seconds);
        let metrics = VersionMetrics {
            by_transport: [Transport::Http, Transport::Grpc, Transport::Shadow]
                .map(|t| TransportMetrics::new(&m, &v, t)),
            inferences: metrics::counter!(INFERENCES, "model" => m.clone(), "version" => v.clone()),
            queue: metrics::histogram!(QUEUE_DURATION, "model" => m.clone(), "version" => v.clone()),
            compute: metrics::histogram!(COMPUTE_DURATION, "model" => m.clone(), "version" => v.clone()),
            inflight: fact(INFLIGHT),
            info,
            age_days: fact(MODEL_AGE),
            trained_at,
            worker: WorkerMetrics {
                batch_size: metrics::histogram!(BATCH_SIZE, "model" => m.clone(), "version" => v.clone()),
                queue_depth: fact(QUEUE_DEPTH),
            },
        };
        metrics.refresh_age();
        metrics
    }

    /// Sets the model's age in days from its `trained_at` (called at load
    /// and on every repository poll).
    pub fn refresh_age(&self) {
        if let Some(t) = self.trained_at {
            self.age_days
                .set((epoch_seconds(std::time::SystemTime::now()) - t) / 86_400.0);
        }
    }

    /// A request entered the core; the guard counts it out however it ends.
    pub fn start(&self) -> InflightGuard<'_> {
        InflightGuard::enter(&self.inflight)
    }

    /// A request was answered by a run: its rows, queue and run time.
    pub fn ran(&self, rows: u64, queue: Duration, compute: Duration) {
        self.inferences.increment(rows);
        self.queue.record(queue);
        self.compute.record(compute);
    }

    /// Records one finished request; `failure` is an `ErrorKind` string.
    pub fn record(&self, transport: Transport, took: Duration, failure: Option<&'static str>) {
        let t = &self.by_transport[transport.index()];
        match failure {
            None => {
                t.ok.increment(1);
                t.duration.record(took);
            }
            Some(reason) => {
                t.failed.increment(1);
                if let Some((_, c)) = t.failures.iter().find(|(r, _)| *r == reason) {
                    c.increment(1);
                }
            }
        }
    }
}

impl Drop for VersionMetrics {
    fn drop(&mut self) {
        // The version is gone: its series stay (Prometheus keeps history)
        // but say so.
        self.info.set(0.0);
        self.inflight.set(0.0);
        self.worker.queue_depth.set(0.0);
    }
}

/// Publishes a closed window as gauges (on the window clock's thread, once
/// per window: label look-ups are fine here).
pub fn publish_window(model: &str, version: u64, r: &crate::window::WindowReport) {
    let (m, v) = (model.to_string(), version.to_string());
    let gauge =
        |name: &'static str| metrics::gauge!(name, "model" => m.clone(), "version" => v.clone());
    gauge(WINDOW_QPS).set(r.qps);
    gauge(WINDOW_ERROR_RATIO).set(if r.requests > 0 {
        r.failed as f64 / r.requests as f64
    } else {
        0.0
    });
    for (q, value) in [
        ("0.5", r.latency_us.p50),
        ("0.9", r.latency_us.p90),
        ("0.99", r.latency_us.p99),
    ] {
        if let Some(us) = value {
            metrics::gauge!(WINDOW_LATENCY, "model" => m.clone(), "version" => v.clone(), "quantile" => q).set(us / 1e6);
        }
    }
    for t in r.inputs.iter().chain(&r.outputs) {
        let labels = |feature: String| {
            [
                ("model", m.clone()),
                ("version", v.clone()),
                ("tensor", t.name.clone()),
                ("feature", feature),
            ]
        };
        let stats = |s: &crate::window::summary::Summary, feature: String| {
            for (stat, value) in [
                ("mean", s.mean),
                ("std", s.std),
                ("min", s.min),
                ("max", s.max),
                ("p5", s.p5),
                ("median", s.median),
                ("p95", s.p95),
            ] {
                if let Some(x) = value {
                    let mut l = labels(feature.clone()).to_vec();
                    l.push(("stat", stat.to_string()));
                    metrics::gauge!(
                        WINDOW_VALUE,
                        l.iter()
                            .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                            .collect::<Vec<_>>()
                    )
                    .set(x);
                }
            }
        };
        stats(&t.summary, "all".into());
        for (i, f) in t.features.iter().enumerate() {
            stats(f, i.to_string());
        }
        let tensor = |name: &'static str| metrics::gauge!(name, "model" => m.clone(), "version" => v.clone(), "tensor" => t.name.clone());
        tensor(WINDOW_NAN).set(t.summary.nan as f64);
        tensor(WINDOW_INF).set(t.summary.inf as f64);
        if let Some(missing) = t.missing {
            tensor(WINDOW_MISSING).set(missing as f64);
        }
        if let Some(classes) = &t.predicted_class {
            let rows: u64 = classes.values().sum();
            for (class, n) in classes {
                metrics::gauge!(WINDOW_CLASS, "model" => m.clone(), "version" => v.clone(), "tensor" => t.name.clone(), "class" => class.clone())
                    .set(*n as f64 / rows.max(1) as f64);
            }
        }
    }
    if let Some(d) = &r.drift {
        for f in &d.features {
            let labels = [
                ("model", m.clone()),
                ("version", v.clone()),
                ("input", f.input.clone()),
                ("feature", f.feature.to_string()),
            ];
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect();
            metrics::gauge!(DRIFT_PSI, labels.clone()).set(f.psi);
            metrics::gauge!(DRIFT_KS, labels).set(f.ks);
        }
        if let Some(p) = d.psi_max {
            gauge(DRIFT_PSI_MAX).set(p);
        }
        if let Some(k) = d.ks_max {
            gauge(DRIFT_KS_MAX).set(k);
        }
        gauge(DRIFT_DETECTED).set(if d.drifted { 1.0 } else { 0.0 });
    }
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

/// `GET /metrics` (any path, in fact) on the metrics port.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        if let Some(process) = PROCESS.get() {
                            process.collect();
                        }
                        let body = handle.render();
                        async move {
                            let mut r = Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = StatusCode::OK;
                            r.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                            );
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}
