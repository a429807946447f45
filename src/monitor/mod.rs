//! Prometheus metrics: the recorder, the names, and the `/metrics` endpoint
//! on its own port. The full set (windows, drift, model facts) grows here.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const REQUESTS: &str = "infergate_requests_total";
pub const REQUEST_FAILURES: &str = "infergate_request_failures_total";
pub const REQUEST_DURATION: &str = "infergate_request_duration_seconds";

/// 50 µs to 10 s, roughly ×2.5 apart.
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (tests start many servers in one
/// process) and describes every metric.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding
            // program's); then ours only renders what it records itself.
            let _ = metrics::set_global_recorder(recorder);
            metrics::describe_counter!(
                REQUESTS,
                "Inference requests, by model, version and status."
            );
            metrics::describe_counter!(
                REQUEST_FAILURES,
                "Failed inference requests, by model and reason."
            );
            metrics::describe_histogram!(
                REQUEST_DURATION,
                metrics::Unit::Seconds,
                "Time from a decoded request to its answer, by model and version."
            );
            handle
        })
        .clone()
}

/// The metric handles of one model version, registered once when it loads
/// so that recording a request is a few atomic adds: no label strings to
/// build, no registry look-up, no lock on the request path.
pub struct VersionMetrics {
    ok: metrics::Counter,
    failed: metrics::Counter,
    /// By `ErrorKind::as_str()`.
    failures: [(&'static str, metrics::Counter); 4],
    duration: metrics::Histogram,
}

impl VersionMetrics {
    pub fn new(model: &str, version: u64) -> VersionMetrics {
        let (m, v) = (model.to_string(), version.to_string());
        let failure = |reason: &'static str| {
            (
                reason,
                metrics::counter!(REQUEST_FAILURES, "model" => m.clone(), "version" => v.clone(), "reason" => reason),
            )
        };
        use crate::error::ErrorKind as K;
        VersionMetrics {
            ok: metrics::counter!(REQUESTS, "model" => m.clone(), "version" => v.clone(), "status" => "ok"),
            failed: metrics::counter!(REQUESTS, "model" => m.clone(), "version" => v.clone(), "status" => "error"),
            failures: [
                failure(K::NotFound.as_str()),
                failure(K::InvalidArgument.as_str()),
                failure(K::Unavailable.as_str()),
                failure(K::Internal.as_str()),
            ],
            duration: metrics::histogram!(REQUEST_DURATION, "model" => m, "version" => v),
        }
    }

    /// Records one finished request; `failure` is an `ErrorKind` string.
    pub fn record(&self, took: Duration, failure: Option<&'static str>) {
        match failure {
            None => {
                self.ok.increment(1);
                self.duration.record(took);
            }
            Some(reason) => {
                self.failed.increment(1);
                if let Some((_, c)) = self.failures.iter().find(|(r, _)| *r == reason) {
                    c.increment(1);
                }
            }
        }
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
