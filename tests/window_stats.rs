//! Per-window distribution statistics, drift against the training baseline
//! and the health report, checked against numbers this test computes itself
//! from the rows it sent and the answers it got.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// What the server must report for a list of values (finite ones for the
/// moments), computed the plain two-pass way.
struct Expected {
    count: usize,
    mean: f64,
    std: f64,
    min: f64,
    max: f64,
    sorted: Vec<f64>,
}

fn expected(values: &[f64]) -> Expected {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len() as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let var = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let mut sorted = finite.clone();
    sorted.sort_by(f64::total_cmp);
    Expected {
        count: values.len(),
        mean,
        std: var.sqrt(),
        min: sorted[0],
        max: *sorted.last().unwrap(),
        sorted,
    }
}

fn close(got: &Value, want: f64, rel: f64, what: &str) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!(
        (got - want).abs() <= rel * want.abs() + 1e-9,
        "{what}: got {got}, want {want}"
    );
}

/// Moments exactly (to rounding); quantiles within the sketch's 1 %, read
/// as the sketch reads them: the value of rank floor(q·(n−1)).
fn check_summary(s: &Value, values: &[f64], what: &str) {
    let e = expected(values);
    assert_eq!(s["count"], e.count as u64, "{what}: count");
    close(&s["mean"], e.mean, 1e-9, &format!("{what} mean"));
    close(&s["std"], e.std, 1e-9, &format!("{what} std"));
    close(&s["min"], e.min, 0.0, &format!("{what} min"));
    close(&s["max"], e.max, 0.0, &format!("{what} max"));
    for (q, key) in [(0.05, "p5"), (0.5, "median"), (0.95, "p95")] {
        let rank = (q * (e.sorted.len() - 1) as f64) as usize;
        close(&s[key], e.sorted[rank], 0.011, &format!("{what} {key}"));
    }
}

fn infer_body(rows: &[Vec<f32>]) -> Value {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({ "inputs": [{ "name": "input", "shape": [rows.len(), rows[0].len()], "datatype": "FP32", "data": data }] })
}

