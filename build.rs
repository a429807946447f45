//! Compiles `proto/` into Rust (server and client stubs) with tonic.
//!
//! protoc comes from the `protoc-bin-vendored` crate so that a build needs no
//! system package; a `PROTOC` set in the environment still wins.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // Build scripts run single-threaded; setting the variable is safe here.
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // `bytes` fields as Bytes: raw tensors are sliced out of the
        // received buffer instead of copied into a Vec of their own.
        .bytes(".")
        .compile_protos(
            &["proto/inference.proto", "proto/feedback.proto"],
            &["proto"],
        )?;
    Ok(())
}
