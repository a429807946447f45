//! The summary of a stream of numbers: exact count, mean, std, min, max and
//! NaN/Inf counts, and p5/median/p95 from a quantile sketch (0.8 % relative
//! error, mergeable, so that the shards of the inference threads combine at
//! the end of a window without having kept the values).

use serde::Serialize;

use super::sketch::Sketch;

/// Accumulates values. Moments are kept as sums of deviations from the
/// first finite value (the "shifted data" method): one subtract and two adds
/// per value, no division, and no cancellation when the mean is large
/// against the spread.
#[derive(Clone)]
pub struct ValueAcc {
    finite: u64,
    shift: f64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    nan: u64,
    inf: u64,
    sketch: Sketch,
}

impl Default for ValueAcc {
    fn default() -> Self {
        ValueAcc {
            finite: 0,
            shift: f64::NAN,
            sum: 0.0,
            sum_sq: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            nan: 0,
            inf: 0,
            sketch: Sketch::default(),
        }
    }
}

impl ValueAcc {
    /// Records a value in the moments and the quantile sketch.
    #[inline]
    pub fn add(&mut self, v: f64) {
        if self.add_moments(v) {
            self.sketch.add(v);
        }
    }

    /// Records a value in the moments only (the caller samples the sketch);
    /// says whether it was finite.
    #[inline]
    pub fn add_moments(&mut self, v: f64) -> bool {
        if !v.is_finite() {
            if v.is_nan() {
                self.nan += 1;
            } else {
                self.inf += 1;
            }
            return false;
        }
        if self.finite == 0 {
            self.shift = v;
        }
        let d = v - self.shift;
        self.finite += 1;
        self.sum += d;
        self.sum_sq += d * d;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        true
    }

    /// Records a run of values in the moments only. Four independent lanes
    /// let the compiler use SIMD where a single chain of float additions
    /// cannot be reordered; a non-finite value anywhere shows as a
    /// non-finite lane sum, and then the run is taken value by value.
    pub fn add_moments_slice(&mut self, xs: &[f64]) {
        let Some(&first) = xs.first() else { return };
        let shift = if self.finite == 0 { first } else { self.shift };
        let (mut sum, mut sq) = ([0.0f64; 4], [0.0f64; 4]);
        let (mut lo, mut hi) = ([f64::INFINITY; 4], [f64::NEG_INFINITY; 4]);
        let chunks = xs.chunks_exact(4);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..4 {
                let d = c[k] - shift;
                sum[k] += d;
                sq[k] += d * d;
                lo[k] = if c[k] < lo[k] { c[k] } else { lo[k] };
                hi[k] = if c[k] > hi[k] { c[k] } else { hi[k] };
            }
        }
        for &v in rest {
            let d = v - shift;
            sum[0] += d;
            sq[0] += d * d;
            lo[0] = if v < lo[0] { v } else { lo[0] };
            hi[0] = if v > hi[0] { v } else { hi[0] };
        }
        let (s, q): (f64, f64) = (sum.iter().sum(), sq.iter().sum());
        if !(s.is_finite() && q.is_finite()) {
            for &v in xs {
                self.add_moments(v);
            }
            return;
        }
        self.shift = shift;
        self.finite += xs.len() as u64;
        self.sum += s;
        self.sum_sq += q;
        self.min = lo.iter().fold(self.min, |a, &b| a.min(b));
        self.max = hi.iter().fold(self.max, |a, &b| a.max(b));
    }

    /// Adds a finite value to the sketch only.
    #[inline]
    pub fn add_sketch(&mut self, v: f64) {
        self.sketch.add(v);
    }

    /// Count, mean and sum of squared deviations from the mean.
    fn moments(&self) -> (u64, f64, f64) {
        if self.finite == 0 {
            return (0, 0.0, 0.0);
        }
        let n = self.finite as f64;
        let mean_d = self.sum / n;
        let m2 = (self.sum_sq - self.sum * mean_d).max(0.0);
        (self.finite, self.shift + mean_d, m2)
    }

    /// Folds `other` into `self` (Chan et al.'s parallel combination).
    pub fn merge(&mut self, other: &ValueAcc) {
        self.nan += other.nan;
        self.inf += other.inf;
        if other.finite == 0 {
            return;
        }
        if self.finite == 0 {
            let (nan, inf) = (self.nan, self.inf);
            *self = other.clone();
            self.nan = nan;
            self.inf = inf;
            return;
        }
        let (na, ma, m2a) = self.moments();
        let (nb, mb, m2b) = other.moments();
        let n = (na + nb) as f64;
        let delta = mb - ma;
        let mean = ma + delta * nb as f64 / n;
        let m2 = m2a + m2b + delta * delta * na as f64 * nb as f64 / n;
        // Re-express around the merged mean: sum = 0, sum_sq = m2.
        self.finite = na + nb;
        self.shift = mean;
        self.sum = 0.0;
        self.sum_sq = m2;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sketch.merge(&other.sketch);
    }

    pub fn summary(&self) -> Summary {
        let (n, mean, m2) = self.moments();
        let finite = n > 0;
        let some = |v: f64| finite.then_some(v);
        // The sketch's bucket midpoint may lie a hair outside the exact
        // extremes: clamp.
        let q = |p: f64| self.sketch.quantile(p).map(|v| v.clamp(self.min, self.max));
        Summary {
            count: n + self.nan + self.inf,
            mean: some(mean),
            std: some((m2 / n.max(1) as f64).sqrt()),
            min: some(self.min),
            max: some(self.max),
            p5: q(0.05),
            median: q(0.5),
            p95: q(0.95),
            nan: self.nan,
            inf: self.inf,
        }
    }
}

