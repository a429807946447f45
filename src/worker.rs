//! Inference threads. Each loaded model version owns one OS thread that owns
//! its backend; requests reach it through a bounded queue and get their
//! answer back through a oneshot channel. The async reactor never runs a
//! model, and a slow model can only fill its own queue.
//!
//! The thread ends when the last [`Worker`] handle is dropped: a swapped-out
//! version keeps its thread exactly as long as requests still hold it.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::backend::{Backend, BackendError};
use crate::tensor::Tensor;

struct Job {
    inputs: Vec<Tensor>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Ran, BackendError>>,
}

/// Outputs plus where the time went, for statistics.
pub struct Ran {
    pub outputs: Vec<Tensor>,
    pub queue: Duration,
    pub compute: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("queue full")]
    QueueFull,
    #[error("inference thread stopped")]
    Stopped,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A handle to a model version's inference thread.
pub struct Worker {
    /// Bounded: when it is full the request is refused at once (admission
    /// control) rather than queued behind work that cannot finish in time.
    queue: mpsc::Sender<Job>,
    capacity: usize,
}

impl Worker {
    pub fn spawn(
        label: &str,
        backend: Box<dyn Backend>,
        capacity: usize,
    ) -> std::io::Result<Worker> {
        let capacity = capacity.max(1);
        let (queue, mut jobs) = mpsc::channel::<Job>(capacity);
        std::thread::Builder::new()
            .name(format!("infer-{label}"))
            .spawn(move || {
                let mut backend = backend;
                while let Some(job) = jobs.blocking_recv() {
                    // The caller gave up (timeout, disconnect): don't spend
                    // compute on an answer nobody will read.
                    if job.reply.is_closed() {
                        continue;
                    }
                    let started = Instant::now();
                    let queue = started - job.enqueued;
                    let result = backend.run(job.inputs).map(|outputs| Ran {
                        outputs,
                        queue,
                        compute: started.elapsed(),
                    });
                    let _ = job.reply.send(result);
                }
            })?;
        Ok(Worker { queue, capacity })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues the inputs and waits for the outputs.
    pub async fn run(&self, inputs: Vec<Tensor>) -> Result<Ran, WorkerError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            enqueued: Instant::now(),
            reply,
        };
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WorkerError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => WorkerError::Stopped,
        })?;
        Ok(answer.await.map_err(|_| WorkerError::Stopped)??)
    }
}
