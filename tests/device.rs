//! `device = "cuda:N"` without a usable GPU: the model falls back to the CPU
//! with a warning, or — with `require_gpu = true` — fails to load with the
//! reason. (The tests run the CPU build of ONNX Runtime, which has no CUDA
//! execution provider, so this holds on any machine.)

mod common;

use common::*;
use serde_json::json;

fn tiny_with(config: &str) -> tempfile::TempDir {
    let repo = repo_with(&["tiny"]);
    std::fs::write(repo.path().join("tiny/config.toml"), config).unwrap();
    repo
}

async fn infer_tiny(server: &TestServer) -> u16 {
    let body = json!({ "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": vec![1.0; 16] }] });
    server.post("/v2/models/tiny/infer", &body).await.0
}

#[tokio::test]
async fn without_a_gpu_a_cuda_model_runs_on_the_cpu() {
    let server = TestServer::start(tiny_with("device = \"cuda:0\"\n"), None).await;
    let (status, meta) = server.get("/v2/models/tiny").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["parameters"]["device"], "cpu");
    assert_eq!(meta["parameters"]["requested_device"], "cuda:0");
    assert_eq!(infer_tiny(&server).await, 200);
    server.stop().await;

    // The server-wide default does the same.
    let server = TestServer::start_with(repo_with(&["tiny"]), |c| {
        c.poll_interval = None;
        c.device = infergate::backend::Device::Cuda(1);
    })
    .await;
    let (_, meta) = server.get("/v2/models/tiny").await;
    assert_eq!(
        (
            meta["parameters"]["device"].clone(),
            meta["parameters"]["requested_device"].clone()
        ),
        (json!("cpu"), json!("cuda:1"))
    );
    assert_eq!(infer_tiny(&server).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn require_gpu_refuses_to_load_on_the_cpu() {
    let server =
        TestServer::start(tiny_with("device = \"cuda:0\"\nrequire_gpu = true\n"), None).await;
    let row = server.index_row("tiny", "1").await.unwrap();
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("require_gpu: cannot run on cuda:0"),
        "{reason}"
    );
    assert_eq!(infer_tiny(&server).await, 503);
    server.stop().await;
}

#[tokio::test]
async fn a_device_that_is_not_one_is_a_config_error() {
    let server = TestServer::start(tiny_with("device = \"gpu0\"\n"), None).await;
    let row = server
        .index_row("tiny", "")
        .await
        .or(server.index_row("tiny", "1").await)
        .unwrap();
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("device 'gpu0' is not"),
        "{row}"
    );
    server.stop().await;
}
