//! Inference threads and the batch queue in front of them.
//!
//! Each loaded model version owns one or more OS threads (instances), each
//! owning its own backend; the async side never runs a model. Requests are
//! pushed onto the version's queue (a `std::sync::Mutex` held for a push, the
//! only lock on the request path) and answered through a oneshot channel.
//! An instance that is free takes the next batch that `batcher::State`
//! decides on, merges the requests' rows into one run, and splits the
//! outputs back, so each caller gets exactly its own rows.
//!
//! A model whose runs cost next to nothing (`tiny`: a few microseconds)
//! pays more for the hand-off than for the run: two context switches and
//! cold caches on the inference thread, per request at low concurrency. For
//! such a model, while no inference thread is busy, the request's own task
//! runs the batch on the I/O thread instead (it becomes the *leader*; see
//! [`Worker::run`]): requests that arrive meanwhile queue behind it and are
//! run in its batch. Whether a model qualifies is measured, not configured:
//! the recent cost of a run ([`Cost`]) must stay under [`INLINE_BELOW`],
//! so inference stays off the reactor for any model that is not tiny.
//!
//! The threads end when the [`Worker`] is dropped and the queue has
//! drained: a swapped-out version keeps serving the requests it accepted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::backend::{Backend, BackendError};
use crate::batcher::{BatchKey, Decision, Policy, Queued, State};
use crate::monitor::stats::VersionStats;
use crate::monitor::{RunRecorder, WorkerMetrics};
use crate::sync::lock;
use crate::tensor::{Elements, InputTensor, Tensor};
use crate::window::Windows;

struct Job {
    inputs: Vec<InputTensor>,
    /// `None`: runs alone (batching off, or inputs that cannot be merged).
    key: Option<BatchKey>,
    rows: usize,
    enqueued: Instant,
    /// Past it, nobody waits for the answer: never run.
    deadline: Option<Instant>,
    reply: Reply,
}

impl Queued for Job {
    fn rows(&self) -> usize {
        self.rows
    }
    fn key(&self) -> Option<&BatchKey> {
        self.key.as_ref()
    }
    fn enqueued(&self) -> Instant {
        self.enqueued
    }
    fn abandoned(&self, now: Instant) -> bool {
        // The caller gave up (timeout, disconnect) or its deadline passed:
        // don't spend compute on an answer nobody will read.
        self.reply.is_closed() || self.deadline.is_some_and(|d| now >= d)
    }
}

/// Outputs plus where the time went, for statistics.
#[derive(Debug)]
pub struct Ran {
    pub outputs: Vec<Tensor>,
    pub queue: Duration,
    pub compute: Duration,
    /// Rows in the run this request was part of.
    pub batch_rows: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Refused at admission: as many requests queued as it holds, or more
    /// work queued than it drains in `max_wait`.
    #[error("{0}")]
    Overloaded(Refused),
    #[error("inference thread stopped")]
    Stopped,
    /// Dropped unrun: its deadline passed while it was queued.
    #[error("deadline passed while queued")]
    DeadlineExceeded,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Why admission refused a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refused {
    /// The queue holds `capacity` requests already.
    Full { capacity: usize },
    /// The work queued would take about `wait` to start this request:
    /// over `max_wait`, past which waiting helps nobody.
    Wait { wait: Duration, max_wait: Duration },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full { capacity } => write!(f, "its queue is full ({capacity} waiting)"),
            Refused::Wait { wait, max_wait } => {
                let us = |d: &Duration| Duration::from_micros(d.as_micros() as u64);
                write!(
                    f,
                    "the work queued ahead would take about {:?}, over its {:?} limit",
                    us(wait),
                    us(max_wait)
                )
            }
        }
    }
}

/// What a version's queue admits.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Requests queued at most.
    pub capacity: usize,
    /// Work queued at most, in the time it takes to drain (the recent cost
    /// of a row times the rows queued, over the instances). `None`: no
    /// bound but `capacity`.
    pub max_wait: Option<Duration>,
}

struct Queue {
    state: State<Job>,
    /// Instances blocked on `ready` with nothing to do: a push needs to
    /// wake one only when there is one (waking costs a syscall).
    idle: usize,
    /// Set when the Worker is dropped: instances finish what is queued, then exit.
    closed: bool,
    /// Instances running a batch right now.
    busy: usize,
    /// A request's task is running batches on the I/O thread: instances
    /// leave the queue to it until it lets go.
    leader: bool,
}

