//! Shadow traffic: a sample of the primary's requests is mirrored to a
//! candidate (another version of the model, or another model with the same
//! inputs) after the primary has answered, and the two outputs are compared.
//!
//! The caller never waits for the shadow: its inputs are cloned only when
//! the request is sampled, the shadow runs in a task of its own once the
//! primary's answer exists, and at most `max_inflight` shadow requests are
//! pending — beyond that a sampled request is dropped and counted, never
//! queued behind. Comparisons are tallied under a mutex that only shadow
//! tasks and readers take.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::compare::{OutputReport, OutputTally};
use crate::backend::Signature;
use crate::feedback::PairAccuracy;
use crate::monitor::{SHADOW_AGREEMENT, SHADOW_MEAN_ABS_DIFF, SHADOW_REQUESTS};
use crate::tensor::Tensor;
use crate::window::latency;

/// What the shadow runs on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Another version of the same model.
    Version(u64),
    /// Another model taking the same inputs (its serving version).
    Model(String),
}

impl Target {
    /// How the feedback index and reports name the target.
    pub fn key(&self) -> String {
        match self {
            Target::Version(v) => format!("version {v}"),
            Target::Model(m) => format!("model {m}"),
        }
    }
}

/// What a shadow mirrors when `sample_rate` is not given: everything.
pub const DEFAULT_SAMPLE_RATE: f64 = 1.0;
/// Shadow requests pending at most when `max_inflight` is not given.
pub const DEFAULT_MAX_INFLIGHT: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spec {
    pub target: Target,
    /// Share of the primary's requests mirrored, 0..=1.
    pub sample_rate: f64,
    /// Shadow requests pending at most; beyond, sampled requests are dropped.
    pub max_inflight: usize,
}

impl Spec {
    /// The one rule for a shadow's settings, wherever they come from (the
    /// API, `[shadow]` in config.toml).
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_rate) || self.max_inflight == 0 {
            return Err("sample_rate must lie in 0..=1 and max_inflight be at least 1".into());
        }
        Ok(())
    }
}

/// `[promotion]`: when a `shadow-first` candidate takes over by itself.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Promotion {
    /// Requests compared at least.
    pub min_requests: u64,
    /// Argmax agreement on every classifier output, at least.
    pub min_agreement: f64,
    /// Mean absolute difference on every output, at most (unset: not checked).
    pub max_mean_abs_diff: Option<f64>,
    /// Share of the primary's traffic mirrored to the candidate.
    pub sample_rate: f64,
    /// Live accuracy (from labels) of the candidate minus the primary's on
    /// the same requests, at least; unset: labels are not waited for.
    pub min_accuracy_gain: Option<f64>,
    /// Labelled rows both must have before the gain is judged.
    pub min_labels: u64,
}

impl Default for Promotion {
    fn default() -> Self {
        Promotion {
            min_requests: 100,
            min_agreement: 0.99,
            max_mean_abs_diff: None,
            sample_rate: DEFAULT_SAMPLE_RATE,
            min_accuracy_gain: None,
            min_labels: 100,
        }
    }
}

#[derive(Debug, Clone)]
struct Tally {
    started: SystemTime,
    compared: u64,
    errors: u64,
    outputs: BTreeMap<String, OutputTally>,
    primary_latency: Vec<u64>,
    shadow_latency: Vec<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            started: SystemTime::now(),
            compared: 0,
            errors: 0,
            outputs: BTreeMap::new(),
            primary_latency: vec![0; latency::BUCKETS],
            shadow_latency: vec![0; latency::BUCKETS],
        }
    }
}

/// Closed windows kept for the report's `windows` (agreement over time).
pub const WINDOWS_KEPT: usize = 30;

struct Tallies {
    cumulative: Tally,
    window: Tally,
    window_opened: Instant,
    /// The last [`WINDOWS_KEPT`] closed windows, oldest first.
    closed: std::collections::VecDeque<Tally>,
}

pub struct Shadow {
    pub model: String,
    pub spec: Spec,
    /// Set for a `shadow-first` candidate: promoted by itself when met.
    pub promotion: Option<Promotion>,
    promoting: std::sync::atomic::AtomicBool,
    seen: AtomicU64,
    inflight: AtomicUsize,
    dropped: AtomicU64,
    window: Duration,
    tallies: Mutex<Tallies>,
}

