//! The two ways of loading a server, and the bookkeeping around them.
//!
//! Closed loop: `concurrency` clients, each sending its next request when
//! the last one is answered; measures what the server sustains.
//! Open loop: requests are due at a fixed rate whatever the server does,
//! and latency is counted from when each was *due*, not when it went out,
//! so a server that stalls is charged for the queue it causes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

use crate::client::{metadata, Client, Failure};
use crate::payload::Payload;
use crate::report::{Recorder, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// gRPC with raw_input_contents.
    Grpc,
    /// HTTP/REST, tensors as JSON.
    HttpJson,
    /// HTTP/REST, the binary tensor data extension (as tritonclient.http).
    HttpBinary,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// N clients back to back.
    Closed { concurrency: usize },
    /// Requests due at `rate` per second; at most `max_inflight` outstanding
    /// (beyond it a due request is counted as a `client_overloaded` error).
    Open { rate: f64, max_inflight: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// Measure for this long after the warm-up.
    Duration(Duration),
    /// Measure this many requests after the warm-up.
    Requests(u64),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// host:port (or http://host:port) of the V2 server.
    pub target: String,
    pub protocol: Protocol,
    pub model: String,
    pub version: Option<String>,
    /// Rows per request, for inputs whose first dimension is -1.
    pub batch: usize,
    /// Explicit input shapes, overriding the metadata.
    pub shapes: Vec<(String, Vec<i64>)>,
    /// A V2 JSON request whose inputs are sent instead of random data.
    pub request_file: Option<std::path::PathBuf>,
    pub load: Load,
    pub stop: Stop,
    /// Requests before this are sent but not measured.
    pub warmup: Duration,
    /// HTTP: pooled connections; gRPC: channels.
    pub connections: usize,
    /// A request not answered in this time counts as a `timeout` error.
    pub timeout: Duration,
    pub seed: u64,
    pub progress: bool,
}

/// One finished request: when it was due, when it actually went out (none
/// when the generator never sent it), when it ended, how it went.
pub(crate) struct Outcome {
    pub due: Instant,
    pub sent: Option<Instant>,
    pub done: Instant,
    pub result: Result<(), Failure>,
}

pub async fn run(config: &Config) -> anyhow::Result<Report> {
    let version = config.version.as_deref();
    let meta = metadata(&config.target, config.protocol, &config.model, version).await?;
    let payload = Arc::new(match &config.request_file {
        Some(path) => Payload::from_request_file(path, &meta)?,
        None => Payload::random(&meta, config.batch, &config.shapes, config.seed)?,
    });
    let connections = match config.load {
        Load::Closed { concurrency } if config.connections == 0 => concurrency,
        _ => config.connections.max(1),
    };
    let client = Arc::new(
        Client::new(
            &config.target,
            config.protocol,
            &config.model,
            version,
            &payload,
            connections,
        )
        .await?,
    );

    let start = Instant::now();
    let measure_from = start + config.warmup;
    let deadline = match config.stop {
        Stop::Duration(d) => Some(measure_from + d),
        Stop::Requests(_) => None,
    };
    let limit = match config.stop {
        Stop::Requests(n) => n,
        Stop::Duration(_) => u64::MAX,
    };
    // Measured requests started so far (for --requests).
    let started = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();

    let progress = crate::report::Progress::new(config.progress, &config.stop, config.warmup);
    let mut recorder = Recorder::new(measure_from);
    let collector = {
        let progress = progress.clone();
        tokio::spawn(async move {
            while let Some(outcome) = rx.recv().await {
                if outcome.due >= measure_from {
                    progress.record(outcome.result.is_ok());
                    recorder.record(&outcome);
                }
            }
            recorder
        })
    };

    // Whether a request due at `due` should still be sent.
    let go_on = {
        let started = started.clone();
        move |due: Instant| -> bool {
            if let Some(end) = deadline {
                return due < end;
            }
            due < measure_from || started.fetch_add(1, Ordering::Relaxed) < limit
        }
    };

    match config.load {
        Load::Closed { concurrency } => {
            let mut workers = Vec::new();
            for w in 0..concurrency.max(1) {
                let (client, payload, tx, go_on) =
                    (client.clone(), payload.clone(), tx.clone(), go_on.clone());
                let timeout = config.timeout;
                workers.push(tokio::spawn(async move {
                    loop {
                        let due = Instant::now();
                        if !go_on(due) {
                            break;
                        }
                        let result = send(&client, w, &payload, timeout).await;
                        let _ = tx.send(Outcome {
                            due,
                            sent: Some(due),
                            done: Instant::now(),
                            result,
                        });
                    }
                }));
            }
            for w in workers {
                w.await?;
            }
        }
        Load::Open { rate, max_inflight } => {
            anyhow::ensure!(rate > 0.0, "the rate must be positive");
            let period = Duration::from_secs_f64(1.0 / rate);
            let inflight = Arc::new(Semaphore::new(max_inflight.max(1)));
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0u64.. {
                let due = start + period.mul_f64(i as f64);
                if !go_on(due) {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                match inflight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (client, payload, tx) = (client.clone(), payload.clone(), tx.clone());
                        let timeout = config.timeout;
                        tasks.spawn(async move {
                            let sent = Instant::now();
                            let result = send(&client, i as usize, &payload, timeout).await;
                            let _ = tx.send(Outcome {
                                due,
                                sent: Some(sent),
                                done: Instant::now(),
                                result,
                            });
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        let _ = tx.send(Outcome {
                            due,
                            sent: None,
                            done: Instant::now(),
                            result: Err(Failure {
                                kind: "client_overloaded".into(),
                                detail: format!("{max_inflight} requests already in flight"),
                            }),
                        });
                    }
                }
                // Reap finished tasks now and then so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    drop(tx);
    let recorder = collector.await?;
    progress.finish();
    Ok(recorder.report(config, Instant::now()))
}

async fn send(
    client: &Client,
    worker: usize,
    payload: &Payload,
    timeout: Duration,
) -> Result<(), Failure> {
    match tokio::time::timeout(timeout, client.send(worker, payload)).await {
        Ok(result) => result,
        Err(_) => Err(Failure {
            kind: "timeout".into(),
            detail: format!("no answer within {timeout:?}"),
        }),
    }
}
