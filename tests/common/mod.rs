//! Shared by the integration tests: a real server started with `run()` on
//! loopback ephemeral ports, serving a temporary copy of model folders.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use infergate::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The ONNX Runtime library: ORT_DYLIB_PATH, or where `make setup` puts it.
pub fn ort_lib() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".ort/libonnxruntime.so.1.31.1"))
}

/// The source folder of a model: the default repository, else the test models.
pub fn model_source(name: &str) -> PathBuf {
    let default = root().join("models").join(name);
    if default.is_dir() {
        default
    } else {
        root().join("tests/models").join(name)
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A temporary repository holding copies of the named models.
pub fn repo_with(models: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in models {
        copy_dir(&model_source(m), &dir.path().join(m));
    }
    dir
}

pub struct TestServer {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub repo: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start(repo: tempfile::TempDir, poll: Option<Duration>) -> TestServer {
        Self::start_with(repo, |c| c.poll_interval = poll).await
    }

    pub async fn start_with(
        repo: tempfile::TempDir,
        tweak: impl FnOnce(&mut infergate::Config),
    ) -> TestServer {
        let mut config = infergate::Config::new(repo.path(), ort_lib());
        tweak(&mut config);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listeners = infergate::Listeners::bind(any, any, None).await.unwrap();
        let http = listeners.http.local_addr().unwrap();
        let grpc = listeners.grpc.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(infergate::run(config, listeners, async {
            let _ = stopped.await;
        }));
        let server = TestServer {
            http,
            grpc,
            repo,
            stop: Some(stop),
            handle: Some(handle),
            client: reqwest::Client::new(),
        };
        for _ in 0..300 {
            if let Ok(r) = server
                .client
                .get(server.url("/v2/health/ready"))
                .send()
                .await
            {
                if r.status() == 200 {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub async fn grpc_client(&self) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
        GrpcInferenceServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
    }

    /// POSTs JSON; returns status and parsed body (Null when empty).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn index(&self) -> Vec<Value> {
        let (status, v) = self
            .post("/v2/repository/index", &serde_json::json!({}))
            .await;
        assert_eq!(status, 200);
        v.as_array().unwrap().clone()
    }

    /// The index row of one version, if listed.
    pub async fn index_row(&self, model: &str, version: &str) -> Option<Value> {
        self.index()
            .await
            .into_iter()
            .find(|r| r["name"] == model && r["version"] == version)
    }

    /// Polls `cond` every 20 ms for up to 20 s.
    pub async fn wait_for<F, Fut>(&self, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..1000 {
            if cond().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap();
    }
}

/// Held-out digits rows and the probabilities/labels each version must give,
/// computed offline with numpy from the trained weights (not by ONNX Runtime).
pub struct Digits {
    pub features: Vec<Vec<f32>>,
    pub labels: Vec<i64>,
    pub expected: Value,
}

impl Digits {
    pub fn load() -> Digits {
        let heldout: Value = serde_json::from_slice(
            &std::fs::read(root().join("models/digits/data/heldout.json")).unwrap(),
        )
        .unwrap();
        let expected: Value = serde_json::from_slice(
            &std::fs::read(root().join("tests/fixtures/digits_expected.json")).unwrap(),
        )
        .unwrap();
        let features = heldout["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let labels = heldout["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        Digits {
            features,
            labels,
            expected,
        }
    }

    pub fn expected_probabilities(&self, version: &str, row: usize) -> Vec<f32> {
        self.expected[version]["probabilities"][row]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    pub fn expected_label(&self, version: &str, row: usize) -> i64 {
        self.expected[version]["labels"][row].as_i64().unwrap()
    }

    pub fn flat(&self, rows: std::ops::Range<usize>) -> Vec<f32> {
        self.features[rows].iter().flatten().copied().collect()
    }
}

pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}
