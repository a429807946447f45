//! Criterion benchmarks of the request path, piece by piece: decoding
//! (JSON, binary extension, raw), encoding answers, assembling and
//! splitting batches, and a whole in-process inference through the core.
//!
//! `make bench` (or `cargo bench --bench hot_path`); needs the ONNX Runtime
//! library (`make setup`) for the in-process group.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use infergate::http::codec::{decode_request, encode_response};
use infergate::repository::{Defaults, Repository};
use infergate::service::{InferRequest, InferResponse, Service};
use infergate::tensor::{DataType, Elements, InputTensor, Tensor, TensorData};
use serde_json::json;

fn rows(n: usize, width: usize) -> Vec<f32> {
    (0..n * width).map(|i| (i % 17) as f32 * 0.5).collect()
}

fn json_body(n: usize, width: usize) -> Bytes {
    serde_json::to_vec(&json!({
        "inputs": [{ "name": "input", "shape": [n, width], "datatype": "FP32", "data": rows(n, width) }]
    }))
    .unwrap()
    .into()
}

fn binary_body(n: usize, width: usize) -> (Bytes, usize) {
    let raw: Vec<u8> = rows(n, width)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut body = serde_json::to_vec(&json!({
        "inputs": [{ "name": "input", "shape": [n, width], "datatype": "FP32",
                     "parameters": { "binary_data_size": raw.len() } }]
    }))
    .unwrap();
    let header = body.len();
    body.extend_from_slice(&raw);
    (body.into(), header)
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (n, width) in [(1usize, 16usize), (64, 64)] {
        let label = format!("{n}x{width}");
        g.throughput(Throughput::Elements((n * width) as u64));
        let body = json_body(n, width);
        g.bench_with_input(BenchmarkId::new("json", &label), &body, |b, body| {
            b.iter(|| decode_request("m", None, black_box(body), None).unwrap())
        });
        let (body, header) = binary_body(n, width);
        // Decoding the header, then the raw rows into the typed buffer (which
        // the server does when it assembles the run).
        g.bench_with_input(BenchmarkId::new("binary", &label), &body, |b, body| {
            b.iter(|| {
                let d = decode_request("m", None, black_box(body), Some(header)).unwrap();
                d.request
                    .inputs
                    .into_iter()
                    .map(|t| t.data.into_typed())
                    .collect::<Vec<_>>()
            })
        });
        let raw = &body[header..];
        g.bench_with_input(BenchmarkId::new("raw_fp32", &label), &raw, |b, raw| {
            b.iter(|| TensorData::from_raw(DataType::Fp32, black_box(raw), n * width).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode");
    let response = InferResponse {
        model: "digits".into(),
        version: 2,
        id: None,
        outputs: vec![
            Tensor {
                name: "probabilities".into(),
                shape: vec![64, 10],
                data: TensorData::Fp32(rows(64, 10)),
            },
            Tensor {
                name: "label".into(),
                shape: vec![64],
                data: TensorData::Int64((0..64).collect()),
            },
        ],
    };
    g.bench_function("json_64x10", |b| {
        b.iter(|| encode_response(black_box(&response), &[], &[], false))
    });
    g.bench_function("binary_64x10", |b| {
        b.iter(|| encode_response(black_box(&response), &[], &[], true))
    });
    g.finish();
}

fn batching(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    for n in [8usize, 64] {
        // Raw rows, as the binary encodings deliver them: decoded straight
        // into the batch buffer, as the inference thread does.
        let parts: Vec<Elements> = (0..n)
            .map(|_| {
                let raw: Vec<u8> = rows(1, 64).iter().flat_map(|x| x.to_le_bytes()).collect();
                Elements::raw(DataType::Fp32, raw.into(), 64).unwrap()
            })
            .collect();
        let refs: Vec<&Elements> = parts.iter().collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("assemble_rows_of_64", n),
            &refs,
            |b, refs| b.iter(|| Elements::concat(black_box(refs)).unwrap()),
        );
        let out = TensorData::Fp32(rows(n, 10));
        let lengths = vec![10usize; n];
        g.bench_with_input(BenchmarkId::new("split_rows_of_10", n), &out, |b, out| {
            b.iter(|| black_box(out.clone()).split(&lengths).unwrap())
        });
    }
    g.finish();
}

fn in_process(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".ort/libonnxruntime.so.1.31.1"));
    infergate::backend::onnx::init(&lib).expect("ONNX Runtime library (run `make setup`)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The same models with window statistics on (the default) and off,
    // side by side: what recording every input and output costs per request.
    let mut g = c.benchmark_group("infer_in_process");
    for (label, window) in [("stats_on", 60), ("stats_off", 0)] {
        let repository = Arc::new(Repository::new(
            root.join("models"),
            Defaults {
                queue_capacity: 1024,
                max_queue_wait: None,
                intra_op_threads: 1,
                window: infergate::window::WindowConfig {
                    length: std::time::Duration::from_secs(window),
                    keep: 10,
                    max_features: 64,
                    ..Default::default()
                },
                device: Default::default(),
                prediction_log_dir: std::env::temp_dir(),
            },
        ));
        rt.block_on(repository.poll());
        let core = Service::new(repository, Default::default());
        for (model, width) in [("tiny", 16usize), ("digits", 64)] {
            let request = InferRequest {
                timeout: None,
                client_timeout: None,
                transport: infergate::monitor::Transport::Http,
                model: model.into(),
                version: None,
                id: None,
                inputs: vec![InputTensor {
                    name: "input".into(),
                    shape: vec![1, width as i64],
                    data: Elements::Typed(TensorData::Fp32(rows(1, width))),
                }],
                outputs: vec![],
            };
            g.bench_function(format!("{model}_batch1_{label}"), |b| {
                b.to_async(&rt)
                    .iter(|| async { core.infer(request.clone()).await.unwrap() })
            });
        }
    }
    g.finish();
}

/// What window statistics cost the inference thread, next to what the model
/// itself costs, for the same batch: mlp (256 input features, 64 of them
/// summarised one by one), digits (64 features, binned for drift too) and
/// the CNN (12 288 elements a row, summarised as a whole). `record / run`
/// is the share of compute the statistics add.
fn window_cost(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".ort/libonnxruntime.so.1.31.1"));
    infergate::backend::onnx::init(&lib).expect("ONNX Runtime library (run `make setup`)");
    let mut g = c.benchmark_group("window_cost");
    for (model, dir, rows) in [
        ("mlp", root.join("benches/models/mlp/1"), 64),
        ("digits", root.join("models/digits/2"), 64),
        ("cnn", root.join("benches/models/cnn/1"), 4),
    ] {
        let mut backend =
            infergate::backend::load(&dir, &infergate::backend::LoadOptions::default())
                .expect("model loads (benches/models comes from scripts/make_bench_models.py)");
        let signature = backend.signature().clone();
        let baseline = dir.join("baseline.json");
        let baseline = baseline
            .exists()
            .then(|| infergate::window::drift::BaselineFile::read(&baseline).unwrap());
        let windows = infergate::window::Windows::new(
            model,
            1,
            &signature,
            infergate::window::WindowConfig {
                length: std::time::Duration::from_secs(3600),
                keep: 1,
                max_features: 64,
                ..Default::default()
            },
            Default::default(),
            baseline,
            1,
        )
        .unwrap();
        let mut inputs = signature.zero_inputs(rows);
        for t in &mut inputs {
            if let TensorData::Fp32(v) = &mut t.data {
                for (i, x) in v.iter_mut().enumerate() {
                    *x = ((i * 7919) % 17) as f32;
                }
            }
        }
        let outputs = backend.run(inputs.clone()).unwrap();
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(format!("{model}_run_{rows}rows"), |b| {
            b.iter(|| backend.run(black_box(inputs.clone())).unwrap())
        });
        g.bench_function(format!("{model}_record_{rows}rows"), |b| {
            b.iter(|| {
                windows.record_inputs(0, black_box(&inputs));
                windows.record_outputs(0, black_box(&outputs));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec, batching, in_process, window_cost);
criterion_main!(benches);
