//! The optional per-model `config.toml` next to the version folders.
//!
//! ```toml
//! version_policy = "all"            # or { latest = 2 } or { specific = [1, 3] }
//! max_batch_size = 64               # 0: the model has no batch dimension
//! queue_capacity = 256              # requests waiting per version
//! intra_op_threads = 1
//!
//! [[inputs]]                        # override or narrow what the model file says
//! name = "input"
//! datatype = "FP32"
//! dims = [-1, 64]
//! ```
//! Unknown keys are refused so that a typo does not silently do nothing.

use serde::Deserialize;

use crate::backend::{Signature, TensorSpec};
use crate::tensor::DataType;

pub const FILE_NAME: &str = "config.toml";

/// Which of the versions on disk are served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicy {
    /// Every version on disk.
    All,
    /// The N highest versions that load; a newer version that fails to load
    /// does not push out an older one that serves.
    Latest(usize),
    /// Exactly these versions, where they exist.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Largest batch (first dimension) a request may carry; 0 or absent: no
    /// limit beyond the model's own shape.
    pub max_batch_size: Option<u64>,
    /// Requests that may wait per version before new ones are refused.
    pub queue_capacity: Option<usize>,
    pub intra_op_threads: Option<usize>,
    #[serde(default)]
    pub inputs: Vec<TensorOverride>,
    #[serde(default)]
    pub outputs: Vec<TensorOverride>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorOverride {
    pub name: String,
    pub datatype: Option<String>,
    pub dims: Option<Vec<i64>>,
}

impl ModelConfig {
    pub fn parse(text: &str) -> Result<ModelConfig, String> {
        let config: ModelConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if let VersionPolicy::Latest(0) = config.version_policy {
            return Err("version_policy latest must be at least 1".into());
        }
        Ok(config)
    }

    /// Applies the `inputs`/`outputs` overrides to what the model file
    /// declares. An override may name only tensors the model has, keep its
    /// datatype, keep its rank, and fix only dimensions the file leaves open.
    pub fn apply(&self, signature: &mut Signature) -> Result<(), String> {
        fn one(kind: &str, specs: &mut [TensorSpec], o: &TensorOverride) -> Result<(), String> {
            let spec = specs.iter_mut().find(|s| s.name == o.name).ok_or_else(|| {
                format!(
                    "config.toml names {kind} '{}', which the model does not have",
                    o.name
                )
            })?;
            if let Some(dt) = &o.datatype {
                let dt = DataType::parse(dt).ok_or_else(|| {
                    format!("config.toml: {kind} '{}': unknown datatype '{dt}'", o.name)
                })?;
                if dt != spec.datatype {
                    return Err(format!(
                        "config.toml: {kind} '{}' is {dt} but the model file says {}",
                        o.name, spec.datatype
                    ));
                }
            }
            if let Some(dims) = &o.dims {
                let compatible = dims.len() == spec.shape.len()
                    && dims.iter().zip(&spec.shape).all(|(&d, &m)| m < 0 || d == m);
                if !compatible || dims.iter().any(|&d| d < -1) {
                    return Err(format!(
                        "config.toml: {kind} '{}' dims {dims:?} do not fit the model's {:?}",
                        o.name, spec.shape
                    ));
                }
                spec.shape = dims.clone();
            }
            Ok(())
        }
        for o in &self.inputs {
            one("input", &mut signature.inputs, o)?;
        }
        for o in &self.outputs {
            one("output", &mut signature.outputs, o)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        assert_eq!(
            ModelConfig::parse("").unwrap().version_policy,
            VersionPolicy::Latest(1)
        );
        assert_eq!(
            ModelConfig::parse("version_policy = \"all\"")
                .unwrap()
                .version_policy,
            VersionPolicy::All
        );
        assert_eq!(
            ModelConfig::parse("version_policy = { latest = 3 }")
                .unwrap()
                .version_policy,
            VersionPolicy::Latest(3)
        );
        assert_eq!(
            ModelConfig::parse("version_policy = { specific = [1, 4] }")
                .unwrap()
                .version_policy,
            VersionPolicy::Specific(vec![1, 4])
        );
        assert!(ModelConfig::parse("version_policy = { latest = 0 }").is_err());
        assert!(ModelConfig::parse("version_polcy = \"all\"")
            .unwrap_err()
            .contains("version_polcy"));
    }

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, -1],
            }],
            outputs: vec![],
        }
    }

    #[test]
    fn overrides_narrow_open_dims_only() {
        let c = ModelConfig::parse("[[inputs]]\nname = \"x\"\ndims = [-1, 8]").unwrap();
        let mut s = sig();
        c.apply(&mut s).unwrap();
        assert_eq!(s.inputs[0].shape, vec![-1, 8]);
        // Now fixed at 8: changing it again must fail.
        let c2 = ModelConfig::parse("[[inputs]]\nname = \"x\"\ndims = [-1, 9]").unwrap();
        assert!(c2.apply(&mut s).is_err());
        let c3 = ModelConfig::parse("[[inputs]]\nname = \"y\"").unwrap();
        assert!(c3.apply(&mut sig()).unwrap_err().contains("'y'"));
        let c4 = ModelConfig::parse("[[inputs]]\nname = \"x\"\ndatatype = \"INT8\"").unwrap();
        assert!(c4.apply(&mut sig()).unwrap_err().contains("INT8"));
    }
}
