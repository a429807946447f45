//! Input schema validation: per-input rules from `config.toml`, checked on
//! every request before it is queued, so that out-of-range data is refused
//! with a reason instead of silently scored.
//!
//! ```toml
//! [schema.input]                 # one table per input name
//! min = 0                        # every feature, unless a feature says otherwise
//! max = 16
//! nan = "reject"                 # NaN/Inf: "reject" or "count" (the default: accepted)
//! [schema.input.features.3]      # feature 3: the last-dimension index
//! min = 0
//! max = 1
//! [schema.input.features.7]
//! allowed = [0, 1, 2]            # categorical values
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::backend::Signature;
use crate::tensor::InputTensor;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinite {
    /// Refuse a request carrying NaN or ±Inf.
    Reject,
    /// Accept it (the window statistics count them).
    #[default]
    Count,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRules {
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(default)]
    pub nan: NonFinite,
    /// By feature index (as a string: TOML keys are strings).
    #[serde(default)]
    pub features: BTreeMap<String, FeatureRules>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureRules {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub allowed: Option<Vec<f64>>,
}

/// One broken rule, as the error and the metric name it.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub input: String,
    /// Index along the last dimension (the feature), and the row.
    pub feature: usize,
    pub row: usize,
    /// `min`, `max`, `allowed` or `nan`.
    pub rule: &'static str,
    pub value: f64,
    pub bound: String,
}

/// The compiled rules of one input.
#[derive(Debug, Clone)]
struct Compiled {
    name: String,
    default: FeatureRules,
    features: BTreeMap<usize, FeatureRules>,
    reject_non_finite: bool,
}

/// A model version's schema: rules for some of its inputs.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    inputs: Vec<Compiled>,
}

/// A schema that does not fit the model it is configured for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(String);

impl Schema {
    /// Checks the configuration against the model: every named input must
    /// exist, and feature indices must be numbers.
    pub fn compile(
        rules: &BTreeMap<String, InputRules>,
        signature: &Signature,
    ) -> Result<Schema, SchemaError> {
        let mut inputs = Vec::new();
        for (name, r) in rules {
            if signature.input(name).is_none() {
                return Err(SchemaError(format!(
                    "schema names input '{name}', which the model does not have"
                )));
            }
            let mut features = BTreeMap::new();
            for (k, f) in &r.features {
                let index: usize = k.parse().map_err(|_| {
                    SchemaError(format!("schema of '{name}': feature '{k}' is not an index"))
                })?;
                features.insert(index, f.clone());
            }
            inputs.push(Compiled {
                name: name.clone(),
                default: FeatureRules {
                    min: r.min,
                    max: r.max,
                    allowed: None,
                },
                features,
                reject_non_finite: r.nan == NonFinite::Reject,
            });
        }
        Ok(Schema { inputs })
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The first broken rule, if any.
    pub fn check(&self, inputs: &[InputTensor]) -> Result<(), Violation> {
        for rules in &self.inputs {
            let Some(tensor) = inputs.iter().find(|t| t.name == rules.name) else {
                continue;
            };
            let width = tensor.shape.last().map_or(1, |&d| d.max(1) as usize);
            tensor.data.try_for_each_f64(|i, x| {
                let (row, feature) = (i / width, i % width);
                let violation = |rule, bound: String| Violation {
                    input: rules.name.clone(),
                    feature,
                    row,
                    rule,
                    value: x,
                    bound,
                };
                if !x.is_finite() {
                    return if rules.reject_non_finite {
                        Err(violation("nan", "a finite number".into()))
                    } else {
                        Ok(())
                    };
                }
                let r = rules.features.get(&feature).unwrap_or(&rules.default);
                let min = r.min.or(rules.default.min);
                let max = r.max.or(rules.default.max);
                if let Some(m) = min.filter(|&m| x < m) {
                    return Err(violation("min", format!(">= {m}")));
                }
                if let Some(m) = max.filter(|&m| x > m) {
                    return Err(violation("max", format!("<= {m}")));
                }
                if let Some(allowed) = r.allowed.as_ref().filter(|a| !a.contains(&x)) {
                    return Err(violation("allowed", format!("one of {allowed:?}")));
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TensorSpec;
    use crate::tensor::{DataType, Elements, TensorData};

    fn schema(toml_text: &str) -> Schema {
        #[derive(Deserialize)]
        struct C {
            schema: BTreeMap<String, InputRules>,
        }
        let c: C = toml::from_str(toml_text).unwrap();
        let sig = Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 3],
            }],
            outputs: vec![],
        };
        Schema::compile(&c.schema, &sig).unwrap()
    }

    fn input(values: Vec<f32>) -> Vec<InputTensor> {
        let rows = values.len() as i64 / 3;
        vec![InputTensor {
            name: "x".into(),
            shape: vec![rows, 3],
            data: Elements::Typed(TensorData::Fp32(values)),
        }]
    }

    #[test]
    fn ranges_features_and_categories() {
        let s = schema(
            "[schema.x]\nmin = 0\nmax = 10\nnan = \"reject\"\n[schema.x.features.1]\nmax = 1\n[schema.x.features.2]\nallowed = [0, 5]\n",
        );
        assert!(s.check(&input(vec![0.0, 1.0, 5.0, 10.0, 0.0, 0.0])).is_ok());
        let v = s
            .check(&input(vec![0.0, 1.0, 5.0, 11.0, 0.0, 0.0]))
            .unwrap_err();
        assert_eq!((v.feature, v.row, v.rule, v.value), (0, 1, "max", 11.0));
        let v = s.check(&input(vec![0.0, 2.0, 5.0])).unwrap_err();
        assert_eq!((v.feature, v.rule), (1, "max"));
        let v = s.check(&input(vec![0.0, 1.0, 4.0])).unwrap_err();
        assert_eq!((v.feature, v.rule), (2, "allowed"));
        let v = s.check(&input(vec![-1.0, 0.0, 0.0])).unwrap_err();
        assert_eq!(v.rule, "min");
        let v = s.check(&input(vec![0.0, f32::NAN, 0.0])).unwrap_err();
        assert_eq!(v.rule, "nan");
    }

    #[test]
    fn a_schema_without_rules_is_empty() {
        assert!(!schema("[schema.x]\nmax = 10\n").is_empty());
        let sig = Signature::default();
        assert!(Schema::compile(&BTreeMap::new(), &sig).unwrap().is_empty());
    }

    #[test]
    fn counting_accepts_non_finite_values() {
        let s = schema("[schema.x]\nmax = 10\n");
        assert!(s.check(&input(vec![f32::NAN, f32::INFINITY, 0.0])).is_ok());
    }

    #[test]
    fn raw_elements_are_checked_without_decoding_them_for_good() {
        let s = schema("[schema.x]\nmax = 1\n");
        let raw: Vec<u8> = [0.5f32, 2.0, 0.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = vec![InputTensor {
            name: "x".into(),
            shape: vec![1, 3],
            data: Elements::raw(DataType::Fp32, raw.into(), 3).unwrap(),
        }];
        assert_eq!(s.check(&t).unwrap_err().feature, 1);
    }
}
