//! The load generator against a real infergate on loopback: every protocol,
//! both loops, errors counted by kind, and the report's and plot's shape.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use loadtest::{Config, Load, Protocol, Stop};

/// The tests of this file run one at a time: the open-loop test checks
/// when requests actually went out, which a neighbour test loading the
/// same two cores would blur.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The server's own count of successful `tiny` requests (V2 statistics).
async fn served(http: SocketAddr) -> u64 {
    let stats: serde_json::Value = reqwest::get(format!("http://{http}/v2/models/tiny/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["model_stats"][0]["inference_stats"]["success"]["count"]
        .as_u64()
        .unwrap()
}

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
    let _serial = SERIAL.lock().await;
    let s = serve().await;
    for protocol in [Protocol::Grpc, Protocol::HttpJson, Protocol::HttpBinary] {
        // No warm-up: every request sent is one the report counts, so the
        // server's own count must match it exactly.
        let mut config = s.config(protocol);
        config.warmup = Duration::ZERO;
        let before = served(s.http).await;
        let started = std::time::Instant::now();
        let report = loadtest::run(&config).await.unwrap();
        let wall = started.elapsed().as_secs_f64();
        let on_server = served(s.http).await - before;
        assert!(report.ok > 20, "{protocol:?}: {}", report.table());
        assert_eq!(report.error_count(), 0, "{protocol:?}: {}", report.table());
        assert_eq!(report.requests, report.ok);
        assert_eq!(on_server, report.ok, "{protocol:?}: the server's count");
        // The rate is the server's count over the 0.4 s asked for, and the
        // run lasted at least that long.
        assert!(
            (report.qps - on_server as f64 / 0.4).abs() < 1e-6,
            "{protocol:?}: {} req/s vs {on_server} in 0.4 s",
            report.qps
        );
        assert!(wall >= 0.4, "{wall} s");
        let l = &report.latency_us;
        assert!(
            l.min > 0 && l.min <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.max,
            "{l:?}"
        );
        // Each client waits for its answer: 4 clients finish at most 4
        // requests per minimum latency, plus the 4 still out at the end.
        let bound = 4.0 * (1e6 / l.min as f64 + 1.0 / 0.4);
        assert!(report.qps <= bound, "{} req/s > {bound}", report.qps);
        assert!(report.table().contains("throughput"));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_at_the_rate_asked() {
    let _serial = SERIAL.lock().await;
    let s = serve().await;
    let mut config = s.config(Protocol::Grpc);
    config.load = Load::Open {
        rate: 200.0,
        max_inflight: 100,
    };
    config.stop = Stop::Duration(Duration::from_secs(1));
    config.warmup = Duration::ZERO;
    let before = served(s.http).await;
    let report = loadtest::run(&config).await.unwrap();
    // Due every 5 ms from the start, before 1 s: exactly 200, all answered,
    // and the server saw those 200.
    assert_eq!(report.requests, 200, "{}", report.table());
    assert_eq!(report.error_count(), 0);
    assert_eq!(served(s.http).await - before, 200);
    // They went out when due, not in late bursts: the achieved send times
    // span the second at the asked rate, and nearly all left on time.
    let lag = &report.send_lag_us;
    assert!(lag.p90 <= 20_000, "send lag {lag:?}");
    let achieved = 199.0 / report.sent_span_seconds;
    assert!(
        (190.0..=210.0).contains(&achieved),
        "{achieved:.1} req/s over {:.3} s",
        report.sent_span_seconds
    );
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.blocking_lock();
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
    let _serial = SERIAL.lock().await;
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
    // The answers themselves: output = input * 2 + 1, over both protocols.
    let input: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
    let want: Vec<f32> = input.iter().map(|x| x * 2.0 + 1.0).collect();
    let body = serde_json::json!({ "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": input }] });
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}/v2/models/tiny/infer"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Vec<f32> = answer["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got, want, "HTTP JSON: {answer}");
    assert_eq!(answer["outputs"][0]["shape"], serde_json::json!([1, 16]));
    let mut grpc =
        infergate::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            format!("http://127.0.0.1:{grpc}"),
        )
        .await
        .unwrap();
    let raw: Vec<u8> = input.iter().flat_map(|x| x.to_le_bytes()).collect();
    let r = grpc
        .model_infer(infergate::grpc::pb::ModelInferRequest {
            model_name: "tiny".into(),
            inputs: vec![infergate::grpc::pb::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 16],
                ..Default::default()
            }],
            raw_input_contents: vec![raw.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs[0].shape, vec![1, 16]);
    let got: Vec<f32> = r.raw_output_contents[0]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, want, "gRPC raw");
    child.kill().unwrap();
    child.wait().unwrap();
}