/// Waits (up to 20 s) for the version's closed windows to reach `n`;
/// returns window `n` (1-based).
async fn nth_window(server: &TestServer, path: &str, n: usize) -> Value {
    for _ in 0..1000 {
        let (_, v) = server.get(path).await;
        let windows = &v["model_stats"][0]["distribution"]["windows"];
        if windows.as_array().is_some_and(|w| w.len() >= n) {
            return windows[n - 1].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for statistics window {n} at {path}");
}

/// PSI and KS of rows' feature `j` against a baseline feature, as the
/// README defines them (right-closed bins, fractions floored at 1e-4).
fn drift_of(bins: &Value, values: &[f64]) -> (f64, f64) {
    let edges: Vec<f64> = bins["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_f64().unwrap())
        .collect();
    let base: Vec<f64> = bins["fractions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_f64().unwrap())
        .collect();
    let mut counts = vec![0u64; base.len()];
    for &v in values {
        let bin = edges.iter().take_while(|&&e| e < v).count();
        counts[bin] += 1;
    }
    let n = values.len() as f64;
    let mut psi = 0.0;
    for (c, b) in counts.iter().zip(&base) {
        let (w, b) = ((*c as f64 / n).max(1e-4), b.max(1e-4));
        psi += (w - b) * (w / b).ln();
    }
    let (mut cw, mut cb, mut ks) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..edges.len() {
        cw += counts[i] as f64 / n;
        cb += base[i];
        ks = ks.max((cw - cb).abs());
    }
    (psi, ks)
}

fn baseline() -> Value {
    serde_json::from_slice(&std::fs::read(root().join("models/digits/1/baseline.json")).unwrap())
        .unwrap()
}

fn column(rows: &[Vec<f32>], j: usize) -> Vec<f64> {
    rows.iter().map(|r| r[j] as f64).collect()
}

async fn digits_server(window: Duration) -> TestServer {
    TestServer::start_with(repo_with(&["digits"]), |c| {
        c.poll_interval = None;
        c.window.length = window;
    })
    .await
}

#[tokio::test]
async fn window_statistics_and_drift_match_the_rows_sent() {
    let server = digits_server(Duration::from_millis(1500)).await;
    let digits = Digits::load();
    let rows = &digits.features;
    let mut probabilities: Vec<Vec<f64>> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    for chunk in rows.chunks(60) {
        let (status, out) = server
            .post("/v2/models/digits/versions/1/infer", &infer_body(chunk))
            .await;
        assert_eq!(status, 200, "{out}");
        for o in out["outputs"].as_array().unwrap() {
            // FP32 on the wire as its shortest decimal: back to f32 first.
            let values: Vec<f64> = o["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32 as f64)
                .collect();
            match o["name"].as_str().unwrap() {
                "probabilities" => probabilities.extend(values.chunks(10).map(<[f64]>::to_vec)),
                "label" => labels.extend(values.iter().map(|&v| v as i64)),
                other => panic!("unexpected output {other}"),
            }
        }
    }
    let w = nth_window(&server, "/v2/models/digits/versions/1/stats", 1).await;

    assert_eq!(w["requests"], 6);
    assert_eq!(w["failed"], 0);
    close(
        &w["qps"],
        6.0 / w["duration_seconds"].as_f64().unwrap(),
        1e-12,
        "qps",
    );
    assert!(w["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    assert!(w["latency_us"]["p99"].as_f64() >= w["latency_us"]["p50"].as_f64());

    // Inputs: the whole tensor and every feature.
    let input = &w["inputs"][0];
    assert_eq!(input["name"], "input");
    assert_eq!(input["rows"], 360);
    assert_eq!(input["missing"], 0);
    let all: Vec<f64> = rows.iter().flatten().map(|&v| v as f64).collect();
    check_summary(input, &all, "input");
    assert_eq!(input["features"].as_array().unwrap().len(), 64);
    for j in 0..64 {
        // Constant features have no spread to compare quantiles on, but the
        // same checks hold.
        check_summary(
            &input["features"][j],
            &column(rows, j),
            &format!("input[{j}]"),
        );
    }

    // Outputs: what the server answered, summarised.
    let probs = &w["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap()
        .clone();
    let flat: Vec<f64> = probabilities.iter().flatten().copied().collect();
    check_summary(probs, &flat, "probabilities");
    for k in 0..10 {
        let col: Vec<f64> = probabilities.iter().map(|r| r[k]).collect();
        check_summary(&probs["features"][k], &col, &format!("probabilities[{k}]"));
    }
    let mut argmax = std::collections::BTreeMap::<String, u64>::new();
    for r in &probabilities {
        let k = (0..10).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap();
        *argmax.entry(k.to_string()).or_default() += 1;
    }
    assert_eq!(probs["predicted_class"], json!(argmax));
    let label = w["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap()
        .clone();
    let mut by_label = std::collections::BTreeMap::<String, u64>::new();
    for l in &labels {
        *by_label.entry(l.to_string()).or_default() += 1;
    }
    assert_eq!(label["predicted_class"], json!(by_label));

    // Drift of the held-out sample against the training baseline: low.
    let base = baseline();
    let drift = &w["drift"];
    assert_eq!(drift["rows"], 360);
    let features = drift["features"].as_array().unwrap();
    assert_eq!(features.len(), 64);
    let (mut psi_max, mut ks_max) = (0.0f64, 0.0f64);
    for f in features {
        let j = f["feature"].as_u64().unwrap() as usize;
        let (psi, ks) = drift_of(&base["inputs"]["input"]["features"][j], &column(rows, j));
        close(&f["psi"], psi, 1e-9, &format!("psi[{j}]"));
        close(&f["ks"], ks, 1e-9, &format!("ks[{j}]"));
        psi_max = psi_max.max(psi);
        ks_max = ks_max.max(ks);
    }
    close(&drift["psi_max"], psi_max, 1e-12, "psi_max");
    close(&drift["ks_max"], ks_max, 1e-12, "ks_max");
    assert!(
        psi_max < 0.25 && ks_max < 0.2,
        "held-out rows look drifted: {psi_max} {ks_max}"
    );
    assert_eq!(drift["drifted"], false);

    let (status, health) = server.get("/v2/models/digits/versions/1/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["input_data"]["verdict"], "ok", "{health}");
    assert_eq!(health["pipeline"]["verdict"], "ok", "{health}");
    assert_eq!(health["verdict"], "ok", "{health}");

    // Shifted rows (inverted images): the same checks, and the flag rises.
    let inverted: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| r.iter().map(|v| 16.0 - v).collect())
        .collect();
    for chunk in inverted.chunks(60) {
        let (status, out) = server
            .post("/v2/models/digits/versions/1/infer", &infer_body(chunk))
            .await;
        assert_eq!(status, 200, "{out}");
    }
    let w = nth_window(&server, "/v2/models/digits/versions/1/stats", 2).await;
    let drift = &w["drift"];
    let mut psi_max = 0.0f64;
    for f in drift["features"].as_array().unwrap() {
        let j = f["feature"].as_u64().unwrap() as usize;
        let (psi, ks) = drift_of(
            &base["inputs"]["input"]["features"][j],
            &column(&inverted, j),
        );
        close(&f["psi"], psi, 1e-9, &format!("shifted psi[{j}]"));
        close(&f["ks"], ks, 1e-9, &format!("shifted ks[{j}]"));
        psi_max = psi_max.max(psi);
    }
    close(&drift["psi_max"], psi_max, 1e-12, "shifted psi_max");
    assert!(psi_max > 0.25);
    assert_eq!(drift["drifted"], true);
    let (_, health) = server.get("/v2/models/digits/versions/1/health").await;
    assert_eq!(health["input_data"]["verdict"], "fail", "{health}");
    assert_eq!(health["input_data"]["drift"]["drifted"], true);
    assert_eq!(health["verdict"], "fail");
    server.stop().await;
}

#[tokio::test]
async fn nan_inf_missing_and_failures_are_counted() {
    let server = TestServer::start_with(repo_with(&["tiny"]), |c| {
        c.poll_interval = None;
        c.window.length = Duration::from_millis(800);
    })
    .await;
    let mut values: Vec<f32> = (0..48).map(|i| i as f32 / 4.0).collect();
    values[3] = f32::NAN;
    values[17] = f32::INFINITY;
    values[40] = f32::NEG_INFINITY;
    // JSON has no NaN: send binary.
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = serde_json::to_vec(&json!({
        "inputs": [{ "name": "input", "shape": [3, 16], "datatype": "FP32", "parameters": { "binary_data_size": bytes.len() } }],
        "outputs": [{ "name": "output", "parameters": { "binary_data": true } }]
    }))
    .unwrap();
    let mut body = header.clone();
    body.extend_from_slice(&bytes);
    let r = server
        .client
        .post(server.url("/v2/models/tiny/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // A request without its input.
    let (status, _) = server
        .post("/v2/models/tiny/infer", &json!({ "inputs": [] }))
        .await;
    assert_eq!(status, 400);

    let w = nth_window(&server, "/v2/models/tiny/versions/1/stats", 1).await;
    assert_eq!(w["requests"], 2);
    assert_eq!(w["failed"], 1);
    assert_eq!(w["failures"], json!({ "invalid_argument": 1 }));
    let input = &w["inputs"][0];
    assert_eq!(input["missing"], 1);
    assert_eq!(
        (input["nan"].clone(), input["inf"].clone()),
        (json!(1), json!(2))
    );
    let as64: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    check_summary(input, &as64, "tiny input");
    // 16 features, each with its own NaN/Inf count.
    assert_eq!(input["features"][3]["nan"], 1);
    assert_eq!(input["features"][1]["inf"], 1);
    assert_eq!(input["features"][8]["inf"], 1);
    let output = &w["outputs"][0];
    assert_eq!(
        (output["nan"].clone(), output["inf"].clone()),
        (json!(1), json!(2))
    );
    assert!(w.get("drift").is_none(), "tiny has no baseline");

    let (_, health) = server.get("/v2/models/tiny/health").await;
    // One failed request of two: over the 5 % fail threshold.
    assert_eq!(health["pipeline"]["verdict"], "fail", "{health}");
    assert_eq!(health["pipeline"]["error_rate"], 0.5);
    assert_eq!(health["input_data"]["verdict"], "warn", "{health}");
    close(
        &health["input_data"]["nan_rate"],
        1.0 / 48.0,
        1e-12,
        "nan_rate",
    );
    close(
        &health["input_data"]["missing_rate"],
        0.5,
        1e-12,
        "missing_rate",
    );
    assert_eq!(health["verdict"], "fail");
    server.stop().await;
}

/// The server's clock closes windows and keeps the last N. One request a
/// round (of round + 1 rows), sent only once the last window closed, so no
/// round can straddle two windows however slow the machine; the window
/// lengths themselves are checked exactly in `window`'s unit tests, on a
/// clock the test drives.
#[tokio::test]
async fn windows_roll_and_only_the_last_n_are_kept() {
    let repo = repo_with(&["tiny"]);
    std::fs::write(
        repo.path().join("tiny/config.toml"),
        "[stats]\nwindow = \"300ms\"\nkeep = 2\nmax_features = 4\n",
    )
    .unwrap();
    let server = TestServer::start(repo, None).await;
    let distribution = || async {
        let (_, stats) = server.get("/v2/models/tiny/versions/1/stats").await;
        stats["model_stats"][0]["distribution"].clone()
    };
    for round in 0..4usize {
        let rows = round + 1;
        let body = json!({ "inputs": [{ "name": "input", "shape": [rows, 16], "datatype": "FP32", "data": vec![1.0; 16 * rows] }] });
        assert_eq!(server.post("/v2/models/tiny/infer", &body).await.0, 200);
        // The clock closes it once it is 300 ms old.
        server
            .wait_for(&format!("window {round} to close"), || async {
                let d = distribution().await;
                d["open_for_seconds"].is_null()
                    && d["windows"]
                        .as_array()
                        .unwrap()
                        .last()
                        .map(|w| w["inputs"][0]["rows"].clone())
                        == Some(json!(rows))
            })
            .await;
    }
    let d = distribution().await;
    assert_eq!(d["window_seconds"], 0.3);
    assert_eq!(d["windows_kept"], 2);
    let windows = d["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{d}");
    // The last two rounds, oldest first: one request each, of 3 then 4 rows.
    assert_eq!(windows[0]["requests"], 1);
    assert_eq!(windows[0]["inputs"][0]["rows"], 3);
    assert_eq!(windows[1]["requests"], 1);
    assert_eq!(windows[1]["inputs"][0]["rows"], 4);
    assert!(windows[1]["duration_seconds"].as_f64().unwrap() >= 0.3);
    assert_eq!(
        windows[1]["inputs"][0]["features"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert!(windows[0]["end"].as_str() <= windows[1]["start"].as_str());
    server.stop().await;
}

#[tokio::test]
async fn statistics_off_health_says_so_and_grpc_carries_the_windows() {
    let server = TestServer::start_with(repo_with(&["tiny"]), |c| {
        c.poll_interval = None;
        c.window.length = Duration::ZERO;
    })
    .await;
    let (_, stats) = server.get("/v2/models/tiny/stats").await;
    assert_eq!(stats["model_stats"][0]["distribution"], Value::Null);
    let (_, health) = server.get("/v2/models/tiny/health").await;
    assert_eq!(health["pipeline"]["verdict"], "warn");
    assert!(health["pipeline"]["reason"]
        .as_str()
        .unwrap()
        .contains("off"));
    server.stop().await;

    let server = digits_server(Duration::from_millis(500)).await;
    let digits = Digits::load();
    assert_eq!(
        server
            .post(
                "/v2/models/digits/versions/2/infer",
                &infer_body(&digits.features[..5])
            )
            .await
            .0,
        200
    );
    let http = nth_window(&server, "/v2/models/digits/versions/2/stats", 1).await;
    let mut grpc = server.grpc_client().await;
    let r = grpc
        .model_statistics(infergate::grpc::pb::ModelStatisticsRequest {
            name: "digits".into(),
            version: "2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let d: Value = serde_json::from_str(&r.model_stats[0].distribution_json).unwrap();
    assert_eq!(d["windows"][0], http);
    assert_eq!(d["windows"][0]["inputs"][0]["rows"], 5);
    server.stop().await;
}

#[tokio::test]
async fn health_reports_stale_and_mis_deployed_models() {
    let repo = repo_with(&["digits"]);
    let config = std::fs::read_to_string(repo.path().join("digits/config.toml")).unwrap();
    std::fs::write(
        repo.path().join("digits/config.toml"),
        format!("{config}\n[health]\nmax_age_days = 0.00001\n"),
    )
    .unwrap();
    // Version 3 is on disk but broken: the deployment answer warns.
    std::fs::create_dir_all(repo.path().join("digits/3")).unwrap();
    std::fs::write(repo.path().join("digits/3/model.onnx"), b"not a model").unwrap();
    let server = TestServer::start(repo, None).await;
    let (status, health) = server.get("/v2/models/digits/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["version"], "2");
    assert_eq!(health["staleness"]["verdict"], "fail", "{health}");
    assert!(health["staleness"]["age_days"].as_f64().unwrap() > 0.00001);
    assert_eq!(health["deployment"]["verdict"], "warn", "{health}");
    assert!(health["deployment"]["reason"]
        .as_str()
        .unwrap()
        .contains("version 3"));
    assert!(health["deployment"]["unavailable"]["3"].is_string());
    // Where requests go and what else the page needs to know.
    assert_eq!(health["deployment"]["primary"], "2");
    assert_eq!(health["deployment"]["shadow"], Value::Null);
    assert_eq!(health["deployment"]["feedback"], true);
    let (_, older) = server.get("/v2/models/digits/versions/1/health").await;
    assert_eq!(older["deployment"]["primary"], "2");
    assert_eq!(
        older["deployment"]["reason"],
        "version 3 is on disk but failed to load; requests without a version go to version 2"
    );
    let meta = server.get("/v2/models/digits/versions/2").await.1;
    assert_eq!(health["deployment"]["sha256"], meta["parameters"]["sha256"]);
    assert_eq!(health["verdict"], "fail");
    assert_eq!(server.get("/v2/models/nope/health").await.0, 404);
    assert_eq!(
        server
            .client
            .post(server.url("/v2/models/digits/health"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    server.stop().await;
}

#[tokio::test]
async fn a_broken_baseline_fails_the_load_with_its_reason() {
    let repo = repo_with(&["digits"]);
    std::fs::write(
        repo.path().join("digits/2/baseline.json"),
        r#"{"inputs":{"input":{"features":[{"edges":[1.0,0.5],"fractions":[0.2,0.3,0.5]}]}}}"#,
    )
    .unwrap();
    std::fs::write(
        repo.path().join("digits/1/baseline.json"),
        r#"{"inputs":{"pixels":{"features":[]}}}"#,
    )
    .unwrap();
    let server = TestServer::start(repo, None).await;
    let v2 = server.index_row("digits", "2").await.unwrap();
    assert_eq!(v2["state"], "UNAVAILABLE");
    assert!(
        v2["reason"]
            .as_str()
            .unwrap()
            .contains("strictly increasing"),
        "{v2}"
    );
    let v1 = server.index_row("digits", "1").await.unwrap();
    assert_eq!(v1["state"], "UNAVAILABLE");
    assert!(v1["reason"].as_str().unwrap().contains("'pixels'"), "{v1}");
    server.stop().await;
}
