//! How a tensor's rows are summarised (fixed at load from the signature)
//! and the accumulators the inference threads record into.

use std::collections::BTreeMap;

use super::drift::FeatureBins;
use super::summary::{Summary, ValueAcc};
use super::WindowConfig;
use crate::backend::TensorSpec;
use crate::tensor::{DataType, Tensor, TensorData};

/// Of a large tensor row, at most this many evenly spaced elements feed the
/// whole-tensor quantile sketch (the moments see every element): a
/// 3×64×64 image would otherwise cost 12 288 sketch inserts per row.
pub(crate) const SKETCH_PER_ROW: usize = 256;
/// Elements widened to f64 at a time for the whole-tensor moments.
pub(crate) const WIDEN_BLOCK: usize = 1024;
/// Distinct predicted classes tracked per window; more go to `other`.
pub(crate) const MAX_CLASSES: usize = 1024;

/// How a tensor's rows are summarised; fixed at load from the signature.
pub(crate) struct Plan {
    pub(crate) name: String,
    /// Features of a `[batch, features]` tensor, when the model fixes them.
    pub(crate) width: Option<usize>,
    /// Per-feature accumulators (rank-2 tensors with a known width).
    pub(crate) features: usize,
    pub(crate) classes: Classes,
    /// Baseline bins, by feature.
    pub(crate) baseline: Vec<FeatureBins>,
}

/// How an output names a row's predicted class, if it does.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Classes {
    None,
    /// Float scores `[batch, K]`: the predicted class is the argmax.
    Argmax,
    /// Integer labels `[batch]` or `[batch, 1]`: the value is the class.
    Label,
}

impl Classes {
    /// The class kind of an output with this spec.
    pub fn of(spec: &TensorSpec) -> Classes {
        let width = (spec.shape.len() == 2 && spec.shape[1] > 0).then(|| spec.shape[1] as usize);
        let float = matches!(
            spec.datatype,
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64
        );
        let integer = !float && !matches!(spec.datatype, DataType::Bool | DataType::Bytes);
        match width {
            Some(k) if float && k >= 2 => Classes::Argmax,
            Some(1) if integer => Classes::Label,
            None if integer && spec.shape.len() == 1 => Classes::Label,
            _ => Classes::None,
        }
    }

    /// The class of one row, `None` when it has none (NaN scores).
    pub fn of_row(self, row: &[f64]) -> Option<i64> {
        match self {
            Classes::None => None,
            Classes::Label => row.first().filter(|v| v.is_finite()).map(|&v| v as i64),
            Classes::Argmax => {
                let mut best: Option<(usize, f64)> = None;
                for (k, &v) in row.iter().enumerate() {
                    if best.is_none_or(|(_, b)| v > b) && !v.is_nan() {
                        best = Some((k, v));
                    }
                }
                best.map(|(k, _)| k as i64)
            }
        }
    }
}

impl Plan {
    pub(crate) fn new(
        spec: &TensorSpec,
        cfg: &WindowConfig,
        output: bool,
        baseline: Vec<FeatureBins>,
    ) -> Plan {
        let width = (spec.shape.len() == 2 && spec.shape[1] > 0).then(|| spec.shape[1] as usize);
        let classes = if output {
            Classes::of(spec)
        } else {
            Classes::None
        };
        Plan {
            name: spec.name.clone(),
            width,
            features: width.map_or(0, |w| w.min(cfg.max_features)),
            classes,
            baseline,
        }
    }

    pub(crate) fn accumulator(&self) -> TensorAcc {
        TensorAcc {
            rows: 0,
            all: ValueAcc::default(),
            features: vec![ValueAcc::default(); self.features],
            bins: self
                .baseline
                .iter()
                .map(|b| vec![0; b.fractions.len()])
                .collect(),
            classes: BTreeMap::new(),
            other_classes: 0,
        }
    }
}

#[derive(Clone)]
pub(crate) struct TensorAcc {
    pub(crate) rows: u64,
    pub(crate) all: ValueAcc,
    pub(crate) features: Vec<ValueAcc>,
    pub(crate) bins: Vec<Vec<u64>>,
    pub(crate) classes: BTreeMap<i64, u64>,
    pub(crate) other_classes: u64,
}

