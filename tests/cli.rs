//! The `infergate` binary itself: start-up errors, --help, and a SIGTERM
//! that lets in-flight requests finish.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

fn infergate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_infergate"));
    c.env("RUST_LOG", "info").env("NO_COLOR", "1");
    c
}

#[test]
fn a_missing_onnxruntime_library_is_a_clear_start_up_error() {
    let out = infergate()
        .args([
            "serve",
            "--model-repository",
            "models",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so"),
        "{stderr}"
    );
    assert!(stderr.contains("make setup"), "{stderr}");
}

#[test]
fn a_missing_repository_is_a_clear_start_up_error() {
    let out = infergate()
        .args([
            "serve",
            "--model-repository",
            "/nonexistent/repo",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .env("ORT_DYLIB_PATH", ort_lib())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/repo"));
}

#[test]
fn help_explains_the_flags() {
    let out = infergate().args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--model-repository",
        "--http-port",
        "--grpc-port",
        "--metrics-port",
        "--poll-interval",
        "ORT_DYLIB_PATH",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let repo = repo_with(&["digits"]);
    let mut child = infergate()
        .args([
            "serve",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--model-repository",
        ])
        .arg(repo.path())
        .env("ORT_DYLIB_PATH", ort_lib())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The log line `infergate listening http=127.0.0.1:PORT ... metrics=...`
    // tells the ports.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut http, mut metrics) = (None, None);
    let mut log = Vec::new();
    let field = |line: &str, key: &str| {
        line.split(key)
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
    };
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("infergate listening") {
            http = field(&line, " http=");
            metrics = field(&line, " metrics=");
        }
        let ready = line.contains(" ready");
        log.push(line);
        if ready {
            break;
        }
    }
    let http = http.unwrap_or_else(|| panic!("no listening line in {log:?}"));
    let metrics = metrics.unwrap_or_else(|| panic!("no metrics address in {log:?}"));
    // The rest of the log, as it comes.
    let log_rest = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let log_rest = log_rest.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log_rest.lock().unwrap().push(line);
            }
        })
    };

    // Requests whose bodies are half sent when the signal comes: they
    // started before SIGTERM and can only finish after it.
    let d = Digits::load();
    let rows: Vec<Vec<f32>> = (0..200)
        .map(|i| d.features[i % d.features.len()].clone())
        .collect();
    let body = serde_json::to_vec(&json!({
        "inputs": [{ "name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": rows }]
    }))
    .unwrap();
    let (first, second) = body.split_at(body.len() / 2);
    let client = reqwest::Client::new();
    let url = format!("http://{http}/v2/models/digits/infer");
    let mut senders = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..4 {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
        tx.send(Ok(first.to_vec())).await.unwrap();
        senders.push(tx);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream));
        requests.push(tokio::spawn(async move {
            request.send().await.map(|r| r.status().as_u16())
        }));
    }
    // The server has all four: their headers read, their bodies awaited.
    let in_flight = || async {
        metrics_text(&client, &metrics)
            .await
            .lines()
            .find_map(|l| l.strip_prefix("infergate_http_requests_in_flight "))
            .map(|v| v.trim().parse::<f64>().unwrap())
    };
    let mut seen = None;
    for _ in 0..1000 {
        seen = in_flight().await;
        if seen == Some(4.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, Some(4.0), "requests in flight before SIGTERM");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Shutdown has begun before the bodies complete.
    for _ in 0..1000 {
        if log_rest
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("shutting down"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        log_rest
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("shutting down")),
        "no shutdown line after SIGTERM"
    );
    for tx in senders {
        tx.send(Ok(second.to_vec())).await.unwrap();
    }
    for r in requests {
        assert_eq!(
            r.await.unwrap().unwrap(),
            200,
            "an in-flight request was dropped"
        );
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    reader.join().unwrap();
    // Stopped means stopped: nothing listens any more.
    assert!(client
        .get(format!("http://{http}/v2/health/live"))
        .send()
        .await
        .is_err());
}

// Several threads: the probe blocks this test's thread while the server,
// in this process, answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_says_whether_the_server_on_a_port_is_ready() {
    let server = TestServer::start(repo_with(&["tiny"]), None).await;
    let probe = |port: u16| {
        infergate()
            .args(["probe", "--http-port", &port.to_string()])
            .env_remove("INFERGATE_HTTP_PORT")
            .output()
            .unwrap()
    };
    let ready = probe(server.http.port());
    assert!(ready.status.success(), "{ready:?}");
    // The same port from the environment, as the image's health check reads it.
    let from_env = infergate()
        .arg("probe")
        .env("INFERGATE_HTTP_PORT", server.http.port().to_string())
        .output()
        .unwrap();
    assert!(from_env.status.success(), "{from_env:?}");
    // Nothing listening there: not ready, and why.
    let port = server.http.port();
    server.stop().await;
    let gone = probe(port);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(
        stderr.contains("not ready") && stderr.contains(&port.to_string()),
        "{stderr}"
    );
    // A server that answers, but not 200: not ready either (a path it 404s).
    let other = TestServer::start(repo_with(&["tiny"]), None).await;
    let not_found = infergate()
        .args([
            "probe",
            "--http-port",
            &other.http.port().to_string(),
            "--path",
            "/v2/models/nope",
        ])
        .output()
        .unwrap();
    assert_eq!(not_found.status.code(), Some(1), "{not_found:?}");
    assert!(String::from_utf8_lossy(&not_found.stderr).contains("404"));
    other.stop().await;
}
