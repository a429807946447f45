//! The Prometheus endpoint on its own port: requests counted by model,
//! version and status, failures by reason, durations in a histogram.

mod common;

use std::net::SocketAddr;

use common::*;
use prometheus_parse::{Scrape, Value as Sample};
use serde_json::json;

/// This process's user + system CPU time as the kernel counts it
/// (/proc/self/stat fields 14 and 15, in USER_HZ = 100 ticks a second).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name (field 2) may hold spaces: count from its ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// `/metrics` parsed by a Prometheus text-format parser; samples looked up
/// by a selector written as Prometheus prints it: `name{k="v",...}`.
struct Scraped(Scrape);

impl Scraped {
    async fn get(client: &reqwest::Client, addr: SocketAddr) -> Scraped {
        let text = metrics_text(client, addr).await;
        Scraped(Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap())
    }

    fn selector(selector: &str) -> (String, Vec<(String, String)>) {
        let (name, labels) = selector.split_once('{').unwrap_or((selector, "}"));
        let labels = labels
            .trim_end_matches('}')
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        (name.to_string(), labels)
    }

    fn find(&self, name: &str, labels: &[(String, String)]) -> Option<&prometheus_parse::Sample> {
        self.0.samples.iter().find(|s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k) == Some(v.as_str()))
                && s.labels.len() == labels.len()
        })
    }

    fn histogram(&self, selector: &str) -> Vec<prometheus_parse::HistogramCount> {
        let (name, labels) = Self::selector(selector);
        match self.find(&name, &labels).map(|s| &s.value) {
            Some(Sample::Histogram(buckets)) => buckets.clone(),
            other => panic!("{selector}: not a histogram: {other:?}"),
        }
    }

    fn value(&self, selector: &str) -> f64 {
        let (name, mut labels) = Self::selector(selector);
        if let Some(base) = name.strip_suffix("_bucket") {
            let le: f64 = labels
                .pop()
                .filter(|(k, _)| k == "le")
                .unwrap()
                .1
                .parse()
                .unwrap();
            let buckets = match self.find(base, &labels).map(|s| &s.value) {
                Some(Sample::Histogram(b)) => b.clone(),
                other => panic!("{selector}: not a histogram: {other:?}"),
            };
            return buckets.iter().find(|b| b.less_than == le).unwrap().count;
        }
        match self.find(&name, &labels).map(|s| &s.value) {
            Some(Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v)) => *v,
            other => panic!(
                "{selector}: no such sample ({other:?}) among {:?}",
                self.0
                    .samples
                    .iter()
                    .filter(|s| s.metric == name)
                    .map(|s| &s.labels)
                    .collect::<Vec<_>>()
            ),
        }
    }
}

