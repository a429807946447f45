//! Comparing two answers to the same request, output by output: absolute
//! and relative differences, and for classifier outputs the agreement of
//! the predicted class and its confusion matrix. Used by the shadow (which
//! tallies every mirrored request) and by `compare` (one request, on
//! demand).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::backend::Signature;
use crate::tensor::Tensor;
use crate::window::{widen, Classes};

/// Comparison tallies of one output.
#[derive(Debug, Clone, Default)]
pub struct OutputTally {
    elements: u64,
    sum_abs: f64,
    max_abs: f64,
    sum_rel: f64,
    rows: u64,
    agree: u64,
    /// (primary class, shadow class) → rows.
    confusion: BTreeMap<(i64, i64), u64>,
    classifier: bool,
}

/// Differences between two answers to the same request, output by output
/// (outputs missing from one side, or shaped differently, are skipped).
pub fn compare(
    signature: &Signature,
    primary: &[Tensor],
    other: &[Tensor],
) -> BTreeMap<String, OutputTally> {
    let mut out = BTreeMap::new();
    for p in primary {
        let Some(o) = other.iter().find(|o| o.name == p.name) else {
            continue;
        };
        if o.shape != p.shape || o.data.len() != p.data.len() {
            continue;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        widen(&p.data, 0..p.data.len(), &mut a);
        widen(&o.data, 0..o.data.len(), &mut b);
        let mut t = OutputTally::default();
        for (&x, &y) in a.iter().zip(&b) {
            let d = (x - y).abs();
            if d.is_nan() {
                continue;
            }
            t.elements += 1;
            t.sum_abs += d;
            t.max_abs = t.max_abs.max(d);
            t.sum_rel += d / x.abs().max(1e-12);
        }
        let classes = signature.output(&p.name).map_or(Classes::None, Classes::of);
        if classes != Classes::None && !a.is_empty() {
            t.classifier = true;
            let rows = p.shape.first().copied().unwrap_or(1).max(1) as usize;
            let per_row = a.len() / rows;
            for (ra, rb) in a.chunks(per_row.max(1)).zip(b.chunks(per_row.max(1))) {
                if let (Some(ca), Some(cb)) = (classes.of_row(ra), classes.of_row(rb)) {
                    t.rows += 1;
                    t.agree += (ca == cb) as u64;
                    *t.confusion.entry((ca, cb)).or_default() += 1;
                }
            }
        }
        out.insert(p.name.clone(), t);
    }
    out
}

impl OutputTally {
    /// Adds another comparison's tallies to these.
    pub fn merge(&mut self, d: &OutputTally) {
        let into = self;
        into.elements += d.elements;
        into.sum_abs += d.sum_abs;
        into.max_abs = into.max_abs.max(d.max_abs);
        into.sum_rel += d.sum_rel;
        into.rows += d.rows;
        into.agree += d.agree;
        into.classifier |= d.classifier;
        for (&k, &n) in &d.confusion {
            *into.confusion.entry(k).or_default() += n;
        }
    }
}

/// What a comparison says of one output.
#[derive(Debug, Clone, Serialize)]
pub struct OutputReport {
    /// Elements compared.
    pub count: u64,
    pub mean_abs_diff: Option<f64>,
    pub max_abs_diff: Option<f64>,
    /// Mean of |primary − shadow| / |primary|.
    pub mean_rel_diff: Option<f64>,
    /// Classifier outputs: rows compared, the share whose predicted class
    /// agrees, and primary class → shadow class → rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion: Option<BTreeMap<String, BTreeMap<String, u64>>>,
}

impl OutputTally {
    /// What the tallies say: means, maxima, and agreement for classifiers.
    pub fn report(&self) -> OutputReport {
        let t = self;
        let n = t.elements as f64;
        let some = |v: f64| (t.elements > 0).then_some(v);
        let mut confusion: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (&(a, b), &c) in &t.confusion {
            *confusion
                .entry(a.to_string())
                .or_default()
                .entry(b.to_string())
                .or_default() += c;
        }
        OutputReport {
            count: t.elements,
            mean_abs_diff: some(t.sum_abs / n),
            max_abs_diff: some(t.max_abs),
            mean_rel_diff: some(t.sum_rel / n),
            rows: t.classifier.then_some(t.rows),
            agreement: (t.classifier && t.rows > 0).then(|| t.agree as f64 / t.rows as f64),
            confusion: t.classifier.then_some(confusion),
        }
    }
}
