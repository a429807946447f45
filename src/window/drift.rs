//! Drift against the training baseline: the population stability index and
//! the Kolmogorov–Smirnov statistic of each feature's window against the
//! bins the training script wrote next to the model (`baseline.json`).
//!
//! A baseline feature is a list of bin edges e₀ < e₁ < … and the training
//! fraction of each bin (-∞, e₀], (e₀, e₁], …, (eₖ, ∞). A window counts its
//! values into the same bins; then
//!   PSI = Σᵢ (wᵢ − bᵢ) · ln(wᵢ / bᵢ), fractions floored at 1e-4 so that a bin
//!         empty on one side scores high instead of infinite;
//!   KS  = maxⱼ |W(eⱼ) − B(eⱼ)|, the largest gap between the two cumulative
//!         distributions at the edges (the exact KS statistic when the
//!         edges are every value the feature takes, as for discrete data).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Floor for bin fractions in the PSI (a common choice; stated in the README).
pub const PSI_EPSILON: f64 = 1e-4;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineFile {
    /// By input name.
    pub inputs: BTreeMap<String, InputBaseline>,
    /// Rows the profile was computed from, and from what: for people.
    #[serde(default)]
    pub rows: Option<u64>,
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputBaseline {
    /// By feature index (the last dimension of a `[batch, features]` input).
    pub features: Vec<FeatureBins>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureBins {
    pub edges: Vec<f64>,
    pub fractions: Vec<f64>,
    /// The spacing of evenly spaced edges (integer-valued features, say):
    /// then a value's bin is computed, not searched for.
    #[serde(skip)]
    step: Option<f64>,
}

impl FeatureBins {
    pub fn new(edges: Vec<f64>, fractions: Vec<f64>) -> FeatureBins {
        let mut bins = FeatureBins {
            edges,
            fractions,
            step: None,
        };
        bins.prepare();
        bins
    }

    fn prepare(&mut self) {
        let e = &self.edges;
        self.step = (e.len() >= 2)
            .then(|| (e[e.len() - 1] - e[0]) / (e.len() - 1) as f64)
            .filter(|&s| s > 0.0 && e.windows(2).all(|w| ((w[1] - w[0]) - s).abs() <= 1e-9 * s));
    }

    /// The bin of a finite value: the first edge at or above it.
    #[inline]
    pub fn bin(&self, v: f64) -> usize {
        let e = &self.edges;
        // Most values of many features sit in the first bin (blank pixels,
        // zero counts): no search for them.
        match e.first() {
            None => return 0,
            Some(&first) if v <= first => return 0,
            Some(&first) => {
                if let Some(step) = self.step {
                    let i = (((v - first) / step).ceil() as usize).clamp(1, e.len());
                    // Exact despite rounding: check the guess.
                    if e[i - 1] < v && (i == e.len() || v <= e[i]) {
                        return i;
                    }
                }
            }
        }
        e.partition_point(|&x| x < v)
    }
}

/// Why a baseline cannot be used: it does not read, parse or check out,
/// or it does not fit the model it lies next to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BaselineError(pub(crate) String);

impl BaselineFile {
    /// Reads and checks a baseline: edges strictly increasing, one fraction
    /// per bin, fractions summing to 1.
    pub fn read(path: &Path) -> Result<BaselineFile, BaselineError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BaselineError(format!("cannot read baseline {}: {e}", path.display())))?;
        BaselineFile::parse(&text, path)
    }

    /// A baseline from its text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<BaselineFile, BaselineError> {
        let b: BaselineFile = serde_json::from_str(text)
            .map_err(|e| BaselineError(format!("baseline {}: {e}", path.display())))?;
        let mut b = b;
        for input in b.inputs.values_mut() {
            for f in &mut input.features {
                f.prepare();
            }
        }
        for (name, input) in &b.inputs {
            for (i, f) in input.features.iter().enumerate() {
                let bad = |why: &str| {
                    BaselineError(format!(
                        "baseline {}: input '{name}' feature {i}: {why}",
                        path.display()
                    ))
                };
                if f.fractions.len() != f.edges.len() + 1 {
                    return Err(bad("needs one fraction per bin (edges + 1)"));
                }
                if f.edges.windows(2).any(|w| w[0] >= w[1])
                    || f.edges.iter().any(|e| !e.is_finite())
                {
                    return Err(bad("edges must be finite and strictly increasing"));
                }
                let total: f64 = f.fractions.iter().sum();
                if f.fractions.iter().any(|&x| !(0.0..=1.0).contains(&x))
                    || (total - 1.0).abs() > 1e-6
                {
                    return Err(bad("fractions must lie in [0, 1] and sum to 1"));
                }
            }
        }
        Ok(b)
    }
}

/// The scores of one feature in one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub input: String,
    pub feature: usize,
    pub psi: f64,
    pub ks: f64,
}

