//! infergate: a KServe V2 / Open Inference Protocol model server.
//!
//! The engine is layered; a module imports only from the layers below it
//! (checked by `tests/layers.rs`), so it reads bottom-up and one request
//! walks it once, downward:
//!
//! ```text
//! L6  http/ grpc/          decode -> one call into the service -> encode
//! L5  service/             the one API: infer, validate, mirror, rollout operations, health, index, auth
//! L4  repository/          the control plane: disk -> model table (scan, select, reconcile, load, control)
//! L3  model/               what serves: ModelVersion, ModelEntry, ModelTable, the arc-swap Registry
//! L2  worker  monitor/  rollout/   inference threads; metrics and one recorder per version; gate, shadow, compare, decide
//! L1  backend/  batcher  schema  window/   runtimes (ort, tch); batching State; input rules; window statistics
//! L0  tensor  error  sync  datatypes and buffers; the error enum; the poison-tolerant lock
//! ```
//! [`run`] (this file, the composition root) wires them together and is
//! what `main` and the integration tests call.

pub mod backend;
pub mod batcher;
pub mod checks;
pub mod config;
pub mod error;
pub mod feedback;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod model;
pub mod monitor;
pub mod predlog;
pub mod probe;
pub mod repository;
pub mod rollout;
pub mod schema;
pub mod serde_duration;
pub mod service;
pub mod sync;
pub mod tensor;
pub mod tls;
pub mod window;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
use repository::{Defaults, Repository};
use service::Service;

/// The sockets to serve on, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(
        http: SocketAddr,
        grpc: SocketAddr,
        metrics: Option<SocketAddr>,
    ) -> anyhow::Result<Listeners> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for {what} on {addr}"))
        };
        Ok(Listeners {
            http: bind(http, "HTTP").await?,
            grpc: bind(grpc, "gRPC").await?,
            metrics: match metrics {
                Some(addr) => Some(bind(addr, "metrics").await?),
                None => None,
            },
        })
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (at most `config.shutdown_timeout`) and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    backend::onnx::init(&config.onnxruntime_lib)?;
    anyhow::ensure!(
        config.model_repository.is_dir(),
        "model repository '{}' is not a directory",
        config.model_repository.display()
    );
    let metrics = monitor::install();

    worker::set_inference_nice(config.inference_nice);
    let repository = Arc::new(Repository::new(
        config.model_repository.clone(),
        Defaults {
            queue_capacity: config.queue_capacity,
            max_queue_wait: config.max_queue_wait,
            intra_op_threads: config.intra_op_threads,
            window: config.window.clone(),
            device: config.device,
            prediction_log_dir: config.prediction_log_dir.clone(),
        },
    ));
    // Closes statistics windows on time; ends with the repository.
    window::clock(
        Arc::downgrade(&repository),
        std::time::Duration::from_millis(100),
    )
    .context("cannot start the window clock")?;
    let state = Arc::new(Service::new(
        repository.clone(),
        service::Options {
            max_request_bytes: config.max_request_bytes,
            control_token: config.control_token.clone(),
            request_timeout: config.request_timeout,
            body_timeout: config.limits.body_timeout,
        },
    ));

    let ip = listeners.http.local_addr()?.ip();
    if config.tls.is_none() && !ip.is_loopback() {
        tracing::warn!(%ip, "TLS is off (--tls-cert) and the server listens beyond loopback: requests, and the control token, travel in clear text");
    }
    let (stop, stopped) = watch::channel(false);
    tracing::info!(
        http = %listeners.http.local_addr()?,
        grpc = %listeners.grpc.local_addr()?,
        metrics = %match &listeners.metrics {
            Some(l) => l.local_addr()?.to_string(),
            None => "off".to_string(),
        },
        repository = %config.model_repository.display(),
        "infergate listening"
    );
    let mut servers = tokio::task::JoinSet::new();
    let tls = match &config.tls {
        Some(settings) => Some(tls::Tls::new(settings)?),
        None => None,
    };
    servers.spawn(http::serve(
        listeners.http,
        state.clone(),
        config.limits.clone(),
        tls.as_ref().map(|t| t.http.clone()),
        stopped.clone(),
    ));
    {
        let (state, stopped, limits) = (state.clone(), stopped.clone(), config.limits.clone());
        let tls = tls.as_ref().map(|t| t.grpc.clone());
        servers.spawn(async move {
            if let Err(e) = grpc::serve(listeners.grpc, state, limits, tls, stopped).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
    }
    if let Some(listener) = listeners.metrics {
        let tls = tls
            .as_ref()
            .filter(|_| config.tls.as_ref().is_some_and(|t| t.metrics))
            .map(|t| t.http.clone());
        servers.spawn(http::serve_metrics(
            listener,
            metrics,
            config.limits.clone(),
            tls,
            stopped.clone(),
        ));
    }

    // Live at once, ready once the repository has been read.
    repository.poll().await;
    state.set_ready(true);
    tracing::info!(models = ?repository.index(true).iter().map(|e| format!("{}:{}", e.name, e.version)).collect::<Vec<_>>(), "ready");

    let poller = config.poll_interval.map(|every| {
        let repository = repository.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => repository.poll().await,
                    _ = stopped.changed() => break,
                }
            }
        })
    });

    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    state.set_ready(false);
    let _ = stop.send(true);
    if let Some(p) = poller {
        p.abort();
    }
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = ?config.shutdown_timeout, "in-flight requests did not finish in time; stopping anyway");
    }
    // Every answered request's record is queued by now: write them, and
    // close each log's open file so that it is renamed into place.
    let closing = repository.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close_logs()).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM: the one place signals are handled.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
