//! The deployment gate: the checks a version passes before it is published,
//! whether it comes from the repository, the load API or a promotion.
//!
//! ```toml
//! [gate]
//! validation = "data/heldout.json"   # labelled sample, relative to the model folder:
//!                                    # {"features": [[...], ...], "labels": [...]}
//! input = "input"                    # default: the model's only input
//! output = "label"                   # integer labels, or float scores (argmax)
//! min_accuracy = 0.9                 # on the sample
//! max_accuracy_drop = 0.02           # at most this far below the serving version
//! max_p99_ms = 50.0                  # p99 of one-row inferences on the sample
//! ```
//! Every model also passes the warm-up check: one inference on zeros gives
//! outputs of the declared shapes and no NaN or Inf.

use std::path::Path;
use std::time::Instant;

use serde::Deserialize;

use crate::backend::{Backend, Signature, TensorSpec};
use crate::tensor::{DataType, Tensor, TensorData};
use crate::window::{widen, Classes};

/// One-row latency measurements are capped at this many rows of the sample.
const LATENCY_ROWS: usize = 1000;
/// Rows per run when measuring accuracy.
const ACCURACY_BATCH: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    pub validation: Option<String>,
    pub input: Option<String>,
    pub output: Option<String>,
    pub min_accuracy: Option<f64>,
    pub max_accuracy_drop: Option<f64>,
    pub max_p99_ms: Option<f64>,
}

/// Why a version did not pass: the gate could not run (a configuration or
/// sample problem: the version is UNAVAILABLE), or a check failed (FAILED).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Failed(String),
}

/// What the gate measured on a version that passed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GateReport {
    pub rows: usize,
    pub accuracy: f64,
    pub p99_ms: f64,
}

#[derive(Deserialize)]
struct Sample {
    features: Vec<Vec<f64>>,
    labels: Vec<i64>,
}

/// The warm-up check: outputs of the declared rank and fixed dimensions,
/// and no NaN or Inf in them.
pub fn check_outputs(outputs: &[Tensor], signature: &Signature) -> Result<(), GateError> {
    check_outputs_inner(outputs, signature).map_err(GateError::Failed)
}

fn check_outputs_inner(outputs: &[Tensor], signature: &Signature) -> Result<(), String> {
    if outputs.len() != signature.outputs.len() {
        return Err(format!(
            "warm-up returned {} outputs, the model declares {}",
            outputs.len(),
            signature.outputs.len()
        ));
    }
    for out in outputs {
        if let Some(spec) = signature.output(&out.name) {
            if !spec.fits(&out.shape) {
                return Err(format!(
                    "warm-up output '{}' has shape {:?}, the model declares {:?}",
                    out.name, out.shape, spec.shape
                ));
            }
        }
        let bad = match &out.data {
            TensorData::Fp32(v) => v.iter().filter(|x| !x.is_finite()).count(),
            TensorData::Fp64(v) => v.iter().filter(|x| !x.is_finite()).count(),
            TensorData::Fp16(v) => v.iter().filter(|x| !x.is_finite()).count(),
            _ => 0,
        };
        if bad > 0 {
            return Err(format!(
                "warm-up output '{}' holds {bad} NaN/Inf values",
                out.name
            ));
        }
    }
    Ok(())
}

/// Runs the configured checks. `serving_accuracy`: the gate accuracy of
/// the version that serves now, if any. Every failed check is named with
/// its figure: `Err(Setup)` when the gate cannot run (config, sample),
/// `Err(Failed)` from the checks.
pub fn run(
    backend: &mut dyn Backend,
    signature: &Signature,
    config: &GateConfig,
    model_dir: &Path,
    serving_accuracy: Option<f64>,
) -> Result<Option<GateReport>, GateError> {
    let setup = GateError::Setup;
    let Some(validation) = &config.validation else {
        if config.min_accuracy.is_some()
            || config.max_accuracy_drop.is_some()
            || config.max_p99_ms.is_some()
        {
            return Err(setup(
                "[gate] sets thresholds but no validation sample".into(),
            ));
        }
        return Ok(None);
    };
    let path = model_dir.join(validation);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        setup(format!(
            "gate: cannot read the validation sample {}: {e}",
            path.display()
        ))
    })?;
    let sample: Sample = serde_json::from_str(&text)
        .map_err(|e| setup(format!("gate: validation sample {}: {e}", path.display())))?;
    if sample.features.is_empty() || sample.features.len() != sample.labels.len() {
        return Err(setup(format!(
            "gate: validation sample {} needs as many labels as feature rows, and some",
            path.display()
        )));
    }
    measure_sample(backend, signature, config, sample, serving_accuracy)
}