/// Runs cheaper than this go on the I/O thread when no inference thread is
/// busy. Tokio's own guidance is 10-100 µs between awaits; a batch of `tiny`
/// costs a few µs, one of `mlp` tens, one of the CNN milliseconds.
pub const INLINE_BELOW: Duration = Duration::from_micros(40);

/// Run-queue turns a leader takes at most after its scheduler turn, while
/// each brings more requests into its batch. Over gRPC a request reaches the
/// service in a second task (h2's connection task reads the frames, the
/// stream's task runs the call), woken during the leader's turn and so
/// queued behind it: without these turns they miss its batch. A run-queue
/// turn polls no socket, so it costs no syscall. Measured (h2load, gRPC
/// `tiny`, one server core): c=8 3.0 → 6–7 rows a batch, 27–30 k → 38–39 k
/// req/s; c=16 38 k → 46–47 k; HTTP/1 (the connection's task runs the call)
/// unchanged.
const MAX_TURNS: usize = 4;

/// The recent CPU cost of one run, in nanoseconds: a moving average that moves
/// an eighth of the way to each run's cost. One run of a model that is not
/// tiny (a millisecond) is enough to send the next ones to the threads; an
/// occasional preempted run of a tiny one (this machine's noise) is not.
/// Starts high: a model runs on its threads until it has shown it is cheap.
struct Cost(AtomicU64);

impl Cost {
    fn new() -> Cost {
        Cost(AtomicU64::new(u64::MAX))
    }

    fn record(&self, took: Duration) {
        let sample = took.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == u64::MAX {
            sample
        } else if sample >= old {
            old + (sample - old) / 8
        } else {
            old - (old - sample) / 8
        };
        // Racing instances may lose an update; it is an estimate.
        self.0.store(new, Ordering::Relaxed);
    }

    fn below(&self, limit: Duration) -> bool {
        self.0.load(Ordering::Relaxed) < limit.as_nanos() as u64
    }

