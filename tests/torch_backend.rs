//! TorchScript models through tch (feature `torch`): served like ONNX ones,
//! with the tensors declared in config.toml, and compared with their ONNX
//! twin through a shadow. Run with `make test-torch`.
#![cfg(feature = "torch")]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn a_torchscript_model_serves_and_agrees_with_its_onnx_twin() {
    // tests/models/tiny_ts comes from examples/make_torchscript.rs.
    let repo = repo_with(&["tiny"]);
    let source = root().join("tests/models/tiny_ts");
    copy_dir(&source, &repo.path().join("tiny_ts"));
    // The same file without its declaration cannot load.
    std::fs::create_dir_all(repo.path().join("undeclared/1")).unwrap();
    std::fs::copy(
        source.join("1/model.pt"),
        repo.path().join("undeclared/1/model.pt"),
    )
    .unwrap();
    let server = TestServer::start(repo, None).await;

    let (status, meta) = server.get("/v2/models/tiny_ts").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["platform"], "pytorch_libtorch");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 16]));
    let row = server.index_row("undeclared", "1").await.unwrap();
    assert_eq!(row["state"], "UNAVAILABLE");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("declare every input and output"),
        "{row}"
    );

    // HTTP, concurrently (dynamic batching merges the requests).
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (client, url) = (
            server.client.clone(),
            server.url("/v2/models/tiny_ts/infer"),
        );
        tasks.push(tokio::spawn(async move {
            let x: Vec<f32> = (0..32).map(|i| (i + c * 32) as f32 / 8.0).collect();
            let body = json!({ "inputs": [{ "name": "input", "shape": [2, 16], "datatype": "FP32", "data": x }] });
            let v: Value = client.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
            let y: Vec<f32> = f32s(&v["outputs"][0]["data"]);
            let want: Vec<f32> = x.iter().map(|v| v * 2.0 + 1.0).collect();
            assert_close(&y, &want, 1e-6, "tiny_ts over HTTP");
            assert_eq!(v["outputs"][0]["shape"], json!([2, 16]));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // gRPC.
    let mut grpc = server.grpc_client().await;
    let r = grpc
        .model_infer(infergate::grpc::pb::ModelInferRequest {
            model_name: "tiny_ts".into(),
            inputs: vec![infergate::grpc::pb::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 16],
                contents: Some(infergate::grpc::pb::InferTensorContents {
                    fp32_contents: vec![0.5; 16],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let out = &r.outputs[0];
    let values: Vec<f32> = match &out.contents {
        Some(c) if !c.fp32_contents.is_empty() => c.fp32_contents.clone(),
        _ => r.raw_output_contents[0]
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
    };
    assert_close(&values, &[2.0; 16], 1e-6, "tiny_ts over gRPC");

    // The ONNX model shadowed by its TorchScript twin: they agree.
    let (status, v) = server
        .post("/v2/models/tiny/shadow", &json!({ "model": "tiny_ts" }))
        .await;
    assert_eq!(status, 200, "{v}");
    for i in 0..10 {
        let body = json!({ "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": vec![i as f32 * 0.37; 16] }] });
        assert_eq!(server.post("/v2/models/tiny/infer", &body).await.0, 200);
    }
    let mut report = Value::Null;
    for _ in 0..500 {
        report = server.get("/v2/models/tiny/shadow").await.1;
        if report["cumulative"]["compared"] == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = &report["cumulative"]["outputs"]["output"];
    assert_eq!(output["count"], 160, "{report}");
    assert!(output["max_abs_diff"].as_f64().unwrap() <= 1e-6, "{report}");
    assert_eq!(report["cumulative"]["errors"], 0);
    // Window statistics of the TorchScript model saw its traffic too.
    let (_, stats) = server.get("/v2/models/tiny_ts/versions/1/stats").await;
    assert!(stats["model_stats"][0]["inference_count"].as_u64().unwrap() >= 27);
    server.stop().await;
}
