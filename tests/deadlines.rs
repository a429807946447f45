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

/// A server with `digits_heavy` alone, under this config.toml.
async fn digits_heavy(config: &str) -> TestServer {
    let repo = repo_with(&[]);
    copy_dir(
        &root().join("tests/models/digits_heavy"),
        &repo.path().join("digits_heavy"),
    );
    std::fs::write(repo.path().join("digits_heavy/config.toml"), config).unwrap();
    TestServer::start(repo, None).await
}

/// A full queue refuses at once, saying when to come back: 503 with
/// `Retry-After` over HTTP, UNAVAILABLE with `grpc-retry-pushback-ms` over
/// gRPC; every refused request is answered, every admitted one served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_says_when_to_retry() {
    let server = digits_heavy("queue_capacity = 1\ndynamic_batching = false\n").await;
    let digits = Digits::load();
    let body = digits_body(&digits.features[0..8], None);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (client, url, body) = (
                server.client.clone(),
                server.url("/v2/models/digits_heavy/infer"),
                body.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..5 {
                    let r = client.post(&url).json(&body).send().await.unwrap();
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap();
                    seen.push((status, retry, v));
                }
                seen
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        for (status, retry, v) in t.await.unwrap() {
            match status {
                200 => ok += 1,
                503 => {
                    refused += 1;
                    assert_eq!(retry.as_deref(), Some("1"), "{v}");
                    assert!(
                        v["error"]
                            .as_str()
                            .unwrap()
                            .contains("queue is full (1 waiting)"),
                        "{v}"
                    );
                }
                other => panic!("{other}: {v}"),
            }
        }
    }
    assert_eq!(ok + refused, 80);
    assert!(ok > 0 && refused > 0, "{ok} served, {refused} refused");

    // gRPC: the same refusal, with the pushback.
    let mut c = server.grpc_client().await;
    let request = || pb::ModelInferRequest {
        model_name: "digits_heavy".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![8, 64],
            parameters: Default::default(),
            contents: Some(pb::InferTensorContents {
                fp32_contents: digits.flat(0..8),
                ..Default::default()
            }),
        }],
        ..Default::default()
    };
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let mut c = c.clone();
            let r = request();
            tokio::spawn(async move { c.model_infer(r).await })
        })
        .collect();
    let mut pushback = 0;
    for call in calls {
        if let Err(status) = call.await.unwrap() {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert_eq!(
                status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .map(|v| v.to_str().unwrap()),
                Some("1000")
            );
            pushback += 1;
        }
    }
    assert!(pushback > 0, "16 at once over a queue of 1: some refused");
    c.model_infer(request()).await.expect("still serving");
    server.stop().await;
}

/// Admission bounded in time (`[queue] max_wait_us`): once the work queued
/// ahead would take longer than the bound to drain, a request is refused at
/// once (503 naming the estimate and the bound), while the queue still has
/// room by count; what is admitted is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queued_past_max_wait_is_refused_at_once() {
    // 1 µs: anything queued behind a run is over it, once a run has shown
    // what a row costs.
    let server =
        digits_heavy("queue_capacity = 1000\ndynamic_batching = false\n[queue]\nmax_wait_us = 1\n")
            .await;
    let digits = Digits::load();
    let body = digits_body(&digits.features[0..8], None);
    let url = server.url("/v2/models/digits_heavy/infer");
    // Past the cold first runs, the cost of a row is known.
    for _ in 0..10 {
        let r = server.client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "nothing queued: admitted");
    }
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (client, url, body) = (server.client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..5 {
                    let r = client.post(&url).json(&body).send().await.unwrap();
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap();
                    seen.push((status, v));
                }
                seen
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        for (status, v) in t.await.unwrap() {
            match status {
                200 => ok += 1,
                503 => {
                    refused += 1;
                    let e = v["error"].as_str().unwrap();
                    assert!(
                        e.contains("the work queued ahead would take about")
                            && e.contains("over its 1µs limit"),
                        "{v}"
                    );
                }
                other => panic!("{other}: {v}"),
            }
        }
    }
    assert_eq!(ok + refused, 80);
    assert!(ok > 0 && refused > 0, "{ok} served, {refused} refused");
    server.stop().await;
}
