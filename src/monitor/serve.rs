//! What the metrics port answers. The port itself (its connections, TLS)
//! is the HTTP adapter's: `http::serve_metrics`.

use metrics_exporter_prometheus::PrometheusHandle;

use super::PROCESS;

/// Every metric in Prometheus' text format, the process' own (CPU, RSS,
/// file descriptors, threads) read afresh.
pub fn scrape(handle: &PrometheusHandle) -> String {
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    handle.render()
}