impl TensorAcc {
    pub(crate) fn merge(&mut self, o: &TensorAcc) {
        self.rows += o.rows;
        self.all.merge(&o.all);
        for (a, b) in self.features.iter_mut().zip(&o.features) {
            a.merge(b);
        }
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        for (&k, &c) in &o.classes {
            self.count_class(k, c);
        }
        self.other_classes += o.other_classes;
    }

    pub(crate) fn count_class(&mut self, class: i64, n: u64) {
        if self.classes.len() < MAX_CLASSES || self.classes.contains_key(&class) {
            *self.classes.entry(class).or_default() += n;
        } else {
            self.other_classes += n;
        }
    }

    /// One tensor of a run: every row, every element. Rows are widened to
    /// f64 into `row` (reused across calls), then each accumulator walks the
    /// part of the row it owns without a per-element branch on its index.
    pub(crate) fn record(&mut self, plan: &Plan, t: &Tensor, row: &mut Vec<f64>) {
        let n = t.data.len();
        let rows = match t.shape.first() {
            Some(&r) if r > 0 => r as usize,
            _ => 1,
        };
        if n == 0 || !n.is_multiple_of(rows) || matches!(t.data, TensorData::Bytes(_)) {
            return;
        }
        let per_row = n / rows;
        self.rows += rows as u64;
        let features = self.features.len().min(per_row);
        // When every feature has its own accumulator, the whole tensor's
        // summary is their merge (see `summary_of_all`): each element is
        // accumulated once. Otherwise the moments see every element and the
        // quantile sketch evenly spaced ones.
        let whole = (features < per_row).then(|| per_row.div_ceil(SKETCH_PER_ROW));
        let binned = self.bins.len().min(per_row);
        // The leading elements each row's per-feature work reads.
        let leading = if plan.classes == Classes::None {
            features.max(binned)
        } else {
            per_row
        };
        for r in 0..rows {
            let base = r * per_row;
            if let Some(stride) = whole {
                // In L1-sized blocks: a 3x64x64 image widened at once
                // would be 96 KiB of f64.
                let mut start = 0;
                while start < per_row {
                    let end = (start + WIDEN_BLOCK).min(per_row);
                    row.clear();
                    widen(&t.data, base + start..base + end, row);
                    self.all.add_moments_slice(row);
                    let first = start.next_multiple_of(stride).min(end);
                    for &v in row[first - start..].iter().step_by(stride) {
                        if v.is_finite() {
                            self.all.add_sketch(v);
                        }
                    }
                    start = end;
                }
            }
            row.clear();
            widen(&t.data, base..base + leading, row);
            for (acc, &v) in self.features.iter_mut().zip(&row[..features]) {
                acc.add(v);
            }
            for ((counts, bins), &v) in self.bins.iter_mut().zip(&plan.baseline).zip(&row[..binned])
            {
                if !v.is_nan() {
                    counts[bins.bin(v)] += 1;
                }
            }
            if let Some(class) = plan.classes.of_row(row) {
                self.count_class(class, 1);
            }
        }
    }

    /// The whole-tensor summary (see `record` for where its quantiles
    /// come from).
    pub(crate) fn summary_of_all(&self, plan: &Plan) -> Summary {
        if plan.features > 0 && Some(plan.features) == plan.width {
            let mut all = ValueAcc::default();
            for f in &self.features {
                all.merge(f);
            }
            all.summary()
        } else {
            self.all.summary()
        }
    }
}

/// Appends elements `range` of `data` to `out` as f64 (BYTES have none).
pub fn widen(data: &TensorData, range: std::ops::Range<usize>, out: &mut Vec<f64>) {
    macro_rules! each {
        ($v:expr) => {
            out.extend($v[range].iter().map(|&x| x as f64))
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v[range].iter().map(|&b| b as u8 as f64)),
        TensorData::Uint8(v) => each!(v),
        TensorData::Uint16(v) => each!(v),
        TensorData::Uint32(v) => each!(v),
        TensorData::Uint64(v) => each!(v),
        TensorData::Int8(v) => each!(v),
        TensorData::Int16(v) => each!(v),
        TensorData::Int32(v) => each!(v),
        TensorData::Int64(v) => each!(v),
        TensorData::Fp16(v) => out.extend(v[range].iter().map(|x| x.to_f64())),
        TensorData::Fp32(v) => each!(v),
        TensorData::Fp64(v) => each!(v),
        TensorData::Bytes(_) => {}
    }
}