    fn nanos(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether a leader's scheduler turn is worth taking: it is, while turns
/// bring other requests into the leader's batch. After [`Joining::KEEP`]
/// turns in a row that brought nobody, only every [`Joining::PROBE`]th
/// leader takes one, so that a rise in concurrency is seen within a few
/// requests.
struct Joining(std::sync::atomic::AtomicU32);

impl Joining {
    const KEEP: u32 = 4;
    const PROBE: u32 = 8;

    fn take_turn(&self) -> bool {
        let vain = self.0.load(Ordering::Relaxed);
        let take = vain < Self::KEEP || vain.is_multiple_of(Self::PROBE);
        if !take {
            // A skipped turn counts towards the next probe.
            self.0.store(vain.wrapping_add(1), Ordering::Relaxed);
        }
        take
    }

    fn joined(&self, anybody: bool) {
        let vain = self.0.load(Ordering::Relaxed);
        // Racing leaders may lose an update; it is a hint.
        self.0.store(
            if anybody { 0 } else { vain.wrapping_add(1) },
            Ordering::Relaxed,
        );
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled on every push and on close; instances wait on it.
    ready: Condvar,
    policy: Policy,
    /// Whether requests may be merged at all (the model has a batch
    /// dimension on every input and output).
    batching: bool,
    admission: Admission,
    stats: Arc<VersionStats>,
    metrics: WorkerMetrics,
    /// Each instance records its runs' tensors in its own shard.
    windows: Option<Arc<Windows>>,
    /// One backend per instance. Its instance holds the lock while it runs
    /// a batch; a leader takes the first one (no instance runs while a
    /// leader does, so the lock is never contended).
    backends: Vec<Mutex<Box<dyn Backend>>>,
    cost: Cost,
    joining: Joining,
    /// The recent wall-clock time of a row in a run (runs' time over their
    /// rows): what a row queued will cost to drain. Unknown (`u64::MAX`)
    /// until the first runs past [`COLD_RUNS`]; until then admission
    /// weighs nothing but `capacity`.
    row_cost: Cost,
}

/// A handle to a model version's queue and inference threads.
pub struct Worker {
    shared: Arc<Shared>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let mut queue = lock(&self.shared.queue);
        queue.closed = true;
        drop(queue);
        self.shared.ready.notify_all();
    }
}

impl Worker {
    /// Starts one thread per backend. `batching` says whether requests may
    /// be merged; `policy` how.
    pub fn spawn(
        label: &str,
        backends: Vec<Box<dyn Backend>>,
        policy: Policy,
        batching: bool,
        admission: Admission,
        recorders: RunRecorder,
    ) -> std::io::Result<Worker> {
        let RunRecorder {
            stats,
            metrics,
            windows,
        } = recorders;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                state: State::default(),
                idle: 0,
                closed: false,
                busy: 0,
                leader: false,
            }),
            ready: Condvar::new(),
            policy,
            batching,
            admission: Admission {
                capacity: admission.capacity.max(1),
                ..admission
            },
            stats,
            metrics,
            windows,
            backends: backends.into_iter().map(Mutex::new).collect(),
            cost: Cost::new(),
            joining: Joining(std::sync::atomic::AtomicU32::new(0)),
            row_cost: Cost::new(),
        });
        for i in 0..shared.backends.len() {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("infer-{label}-{i}"))
                .spawn(move || instance(&shared, i))?;
        }
        Ok(Worker { shared })
    }

    /// Queues the inputs and waits for this request's outputs.
    ///
    /// When the model is cheap, no inference thread is busy and no other
    /// request leads, this request leads: it runs what is queued on the
    /// calling thread (after one scheduler turn, so that the requests
    /// already read join its batch) and answers every request in it.
    /// Otherwise it waits for an inference thread.
    pub async fn run(
        &self,
        inputs: Vec<InputTensor>,
        deadline: Option<Instant>,
    ) -> Result<Ran, WorkerError> {
        let shared = &*self.shared;
        let (key, rows) = if shared.batching {
            batch_key(&inputs)
        } else {
            (None, 0)
        };
        let (reply, answer) = oneshot::channel();
        let (lead, wake) = {
            let mut queue = lock(&shared.queue);
            if queue.closed {
                return Err(WorkerError::Stopped);
            }
            if let Some(refused) = shared.refuses(&queue) {
                return Err(WorkerError::Overloaded(refused));
            }
            queue.state.push(Job {
                inputs,
                key,
                rows,
                enqueued: Instant::now(),
                deadline,
                reply,
            });
            shared.metrics.queue_depth.set(queue.state.len() as f64);
            let lead = !queue.leader && queue.busy == 0 && shared.cost.below(INLINE_BELOW);
            queue.leader |= lead;
            // A leader runs whatever queues behind it.
            (lead, !queue.leader && queue.idle > 0)
        };
        if wake {
            shared.ready.notify_one();
        }
        if lead {
            let leading = Leading(shared);
            // One scheduler turn first: the requests whose bytes arrived
            // with this one are read, decoded and queued behind it, and
            // run in its batch (measured over HTTP: 1.0 row a run at c=8
            // without it, 4 with it), then run-queue turns while they bring
            // more (see MAX_TURNS). A scheduler turn costs the I/O thread a
            // poll of its sockets (a syscall); when turns keep bringing
            // nobody (one client at a time), most are skipped.
            let turn = shared.joining.take_turn();
            if turn {
                tokio::task::yield_now().await;
                let mut queued = lock(&shared.queue).state.len();
                for _ in 0..MAX_TURNS {
                    RunQueueTurn(false).await;
                    let now = lock(&shared.queue).state.len();
                    if now == queued {
                        break;
                    }
                    queued = now;
                }
            }
            leading.run_queued(turn);
        }
        // A job dropped unanswered was abandoned for its deadline, or the
        // worker stopped.
        Ok(answer.await.map_err(|_| match deadline {
            Some(d) if Instant::now() >= d => WorkerError::DeadlineExceeded,
            _ => WorkerError::Stopped,
        })??)
    }
}

impl Shared {
    /// Admission, under the queue's lock: the count first, then the time
    /// the queue would take to drain.
    fn refuses(&self, queue: &Queue) -> Option<Refused> {
        let capacity = self.admission.capacity;
        if queue.state.len() >= capacity {
            return Some(Refused::Full { capacity });
        }
        let max_wait = self.admission.max_wait?;
        let per_row = self.row_cost.nanos();
        if per_row == u64::MAX || queue.state.is_empty() {
            return None;
        }
        let instances = self.backends.len().max(1) as u64;
        let wait =
            Duration::from_nanos((queue.state.rows() as u64).saturating_mul(per_row) / instances);
        (wait > max_wait).then_some(Refused::Wait { wait, max_wait })
    }
}

