//! Compiles the server's V2 proto (one source of truth, `../proto`) into a
//! client and, for the bare ceiling, a server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // Build scripts run single-threaded; setting the variable is safe here.
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=../proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Bytes, not Vec<u8>: a request is cloned per send, and cloning Bytes is free.
        .bytes(".")
        // The bare ceiling serves only ModelInfer and ModelMetadata.
        .generate_default_stubs(true)
        .compile_protos(&["../proto/inference.proto"], &["../proto"])?;
    Ok(())
}
