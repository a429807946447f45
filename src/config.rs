//! Command line and environment -> a validated [`Config`]. No I/O here:
//! tests build a `Config` directly.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "infergate",
    version,
    about = "A KServe V2 / Open Inference Protocol model server (gRPC + HTTP) for ONNX models, with hot-swapped versions."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a model repository over HTTP and gRPC.
    Serve(Box<ServeArgs>),
    /// Join a model's prediction log with the labels it received (and any
    /// label files given) into one Parquet training set: a row per labelled
    /// request row, with the features as the model saw them, what it
    /// predicted, the label, the version and the time.
    Export(ExportArgs),
    /// Exit 0 when the server on this machine is ready (GET
    /// /v2/health/ready answers 200), 1 otherwise: the container image's
    /// health check. Reads the same host/port flags and environment as
    /// `serve`.
    Probe(ProbeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The address the server listens on (0.0.0.0: probed on loopback).
    #[arg(long, env = "INFERGATE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The server's HTTP port.
    #[arg(long, env = "INFERGATE_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,
    /// What to ask.
    #[arg(long, default_value = "/v2/health/ready")]
    pub path: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The model's prediction log directory (by default
    /// <--prediction-log-dir>/<model>), holding its Parquet files and the
    /// label files the feedback API wrote.
    #[arg(long)]
    pub log: PathBuf,
    /// More labels: JSON lines {"id": ..., "label": ...} (a number, or a
    /// list with one per row); a later label of an id replaces an earlier one.
    #[arg(long)]
    pub labels: Vec<PathBuf>,
    /// Where the training set goes (Parquet).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model repository: <repo>/<model>/<version>/model.onnx, with an
    /// optional <repo>/<model>/config.toml.
    #[arg(long, env = "INFERGATE_MODEL_REPOSITORY", default_value = "models")]
    pub model_repository: PathBuf,

    /// Address to listen on. Loopback by default; use 0.0.0.0 to accept
    /// connections from other machines.
    #[arg(long, env = "INFERGATE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// HTTP/REST port (V2 protocol). 0 picks a free port.
    #[arg(long, env = "INFERGATE_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,

    /// gRPC port (V2 protocol). 0 picks a free port.
    #[arg(long, env = "INFERGATE_GRPC_PORT", default_value_t = 8001)]
    pub grpc_port: u16,

    /// Prometheus metrics port (GET /metrics).
    #[arg(long, env = "INFERGATE_METRICS_PORT", default_value_t = 8002)]
    pub metrics_port: u16,

    /// How often the repository is rescanned for new, changed or removed
    /// versions and for changed rollout.toml files (e.g. 2s, 500ms): how
    /// soon replicas on one repository follow a promote sent to another.
    /// 0 turns polling off: models change only through the repository API
    /// (load/unload), and rollout.toml is read at start-up and on load.
    #[arg(long, env = "INFERGATE_POLL_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// The ONNX Runtime shared library (from the onnxruntime==1.31.1 wheel;
    /// `make setup` extracts it here).
    #[arg(
        long,
        env = "ORT_DYLIB_PATH",
        default_value = ".ort/libonnxruntime.so.1.31.1"
    )]
    pub onnxruntime_lib: PathBuf,

    /// Requests that may wait per model version; beyond it requests are
    /// refused at once with 503 / UNAVAILABLE instead of queueing without bound.
    #[arg(long, env = "INFERGATE_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,

    /// Work a version's queue holds at most, as the time it would take to
    /// drain (rows queued times the recent cost of a row, over the
    /// instances): beyond it requests are refused at once (503 /
    /// UNAVAILABLE with Retry-After) rather than served late. Set it to
    /// the latency budget of online traffic; off by default, as in
    /// Triton, so that a burst from a batch client queues instead of being
    /// refused. A model's `[queue] max_wait_us` overrides it. "0s": no
    /// bound but the capacity.
    #[arg(long, env = "INFERGATE_MAX_QUEUE_WAIT", default_value = "0s", value_parser = humantime::parse_duration)]
    pub max_queue_wait: Duration,

    /// Nice value of the inference threads (0-19): above 0 they yield to
    /// the I/O threads where both share a core, so that reads and
    /// refusals are not held up by a model's run under overload, at some
    /// cost in throughput (README, "Overload").
    #[arg(long, env = "INFERGATE_INFERENCE_NICE", default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub inference_nice: i32,

    /// ONNX Runtime threads per operator. 1 suits many small concurrent
    /// requests; more helps a few large ones.
    #[arg(long, env = "INFERGATE_INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,

    /// Open connections per port (HTTP, gRPC) beyond which new ones are
    /// closed at accept and counted. Default: half of what the file
    /// descriptor limit (ulimit -n) leaves after a reserve of 256.
    #[arg(long, env = "INFERGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// A client must send a request's headers (HTTP/1), or its first bytes
    /// (HTTP/2 and gRPC), within this; an idle HTTP/1 keep-alive connection
    /// is closed after it.
    #[arg(long, env = "INFERGATE_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// A request body must arrive within this once its headers have;
    /// else 408.
    #[arg(long, env = "INFERGATE_BODY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// TLS on the HTTP and gRPC ports: the certificate chain (PEM). Re-read
    /// when the file changes. Needs --tls-key.
    #[arg(long, env = "INFERGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "INFERGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: clients must present a certificate this CA (PEM) signed.
    #[arg(long, env = "INFERGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// TLS on the metrics port too, with the same certificate (and client
    /// CA): Prometheus scrapes it with `scheme: https`. Needs --tls-cert.
    #[arg(long, env = "INFERGATE_TLS_METRICS", requires = "tls_cert")]
    pub tls_metrics: bool,

    /// Concurrent HTTP/2 streams per connection (HTTP and gRPC ports).
    #[arg(long, env = "INFERGATE_HTTP2_MAX_STREAMS", default_value_t = 1024)]
    pub http2_max_streams: u32,

    /// Largest request body (HTTP) or message (gRPC) accepted, in bytes.
    #[arg(long, env = "INFERGATE_MAX_REQUEST_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, env = "INFERGATE_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Deadline of an inference request that brings none tighter (the V2
    /// `timeout` parameter, gRPC's deadline) and whose model sets none
    /// (`[queue] default_timeout_us`): past it, 504 / DEADLINE_EXCEEDED and
    /// never run. "0s": none.
    #[arg(long, env = "INFERGATE_REQUEST_TIMEOUT", default_value = "0s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Length of a statistics window (per-window input/output distributions,
    /// latency, drift), e.g. 10s; a model's config.toml may set its own.
    /// 0 turns window statistics off.
    #[arg(long, env = "INFERGATE_STATS_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    pub stats_window: Duration,

    /// Closed windows kept per model version for /stats.
    #[arg(long, env = "INFERGATE_STATS_WINDOWS_KEPT", default_value_t = 10)]
    pub stats_windows_kept: usize,

    /// Per-feature summaries for at most this many features of a
    /// [batch, features] tensor (the whole tensor is always summarised).
    #[arg(long, env = "INFERGATE_STATS_MAX_FEATURES", default_value_t = 64)]
    pub stats_max_features: usize,

    /// Where models run unless their config.toml says otherwise: cpu or
    /// cuda:N. Without a usable GPU a model falls back to the CPU with a
    /// warning (unless its config.toml sets require_gpu = true).
    #[arg(long, env = "INFERGATE_DEVICE", default_value = "cpu")]
    pub device: crate::backend::Device,

    /// Bearer token required by the control endpoints (repository
    /// load/unload, promote, rollback), e.g. from a secret; unset: open.
    #[arg(long, env = "INFERGATE_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,

    /// Where prediction logs go (models with `[log]` in their config.toml):
    /// `<dir>/<model>/` unless the model names its own; a relative `[log]
    /// dir` is taken under this one.
    #[arg(
        long,
        env = "INFERGATE_PREDICTION_LOG_DIR",
        default_value = "predictions"
    )]
    pub prediction_log_dir: PathBuf,

    /// Log format: text or json.
    #[arg(long, env = "INFERGATE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// What `run` needs. Built from [`ServeArgs`] or directly by tests.
