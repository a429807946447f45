//! infergate: a KServe V2 / Open Inference Protocol model server.
//!
//! ```text
//!   HTTP (hyper) ─┐                         ┌─ repository: poll / load / unload
//!                 ├─> infer::Core ──> registry (arc-swap) ──> ModelVersion
//!   gRPC (tonic) ─┘                                            └─ worker thread ─> Backend (ort)
//! ```
//! The adapters in `http/` and `grpc/` only translate; `infer.rs` is the one
//! API they call; `repository/` decides what serves; `worker.rs` keeps
//! inference off the async reactor. [`run`] wires them together and is what
//! `main` and the integration tests call.

pub mod backend;
pub mod batcher;
pub mod config;
pub mod error;
pub mod grpc;
pub mod health;
pub mod http;
pub mod infer;
pub mod monitor;
pub mod repository;
pub mod schema;
pub mod shadow;
pub mod sync;
pub mod tensor;
pub mod window;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
use infer::Core;
use repository::{Defaults, Repository};

pub const SERVER_NAME: &str = "infergate";
/// V2 protocol extensions served.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_repository", "statistics"];

/// What every handler shares.
pub struct AppState {
    pub core: Core,
    /// False until the first repository scan has finished, and again once
    /// shutdown begins, so load balancers stop sending work.
    pub ready: AtomicBool,
    pub max_request_bytes: usize,
    /// Bearer token the control endpoints (repository load/unload, promote,
    /// rollback) require; `None`: they are open.
    pub control_token: Option<String>,
    /// `infergate_http_requests_in_flight`, resolved once: the HTTP adapter
    /// moves it twice a request.
    pub http_in_flight: metrics::Gauge,
}

impl AppState {
    /// Checks a control request's `Authorization` value.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), error::Error> {
        let Some(token) = &self.control_token else {
            return Ok(());
        };
        let given = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare in constant time: the token is a secret.
        let same = given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(error::Error::Unauthorized)
        }
    }
}

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

    let repository = Arc::new(Repository::new(
        config.model_repository.clone(),
        Defaults {
            queue_capacity: config.queue_capacity,
            intra_op_threads: config.intra_op_threads,
            window: config.window.clone(),
            device: config.device,
        },
    ));
    // Closes statistics windows on time; ends with the repository.
    window::clock(
        Arc::downgrade(&repository),
        std::time::Duration::from_millis(100),
    )
    .context("cannot start the window clock")?;
    let state = Arc::new(AppState {
        core: Core::new(repository.clone()),
        ready: AtomicBool::new(false),
        max_request_bytes: config.max_request_bytes,
        control_token: config.control_token.clone(),
        http_in_flight: metrics::gauge!(monitor::HTTP_INFLIGHT),
    });

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
    servers.spawn(http::serve(listeners.http, state.clone(), stopped.clone()));
    {
        let (state, stopped) = (state.clone(), stopped.clone());
        servers.spawn(async move {
            if let Err(e) = grpc::serve(listeners.grpc, state, stopped).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
    }
    if let Some(listener) = listeners.metrics {
        servers.spawn(monitor::serve(listener, metrics, stopped.clone()));
    }

    // Live at once, ready once the repository has been read.
    repository.poll().await;
    state.ready.store(true, Ordering::Release);
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
    state.ready.store(false, Ordering::Release);
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