/// Gives every task already runnable on this thread a turn, without the
/// poll of the sockets that `tokio::task::yield_now` waits for: a task
/// that wakes itself is put at the back of the run queue. The flag says
/// whether the turn was taken.
struct RunQueueTurn(bool);

impl std::future::Future for RunQueueTurn {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// The lead, held by one request's task. Dropping it (after running, or
/// because the request's future was dropped while it waited its turn)
/// gives the queue back to the inference threads and wakes one if
/// anything is left.
struct Leading<'a>(&'a Shared);

impl Leading<'_> {
    /// Runs what is queued and due, on this thread. Bounded: on a runtime
    /// with several I/O threads others may keep queueing meanwhile, and
    /// those requests are the inference threads' to run.
    /// `turned`: whether the leader gave the scheduler a turn first (then
    /// the first batch tells whether anybody joined it).
    fn run_queued(self, turned: bool) {
        let shared = self.0;
        for round in 0..4 {
            let batch = {
                let mut queue = lock(&shared.queue);
                match queue.state.next(Instant::now(), &shared.policy) {
                    Decision::Run(batch) => {
                        shared.metrics.queue_depth.set(queue.state.len() as f64);
                        if turned && round == 0 {
                            shared.joining.joined(batch.len() > 1);
                        }
                        batch
                    }
                    // A delay to wait out is an inference thread's to wait.
                    Decision::Wait(_) | Decision::Idle => return,
                }
            };
            let mut backend = lock(&shared.backends[0]);
            execute(shared, 0, backend.as_mut(), batch, Clock::Wall).send();
        }
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        let mut queue = lock(&shared.queue);
        queue.leader = false;
        let wake = !queue.state.is_empty() && queue.idle > 0;
        drop(queue);
        if wake {
            shared.ready.notify_one();
        }
    }
}

/// The merge key and row count of a request: every input must have a first
/// dimension, the same one.
fn batch_key(inputs: &[InputTensor]) -> (Option<BatchKey>, usize) {
    let Some(rows) = inputs
        .first()
        .and_then(|t| t.shape.first())
        .map(|&r| r as usize)
    else {
        return (None, 0);
    };
    let mut key = Vec::with_capacity(inputs.len());
    for t in inputs {
        match t.shape.split_first() {
            Some((&r, rest)) if r as usize == rows => {
                key.push((t.name.clone(), t.data.datatype(), rest.to_vec()))
            }
            _ => return (None, 0),
        }
    }
    key.sort_by(|a, b| a.0.cmp(&b.0));
    (Some(BatchKey(key)), rows)
}

/// One inference thread: take a batch, run it, answer, repeat.
fn instance(shared: &Shared, index: usize) {
    lower_priority();
    while let Some(batch) = next_batch(shared) {
        let mut backend = lock(&shared.backends[index]);
        let replies = execute(shared, index, backend.as_mut(), batch, Clock::Thread);
        drop(backend);
        // Free before the answers go out: an answer wakes the I/O thread,
        // which on a shared core may preempt this one at once, and the
        // next request it reads must see no busy instance to run inline.
        lock(&shared.queue).busy -= 1;
        replies.send();
    }
}

/// How far below the I/O threads inference threads run (their nice value,
/// Linux's per-thread priority; `--inference-nice`), set once at start-up.
/// Where the two share a core, a model's run holds the core for its time
/// slice while requests wait unread, refusals included; a lower priority
/// lets the I/O threads in at once when a packet wakes them. Measured on
/// one shared core (benches/overload.sh, `make compare`): at 10, refusals
/// under 2x overload came back in 3 ms instead of 49 (p99, gRPC), but
/// `mlp` served 20 % fewer requests closed-loop at c=64. Hence 0 unless
/// asked; alone on a core it changes nothing.
static INFERENCE_NICE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

pub fn set_inference_nice(nice: i32) {
    INFERENCE_NICE.store(nice.clamp(0, 19), Ordering::Relaxed);
}

fn lower_priority() {
    let nice = INFERENCE_NICE.load(Ordering::Relaxed);
    if nice > 0 {
        // SAFETY: setpriority only reads its arguments; on Linux `who = 0`
        // with PRIO_PROCESS is the calling thread. A failure (a sandbox
        // without the call) leaves the default priority.
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    }
}

