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

/// Records one finished request.
pub fn record_request(
    model: &str,
    version: Option<u64>,
    took: Duration,
    failure: Option<&'static str>,
) {
    let version = version.map(|v| v.to_string()).unwrap_or_default();
    let status = if failure.is_some() { "error" } else { "ok" };
    metrics::counter!(REQUESTS, "model" => model.to_string(), "version" => version.clone(), "status" => status)
        .increment(1);
    if let Some(reason) = failure {
        metrics::counter!(REQUEST_FAILURES, "model" => model.to_string(), "reason" => reason)
            .increment(1);
    } else {
        metrics::histogram!(REQUEST_DURATION, "model" => model.to_string(), "version" => version)
            .record(took);
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
