//! Where a batch runs (the calling thread or an inference thread) and that
//! every caller still gets its own rows. The backend is a stand-in whose
//! cost is set: what is under test is the scheduling, which no real model
//! lets a test choose (a real model's cost depends on the machine).

use std::collections::BTreeMap;
use std::future::Future;

use super::*;
use crate::backend::Signature;
use crate::monitor::Recorder;
use crate::tensor::TensorData;

/// y = 2x + 1 over FP32 input "x", burning `cost` of CPU per run, and
/// noting which thread ran each run and how many rows it carried.
type Runs = Arc<Mutex<Vec<(String, usize)>>>;

struct Probe {
    cost: Duration,
    runs: Runs,
    signature: Signature,
    properties: BTreeMap<String, String>,
}

impl Backend for Probe {
    fn platform(&self) -> &'static str {
        "probe"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let began = thread_cpu().expect("thread clock");
        while thread_cpu().expect("thread clock") - began < self.cost {
            std::hint::spin_loop();
        }
        let x = &inputs[0];
        let TensorData::Fp32(v) = &x.data else {
            return Err(BackendError::Run("probe takes FP32".into()));
        };
        let thread = std::thread::current().name().unwrap_or("").to_string();
        lock(&self.runs).push((thread, x.shape[0] as usize));
        Ok(vec![Tensor {
            name: "y".into(),
            shape: x.shape.clone(),
            data: TensorData::Fp32(v.iter().map(|a| a * 2.0 + 1.0).collect()),
        }])
    }
}

fn worker(cost: Duration, instances: usize) -> (Worker, Runs) {
    let runs: Runs = Arc::default();
    let backends = (0..instances)
        .map(|_| {
            Box::new(Probe {
                cost,
                runs: runs.clone(),
                signature: Signature {
                    inputs: vec![],
                    outputs: vec![],
                },
                properties: BTreeMap::new(),
            }) as Box<dyn Backend>
        })
        .collect();
    let recorder = Recorder::new("probe", 1, "probe", "", &BTreeMap::new(), None);
    let policy = Policy {
        max_rows: 64,
        preferred: vec![],
        max_delay: Duration::ZERO,
    };
    let admission = Admission {
        capacity: 1024,
        max_wait: None,
    };
    let w = Worker::spawn(
        "probe",
        backends,
        policy,
        true,
        admission,
        recorder.for_runs(),
    )
    .unwrap();
    (w, runs)
}

fn input(values: &[f32]) -> Vec<InputTensor> {
    vec![InputTensor {
        name: "x".into(),
        shape: vec![values.len() as i64, 1],
        data: Elements::Typed(TensorData::Fp32(values.to_vec())),
    }]
}

async fn ask(w: &Worker, values: &[f32]) -> Vec<f32> {
    let ran = w.run(input(values), None).await.expect("run");
    assert_eq!(ran.outputs[0].shape, vec![values.len() as i64, 1]);
    match &ran.outputs[0].data {
        TensorData::Fp32(v) => v.clone(),
        other => panic!("FP32 expected, got {other:?}"),
    }
}

fn on_threads(runs: &Runs) -> (usize, usize) {
    let runs = lock(runs);
    let threads = runs.iter().filter(|(t, _)| t.starts_with("infer-")).count();
    (threads, runs.len() - threads)
}

/// Asks until a run happens off the inference threads: the first runs of a
/// fresh thread (cold caches, lazy set-up) cost more than later ones, and
/// the estimate comes down from them step by step.
async fn warm(w: &Worker, runs: &Runs) {
    for _ in 0..500 {
        ask(w, &[0.0]).await;
        if on_threads(runs).1 > 0 {
            return;
        }
    }
    panic!("a free model never ran inline: {:?}", lock(runs));
}

