//! Writes the TorchScript test model `tests/models/tiny_ts`: `tiny`
//! (y = 2x + 1 on [batch, 16] FP32) traced with tch, plus the config.toml
//! that declares its tensors (TorchScript files carry no names or shapes).
//! It is the ONNX `tiny`'s twin: the tests shadow one with the other.
//!
//! `make torch-models` (needs libtorch: `scripts/setup.sh --torch`).

use std::path::PathBuf;

const CONFIG: &str = r#"# TorchScript carries no tensor names or shapes: they are declared here.
[[inputs]]
name = "input"
datatype = "FP32"
dims = [-1, 16]

[[outputs]]
name = "output"
datatype = "FP32"
dims = [-1, 16]
"#;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models/tiny_ts");
    std::fs::create_dir_all(dir.join("1"))?;
    let example = tch::Tensor::ones([2, 16], (tch::Kind::Float, tch::Device::Cpu));
    let module = tch::CModule::create_by_tracing("tiny_ts", "forward", &[example], &mut |xs| {
        vec![&xs[0] * 2.0 + 1.0]
    })?;
    module.save(dir.join("1/model.pt"))?;
    std::fs::write(dir.join("config.toml"), CONFIG)?;
    println!("wrote {}", dir.display());
    Ok(())
}
