//! ONNX models through ONNX Runtime (`ort`, loaded dynamically).
//!
//! The runtime library is loaded once per process by [`init`], from the path
//! the configuration names (the set-up extracts it from the `onnxruntime`
//! wheel). Every session then shares that one environment.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use ort::ep;
use ort::session::builder::SessionBuilder;

use super::{Backend, BackendError, Device, LoadOptions, Signature, TensorSpec};
use crate::tensor::{DataType, Tensor, TensorData};

pub const FILE_NAME: &str = "model.onnx";
pub const PLATFORM: &str = "onnxruntime_onnx";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Loads the ONNX Runtime shared library and creates the environment. Later
/// calls (tests start many servers in one process) reuse the first one.
pub fn init(library: &Path) -> Result<(), BackendError> {
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    if !library.is_file() {
        return Err(BackendError::RuntimeMissing(library.to_path_buf()));
    }
    let init_err = |reason: String| BackendError::RuntimeInit {
        path: library.display().to_string(),
        reason,
    };
    let environment = ort::init_from(library)
        .map_err(|e| init_err(e.to_string()))?
        .with_name("infergate")
        .build()
        .map_err(|e| init_err(e.to_string()))?;
    let _ = ENVIRONMENT.set(environment);
    Ok(())
}

pub struct OnnxBackend {
    session: Session,
    device: Device,
    signature: Signature,
    properties: BTreeMap<String, String>,
}

impl OnnxBackend {
    pub fn load(path: &Path, options: &LoadOptions) -> Result<OnnxBackend, BackendError> {
        let environment = ENVIRONMENT
            .get()
            .ok_or(BackendError::RuntimeNotInitialised)?;
        let load_err = |reason: String| BackendError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let builder = || -> Result<SessionBuilder, String> {
            Session::builder(environment)
                .map_err(|e| e.to_string())?
                .with_intra_threads(options.intra_op_threads.max(1))
                .map_err(|e| e.to_string())?
                .with_inter_threads(1)
                .map_err(|e| e.to_string())
        };
        let on_cpu = || -> Result<Session, BackendError> {
            builder()
                .and_then(|mut b| b.commit_from_file(path).map_err(|e| e.to_string()))
                .map_err(load_err)
        };
        let (session, device) = match options.device {
            Device::Cpu => (on_cpu()?, Device::Cpu),
            Device::Cuda(id) => {
                // error_on_failure: a provider that cannot register must say
                // so, not leave ONNX Runtime to run on the CPU silently. A
                // missing driver or device may only show when the session
                // is created, so both steps count.
                let attempt = builder().and_then(|b| {
                    let cuda = ep::CUDA::default()
                        .with_device_id(id as i32)
                        .build()
                        .error_on_failure();
                    b.with_execution_providers([cuda])
                        .map_err(|e| e.to_string())?
                        .commit_from_file(path)
                        .map_err(|e| e.to_string())
                });
                match attempt {
                    Ok(session) => (session, Device::Cuda(id)),
                    Err(cause) if options.require_gpu => {
                        return Err(load_err(format!(
                            "require_gpu: cannot run on cuda:{id}: {cause}"
                        )))
                    }
                    Err(cause) => {
                        tracing::warn!(model = %path.display(), device = %options.device, %cause,
                            "the CUDA execution provider is not usable; running on the CPU");
                        (on_cpu()?, Device::Cpu)
                    }
                }
            }
        };

        let spec = |kind: &'static str, name: &str, ty: &ValueType| match ty {
            ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                name: name.to_string(),
                datatype: datatype_of(*ty).ok_or_else(|| BackendError::UnsupportedType {
                    kind,
                    name: name.to_string(),
                    ty: format!("{ty:?}"),
                })?,
                shape: shape.to_vec(),
            }),
            other => Err(BackendError::UnsupportedType {
                kind,
                name: name.to_string(),
                ty: format!("{other:?}"),
            }),
        };
        let signature = Signature {
            inputs: session
                .inputs()
                .iter()
                .map(|o| spec("input", o.name(), o.dtype()))
                .collect::<Result<_, _>>()?,
            outputs: session
                .outputs()
                .iter()
                .map(|o| spec("output", o.name(), o.dtype()))
                .collect::<Result<_, _>>()?,
        };

        let mut properties = BTreeMap::new();
        if let Ok(meta) = session.metadata() {
            for key in meta.custom_keys().unwrap_or_default() {
                if let Some(value) = meta.custom(&key) {
                    properties.insert(key, value);
                }
            }
        }
        Ok(OnnxBackend {
            session,
            device,
            signature,
            properties,
        })
    }
}

