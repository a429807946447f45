//! Dynamic batching: under concurrency, requests are merged into shared
//! runs, and every caller gets exactly the rows it would have got alone.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

/// digits v2 twice: batched (a 2 ms window so that batches surely form) and not.
fn repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    for (name, config) in [
        (
            "batched",
            "max_batch_size = 16\nmax_queue_delay_us = 2000\n",
        ),
        ("alone", "dynamic_batching = false\n"),
    ] {
        copy_dir(
            &model_source("digits").join("2"),
            &repo.path().join(name).join("1"),
        );
        std::fs::write(repo.path().join(name).join("config.toml"), config).unwrap();
    }
    copy_dir(&model_source("types"), &repo.path().join("types"));
    repo
}

async fn infer(s: &TestServer, model: &str, rows: &[Vec<f32>]) -> Value {
    let (status, r) = s
        .post(
            &format!("/v2/models/{model}/infer"),
            &json!({ "inputs": [{ "name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": rows }] }),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_outputs_equal_unbatched_outputs_row_by_row() {
    let s = Arc::new(TestServer::start(repo(), None).await);
    let d = Arc::new(Digits::load());
    let mut tasks = Vec::new();
    for c in 0..32usize {
        let (s, d) = (s.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..6usize {
                // 1 to 3 rows per request, different for each client.
                let n = 1 + (c + k) % 3;
                let start = (c * 7 + k * 13) % (d.features.len() - n);
                let rows: Vec<Vec<f32>> = d.features[start..start + n].to_vec();
                let batched = infer(&s, "batched", &rows).await;
                let alone = infer(&s, "alone", &rows).await;
                assert_eq!(batched["outputs"][0]["shape"], json!([n, 10]));
                assert_eq!(batched["outputs"][1]["shape"], json!([n]));
                // Labels identical; probabilities to float precision (a
                // different batch size may take another kernel path).
                assert_eq!(batched["outputs"][1]["data"], alone["outputs"][1]["data"]);
                let (pb, pa) = (
                    f32s(&batched["outputs"][0]["data"]),
                    f32s(&alone["outputs"][0]["data"]),
                );
                assert_close(&pb, &pa, 1e-6, "batched vs alone");
                for (i, row) in (start..start + n).enumerate() {
                    assert_close(
                        &pb[i * 10..i * 10 + 10],
                        &d.expected_probabilities("2", row),
                        1e-5,
                        "batched vs offline",
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, st) = s.get("/v2/models/batched/stats").await;
    let m = &st["model_stats"][0];
    let requests = m["inference_stats"]["success"]["count"].as_u64().unwrap();
    let executions = m["execution_count"].as_u64().unwrap();
    assert_eq!(requests, 32 * 6);
    assert!(
        executions < requests / 2,
        "{executions} runs for {requests} requests: batching did not merge"
    );
    let (_, st) = s.get("/v2/models/alone/stats").await;
    assert_eq!(st["model_stats"][0]["execution_count"], 32 * 6);
    Arc::into_inner(s).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_different_shapes_are_not_merged_but_all_answered() {
    let s = Arc::new(TestServer::start(repo(), None).await);
    let mut tasks = Vec::new();
    for c in 0..24i64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            // Second dimension 1, 2 or 3: three incompatible shapes.
            let width = 1 + c % 3;
            let rows = 1 + c % 2;
            let n = (width * rows) as usize;
            let ints: Vec<i64> = (0..n as i64).map(|i| c * 100 + i).collect();
            let mut inputs = Vec::new();
            for (suffix, dt, value) in [
                ("bool", "BOOL", json!(vec![true; n])),
                ("uint8", "UINT8", json!(vec![1; n])),
                ("uint16", "UINT16", json!(vec![2; n])),
                ("uint32", "UINT32", json!(vec![3; n])),
                ("uint64", "UINT64", json!(vec![4; n])),
                ("int8", "INT8", json!(vec![-5; n])),
                ("int16", "INT16", json!(vec![6; n])),
                ("int32", "INT32", json!(vec![7; n])),
                ("int64", "INT64", json!(ints)),
                ("fp16", "FP16", json!(vec![0.5; n])),
                ("fp32", "FP32", json!(vec![1.5; n])),
                ("fp64", "FP64", json!(vec![2.5; n])),
                ("bytes", "BYTES", json!(vec![format!("c{c}"); n])),
            ] {
                inputs.push(json!({ "name": format!("in_{suffix}"), "shape": [rows, width], "datatype": dt, "data": value }));
            }
            let (status, r) = s.post("/v2/models/types/infer", &json!({ "inputs": inputs })).await;
            assert_eq!(status, 200, "{r}");
            let out = r["outputs"].as_array().unwrap();
            let int64 = out.iter().find(|o| o["name"] == "out_int64").unwrap();
            assert_eq!(int64["shape"], json!([rows, width]));
            assert_eq!(int64["data"], json!(ints));
            let bytes = out.iter().find(|o| o["name"] == "out_bytes").unwrap();
            assert_eq!(bytes["data"], json!(vec![format!("c{c}"); n]));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::into_inner(s).unwrap().stop().await;
}
