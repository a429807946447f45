//! The compute ceiling of a model: ONNX Runtime called in-process through
//! infergate's ONNX backend (the same session settings: one intra-op
//! thread), at several batch sizes, no server in between.
//!
//! `cargo run --release --example ort_ceiling -- <model.onnx> [seconds] [batches]`
//! prints one JSON object per batch size: runs/s, rows/s, p50 µs per run.
//! `DEVICE=cuda:0` runs it on a GPU (and fails rather than fall back).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use infergate::backend::onnx::OnnxBackend;
use infergate::backend::{Backend, LoadOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = PathBuf::from(
        args.next()
            .expect("usage: ort_ceiling <model.onnx> [seconds] [batches]"),
    );
    let seconds: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2.0);
    let batches: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "1,2,4,8,16,32,64".into())
        .split(',')
        .map(|b| b.parse())
        .collect::<Result<_, _>>()?;
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".ort/libonnxruntime.so.1.31.1"));
    infergate::backend::onnx::init(&lib)?;
    let device = std::env::var("DEVICE")
        .ok()
        .map(|d| infergate::backend::Device::parse(&d))
        .transpose()
        .map_err(anyhow::Error::msg)?
        .unwrap_or_default();
    let mut backend = OnnxBackend::load(
        &model,
        &LoadOptions {
            intra_op_threads: 1,
            device,
            require_gpu: device != infergate::backend::Device::Cpu,
            declared: None,
        },
    )?;
    let signature = backend.signature().clone();
    for batch in batches {
        let inputs = signature.zero_inputs(batch);
        // Warm up, then time runs until `seconds` have passed.
        for _ in 0..3 {
            backend.run(inputs.clone())?;
        }
        let mut times = Vec::new();
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs_f64(seconds) {
            let input = inputs.clone();
            let t = Instant::now();
            backend.run(input)?;
            times.push(t.elapsed());
        }
        times.sort();
        let total: Duration = times.iter().sum();
        let runs_per_s = times.len() as f64 / total.as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "model": model.display().to_string(),
                "device": device.to_string(),
                "batch": batch,
                "runs_per_s": runs_per_s,
                "rows_per_s": runs_per_s * batch as f64,
                "p50_us": times[times.len() / 2].as_micros() as u64,
            })
        );
    }
    Ok(())
}
