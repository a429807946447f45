//! What one ONNX Runtime run costs a small model, in instructions, by the
//! way it is called: through infergate's ONNX backend (`backend`), through
//! `ort` directly (`raw`; `raw-nopat` with the memory pattern off,
//! `raw-noopt` with graph optimisation off) and through an `IoBinding`
//! with a preallocated output (`binding`). Run it under callgrind for N and
//! 3N runs; the difference over 2N is the cost of a run, start-up cancelled
//! out (`benches/ort_runcost.sh` does that for every mode).
//!
//! `ort_runcost <model.onnx> <mode> <runs> [rows]` (FP32 [rows, 16] input)

use std::path::PathBuf;

use anyhow::anyhow;
use infergate::backend::onnx::OnnxBackend;
use infergate::backend::{Backend, LoadOptions};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor as OrtTensor;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, mode, runs, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: ort_runcost <model.onnx> <mode> <runs> [rows]");
    };
    let model = PathBuf::from(model);
    let runs: usize = runs.parse()?;
    let rows: usize = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let lib = PathBuf::from(std::env::var("ORT_DYLIB_PATH")?);
    let width = 16usize;
    let data: Vec<f32> = (0..rows * width).map(|i| i as f32).collect();
    let shape = vec![rows as i64, width as i64];
    if mode == "backend" {
        infergate::backend::onnx::init(&lib)?;
        let options = LoadOptions {
            intra_op_threads: 1,
            device: Default::default(),
            require_gpu: false,
            declared: None,
        };
        let mut backend = OnnxBackend::load(&model, &options)?;
        let inputs = backend.signature().zero_inputs(rows);
        for _ in 0..runs {
            std::hint::black_box(backend.run(inputs.clone())?);
        }
        return Ok(());
    }
    let ort_err = |e: ort::Error| anyhow!("{e}");
    let environment = ort::init_from(&lib)
        .map_err(|e| anyhow!("{e}"))?
        .build()
        .map_err(ort_err)?;
    let mut builder = Session::builder(&environment)?
        .with_intra_threads(1)
        .map_err(|e| ort_err(e.into()))?
        .with_inter_threads(1)
        .map_err(|e| ort_err(e.into()))?;
    if mode.ends_with("nopat") {
        builder = builder
            .with_memory_pattern(false)
            .map_err(|e| ort_err(e.into()))?;
    }
    if mode.ends_with("noopt") {
        builder = builder
            .with_optimization_level(GraphOptimizationLevel::Disable)
            .map_err(|e| ort_err(e.into()))?;
    }
    let mut session = builder.commit_from_file(&model)?;
    let input_name = session.inputs()[0].name().to_string();
    let output_name = session.outputs()[0].name().to_string();
    if mode == "binding" {
        let mut binding = session.create_binding()?;
        let output = OrtTensor::<f32>::new(&ort::memory::Allocator::default(), [rows, width])?;
        binding.bind_output(output_name, output)?;
        for _ in 0..runs {
            let input = OrtTensor::from_array((shape.clone(), data.clone()))?;
            binding.bind_input(input_name.clone(), &input)?;
            let outputs = session.run_binding(&binding)?;
            let (_, out) = outputs[0].try_extract_tensor::<f32>()?;
            std::hint::black_box(out.to_vec());
        }
    } else {
        for _ in 0..runs {
            let input = OrtTensor::from_array((shape.clone(), data.clone()))?;
            let outputs = session.run(vec![(input_name.clone(), input.into_dyn())])?;
            let (_, out) = outputs[0].try_extract_tensor::<f32>()?;
            std::hint::black_box(out.to_vec());
        }
    }
    Ok(())
}