#[tokio::test]
async fn requests_failures_and_durations_are_exported() {
    let repo = repo_with(&["tiny", "digits"]);
    let mut config = infergate::Config::new(repo.path(), ort_lib());
    config.poll_interval = None;
    config.window.length = std::time::Duration::from_millis(700);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners = infergate::Listeners::bind(any, any, Some(any))
        .await
        .unwrap();
    let grpc = listeners.grpc.local_addr().unwrap();
    let (http, metrics) = (
        listeners.http.local_addr().unwrap(),
        listeners.metrics.as_ref().unwrap().local_addr().unwrap(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(infergate::run(config, listeners, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let infer = format!("http://{http}/v2/models/tiny/infer");
    for _ in 0..200 {
        if client
            .get(format!("http://{http}/v2/health/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let good = json!({ "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": vec![1.0; 16] }] });
    let bad = json!({ "inputs": [{ "name": "input", "shape": [1, 15], "datatype": "FP32", "data": vec![1.0; 15] }] });
    for _ in 0..3 {
        assert_eq!(
            client
                .post(&infer)
                .json(&good)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        client
            .post(&infer)
            .json(&bad)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    // One over gRPC: counted under its own protocol label.
    let mut grpc_client =
        infergate::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            format!("http://{grpc}"),
        )
        .await
        .unwrap();
    grpc_client
        .model_infer(infergate::grpc::pb::ModelInferRequest {
            model_name: "tiny".into(),
            inputs: vec![infergate::grpc::pb::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![2, 16],
                parameters: Default::default(),
                contents: Some(infergate::grpc::pb::InferTensorContents {
                    fp32_contents: vec![0.5; 32],
                    ..Default::default()
                }),
            }],
            ..Default::default()
        })
        .await
        .unwrap();

    // One request against the digits schema (pixels 0..16).
    let too_bright = json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![99.0; 64] }] });
    let r = client
        .post(format!("http://{http}/v2/models/digits/infer"))
        .json(&too_bright)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("schema rule max"), "{body}");

    let scrape = Scraped::get(&client, metrics).await;
    let value = |selector: &str| scrape.value(selector);
    assert_eq!(
        value(r#"infergate_requests_total{model="tiny",version="1",protocol="http",status="ok"}"#),
        3.0
    );
    assert_eq!(
        value(
            r#"infergate_requests_total{model="tiny",version="1",protocol="http",status="error"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            r#"infergate_request_failures_total{model="tiny",version="1",protocol="http",reason="invalid_argument"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            r#"infergate_request_duration_seconds_count{model="tiny",version="1",protocol="http"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            r#"infergate_request_duration_seconds_bucket{model="tiny",version="1",protocol="http",le="10"}"#
        ),
        3.0
    );
    assert!(
        scrape
            .histogram(
                r#"infergate_request_duration_seconds{model="tiny",version="1",protocol="http"}"#
            )
            .len()
            > 10
    );
    assert_eq!(
        value(r#"infergate_requests_total{model="tiny",version="1",protocol="grpc",status="ok"}"#),
        1.0
    );
    // Rows, runs, queue and compute time, gauges back at rest.
    // Three one-row HTTP requests and one two-row gRPC request.
    assert_eq!(
        value(r#"infergate_inferences_total{model="tiny",version="1"}"#),
        5.0
    );
    // Four runs (three HTTP, one gRPC): the bad request never reached the queue, the warm-up bypasses it.
    assert_eq!(
        value(r#"infergate_batch_size_count{model="tiny",version="1"}"#),
        4.0
    );
    assert_eq!(
        value(r#"infergate_queue_duration_seconds_count{model="tiny",version="1"}"#),
        4.0
    );
    assert_eq!(
        value(r#"infergate_compute_duration_seconds_count{model="tiny",version="1"}"#),
        4.0
    );
    assert_eq!(
        value(r#"infergate_inflight_requests{model="tiny",version="1"}"#),
        0.0
    );
    assert_eq!(
        value(r#"infergate_queue_depth{model="tiny",version="1"}"#),
        0.0
    );
    // Model facts, from the files and their training metadata.
    let meta: serde_json::Value = client
        .get(format!("http://{http}/v2/models/digits/versions/2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sha = meta["parameters"]["sha256"].as_str().unwrap();
    assert_eq!(
        value(&format!(
            r#"infergate_model_info{{model="digits",version="2",sha256="{sha}",backend="onnxruntime_onnx"}}"#
        )),
        1.0
    );
    let accuracy: f64 = meta["parameters"]["properties"]["heldout_accuracy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        value(r#"infergate_model_training_accuracy{model="digits",version="2"}"#),
        accuracy
    );
    // The age is counted from the version's trained_at (metadata.json),
    // as of its load or the last poll: a few seconds ago at most.
    let trained_at = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(root().join("models/digits/2/metadata.json")).unwrap(),
    )
    .unwrap()["trained_at"]
        .as_str()
        .unwrap()
        .to_string();
    let trained = humantime::parse_rfc3339(&trained_at).unwrap();
    let age_now = trained.elapsed().unwrap().as_secs_f64() / 86_400.0;
    let age = value(r#"infergate_model_age_days{model="digits",version="2"}"#);
    assert!(
        age <= age_now && age_now - age < 60.0 / 86_400.0,
        "age {age} days; trained_at {trained_at} is {age_now} days ago"
    );
    assert!(
        value(r#"infergate_model_loaded_timestamp_seconds{model="digits",version="1"}"#) > 1.7e9
    );
    assert_eq!(
        value(r#"infergate_validation_failures_total{model="digits",input="input",rule="max"}"#),
        1.0
    );
    // The process itself.
    assert!(value("process_resident_memory_bytes") > 1e6);
    // Window summaries and drift scores: the gauges say what /stats says.
    let heldout: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/digits/data/heldout.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let rows: Vec<f64> = heldout["features"]
        .as_array()
        .unwrap()
        .iter()
        .take(200)
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    let r = client
        .post(format!("http://{http}/v2/models/digits/versions/2/infer"))
        .json(&json!({ "inputs": [{ "name": "input", "shape": [200, 64], "datatype": "FP32", "data": rows }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut window = serde_json::Value::Null;
    for _ in 0..500 {
        let stats: serde_json::Value = client
            .get(format!("http://{http}/v2/models/digits/versions/2/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        window = stats["model_stats"][0]["distribution"]["windows"][0].clone();
        if !window.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(window["inputs"][0]["rows"], 200, "{window}");
    // The clock publishes the gauges right after closing the window: wait
    // for them to show this window.
    let qps_gauge = r#"infergate_window_requests_per_second{model="digits",version="2"}"#;
    let mut scrape = Scraped::get(&client, metrics).await;
    for _ in 0..1000 {
        let (name, labels) = Scraped::selector(qps_gauge);
        if let Some(Sample::Gauge(v)) = scrape.find(&name, &labels).map(|s| &s.value) {
            if Some(*v) == window["qps"].as_f64() {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        scrape = Scraped::get(&client, metrics).await;
    }
    let value = |selector: &str| scrape.value(selector);
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    assert_eq!(
        value(r#"infergate_window_requests_per_second{model="digits",version="2"}"#),
        f(&window["qps"])
    );
    assert_eq!(
        value(
            r#"infergate_window_value{model="digits",version="2",tensor="input",feature="all",stat="mean"}"#
        ),
        f(&window["inputs"][0]["mean"])
    );
    assert_eq!(
        value(
            r#"infergate_window_value{model="digits",version="2",tensor="input",feature="12",stat="p95"}"#
        ),
        f(&window["inputs"][0]["features"][12]["p95"])
    );
    assert_eq!(
        value(r#"infergate_window_nan_values{model="digits",version="2",tensor="input"}"#),
        0.0
    );
    let drift = &window["drift"];
    assert_eq!(
        value(r#"infergate_drift_psi_max{model="digits",version="2"}"#),
        f(&drift["psi_max"])
    );
    assert_eq!(
        value(r#"infergate_drift_ks_max{model="digits",version="2"}"#),
        f(&drift["ks_max"])
    );
    let psi12 = drift["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["feature"] == 12)
        .unwrap();
    assert_eq!(
        value(r#"infergate_drift_psi{model="digits",version="2",input="input",feature="12"}"#),
        f(&psi12["psi"])
    );
    assert_eq!(
        value(r#"infergate_drift_detected{model="digits",version="2"}"#),
        0.0
    );
    let classes: u64 = window["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap()["predicted_class"]["3"]
        .as_u64()
        .unwrap();
    assert_eq!(
        value(
            r#"infergate_window_predicted_class_ratio{model="digits",version="2",tensor="label",class="3"}"#
        ),
        classes as f64 / 200.0
    );

    // CPU: whole seconds (metrics-process counts integers), the figure the
    // kernel keeps for this process (the server runs in it), and it grows
    // when the process works.
    let cpu = value("process_cpu_seconds_total");
    let kernel = process_cpu_seconds();
    assert!(
        cpu <= kernel + 0.02 && kernel - cpu < 1.5,
        "metric {cpu} s, kernel {kernel} s"
    );
    let spin = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let spinner = {
        let spin = spin.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while spin.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
    };
    let mut grown = cpu;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        grown = Scraped::get(&client, metrics)
            .await
            .value("process_cpu_seconds_total");
        if grown >= cpu + 1.0 {
            break;
        }
    }
    spin.store(false, std::sync::atomic::Ordering::Relaxed);
    spinner.join().unwrap();
    assert!(grown >= cpu + 1.0, "{cpu} s then {grown} s after spinning");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
