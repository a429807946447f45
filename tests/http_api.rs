//! The V2 HTTP/REST API against a real server on loopback: outputs checked
//! against values computed offline from the models' weights, every datatype
//! round-tripped, and every error path answered with a status and a message
//! that names what is wrong.

mod common;

use common::*;
use serde_json::{json, Value};

async fn server(models: &[&str]) -> TestServer {
    TestServer::start(repo_with(models), None).await
}

fn digits_request(d: &Digits, rows: std::ops::Range<usize>) -> Value {
    let n = rows.len();
    json!({
        "id": "req-42",
        "inputs": [{ "name": "input", "shape": [n, 64], "datatype": "FP32", "data": d.flat(rows) }]
    })
}

#[tokio::test]
async fn health_and_metadata() {
    let s = server(&["digits", "tiny"]).await;
    assert_eq!(s.get("/v2/health/live").await.0, 200);
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    let (status, meta) = s.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "infergate");
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));

    let (status, m) = s.get("/v2/models/digits").await;
    assert_eq!(status, 200);
    assert_eq!(m["versions"], json!(["1", "2"]));
    assert_eq!(m["platform"], "onnxruntime_onnx");
    assert_eq!(
        m["inputs"],
        json!([{ "name": "input", "datatype": "FP32", "shape": [-1, 64] }])
    );
    assert_eq!(
        m["outputs"][0],
        json!({ "name": "probabilities", "datatype": "FP32", "shape": [-1, 10] })
    );
    assert_eq!(
        m["outputs"][1],
        json!({ "name": "label", "datatype": "INT64", "shape": [-1] })
    );
    // Training metadata travels inside the ONNX file.
    assert_eq!(m["parameters"]["properties"]["version"], "2");
    let (_, m1) = s.get("/v2/models/digits/versions/1").await;
    assert_eq!(m1["parameters"]["properties"]["version"], "1");
    assert_ne!(m1["parameters"]["sha256"], m["parameters"]["sha256"]);

    assert_eq!(s.get("/v2/models/digits/ready").await.0, 200);
    assert_eq!(s.get("/v2/models/digits/versions/1/ready").await.0, 200);
    assert_eq!(s.get("/v2/models/digits/versions/3/ready").await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn digits_json_matches_offline_values_for_each_version() {
    let s = server(&["digits"]).await;
    let d = Digits::load();
    let rows = 0..120;
    for (path, version) in [
        ("/v2/models/digits/versions/1/infer", "1"),
        ("/v2/models/digits/versions/2/infer", "2"),
        ("/v2/models/digits/infer", "2"),
    ] {
        let (status, r) = s.post(path, &digits_request(&d, rows.clone())).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["model_name"], "digits");
        assert_eq!(r["model_version"], version);
        assert_eq!(r["id"], "req-42");
        let probs = r["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "probabilities")
            .unwrap();
        assert_eq!(probs["shape"], json!([120, 10]));
        assert_eq!(probs["datatype"], "FP32");
        let got = f32s(&probs["data"]);
        for row in rows.clone() {
            assert_close(
                &got[row * 10..row * 10 + 10],
                &d.expected_probabilities(version, row),
                1e-5,
                path,
            );
        }
        let label = r["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "label")
            .unwrap();
        assert_eq!(label["datatype"], "INT64");
        for row in rows.clone() {
            assert_eq!(
                label["data"][row].as_i64().unwrap(),
                d.expected_label(version, row)
            );
        }
    }
    // The two versions really are different models.
    let disagree = (0..d.labels.len())
        .filter(|&i| d.expected_label("1", i) != d.expected_label("2", i))
        .count();
    assert!(disagree > 0);
    s.stop().await;
}

#[tokio::test]
async fn nested_data_and_output_selection() {
    let s = server(&["digits"]).await;
    let d = Digits::load();
    let nested: Vec<Vec<f32>> = d.features[..3].to_vec();
    let (status, r) = s
        .post(
            "/v2/models/digits/infer",
            &json!({
                "inputs": [{ "name": "input", "shape": [3, 64], "datatype": "FP32", "data": nested }],
                "outputs": [{ "name": "label" }]
            }),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let outputs = r["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["name"], "label");
    let want: Vec<i64> = (0..3).map(|i| d.expected_label("2", i)).collect();
    assert_eq!(outputs[0]["data"], json!(want));
    // No id sent: the server made one, so that a label can follow.
    assert_eq!(r["id"].as_str().map(str::len), Some(36), "{r}");
    s.stop().await;
}

/// Sends a binary-extension request: JSON header, then raw tensors.
async fn post_binary(s: &TestServer, path: &str, header: &Value, tail: &[u8]) -> reqwest::Response {
    let head = serde_json::to_vec(header).unwrap();
    let mut body = head.clone();
    body.extend_from_slice(tail);
    s.client
        .post(s.url(path))
        .header("Inference-Header-Content-Length", head.len().to_string())
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Splits a binary-extension response into its JSON header and tail.
async fn split_binary(r: reqwest::Response) -> (Value, Vec<u8>) {
    let n: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = r.bytes().await.unwrap();
    (
        serde_json::from_slice(&body[..n]).unwrap(),
        body[n..].to_vec(),
    )
}

#[tokio::test]
async fn digits_binary_extension() {
    let s = server(&["digits"]).await;
    let d = Digits::load();
    let rows = 0..40;
    let raw: Vec<u8> = d
        .flat(rows.clone())
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let header = json!({
        "id": "bin",
        "inputs": [{ "name": "input", "shape": [40, 64], "datatype": "FP32",
                     "parameters": { "binary_data_size": raw.len() } }],
        "outputs": [{ "name": "probabilities", "parameters": { "binary_data": true } },
                    { "name": "label", "parameters": { "binary_data": false } }]
    });
    let r = post_binary(&s, "/v2/models/digits/versions/1/infer", &header, &raw).await;
    assert_eq!(r.status(), 200);
    let (head, tail) = split_binary(r).await;
    assert_eq!(head["id"], "bin");
    let probs = &head["outputs"][0];
    assert_eq!(probs["parameters"]["binary_data_size"], 40 * 10 * 4);
    assert!(probs.get("data").is_none());
    assert_eq!(tail.len(), 40 * 10 * 4);
    let got: Vec<f32> = tail
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for row in rows.clone() {
        assert_close(
            &got[row * 10..row * 10 + 10],
            &d.expected_probabilities("1", row),
            1e-5,
            "binary",
        );
    }
    let labels = &head["outputs"][1]["data"];
    for row in rows {
        assert_eq!(labels[row].as_i64().unwrap(), d.expected_label("1", row));
    }

    // binary_data_output asks for every output in binary.
    let header = json!({
        "parameters": { "binary_data_output": true },
        "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32",
                     "parameters": { "binary_data_size": 256 } }]
    });
    let r = post_binary(&s, "/v2/models/digits/infer", &header, &raw[..256]).await;
    let (head, tail) = split_binary(r).await;
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 40);
    assert_eq!(head["outputs"][1]["parameters"]["binary_data_size"], 8);
    assert_eq!(tail.len(), 48);
    assert_eq!(
        i64::from_le_bytes(tail[40..48].try_into().unwrap()),
        d.expected_label("2", 0)
    );
    s.stop().await;
}

#[tokio::test]
async fn tiny_computes_two_x_plus_one() {
    let s = server(&["tiny"]).await;
    let x: Vec<f32> = (0..64).map(|i| i as f32 * 0.37 - 5.0).collect();
    let (status, r) = s
        .post(
            "/v2/models/tiny/infer",
            &json!({ "inputs": [{ "name": "input", "shape": [4, 16], "datatype": "FP32", "data": x }] }),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let want: Vec<f32> = x.iter().map(|v| v * 2.0 + 1.0).collect();
    assert_close(&f32s(&r["outputs"][0]["data"]), &want, 1e-6, "tiny");
    s.stop().await;
}

/// One value set per datatype of the `types` model, with extremes.
#[tokio::test]
async fn every_datatype_round_trips_in_json() {
    let s = server(&["types"]).await;
    let inputs: Vec<Value> = type_cases()
        .into_iter()
        .map(|(suffix, dt, data)| json!({ "name": format!("in_{suffix}"), "shape": [2, 2], "datatype": dt, "data": data }))
        .collect();
    let (status, r) = s
        .post("/v2/models/types/infer", &json!({ "inputs": inputs }))
        .await;
    assert_eq!(status, 200, "{r}");
    for (suffix, dt, data) in type_cases() {
        let out = r["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == format!("out_{suffix}"))
            .unwrap();
        assert_eq!(out["datatype"], dt);
        assert_eq!(out["shape"], json!([2, 2]));
        assert_eq!(out["data"], data, "{dt}");
    }
    s.stop().await;
}

#[tokio::test]
async fn every_datatype_round_trips_in_binary() {
    let s = server(&["types"]).await;
    let mut tail = Vec::new();
    let mut inputs = Vec::new();
    for (suffix, dt, data) in type_cases() {
        let raw = raw_le(dt, &data);
        inputs.push(
            json!({ "name": format!("in_{suffix}"), "shape": [4, 1], "datatype": dt,
                            "parameters": { "binary_data_size": raw.len() } }),
        );
        tail.extend_from_slice(&raw);
    }
    let header = json!({ "inputs": inputs, "parameters": { "binary_data_output": true } });
    let r = post_binary(&s, "/v2/models/types/infer", &header, &tail).await;
    assert_eq!(r.status(), 200);
    let (head, body) = split_binary(r).await;
    let mut offset = 0;
    let mut seen = Vec::new();
    for out in head["outputs"].as_array().unwrap() {
        let size = out["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
        let suffix = out["name"].as_str().unwrap().strip_prefix("out_").unwrap();
        let (_, dt, data) = type_cases().into_iter().find(|c| c.0 == suffix).unwrap();
        assert_eq!(out["datatype"], dt, "{suffix}");
        assert_eq!(
            &body[offset..offset + size],
            &raw_le(dt, &data)[..],
            "{suffix}"
        );
        assert_eq!(out["shape"], json!([4, 1]));
        offset += size;
        seen.push(suffix.to_string());
    }
    assert_eq!(offset, body.len());
    seen.sort();
    let mut all: Vec<String> = type_cases().iter().map(|c| c.0.to_string()).collect();
    all.sort();
    assert_eq!(seen, all, "every output comes back, once");
    s.stop().await;
}

async fn expect_error(s: &TestServer, path: &str, body: &Value, status: u16, needles: &[&str]) {
    let (got, r) = s.post(path, body).await;
    assert_eq!(got, status, "{path} {body} -> {r}");
    let msg = r["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {r}"));
    for n in needles {
        assert!(msg.contains(n), "'{msg}' should mention '{n}'");
    }
}

#[tokio::test]
async fn error_paths_name_what_is_wrong() {
    let s = server(&["digits"]).await;
    let row: Vec<f32> = vec![0.0; 64];
    let good = json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": row }] });

    expect_error(
        &s,
        "/v2/models/nope/infer",
        &good,
        404,
        &["unknown model 'nope'"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/versions/7/infer",
        &good,
        404,
        &["no version 7"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/versions/x/infer",
        &good,
        400,
        &["'x'"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/versions/0/infer",
        &good,
        400,
        &["'0'"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [1, 63], "datatype": "FP32", "data": vec![0.0; 63] }] }),
        400,
        &["'input'", "[-1, 64]", "[1, 63]"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP64", "data": row }] }),
        400,
        &["'input'", "FP32", "FP64"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/infer",
        &json!({ "inputs": [{ "name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row }] }),
        400,
        &["'pixels'", "input"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/infer",
        &json!({ "inputs": [] }),
        400,
        &["'input'", "missing"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": row }],
                 "outputs": [{ "name": "logits" }] }),
        400,
        &["'logits'", "probabilities"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [2, 64], "datatype": "FP32", "data": row }] }),
        400,
        &["'input'", "128 elements", "64 were given"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FLOAT", "data": row }] }),
        400,
        &["'input'", "'FLOAT'"],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [1, 1], "datatype": "FP32", "data": ["a"] }] }),
        400,
        &["'input'", "\"a\""],
    )
    .await;
    expect_error(
        &s,
        "/v2/models/digits/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32" }] }),
        400,
        &["'input'", "no data"],
    )
    .await;

    // Not JSON at all.
    let r = s
        .client
        .post(s.url("/v2/models/digits/infer"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("JSON"));

    // A header length that is not a number, and one longer than the body.
    let r = s
        .client
        .post(s.url("/v2/models/digits/infer"))
        .header("Inference-Header-Content-Length", "abc")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let header = json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32",
                                       "parameters": { "binary_data_size": 256 } }] });
    let r = post_binary(&s, "/v2/models/digits/infer", &header, &[0u8; 100]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("binary_data_size 256"),
        "{v}"
    );

    // Wrong method, unknown endpoint.
    let r = s
        .client
        .get(s.url("/v2/models/digits/infer"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = s
        .client
        .get(s.url("/v2/nothing/here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());

    // After all that, the server still serves.
    let (status, _) = s.post("/v2/models/digits/infer", &good).await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let s = TestServer::start_with(repo_with(&["tiny"]), |c| {
        c.poll_interval = None;
        c.max_request_bytes = 1024;
    })
    .await;
    let big = json!({ "inputs": [{ "name": "input", "shape": [64, 16], "datatype": "FP32", "data": vec![1.5f32; 1024] }] });
    let (status, r) = s.post("/v2/models/tiny/infer", &big).await;
    assert_eq!(status, 413, "{r}");
    assert!(r["error"].as_str().unwrap().contains("1024"));
    s.stop().await;
}

#[tokio::test]
async fn statistics_count_rows() {
    let s = server(&["tiny"]).await;
    for n in [1usize, 5, 10] {
        let (status, _) = s
            .post(
                "/v2/models/tiny/infer",
                &json!({ "inputs": [{ "name": "input", "shape": [n, 16], "datatype": "FP32", "data": vec![0.0; n * 16] }] }),
            )
            .await;
        assert_eq!(status, 200);
    }
    let _ = s
        .post("/v2/models/tiny/infer", &json!({ "inputs": [] }))
        .await;
    let (status, st) = s.get("/v2/models/tiny/stats").await;
    assert_eq!(status, 200);
    let m = &st["model_stats"][0];
    assert_eq!(m["name"], "tiny");
    assert_eq!(m["inference_count"], 16);
    assert_eq!(m["execution_count"], 3);
    assert_eq!(m["inference_stats"]["success"]["count"], 3);
    assert_eq!(m["inference_stats"]["fail"]["count"], 1);
    assert!(
        m["inference_stats"]["compute_infer"]["ns"]
            .as_u64()
            .unwrap()
            > 0
    );
    s.stop().await;
}

#[tokio::test]
async fn compressed_request_bodies() {
    use std::io::Write;
    let s = server(&["tiny"]).await;
    let body = serde_json::to_vec(&json!({
        "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": vec![2.0; 16] }]
    }))
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&body).unwrap();
    for (encoding, bytes) in [
        ("gzip", gz.finish().unwrap()),
        ("deflate", zlib.finish().unwrap()),
    ] {
        let r = s
            .client
            .post(s.url("/v2/models/tiny/infer"))
            .header("Content-Encoding", encoding)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{encoding}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(f32s(&v["outputs"][0]["data"]), vec![5.0; 16], "{encoding}");
    }
    let r = s
        .client
        .post(s.url("/v2/models/tiny/infer"))
        .header("Content-Encoding", "gzip")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("decompress"));
    let r = s
        .client
        .post(s.url("/v2/models/tiny/infer"))
        .header("Content-Encoding", "br")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    s.stop().await;
}

