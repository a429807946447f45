//! Ground truth over the real server: every answer carries an id, labels
//! sent later by id (over HTTP and gRPC) are joined with what was
//! predicted, and the live accuracy, confusion matrix, health verdict and
//! shadow comparison equal what this test counts itself.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use infergate::grpc::pb;
use infergate::grpc::v1;
use serde_json::{json, Value};

#[tokio::test]
async fn live_accuracy_equals_the_tests_own_count() {
    let server = TestServer::start(repo_with(&["digits"]), None).await;
    let digits = Digits::load();
    // 120 requests of 1 row and 80 of 3 rows, half with the client's id.
    let mut sent: Vec<(String, Vec<i64>, Vec<i64>)> = Vec::new(); // id, predicted, truth
    let mut row = 0usize;
    let mut made = BTreeSet::new();
    for i in 0..200usize {
        let n = if i < 120 { 1 } else { 3 };
        let rows = &digits.features[row % 360..(row % 360) + n];
        let truth: Vec<i64> = (0..n).map(|k| digits.labels[(row % 360) + k]).collect();
        row += n;
        let client_id = (i % 2 == 0).then(|| format!("client-{i}"));
        let (status, v) = server
            .post(
                "/v2/models/digits/infer",
                &digits_body(rows, client_id.as_deref()),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let id = v["id"]
            .as_str()
            .expect("every answer carries an id")
            .to_string();
        match &client_id {
            Some(c) => assert_eq!(&id, c, "the client's id is echoed"),
            None => {
                // A UUIDv7: 36 characters, version digit 7, unique.
                assert_eq!(id.len(), 36, "{id}");
                assert_eq!(&id[14..15], "7", "{id}");
                assert!(made.insert(id.clone()), "ids are unique");
            }
        }
        sent.push((id, labels_of(&v), truth));
    }
    // Server-made ids sort by time.
    let server_ids: Vec<&String> = sent
        .iter()
        .map(|(id, _, _)| id)
        .filter(|id| !id.starts_with("client-"))
        .collect();
    let mut sorted = server_ids.clone();
    sorted.sort();
    assert_eq!(server_ids, sorted, "UUIDv7s sort as they were made");

    // Labels: the truth, except that every 7th request is labelled wrong
    // on purpose (class 9 - truth), so that accuracy is not just the
    // model's held-out figure.
    let mut given: Vec<(String, Vec<i64>)> = Vec::new();
    for (i, (id, _, truth)) in sent.iter().enumerate() {
        let label = if i % 7 == 0 {
            truth.iter().map(|t| 9 - t).collect()
        } else {
            truth.clone()
        };
        given.push((id.clone(), label));
    }
    // Half over HTTP (scalar labels for one-row requests, lists otherwise),
    // half over gRPC.
    let (http_half, grpc_half) = given.split_at(100);
    let items: Vec<Value> = http_half
        .iter()
        .map(|(id, l)| {
            if l.len() == 1 {
                json!({ "id": id, "label": l[0] })
            } else {
                json!({ "id": id, "label": l })
            }
        })
        .chain([json!({ "id": "never-sent", "label": 1 })])
        .collect();
    let (status, v) = server
        .post("/v2/models/digits/feedback", &json!({ "labels": items }))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["applied"], 100);
    assert_eq!(v["replaced"], 0);
    assert_eq!(v["unknown"], json!(["never-sent"]));

    let mut feedback = feedback_client(&server).await;
    let answer = feedback
        .send_labels(v1::SendLabelsRequest {
            model: "digits".into(),
            labels: grpc_half
                .iter()
                .map(|(id, l)| v1::Label {
                    id: id.clone(),
                    values: l.iter().map(|&x| x as f64).collect(),
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.applied, answer.replaced), (100, 0));
    assert!(answer.unknown.is_empty());

    // The test's own count.
    let mut right = 0u64;
    let mut rows = 0u64;
    let mut confusion: BTreeMap<(i64, i64), u64> = BTreeMap::new();
    for ((_, predicted, _), (_, label)) in sent.iter().zip(&given) {
        for (p, l) in predicted.iter().zip(label) {
            rows += 1;
            right += (p == l) as u64;
            *confusion.entry((*l, *p)).or_default() += 1;
        }
    }
    assert_eq!(rows, 120 + 80 * 3);
    let (status, report) = server.get("/v2/models/digits/accuracy").await;
    assert_eq!(status, 200, "{report}");
    let cum = &report["versions"]["2"]["cumulative"];
    assert_eq!(cum["labelled_rows"], rows);
    assert_eq!(cum["labelled_requests"], 200);
    assert_eq!(
        cum["accuracy"].as_f64().unwrap(),
        right as f64 / rows as f64
    );
    let cells: BTreeMap<(i64, i64), u64> = cum["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                (
                    c["label"].as_i64().unwrap(),
                    c["predicted"].as_i64().unwrap(),
                ),
                c["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(cells, confusion);
    // Per class: recall of class 3 = right 3s over labelled 3s.
    let labelled3: u64 = confusion
        .iter()
        .filter(|((l, _), _)| *l == 3)
        .map(|(_, n)| n)
        .sum();
    let right3 = confusion.get(&(3, 3)).copied().unwrap_or(0);
    assert_eq!(
        cum["classes"]["3"]["recall"].as_f64().unwrap(),
        right3 as f64 / labelled3 as f64
    );
    assert_eq!(report["versions"]["2"]["task"], "classification");
    assert!(!report["versions"]["2"]["windows"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        metric("infergate_live_accuracy", "model=\"digits\",version=\"2\""),
        Some(right as f64 / rows as f64)
    );

    // A second label for an id replaces the first: the first request
    // (labelled wrong on purpose) now labelled right.
    let (first_id, first_pred, first_truth) = &sent[0];
    let (status, v) = server
        .post(
            "/v2/models/digits/feedback",
            &json!({ "labels": [{ "id": first_id, "label": first_truth[0] }] }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["applied"].clone(), v["replaced"].clone()),
        (json!(1), json!(1))
    );
    let was_right = (first_pred[0] == 9 - first_truth[0]) as u64;
    let now_right = (first_pred[0] == first_truth[0]) as u64;
    let (_, report) = server.get("/v2/models/digits/accuracy").await;
    let cum = &report["versions"]["2"]["cumulative"];
    assert_eq!(cum["labelled_rows"], rows, "replaced, not added");
    assert_eq!(
        cum["accuracy"].as_f64().unwrap(),
        (right - was_right + now_right) as f64 / rows as f64
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_labels_are_named_and_the_good_ones_applied() {
    let server = TestServer::start(repo_with(&["digits", "tiny"]), None).await;
    let digits = Digits::load();
    let (_, one) = server
        .post(
            "/v2/models/digits/infer",
            &digits_body(&digits.features[0..1], Some("one")),
        )
        .await;
    let (_, two) = server
        .post(
            "/v2/models/digits/infer",
            &digits_body(&digits.features[1..3], Some("two")),
        )
        .await;
    assert_eq!(
        (one["id"].clone(), two["id"].clone()),
        (json!("one"), json!("two"))
    );

    let (status, v) = server
        .post(
            "/v2/models/digits/feedback",
            &json!({ "labels": [
                { "id": "one", "label": "seven" },
                { "id": "two", "label": 3 },
                { "id": "one", "label": 2.5 },
                { "id": "one", "label": -1 },
                { "id": "two", "label": [1, 2] },
            ] }),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("4 of the labels sent were refused"),
        "{error}"
    );
    assert!(error.contains("labels[0] id 'one'"), "{error}");
    assert!(error.contains("\"seven\" is not a number"), "{error}");
    assert!(error.contains("2 row(s) but 1"), "{error}");
    let invalid: Vec<u64> = v["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"].as_u64().unwrap())
        .collect();
    assert_eq!(invalid, vec![0, 1, 2, 3]);
    assert_eq!(v["applied"], 1, "the one good label was applied");
    let (_, report) = server.get("/v2/models/digits/accuracy").await;
    assert_eq!(report["versions"]["2"]["cumulative"]["labelled_rows"], 2);

    // A body that is not a feedback body at all; an unknown model; a model
    // whose outputs cannot be judged; a wrong method.
    let r = server
        .client
        .post(server.url("/v2/models/digits/feedback"))
        .body("{\"labels\": 3}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("invalid feedback body"),
        "{e}"
    );
    let (status, v) = server
        .post("/v2/models/nope/feedback", &json!({ "labels": [] }))
        .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = server.get("/v2/models/digits/feedback").await;
    assert_eq!(status, 405, "{v}");
    // tiny keeps no predictions (no [feedback] in its config.toml).
    let (status, v) = server
        .post("/v2/models/tiny/feedback", &json!({ "labels": [] }))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("add a [feedback] section"),
        "{v}"
    );

    // gRPC: the same refusal, as INVALID_ARGUMENT naming the label.
    let mut feedback = feedback_client(&server).await;
    let status = feedback
        .send_labels(v1::SendLabelsRequest {
            model: "digits".into(),
            labels: vec![
                v1::Label {
                    id: "one".into(),
                    values: vec![],
                },
                v1::Label {
                    id: "one".into(),
                    values: vec![4.0],
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("at least one value"),
        "{}",
        status.message()
    );
    let (_, report) = server.get("/v2/models/digits/accuracy").await;
    assert_eq!(report["versions"]["2"]["cumulative"]["labelled_rows"], 3);
    let status = feedback
        .send_labels(v1::SendLabelsRequest {
            model: "nope".into(),
            labels: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    // Still serving.
    let (status, _) = server
        .post(
            "/v2/models/digits/infer",
            &digits_body(&digits.features[0..1], None),
        )
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn grpc_answers_carry_ids_too() {
    let server = TestServer::start(repo_with(&["digits"]), None).await;
    let digits = Digits::load();
    let mut client = server.grpc_client().await;
    let request = |id: &str| pb::ModelInferRequest {
        model_name: "digits".into(),
        id: id.into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 64],
            contents: Some(pb::InferTensorContents {
                fp32_contents: digits.features[5].clone(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let given = client
        .model_infer(request("g-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(given.id, "g-1");
    let made = client.model_infer(request("")).await.unwrap().into_inner();
    assert_eq!(made.id.len(), 36, "{}", made.id);
    let mut feedback = feedback_client(&server).await;
    let answer = feedback
        .send_labels(v1::SendLabelsRequest {
            model: "digits".into(),
            labels: vec![
                v1::Label {
                    id: made.id.clone(),
                    values: vec![digits.labels[5] as f64],
                },
                v1::Label {
                    id: "g-1".into(),
                    values: vec![digits.labels[5] as f64],
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.applied, 2);
    server.stop().await;
}

#[tokio::test]
async fn health_says_wrong_when_live_accuracy_falls_below_training() {
    let server = TestServer::start(repo_with(&["digits"]), None).await;
    let digits = Digits::load();
    let mut ids = Vec::new();
    for i in 0..120usize {
        let (status, v) = server
            .post(
                "/v2/models/digits/infer",
                &digits_body(&digits.features[i..i + 1], None),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        ids.push((v["id"].as_str().unwrap().to_string(), labels_of(&v)[0]));
    }
    let s = &server;
    let send = |labels: Vec<Value>| async move {
        let (status, v) = s
            .post("/v2/models/digits/feedback", &json!({ "labels": labels }))
            .await;
        assert_eq!(status, 200, "{v}");
    };
    let health = || async move {
        let (status, v) = s.get("/v2/models/digits/health").await;
        assert_eq!(status, 200, "{v}");
        v["staleness"]["live_accuracy"].clone()
    };
    // 50 labels, all agreeing with the model: fewer than min_labels (100),
    // so not judged yet.
    send(
        ids[..50]
            .iter()
            .map(|(id, p)| json!({ "id": id, "label": p }))
            .collect(),
    )
    .await;
    let live = health().await;
    assert_eq!(live["verdict"], "ok", "{live}");
    assert!(
        live["reason"]
            .as_str()
            .unwrap()
            .contains("fewer than min_labels"),
        "{live}"
    );
    // 70 more, all wrong: 50 of 120 right, far below what it was trained to.
    send(
        ids[50..]
            .iter()
            .map(|(id, p)| json!({ "id": id, "label": (p + 1) % 10 }))
            .collect(),
    )
    .await;
    let live = health().await;
    assert_eq!(live["verdict"], "fail", "{live}");
    assert_eq!(live["labelled_rows"], 120);
    assert_eq!(live["accuracy"].as_f64().unwrap(), 50.0 / 120.0);
    let meta: Value = serde_json::from_slice(
        &std::fs::read(root().join("models/digits/2/metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(live["training_accuracy"], meta["heldout_accuracy"]);
    let (_, v) = server.get("/v2/models/digits/health").await;
    assert_eq!(v["staleness"]["verdict"], "fail", "{v}");
    assert_eq!(v["verdict"], "fail");
    server.stop().await;
}

#[tokio::test]
async fn the_shadow_report_shows_live_accuracy_of_both() {
    let server = TestServer::start(repo_with(&["digits"]), None).await;
    let (status, v) = server
        .post(
            "/v2/models/digits/shadow",
            &json!({ "version": 1, "sample_rate": 1.0 }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let digits = Digits::load();
    let mut labels = Vec::new();
    let (mut primary_right, mut shadow_right) = (0u64, 0u64);
    for i in 0..60usize {
        let (status, v) = server
            .post(
                "/v2/models/digits/infer",
                &digits_body(&digits.features[i..i + 1], None),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["model_version"], "2");
        let truth = digits.labels[i];
        primary_right += (labels_of(&v)[0] == truth) as u64;
        shadow_right += (digits.expected_label("1", i) == truth) as u64;
        labels.push(json!({ "id": v["id"], "label": truth }));
    }
    // Every mirror has settled before the labels go in.
    shadow_report(&server, 60).await;
    let (status, v) = server
        .post("/v2/models/digits/feedback", &json!({ "labels": labels }))
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, report) = server.get("/v2/models/digits/shadow").await;
    let live = &report["live_accuracy"];
    assert_eq!(live["primary"]["labelled_rows"], 60, "{report}");
    assert_eq!(live["shadow"]["labelled_rows"], 60);
    assert_eq!(
        live["primary"]["accuracy"].as_f64().unwrap(),
        primary_right as f64 / 60.0
    );
    assert_eq!(
        live["shadow"]["accuracy"].as_f64().unwrap(),
        shadow_right as f64 / 60.0
    );
    let (_, acc) = server.get("/v2/models/digits/accuracy").await;
    assert_eq!(
        acc["shadow"]["version 1 (primary 2)"]["shadow"],
        live["shadow"]
    );
    server.stop().await;
}
