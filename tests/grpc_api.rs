//! The V2 gRPC API against a real server on loopback, with a client
//! generated from the same proto: typed and raw contents, metadata,
//! statistics, repository control, and the status code of every error.

mod common;

use common::*;
use infergate::grpc::pb;
use pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use tonic::Code;

fn input(
    name: &str,
    datatype: &str,
    shape: Vec<i64>,
    contents: Option<pb::InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        parameters: Default::default(),
        contents,
    }
}

fn fp32(v: Vec<f32>) -> Option<pb::InferTensorContents> {
    Some(pb::InferTensorContents {
        fp32_contents: v,
        ..Default::default()
    })
}

fn request(
    model: &str,
    version: &str,
    inputs: Vec<InferInputTensor>,
    raw: Vec<Vec<u8>>,
) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        id: "g-1".into(),
        parameters: Default::default(),
        inputs,
        outputs: vec![],
        raw_input_contents: raw.into_iter().map(bytes::Bytes::from).collect(),
    }
}

#[tokio::test]
async fn health_metadata_and_readiness() {
    let s = TestServer::start(repo_with(&["digits"]), None).await;
    let mut c = s.grpc_client().await;
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let meta = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "infergate");
    assert!(meta.extensions.contains(&"model_repository".to_string()));

    let m = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "digits".into(),
            version: "".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.versions, vec!["1", "2"]);
    assert_eq!(m.inputs[0].name, "input");
    assert_eq!(m.inputs[0].shape, vec![-1, 64]);
    assert_eq!(m.outputs[1].datatype, "INT64");

    let ready = |v: &str| pb::ModelReadyRequest {
        name: "digits".into(),
        version: v.into(),
    };
    assert!(c.model_ready(ready("1")).await.unwrap().into_inner().ready);
    assert_eq!(
        c.model_ready(ready("9")).await.unwrap_err().code(),
        Code::NotFound
    );
    let err = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "nope".into(),
            version: "".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("'nope'"));
    s.stop().await;
}

#[tokio::test]
async fn digits_typed_and_raw_match_offline_values() {
    let s = TestServer::start(repo_with(&["digits"]), None).await;
    let mut c = s.grpc_client().await;
    let d = Digits::load();
    let rows = 100..180;
    let n = rows.len();
    for version in ["1", "2"] {
        // Typed contents in, typed contents out.
        let r = c
            .model_infer(request(
                "digits",
                version,
                vec![input(
                    "input",
                    "FP32",
                    vec![n as i64, 64],
                    fp32(d.flat(rows.clone())),
                )],
                vec![],
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.model_version, version);
        assert_eq!(r.id, "g-1");
        assert!(r.raw_output_contents.is_empty());
        let probs = &r.outputs[0];
        assert_eq!(probs.name, "probabilities");
        assert_eq!(probs.shape, vec![n as i64, 10]);
        let got = &probs.contents.as_ref().unwrap().fp32_contents;
        let labels = &r.outputs[1].contents.as_ref().unwrap().int64_contents;
        for (i, row) in rows.clone().enumerate() {
            assert_close(
                &got[i * 10..i * 10 + 10],
                &d.expected_probabilities(version, row),
                1e-5,
                "typed",
            );
            assert_eq!(labels[i], d.expected_label(version, row));
        }

        // Raw in, raw out.
        let raw: Vec<u8> = d
            .flat(rows.clone())
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let mut req = request(
            "digits",
            version,
            vec![input("input", "FP32", vec![n as i64, 64], None)],
            vec![raw],
        );
        req.outputs = vec![InferRequestedOutputTensor {
            name: "label".into(),
            parameters: Default::default(),
        }];
        let r = c.model_infer(req).await.unwrap().into_inner();
        assert_eq!(r.outputs.len(), 1);
        assert_eq!(r.outputs[0].name, "label");
        assert_eq!(r.raw_output_contents.len(), 1);
        let labels: Vec<i64> = r.raw_output_contents[0]
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let want: Vec<i64> = rows
            .clone()
            .map(|row| d.expected_label(version, row))
            .collect();
        assert_eq!(labels, want);
    }
    s.stop().await;
}

/// Raw contents, all 13 datatypes: the bytes sent and the bytes expected
/// back are written by hand (`raw_le`), not by the crate's encoder.
#[tokio::test]
async fn every_datatype_round_trips_raw() {
    let s = TestServer::start(repo_with(&["types"]), None).await;
    let mut c = s.grpc_client().await;
    let cases = type_cases();
    let inputs = cases
        .iter()
        .map(|(s, dt, _)| input(&format!("in_{s}"), dt, vec![2, 2], None))
        .collect();
    let raw = cases.iter().map(|(_, dt, v)| raw_le(dt, v)).collect();
    let r = c
        .model_infer(request("types", "", inputs, raw))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs.len(), cases.len());
    assert_eq!(r.raw_output_contents.len(), cases.len());
    let mut seen = Vec::new();
    for (out, bytes) in r.outputs.iter().zip(&r.raw_output_contents) {
        let suffix = out.name.strip_prefix("out_").unwrap();
        let (_, dt, values) = cases.iter().find(|c| c.0 == suffix).unwrap();
        assert_eq!(&out.datatype, dt, "{suffix}");
        assert_eq!(out.shape, vec![2, 2], "{suffix}");
        assert!(out.contents.is_none(), "{suffix}: raw in, raw out");
        assert_eq!(&bytes[..], &raw_le(dt, values)[..], "{suffix}");
        seen.push(suffix);
    }
    seen.sort();
    let mut all: Vec<&str> = cases.iter().map(|c| c.0).collect();
    all.sort();
    assert_eq!(seen, all, "every output comes back, once");
    s.stop().await;
}

