//! TorchScript models through `tch` (libtorch), behind the `torch` feature.
//!
//! A TorchScript file carries no tensor names or shapes, so the model's
//! `config.toml` must declare every input and output (`[[inputs]]` and
//! `[[outputs]]` with name, datatype and dims): inputs are passed to
//! `forward` in that order, and its result (a tensor, or a tuple of them)
//! is read in the order of the declared outputs.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{CModule, IValue, Kind};

use super::{Backend, BackendError, Device, LoadOptions, Signature};
use crate::tensor::{DataType, Tensor, TensorData};

pub const FILE_NAME: &str = "model.pt";
pub const PLATFORM: &str = "pytorch_libtorch";

pub struct TorchBackend {
    module: CModule,
    device: Device,
    signature: Signature,
    properties: BTreeMap<String, String>,
}

impl TorchBackend {
    pub fn load(path: &Path, options: &LoadOptions) -> Result<TorchBackend, BackendError> {
        let load_err = |reason: String| BackendError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let signature = options.declared.clone().ok_or_else(|| {
            load_err(
                "a TorchScript model carries no tensor names or shapes: declare every input and \
                 output in config.toml ([[inputs]] and [[outputs]] with name, datatype and dims)"
                    .into(),
            )
        })?;
        tch::set_num_threads(options.intra_op_threads.max(1) as i32);
        let device = match options.device {
            Device::Cpu => Device::Cpu,
            Device::Cuda(n)
                if tch::Cuda::is_available() && (n as i64) < tch::Cuda::device_count() =>
            {
                Device::Cuda(n)
            }
            Device::Cuda(n) if options.require_gpu => {
                return Err(load_err(format!(
                    "require_gpu: cannot run on cuda:{n}: libtorch sees {} CUDA device(s)",
                    tch::Cuda::device_count()
                )))
            }
            Device::Cuda(_) => {
                let cause = format!("libtorch sees {} CUDA device(s)", tch::Cuda::device_count());
                tracing::warn!(model = %path.display(), device = %options.device, %cause,
                    "CUDA is not usable; running on the CPU");
                Device::Cpu
            }
        };
        let module = CModule::load_on_device(path, tch_device(device))
            .map_err(|e| load_err(e.to_string()))?;
        Ok(TorchBackend {
            module,
            device,
            signature,
            properties: BTreeMap::new(),
        })
    }
}

fn tch_device(d: Device) -> tch::Device {
    match d {
        Device::Cpu => tch::Device::Cpu,
        Device::Cuda(n) => tch::Device::Cuda(n as usize),
    }
}

fn to_tch(t: &Tensor, device: tch::Device) -> Result<tch::Tensor, BackendError> {
    let shape = &t.shape;
    let tensor = match &t.data {
        TensorData::Fp32(v) => tch::Tensor::from_slice(v),
        TensorData::Fp64(v) => tch::Tensor::from_slice(v),
        TensorData::Int64(v) => tch::Tensor::from_slice(v),
        TensorData::Int32(v) => tch::Tensor::from_slice(v),
        TensorData::Int16(v) => tch::Tensor::from_slice(v),
        TensorData::Int8(v) => tch::Tensor::from_slice(v),
        TensorData::Uint8(v) => tch::Tensor::from_slice(v),
        TensorData::Bool(v) => tch::Tensor::from_slice(v),
        other => {
            return Err(BackendError::InvalidInput(format!(
                "input '{}': datatype {} is not supported by the TorchScript backend",
                t.name,
                other.datatype()
            )))
        }
    };
    Ok(tensor.reshape(shape.as_slice()).to_device(device))
}

fn from_tch(name: &str, t: &tch::Tensor, datatype: DataType) -> Result<Tensor, BackendError> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let shape = t.size();
    let flat = t.flatten(0, -1);
    let bad = |e: tch::TchError| BackendError::Run(format!("output '{name}': {e}"));
    let data = match datatype {
        DataType::Fp32 => {
            TensorData::Fp32(Vec::<f32>::try_from(&flat.to_kind(Kind::Float)).map_err(bad)?)
        }
        DataType::Fp64 => {
            TensorData::Fp64(Vec::<f64>::try_from(&flat.to_kind(Kind::Double)).map_err(bad)?)
        }
        DataType::Int64 => {
            TensorData::Int64(Vec::<i64>::try_from(&flat.to_kind(Kind::Int64)).map_err(bad)?)
        }
        DataType::Int32 => {
            TensorData::Int32(Vec::<i32>::try_from(&flat.to_kind(Kind::Int)).map_err(bad)?)
        }
        other => {
            return Err(BackendError::Run(format!(
                "output '{name}': datatype {other} is not supported by the TorchScript backend"
            )))
        }
    };
    Ok(Tensor {
        name: name.to_string(),
        shape,
        data,
    })
}

impl Backend for TorchBackend {
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
        let device = tch_device(self.device);
        // In the declared order, whatever order the request used.
        let mut args = Vec::with_capacity(self.signature.inputs.len());
        for spec in &self.signature.inputs {
            let t = inputs.iter().find(|t| t.name == spec.name).ok_or_else(|| {
                BackendError::InvalidInput(format!("input '{}' is missing", spec.name))
            })?;
            args.push(IValue::Tensor(to_tch(t, device)?));
        }
        let out = tch::no_grad(|| self.module.forward_is(&args))
            .map_err(|e| BackendError::Run(e.to_string()))?;
        let tensors: Vec<tch::Tensor> = match out {
            IValue::Tensor(t) => vec![t],
            IValue::Tuple(items) | IValue::GenericList(items) => items
                .into_iter()
                .map(|i| match i {
                    IValue::Tensor(t) => Ok(t),
                    other => Err(BackendError::Run(format!(
                        "the model returned a non-tensor output: {other:?}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            IValue::TensorList(ts) => ts,
            other => {
                return Err(BackendError::Run(format!(
                    "the model returned {other:?}, not tensors"
                )))
            }
        };
        if tensors.len() != self.signature.outputs.len() {
            return Err(BackendError::Run(format!(
                "the model returned {} outputs, config.toml declares {}",
                tensors.len(),
                self.signature.outputs.len()
            )));
        }
        self.signature
            .outputs
            .iter()
            .zip(&tensors)
            .map(|(spec, t)| from_tch(&spec.name, t, spec.datatype))
            .collect()
    }
}
