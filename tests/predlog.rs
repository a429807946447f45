//! The prediction log over the real server: what it wrote, read back with
//! the `parquet` crate, equals what the test sent and was answered, over
//! every protocol; sampling follows the id hash; refused requests carry
//! their reason; a mirrored request carries the shadow's answer; shutdown
//! closes every file; after `kill -9` every closed file reads whole.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type, UInt64Type};
use arrow_array::Array;
use arrow_array::RecordBatch;
use common::*;
use infergate::grpc::pb;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

/// The digits repository with `[log]` added to its config.toml.
fn repo_logging(log: &str) -> tempfile::TempDir {
    let repo = repo_with(&["digits"]);
    let config = repo.path().join("digits/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[log]\n{log}\n"));
    std::fs::write(&config, text).unwrap();
    repo
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn batches(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// One logged record, as the test reads it back.
#[derive(Debug, Clone)]
struct Row {
    version: u64,
    protocol: String,
    status: String,
    error: Option<String>,
    input: Option<Vec<f32>>,
    shape: Option<Vec<i64>>,
    label: Option<Vec<i64>>,
    predicted: Option<Vec<i64>>,
    shadow_target: Option<String>,
    shadow_label: Option<Vec<i64>>,
}

fn rows(dir: &Path) -> BTreeMap<String, Row> {
    let mut out = BTreeMap::new();
    for path in files(dir, ".parquet") {
        for b in batches(&path) {
            let s = |name: &str| b.column_by_name(name).unwrap().as_string::<i32>().clone();
            let list = |name: &str| b.column_by_name(name).unwrap().as_list::<i32>().clone();
            let (ids, protocol, status, error) = (s("id"), s("protocol"), s("status"), s("error"));
            let version = b
                .column_by_name("version")
                .unwrap()
                .as_primitive::<UInt64Type>()
                .clone();
            let (input, shape) = (list("input.input"), list("input.input.shape"));
            let (label, predicted) = (list("output.label"), list("predicted"));
            let (shadow_target, shadow_label) = (s("shadow_target"), list("shadow.label"));
            let ints = |l: &arrow_array::ListArray, i: usize| {
                (!l.is_null(i)).then(|| l.value(i).as_primitive::<Int64Type>().values().to_vec())
            };
            for i in 0..b.num_rows() {
                out.insert(
                    ids.value(i).to_string(),
                    Row {
                        version: version.value(i),
                        protocol: protocol.value(i).to_string(),
                        status: status.value(i).to_string(),
                        error: (!error.is_null(i)).then(|| error.value(i).to_string()),
                        input: (!input.is_null(i)).then(|| {
                            input
                                .value(i)
                                .as_primitive::<Float32Type>()
                                .values()
                                .to_vec()
                        }),
                        shape: ints(&shape, i),
                        label: ints(&label, i),
                        predicted: ints(&predicted, i),
                        shadow_target: (!shadow_target.is_null(i))
                            .then(|| shadow_target.value(i).to_string()),
                        shadow_label: ints(&shadow_label, i),
                    },
                );
            }
        }
    }
    out
}

#[tokio::test]
async fn the_log_holds_every_request_as_sent_over_every_protocol() {
    let logs = tempfile::tempdir().unwrap();
    let repo = repo_logging(&format!(
        "dir = {:?}\nmax_rows = 25\nrefused = true",
        logs.path()
    ));
    let server = TestServer::start(repo, None).await;
    let digits = Digits::load();
    // id -> (rows sent, labels answered, protocol)
    let mut sent: BTreeMap<String, (Vec<f32>, Vec<i64>, &str)> = BTreeMap::new();
    for i in 0..40usize {
        let n = 1 + i % 3;
        let rows = &digits.features[i..i + n];
        let id = format!("http-{i}");
        let (status, v) = server
            .post("/v2/models/digits/infer", &digits_body(rows, Some(&id)))
            .await;
        assert_eq!(status, 200, "{v}");
        sent.insert(id, (rows.concat(), labels_of(&v), "http"));
    }
    let mut grpc = server.grpc_client().await;
    for i in 0..20usize {
        let rows = &digits.features[100 + i..102 + i];
        let raw: Vec<u8> = rows.concat().iter().flat_map(|f| f.to_le_bytes()).collect();
        let answer = grpc
            .model_infer(pb::ModelInferRequest {
                model_name: "digits".into(),
                id: format!("grpc-{i}"),
                inputs: vec![pb::model_infer_request::InferInputTensor {
                    name: "input".into(),
                    datatype: "FP32".into(),
                    shape: vec![2, 64],
                    ..Default::default()
                }],
                raw_input_contents: vec![raw.into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let label_at = answer
            .outputs
            .iter()
            .position(|o| o.name == "label")
            .unwrap();
        let labels: Vec<i64> = answer.raw_output_contents[label_at]
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        sent.insert(answer.id, (rows.concat(), labels, "grpc"));
    }
    // Refused by the schema (pixel 99 > 16): logged with why.
    let mut bad = digits.features[0].clone();
    bad[5] = 99.0;
    let (status, _) = server
        .post(
            "/v2/models/digits/infer",
            &digits_body(&[bad.clone()], Some("refused-1")),
        )
        .await;
    assert_eq!(status, 400);
    server.stop().await;

    assert!(
        files(logs.path(), ".part").is_empty(),
        "shutdown closed every file"
    );
    let closed = files(logs.path(), ".parquet");
    assert_eq!(closed.len(), 3, "61 records at 25 a file: {closed:?}");
    let logged = rows(logs.path());
    assert_eq!(logged.len(), 61);
    for (id, (input, labels, protocol)) in &sent {
        let r = logged.get(id).unwrap_or_else(|| panic!("{id} not logged"));
        assert_eq!(r.status, "ok");
        assert_eq!(r.version, 2);
        assert_eq!(&r.protocol, protocol);
        assert_eq!(r.input.as_ref(), Some(input), "{id}: inputs as sent");
        assert_eq!(r.shape, Some(vec![(input.len() / 64) as i64, 64]));
        assert_eq!(r.label.as_ref(), Some(labels), "{id}: outputs as answered");
        assert_eq!(r.predicted.as_ref(), Some(labels), "{id}: predicted class");
        assert_eq!(r.shadow_target, None);
    }
    let refused = &logged["refused-1"];
    assert_eq!(refused.status, "invalid_argument");
    assert!(
        refused.error.as_deref().unwrap().contains("schema"),
        "{refused:?}"
    );
    assert_eq!(refused.input.as_ref(), Some(&bad));
    assert_eq!(refused.label, None);
}

#[tokio::test]
async fn sampling_keeps_exactly_the_ids_the_hash_picks_and_jsonl_reads_back() {
    let logs = tempfile::tempdir().unwrap();
    let repo = repo_logging(&format!(
        "dir = {:?}\nsample_rate = 0.3\nformat = \"jsonl\"",
        logs.path()
    ));
    let server = TestServer::start(repo, None).await;
    let digits = Digits::load();
    let mut ids = Vec::new();
    for i in 0..200usize {
        let (status, v) = server
            .post(
                "/v2/models/digits/infer",
                &json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": digits.features[i % 360] }] }),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    server.stop().await;
    let mut logged: Vec<String> = files(logs.path(), ".jsonl")
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    assert_eq!(v["inputs"]["input"]["shape"], json!([1, 64]));
                    v["id"].as_str().unwrap().to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    logged.sort();
    let mut want: Vec<String> = ids
        .into_iter()
        .filter(|id| infergate::predlog::sampled(id, 0.3))
        .collect();
    want.sort();
    assert_eq!(logged, want);
    assert!(
        (30..90).contains(&want.len()),
        "{} of 200 at 0.3",
        want.len()
    );
}

#[tokio::test]
async fn a_mirrored_request_is_logged_with_the_shadows_answer() {
    let logs = tempfile::tempdir().unwrap();
    let repo = repo_logging(&format!("dir = {:?}", logs.path()));
    let server = TestServer::start(repo, None).await;
    let (status, v) = server
        .post(
            "/v2/models/digits/shadow",
            &json!({ "version": 1, "sample_rate": 1.0 }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let digits = Digits::load();
    for i in 0..30usize {
        let (status, v) = server
            .post(
                "/v2/models/digits/infer",
                &digits_body(&digits.features[i..i + 1], Some(&format!("m-{i}"))),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    shadow_report(&server, 30).await;
    server.stop().await;
    let logged = rows(logs.path());
    assert_eq!(logged.len(), 30);
    for i in 0..30usize {
        let r = &logged[&format!("m-{i}")];
        assert_eq!(r.shadow_target.as_deref(), Some("version 1"));
        assert_eq!(r.shadow_label, Some(vec![digits.expected_label("1", i)]));
        assert_eq!(r.label, Some(vec![digits.expected_label("2", i)]));
    }
}

#[test]
fn after_kill_9_every_closed_file_reads_whole() {
    let logs = tempfile::tempdir().unwrap();
    let repo = repo_logging(&format!("dir = {:?}\nmax_rows = 10", logs.path()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_infergate"))
        .args([
            "serve",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--poll-interval",
            "0s",
            "--model-repository",
        ])
        .arg(repo.path())
        .env("ORT_DYLIB_PATH", ort_lib())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut http = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split(" http=").nth(1) {
            http = rest.split_whitespace().next().map(str::to_string);
        }
        if line.contains(" ready") {
            break;
        }
    }
    let http = http.expect("a listening line");
    let digits = Digits::load();
    let client = reqwest::blocking::Client::new();
    for i in 0..35usize {
        let r = client
            .post(format!("http://{http}/v2/models/digits/infer"))
            .json(&digits_body(
                &digits.features[i..i + 1],
                Some(&format!("k-{i:02}")),
            ))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Three files of ten are closed once the writer has them; the fourth
    // stays open (five rows) until the crash.
    for _ in 0..500 {
        if files(logs.path(), ".parquet").len() == 3 && !files(logs.path(), ".part").is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no flush, no rename
    child.wait().unwrap();
    let closed = files(logs.path(), ".parquet");
    assert_eq!(closed.len(), 3, "{closed:?}");
    let ids: Vec<String> = rows(logs.path()).into_keys().collect();
    let want: Vec<String> = (0..30).map(|i| format!("k-{i:02}")).collect();
    assert_eq!(
        ids, want,
        "every closed file whole; only the open file's rows lost"
    );
    assert_eq!(
        files(logs.path(), ".part").len(),
        1,
        "the open file stays a .part"
    );
}

#[tokio::test]
async fn a_bad_log_config_fails_the_load_and_names_the_key() {
    let logs = tempfile::tempdir().unwrap();
    let repo = repo_logging(&format!("dir = {:?}\nsample_rate = 2.0", logs.path()));
    let server = TestServer::start(repo, None).await;
    // The model as a whole (version "") is unavailable: its config is bad.
    let row = server.index_row("digits", "").await.unwrap();
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    assert!(
        row["reason"].as_str().unwrap().contains("sample_rate"),
        "{row}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_log_that_cannot_be_written_never_stops_serving() {
    let base = tempfile::tempdir().unwrap();
    let blocker = base.path().join("blocker");
    std::fs::write(&blocker, b"a file where the log's directory would go").unwrap();
    let repo = repo_logging(&format!("dir = {:?}", blocker.join("log")));
    let server = TestServer::start(repo, None).await;
    let digits = Digits::load();
    for i in 0..10usize {
        let (status, v) = server
            .post(
                "/v2/models/digits/infer",
                &digits_body(&digits.features[i..i + 1], Some(&format!("w-{i}"))),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let dropped = || {
        metric(
            "infergate_log_dropped_total",
            "model=\"digits\",reason=\"write_error\"",
        )
        .unwrap_or(0.0)
    };
    for _ in 0..200 {
        if dropped() >= 10.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dropped() >= 10.0, "dropped and counted: {}", dropped());
    server.stop().await;
}

#[tokio::test]
async fn export_joins_the_log_with_its_labels_row_by_row() {
    let logs = tempfile::tempdir().unwrap();
    let repo = repo_logging(&format!("dir = {:?}\nmax_rows = 7", logs.path()));
    let server = TestServer::start(repo, None).await;
    let digits = Digits::load();
    // id -> (row features, predicted labels)
    let mut sent: BTreeMap<String, (Vec<Vec<f32>>, Vec<i64>)> = BTreeMap::new();
    for i in 0..30usize {
        let n = 1 + i % 2;
        let rows = digits.features[2 * i..2 * i + n].to_vec();
        let id = format!("e-{i:02}");
        let (status, v) = server
            .post("/v2/models/digits/infer", &digits_body(&rows, Some(&id)))
            .await;
        assert_eq!(status, 200, "{v}");
        sent.insert(id, (rows, labels_of(&v)));
    }
    // Labels for e-00..e-19 through the API (e-03 twice: the second wins),
    // e-20..e-24 from a file of the caller's; e-25.. unlabelled.
    let truth = |id: &str, r: usize| -> i64 {
        let i: usize = id[2..].parse().unwrap();
        digits.labels[2 * i + r]
    };
    let label_of = |id: &str| -> Value {
        let n = sent[id].0.len();
        if n == 1 {
            json!(truth(id, 0))
        } else {
            json!((0..n).map(|r| truth(id, r)).collect::<Vec<_>>())
        }
    };
    let mut items: Vec<Value> = (0..20)
        .map(|i| format!("e-{i:02}"))
        .map(|id| json!({ "id": id, "label": label_of(&id) }))
        .collect();
    items[3] = json!({ "id": "e-03", "label": [9, 9] });
    let (status, v) = server
        .post("/v2/models/digits/feedback", &json!({ "labels": items }))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = server
        .post(
            "/v2/models/digits/feedback",
            &json!({ "labels": [{ "id": "e-03", "label": label_of("e-03") }] }),
        )
        .await;
    assert_eq!((status, v["replaced"].clone()), (200, json!(1)));
    server.stop().await;
    let extra = logs.path().join("mine.txt");
    let lines: Vec<String> = (20..25)
        .map(|i| format!("e-{i:02}"))
        .map(|id| json!({ "id": id, "label": label_of(&id) }).to_string())
        .collect();
    std::fs::write(&extra, lines.join("\n")).unwrap();

    // Through the binary, as a user would.
    let out = logs.path().join("train.parquet");
    let run = Command::new(env!("CARGO_BIN_EXE_infergate"))
        .args(["export", "--log"])
        .arg(logs.path())
        .arg("--labels")
        .arg(&extra)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["records"], 30);
    assert_eq!(summary["labels"], 20 + 1 + 5);
    assert_eq!(summary["labelled_records"], 25);

    // (id, row) -> (features, prediction, label, version)
    type Exported = (Vec<f32>, Option<i64>, f64, u64);
    let mut got: BTreeMap<(String, u32), Exported> = BTreeMap::new();
    for b in batches(&out) {
        let ids = b.column_by_name("id").unwrap().as_string::<i32>().clone();
        let row = b
            .column_by_name("row")
            .unwrap()
            .as_primitive::<arrow_array::types::UInt32Type>()
            .clone();
        let features = b.column_by_name("input").unwrap().as_list::<i32>().clone();
        let pred = b
            .column_by_name("prediction")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let label = b
            .column_by_name("label")
            .unwrap()
            .as_primitive::<arrow_array::types::Float64Type>()
            .clone();
        let version = b
            .column_by_name("version")
            .unwrap()
            .as_primitive::<UInt64Type>()
            .clone();
        for i in 0..b.num_rows() {
            got.insert(
                (ids.value(i).to_string(), row.value(i)),
                (
                    features
                        .value(i)
                        .as_primitive::<Float32Type>()
                        .values()
                        .to_vec(),
                    (!pred.is_null(i)).then(|| pred.value(i)),
                    label.value(i),
                    version.value(i),
                ),
            );
        }
    }
    let mut want = 0;
    for i in 0..25usize {
        let id = format!("e-{i:02}");
        let (rows, predicted) = &sent[&id];
        for (r, features) in rows.iter().enumerate() {
            let (f, p, l, v) = &got[&(id.clone(), r as u32)];
            assert_eq!(f, features, "{id} row {r}: the features as sent");
            assert_eq!(*p, Some(predicted[r]), "{id} row {r}");
            assert_eq!(*l, truth(&id, r) as f64, "{id} row {r}: the last label");
            assert_eq!(*v, 2);
            want += 1;
        }
    }
    assert_eq!(got.len(), want, "only labelled rows");
    assert_eq!(summary["rows"], want);

    // Errors name the file: a log directory without a log.
    let empty = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_infergate"))
        .args(["export", "--log"])
        .arg(empty.path())
        .arg("--out")
        .arg(empty.path().join("x.parquet"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("no prediction log files"));
}