/// What a window says of one tensor or feature. Moments and extremes cover
/// the finite values; `count` all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean: Option<f64>,
    /// Population standard deviation (divides by n).
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub p5: Option<f64>,
    pub median: Option<f64>,
    pub p95: Option<f64>,
    pub nan: u64,
    pub inf: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    /// The four-lane slice path equals value-by-value recording: extremes
    /// in every lane and in the remainder, and a run with a NaN in it.
    #[test]
    fn a_slice_is_recorded_as_its_values_are() {
        let xs = [3.0, -7.0, 2.5, 9.0, 1.0, 4.0, -8.0, 2.0, 12.0, -9.5, 0.25];
        let (mut one, mut slice) = (ValueAcc::default(), ValueAcc::default());
        for &v in &xs {
            one.add(v);
        }
        slice.add_moments_slice(&xs[..6]);
        slice.add_moments_slice(&xs[6..]);
        for &v in &xs {
            slice.add_sketch(v);
        }
        let (a, b) = (one.summary(), slice.summary());
        assert_eq!((b.count, b.min, b.max), (11, Some(-9.5), Some(12.0)));
        assert!((a.mean.unwrap() - b.mean.unwrap()).abs() < 1e-12);
        assert!((a.std.unwrap() - b.std.unwrap()).abs() < 1e-12);
        assert_eq!((a.p5, a.median, a.p95), (b.p5, b.median, b.p95));
        assert!(b.median.is_some(), "the sketch was fed");
        // Each lane's extreme: the max in lane 1, the min in lane 2 of the
        // second chunk, and a smaller one in the remainder.
        for (xs, lo, hi) in [
            (&[0.0, 5.0, 0.0, 0.0][..], 0.0, 5.0),
            (&[0.0, 0.0, -4.0, 0.0, 1.0, 1.0, 1.0, 1.0][..], -4.0, 1.0),
            (&[1.0, 1.0, 1.0, 1.0, -2.0, 7.0][..], -2.0, 7.0),
        ] {
            let mut acc = ValueAcc::default();
            acc.add_moments_slice(xs);
            let s = acc.summary();
            assert_eq!((s.min, s.max), (Some(lo), Some(hi)), "{xs:?}");
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            assert!((s.mean.unwrap() - mean).abs() < 1e-12, "{xs:?}");
        }
        let mut nan = ValueAcc::default();
        nan.add_moments_slice(&[1.0, f64::NAN, 3.0, f64::INFINITY, 5.0]);
        let s = nan.summary();
        assert_eq!((s.count, s.nan, s.inf, s.mean), (5, 1, 1, Some(3.0)));
    }

    #[test]
    fn merging_adds_the_non_finite_counts() {
        let (mut a, mut b) = (ValueAcc::default(), ValueAcc::default());
        a.add(1.0);
        a.add(f64::INFINITY);
        b.add(2.0);
        b.add(f64::NEG_INFINITY);
        b.add(f64::INFINITY);
        b.add(f64::NAN);
        a.merge(&b);
        let s = a.summary();
        assert_eq!((s.count, s.inf, s.nan, s.mean), (6, 3, 1, Some(1.5)));
    }

    #[test]
    fn moments_match_the_two_pass_formula_after_merging() {
        let values: Vec<f64> = (0..1000)
            .map(|i| 1e6 + ((i * 7919) % 1000) as f64 / 10.0)
            .collect();
        let (mut a, mut b) = (ValueAcc::default(), ValueAcc::default());
        for (i, &v) in values.iter().enumerate() {
            if i % 3 == 0 {
                a.add(v)
            } else {
                b.add(v)
            }
        }
        a.add(f64::NAN);
        b.add(f64::INFINITY);
        a.merge(&b);
        let s = a.summary();
        let (mean, std) = exact(&values);
        assert_eq!(s.count, 1002);
        assert_eq!((s.nan, s.inf), (1, 1));
        assert!((s.mean.unwrap() - mean).abs() < 1e-6, "{s:?} vs {mean}");
        assert!((s.std.unwrap() - std).abs() < 1e-6, "{s:?} vs {std}");
        assert_eq!(s.min, Some(1e6));
        assert_eq!(s.max, Some(1e6 + 99.9));
        let median = s.median.unwrap();
        assert!((median - (1e6 + 49.9)).abs() <= 0.01 * 1e6 + 1.0);
    }

    #[test]
    fn quantiles_are_within_the_sketch_accuracy() {
        let mut a = ValueAcc::default();
        let values: Vec<f64> = (1..=10_000).map(|i| i as f64 / 100.0).collect();
        for &v in &values {
            a.add(v);
        }
        let s = a.summary();
        for (got, want) in [(s.p5, 5.0), (s.median, 50.0), (s.p95, 95.0)] {
            let got = got.unwrap();
            assert!((got - want).abs() <= 0.02 * want, "{got} vs {want}");
        }
    }

    #[test]
    fn a_run_of_values_counts_as_the_values_one_by_one() {
        let mut values: Vec<f64> = (0..1001)
            .map(|i| 3.0 + ((i * 31) % 97) as f64 / 7.0)
            .collect();
        let (mut one, mut run) = (ValueAcc::default(), ValueAcc::default());
        for chunk in values.chunks(250) {
            chunk.iter().for_each(|&v| {
                one.add_moments(v);
            });
            run.add_moments_slice(chunk);
        }
        values[500] = f64::NAN;
        values[7] = f64::NEG_INFINITY;
        for chunk in values.chunks(250) {
            chunk.iter().for_each(|&v| {
                one.add_moments(v);
            });
            run.add_moments_slice(chunk);
        }
        let (a, b) = (one.summary(), run.summary());
        assert_eq!(
            (a.count, a.nan, a.inf, a.min, a.max),
            (b.count, b.nan, b.inf, b.min, b.max)
        );
        assert!((a.mean.unwrap() - b.mean.unwrap()).abs() < 1e-12);
        assert!((a.std.unwrap() - b.std.unwrap()).abs() < 1e-12);
    }

    #[test]
    fn empty_and_all_nan_have_no_moments() {
        let mut a = ValueAcc::default();
        assert_eq!(a.summary().mean, None);
        a.add(f64::NAN);
        let s = a.summary();
        assert_eq!((s.count, s.nan, s.mean, s.median), (1, 1, None, None));
    }
}