/// A sampled request's right to a shadow run; gives its slot back when dropped.
pub struct Ticket(Arc<Shadow>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shadow {
    pub fn new(model: &str, spec: Spec, window: Duration) -> Shadow {
        Shadow {
            model: model.to_string(),
            spec,
            promotion: None,
            promoting: std::sync::atomic::AtomicBool::new(false),
            seen: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            window: if window.is_zero() {
                Duration::from_secs(60)
            } else {
                window
            },
            tallies: Mutex::new(Tallies {
                cumulative: Tally::new(),
                window: Tally::new(),
                window_opened: Instant::now(),
                closed: std::collections::VecDeque::new(),
            }),
        }
    }

    /// Whether this request is mirrored: sampled evenly at the configured
    /// rate (every 1/r-th request, no randomness), and a slot is free.
    pub fn ticket(self: &Arc<Self>) -> Option<Ticket> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        let r = self.spec.sample_rate;
        if ((n + 1.0) * r).floor() <= (n * r).floor() {
            return None;
        }
        if self.inflight.fetch_add(1, Ordering::AcqRel) >= self.spec.max_inflight {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(SHADOW_REQUESTS, "model" => self.model.clone(), "result" => "dropped")
                .increment(1);
            return None;
        }
        Some(Ticket(self.clone()))
    }

    /// A `shadow-first` candidate: promoted when `promotion` is met.
    pub fn candidate(model: &str, version: u64, promotion: Promotion, window: Duration) -> Shadow {
        let spec = Spec {
            target: Target::Version(version),
            sample_rate: promotion.sample_rate.clamp(0.0, 1.0),
            max_inflight: DEFAULT_MAX_INFLIGHT,
        };
        Shadow {
            promotion: Some(promotion),
            ..Shadow::new(model, spec, window)
        }
    }

    /// A shadow with `spec` that is a `shadow-first` candidate when
    /// `promotion` is given (as read back from `rollout.toml`).
    pub fn with_promotion(
        model: &str,
        spec: Spec,
        promotion: Option<Promotion>,
        window: Duration,
    ) -> Shadow {
        Shadow {
            promotion,
            ..Shadow::new(model, spec, window)
        }
    }

    /// Whether the candidate may be promoted, and if not, why not.
    /// `live`: both versions' accuracy on the labelled mirrored requests.
    fn verdict(&self, t: &Tally, live: Option<&PairAccuracy>) -> Option<Result<(), String>> {
        let p = self.promotion.as_ref()?;
        if let Some(gain) = p.min_accuracy_gain {
            let rows = live.map_or(0, |l| l.shadow.labelled_rows);
            if rows < p.min_labels {
                return Some(Err(format!(
                    "{rows} of min_labels {} labelled rows for min_accuracy_gain so far",
                    p.min_labels
                )));
            }
            match live.and_then(|l| l.accuracy_gain) {
                Some(g) if g >= gain => {}
                Some(g) => {
                    return Some(Err(format!(
                        "live accuracy gain {g:.4} < min_accuracy_gain {gain}"
                    )))
                }
                None => return Some(Err("no live accuracy to judge min_accuracy_gain".into())),
            }
        }
        if t.errors > 0 {
            return Some(Err(format!("{} shadow requests failed", t.errors)));
        }
        if t.compared < p.min_requests {
            return Some(Err(format!(
                "{} of min_requests {} compared so far",
                t.compared, p.min_requests
            )));
        }
        for (name, o) in &t.outputs {
            let r = o.report();
            if let Some(a) = r.agreement.filter(|&a| a < p.min_agreement) {
                return Some(Err(format!(
                    "agreement {a:.4} < min_agreement {} on output '{name}'",
                    p.min_agreement
                )));
            }
            if let (Some(bound), Some(d)) = (p.max_mean_abs_diff, r.mean_abs_diff) {
                if d > bound {
                    return Some(Err(format!(
                        "mean absolute difference {d:.6} > max_mean_abs_diff {bound} on output '{name}'"
                    )));
                }
            }
        }
        Some(Ok(()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tallies> {
        crate::sync::lock(&self.tallies)
    }

    /// Rolls the window when its time is up.
    fn roll(&self, t: &mut Tallies) {
        if t.window_opened.elapsed() >= self.window {
            let closed = std::mem::replace(&mut t.window, Tally::new());
            if t.closed.len() == WINDOWS_KEPT {
                t.closed.pop_front();
            }
            t.closed.push_back(closed);
            t.window_opened = Instant::now();
        }
    }

    fn record(&self, f: impl Fn(&mut Tally)) {
        let mut t = self.lock();
        self.roll(&mut t);
        f(&mut t.cumulative);
        f(&mut t.window);
    }

    /// The report `GET /v2/models/{m}/shadow` returns; `live`: both
    /// versions' accuracy on the labelled mirrored requests, if any.
    pub fn report(&self, live: Option<PairAccuracy>) -> ShadowReport {
        let mut t = self.lock();
        self.roll(&mut t);
        let promotion = self.promotion.as_ref().map(|p| PromotionReport {
            criteria: p.clone(),
            status: match self.verdict(&t.cumulative, live.as_ref()) {
                Some(Ok(())) => "met: promoting".into(),
                Some(Err(why)) => format!("not promoted: {why}"),
                None => String::new(),
            },
        });
        ShadowReport {
            promotion,
            model: self.model.clone(),
            target: self.spec.target.clone(),
            sample_rate: self.spec.sample_rate,
            max_inflight: self.spec.max_inflight,
            dropped: self.dropped.load(Ordering::Relaxed),
            inflight: self.inflight.load(Ordering::Relaxed),
            window_seconds: self.window.as_secs_f64(),
            cumulative: summarise(&t.cumulative),
            current_window: summarise(&t.window),
            last_window: t.closed.back().map(summarise),
            windows: t.closed.iter().map(summarise).collect(),
            live_accuracy: live,
        }
    }
}

impl Ticket {
    /// The shadow this ticket is for.
    pub fn shadow(&self) -> &Arc<Shadow> {
        &self.0
    }
}

impl Shadow {
    /// Tallies the outcome of one mirrored request (the shadow's outputs,
    /// or why it failed) against the primary's answer, then gives the
    /// ticket back: with none in flight, every mirror taken is counted.
    /// Returns the version to promote when a `shadow-first` candidate has
    /// just met its criteria; only one caller gets it (see
    /// [`Shadow::promotion_failed`]). `primary`: its outputs and how long
    /// it took; `shadow`: the same, or why it failed.
    pub fn settle(
        &self,
        ticket: Ticket,
        signature: &Signature,
        primary: (&[Tensor], Duration),
        shadow: (Result<Vec<Tensor>, String>, Duration),
        live: Option<&PairAccuracy>,
    ) -> Option<u64> {
        let ((primary_outputs, primary_took), (outcome, took)) = (primary, shadow);
        let m = self.model.clone();
        let outputs = match outcome {
            Ok(outputs) => outputs,
            Err(e) => {
                tracing::debug!(model = %m, error = %e, "shadow request failed");
                self.record(|t| t.errors += 1);
                drop(ticket);
                metrics::counter!(SHADOW_REQUESTS, "model" => m, "result" => "error").increment(1);
                return None;
            }
        };
        let diffs = super::compare::compare(signature, primary_outputs, &outputs);
        self.record(|t| {
            t.compared += 1;
            t.primary_latency[latency::bucket(primary_took.as_secs_f64() * 1e6)] += 1;
            t.shadow_latency[latency::bucket(took.as_secs_f64() * 1e6)] += 1;
            for (name, d) in &diffs {
                t.outputs.entry(name.clone()).or_default().merge(d);
            }
        });
        drop(ticket);
        metrics::counter!(SHADOW_REQUESTS, "model" => m.clone(), "result" => "compared")
            .increment(1);
        // Cumulative figures as gauges: off the request path, once per comparison.
        // Only the per-output figures: not the latency quantiles and
        // confusion matrices a whole report would build.
        let reports: Vec<(String, OutputReport)> = self
            .lock()
            .cumulative
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), v.report()))
            .collect();
        for (name, o) in &reports {
            if let Some(a) = o.agreement {
                metrics::gauge!(SHADOW_AGREEMENT, "model" => m.clone(), "output" => name.clone())
                    .set(a);
            }
            if let Some(d) = o.mean_abs_diff {
                metrics::gauge!(SHADOW_MEAN_ABS_DIFF, "model" => m.clone(), "output" => name.clone()).set(d);
            }
        }
        // A shadow-first candidate that met its criteria takes over.
        let met = matches!(self.verdict(&self.lock().cumulative, live), Some(Ok(())));
        match self.spec.target {
            Target::Version(v) if met && !self.promoting.swap(true, Ordering::AcqRel) => Some(v),
            _ => None,
        }
    }

    /// The promotion `settle` asked for did not happen: a later comparison
    /// may ask again.
    pub fn promotion_failed(&self) {
        self.promoting.store(false, Ordering::Release);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TallyReport {
    pub since: String,
    /// Requests answered by both and compared.
    pub compared: u64,
    /// Shadow requests that failed.
    pub errors: u64,
    pub outputs: BTreeMap<String, OutputReport>,
    pub latency_us: LatencyPair,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyPair {
    /// Of the requests compared: the primary's answer and the shadow's.
    pub primary_p50: Option<f64>,
    pub primary_p99: Option<f64>,
    pub shadow_p50: Option<f64>,
    pub shadow_p99: Option<f64>,
}

fn summarise(t: &Tally) -> TallyReport {
    TallyReport {
        since: humantime::format_rfc3339_millis(t.started).to_string(),
        compared: t.compared,
        errors: t.errors,
        outputs: t
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), v.report()))
            .collect(),
        latency_us: LatencyPair {
            primary_p50: latency::quantile(&t.primary_latency, 0.5),
            primary_p99: latency::quantile(&t.primary_latency, 0.99),
            shadow_p50: latency::quantile(&t.shadow_latency, 0.5),
            shadow_p99: latency::quantile(&t.shadow_latency, 0.99),
        },
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PromotionReport {
    pub criteria: Promotion,
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// For a `shadow-first` candidate: its criteria and where it stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionReport>,
    pub model: String,
    pub target: Target,
    pub sample_rate: f64,
    pub max_inflight: usize,
    /// Sampled requests dropped because `max_inflight` were pending.
    pub dropped: u64,
    pub inflight: usize,
    pub window_seconds: f64,
    pub cumulative: TallyReport,
    pub current_window: TallyReport,
    pub last_window: Option<TallyReport>,
    /// The closed windows kept ([`WINDOWS_KEPT`]), oldest first: how
    /// agreement and latency moved. A window closes when a comparison or a
    /// report comes after its time is up, so an idle spell is one window.
    pub windows: Vec<TallyReport>,
    /// The primary's and the shadow's accuracy against ground truth, on the
    /// mirrored requests that were labelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_accuracy: Option<PairAccuracy>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_needs_a_rate_in_0_1_and_a_slot() {
        let spec = |sample_rate, max_inflight| Spec {
            target: Target::Version(1),
            sample_rate,
            max_inflight,
        };
        assert!(spec(0.0, 1).check().is_ok());
        assert!(spec(DEFAULT_SAMPLE_RATE, DEFAULT_MAX_INFLIGHT)
            .check()
            .is_ok());
        for bad in [
            spec(1.01, 1),
            spec(-0.1, 1),
            spec(f64::NAN, 1),
            spec(0.5, 0),
        ] {
            let err = bad.check().unwrap_err();
            assert!(err.contains("sample_rate must lie in 0..=1"), "{err}");
        }
    }

    #[test]
    fn sampling_is_even_and_exact() {
        let shadow = Arc::new(Shadow::new(
            "m",
            Spec {
                target: Target::Version(1),
                sample_rate: 0.25,
                max_inflight: usize::MAX,
            },
            Duration::from_secs(60),
        ));
        let tickets: Vec<_> = (0..100).filter_map(|_| shadow.ticket()).collect();
        assert_eq!(tickets.len(), 25);
    }

    #[test]
    fn closed_windows_are_kept_for_the_report_up_to_a_bound() {
        let shadow = Shadow::new(
            "m",
            Spec {
                target: Target::Version(1),
                sample_rate: 1.0,
                max_inflight: 1,
            },
            Duration::from_millis(1),
        );
        let compare = |n: u64| {
            shadow.record(|t| t.compared += n);
            std::thread::sleep(Duration::from_millis(2));
        };
        compare(1);
        compare(2);
        compare(3);
        // The third window is open until the report closes it.
        let report = shadow.report(None);
        let compared: Vec<u64> = report.windows.iter().map(|w| w.compared).collect();
        assert_eq!(compared, vec![1, 2, 3]);
        assert_eq!(report.last_window.map(|w| w.compared), Some(3));
        assert_eq!(report.current_window.compared, 0);
        assert_eq!(report.cumulative.compared, 6);
        for n in 0..WINDOWS_KEPT as u64 {
            compare(10 + n);
        }
        let report = shadow.report(None);
        assert_eq!(report.windows.len(), WINDOWS_KEPT);
        // Oldest first; the oldest ones dropped.
        assert_eq!(report.windows[0].compared, 10);
        assert_eq!(
            report.windows.last().map(|w| w.compared),
            Some(10 + WINDOWS_KEPT as u64 - 1)
        );
    }

    #[test]
    fn beyond_max_inflight_requests_are_dropped_and_counted() {
        let shadow = Arc::new(Shadow::new(
            "m",
            Spec {
                target: Target::Version(1),
                sample_rate: 1.0,
                max_inflight: 2,
            },
            Duration::from_secs(60),
        ));
        let (a, b) = (shadow.ticket(), shadow.ticket());
        assert!(a.is_some() && b.is_some());
        assert!(shadow.ticket().is_none());
        assert_eq!(shadow.dropped.load(Ordering::Relaxed), 1);
        drop(a);
        assert!(shadow.ticket().is_some(), "a slot came back");
    }
}
