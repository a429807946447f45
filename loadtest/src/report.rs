//! Turning outcomes into a report: HdrHistogram percentiles (µs), errors by
//! kind with one example each, QPS, a per-second timeline; as a table for
//! people and JSON for machines; and the progress bar while it runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::run::{Config, Load, Outcome, Stop};

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Collects outcomes as they finish.
pub(crate) struct Recorder {
    measure_from: Instant,
    all: Histogram<u64>,
    /// Of failed requests (how fast a refusal comes back).
    failed: Histogram<u64>,
    /// Of failed requests, from when each went out rather than when it was
    /// due: a refusal's round trip without the generator's own lag.
    failed_rtt: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
    seconds: Vec<(u64, u64, Histogram<u64>)>,
    last_done: Option<Instant>,
    /// How late requests went out after they were due (open loop: the
    /// generator's own lag; a generator that falls behind sends in bursts,
    /// and its latencies and rate mean less).
    send_lag: Histogram<u64>,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
}

impl Recorder {
    pub fn new(measure_from: Instant) -> Recorder {
        Recorder {
            measure_from,
            all: histogram(),
            failed: histogram(),
            failed_rtt: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
            examples: BTreeMap::new(),
            seconds: Vec::new(),
            last_done: None,
            send_lag: histogram(),
            first_sent: None,
            last_sent: None,
        }
    }

    pub fn record(&mut self, o: &Outcome) {
        let second = o.due.saturating_duration_since(self.measure_from).as_secs() as usize;
        while self.seconds.len() <= second {
            self.seconds.push((0, 0, histogram()));
        }
        self.last_done = Some(self.last_done.map_or(o.done, |d| d.max(o.done)));
        if let Some(sent) = o.sent {
            let lag = sent.saturating_duration_since(o.due).as_micros() as u64;
            self.send_lag.saturating_record(lag);
            self.first_sent = Some(self.first_sent.map_or(sent, |f| f.min(sent)));
            self.last_sent = Some(self.last_sent.map_or(sent, |l| l.max(sent)));
        }
        match &o.result {
            Ok(()) => {
                let us = o.done.saturating_duration_since(o.due).as_micros().max(1) as u64;
                self.all.saturating_record(us);
                self.ok += 1;
                let s = &mut self.seconds[second];
                s.0 += 1;
                s.2.saturating_record(us);
            }
            Err(f) => {
                let us = o.done.saturating_duration_since(o.due).as_micros().max(1) as u64;
                self.failed.saturating_record(us);
                if let Some(sent) = o.sent {
                    let rtt = o.done.saturating_duration_since(sent).as_micros().max(1) as u64;
                    self.failed_rtt.saturating_record(rtt);
                }
                *self.errors.entry(f.kind.clone()).or_default() += 1;
                self.examples
                    .entry(f.kind.clone())
                    .or_insert_with(|| f.detail.clone());
                self.seconds[second].1 += 1;
            }
        }
    }

    pub fn report(self, config: &Config, now: Instant) -> Report {
        let measured = match config.stop {
            Stop::Duration(d) => d,
            Stop::Requests(_) => self
                .last_done
                .unwrap_or(now)
                .saturating_duration_since(self.measure_from),
        }
        .as_secs_f64()
        .max(1e-9);
        let h = &self.all;
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        let lag = |p: f64| {
            if self.send_lag.is_empty() {
                0
            } else {
                self.send_lag.value_at_quantile(p)
            }
        };
        let (mode, concurrency, rate) = match config.load {
            Load::Closed { concurrency } => ("closed", Some(concurrency), None),
            Load::Open { rate, .. } => ("open", None, Some(rate)),
        };
        Report {
            target: config.target.clone(),
            protocol: config.protocol,
            model: config.model.clone(),
            version: config.version.clone(),
            mode,
            concurrency,
            rate,
            measured_seconds: measured,
            requests: self.ok + self.errors.values().sum::<u64>(),
            ok: self.ok,
            errors: self.errors,
            error_examples: self.examples,
            qps: self.ok as f64 / measured,
            latency_us: Latency {
                min: if h.is_empty() { 0 } else { h.min() },
                mean: h.mean(),
                p50: q(0.5),
                p90: q(0.9),
                p95: q(0.95),
                p99: q(0.99),
                p999: q(0.999),
                max: h.max(),
            },
            error_latency_us: (!self.failed.is_empty()).then(|| latency(&self.failed)),
            error_round_trip_us: (!self.failed_rtt.is_empty()).then(|| latency(&self.failed_rtt)),
            timeline: self
                .seconds
                .iter()
                .enumerate()
                .map(|(i, (ok, err, h))| Second {
                    second: i as u64,
                    ok: *ok,
                    errors: *err,
                    p50_us: if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(0.5)
                    },
                    p99_us: if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(0.99)
                    },
                })
                .collect(),
            send_lag_us: SendLag {
                p50: lag(0.5),
                p90: lag(0.9),
                p99: lag(0.99),
                max: self.send_lag.max(),
            },
            sent_span_seconds: match (self.first_sent, self.last_sent) {
                (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
                _ => 0.0,
            },
            histogram: self.all,
        }
    }
}