#[derive(Debug, Clone)]
pub struct Config {
    pub model_repository: PathBuf,
    /// `None`: no polling.
    pub poll_interval: Option<Duration>,
    pub onnxruntime_lib: PathBuf,
    pub queue_capacity: usize,
    /// `None`: queues bounded by `queue_capacity` only.
    pub max_queue_wait: Option<Duration>,
    pub intra_op_threads: usize,
    pub inference_nice: i32,
    pub max_request_bytes: usize,
    pub shutdown_timeout: Duration,
    /// `None`: requests have no deadline unless they or their model set one.
    pub request_timeout: Option<Duration>,
    /// Connections: how many, how slow.
    pub limits: crate::listen::Limits,
    /// `None`: plain text.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Window statistics defaults; a zero length turns them off.
    pub window: crate::window::WindowConfig,
    pub control_token: Option<String>,
    pub device: crate::backend::Device,
    /// Where prediction logs go by default (see `ServeArgs`).
    pub prediction_log_dir: PathBuf,
}

impl From<&ServeArgs> for Config {
    fn from(a: &ServeArgs) -> Config {
        Config {
            model_repository: a.model_repository.clone(),
            poll_interval: (!a.poll_interval.is_zero()).then_some(a.poll_interval),
            onnxruntime_lib: a.onnxruntime_lib.clone(),
            queue_capacity: a.queue_capacity.max(1),
            max_queue_wait: (!a.max_queue_wait.is_zero()).then_some(a.max_queue_wait),
            intra_op_threads: a.intra_op_threads.max(1),
            inference_nice: a.inference_nice,
            max_request_bytes: a.max_request_bytes,
            shutdown_timeout: a.shutdown_timeout,
            request_timeout: (!a.request_timeout.is_zero()).then_some(a.request_timeout),
            limits: crate::listen::Limits {
                max_connections: a
                    .max_connections
                    .unwrap_or_else(crate::listen::default_max_connections),
                header_timeout: a.header_timeout,
                body_timeout: a.body_timeout,
                http2_max_streams: a.http2_max_streams.max(1),
                ..crate::listen::Limits::default()
            },
            tls: match (&a.tls_cert, &a.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::TlsSettings {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: a.tls_client_ca.clone(),
                    metrics: a.tls_metrics,
                }),
                _ => None,
            },
            window: crate::window::WindowConfig {
                length: a.stats_window,
                keep: a.stats_windows_kept.max(1),
                max_features: a.stats_max_features,
                ..Default::default()
            },
            control_token: a.control_token.clone().filter(|t| !t.is_empty()),
            device: a.device,
            prediction_log_dir: a.prediction_log_dir.clone(),
        }
    }
}