/// The typed `contents` field the V2 spec assigns each datatype, filled by
/// hand from the JSON values: BOOL bool_contents; UINT8/16/32 uint_contents;
/// UINT64 uint64_contents; INT8/16/32 int_contents; INT64 int64_contents;
/// FP32 fp32_contents; FP64 fp64_contents; BYTES bytes_contents.
fn typed_by_hand(datatype: &str, values: &serde_json::Value) -> pb::InferTensorContents {
    let v = values.as_array().unwrap();
    let mut c = pb::InferTensorContents::default();
    match datatype {
        "BOOL" => c.bool_contents = v.iter().map(|x| x.as_bool().unwrap()).collect(),
        "UINT8" | "UINT16" | "UINT32" => {
            c.uint_contents = v.iter().map(|x| x.as_u64().unwrap() as u32).collect()
        }
        "UINT64" => c.uint64_contents = v.iter().map(|x| x.as_u64().unwrap()).collect(),
        "INT8" | "INT16" | "INT32" => {
            c.int_contents = v.iter().map(|x| x.as_i64().unwrap() as i32).collect()
        }
        "INT64" => c.int64_contents = v.iter().map(|x| x.as_i64().unwrap()).collect(),
        "FP32" => c.fp32_contents = v.iter().map(|x| x.as_f64().unwrap() as f32).collect(),
        "FP64" => c.fp64_contents = v.iter().map(|x| x.as_f64().unwrap()).collect(),
        "BYTES" => {
            c.bytes_contents = v
                .iter()
                .map(|x| bytes::Bytes::copy_from_slice(x.as_str().unwrap().as_bytes()))
                .collect()
        }
        other => panic!("{other} has no typed contents field"),
    }
    c
}