/// Runs the model, recording the run's inputs and outputs in this
/// instance's window shard (inputs before the run, which consumes them).
fn run_recorded(
    shared: &Shared,
    index: usize,
    backend: &mut dyn Backend,
    inputs: Vec<Tensor>,
) -> Result<Vec<Tensor>, BackendError> {
    let Some(windows) = &shared.windows else {
        return backend.run(inputs);
    };
    windows.record_inputs(index, &inputs);
    let outputs = backend.run(inputs)?;
    windows.record_outputs(index, &outputs);
    Ok(outputs)
}

/// Blocks until there is a batch to run; `None` once the worker is closed
/// and its queue drained.
fn next_batch(shared: &Shared) -> Option<Vec<Job>> {
    let mut queue = lock(&shared.queue);
    loop {
        if queue.leader && !queue.closed {
            // The queue is the leader's until it lets go (and wakes one of us).
            queue.idle += 1;
            queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
            queue.idle -= 1;
            continue;
        }
        let now = Instant::now();
        match queue.state.next(now, &shared.policy) {
            Decision::Run(batch) => {
                queue.busy += 1;
                shared.metrics.queue_depth.set(queue.state.len() as f64);
                // Another idle instance may take what is left.
                if !queue.state.is_empty() && queue.idle > 0 {
                    shared.ready.notify_one();
                }
                return Some(batch);
            }
            Decision::Wait(until) => {
                queue.idle += 1;
                queue = shared
                    .ready
                    .wait_timeout(queue, until.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                queue.idle -= 1;
            }
            Decision::Idle if queue.closed => return None,
            Decision::Idle => {
                queue.idle += 1;
                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
                queue.idle -= 1;
                // Woken by a request: let the I/O threads queue whatever
                // else has arrived first. Where they share a core with this
                // thread, a woken inference thread would preempt them at
                // once and run every request alone; elsewhere this costs
                // one sched_yield. It is what lets batches form with no
                // queue delay.
                if shared.batching {
                    drop(queue);
                    std::thread::yield_now();
                    queue = lock(&shared.queue);
                }
            }
        }
    }
}

/// Runs per version not counted in the cost of a row.
const COLD_RUNS: u64 = 8;

/// A run's answers, sent once the instance has said it is free.
enum Replies {
    One(Reply, Result<Ran, BackendError>),
    Many(Vec<(Reply, Result<Ran, BackendError>)>),
}

type Reply = oneshot::Sender<Result<Ran, BackendError>>;

impl Replies {
    fn send(self) {
        match self {
            Replies::One(reply, result) => {
                let _ = reply.send(result);
            }
            Replies::Many(all) => {
                for (reply, result) in all {
                    let _ = reply.send(result);
                }
            }
        }
    }
}

/// How a run's cost is measured (see [`thread_cpu`]).
#[derive(Clone, Copy, PartialEq)]
enum Clock {
    /// The thread's CPU time: on an inference thread, which the I/O thread
    /// may preempt mid-run where the two share a core.
    Thread,
    /// The wall clock: a leader's run on the I/O thread, which no instance
    /// preempts (none is busy while a leader runs). It costs no syscall,
    /// where the thread clock costs two a run: at low concurrency, one run
    /// a request.
    Wall,
}

fn execute(
    shared: &Shared,
    index: usize,
    backend: &mut dyn Backend,
    batch: Vec<Job>,
    clock: Clock,
) -> Replies {
    let started = Instant::now();
    let cpu = if clock == Clock::Thread {
        thread_cpu()
    } else {
        None
    };
    let rows: usize = batch.iter().map(|j| j.rows.max(1)).sum();
    let replies = run_batch(shared, index, backend, batch, rows, started);
    // A fresh thread's first runs are cold (lazy set-up, empty caches; tens
    // of milliseconds where later runs take one): left out, or a bound in
    // time would refuse the first burst a version sees.
    if shared.stats.execution_count.load(Ordering::Relaxed) > COLD_RUNS {
        shared.row_cost.record(started.elapsed() / rows as u32);
    }
    // Without a thread clock the wall clock stands in: it over-counts, which
    // errs towards the inference threads.
    let took = match cpu.zip(cpu.and_then(|_| thread_cpu())) {
        Some((before, after)) => after.saturating_sub(before),
        None => started.elapsed(),
    };
    shared.cost.record(took);
    replies
}

/// CPU time this thread has used. A run's cost is judged by it, not by the
/// clock on the wall: an inference thread sharing a core with the I/O
/// thread is preempted mid-run, and the wall clock would count the I/O
/// thread's work as the model's (and keep a tiny model off the inline path
/// for as long as it runs on the thread). std has no per-thread CPU clock.
fn thread_cpu() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the call only writes it.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    ok.then(|| Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

fn run_batch(
    shared: &Shared,
    index: usize,
    backend: &mut dyn Backend,
    mut batch: Vec<Job>,
    run_rows: usize,
    started: Instant,
) -> Replies {
    shared.stats.execution_count.fetch_add(1, Ordering::Relaxed);
    shared.metrics.batch_size.record(run_rows as f64);
    if batch.len() == 1 {
        let job = batch.pop().expect("one job");
        let rows = job.rows;
        // Raw inputs are decoded here: the one copy on the way in.
        let inputs = job
            .inputs
            .into_iter()
            .map(|t| Tensor {
                name: t.name,
                shape: t.shape,
                data: t.data.into_typed(),
            })
            .collect();
        let result = run_recorded(shared, index, backend, inputs).map(|outputs| Ran {
            outputs,
            queue: started - job.enqueued,
            compute: started.elapsed(),
            batch_rows: rows.max(1),
        });
        return Replies::One(job.reply, result);
    }

    let rows: Vec<usize> = batch.iter().map(|j| j.rows).collect();
    let total: usize = rows.iter().sum();
    let result = merge(&mut batch, total)
        .and_then(|inputs| run_recorded(shared, index, backend, inputs))
        .and_then(|outputs| split(outputs, &rows, total));
    let compute = started.elapsed();
    Replies::Many(match result {
        Ok(per_job) => batch
            .into_iter()
            .zip(per_job)
            .map(|(job, outputs)| {
                let ran = Ran {
                    outputs,
                    queue: started - job.enqueued,
                    compute,
                    batch_rows: total,
                };
                (job.reply, Ok(ran))
            })
            .collect(),
        Err(e) => batch
            .into_iter()
            .map(|job| (job.reply, Err(e.clone())))
            .collect(),
    })
}

/// Concatenates the batch's inputs row-wise, in the first request's input order.
fn merge(batch: &mut [Job], total: usize) -> Result<Vec<Tensor>, BackendError> {
    let first = &batch[0].inputs;
    let mut merged = Vec::with_capacity(first.len());
    for (i, t) in first.iter().enumerate() {
        let parts: Vec<&Elements> = batch
            .iter()
            .map(|job| {
                job.inputs
                    .iter()
                    .find(|x| x.name == t.name)
                    .map(|x| &x.data)
                    .ok_or_else(|| {
                        BackendError::Run(format!("batched request lacks input '{}'", t.name))
                    })
            })
            .collect::<Result<_, _>>()?;
        // Each request's rows are decoded (or copied) straight into the batch buffer.
        let data = Elements::concat(&parts).ok_or_else(|| {
            BackendError::Run(format!(
                "input '{}': datatypes differ within a batch",
                t.name
            ))
        })?;
        let mut shape = first[i].shape.clone();
        shape[0] = total as i64;
        merged.push(Tensor {
            name: t.name.clone(),
            shape,
            data,
        });
    }
    // The requests' own buffers are no longer needed.
    for job in batch.iter_mut() {
        job.inputs.clear();
    }
    Ok(merged)
}

/// Splits each output's rows back to the requests, in batch order.
fn split(
    outputs: Vec<Tensor>,
    rows: &[usize],
    total: usize,
) -> Result<Vec<Vec<Tensor>>, BackendError> {
    let mut per_job: Vec<Vec<Tensor>> = rows
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for out in outputs {
        if out.shape.first().map(|&r| r as usize) != Some(total) {
            return Err(BackendError::Run(format!(
                "output '{}' has shape {:?}, which does not have the batch's {total} rows",
                out.name, out.shape
            )));
        }
        let per_row: usize = out.shape[1..].iter().map(|&d| d.max(0) as usize).product();
        let lengths: Vec<usize> = rows.iter().map(|r| r * per_row).collect();
        let pieces = out.data.split(&lengths).ok_or_else(|| {
            BackendError::Run(format!("output '{}' cannot be split by rows", out.name))
        })?;
        for ((piece, &r), slot) in pieces.into_iter().zip(rows).zip(per_job.iter_mut()) {
            let mut shape = out.shape.clone();
            shape[0] = r as i64;
            slot.push(Tensor {
                name: out.name.clone(),
                shape,
                data: piece,
            });
        }
    }
    Ok(per_job)
}

#[cfg(test)]
mod tests;
