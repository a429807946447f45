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

#[tokio::test]
async fn every_datatype_round_trips_raw_and_typed() {
    use infergate::tensor::{DataType, TensorData};
    let s = TestServer::start(repo_with(&["types"]), None).await;
    let mut c = s.grpc_client().await;
    let values: Vec<(&str, TensorData)> = vec![
        ("bool", TensorData::Bool(vec![true, false])),
        ("uint8", TensorData::Uint8(vec![0, 255])),
        ("uint16", TensorData::Uint16(vec![1, 65535])),
        ("uint32", TensorData::Uint32(vec![2, u32::MAX])),
        ("uint64", TensorData::Uint64(vec![3, u64::MAX])),
        ("int8", TensorData::Int8(vec![-128, 127])),
        ("int16", TensorData::Int16(vec![i16::MIN, i16::MAX])),
        ("int32", TensorData::Int32(vec![i32::MIN, i32::MAX])),
        ("int64", TensorData::Int64(vec![i64::MIN, i64::MAX])),
        (
            "fp16",
            TensorData::Fp16(vec![half::f16::from_f32(0.5), half::f16::MAX]),
        ),
        ("fp32", TensorData::Fp32(vec![0.1, f32::MAX])),
        ("fp64", TensorData::Fp64(vec![-0.1, f64::MIN_POSITIVE])),
        (
            "bytes",
            TensorData::Bytes(vec![b"".to_vec(), "ünïcode".as_bytes().to_vec()]),
        ),
    ];
    // Raw: every type, FP16 included.
    let inputs = values
        .iter()
        .map(|(s, d)| input(&format!("in_{s}"), d.datatype().as_str(), vec![1, 2], None))
        .collect();
    let raw = values.iter().map(|(_, d)| d.to_raw()).collect();
    let r = c
        .model_infer(request("types", "", inputs, raw))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.raw_output_contents.len(), values.len());
    for (out, bytes) in r.outputs.iter().zip(&r.raw_output_contents) {
        let suffix = out.name.strip_prefix("out_").unwrap();
        let want = &values.iter().find(|(s, _)| *s == suffix).unwrap().1;
        let dt = DataType::parse(&out.datatype).unwrap();
        assert_eq!(
            &TensorData::from_raw(dt, bytes, 2).unwrap(),
            want,
            "{suffix}"
        );
    }

    // Typed contents: all but FP16, which the protocol can only carry raw.
    let typed = |d: &TensorData| {
        let mut c = pb::InferTensorContents::default();
        match d.clone() {
            TensorData::Bool(v) => c.bool_contents = v,
            TensorData::Uint8(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
            TensorData::Uint16(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
            TensorData::Uint32(v) => c.uint_contents = v,
            TensorData::Uint64(v) => c.uint64_contents = v,
            TensorData::Int8(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
            TensorData::Int16(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
            TensorData::Int32(v) => c.int_contents = v,
            TensorData::Int64(v) => c.int64_contents = v,
            TensorData::Fp32(v) => c.fp32_contents = v,
            TensorData::Fp64(v) => c.fp64_contents = v,
            TensorData::Bytes(v) => {
                c.bytes_contents = v.into_iter().map(bytes::Bytes::from).collect()
            }
            TensorData::Fp16(_) => unreachable!(),
        }
        Some(c)
    };
    let mut inputs: Vec<InferInputTensor> = values
        .iter()
        .filter(|(s, _)| *s != "fp16")
        .map(|(s, d)| {
            input(
                &format!("in_{s}"),
                d.datatype().as_str(),
                vec![2, 1],
                typed(d),
            )
        })
        .collect();
    inputs.push(input("in_fp16", "FP16", vec![2, 1], None));
    let err = c
        .model_infer(request("types", "", inputs.clone(), vec![]))
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
