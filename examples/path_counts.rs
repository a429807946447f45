//! The request path's pure pieces, each run a fixed number of times, for
//! instruction counts that are repeatable on a noisy machine where timings
//! are not: decoding (JSON, binary), encoding, splitting a batch, and
//! recording a batch into the statistics windows.
//!
//!   cargo build --release --example path_counts
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!       --toggle-collect='path_counts::piece*' target/release/examples/path_counts decode_json
//!
//! One piece per run (its name as the argument: decode_json, decode_binary,
//! encode_json, split, record_mlp); `benches/counts.sh` runs them all for
//! two trees side by side. No ONNX Runtime: the windows are fed made-up
//! tensors of the bench models' signatures.

use std::hint::black_box;

use bytes::Bytes;
use infergate::backend::{Signature, TensorSpec};
use infergate::http::codec::{decode_request, encode_response};
use infergate::service::InferResponse;
use infergate::tensor::{DataType, Tensor, TensorData};
use serde_json::json;

const RUNS: usize = 1000;

fn rows(n: usize, width: usize) -> Vec<f32> {
    (0..n * width).map(|i| (i % 17) as f32 * 0.5).collect()
}

#[inline(never)]
fn piece(f: &mut dyn FnMut()) {
    for _ in 0..RUNS {
        f();
    }
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    match which.as_str() {
        "decode_json" => {
            let body: Bytes = serde_json::to_vec(&json!({
                "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": rows(1, 16) }]
            }))
            .unwrap()
            .into();
            piece(&mut || {
                black_box(decode_request("m", None, black_box(&body), None).unwrap());
            });
        }
        "decode_binary" => {
            let raw: Vec<u8> = rows(64, 64).iter().flat_map(|x| x.to_le_bytes()).collect();
            let mut body = serde_json::to_vec(&json!({
                "inputs": [{ "name": "input", "shape": [64, 64], "datatype": "FP32",
                             "parameters": { "binary_data_size": raw.len() } }]
            }))
            .unwrap();
            let header = body.len();
            body.extend_from_slice(&raw);
            let body = Bytes::from(body);
            piece(&mut || {
                let d = decode_request("m", None, black_box(&body), Some(header)).unwrap();
                for t in d.request.inputs {
                    black_box(t.data.into_typed());
                }
            });
        }
        "encode_json" => {
            let response = InferResponse {
                model: "digits".into(),
                version: 2,
                id: None,
                outputs: vec![Tensor {
                    name: "probabilities".into(),
                    shape: vec![64, 10],
                    data: TensorData::Fp32(rows(64, 10)),
                }],
            };
            piece(&mut || {
                black_box(encode_response(black_box(&response), &[], &[], false));
            });
        }
        "split" => {
            let out = TensorData::Fp32(rows(64, 10));
            let lengths = vec![10usize; 64];
            piece(&mut || {
                black_box(black_box(out.clone()).split(&lengths).unwrap());
            });
        }
        "record_mlp" => {
            let spec = |name: &str, shape: Vec<i64>| TensorSpec {
                name: name.into(),
                datatype: DataType::Fp32,
                shape,
            };
            let signature = Signature {
                inputs: vec![spec("input", vec![-1, 256])],
                outputs: vec![spec("scores", vec![-1, 10])],
            };
            let windows = infergate::window::Windows::new(
                "mlp",
                1,
                &signature,
                infergate::window::WindowConfig {
                    length: std::time::Duration::from_secs(3600),
                    keep: 1,
                    max_features: 64,
                    ..Default::default()
                },
                Default::default(),
                None,
                1,
            )
            .unwrap();
            let tensor = |name: &str, width: usize| Tensor {
                name: name.into(),
                shape: vec![64, width as i64],
                data: TensorData::Fp32(rows(64, width)),
            };
            let (inputs, outputs) = (vec![tensor("input", 256)], vec![tensor("scores", 10)]);
            piece(&mut || {
                windows.record_inputs(0, black_box(&inputs));
                windows.record_outputs(0, black_box(&outputs));
            });
        }
        other => {
            eprintln!("unknown piece {other:?}: decode_json, decode_binary, encode_json, split, record_mlp");
            std::process::exit(2);
        }
    }
}