/// How late requests went out after they were due, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct SendLag {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub second: u64,
    pub ok: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub protocol: crate::Protocol,
    pub model: String,
    pub version: Option<String>,
    pub mode: &'static str,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub measured_seconds: f64,
    pub requests: u64,
    pub ok: u64,
    /// Failed requests by kind (`http_503`, `grpc_Unavailable`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
    /// One message per error kind.
    pub error_examples: BTreeMap<String, String>,
    pub qps: f64,
    /// Of successful requests, in microseconds.
    pub latency_us: Latency,
    /// Of failed ones (a refusal's round trip), when there were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_latency_us: Option<Latency>,
    /// Of failed ones, from when each went out (not when it was due): the
    /// server's share of a refusal, without the generator's lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_round_trip_us: Option<Latency>,
    /// When each request actually went out against when it was due
    /// (closed loop: always 0, a client sends when the last answer came).
    pub send_lag_us: SendLag,
    /// From the first request sent to the last.
    pub sent_span_seconds: f64,
    pub timeline: Vec<Second>,
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

impl Report {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The human-readable summary.
    pub fn table(&self) -> String {
        let load = match self.mode {
            "open" => format!("open loop, {} req/s due", self.rate.unwrap_or(0.0)),
            _ => format!("closed loop, {} clients", self.concurrency.unwrap_or(0)),
        };
        let ms = |us: u64| format!("{:>10.3} ms", us as f64 / 1000.0);
        let l = &self.latency_us;
        let mut out = format!(
            "target     {} ({:?}), model {}{}\nload       {load}, measured {:.2} s\nrequests   {} ok, {} failed\nthroughput {:.1} req/s\n\nlatency    min  {}\n           mean {:>10.3} ms\n           p50  {}\n           p90  {}\n           p95  {}\n           p99  {}\n           p99.9{}\n           max  {}\n",
            self.target,
            self.protocol,
            self.model,
            self.version.as_ref().map(|v| format!(" v{v}")).unwrap_or_default(),
            self.measured_seconds,
            self.ok,
            self.error_count(),
            self.qps,
            ms(l.min),
            l.mean / 1000.0,
            ms(l.p50),
            ms(l.p90),
            ms(l.p95),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
        );
        if self.mode == "open" {
            let s = &self.send_lag_us;
            out.push_str(&format!(
                "\nsend lag   p50 {} p99 {} max {} (how late requests went out)\n",
                ms(s.p50).trim_start(),
                ms(s.p99).trim_start(),
                ms(s.max).trim_start()
            ));
        }
        if let Some(e) = &self.error_latency_us {
            out.push_str(&format!(
                "\nfailed in  p50 {} p99 {} max {} (how fast errors came back)\n",
                ms(e.p50).trim_start(),
                ms(e.p99).trim_start(),
                ms(e.max).trim_start()
            ));
        }
        if !self.errors.is_empty() {
            out.push_str("\nerrors\n");
            for (kind, n) in &self.errors {
                let example = self
                    .error_examples
                    .get(kind)
                    .map(String::as_str)
                    .unwrap_or("");
                out.push_str(&format!("  {kind:<20} {n:>8}  e.g. {example}\n"));
            }
        }
        out
    }
}

/// The progress bar (on stderr, hidden when not a terminal or not wanted).
#[derive(Clone)]
pub(crate) struct Progress {
    bar: indicatif::ProgressBar,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Progress {
    pub fn new(show: bool, stop: &Stop, warmup: Duration) -> Progress {
        let bar = if !show {
            indicatif::ProgressBar::hidden()
        } else {
            match stop {
                Stop::Duration(d) => indicatif::ProgressBar::new((warmup + *d).as_secs().max(1)),
                Stop::Requests(n) => indicatif::ProgressBar::new(*n),
            }
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {msg}",
            )
            .expect("valid template"),
        );
        let progress = Progress {
            bar,
            ok: Arc::default(),
            failed: Arc::default(),
        };
        if show {
            let (p, by_time) = (progress.clone(), matches!(stop, Stop::Duration(_)));
            tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                while !p.bar.is_finished() {
                    tick.tick().await;
                    let ok = p.ok.load(Ordering::Relaxed);
                    let failed = p.failed.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64();
                    p.bar
                        .set_position(if by_time { secs as u64 } else { ok + failed });
                    p.bar.set_message(format!(
                        "{ok} ok, {failed} failed, {:.0} req/s",
                        ok as f64 / secs.max(1e-3)
                    ));
                }
            });
        }
        progress
    }

    pub fn record(&self, ok: bool) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        min: h.min(),
        mean: h.mean(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p95: h.value_at_quantile(0.95),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}