/// PSI and KS of window counts against a baseline feature. `None` when the
/// window has no values for it.
pub fn score(bins: &FeatureBins, counts: &[u64]) -> Option<(f64, f64)> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let n = total as f64;
    let mut psi = 0.0;
    let (mut cw, mut cb, mut ks) = (0.0f64, 0.0f64, 0.0f64);
    for (i, (&c, &b)) in counts.iter().zip(&bins.fractions).enumerate() {
        let w = c as f64 / n;
        let (we, be) = (w.max(PSI_EPSILON), b.max(PSI_EPSILON));
        psi += (we - be) * (we / be).ln();
        // The cumulative gap at edge i (not after the last, open bin).
        if i < bins.edges.len() {
            cw += w;
            cb += b;
            ks = ks.max((cw - cb).abs());
        }
    }
    Some((psi, ks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_score_zero_and_shifted_ones_high() {
        let bins = FeatureBins::new(vec![1.0, 2.0], vec![0.25, 0.5, 0.25]);
        assert_eq!(score(&bins, &[25, 50, 25]), Some((0.0, 0.0)));
        let (psi, ks) = score(&bins, &[0, 0, 100]).unwrap();
        assert!((ks - 0.75).abs() < 1e-12);
        let expected = (1e-4 - 0.25) * (1e-4f64 / 0.25).ln()
            + (1e-4 - 0.5) * (1e-4f64 / 0.5).ln()
            + (1.0 - 0.25) * (1.0f64 / 0.25).ln();
        assert!((psi - expected).abs() < 1e-12);
        assert_eq!(score(&bins, &[0, 0, 0]), None);
    }

    #[test]
    fn ks_is_the_largest_gap_at_any_edge() {
        let bins = FeatureBins::new(vec![1.0, 2.0], vec![0.25, 0.5, 0.25]);
        // Everything in the first bin: the gap is 0.75 at the first edge
        // and 0.25 at the second.
        let (_, ks) = score(&bins, &[100, 0, 0]).unwrap();
        assert!((ks - 0.75).abs() < 1e-12, "{ks}");
        let (_, ks) = score(&bins, &[25, 25, 50]).unwrap();
        assert!((ks - 0.25).abs() < 1e-12, "{ks}");
    }

    #[test]
    fn evenly_spaced_edges_are_binned_by_arithmetic() {
        let step = |edges: Vec<f64>| {
            let n = edges.len();
            FeatureBins::new(edges, vec![1.0 / (n + 1) as f64; n + 1]).step
        };
        assert_eq!(step(vec![0.0, 1.0, 2.0, 3.0]), Some(1.0));
        assert_eq!(step(vec![2.0, 4.0]), Some(2.0));
        assert!((step(vec![0.0, 0.1, 0.2, 0.3]).unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(step(vec![0.0, 1.0, 5.0, 6.0]), None, "uneven");
        assert_eq!(step(vec![1.0]), None, "one edge");
        assert_eq!(step(vec![]), None);
    }

    #[test]
    fn a_baseline_file_is_checked_feature_by_feature() {
        let dir = tempfile::tempdir().unwrap();
        let read = |features: &str| {
            let path = dir.path().join("baseline.json");
            std::fs::write(
                &path,
                format!(r#"{{"inputs": {{"x": {{"features": [{features}]}}}}}}"#),
            )
            .unwrap();
            BaselineFile::read(&path)
        };
        let good = read(r#"{"edges": [0, 1, 2], "fractions": [0.1, 0.2, 0.3, 0.4]}"#).unwrap();
        assert_eq!(good.inputs["x"].features[0].step, Some(1.0), "prepared");
        for (features, why) in [
            (
                r#"{"edges": [0, 1], "fractions": [0.5, 0.5]}"#,
                "one fraction per bin",
            ),
            (
                r#"{"edges": [0, 1], "fractions": [0.2, 0.3, 0.3, 0.2]}"#,
                "one fraction per bin",
            ),
            (
                r#"{"edges": [1, 1], "fractions": [0.2, 0.6, 0.2]}"#,
                "strictly increasing",
            ),
            (
                r#"{"edges": [2, 1], "fractions": [0.2, 0.6, 0.2]}"#,
                "strictly increasing",
            ),
            (
                r#"{"edges": [0, 1], "fractions": [0.5, 0.6, -0.1]}"#,
                "in [0, 1]",
            ),
            (
                r#"{"edges": [0, 1], "fractions": [0.2, 0.2, 0.2]}"#,
                "sum to 1",
            ),
            (
                r#"{"edges": [0, 1], "fractions": [0.5, 0.5, 0.5]}"#,
                "sum to 1",
            ),
        ] {
            let err = read(features).unwrap_err();
            assert!(
                err.0.contains(why) && err.0.contains("feature 0"),
                "{features}: {err}"
            );
        }
        // Fractions within 1e-6 of summing to 1 pass (rounding in the file).
        assert!(read(r#"{"edges": [0], "fractions": [0.3333333, 0.6666666]}"#).is_ok());
    }

    #[test]
    fn values_fall_in_right_closed_bins() {
        // Evenly spaced edges (computed bins) and uneven ones (searched)
        // agree with the plain definition.
        for edges in [
            vec![0.0, 3.0],
            vec![0.0, 1.0, 2.0, 3.0],
            vec![0.0, 0.1, 0.2, 0.3],
            vec![0.0, 1.0, 5.0, 6.0],
        ] {
            let n = edges.len();
            let bins = FeatureBins::new(edges.clone(), vec![1.0 / (n + 1) as f64; n + 1]);
            for i in -20..=80 {
                let v = i as f64 / 10.0;
                let want = edges.iter().filter(|&&e| e < v).count();
                assert_eq!(bins.bin(v), want, "{v} in {edges:?}");
            }
        }
        let bins = FeatureBins::new(vec![0.0, 3.0], vec![0.5, 0.5, 0.0]);
        assert!(bins.step.is_some());
        assert_eq!(
            [-1.0, 0.0, 0.5, 3.0, 3.5].map(|v| bins.bin(v)),
            [0, 0, 1, 1, 2]
        );
    }
}
