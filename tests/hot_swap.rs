//! Hot-swap under load: while 16 clients send requests without pause,
//! version 2 is added, then removed, then a corrupt version 3 is added. Not
//! one request may fail, every answer must be right for the version that
//! gave it, answers move to v2 and back to v1, and v3 never answers.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_swap_under_load_without_a_failed_request() {
    // digits with the default policy, latest(1), and only version 1 at first.
    let repo = tempfile::tempdir().unwrap();
    let digits = repo.path().join("digits");
    copy_dir(&model_source("digits").join("1"), &digits.join("1"));
    let s = Arc::new(TestServer::start(repo, Some(Duration::from_millis(100))).await);
    let d = Arc::new(Digits::load());

    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (s, d, stop, log, failures) = (
            s.clone(),
            d.clone(),
            stop.clone(),
            log.clone(),
            failures.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let row = i % d.features.len();
                i += CLIENTS;
                let body = json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": d.features[row] }] });
                let (status, r) = s.post("/v2/models/digits/infer", &body).await;
                if status != 200 {
                    failures.lock().unwrap().push(format!("{status}: {r}"));
                    continue;
                }
                let version = r["model_version"].as_str().unwrap().to_string();
                if version == "1" || version == "2" {
                    let label = r["outputs"][1]["data"][0].as_i64().unwrap();
                    let probs = f32s(&r["outputs"][0]["data"]);
                    let want = d.expected_probabilities(&version, row);
                    let close = probs.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5);
                    if label != d.expected_label(&version, row) || !close {
                        failures.lock().unwrap().push(format!("wrong answer from v{version} for row {row}"));
                    }
                }
                log.lock().unwrap().push(version);
            }
        }));
    }

    // The last `n` answers all came from `version`.
    let tail_is = |n: usize, version: &'static str| {
        let log = log.clone();
        move || {
            let log = log.clone();
            async move {
                let log = log.lock().unwrap();
                log.len() >= n && log[log.len() - n..].iter().all(|v| v == version)
            }
        }
    };

    s.wait_for("answers from v1", tail_is(200, "1")).await;

    // Add v2 atomically (a rename), as a deployment tool would.
    copy_dir(
        &model_source("digits").join("2"),
        &digits.join(".incoming-2"),
    );
    std::fs::rename(digits.join(".incoming-2"), digits.join("2")).unwrap();
    s.wait_for("answers from v2", tail_is(200, "2")).await;

    // Remove v2: v1 is loaded again before v2 stops answering.
    std::fs::rename(digits.join("2"), digits.join(".removed-2")).unwrap();
    std::fs::remove_dir_all(digits.join(".removed-2")).unwrap();
    s.wait_for("answers from v1 again", tail_is(200, "1")).await;

    // A corrupt v3 is refused; v1 keeps answering.
    std::fs::create_dir_all(digits.join(".incoming-3")).unwrap();
    std::fs::write(
        digits.join(".incoming-3/model.onnx"),
        b"\x08\x07 definitely not a protobuf graph",
    )
    .unwrap();
    std::fs::rename(digits.join(".incoming-3"), digits.join("3")).unwrap();
    s.wait_for("v3 listed as UNAVAILABLE", || async {
        s.index_row("digits", "3")
            .await
            .is_some_and(|r| r["state"] == "UNAVAILABLE")
    })
    .await;
    let seen = log.lock().unwrap().len();
    s.wait_for("more answers after v3", || {
        let log = log.clone();
        async move { log.lock().unwrap().len() >= seen + 300 }
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert!(
        !log.iter().any(|v| v == "3"),
        "the corrupt version answered"
    );
    let v2 = log.iter().filter(|v| *v == "2").count();
    assert!(v2 >= 200, "v2 answered {v2} times");
    assert_eq!(log.last().unwrap(), "1");
    let row = s.index_row("digits", "3").await.unwrap();
    assert!(!row["reason"].as_str().unwrap().is_empty());
    eprintln!("{} requests, {} from v2, none failed", log.len(), v2);
    Arc::into_inner(s).unwrap().stop().await;
}
