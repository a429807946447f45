//! Shadow traffic and on-demand comparison: the reported agreement,
//! confusion matrix and differences equal what this test computes by
//! running both versions itself on the same rows.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn body(rows: &[Vec<f32>]) -> Value {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({ "inputs": [{ "name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": data }] })
}

/// Labels and probabilities (as f64 of the f32 on the wire) of an answer.
fn outputs(v: &Value) -> (Vec<i64>, Vec<f64>) {
    let mut labels = Vec::new();
    let mut probs = Vec::new();
    for o in v["outputs"].as_array().unwrap() {
        let data = o["data"].as_array().unwrap();
        match o["name"].as_str().unwrap() {
            "label" => labels.extend(data.iter().map(|x| x.as_i64().unwrap())),
            "probabilities" => probs.extend(data.iter().map(|x| x.as_f64().unwrap() as f32 as f64)),
            _ => {}
        }
    }
    (labels, probs)
}

#[tokio::test]
async fn shadow_comparison_equals_running_both_versions() {
    let server = TestServer::start(repo_with(&["digits"]), None).await;
    let (status, v) = server
        .post(
            "/v2/models/digits/shadow",
            &json!({ "version": 1, "sample_rate": 1.0 }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["target"], json!({ "version": 1 }));
    // The health report says where the traffic is mirrored.
    let (_, health) = server.get("/v2/models/digits/health").await;
    assert_eq!(health["deployment"]["shadow"], "version 1");
    let digits = Digits::load();
    let mut primary = (Vec::new(), Vec::new());
    for chunk in digits.features.chunks(10) {
        let (status, v) = server.post("/v2/models/digits/infer", &body(chunk)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["model_version"], "2", "the primary answers");
        let (l, p) = outputs(&v);
        primary.0.extend(l);
        primary.1.extend(p);
    }
    // The same rows on version 1, asked for by the test itself.
    let mut shadow = (Vec::new(), Vec::new());
    for chunk in digits.features.chunks(10) {
        let (_, v) = server
            .post("/v2/models/digits/versions/1/infer", &body(chunk))
            .await;
        let (l, p) = outputs(&v);
        shadow.0.extend(l);
        shadow.1.extend(p);
    }
    let report = shadow_report(&server, 36).await;
    let c = &report["cumulative"];
    assert_eq!(
        (c["compared"].clone(), c["errors"].clone()),
        (json!(36), json!(0))
    );
    assert_eq!(report["dropped"], 0);

    let agree = primary
        .0
        .iter()
        .zip(&shadow.0)
        .filter(|(a, b)| a == b)
        .count();
    let mut confusion: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (a, b) in primary.0.iter().zip(&shadow.0) {
        *confusion
            .entry(a.to_string())
            .or_default()
            .entry(b.to_string())
            .or_default() += 1;
    }
    let label = &c["outputs"]["label"];
    assert_eq!(label["rows"], 360);
    assert_eq!(label["agreement"].as_f64().unwrap(), agree as f64 / 360.0);
    assert_eq!(label["confusion"], json!(confusion));
    assert_eq!(agree, 360 - 11, "v1 and v2 disagree on 11 held-out rows");
    // Probabilities: same argmax as the label, and the mean/max absolute difference.
    let probs = &c["outputs"]["probabilities"];
    assert_eq!(probs["agreement"], label["agreement"]);
    assert_eq!(probs["count"], 3600);
    let diffs: Vec<f64> = primary
        .1
        .iter()
        .zip(&shadow.1)
        .map(|(a, b)| (a - b).abs())
        .collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let max = diffs.iter().cloned().fold(0.0, f64::max);
    assert!(
        (probs["mean_abs_diff"].as_f64().unwrap() - mean).abs() < 1e-9 * mean.max(1.0),
        "{probs} vs {mean}"
    );
    assert_eq!(probs["max_abs_diff"].as_f64().unwrap(), max);
    assert!(c["latency_us"]["primary_p50"].as_f64().unwrap() > 0.0);
    assert!(c["latency_us"]["shadow_p99"].as_f64().unwrap() > 0.0);

    // Requests naming a version are not mirrored: a mirror takes its slot
    // before the primary answers, so once the answer is here a mirror
    // would be in flight or counted; and a request without a version
    // right after is mirrored (the shadow still samples).
    let (status, _) = server
        .post(
            "/v2/models/digits/versions/2/infer",
            &body(&digits.features[..1]),
        )
        .await;
    assert_eq!(status, 200);
    let again = settled(&server).await;
    assert_eq!(again["cumulative"]["compared"], 36, "{again}");
    server
        .post("/v2/models/digits/infer", &body(&digits.features[..1]))
        .await;
    let again = settled(&server).await;
    assert_eq!(again["cumulative"]["compared"], 37, "{again}");

    // Promote without a version (here: without a body at all): the
    // shadow's version serves, the shadow stops.
    let r = server
        .client
        .post(server.url("/v2/models/digits/promote"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!((status, v["primary"].clone()), (200, json!("1")), "{v}");
    assert_eq!(server.get("/v2/models/digits/shadow").await.0, 409);
    let (_, v) = server
        .post("/v2/models/digits/infer", &body(&digits.features[..1]))
        .await;
    assert_eq!(v["model_version"], "1");
    server.stop().await;
}

#[tokio::test]
async fn a_shadow_version_is_loaded_for_the_purpose_and_overload_drops() {
    let repo = repo_with(&["digits"]);
    let config = std::fs::read_to_string(repo.path().join("digits/config.toml")).unwrap();
    std::fs::write(
        repo.path().join("digits/config.toml"),
        config.replace(
            "version_policy = \"all\"",
            "version_policy = { specific = [2] }",
        ),
    )
    .unwrap();
    let server = TestServer::start(repo, None).await;
    assert!(
        server.index_row("digits", "1").await.is_none(),
        "v1 is not loaded by the policy"
    );
    let (status, v) = server
        .post(
            "/v2/models/digits/shadow",
            &json!({ "version": "1", "max_inflight": 1 }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        server.index_row("digits", "1").await.unwrap()["state"],
        "READY"
    );

    // 16 clients at once with one shadow slot: some mirrors are dropped,
    // every primary request succeeds, from version 2.
    let digits = Digits::load();
    let mut tasks = Vec::new();
    for c in 0..16 {
        let (client, url) = (server.client.clone(), server.url("/v2/models/digits/infer"));
        let b = body(&digits.features[c * 10..c * 10 + 10]);
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for _ in 0..20 {
                let r = client.post(&url).json(&b).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                versions.push(v["model_version"].as_str().unwrap().to_string());
            }
            versions
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().iter().all(|v| v == "2"));
    }
    let report = settled(&server).await;
    let (compared, dropped) = (
        report["cumulative"]["compared"].as_u64().unwrap(),
        report["dropped"].as_u64().unwrap(),
    );
    assert_eq!(compared + dropped, 320, "{report}");
    assert!(dropped > 0, "{report}");
    assert_eq!(report["inflight"], 0);

    // Stopping returns the final report; the pinned version stays loaded.
    let (status, v) = server
        .client
        .delete(server.url("/v2/models/digits/shadow"))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(status, 200);
    let v: Value = v.json().await.unwrap();
    assert_eq!(v["cumulative"]["compared"].as_u64().unwrap(), compared);
    assert_eq!(server.get("/v2/models/digits/shadow").await.0, 409);
    server.stop().await;
}

#[tokio::test]
async fn compare_runs_both_and_a_shadow_may_be_another_model() {
    let repo = repo_with(&["digits"]);
    copy_dir(
        &repo.path().join("digits"),
        &repo.path().join("digits_copy"),
    );
    std::fs::remove_dir_all(repo.path().join("digits_copy/2")).unwrap();
    let server = TestServer::start(repo, None).await;
    let digits = Digits::load();
    let rows = &digits.features[..20];
    let (status, v) = server
        .post("/v2/models/digits/compare?version=1", &body(rows))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["primary"]["model_version"].clone(),
            v["candidate"]["model_version"].clone()
        ),
        (json!("2"), json!("1"))
    );
    let ((la, pa), (lb, pb)) = (outputs(&v["primary"]), outputs(&v["candidate"]));
    let agree = la.iter().zip(&lb).filter(|(a, b)| a == b).count();
    assert_eq!(
        v["differences"]["label"]["agreement"].as_f64().unwrap(),
        agree as f64 / 20.0
    );
    let max = pa
        .iter()
        .zip(&pb)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert_eq!(
        v["differences"]["probabilities"]["max_abs_diff"]
            .as_f64()
            .unwrap(),
        max
    );
    // No shadow and no version: nothing to compare with.
    assert_eq!(
        server
            .post("/v2/models/digits/compare", &body(rows))
            .await
            .0,
        400
    );

    // A shadow on another model with the same inputs (its version 1).
    let (status, v) = server
        .post(
            "/v2/models/digits/shadow",
            &json!({ "model": "digits_copy" }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = server.post("/v2/models/digits/compare", &body(rows)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["candidate"]["model_name"], "digits_copy");
    for chunk in digits.features.chunks(60) {
        assert_eq!(
            server.post("/v2/models/digits/infer", &body(chunk)).await.0,
            200
        );
    }
    let report = shadow_report(&server, 6).await;
    assert_eq!(
        report["cumulative"]["outputs"]["label"]["agreement"]
            .as_f64()
            .unwrap(),
        349.0 / 360.0
    );

    // Mistakes: the primary as its own shadow, unknown targets, other inputs.
    for (b, status) in [
        (json!({ "version": 2 }), 400),
        (json!({ "version": 7 }), 404),
        (json!({ "model": "nope" }), 404),
        (json!({}), 400),
        (json!({ "version": 1, "sample_rate": 2.0 }), 400),
    ] {
        assert_eq!(
            server.post("/v2/models/digits/shadow", &b).await.0,
            status,
            "{b}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_shadow_can_start_from_config_toml() {
    let repo = repo_with(&["digits"]);
    let path = repo.path().join("digits/config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "{}\n[shadow]\nversion = 1\nsample_rate = 0.5\n",
            config.replace(
                "version_policy = \"all\"",
                "version_policy = { latest = 1 }"
            )
        ),
    )
    .unwrap();
    let server = TestServer::start(repo, Some(Duration::from_millis(200))).await;
    // Version 1 is loaded for the shadow although the policy keeps only 2.
    assert_eq!(
        server.index_row("digits", "1").await.unwrap()["state"],
        "READY"
    );
    let digits = Digits::load();
    for chunk in digits.features.chunks(10) {
        let (_, v) = server.post("/v2/models/digits/infer", &body(chunk)).await;
        assert_eq!(v["model_version"], "2");
    }
    // Half of 36 requests, evenly.
    let report = shadow_report(&server, 18).await;
    assert_eq!(report["sample_rate"], 0.5);
    // And no more than half.
    let report = settled(&server).await;
    assert_eq!(report["cumulative"]["compared"], 18);
    // Stopped through the API, it stays stopped across polls.
    assert_eq!(
        server
            .client
            .delete(server.url("/v2/models/digits/shadow"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.next_poll().await;
    assert_eq!(server.get("/v2/models/digits/shadow").await.0, 409);
    server.stop().await;
}

#[tokio::test]
async fn a_heavy_shadow_under_load_drops_mirrors_and_fails_no_request() {
    let repo = repo_with(&["digits"]);
    copy_dir(
        &root().join("tests/models/digits_heavy"),
        &repo.path().join("digits_heavy"),
    );
    let server = TestServer::start(repo, None).await;
    let (status, v) = server
        .post(
            "/v2/models/digits/shadow",
            &json!({ "model": "digits_heavy", "sample_rate": 1.0, "max_inflight": 4 }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let digits = Digits::load();
    let mut tasks = Vec::new();
    for c in 0..16 {
        let (client, url) = (server.client.clone(), server.url("/v2/models/digits/infer"));
        let b = body(&digits.features[c * 4..c * 4 + 4]);
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let r = client.post(&url).json(&b).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["model_version"], "2");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every sampled request was either compared or dropped, none waited for.
    let mut report = Value::Null;
    for _ in 0..1000 {
        report = server.get("/v2/models/digits/shadow").await.1;
        if report["inflight"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let compared = report["cumulative"]["compared"].as_u64().unwrap();
    let dropped = report["dropped"].as_u64().unwrap();
    assert_eq!(compared + dropped, 400, "{report}");
    assert!(dropped > 0, "a shadow this slow must shed load: {report}");
    assert_eq!(report["cumulative"]["errors"], 0);
    // Random weights: the heavy model disagrees with digits most of the time.
    assert!(
        report["cumulative"]["outputs"]["label"]["agreement"]
            .as_f64()
            .unwrap()
            < 0.5
    );
    server.stop().await;
}