#[tokio::test]
async fn statistics_of_every_model() {
    let s = server(&["digits", "tiny"]).await;
    let (status, st) = s.get("/v2/models/stats").await;
    assert_eq!(status, 200);
    let names: Vec<(String, String)> = st["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().into(),
                m["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("digits".into(), "1".into()),
            ("digits".into(), "2".into()),
            ("tiny".into(), "1".into())
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn bytes_an_onnx_string_cannot_hold_are_a_client_error() {
    let s = server(&["types"]).await;
    for (bad, needle) in [(vec![0xffu8, 0xfe], "UTF-8"), (b"a\0b".to_vec(), "NUL")] {
        let mut tail = Vec::new();
        let mut inputs = Vec::new();
        for (suffix, dt, data) in type_cases() {
            let datatype = infergate::tensor::DataType::parse(dt).unwrap();
            let mut tensor = infergate::tensor::TensorData::from_json(datatype, &data).unwrap();
            if let infergate::tensor::TensorData::Bytes(items) = &mut tensor {
                items[1] = bad.clone();
            }
            let raw = tensor.to_raw();
            inputs.push(
                json!({ "name": format!("in_{suffix}"), "shape": [2, 2], "datatype": dt,
                                "parameters": { "binary_data_size": raw.len() } }),
            );
            tail.extend_from_slice(&raw);
        }
        let r = post_binary(
            &s,
            "/v2/models/types/infer",
            &json!({ "inputs": inputs }),
            &tail,
        )
        .await;
        assert_eq!(r.status(), 400);
        let msg = r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            msg.contains("'in_bytes'") && msg.contains("element 1") && msg.contains(needle),
            "{msg}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn the_digits_schema_refuses_out_of_range_pixels() {
    let s = server(&["digits"]).await;
    let mut row = vec![16.0f32; 64];
    let ok = json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": row }] });
    assert_eq!(s.post("/v2/models/digits/infer", &ok).await.0, 200);
    row[5] = 17.0;
    expect_error(
        &s,
        "/v2/models/digits/versions/1/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": row }] }),
        400,
        &["'input'", "feature 5", "row 0", "17", "max", "<= 16"],
    )
    .await;
    row[5] = -0.5;
    expect_error(
        &s,
        "/v2/models/digits/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": row }] }),
        400,
        &["feature 5", "min", ">= 0"],
    )
    .await;
    // NaN can only travel raw: through the binary extension, second row.
    let mut raw: Vec<u8> = vec![1.0f32; 128]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    raw[(64 + 9) * 4..(64 + 10) * 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let header = json!({ "inputs": [{ "name": "input", "shape": [2, 64], "datatype": "FP32",
                                       "parameters": { "binary_data_size": raw.len() } }] });
    let r = post_binary(&s, "/v2/models/digits/infer", &header, &raw).await;
    assert_eq!(r.status(), 400);
    let msg = r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("feature 9 of row 1") && msg.contains("nan"),
        "{msg}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_page_for_people_is_served_from_the_binary() {
    let s = server(&["tiny"]).await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/ui/");
    for (path, kind, needle) in [
        ("/ui/", "text/html", "/ui/app.js"),
        ("/ui", "text/html", "/ui/app.css"),
        ("/ui/app.js", "text/javascript", "/v2/repository/index"),
        ("/ui/app.css", "text/css", ".card"),
    ] {
        let r = plain.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| r.headers()[name].to_str().unwrap().to_string();
        assert!(header("content-type").starts_with(kind), "{path}");
        // Only the page's own script runs, whatever a string holds.
        let policy = header("content-security-policy");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        let text = r.text().await.unwrap();
        assert!(text.contains(needle), "{path}");
        if path.ends_with(".js") {
            // Strings from the server go in as text, never as markup.
            for sink in [
                ".innerHTML",
                ".outerHTML",
                "insertAdjacentHTML",
                "document.write",
            ] {
                assert!(!text.contains(sink), "app.js uses {sink}");
            }
        }
    }
    assert_eq!(s.get("/ui/nope.js").await.0, 404);
    assert_eq!(s.get("/ui/a/b").await.0, 404);
    let r = plain.post(s.url("/ui/")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    s.stop().await;
}
