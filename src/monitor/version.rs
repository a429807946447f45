//! The metric handles of one model version, registered once at load.

use std::time::Duration;

use super::*;

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
    failures: [(&'static str, metrics::Counter); 5],
    /// Requests whose caller went away before the answer.
    cancelled: metrics::Counter,
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
                failure(K::DeadlineExceeded.as_str()),
            ],
            cancelled: metrics::counter!(REQUESTS_CANCELLED, "model" => m.to_string(), "version" => v.to_string(), "protocol" => p),
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

/// Seconds since the epoch (0 before it): how metrics and reports count time.
pub fn epoch_seconds(t: std::time::SystemTime) -> f64 {
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

impl VersionMetrics {
    /// A request whose caller went away (disconnected, or its own timeout
    /// dropped it) before it was answered.
    pub fn cancelled(&self, transport: Transport) {
        self.by_transport[transport.index()].cancelled.increment(1);
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
