//! A request checked against the version it addresses: its signature, its
//! batch limit and its schema. Pure but for the recording of refusals.

use super::infer::InferRequest;
use crate::backend::Signature;
use crate::error::Error;
use crate::model::ModelVersion;
use crate::schema::Schema;

/// Checks a request against the version it addresses, recording a schema
/// refusal or a missing input through the version's recorder. Returns the
/// batch size (first dimension, 1 for scalars) for statistics.
pub(super) fn validate(model: &ModelVersion, request: &InferRequest) -> Result<u64, Error> {
    let rules = Rules {
        model: &model.model,
        signature: &model.signature,
        max_batch_size: model.max_batch_size,
        schema: model.schema.as_ref(),
    };
    check(&rules, request).inspect_err(|e| match e {
        Error::SchemaViolation { input, rule, .. } => model.record.refused(input, rule),
        Error::MissingInput { name, .. } => model.record.missing(name),
        _ => {}
    })
}

/// What a request is checked against.
struct Rules<'a> {
    model: &'a str,
    signature: &'a Signature,
    max_batch_size: Option<u64>,
    schema: Option<&'a Schema>,
}

/// The checks, in the order a bad request learns of them: each input is
/// known, given once, of the declared datatype and shape, within the batch
/// limit; the schema; every input present; each requested output known and
/// asked for once.
fn check(r: &Rules, request: &InferRequest) -> Result<u64, Error> {
    let sig = r.signature;
    let names = |specs: &[crate::backend::TensorSpec]| {
        specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, tensor) in request.inputs.iter().enumerate() {
        let spec = sig.input(&tensor.name).ok_or_else(|| Error::UnknownInput {
            model: r.model.to_string(),
            name: tensor.name.clone(),
            known: names(&sig.inputs),
        })?;
        if request.inputs[..i].iter().any(|t| t.name == tensor.name) {
            return Err(Error::BadRequest(format!(
                "input '{}' is given twice",
                tensor.name
            )));
        }
        let got = tensor.data.datatype();
        if got != spec.datatype {
            return Err(Error::DatatypeMismatch {
                name: tensor.name.clone(),
                expected: spec.datatype,
                got: got.as_str().to_string(),
            });
        }
        if !spec.fits(&tensor.shape) {
            return Err(Error::ShapeMismatch {
                name: tensor.name.clone(),
                expected: spec.shape.clone(),
                got: tensor.shape.clone(),
            });
        }
        if let (Some(max), Some(&rows)) = (r.max_batch_size, tensor.shape.first()) {
            if rows as u64 > max {
                return Err(Error::BadRequest(format!(
                    "input '{}': batch of {rows} exceeds the model's max_batch_size {max}",
                    tensor.name
                )));
            }
        }
    }
    if let Some(schema) = r.schema {
        schema
            .check(&request.inputs)
            .map_err(|v| Error::SchemaViolation {
                input: v.input,
                feature: v.feature,
                row: v.row,
                rule: v.rule,
                value: v.value,
                bound: v.bound,
            })?;
    }
    for spec in &sig.inputs {
        if !request.inputs.iter().any(|t| t.name == spec.name) {
            return Err(Error::MissingInput {
                model: r.model.to_string(),
                name: spec.name.clone(),
            });
        }
    }
    for (i, name) in request.outputs.iter().enumerate() {
        if sig.output(name).is_none() {
            return Err(Error::UnknownOutput {
                model: r.model.to_string(),
                name: name.clone(),
                known: names(&sig.outputs),
            });
        }
        if request.outputs[..i].contains(name) {
            return Err(Error::BadRequest(format!(
                "output '{name}' is requested twice"
            )));
        }
    }
    Ok(request
        .inputs
        .first()
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(1)
        .max(0) as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::backend::TensorSpec;
    use crate::monitor::Transport;
    use crate::schema::InputRules;
    use crate::tensor::{DataType, Elements, InputTensor, TensorData};

    fn signature() -> Signature {
        let spec = |name: &str, datatype, shape: &[i64]| TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        };
        Signature {
            inputs: vec![
                spec("x", DataType::Fp32, &[-1, 3]),
                spec("mask", DataType::Int64, &[-1, 1]),
            ],
            outputs: vec![
                spec("y", DataType::Fp32, &[-1, 2]),
                spec("p", DataType::Fp32, &[-1, 2]),
            ],
        }
    }

    fn x(rows: usize, values: Vec<f32>) -> InputTensor {
        InputTensor {
            name: "x".into(),
            shape: vec![rows as i64, 3],
            data: Elements::Typed(TensorData::Fp32(values)),
        }
    }

    fn mask(rows: usize) -> InputTensor {
        InputTensor {
            name: "mask".into(),
            shape: vec![rows as i64, 1],
            data: Elements::Typed(TensorData::Int64(vec![1; rows])),
        }
    }

    fn request(inputs: Vec<InputTensor>, outputs: &[&str]) -> InferRequest {
        InferRequest {
            timeout: None,
            client_timeout: None,
            transport: Transport::Http,
            model: "m".into(),
            version: None,
            id: None,
            inputs,
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn check_with(schema: Option<&Schema>, request: &InferRequest) -> Result<u64, Error> {
        let sig = signature();
        let rules = Rules {
            model: "m",
            signature: &sig,
            max_batch_size: Some(4),
            schema,
        };
        check(&rules, request)
    }

    #[test]
    fn a_valid_request_gives_its_batch_size() {
        let ok = request(vec![mask(2), x(2, vec![0.0; 6])], &["p"]);
        assert_eq!(check_with(None, &ok).unwrap(), 2);
    }

    #[test]
    fn each_input_rule_names_what_is_wrong() {
        let mut unknown = x(1, vec![0.0; 3]);
        unknown.name = "z".into();
        let e = check_with(None, &request(vec![unknown, mask(1)], &[])).unwrap_err();
        assert!(
            matches!(&e, Error::UnknownInput { name, known, .. } if name == "z" && known == "x, mask"),
            "{e:?}"
        );

        let twice = request(vec![x(1, vec![0.0; 3]), x(1, vec![0.0; 3]), mask(1)], &[]);
        let e = check_with(None, &twice).unwrap_err();
        assert!(e.to_string().contains("input 'x' is given twice"), "{e}");

        let mut wrong_type = mask(1);
        wrong_type.data = Elements::Typed(TensorData::Int32(vec![1]));
        let e = check_with(None, &request(vec![x(1, vec![0.0; 3]), wrong_type], &[])).unwrap_err();
        assert!(
            matches!(&e, Error::DatatypeMismatch { name, expected: DataType::Int64, got } if name == "mask" && got == "INT32"),
            "{e:?}"
        );

        // A fixed dimension must match, an open one may be anything, and
        // the rank must agree.
        for shape in [vec![1, 4], vec![3], vec![1, 3, 1]] {
            let mut bad = x(1, vec![0.0; 3]);
            bad.shape = shape.clone();
            let e = check_with(None, &request(vec![bad, mask(1)], &[])).unwrap_err();
            assert!(
                matches!(&e, Error::ShapeMismatch { got, .. } if *got == shape),
                "{shape:?}: {e:?}"
            );
        }

        let e = check_with(None, &request(vec![x(5, vec![0.0; 15]), mask(5)], &[])).unwrap_err();
        assert!(
            e.to_string()
                .contains("batch of 5 exceeds the model's max_batch_size 4"),
            "{e}"
        );

        let e = check_with(None, &request(vec![x(1, vec![0.0; 3])], &[])).unwrap_err();
        assert!(
            matches!(&e, Error::MissingInput { name, .. } if name == "mask"),
            "{e:?}"
        );
    }

    #[test]
    fn requested_outputs_must_be_known_and_asked_once() {
        let inputs = || vec![x(1, vec![0.0; 3]), mask(1)];
        let e = check_with(None, &request(inputs(), &["q"])).unwrap_err();
        assert!(
            matches!(&e, Error::UnknownOutput { name, known, .. } if name == "q" && known == "y, p"),
            "{e:?}"
        );
        let e = check_with(None, &request(inputs(), &["y", "y"])).unwrap_err();
        assert!(
            e.to_string().contains("output 'y' is requested twice"),
            "{e}"
        );
    }

    #[test]
    fn the_schema_is_checked_after_the_signature_and_before_missing_inputs() {
        let rules: BTreeMap<String, InputRules> =
            toml::from_str("[x]\nmin = 0.0\nmax = 1.0\n").unwrap();
        let schema = Schema::compile(&rules, &signature()).unwrap();
        let ok = request(vec![x(1, vec![0.0, 0.5, 1.0]), mask(1)], &[]);
        assert_eq!(check_with(Some(&schema), &ok).unwrap(), 1);
        // Row 1, feature 2 breaks max; mask is missing too, but the schema
        // speaks first.
        let bad = request(vec![x(2, vec![0.0, 0.0, 0.0, 0.5, 0.5, 2.0])], &[]);
        let e = check_with(Some(&schema), &bad).unwrap_err();
        assert!(
            matches!(&e, Error::SchemaViolation { input, feature: 2, row: 1, rule: "max", .. } if input == "x"),
            "{e:?}"
        );
        // A datatype mistake comes before the schema.
        let mut wrong = x(1, vec![5.0; 3]);
        wrong.data = Elements::Typed(TensorData::Fp64(vec![5.0; 3]));
        let e = check_with(Some(&schema), &request(vec![wrong, mask(1)], &[])).unwrap_err();
        assert!(matches!(e, Error::DatatypeMismatch { .. }), "{e:?}");
    }
}
