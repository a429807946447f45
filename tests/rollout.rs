//! The deployment gate, promote and rollback, and the control token: a
//! version that fails its checks never serves, and switching versions
//! under load fails no request.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Puts a version folder in place whole (built aside, then renamed).
fn drop_version(repo: &std::path::Path, version: u64, model_file: &std::path::Path) {
    let staging = repo.join(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(model_file, staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.join("digits").join(version.to_string())).unwrap();
}

/// Waits (up to 20 s) for a version to appear in the index; its row.
async fn judged(server: &TestServer, version: &str) -> Value {
    for _ in 0..1000 {
        if let Some(row) = server.index_row("digits", version).await {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("version {version} never appeared in the index");
}

/// One held-out row, no version named: (status, answer).
async fn infer_one(server: &TestServer) -> (u16, Value) {
    let row = &Digits::load().features[..1];
    server.post("/v2/models/digits/infer", &body(row)).await
}

fn body(rows: &[Vec<f32>]) -> Value {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({ "inputs": [{ "name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": data }] })
}

/// Clients sending held-out rows without a version, each answer checked
/// against `expected(phase)` when the request began and ended within one
/// phase (odd phases are switches in progress: either version may answer).
struct Load {
    failures: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    wrong: Arc<AtomicU64>,
    phase: Arc<AtomicU64>,
    stop: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(server: &TestServer, clients: usize, expected: fn(u64) -> &'static str) -> Load {
        let digits = Digits::load();
        let load = Load {
            failures: Arc::default(),
            answered: Arc::default(),
            wrong: Arc::default(),
            phase: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (client, url) = (server.client.clone(), server.url("/v2/models/digits/infer"));
            let row = digits.features[c % digits.features.len()].clone();
            let (failures, answered, wrong, phase, stop) = (
                load.failures.clone(),
                load.answered.clone(),
                load.wrong.clone(),
                load.phase.clone(),
                load.stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while stop.load(Ordering::Relaxed) == 0 {
                    let before = phase.load(Ordering::SeqCst);
                    let r = client
                        .post(&url)
                        .json(&body(std::slice::from_ref(&row)))
                        .send()
                        .await;
                    let after = phase.load(Ordering::SeqCst);
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let v: Value = r.json().await.unwrap();
                            answered.fetch_add(1, Ordering::Relaxed);
                            if before == after
                                && before % 2 == 0
                                && v["model_version"] != expected(before)
                            {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        Load { tasks, ..load }
    }

    /// Waits (up to 20 s) until `n` more answers have come in: the load
    /// really ran through the phase, whatever the machine's speed.
    async fn answers(&self, n: u64) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        for _ in 0..2000 {
            if self.answered.load(Ordering::Relaxed) >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} answers in 20 s");
    }

    async fn finish(self) -> (u64, u64, u64) {
        self.stop.store(1, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test]
async fn the_gate_refuses_a_random_version_while_the_serving_one_keeps_answering() {
    let server = TestServer::start(repo_with(&["digits"]), Some(Duration::from_millis(200))).await;
    let load = Load::start(&server, 16, |_| "2");
    load.answers(50).await;
    drop_version(
        server.repo.path(),
        3,
        &root().join("tests/models/digits_random/model.onnx"),
    );
    let row = judged(&server, "3").await;
    // Traffic goes on after the refusal too.
    load.answers(50).await;
    let (answered, failures, wrong) = load.finish().await;
    assert_eq!(row["state"], "FAILED", "{row}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("deployment gate failed on 360 validation rows"),
        "{reason}"
    );
    assert!(reason.contains("< min_accuracy 0.9"), "{reason}");
    assert!(answered >= 100, "only {answered} answers");
    assert_eq!((failures, wrong), (0, 0), "{answered} answered");
    // Still version 2, and the health report says a newer version failed.
    let (status, v) = infer_one(&server).await;
    assert_eq!((status, v["model_version"].clone()), (200, json!("2")));
    let (_, health) = server.get("/v2/models/digits/health").await;
    assert_eq!(health["deployment"]["verdict"], "warn", "{health}");
    assert!(health["deployment"]["unavailable"]["3"]
        .as_str()
        .unwrap()
        .contains("gate"));
    // Addressed directly, the failed version says why it does not serve.
    let (status, v) = server
        .post(
            "/v2/models/digits/versions/3/infer",
            &body(&Digits::load().features[..1]),
        )
        .await;
    assert_eq!(status, 503);
    assert!(v["error"].as_str().unwrap().contains("min_accuracy"), "{v}");
    server.stop().await;
}

#[tokio::test]
async fn the_gate_compares_with_the_serving_version_and_checks_latency() {
    let repo = repo_with(&["digits"]);
    let config_path = repo.path().join("digits/config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace("max_accuracy_drop = 0.05", "max_accuracy_drop = 0.01"),
    )
    .unwrap();
    // Only version 2 serves at first; then version 1's file comes back as 3.
    std::fs::remove_dir_all(repo.path().join("digits/1")).unwrap();
    let server = TestServer::start(repo, Some(Duration::from_millis(200))).await;
    drop_version(
        server.repo.path(),
        3,
        &root().join("models/digits/1/model.onnx"),
    );
    let row = judged(&server, "3").await;
    assert_eq!(row["state"], "FAILED", "{row}");
    let reason = row["reason"].as_str().unwrap();
    // v1 scores 0.9556 on the held-out sample, v2 0.9833.
    assert!(
        reason.contains(
            "accuracy 0.9556 is 0.0278 below the serving version's 0.9833 (max_accuracy_drop 0.01)"
        ),
        "{reason}"
    );
    server.stop().await;

    // A latency budget nothing can meet.
    let repo = repo_with(&["digits"]);
    let config_path = repo.path().join("digits/config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace(TEST_P99_BUDGET, "max_p99_ms = 0.000001"),
    )
    .unwrap();
    let server = TestServer::start(repo, None).await;
    let row = server.index_row("digits", "2").await.unwrap();
    assert_eq!(row["state"], "FAILED", "{row}");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("ms > max_p99_ms 0.000001"),
        "{row}"
    );
    server.stop().await;
}

/// The one-row latency budget itself, on a deliberately slow model: the
/// heavy digits network (about 4 M multiply-adds a row, 16 passes over a
/// 1 MiB matrix) cannot run a row in 50 µs on any machine this runs on,
/// while a slow moment only makes it slower: a refusal that cannot flake.
#[tokio::test]
async fn the_latency_budget_refuses_a_slow_model() {
    let repo = repo_with(&["digits_heavy"]);
    let dir = repo.path().join("digits_heavy");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(
        root().join("models/digits/data/heldout.json"),
        dir.join("data/heldout.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "[gate]\nvalidation = \"data/heldout.json\"\ninput = \"input\"\noutput = \"label\"\nmax_p99_ms = 0.05\n",
    )
    .unwrap();
    let server = TestServer::start(repo, None).await;
    let row = server.index_row("digits_heavy", "1").await.unwrap();
    assert_eq!(row["state"], "FAILED", "{row}");
    let reason = row["reason"].as_str().unwrap();
    let p99: f64 = reason
        .split("p99 latency ")
        .nth(1)
        .and_then(|r| r.split(" ms > max_p99_ms 0.05").next())
        .unwrap_or_else(|| panic!("{reason}"))
        .parse()
        .unwrap();
    assert!(p99 > 0.05, "{reason}");
    // Nothing but the budget failed (no accuracy threshold is set).
    assert!(!reason.contains("accuracy"), "{reason}");
    server.stop().await;
}

#[tokio::test]
async fn promote_and_rollback_under_load_fail_no_request() {
    let server = TestServer::start(repo_with(&["digits"]), None).await;
    // Phase 0: v2 serves; 2: v1 (promoted); 4: v2 again (rolled back).
    let load = Load::start(&server, 16, |phase| if phase == 2 { "1" } else { "2" });
    load.answers(50).await;
    load.phase.store(1, Ordering::SeqCst);
    let (status, v) = server
        .post("/v2/models/digits/promote", &json!({ "version": 1 }))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({ "model": "digits", "primary": "1", "previous": "2", "rollout_file": { "generation": 1 } })
    );
    load.phase.store(2, Ordering::SeqCst);
    load.answers(50).await;
    load.phase.store(3, Ordering::SeqCst);
    let (status, v) = server.post("/v2/models/digits/rollback", &json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({ "model": "digits", "primary": "2", "previous": "1", "rollout_file": { "generation": 2 } })
    );
    load.phase.store(4, Ordering::SeqCst);
    load.answers(50).await;
    let (answered, failures, wrong) = load.finish().await;
    assert!(answered >= 150, "only {answered} answers");
    assert_eq!((failures, wrong), (0, 0), "{answered} answered");
    // Nothing earlier to return to now.
    let (status, v) = server.post("/v2/models/digits/rollback", &json!({})).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no earlier primary"));
    // Unknown versions and models, and a body without a version.
    assert_eq!(
        server
            .post("/v2/models/digits/promote", &json!({ "version": 9 }))
            .await
            .0,
        404
    );
    assert_eq!(
        server
            .post("/v2/models/nope/promote", &json!({ "version": 1 }))
            .await
            .0,
        404
    );
    assert_eq!(
        server.post("/v2/models/digits/promote", &json!({})).await.0,
        400
    );
    server.stop().await;
}

#[tokio::test]
async fn a_new_version_that_passes_the_gate_serves_at_once_and_rolls_back() {
    let server = TestServer::start(repo_with(&["digits"]), Some(Duration::from_millis(200))).await;
    drop_version(
        server.repo.path(),
        3,
        &root().join("models/digits/2/model.onnx"),
    );
    server
        .wait_for("version 3 to serve", || async {
            let (_, v) = infer_one(&server).await;
            v["model_version"] == "3"
        })
        .await;
    assert_eq!(
        server.index_row("digits", "3").await.unwrap()["state"],
        "READY"
    );
    let (status, v) = server.post("/v2/models/digits/rollback", &json!({})).await;
    assert_eq!((status, v["primary"].clone()), (200, json!("2")), "{v}");
    let (_, v) = infer_one(&server).await;
    assert_eq!(v["model_version"], "2");
    server.stop().await;
}

#[tokio::test]
async fn control_endpoints_need_the_token_when_one_is_set() {
    let server = TestServer::start_with(repo_with(&["digits"]), |c| {
        c.poll_interval = None;
        c.control_token = Some("s3cret".into());
    })
    .await;
    for path in [
        "/v2/models/digits/promote",
        "/v2/models/digits/rollback",
        "/v2/repository/models/digits/unload",
        "/v2/repository/models/digits/load",
    ] {
        let (status, v) = server.post(path, &json!({ "version": 1 })).await;
        assert_eq!(status, 401, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("Bearer"), "{v}");
        let r = server
            .client
            .post(server.url(path))
            .header("Authorization", "Bearer wrong")
            .json(&json!({ "version": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = server
        .client
        .post(server.url("/v2/models/digits/promote"))
        .header("Authorization", "Bearer s3cret")
        .json(&json!({ "version": "1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Inference and reads stay open.
    let (status, v) = infer_one(&server).await;
    assert_eq!((status, v["model_version"].clone()), (200, json!("1")));
    // gRPC repository control reads the same token from the metadata.
    let mut grpc = server.grpc_client().await;
    let err = grpc
        .repository_model_unload(infergate::grpc::pb::RepositoryModelUnloadRequest {
            model_name: "digits".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(infergate::grpc::pb::RepositoryModelUnloadRequest {
        model_name: "digits".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    grpc.repository_model_unload(req).await.unwrap();
    // ... and it took effect: digits is unloaded.
    assert_eq!(server.get("/v2/models/digits/ready").await.0, 503);
    let (status, v) = infer_one(&server).await;
    assert_eq!(status, 503, "{v}");
    for v in ["1", "2"] {
        let row = server.index_row("digits", v).await.unwrap();
        assert_eq!(
            (row["state"].as_str(), row["reason"].as_str()),
            (Some("UNAVAILABLE"), Some("unloaded")),
            "{row}"
        );
    }
    server.stop().await;
}

/// digits with only version 1, rollout "shadow-first", promotion after
/// 20 compared requests agreeing on 99 % of rows.
async fn shadow_first_server() -> TestServer {
    let repo = repo_with(&["digits"]);
    std::fs::remove_dir_all(repo.path().join("digits/2")).unwrap();
    let path = repo.path().join("digits/config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("rollout = \"shadow-first\"\n{config}\n[promotion]\nmin_requests = 20\nmin_agreement = 0.99\n"),
    )
    .unwrap();
    TestServer::start(repo, Some(Duration::from_millis(200))).await
}

async fn send_heldout(server: &TestServer) -> Vec<String> {
    let digits = Digits::load();
    let mut versions = Vec::new();
    for chunk in digits.features.chunks(10) {
        let (status, v) = server.post("/v2/models/digits/infer", &body(chunk)).await;
        assert_eq!(status, 200, "{v}");
        versions.push(v["model_version"].as_str().unwrap().to_string());
    }
    versions
}

/// Waits (up to 10 s) for version 3 to be the shadow; its report.
async fn candidate_shadow(server: &TestServer) -> Value {
    let mut report = Value::Null;
    for _ in 0..500 {
        let (status, v) = server.get("/v2/models/digits/shadow").await;
        if status == 200 {
            report = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(report["target"], json!({ "version": 3 }), "{report}");
    report
}

#[tokio::test]
async fn shadow_first_promotes_a_candidate_that_agrees() {
    let server = shadow_first_server().await;
    // A copy of version 1 as version 3: it agrees on every row.
    drop_version(
        server.repo.path(),
        3,
        &root().join("models/digits/1/model.onnx"),
    );
    assert_eq!(judged(&server, "3").await["state"], "READY");
    let report = candidate_shadow(&server).await;
    assert!(
        report["promotion"]["status"]
            .as_str()
            .unwrap()
            .contains("0 of min_requests 20"),
        "{report}"
    );
    // The primary answers while the candidate is compared; then it takes over.
    let versions = send_heldout(&server).await;
    assert_eq!(versions[0], "1");
    server
        .wait_for("version 3 to be promoted", || async {
            let (_, v) = infer_one(&server).await;
            v["model_version"] == "3"
        })
        .await;
    // Promoted: the shadow is gone, and a rollback returns to version 1.
    assert_eq!(server.get("/v2/models/digits/shadow").await.0, 409);
    let (status, v) = server.post("/v2/models/digits/rollback", &json!({})).await;
    assert_eq!((status, v["primary"].clone()), (200, json!("1")), "{v}");
    server.stop().await;
}

#[tokio::test]
async fn shadow_first_keeps_a_candidate_that_disagrees_and_says_why() {
    let server = shadow_first_server().await;
    // Version 2's network as version 3: better, but it disagrees with the
    // primary on 11 of 360 held-out rows (96.9 % < 99 %).
    drop_version(
        server.repo.path(),
        3,
        &root().join("models/digits/2/model.onnx"),
    );
    assert_eq!(judged(&server, "3").await["state"], "READY");
    candidate_shadow(&server).await;
    let versions = send_heldout(&server).await;
    assert!(versions.iter().all(|v| v == "1"), "{versions:?}");
    let mut report = Value::Null;
    for _ in 0..500 {
        report = server.get("/v2/models/digits/shadow").await.1;
        if report["cumulative"]["compared"] == 36 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = report["promotion"]["status"].as_str().unwrap();
    assert!(
        status.contains("agreement 0.9694 < min_agreement 0.99 on output"),
        "{report}"
    );
    let (_, v) = infer_one(&server).await;
    assert_eq!(v["model_version"], "1", "still the primary");
    // The promote call overrides the criteria.
    let (status, v) = server.post("/v2/models/digits/promote", &json!({})).await;
    assert_eq!((status, v["primary"].clone()), (200, json!("3")), "{v}");
    server.stop().await;
}

#[tokio::test]
async fn the_primary_and_the_rollback_target_stay_loaded_whatever_the_policy() {
    let repo = repo_with(&["digits"]);
    let path = repo.path().join("digits/config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace(
            "version_policy = \"all\"",
            "version_policy = { latest = 1 }",
        ),
    )
    .unwrap();
    let server = TestServer::start(repo, Some(Duration::from_millis(200))).await;
    assert!(server.index_row("digits", "1").await.is_none());
    // Version 3 arrives and serves; latest = 1 alone would unload 2, but a
    // rollback must find it.
    drop_version(
        server.repo.path(),
        3,
        &root().join("models/digits/2/model.onnx"),
    );
    server
        .wait_for("version 3 to serve", || async {
            let (_, v) = infer_one(&server).await;
            v["model_version"] == "3"
        })
        .await;
    server.next_poll().await;
    assert_eq!(
        server.index_row("digits", "2").await.unwrap()["state"],
        "READY"
    );
    let (status, v) = server.post("/v2/models/digits/rollback", &json!({})).await;
    assert_eq!((status, v["primary"].clone()), (200, json!("2")), "{v}");
    // A shadow loaded outside the policy, promoted, keeps serving across polls.
    let (status, v) = server
        .post("/v2/models/digits/shadow", &json!({ "version": 1 }))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        server.post("/v2/models/digits/promote", &json!({})).await.0,
        200
    );
    server.next_poll().await;
    let (_, v) = infer_one(&server).await;
    assert_eq!(v["model_version"], "1");
    server.stop().await;
}
