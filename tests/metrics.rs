//! The Prometheus endpoint on its own port: requests counted by model,
//! version and status, failures by reason, durations in a histogram.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::json;

#[tokio::test]
async fn requests_failures_and_durations_are_exported() {
    let repo = repo_with(&["tiny", "digits"]);
    let mut config = infergate::Config::new(repo.path(), ort_lib());
    config.poll_interval = None;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners = infergate::Listeners::bind(any, any, Some(any))
        .await
        .unwrap();
    let grpc = listeners.grpc.local_addr().unwrap();
    let (http, metrics) = (
        listeners.http.local_addr().unwrap(),
        listeners.metrics.as_ref().unwrap().local_addr().unwrap(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(infergate::run(config, listeners, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let infer = format!("http://{http}/v2/models/tiny/infer");
    for _ in 0..200 {
        if client
            .get(format!("http://{http}/v2/health/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let good = json!({ "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": vec![1.0; 16] }] });
    let bad = json!({ "inputs": [{ "name": "input", "shape": [1, 15], "datatype": "FP32", "data": vec![1.0; 15] }] });
    for _ in 0..3 {
        assert_eq!(
            client
                .post(&infer)
                .json(&good)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        client
            .post(&infer)
            .json(&bad)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    // One over gRPC: counted under its own protocol label.
    let mut grpc_client =
        infergate::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            format!("http://{grpc}"),
        )
        .await
        .unwrap();
    grpc_client
        .model_infer(infergate::grpc::pb::ModelInferRequest {
            model_name: "tiny".into(),
            inputs: vec![infergate::grpc::pb::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![2, 16],
                parameters: Default::default(),
                contents: Some(infergate::grpc::pb::InferTensorContents {
                    fp32_contents: vec![0.5; 32],
                    ..Default::default()
                }),
            }],
            ..Default::default()
        })
        .await
        .unwrap();

    // One request against the digits schema (pixels 0..16).
    let too_bright = json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![99.0; 64] }] });
    let r = client
        .post(format!("http://{http}/v2/models/digits/infer"))
        .json(&too_bright)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("schema rule max"), "{body}");

    let text = client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line starting with {needle} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(r#"infergate_requests_total{model="tiny",version="1",protocol="http",status="ok"}"#),
        3.0
    );
    assert_eq!(
        value(
            r#"infergate_requests_total{model="tiny",version="1",protocol="http",status="error"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            r#"infergate_request_failures_total{model="tiny",version="1",protocol="http",reason="invalid_argument"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            r#"infergate_request_duration_seconds_count{model="tiny",version="1",protocol="http"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            r#"infergate_request_duration_seconds_bucket{model="tiny",version="1",protocol="http",le="10"}"#
        ),
        3.0
    );
    assert!(text.contains("# TYPE infergate_request_duration_seconds histogram"));
    assert_eq!(
        value(r#"infergate_requests_total{model="tiny",version="1",protocol="grpc",status="ok"}"#),
        1.0
    );
    // Rows, runs, queue and compute time, gauges back at rest.
    // Three one-row HTTP requests and one two-row gRPC request.
    assert_eq!(
        value(r#"infergate_inferences_total{model="tiny",version="1"}"#),
        5.0
    );
    // Four runs (three HTTP, one gRPC): the bad request never reached the queue, the warm-up bypasses it.
    assert_eq!(
        value(r#"infergate_batch_size_count{model="tiny",version="1"}"#),
        4.0
    );
    assert_eq!(
        value(r#"infergate_queue_duration_seconds_count{model="tiny",version="1"}"#),
        4.0
    );
    assert_eq!(
        value(r#"infergate_compute_duration_seconds_count{model="tiny",version="1"}"#),
        4.0
    );
    assert_eq!(
        value(r#"infergate_inflight_requests{model="tiny",version="1"}"#),
        0.0
    );
    assert_eq!(
        value(r#"infergate_queue_depth{model="tiny",version="1"}"#),
        0.0
    );
    // Model facts, from the files and their training metadata.
    let meta: serde_json::Value = client
        .get(format!("http://{http}/v2/models/digits/versions/2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sha = meta["parameters"]["sha256"].as_str().unwrap();
    assert_eq!(
        value(&format!(
            r#"infergate_model_info{{model="digits",version="2",sha256="{sha}",backend="onnxruntime_onnx"}}"#
        )),
        1.0
    );
    let accuracy: f64 = meta["parameters"]["properties"]["heldout_accuracy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        value(r#"infergate_model_training_accuracy{model="digits",version="2"}"#),
        accuracy
    );
    assert!(value(r#"infergate_model_age_days{model="digits",version="2"}"#) >= 0.0);
    assert!(
        value(r#"infergate_model_loaded_timestamp_seconds{model="digits",version="1"}"#) > 1.7e9
    );
    assert_eq!(
        value(r#"infergate_validation_failures_total{model="digits",input="input",rule="max"}"#),
        1.0
    );
    // The process itself.
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(text.contains("process_cpu_seconds_total"));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
