//! The repository under polling and explicit control: broken versions never
//! replace one that serves, removed versions unload, version policies hold,
//! and nothing outside the repository is loaded.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const POLL: Option<Duration> = Some(Duration::from_millis(50));

fn tiny_body() -> Value {
    json!({ "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": vec![1.0; 16] }] })
}

async fn infer_version(s: &TestServer, model: &str) -> (u16, Value) {
    s.post(&format!("/v2/models/{model}/infer"), &tiny_body())
        .await
}

/// Puts a version folder in place in one rename, as a deployment would.
fn install_version(model_dir: &Path, version: &str, files: &[(&str, Vec<u8>)]) {
    let staging = model_dir.join(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    for (name, bytes) in files {
        std::fs::write(staging.join(name), bytes).unwrap();
    }
    std::fs::rename(&staging, model_dir.join(version)).unwrap();
}

async fn wait_unavailable(s: &TestServer, model: &str, version: &str) -> String {
    s.wait_for(&format!("{model} v{version} UNAVAILABLE"), || async {
        s.index_row(model, version)
            .await
            .is_some_and(|r| r["state"] == "UNAVAILABLE")
    })
    .await;
    s.index_row(model, version).await.unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_versions_never_replace_the_serving_one() {
    let s = TestServer::start(repo_with(&["tiny"]), POLL).await;
    let tiny_dir = s.repo.path().join("tiny");
    let good = std::fs::read(tiny_dir.join("1/model.onnx")).unwrap();
    type Files = Vec<(&'static str, Vec<u8>)>;
    let cases: Vec<(&str, Files, &str)> = vec![
        (
            "corrupt",
            vec![("model.onnx", b"garbage \x00\xff bytes".to_vec())],
            "cannot load",
        ),
        (
            "truncated",
            vec![("model.onnx", good[..good.len() / 2].to_vec())],
            "cannot load",
        ),
        (
            "wrong file",
            vec![("model.onnx", b"{\"not\": \"an onnx model\"}".to_vec())],
            "cannot load",
        ),
        (
            "missing file",
            vec![("weights.bin", vec![1, 2, 3])],
            "no model file",
        ),
    ];
    for (i, (what, files, needle)) in cases.into_iter().enumerate() {
        let version = (i + 2).to_string();
        install_version(&tiny_dir, &version, &files);
        let reason = wait_unavailable(&s, "tiny", &version).await;
        assert!(reason.contains(needle), "{what}: reason '{reason}'");
        let (status, r) = infer_version(&s, "tiny").await;
        assert_eq!(status, 200, "{what}: {r}");
        assert_eq!(r["model_version"], "1", "{what}");
        let (status, r) = s
            .post(
                &format!("/v2/models/tiny/versions/{version}/infer"),
                &tiny_body(),
            )
            .await;
        assert_eq!(status, 503, "{what}: {r}");
        assert!(r["error"].as_str().unwrap().contains("not ready"), "{r}");
        std::fs::remove_dir_all(tiny_dir.join(&version)).unwrap();
        s.wait_for("bad version gone from the index", || async {
            s.index_row("tiny", &version).await.is_none()
        })
        .await;
    }

    // A broken file replacing a serving version in place: the loaded copy
    // keeps serving, and the index says why the update did not take.
    std::fs::write(tiny_dir.join("1/model.onnx.new"), b"not a model").unwrap();
    std::fs::rename(
        tiny_dir.join("1/model.onnx.new"),
        tiny_dir.join("1/model.onnx"),
    )
    .unwrap();
    s.wait_for("failed reload reported", || async {
        s.index_row("tiny", "1").await.is_some_and(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|x| x.contains("cannot load"))
        })
    })
    .await;
    assert_eq!(s.index_row("tiny", "1").await.unwrap()["state"], "READY");
    assert_eq!(infer_version(&s, "tiny").await.0, 200);
    // Fixed in place: reloaded, and the reason clears.
    std::fs::write(tiny_dir.join("1/model.onnx.new"), &good).unwrap();
    std::fs::rename(
        tiny_dir.join("1/model.onnx.new"),
        tiny_dir.join("1/model.onnx"),
    )
    .unwrap();
    s.wait_for("reload after the fix", || async {
        s.index_row("tiny", "1")
            .await
            .is_some_and(|r| r.get("reason").is_none())
    })
    .await;
    assert_eq!(infer_version(&s, "tiny").await.0, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_come_and_go_with_their_folders() {
    let s = TestServer::start(repo_with(&["tiny"]), POLL).await;
    copy_dir(&model_source("digits"), &s.repo.path().join(".incoming"));
    std::fs::rename(
        s.repo.path().join(".incoming"),
        s.repo.path().join("digits"),
    )
    .unwrap();
    s.wait_for("digits loaded", || async {
        s.get("/v2/models/digits/ready").await.0 == 200
    })
    .await;
    std::fs::remove_dir_all(s.repo.path().join("digits")).unwrap();
    s.wait_for("digits unloaded", || async {
        s.get("/v2/models/digits/ready").await.0 == 404
    })
    .await;
    assert!(s.index().await.iter().all(|r| r["name"] != "digits"));
    s.stop().await;
}

#[tokio::test]
async fn version_policies() {
    let repo = tempfile::tempdir().unwrap();
    for (model, policy) in [
        ("all", "version_policy = \"all\""),
        ("latest2", "version_policy = { latest = 2 }"),
        ("pick", "version_policy = { specific = [1, 3] }"),
        ("default", ""),
    ] {
        let dir = repo.path().join(model);
        for v in ["1", "2", "3"] {
            copy_dir(&model_source("tiny").join("1"), &dir.join(v));
        }
        std::fs::write(dir.join("config.toml"), policy).unwrap();
    }
    let s = TestServer::start(repo, None).await;
    let ready = |model: &str| {
        let model = model.to_string();
        let s = &s;
        async move {
            let (_, m) = s.get(&format!("/v2/models/{model}")).await;
            m["versions"].clone()
        }
    };
    assert_eq!(ready("all").await, json!(["1", "2", "3"]));
    assert_eq!(ready("latest2").await, json!(["2", "3"]));
    assert_eq!(ready("pick").await, json!(["1", "3"]));
    assert_eq!(ready("default").await, json!(["3"]));
    assert_eq!(
        s.post("/v2/models/pick/versions/2/infer", &tiny_body())
            .await
            .0,
        404
    );
    assert_eq!(infer_version(&s, "pick").await.1["model_version"], "3");
    s.stop().await;
}

#[tokio::test]
async fn latest_policy_skips_a_newest_version_that_fails() {
    let repo = repo_with(&["tiny"]);
    copy_dir(&model_source("tiny").join("1"), &repo.path().join("tiny/2"));
    install_version(
        &repo.path().join("tiny"),
        "3",
        &[("model.onnx", b"broken".to_vec())],
    );
    let s = TestServer::start(repo, None).await;
    // latest(1): v3 fails, so v2 is the one version served; v1 is not loaded.
    let (_, m) = s.get("/v2/models/tiny").await;
    assert_eq!(m["versions"], json!(["2"]));
    assert_eq!(
        s.index_row("tiny", "3").await.unwrap()["state"],
        "UNAVAILABLE"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_load_and_unload() {
    let s = TestServer::start(repo_with(&["tiny"]), POLL).await;
    let (status, _) = s
        .post("/v2/repository/models/tiny/unload", &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.get("/v2/models/tiny/ready").await.0, 503);
    let (status, r) = infer_version(&s, "tiny").await;
    assert_eq!(status, 503, "{r}");
    // Polling does not bring an unloaded model back: a whole poll runs,
    // and tiny is still unloaded.
    s.next_poll().await;
    assert_eq!(
        s.index_row("tiny", "1").await.unwrap()["state"],
        "UNAVAILABLE"
    );
    let (status, _) = s.post("/v2/repository/models/tiny/load", &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(infer_version(&s, "tiny").await.0, 200);

    let (status, r) = s
        .post("/v2/repository/models/absent/load", &json!({}))
        .await;
    assert_eq!(status, 404, "{r}");
    let (status, r) = s
        .post("/v2/repository/models/absent/unload", &json!({}))
        .await;
    assert_eq!(status, 404, "{r}");
    let (status, r) = s
        .post("/v2/repository/models/.hidden/load", &json!({}))
        .await;
    assert_eq!(status, 400, "{r}");

    // A model whose only version is broken: load answers 400 with the reason.
    install_version(
        &s.repo.path().join("broken"),
        "1",
        &[("model.onnx", b"nope".to_vec())],
    );
    let (status, r) = s
        .post("/v2/repository/models/broken/load", &json!({}))
        .await;
    assert_eq!(status, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("version 1"), "{r}");

    let (status, idx) = s
        .post("/v2/repository/index", &json!({ "ready": true }))
        .await;
    assert_eq!(status, 200);
    // Only tiny serves: the broken model is left out of the ready index.
    let rows: Vec<(&str, &str, &str)> = idx
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["version"].as_str().unwrap(),
                r["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, vec![("tiny", "1", "READY")]);
    s.stop().await;
}

#[tokio::test]
async fn explicit_mode_picks_up_new_versions_only_on_load() {
    let s = TestServer::start(repo_with(&["tiny"]), None).await;
    copy_dir(
        &model_source("tiny").join("1"),
        &s.repo.path().join("tiny/2"),
    );
    // With no poller nothing reads the disk on its own; the positive
    // signal that the server did look at the repository since: loading
    // another model explicitly works, and tiny still has only version 1.
    copy_dir(&model_source("tiny"), &s.repo.path().join("other"));
    assert_eq!(
        s.post("/v2/repository/models/other/load", &json!({}))
            .await
            .0,
        200
    );
    assert_eq!(infer_version(&s, "other").await.1["model_version"], "1");
    assert!(s.index_row("tiny", "2").await.is_none());
    assert_eq!(infer_version(&s, "tiny").await.1["model_version"], "1");
    assert_eq!(
        s.post("/v2/repository/models/tiny/load", &json!({}))
            .await
            .0,
        200
    );
    assert_eq!(infer_version(&s, "tiny").await.1["model_version"], "2");
    s.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn nothing_outside_the_repository_is_loaded() {
    let outside = repo_with(&["tiny"]);
    let repo = repo_with(&[]);
    std::os::unix::fs::symlink(outside.path().join("tiny"), repo.path().join("escape")).unwrap();
    let s = TestServer::start(repo, None).await;
    // Listed, never loaded: the symlink is refused as a model name.
    let (status, r) = infer_version(&s, "escape").await;
    assert_eq!(status, 503, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("no ready version"),
        "{r}"
    );
    let index = s.index().await;
    assert_eq!(index.len(), 1, "{index:?}");
    assert_eq!(index[0]["name"], "escape");
    assert_eq!(index[0]["state"], "UNAVAILABLE");
    assert!(
        index[0]["reason"].as_str().unwrap().contains("'escape'"),
        "{index:?}"
    );
    let (status, r) = s
        .post("/v2/repository/models/escape/load", &json!({}))
        .await;
    assert_eq!(status, 400, "{r}");
    s.stop().await;
}

#[tokio::test]
async fn a_bad_config_is_reported_not_served() {
    let repo = repo_with(&["tiny"]);
    std::fs::write(
        repo.path().join("tiny/config.toml"),
        "version_polcy = \"all\"",
    )
    .unwrap();
    let s = TestServer::start(repo, None).await;
    let rows = s.index().await;
    let row = rows.iter().find(|r| r["name"] == "tiny").unwrap();
    assert_eq!(row["state"], "UNAVAILABLE");
    assert!(
        row["reason"].as_str().unwrap().contains("version_polcy"),
        "{row}"
    );
    assert_eq!(infer_version(&s, "tiny").await.0, 503);
    s.stop().await;
}
