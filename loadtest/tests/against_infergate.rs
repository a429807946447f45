//! The load generator against a real infergate on loopback: every protocol,
//! both loops, errors counted by kind, and the report's and plot's shape.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use loadtest::{Config, Load, Protocol, Stop};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Server {
    http: SocketAddr,
    grpc: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _repo: tempfile::TempDir,
}

async fn serve() -> Server {
    let repo = tempfile::tempdir().unwrap();
    let tiny = root().join("models/tiny/1");
    std::fs::create_dir_all(repo.path().join("tiny/1")).unwrap();
    std::fs::copy(
        tiny.join("model.onnx"),
        repo.path().join("tiny/1/model.onnx"),
    )
    .unwrap();
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".ort/libonnxruntime.so.1.31.1"));
    let mut config = infergate::Config::new(repo.path(), lib);
    config.poll_interval = None;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners = infergate::Listeners::bind(any, any, None).await.unwrap();
    let (http, grpc) = (
        listeners.http.local_addr().unwrap(),
        listeners.grpc.local_addr().unwrap(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(infergate::run(config, listeners, async {
        let _ = stopped.await;
    }));
    // Ready once the repository is read.
    for _ in 0..500 {
        if loadtest::client::metadata(&http.to_string(), Protocol::HttpJson, "tiny", None)
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Server {
        http,
        grpc,
        stop,
        handle,
        _repo: repo,
    }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().unwrap();
    }

    fn config(&self, protocol: Protocol) -> Config {
        Config {
            target: if protocol == Protocol::Grpc {
                self.grpc
            } else {
                self.http
            }
            .to_string(),
            protocol,
            model: "tiny".into(),
            version: None,
            batch: 2,
            shapes: vec![],
            request_file: None,
            load: Load::Closed { concurrency: 4 },
            stop: Stop::Duration(Duration::from_millis(400)),
            warmup: Duration::from_millis(100),
            connections: 0,
            timeout: Duration::from_secs(5),
            seed: 7,
            progress: false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_over_every_protocol() {
    let s = serve().await;
    for protocol in [Protocol::Grpc, Protocol::HttpJson, Protocol::HttpBinary] {
        let report = loadtest::run(&s.config(protocol)).await.unwrap();
        assert!(report.ok > 20, "{protocol:?}: {}", report.table());
        assert_eq!(report.error_count(), 0, "{protocol:?}: {}", report.table());
        assert_eq!(report.requests, report.ok);
        let l = &report.latency_us;
        assert!(
            l.min > 0 && l.min <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.max,
            "{l:?}"
        );
        assert!((report.qps - report.ok as f64 / report.measured_seconds).abs() < 1e-6);
        assert!(report.table().contains("throughput"));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_at_the_rate_asked() {
    let s = serve().await;
    let mut config = s.config(Protocol::Grpc);
    config.load = Load::Open {
        rate: 200.0,
        max_inflight: 100,
    };
    config.stop = Stop::Duration(Duration::from_secs(1));
    let report = loadtest::run(&config).await.unwrap();
    // 200 due in the measured second, give or take the edges.
    assert!(
        (195..=205).contains(&report.requests),
        "{}",
        report.requests
    );
    assert_eq!(report.error_count(), 0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mode"], "open");
    assert_eq!(json["rate"], 200.0);
    assert!(!json["timeline"].as_array().unwrap().is_empty());
    let svg = loadtest::plot::svg(&report);
    assert!(
        svg.starts_with("<svg") && svg.matches("<polyline").count() == 3,
        "{svg}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_kind() {
    let s = serve().await;
    for (protocol, kind) in [
        (Protocol::Grpc, "grpc_InvalidArgument"),
        (Protocol::HttpBinary, "http_400"),
    ] {
        let mut config = s.config(protocol);
        // The server wants [-1, 16].
        config.shapes = vec![("input".into(), vec![1, 15])];
        config.stop = Stop::Requests(30);
        let report = loadtest::run(&config).await.unwrap();
        assert_eq!(report.ok, 0);
        assert_eq!(report.errors.get(kind), Some(&30), "{:?}", report.errors);
        assert!(
            report.error_examples[kind].contains("[1, 15]"),
            "{:?}",
            report.error_examples
        );
    }
    let mut config = s.config(Protocol::Grpc);
    config.model = "absent".into();
    let err = loadtest::run(&config).await.unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_count_and_request_file() {
    let s = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("req.json");
    let data: Vec<f32> = (0..16).map(|i| i as f32).collect();
    std::fs::write(
        &file,
        serde_json::json!({ "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": data }] }).to_string(),
    )
    .unwrap();
    let mut config = s.config(Protocol::HttpJson);
    config.request_file = Some(file);
    config.stop = Stop::Requests(50);
    config.warmup = Duration::ZERO;
    let report = loadtest::run(&config).await.unwrap();
    assert_eq!(report.requests, 50);
    assert_eq!(report.ok, 50);
    s.stop().await;
}

#[test]
fn fail_on_error_sets_the_exit_status() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(serve());
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args([
                "--target",
                &s.grpc.to_string(),
                "--model",
                "tiny",
                "--requests",
                "5",
                "--warmup",
                "0s",
                "--quiet",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&[]).status.success());
    let bad = run(&["--shape", "input=1,3", "--fail-on-error"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("grpc_InvalidArgument"));
    let tolerated = run(&["--shape", "input=1,3"]);
    assert!(tolerated.status.success());
    rt.block_on(s.stop());
}

/// The bare ceiling answers the load generator like a V2 server would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_ceiling_serves_tiny_on_both_protocols() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http, grpc) = (free(), free());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bare-ceiling"))
        .args([
            "--http-port",
            &http.to_string(),
            "--grpc-port",
            &grpc.to_string(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for (protocol, port) in [
        (Protocol::Grpc, grpc),
        (Protocol::HttpBinary, http),
        (Protocol::HttpJson, http),
    ] {
        let target = format!("127.0.0.1:{port}");
        for _ in 0..500 {
            if loadtest::client::metadata(&target, protocol, "tiny", None)
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let config = Config {
            target,
            protocol,
            model: "tiny".into(),
            version: None,
            batch: 1,
            shapes: vec![],
            request_file: None,
            load: Load::Closed { concurrency: 2 },
            stop: Stop::Requests(100),
            warmup: Duration::ZERO,
            connections: 0,
            timeout: Duration::from_secs(5),
            seed: 1,
            progress: false,
        };
        let report = loadtest::run(&config).await.unwrap();
        assert_eq!(report.ok, 100, "{protocol:?}: {}", report.table());
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