/// The input the sample feeds and the output whose class is compared
/// with the labels: the ones named, or the only ones.
fn tensors<'s>(
    signature: &'s Signature,
    config: &GateConfig,
) -> Result<(&'s TensorSpec, &'s TensorSpec), GateError> {
    /// The one named `kind`, or the only one.
    fn pick<'s>(
        kind: &str,
        named: Option<&str>,
        specs: &'s [TensorSpec],
    ) -> Result<&'s TensorSpec, GateError> {
        match (named, specs) {
            (Some(name), _) => specs
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| GateError::Setup(format!("gate: the model has no {kind} '{name}'"))),
            (None, [only]) => Ok(only),
            (None, _) => Err(GateError::Setup(format!(
                "gate: the model has several {kind}s; name one with `{kind}`"
            ))),
        }
    }
    Ok((
        pick("input", config.input.as_deref(), &signature.inputs)?,
        pick("output", config.output.as_deref(), &signature.outputs)?,
    ))
}

fn measure_sample(
    backend: &mut dyn Backend,
    signature: &Signature,
    config: &GateConfig,
    sample: Sample,
    serving_accuracy: Option<f64>,
) -> Result<Option<GateReport>, GateError> {
    let setup = GateError::Setup;
    let (input, output) = tensors(signature, config)?;
    // Predicted classes as the statistics windows and the shadow read them.
    let classes = Classes::of(output);
    if classes == Classes::None {
        return Err(setup(format!(
            "gate: output '{}' ({} {:?}) is neither integer labels [batch] nor scores [batch, K]",
            output.name, output.datatype, output.shape
        )));
    }
    let output = output.name.clone();
    let width = sample.features[0].len();
    let batch = |rows: &[Vec<f64>]| -> Result<Vec<Tensor>, GateError> {
        if rows.iter().any(|r| r.len() != width) {
            return Err(setup("gate: validation rows differ in length".into()));
        }
        let flat = rows.iter().flatten().copied();
        let data = match input.datatype {
            DataType::Fp32 => TensorData::Fp32(flat.map(|v| v as f32).collect()),
            DataType::Fp64 => TensorData::Fp64(flat.collect()),
            DataType::Int64 => TensorData::Int64(flat.map(|v| v as i64).collect()),
            DataType::Int32 => TensorData::Int32(flat.map(|v| v as i32).collect()),
            other => {
                return Err(setup(format!(
                    "gate: inputs of type {other} are not supported"
                )))
            }
        };
        Ok(vec![Tensor {
            name: input.name.clone(),
            shape: vec![rows.len() as i64, width as i64],
            data,
        }])
    };
    let predict = |outputs: Vec<Tensor>| -> Result<Vec<i64>, GateError> {
        let out = outputs
            .into_iter()
            .find(|t| t.name == output)
            .ok_or_else(|| GateError::Failed(format!("the run did not return '{output}'")))?;
        let rows = out.shape.first().copied().unwrap_or(1).max(1) as usize;
        let per_row = (out.data.len() / rows).max(1);
        let mut values = Vec::with_capacity(out.data.len());
        widen(&out.data, 0..out.data.len(), &mut values);
        // A row without a class (NaN scores) counts as wrong.
        Ok(values
            .chunks(per_row)
            .map(|row| classes.of_row(row).unwrap_or(i64::MIN))
            .collect())
    };

    let mut correct = 0usize;
    for (rows, labels) in sample
        .features
        .chunks(ACCURACY_BATCH)
        .zip(sample.labels.chunks(ACCURACY_BATCH))
    {
        let outputs = backend.run(batch(rows)?).map_err(|e| {
            GateError::Failed(format!("inference on the validation sample failed: {e}"))
        })?;
        let predicted = predict(outputs)?;
        correct += predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    }
    let accuracy = correct as f64 / sample.labels.len() as f64;

    let mut took: Vec<f64> = Vec::new();
    for row in sample.features.iter().take(LATENCY_ROWS) {
        let inputs = batch(std::slice::from_ref(row))?;
        let started = Instant::now();
        backend.run(inputs).map_err(|e| {
            GateError::Failed(format!("inference on the validation sample failed: {e}"))
        })?;
        took.push(started.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    let p99_ms = took[((took.len() as f64 * 0.99).ceil() as usize).clamp(1, took.len()) - 1];

    judge(
        config,
        sample.labels.len(),
        accuracy,
        p99_ms,
        serving_accuracy,
    )
}

/// The gate's verdict on what was measured: every threshold checked, and
/// every one missed named.
fn judge(
    config: &GateConfig,
    rows: usize,
    accuracy: f64,
    p99_ms: f64,
    serving_accuracy: Option<f64>,
) -> Result<Option<GateReport>, GateError> {
    let mut failed = Vec::new();
    if let Some(min) = config.min_accuracy {
        if accuracy < min {
            failed.push(format!("accuracy {accuracy:.4} < min_accuracy {min}"));
        }
    }
    if let (Some(drop), Some(serving)) = (config.max_accuracy_drop, serving_accuracy) {
        if accuracy < serving - drop {
            failed.push(format!(
                "accuracy {accuracy:.4} is {:.4} below the serving version's {serving:.4} (max_accuracy_drop {drop})",
                serving - accuracy
            ));
        }
    }
    if let Some(budget) = config.max_p99_ms {
        if p99_ms > budget {
            failed.push(format!("p99 latency {p99_ms:.3} ms > max_p99_ms {budget}"));
        }
    }
    if failed.is_empty() {
        Ok(Some(GateReport {
            rows,
            accuracy,
            p99_ms,
        }))
    } else {
        Err(GateError::Failed(format!(
            "deployment gate failed on {} validation rows: {}",
            rows,
            failed.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature() -> Signature {
        Signature {
            inputs: vec![],
            outputs: vec![TensorSpec {
                name: "scores".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 3],
            }],
        }
    }

    fn scores(shape: Vec<i64>, values: Vec<f32>) -> Vec<Tensor> {
        vec![Tensor {
            name: "scores".into(),
            shape,
            data: TensorData::Fp32(values),
        }]
    }

    #[test]
    fn warm_up_outputs_must_have_the_declared_shape_and_be_finite() {
        let sig = signature();
        assert_eq!(
            check_outputs(&scores(vec![1, 3], vec![0.1, 0.2, 0.7]), &sig),
            Ok(())
        );
        let Err(GateError::Failed(why)) =
            check_outputs(&scores(vec![1, 3], vec![0.1, f32::NAN, 0.7]), &sig)
        else {
            panic!("NaN passed")
        };
        assert!(why.contains("1 NaN/Inf"), "{why}");
        let Err(GateError::Failed(why)) = check_outputs(&scores(vec![1, 2], vec![0.1, 0.2]), &sig)
        else {
            panic!("wrong shape passed")
        };
        assert!(why.contains("[1, 2]"), "{why}");
        assert!(matches!(
            check_outputs(&[], &sig),
            Err(GateError::Failed(_))
        ));
    }

    #[test]
    fn the_verdict_names_every_threshold_missed() {
        let config = GateConfig {
            min_accuracy: Some(0.9),
            max_accuracy_drop: Some(0.05),
            max_p99_ms: Some(10.0),
            ..GateConfig::default()
        };
        let passed = judge(&config, 50, 0.92, 9.5, Some(0.95)).unwrap().unwrap();
        assert_eq!(
            passed,
            GateReport {
                rows: 50,
                accuracy: 0.92,
                p99_ms: 9.5
            }
        );
        // No serving version: no drop to check.
        assert!(judge(&config, 50, 0.9, 10.0, None).is_ok());
        let Err(GateError::Failed(why)) = judge(&config, 50, 0.85, 12.0, Some(0.95)) else {
            panic!("three thresholds missed, yet passed");
        };
        assert!(
            why.starts_with("deployment gate failed on 50 validation rows: "),
            "{why}"
        );
        for part in [
            "accuracy 0.8500 < min_accuracy 0.9",
            "0.1000 below the serving version's 0.9500 (max_accuracy_drop 0.05)",
            "p99 latency 12.000 ms > max_p99_ms 10",
        ] {
            assert!(why.contains(part), "{part:?} missing from {why}");
        }
    }
}