#[tokio::test]
async fn a_cheap_model_runs_on_the_calling_thread_once_it_has_shown_it_is_cheap() {
    let (w, runs) = worker(Duration::ZERO, 2);
    warm(&w, &runs).await;
    let before = on_threads(&runs);
    for k in 0..20 {
        assert_eq!(ask(&w, &[k as f32]).await, vec![k as f32 * 2.0 + 1.0]);
    }
    let runs = lock(&runs);
    // The first run's cost is not known yet: an inference thread runs it.
    assert!(runs[0].0.starts_with("infer-"), "{runs:?}");
    // Once inline, it stays inline.
    assert!(
        runs[before.0..]
            .iter()
            .all(|(t, _)| !t.starts_with("infer-")),
        "{runs:?}"
    );
}

#[tokio::test]
async fn an_expensive_model_stays_on_the_inference_threads() {
    let (w, runs) = worker(INLINE_BELOW * 4, 2);
    for k in 0..20 {
        assert_eq!(ask(&w, &[k as f32]).await, vec![k as f32 * 2.0 + 1.0]);
    }
    assert_eq!(on_threads(&runs), (20, 0));
}

#[tokio::test]
async fn a_model_that_turns_expensive_goes_back_to_the_threads() {
    let (w, runs) = worker(Duration::ZERO, 1);
    warm(&w, &runs).await;
    let (threads, inline) = on_threads(&runs);
    // One slow run (measured on the calling thread) is enough.
    w.shared.cost.record(INLINE_BELOW * 20);
    ask(&w, &[1.0]).await;
    assert_eq!(on_threads(&runs), (threads + 1, inline));
}