/// Typed contents, the 12 datatypes that have a field (`types_typed` has
/// no FP16 input): each is read from its field, and the answer comes back
/// in the same field with every other field empty.
#[tokio::test]
async fn every_typed_datatype_round_trips_in_its_contents_field() {
    let s = TestServer::start(repo_with(&["types", "types_typed"]), None).await;
    let mut c = s.grpc_client().await;
    let cases: Vec<_> = type_cases()
        .into_iter()
        .filter(|(_, dt, _)| *dt != "FP16")
        .collect();
    assert_eq!(cases.len(), 12);
    let typed_inputs = || -> Vec<InferInputTensor> {
        cases
            .iter()
            .map(|(s, dt, v)| {
                input(
                    &format!("in_{s}"),
                    dt,
                    vec![2, 2],
                    Some(typed_by_hand(dt, v)),
                )
            })
            .collect()
    };
    let r = c
        .model_infer(request("types_typed", "", typed_inputs(), vec![]))
        .await
        .unwrap()
        .into_inner();
    assert!(r.raw_output_contents.is_empty(), "typed in, typed out");
    assert_eq!(r.outputs.len(), cases.len());
    for (suffix, dt, values) in &cases {
        let out = r
            .outputs
            .iter()
            .find(|o| o.name == format!("out_{suffix}"))
            .unwrap_or_else(|| panic!("out_{suffix} missing"));
        assert_eq!(&out.datatype, dt);
        assert_eq!(out.shape, vec![2, 2], "{suffix}");
        assert_eq!(
            out.contents.as_ref(),
            Some(&typed_by_hand(dt, values)),
            "{suffix}"
        );
    }
    // FP16 has no typed field: a typed FP16 input is refused by name.
    let mut inputs = typed_inputs();
    inputs.push(input("in_fp16", "FP16", vec![2, 2], fp32(vec![0.5; 4])));
    let err = c
        .model_infer(request("types", "", inputs, vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("'in_fp16'") && err.message().contains("raw"),
        "{}",
        err.message()
    );
    s.stop().await;
}

#[tokio::test]
async fn error_codes() {
    let s = TestServer::start(repo_with(&["digits", "tiny"]), None).await;
    let mut c = s.grpc_client().await;
    let ok_input = || vec![input("input", "FP32", vec![1, 64], fp32(vec![0.0; 64]))];

    let e = c
        .model_infer(request("nope", "", ok_input(), vec![]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .model_infer(request("digits", "5", ok_input(), vec![]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("version 5"));
    let e = c
        .model_infer(request(
            "digits",
            "",
            vec![input("input", "FP32", vec![1, 65], fp32(vec![0.0; 65]))],
            vec![],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("[-1, 64]") && e.message().contains("[1, 65]"),
        "{}",
        e.message()
    );
    // Contents in the wrong field for the datatype.
    let wrong = Some(pb::InferTensorContents {
        int_contents: vec![0; 64],
        ..Default::default()
    });
    let e = c
        .model_infer(request(
            "digits",
            "",
            vec![input("input", "FP32", vec![1, 64], wrong)],
            vec![],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("int_contents"), "{}", e.message());
    // Raw bytes of the wrong size.
    let e = c
        .model_infer(request(
            "digits",
            "",
            vec![input("input", "FP32", vec![1, 64], None)],
            vec![vec![0; 255]],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("256 bytes") && e.message().contains("255"),
        "{}",
        e.message()
    );
    // raw_input_contents count not matching the inputs.
    let e = c
        .model_infer(request(
            "digits",
            "",
            vec![input("input", "FP32", vec![1, 64], None)],
            vec![vec![], vec![]],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // An unloaded model: its versions are listed but unavailable.
    c.repository_model_unload(pb::RepositoryModelUnloadRequest {
        repository_name: "".into(),
        model_name: "tiny".into(),
        parameters: Default::default(),
    })
    .await
    .unwrap();
    let tiny = || vec![input("input", "FP32", vec![1, 16], fp32(vec![0.0; 16]))];
    let e = c
        .model_infer(request("tiny", "", tiny(), vec![]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let e = c
        .model_infer(request("tiny", "1", tiny(), vec![]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("unloaded"));
    let ready = c
        .model_ready(pb::ModelReadyRequest {
            name: "tiny".into(),
            version: "".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!ready.ready);
    c.repository_model_load(pb::RepositoryModelLoadRequest {
        repository_name: "".into(),
        model_name: "tiny".into(),
        parameters: Default::default(),
    })
    .await
    .unwrap();
    let r = c
        .model_infer(request("tiny", "", tiny(), vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.outputs[0].contents.as_ref().unwrap().fp32_contents,
        vec![1.0; 16]
    );

    // Names that try to leave the repository.
    for name in ["../tiny", "/etc", "..", ".hidden"] {
        let e = c
            .repository_model_load(pb::RepositoryModelLoadRequest {
                repository_name: "".into(),
                model_name: name.into(),
                parameters: Default::default(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}");
    }
    let e = c
        .repository_model_load(pb::RepositoryModelLoadRequest {
            repository_name: "".into(),
            model_name: "absent".into(),
            parameters: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    s.stop().await;
}

#[tokio::test]
async fn statistics_and_index() {
    let s = TestServer::start(repo_with(&["digits", "tiny"]), None).await;
    let mut c = s.grpc_client().await;
    for _ in 0..3 {
        c.model_infer(request(
            "tiny",
            "",
            vec![input("input", "FP32", vec![4, 16], fp32(vec![1.0; 64]))],
            vec![],
        ))
        .await
        .unwrap();
    }
    let st = c
        .model_statistics(pb::ModelStatisticsRequest {
            name: "tiny".into(),
            version: "".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.model_stats.len(), 1);
    assert_eq!(st.model_stats[0].inference_count, 12);
    assert_eq!(st.model_stats[0].execution_count, 3);
    assert_eq!(
        st.model_stats[0]
            .inference_stats
            .as_ref()
            .unwrap()
            .success
            .as_ref()
            .unwrap()
            .count,
        3
    );
    assert!(st.model_stats[0].last_inference > 0);

    let index = c
        .repository_index(pb::RepositoryIndexRequest {
            repository_name: "".into(),
            ready: false,
        })
        .await
        .unwrap()
        .into_inner();
    let rows: Vec<(String, String, String)> = index
        .models
        .into_iter()
        .map(|m| (m.name, m.version, m.state))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("digits".into(), "1".into(), "READY".into()),
            ("digits".into(), "2".into(), "READY".into()),
            ("tiny".into(), "1".into(), "READY".into()),
        ]
    );
    s.stop().await;
}