impl Backend for OnnxBackend {
    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    fn device(&self) -> Device {
        self.device
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for tensor in inputs {
            if let TensorData::Bytes(items) = &tensor.data {
                check_strings(&tensor.name, items)?;
            }
            let value = to_value(tensor.shape, tensor.data)
                .map_err(|e| BackendError::Run(format!("input '{}': {e}", tensor.name)))?;
            values.push((tensor.name, value));
        }
        let outputs = self
            .session
            .run(values)
            .map_err(|e| BackendError::Run(e.to_string()))?;
        let mut result = Vec::with_capacity(self.signature.outputs.len());
        for spec in &self.signature.outputs {
            let value = outputs
                .get(&spec.name)
                .ok_or_else(|| BackendError::Run(format!("output '{}' missing", spec.name)))?;
            result.push(from_value(&spec.name, value)?);
        }
        Ok(result)
    }
}

/// ONNX string tensors hold UTF-8 text, and ONNX Runtime takes each string
/// as a C string: no NUL inside.
fn check_strings(name: &str, items: &[Vec<u8>]) -> Result<(), BackendError> {
    for (i, item) in items.iter().enumerate() {
        let problem = if std::str::from_utf8(item).is_err() {
            "is not valid UTF-8"
        } else if item.contains(&0) {
            "contains a NUL byte"
        } else {
            continue;
        };
        return Err(BackendError::InvalidInput(format!(
            "input '{name}': BYTES element {i} {problem}, which an ONNX string tensor cannot hold"
        )));
    }
    Ok(())
}

fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// Moves a buffer into an ONNX Runtime value without copying it (strings
/// excepted: ONNX Runtime copies those into its own representation).
fn to_value(shape: Vec<i64>, data: TensorData) -> ort::Result<DynValue> {
    Ok(match data {
        TensorData::Bool(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint8(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int8(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Fp16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Fp32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Fp64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Bytes(v) => {
            // Checked by `check_strings` before we get here.
            let strings = v
                .into_iter()
                .map(|b| String::from_utf8(b).map_err(|e| ort::Error::new(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            OrtTensor::from_string_array((shape, strings.as_slice()))?.into_dyn()
        }
    })
}

fn from_value(name: &str, value: &DynValue) -> Result<Tensor, BackendError> {
    let err = |e: ort::Error| BackendError::Run(format!("output '{name}': {e}"));
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(BackendError::UnsupportedType {
            kind: "output",
            name: name.to_string(),
            ty: format!("{:?}", value.dtype()),
        });
    };
    macro_rules! take {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(err)?;
            (shape.to_vec(), TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Bool => take!(bool, Bool),
        TensorElementType::Uint8 => take!(u8, Uint8),
        TensorElementType::Uint16 => take!(u16, Uint16),
        TensorElementType::Uint32 => take!(u32, Uint32),
        TensorElementType::Uint64 => take!(u64, Uint64),
        TensorElementType::Int8 => take!(i8, Int8),
        TensorElementType::Int16 => take!(i16, Int16),
        TensorElementType::Int32 => take!(i32, Int32),
        TensorElementType::Int64 => take!(i64, Int64),
        TensorElementType::Float16 => take!(half::f16, Fp16),
        TensorElementType::Float32 => take!(f32, Fp32),
        TensorElementType::Float64 => take!(f64, Fp64),
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings().map_err(err)?;
            (
                shape.to_vec(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(BackendError::UnsupportedType {
                kind: "output",
                name: name.to_string(),
                ty: format!("{other:?}"),
            })
        }
    };
    Ok(Tensor {
        name: name.to_string(),
        shape,
        data,
    })
}