#[tokio::test]
async fn requests_that_arrive_together_share_the_leaders_run_and_get_their_own_rows() {
    let (w, runs) = worker(Duration::ZERO, 2);
    warm(&w, &runs).await;
    let warm_runs = lock(&runs).len();
    let w = Arc::new(w);
    let tasks: Vec<_> = (0..16)
        .map(|c| {
            let w = w.clone();
            tokio::spawn(async move {
                let values: Vec<f32> = (0..1 + c % 3).map(|r| (c * 10 + r) as f32).collect();
                let got = ask(&w, &values).await;
                let want: Vec<f32> = values.iter().map(|a| a * 2.0 + 1.0).collect();
                assert_eq!(got, want, "client {c}");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let runs = &lock(&runs)[warm_runs..];
    // On this single-threaded runtime every task queues before the first
    // leader gets its turn back: fewer runs than requests.
    assert!(runs.len() < 16, "{runs:?}");
    assert!(runs.iter().any(|(_, rows)| *rows > 3), "{runs:?}");
    let rows: usize = runs.iter().map(|(_, r)| r).sum();
    assert_eq!(rows, (0..16).map(|c| 1 + c % 3).sum::<usize>());
}

#[tokio::test]
async fn requests_two_tasks_away_still_join_the_leaders_run() {
    // Over gRPC a request reaches the service in a second task: h2's
    // connection task reads the frames and wakes the stream's task, which
    // runs the call. Here each "connection" wakes on a socket in the same
    // poll that ends the leader's scheduler turn, and spawns the task that
    // asks: the askers are queued behind the leader.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (w, runs) = worker(Duration::ZERO, 1);
    warm(&w, &runs).await;
    // Warming sent one request at a time: let the leader take its turn.
    w.shared.joining.joined(true);
    let warm_runs = lock(&runs).len();
    let w = Arc::new(w);
    let mut ends = Vec::new();
    let mut connections = Vec::new();
    for c in 1..=4 {
        let (end, mut conn) = tokio::net::UnixStream::pair().unwrap();
        ends.push(end);
        let w = w.clone();
        connections.push(tokio::spawn(async move {
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte).await.unwrap();
            let stream = tokio::spawn(async move { ask(&w, &[c as f32]).await });
            stream.await.unwrap()
        }));
    }
    // The connections wait on their sockets before any byte is sent.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    for end in &mut ends {
        end.write_all(b"x").await.unwrap();
    }
    let leader = ask(&w, &[0.0]).await;
    assert_eq!(leader, vec![1.0]);
    for (c, conn) in connections.into_iter().enumerate() {
        assert_eq!(conn.await.unwrap(), vec![(c + 1) as f32 * 2.0 + 1.0]);
    }
    let runs = &lock(&runs)[warm_runs..];
    assert_eq!(
        runs.len(),
        1,
        "one run for the leader and all four: {runs:?}"
    );
    assert_eq!(runs[0].1, 5);
}

#[tokio::test]
async fn a_leader_dropped_before_it_ran_leaves_the_queue_to_the_threads() {
    let (w, runs) = worker(Duration::ZERO, 1);
    warm(&w, &runs).await;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    // Boxed, not pinned on the stack: dropping it must drop the future.
    let mut leader = Box::pin(w.run(input(&[1.0]), None));
    // Polled once: it leads and gives the scheduler its turn.
    assert!(leader.as_mut().poll(&mut cx).is_pending());
    // Queued behind the leader, which never comes back.
    let follower = w.run(input(&[2.0]), None);
    tokio::pin!(follower);
    assert!(follower.as_mut().poll(&mut cx).is_pending());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(follower.as_mut().poll(&mut cx).is_pending());
    drop(leader);
    let ran = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the follower is answered once the leader is gone")
        .unwrap();
    assert_eq!(ran.outputs[0].data, TensorData::Fp32(vec![5.0]));
    assert!(lock(&runs).last().unwrap().0.starts_with("infer-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_callers_on_many_threads_each_get_their_own_rows() {
    let (w, _) = worker(Duration::from_micros(5), 2);
    let w = Arc::new(w);
    let tasks: Vec<_> = (0..32)
        .map(|c| {
            let w = w.clone();
            tokio::spawn(async move {
                for k in 0..50 {
                    let values: Vec<f32> = (0..1 + (c + k) % 4)
                        .map(|r| (c * 1000 + k * 10 + r) as f32)
                        .collect();
                    let want: Vec<f32> = values.iter().map(|a| a * 2.0 + 1.0).collect();
                    assert_eq!(ask(&w, &values).await, want, "client {c} request {k}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_deadline_passes_while_queued_never_runs() {
    let (w, runs) = worker(Duration::from_millis(300), 1);
    let w = Arc::new(w);
    // One run keeps the only instance busy for 300 ms...
    let busy = {
        let w = w.clone();
        tokio::spawn(async move { w.run(input(&[1.0]), None).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...while a request due in 50 ms waits behind it: dropped unrun.
    let late = w
        .run(
            input(&[2.0, 3.0]),
            Some(Instant::now() + Duration::from_millis(50)),
        )
        .await;
    assert!(
        matches!(late, Err(WorkerError::DeadlineExceeded)),
        "{late:?}"
    );
    busy.await.unwrap().unwrap();
    // A request with time to spare still runs after it.
    let on_time = w
        .run(
            input(&[4.0]),
            Some(Instant::now() + Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(on_time.outputs[0].data, TensorData::Fp32(vec![9.0]));
    let rows: Vec<usize> = lock(&runs).iter().map(|(_, r)| *r).collect();
    assert!(
        !rows.contains(&2),
        "the late request's two rows never ran: {rows:?}"
    );
}

#[test]
fn turns_that_bring_nobody_are_skipped_but_for_probes_until_somebody_joins() {
    let joining = Joining(std::sync::atomic::AtomicU32::new(0));
    // One client at a time: every turn a leader takes brings nobody.
    let taken: Vec<usize> = (0..40)
        .filter(|_| {
            let take = joining.take_turn();
            if take {
                joining.joined(false);
            }
            take
        })
        .collect();
    assert_eq!(taken, vec![0, 1, 2, 3, 8, 16, 24, 32]);
    // Clients arrive together: the next probe finds company, and every
    // leader after it takes its turn again.
    while !joining.take_turn() {}
    joining.joined(true);
    assert!((0..20).all(|_| {
        let take = joining.take_turn();
        joining.joined(true);
        take
    }));
}
