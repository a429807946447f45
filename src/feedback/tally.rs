//! What labels say of predictions: a tally that can add a labelled
//! prediction and take it back (a second label for an id replaces the
//! first), and the report read from it.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Said;

/// Labelled rows of one version (or of a shadow), over some span.
#[derive(Clone)]
pub struct Tally {
    pub rows: u64,
    /// Classifier rows whose predicted class equals the label.
    pub correct: u64,
    /// (label, predicted) → rows; classifiers only.
    pub confusion: BTreeMap<(i64, i64), u64>,
    /// Regression rows: sums of |error| and error².
    pub abs_error: f64,
    pub sq_error: f64,
    /// Seconds from the prediction to its first label, one per request.
    delays: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            rows: 0,
            correct: 0,
            confusion: BTreeMap::new(),
            abs_error: 0.0,
            sq_error: 0.0,
            // Auto-resizing: a tally that only ever sees delays of seconds
            // keeps a few hundred counters, not the range of years.
            delays: Histogram::new(2).expect("2 significant figures is valid"),
        }
    }
}

impl Tally {
    /// Adds (`sign` 1) or takes back (`sign` -1) the rows of one labelled
    /// prediction. `said` and `label` have the same number of rows (checked
    /// when the label was accepted).
    pub(super) fn apply(&mut self, said: &Said, label: &[f64], sign: i64) {
        let step = |n: &mut u64, by: u64| {
            *n = if sign > 0 {
                *n + by
            } else {
                n.saturating_sub(by)
            }
        };
        step(&mut self.rows, label.len() as u64);
        match said {
            Said::Classes(predicted) => {
                for (p, &l) in predicted.iter().zip(label) {
                    let l = l as i64;
                    // A row whose scores were all NaN has no class: wrong.
                    let p = p.unwrap_or(-1);
                    if p == l {
                        step(&mut self.correct, 1);
                    }
                    let cell = self.confusion.entry((l, p)).or_default();
                    step(cell, 1);
                    if *cell == 0 {
                        self.confusion.remove(&(l, p));
                    }
                }
            }
            Said::Values(predicted) => {
                let s = sign as f64;
                for (&p, &l) in predicted.iter().zip(label) {
                    let e = p - l;
                    self.abs_error += s * e.abs();
                    self.sq_error += s * e * e;
                }
                if self.rows == 0 {
                    // Exactly zero again, not a rounding residue.
                    self.abs_error = 0.0;
                    self.sq_error = 0.0;
                }
            }
        }
    }

    pub(super) fn delay(&mut self, seconds: f64) {
        // Below a second rounds up to 1: the histogram counts from 1.
        self.delays
            .saturating_record(seconds.ceil().max(1.0) as u64);
    }

    pub fn accuracy(&self, classifier: bool) -> Option<f64> {
        (classifier && self.rows > 0).then(|| self.correct as f64 / self.rows as f64)
    }

    pub fn report(&self, classifier: bool) -> AccuracyReport {
        let delay = |q: f64| (!self.delays.is_empty()).then(|| self.delays.value_at_quantile(q));
        let mut report = AccuracyReport {
            labelled_rows: self.rows,
            labelled_requests: self.delays.len(),
            label_delay_p50_s: delay(0.5),
            label_delay_p95_s: delay(0.95),
            accuracy: self.accuracy(classifier),
            confusion: Vec::new(),
            classes: BTreeMap::new(),
            mae: None,
            rmse: None,
        };
        if classifier {
            let mut by_class: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
            for (&(label, predicted), &n) in &self.confusion {
                report.confusion.push(Cell {
                    label,
                    predicted,
                    rows: n,
                });
                let (tp, labelled, _) = by_class.entry(label).or_default();
                *labelled += n;
                if label == predicted {
                    *tp += n;
                }
                by_class.entry(predicted).or_default().2 += n;
            }
            for (class, (tp, labelled, predicted)) in by_class {
                if class < 0 {
                    continue; // "no class": not a class of the model
                }
                report.classes.insert(
                    class.to_string(),
                    ClassReport {
                        labelled,
                        predicted,
                        precision: (predicted > 0).then(|| tp as f64 / predicted as f64),
                        recall: (labelled > 0).then(|| tp as f64 / labelled as f64),
                    },
                );
            }
        } else if self.rows > 0 {
            let n = self.rows as f64;
            report.mae = Some(self.abs_error.max(0.0) / n);
            report.rmse = Some((self.sq_error.max(0.0) / n).sqrt());
        }
        report
    }
}

/// Live accuracy over a span: what `GET …/accuracy` shows per version.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccuracyReport {
    pub labelled_rows: u64,
    /// Requests whose first label arrived in the span.
    pub labelled_requests: u64,
    /// From the prediction to its first label, whole seconds.
    pub label_delay_p50_s: Option<u64>,
    pub label_delay_p95_s: Option<u64>,
    /// Classifiers: right rows over labelled rows.
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub confusion: Vec<Cell>,
    /// Per class: precision and recall (classifiers).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, ClassReport>,
    /// Regression: mean absolute error and root mean squared error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
}

/// One cell of a confusion matrix; `predicted` -1: the row had no class.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cell {
    pub label: i64,
    pub predicted: i64,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassReport {
    pub labelled: u64,
    pub predicted: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}
