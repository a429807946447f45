//! Dynamic batching, with Triton's semantics: requests for the same model
//! version whose inputs agree on everything but the first (batch) dimension
//! are merged into one run, up to a row limit, and each caller gets exactly
//! its own rows back.
//!
//! [`State`] is the pure decision ("which queued requests run next, or how
//! long to wait for more"); it knows nothing of threads or channels, so the
//! unit tests below drive it directly. `worker.rs` owns the queue, the lock
//! and the inference threads around it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::tensor::DataType;

/// How batches are formed for one model version.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Most rows one run may carry. A request with more runs alone.
    pub max_rows: usize,
    /// Batch sizes (in rows) worth waiting for, ascending. Empty: none.
    pub preferred: Vec<usize>,
    /// How long the oldest waiting request may be held for others to join
    /// it. Zero: run whatever is queued the moment an instance is free,
    /// which batches under load and adds no latency when idle.
    pub max_delay: Duration,
}

impl Policy {
    /// One request per run.
    pub fn unbatched() -> Policy {
        Policy {
            max_rows: 1,
            preferred: Vec::new(),
            max_delay: Duration::ZERO,
        }
    }
}

/// What must match for two requests to share a run: each input's name,
/// datatype and every dimension but the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKey(pub Vec<(String, DataType, Vec<i64>)>);

/// What the state needs to know of a queued request.
pub trait Queued {
    /// Rows (the first dimension); meaningless when `key` is `None`.
    fn rows(&self) -> usize;
    /// `None`: this request runs alone.
    fn key(&self) -> Option<&BatchKey>;
    fn enqueued(&self) -> Instant;
    /// The caller has gone, or its deadline passed by `now`: drop the
    /// request instead of running it.
    fn abandoned(&self, now: Instant) -> bool;
}

#[derive(Debug, PartialEq)]
pub enum Decision<T> {
    /// Run these now, in this order.
    Run(Vec<T>),
    /// Nothing to run before this instant unless more requests arrive.
    Wait(Instant),
    /// The queue is empty.
    Idle,
}

/// The queue of one model version.
pub struct State<T> {
    queue: VecDeque<T>,
    /// Rows queued (a request without rows counts as one): what admission
    /// weighs against the time the queue would take to drain.
    rows: usize,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State {
            queue: VecDeque::new(),
            rows: 0,
        }
    }
}

fn weight<T: Queued>(item: &T) -> usize {
    item.rows().max(1)
}

impl<T: Queued> State<T> {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Rows queued, each request counting at least one.
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn push(&mut self, item: T) {
        self.rows += weight(&item);
        self.queue.push_back(item);
    }

    fn pop_front(&mut self) -> T {
        let item = self.queue.pop_front().expect("not empty");
        self.rows -= weight(&item);
        item
    }

