//! Backends: what runs a model. The [`Backend`] trait is the only thing the
//! rest of the server knows about a runtime, so the TorchScript backend and
//! execution providers plug in here without touching the protocol code.
//!
//! A backend is owned by exactly one inference thread (see `worker.rs`):
//! `run` takes `&mut self` because ONNX Runtime sessions (and libtorch
//! modules) are not safe to call concurrently, and one owner per thread
//! makes that impossible to get wrong.

pub mod onnx;
#[cfg(feature = "torch")]
pub mod torch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::tensor::{DataType, Tensor, TensorData};

/// Name, datatype and shape of one model input or output; `-1` marks a
/// dimension of any size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// The one shape rule: a shape fits when it has the spec's rank and
    /// agrees with every dimension the spec fixes (a negative one is open).
    pub fn fits(&self, shape: &[i64]) -> bool {
        shape.len() == self.shape.len()
            && shape
                .iter()
                .zip(&self.shape)
                .all(|(&given, &declared)| declared < 0 || given == declared)
    }
}

/// The inputs and outputs of a model, in the model's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|t| t.name == name)
    }

    /// Zero-filled inputs (empty strings for BYTES): `rows` for a variable
    /// first dimension, 1 for any other variable one. What a warm-up or a
    /// timing loop sends.
    pub fn zero_inputs(&self, rows: usize) -> Vec<Tensor> {
        self.inputs
            .iter()
            .map(|spec| {
                let shape: Vec<i64> = spec
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match d {
                        d if d >= 0 => d,
                        _ if i == 0 => rows as i64,
                        _ => 1,
                    })
                    .collect();
                let n = shape.iter().product::<i64>().max(0) as usize;
                Tensor {
                    name: spec.name.clone(),
                    shape,
                    data: TensorData::zeros(spec.datatype, n),
                }
            })
            .collect()
    }
}

/// Where a model runs: `cpu`, or `cuda:N` (`cuda` alone is `cuda:0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(u32),
}

impl Device {
    pub fn parse(text: &str) -> Result<Device, String> {
        match text.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            t => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("device '{t}' is not \"cpu\", \"cuda\" or \"cuda:N\"")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Device, String> {
        Device::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
        let text = String::deserialize(d)?;
        Device::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How a backend is to be built.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Threads ONNX Runtime may use inside one operator. One by default: the
    /// server gets its parallelism from requests, and more threads per
    /// request only fight over the same cores.
    pub intra_op_threads: usize,
    pub device: Device,
    /// A GPU that cannot be used fails the load instead of falling back to
    /// the CPU.
    pub require_gpu: bool,
    /// Inputs and outputs as config.toml declares them in full (name,
    /// datatype, dims): what a TorchScript model cannot say itself.
    pub declared: Option<Signature>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            intra_op_threads: 1,
            device: Device::Cpu,
            require_gpu: false,
            declared: None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("ONNX Runtime library not found at '{}'; run `make setup` (it extracts it from the onnxruntime==1.31.1 wheel into .ort/) or point ORT_DYLIB_PATH / --onnxruntime-lib at libonnxruntime.so", .0.display())]
    RuntimeMissing(PathBuf),

    #[error("cannot initialise ONNX Runtime from '{path}': {reason}")]
    RuntimeInit { path: String, reason: String },

    #[error("ONNX Runtime is not initialised")]
    RuntimeNotInitialised,

    #[error("no model file in '{}' (expected one of: {expected})", dir.display())]
    MissingFile {
        dir: PathBuf,
        expected: &'static str,
    },

    #[error("cannot load '{}': {reason}", path.display())]
    Load { path: PathBuf, reason: String },

    #[error("{kind} '{name}' has type {ty}, which infergate cannot serve")]
    UnsupportedType {
        kind: &'static str,
        name: String,
        ty: String,
    },

    /// The request's data cannot be represented by this runtime (e.g. BYTES
    /// that are not UTF-8 for an ONNX string tensor): the client's fault.
    #[error("{0}")]
    InvalidInput(String),

    #[error("{0}")]
    Run(String),
}

/// A loaded model, ready to run.
pub trait Backend: Send + 'static {
    /// The V2 `platform` string (Triton's names: `onnxruntime_onnx`, ...).
    fn platform(&self) -> &'static str;

    /// Inputs and outputs as the model file declares them.
    fn signature(&self) -> &Signature;

    /// Free-form metadata the model file carries (ONNX `metadata_props`).
    fn properties(&self) -> &BTreeMap<String, String>;

    /// Where the model actually runs (after any fallback to the CPU).
    fn device(&self) -> Device {
        Device::Cpu
    }

    /// Runs the model. Inputs are already checked against the signature;
    /// every model output is returned, in signature order.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError>;
}

/// Finds the model file in a version directory and loads it with the backend
/// its file name calls for.
/// TorchScript models' file name (served with the `torch` feature).
pub const TORCHSCRIPT_FILE: &str = "model.pt";

pub fn load(version_dir: &Path, options: &LoadOptions) -> Result<Box<dyn Backend>, BackendError> {
    let onnx = version_dir.join(onnx::FILE_NAME);
    if onnx.is_file() {
        return Ok(Box::new(onnx::OnnxBackend::load(&onnx, options)?));
    }
    let pt = version_dir.join(TORCHSCRIPT_FILE);
    if pt.is_file() {
        #[cfg(feature = "torch")]
        return Ok(Box::new(torch::TorchBackend::load(&pt, options)?));
        #[cfg(not(feature = "torch"))]
        return Err(BackendError::Load {
            path: pt,
            reason: "this infergate was built without the `torch` feature (TorchScript): \
                     build with `cargo build --features torch` (see the README)"
                .into(),
        });
    }
    Err(BackendError::MissingFile {
        dir: version_dir.to_path_buf(),
        expected: "model.onnx, model.pt",
    })
}

/// The file a version directory's backend would load, if there is one.
pub fn model_file(version_dir: &Path) -> Option<PathBuf> {
    [onnx::FILE_NAME, TORCHSCRIPT_FILE]
        .iter()
        .map(|f| version_dir.join(f))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod device_tests {
    use super::Device;

    #[test]
    fn devices_parse_and_print_back() {
        for (text, device) in [
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
        ] {
            assert_eq!(Device::parse(text), Ok(device));
        }
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "CUDA:0", ""] {
            assert!(Device::parse(bad).is_err(), "{bad}");
        }
    }
}
