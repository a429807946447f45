//! Deadlines over the real server: the V2 `timeout` parameter (HTTP and
//! gRPC), gRPC's own deadline, a model's `[queue] default_timeout_us` and
//! the server's `--request-timeout`. A request past its deadline is
//! answered 504 / DEADLINE_EXCEEDED and counted; one with time to spare is
//! served as before.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use infergate::grpc::pb;
use pb::model_infer_request::InferInputTensor;
use serde_json::{json, Value};
use tonic::Code;

fn tiny_body(timeout: Option<Value>) -> Value {
    let mut b = json!({ "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": vec![0.5f32; 16] }] });
    if let Some(t) = timeout {
        b["parameters"] = json!({ "timeout": t });
    }
    b
}

fn deadline_failures(model: &str, protocol: &str) -> f64 {
    metric(
        "infergate_request_failures_total",
        &format!(
            "model=\"{model}\",version=\"1\",protocol=\"{protocol}\",reason=\"deadline_exceeded\""
        ),
    )
    .unwrap_or(0.0)
}

fn grpc_request(timeout: Option<pb::infer_parameter::ParameterChoice>) -> pb::ModelInferRequest {
    let mut parameters = HashMap::new();
    if let Some(t) = timeout {
        parameters.insert(
            "timeout".to_string(),
            pb::InferParameter {
                parameter_choice: Some(t),
            },
        );
    }
    pb::ModelInferRequest {
        model_name: "tiny".into(),
        model_version: String::new(),
        id: String::new(),
        parameters,
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 16],
            parameters: Default::default(),
            contents: Some(pb::InferTensorContents {
                fp32_contents: vec![0.5; 16],
                ..Default::default()
            }),
        }],
        outputs: vec![],
        raw_input_contents: vec![],
    }
}

#[tokio::test]
async fn the_requests_timeout_is_its_deadline() {
    let server = TestServer::start(repo_with(&["tiny"]), None).await;
    let before = deadline_failures("tiny", "http");
    // A microsecond: gone before any batch can take it.
    let (status, v) = server
        .post("/v2/models/tiny/infer", &tiny_body(Some(json!(1))))
        .await;
    assert_eq!(status, 504, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("deadline of 1 µs"), "{error}");
    // (The other tests of this file count into the same series, at once.)
    assert!(deadline_failures("tiny", "http") >= before + 1.0);
    // Ten seconds: served.
    let (status, v) = server
        .post("/v2/models/tiny/infer", &tiny_body(Some(json!(10_000_000))))
        .await;
    assert_eq!(status, 200, "{v}");
    // Not a number of microseconds: 400 naming it.
    for bad in [json!("soon"), json!(-5), json!(1.5)] {
        let (status, v) = server
            .post("/v2/models/tiny/infer", &tiny_body(Some(bad.clone())))
            .await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("parameters.timeout"),
            "{v}"
        );
    }

    // The same over gRPC, and gRPC's own deadline.
    use pb::infer_parameter::ParameterChoice;
    let mut c = server.grpc_client().await;
    let err = c
        .model_infer(grpc_request(Some(ParameterChoice::Int64Param(1))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("deadline"), "{err:?}");
    let err = c
        .model_infer(grpc_request(Some(ParameterChoice::StringParam(
            "1s".into(),
        ))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut ok = tonic::Request::new(grpc_request(Some(ParameterChoice::Int64Param(10_000_000))));
    ok.set_timeout(Duration::from_secs(30));
    c.model_infer(ok).await.expect("time to spare: served");
    // A client deadline of 0.5 ms (less the server's margin of 1 ms: none
    // left): refused at once, by the server or the client's own timer.
    let mut tight = tonic::Request::new(grpc_request(None));
    tight.set_timeout(Duration::from_micros(500));
    let err = c.model_infer(tight).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    // The server still serves.
    let (status, _) = server.post("/v2/models/tiny/infer", &tiny_body(None)).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_models_default_timeout_applies_unless_the_request_brings_one() {
    let repo = repo_with(&["tiny"]);
    let path = repo.path().join("tiny/config.toml");
    let mut config = std::fs::read_to_string(&path).unwrap_or_default();
    config.push_str("\n[queue]\ndefault_timeout_us = 1\ntimeout_action = \"reject\"\n");
    std::fs::write(&path, config).unwrap();
    let server = TestServer::start(repo, None).await;
    let (status, v) = server.post("/v2/models/tiny/infer", &tiny_body(None)).await;
    assert_eq!(status, 504, "{v}");
    // The request's own timeout replaces the model's default.
    let (status, v) = server
        .post("/v2/models/tiny/infer", &tiny_body(Some(json!(10_000_000))))
        .await;
    assert_eq!(status, 200, "{v}");
    server.stop().await;

    // Only "reject" is an action: anything else is a config error, named.
    let repo = repo_with(&["tiny"]);
    let path = repo.path().join("tiny/config.toml");
    std::fs::write(&path, "[queue]\ntimeout_action = \"delay\"\n").unwrap();
    let server = TestServer::start(repo, None).await;
    let text = format!("{:?}", server.index().await);
    assert!(text.contains("delay"), "the reason names the value: {text}");
    server.stop().await;
}

#[tokio::test]
async fn the_servers_request_timeout_is_the_last_default() {
    let server = TestServer::start_with(repo_with(&["tiny"]), |c| {
        c.request_timeout = Some(Duration::from_micros(1))
    })
    .await;
    let (status, v) = server.post("/v2/models/tiny/infer", &tiny_body(None)).await;
    assert_eq!(status, 504, "{v}");
    let (status, v) = server
        .post("/v2/models/tiny/infer", &tiny_body(Some(json!(10_000_000))))
        .await;
    assert_eq!(status, 200, "{v}");
    server.stop().await;
}