    /// Decides what runs next. First come, first served: the batch is built
    /// around the oldest request, taking later compatible ones in order and
    /// leaving incompatible ones queued in their place.
    pub fn next(&mut self, now: Instant, policy: &Policy) -> Decision<T> {
        let rows = &mut self.rows;
        self.queue.retain(|item| {
            let keep = !item.abandoned(now);
            if !keep {
                *rows -= weight(item);
            }
            keep
        });
        let Some(head) = self.queue.front() else {
            return Decision::Idle;
        };
        let Some(key) = head.key().cloned() else {
            return Decision::Run(vec![self.pop_front()]);
        };
        if head.rows() >= policy.max_rows {
            return Decision::Run(vec![self.pop_front()]);
        }

        // Greedy: the compatible requests, oldest first, that fit.
        let mut picked = Vec::new();
        let mut rows = 0;
        // Longest prefix of `picked` whose rows hit a preferred size.
        let mut preferred_cut = None;
        for (i, item) in self.queue.iter().enumerate() {
            if item.key() != Some(&key) || rows + item.rows() > policy.max_rows {
                continue;
            }
            rows += item.rows();
            picked.push(i);
            if policy.preferred.contains(&rows) {
                preferred_cut = Some(picked.len());
            }
            if rows == policy.max_rows {
                break;
            }
        }

        let deadline = head.enqueued() + policy.max_delay;
        let take = if rows == policy.max_rows || now >= deadline {
            picked.len()
        } else if let Some(cut) = preferred_cut {
            cut
        } else {
            return Decision::Wait(deadline);
        };
        // Remove back to front so earlier indices stay valid.
        let mut batch: Vec<T> = picked[..take]
            .iter()
            .rev()
            .map(|&i| self.queue.remove(i).expect("index from this queue"))
            .collect();
        batch.reverse();
        self.rows -= batch.iter().map(weight).sum::<usize>();
        Decision::Run(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item {
        id: u32,
        rows: usize,
        key: Option<BatchKey>,
        at: Instant,
        gone: bool,
    }

    impl Queued for Item {
        fn rows(&self) -> usize {
            self.rows
        }
        fn key(&self) -> Option<&BatchKey> {
            self.key.as_ref()
        }
        fn enqueued(&self) -> Instant {
            self.at
        }
        fn abandoned(&self, _: Instant) -> bool {
            self.gone
        }
    }

    fn key(width: i64) -> Option<BatchKey> {
        Some(BatchKey(vec![("x".into(), DataType::Fp32, vec![width])]))
    }

    fn item(id: u32, rows: usize, width: i64, at: Instant) -> Item {
        Item {
            id,
            rows,
            key: key(width),
            at,
            gone: false,
        }
    }

    #[test]
    fn the_queue_counts_what_it_holds() {
        let t0 = Instant::now();
        let mut s = State::default();
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
        s.push(item(1, 1, 4, t0));
        s.push(item(2, 1, 4, t0));
        assert!(!s.is_empty());
        assert_eq!(s.len(), 2);
        let policy = Policy {
            max_rows: 8,
            preferred: vec![],
            max_delay: Duration::ZERO,
        };
        assert!(matches!(s.next(t0, &policy), Decision::Run(v) if v.len() == 2));
        assert!(s.is_empty());
    }

    fn ids(d: Decision<Item>) -> Vec<u32> {
        match d {
            Decision::Run(items) => items.into_iter().map(|i| i.id).collect(),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    fn policy(max_rows: usize, preferred: &[usize], delay_us: u64) -> Policy {
        Policy {
            max_rows,
            preferred: preferred.to_vec(),
            max_delay: Duration::from_micros(delay_us),
        }
    }

    #[test]
    fn zero_delay_runs_what_is_queued_at_once() {
        let t = Instant::now();
        let mut s = State::default();
        assert_eq!(s.next(t, &policy(8, &[], 0)), Decision::Idle);
        for id in 0..3 {
            s.push(item(id, 1, 4, t));
        }
        assert_eq!(ids(s.next(t, &policy(8, &[], 0))), vec![0, 1, 2]);
        assert!(s.is_empty());
    }

    #[test]
    fn row_limit_caps_a_batch_and_oversized_requests_run_alone() {
        let t = Instant::now();
        let mut s = State::default();
        s.push(item(0, 3, 4, t));
        s.push(item(1, 3, 4, t));
        s.push(item(2, 3, 4, t));
        let p = policy(7, &[], 0);
        assert_eq!(ids(s.next(t, &p)), vec![0, 1]);
        assert_eq!(ids(s.next(t, &p)), vec![2]);
        s.push(item(3, 20, 4, t));
        s.push(item(4, 1, 4, t));
        assert_eq!(ids(s.next(t, &p)), vec![3]);
        assert_eq!(ids(s.next(t, &p)), vec![4]);
    }

    #[test]
    fn incompatible_requests_keep_their_place() {
        let t = Instant::now();
        let mut s = State::default();
        s.push(item(0, 1, 4, t));
        s.push(item(1, 1, 5, t));
        s.push(item(2, 1, 4, t));
        s.push(Item {
            id: 3,
            rows: 1,
            key: None,
            at: t,
            gone: false,
        });
        let p = policy(8, &[], 0);
        assert_eq!(ids(s.next(t, &p)), vec![0, 2]);
        assert_eq!(ids(s.next(t, &p)), vec![1]);
        assert_eq!(ids(s.next(t, &p)), vec![3]);
    }

    #[test]
    fn delay_waits_for_more_until_the_oldest_deadline() {
        let t = Instant::now();
        let mut s = State::default();
        let p = policy(4, &[], 100);
        s.push(item(0, 1, 4, t));
        assert_eq!(
            s.next(t, &p),
            Decision::Wait(t + Duration::from_micros(100))
        );
        s.push(item(1, 1, 4, t + Duration::from_micros(50)));
        assert_eq!(
            s.next(t + Duration::from_micros(60), &p),
            Decision::Wait(t + Duration::from_micros(100))
        );
        assert_eq!(ids(s.next(t + Duration::from_micros(100), &p)), vec![0, 1]);
        // A full batch does not wait.
        for id in 2..6 {
            s.push(item(id, 1, 4, t + Duration::from_micros(200)));
        }
        assert_eq!(
            ids(s.next(t + Duration::from_micros(200), &p)),
            vec![2, 3, 4, 5]
        );
    }

    #[test]
    fn preferred_sizes_run_before_the_deadline() {
        let t = Instant::now();
        let mut s = State::default();
        let p = policy(16, &[2, 4], 1_000);
        for id in 0..3 {
            s.push(item(id, 1, 4, t));
        }
        // 3 rows queued: 2 is preferred, so the first two go now.
        assert_eq!(ids(s.next(t, &p)), vec![0, 1]);
        assert_eq!(s.next(t, &p), Decision::Wait(t + Duration::from_millis(1)));
    }

    #[test]
    fn abandoned_requests_are_dropped_unrun() {
        let t = Instant::now();
        let mut s = State::default();
        let mut gone = item(0, 1, 4, t);
        gone.gone = true;
        s.push(gone);
        s.push(item(1, 1, 4, t));
        assert_eq!(ids(s.next(t, &policy(8, &[], 0))), vec![1]);
        assert_eq!(s.next(t, &policy(8, &[], 0)), Decision::Idle);
    }

    #[test]
    fn rows_queued_follow_pushes_runs_and_drops() {
        let t = Instant::now();
        let mut s = State::default();
        let mut gone = item(0, 2, 4, t);
        gone.gone = true;
        s.push(gone);
        s.push(item(1, 3, 4, t));
        s.push(item(2, 3, 4, t));
        // Unbatched requests (no rows) count one each.
        s.push(Item {
            id: 3,
            rows: 0,
            key: None,
            at: t,
            gone: false,
        });
        assert_eq!(s.rows(), 9);
        let p = policy(3, &[], 0);
        assert_eq!(ids(s.next(t, &p)), vec![1]);
        assert_eq!(s.rows(), 4, "the abandoned 2 rows and the 3 run are gone");
        assert_eq!(ids(s.next(t, &p)), vec![2]);
        assert_eq!(ids(s.next(t, &p)), vec![3]);
        assert_eq!(s.rows(), 0);
    }
}