impl Config {
    /// Defaults for a repository, as the CLI would give them.
    pub fn new(
        model_repository: impl Into<PathBuf>,
        onnxruntime_lib: impl Into<PathBuf>,
    ) -> Config {
        Config {
            model_repository: model_repository.into(),
            poll_interval: Some(Duration::from_secs(2)),
            onnxruntime_lib: onnxruntime_lib.into(),
            queue_capacity: 1024,
            max_queue_wait: None,
            intra_op_threads: 1,
            inference_nice: 0,
            max_request_bytes: 64 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            request_timeout: None,
            limits: crate::listen::Limits::default(),
            tls: None,
            window: crate::window::WindowConfig {
                length: Duration::from_secs(60),
                keep: 10,
                max_features: 64,
                ..Default::default()
            },
            control_token: None,
            device: crate::backend::Device::Cpu,
            prediction_log_dir: PathBuf::from("predictions"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "infergate",
            "serve",
            "--model-repository",
            "repo",
            "--http-port",
            "9000",
            "--poll-interval",
            "500ms",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve was parsed")
        };
        assert_eq!(args.http_port, 9000);
        assert_eq!(args.grpc_port, 8001);
        let config = Config::from(&*args);
        assert_eq!(config.poll_interval, Some(Duration::from_millis(500)));
        assert_eq!(config.model_repository, PathBuf::from("repo"));
    }

    #[test]
    fn zero_poll_interval_disables_polling() {
        let cli = Cli::try_parse_from(["infergate", "serve", "--poll-interval", "0s"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve was parsed")
        };
        assert_eq!(Config::from(&*args).poll_interval, None);
    }
}
