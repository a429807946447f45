//! The rollout state in `<model>/rollout.toml`, against real servers on
//! loopback: a restart comes back with the promoted primary, its rollback
//! target and its shadow; two servers on one repository (replicas) follow
//! a promote or rollback sent to either, with no failed request on either;
//! a hand edit is applied, a broken one is not and says why; two writers
//! at once converge on the last write; a file that cannot be written is
//! reported in the answer.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn one_row() -> Value {
    digits_body(&[Digits::load().features[0].clone()], None)
}

/// The version that answers a request without a version.
async fn answering(s: &TestServer) -> String {
    let (status, v) = s.post("/v2/models/digits/infer", &one_row()).await;
    assert_eq!(status, 200, "{v}");
    v["model_version"].as_str().unwrap().to_string()
}

fn rollout_text(s: &TestServer) -> String {
    std::fs::read_to_string(s.repo.path().join("digits/rollout.toml")).unwrap_or_default()
}

async fn delete(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.client.delete(s.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_restart_comes_back_with_the_primary_its_rollback_target_and_the_shadow() {
    let repo = Arc::new(repo_with(&["digits"]));
    let s = TestServer::start(repo.clone(), None).await;
    assert_eq!(answering(&s).await, "2");
    assert_eq!(rollout_text(&s), "", "nothing chosen yet: no file");

    let (status, v) = s
        .post("/v2/models/digits/promote", &json!({ "version": 1 }))
        .await;
    assert_eq!((status, v["primary"].clone()), (200, json!("1")), "{v}");
    assert_eq!(v["rollout_file"], json!({ "generation": 1 }), "{v}");
    let text = rollout_text(&s);
    for line in ["generation = 1", "primary = 1", "history = [2]"] {
        assert!(text.contains(line), "{text}");
    }
    let (status, v) = s
        .post(
            "/v2/models/digits/shadow",
            &json!({ "version": 2, "sample_rate": 0.5, "max_inflight": 8 }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rollout_file"], json!({ "generation": 2 }), "{v}");
    s.stop().await;

    let s = TestServer::start(repo.clone(), None).await;
    assert_eq!(answering(&s).await, "1", "the promoted primary");
    let (status, report) = s.get("/v2/models/digits/shadow").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["target"], json!({ "version": 2 }));
    assert_eq!(
        (
            report["sample_rate"].clone(),
            report["max_inflight"].clone()
        ),
        (json!(0.5), json!(8))
    );
    // Nothing changed by the restart itself: no write.
    assert!(rollout_text(&s).contains("generation = 2"));
    let (status, v) = delete(&s, "/v2/models/digits/shadow").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rollout_file"], json!({ "generation": 3 }), "{v}");
    // The rollback target survived the restart.
    let (status, v) = s.post("/v2/models/digits/rollback", &json!({})).await;
    assert_eq!((status, v["primary"].clone()), (200, json!("2")), "{v}");
    assert_eq!(answering(&s).await, "2");
    s.stop().await;

    let s = TestServer::start(repo, None).await;
    assert_eq!(answering(&s).await, "2");
    assert_eq!(s.get("/v2/models/digits/shadow").await.0, 409, "no shadow");
    assert!(
        rollout_text(&s).contains("generation = 4"),
        "{}",
        rollout_text(&s)
    );
    s.stop().await;
}

/// Sends requests without a version to `s` until `stop`: the versions
/// that answered, in order, and the failures.
fn load(
    s: &TestServer,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<String>, Vec<String>)> {
    let (client, url) = (s.client.clone(), s.url("/v2/models/digits/infer"));
    tokio::spawn(async move {
        let (mut versions, mut failures) = (Vec::new(), Vec::new());
        let body = one_row();
        while !stop.load(Ordering::Relaxed) {
            match client.post(&url).json(&body).send().await {
                Ok(r) if r.status() == 200 => {
                    let v: Value = r.json().await.unwrap();
                    versions.push(v["model_version"].as_str().unwrap().to_string());
                }
                Ok(r) => failures.push(format!("{}: {}", r.status(), r.text().await.unwrap())),
                Err(e) => failures.push(e.to_string()),
            }
        }
        (versions, failures)
    })
}

#[tokio::test]
async fn replicas_on_one_repository_follow_a_promote_sent_to_either() {
    let repo = Arc::new(repo_with(&["digits"]));
    let poll = Some(Duration::from_millis(200));
    let a = TestServer::start(repo.clone(), poll).await;
    let b = TestServer::start(repo.clone(), poll).await;
    let stop = Arc::new(AtomicBool::new(false));
    let loads = [
        load(&a, stop.clone()),
        load(&a, stop.clone()),
        load(&b, stop.clone()),
        load(&b, stop.clone()),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, v) = a
        .post("/v2/models/digits/promote", &json!({ "version": 1 }))
        .await;
    assert_eq!((status, v["primary"].clone()), (200, json!("1")), "{v}");
    let sent = Instant::now();
    b.wait_for("b to follow the promote sent to a", || async {
        answering(&b).await == "1"
    })
    .await;
    let followed = sent.elapsed();
    assert!(followed < Duration::from_secs(5), "{followed:?}");

    let (status, v) = b.post("/v2/models/digits/rollback", &json!({})).await;
    assert_eq!((status, v["primary"].clone()), (200, json!("2")), "{v}");
    a.wait_for("a to follow the rollback sent to b", || async {
        answering(&a).await == "2"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for (k, l) in loads.into_iter().enumerate() {
        let (versions, failures) = l.await.unwrap();
        assert!(failures.is_empty(), "client {k}: {failures:?}");
        // Each client saw 2, then 1, then 2 again, in that order.
        let mut phases = versions.clone();
        phases.dedup();
        assert_eq!(
            phases,
            ["2", "1", "2"],
            "client {k}: {} requests",
            versions.len()
        );
    }
    eprintln!("replica b followed a's promote in {followed:?} (poll 200 ms)");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn hand_edits_are_applied_and_broken_ones_keep_what_serves() {
    let s = TestServer::start(repo_with(&["digits"]), Some(Duration::from_millis(100))).await;
    let path = s.repo.path().join("digits/rollout.toml");
    std::fs::write(&path, "generation = 0\nprimary = 1\n").unwrap();
    s.wait_for("the hand edit applied", || async {
        answering(&s).await == "1"
    })
    .await;
    // A mistake: named, and what serves stays.
    std::fs::write(&path, "generation = 1\nprimry = 2\n").unwrap();
    s.next_poll().await;
    s.next_poll().await;
    assert_eq!(answering(&s).await, "1");
    // A version that is not on disk: not applied (and tried again).
    std::fs::write(&path, "generation = 2\nprimary = 7\n").unwrap();
    s.next_poll().await;
    assert_eq!(answering(&s).await, "1");
    // Put right: applied, with a shadow.
    std::fs::write(
        &path,
        "generation = 3\nprimary = 2\nhistory = [1]\n[shadow]\nversion = 1\nsample_rate = 0.25\n",
    )
    .unwrap();
    s.wait_for("the corrected edit applied", || async {
        answering(&s).await == "2"
    })
    .await;
    let (status, report) = s.get("/v2/models/digits/shadow").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["sample_rate"], 0.25);
    // The server applied it and wrote nothing over it.
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with("generation = 3"));
    s.stop().await;
}

#[tokio::test]
async fn two_writers_at_once_converge_on_the_last_write() {
    let repo = Arc::new(repo_with(&["digits"]));
    let poll = Some(Duration::from_millis(100));
    let a = TestServer::start(repo.clone(), poll).await;
    let b = TestServer::start(repo.clone(), poll).await;
    let promote = |s: &TestServer, v: u64| {
        let (client, url) = (s.client.clone(), s.url("/v2/models/digits/promote"));
        async move {
            let r = client
                .post(url)
                .json(&json!({ "version": v }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    for _ in 0..5 {
        tokio::join!(promote(&a, 1), promote(&b, 2));
        // Both serve what the file says, whoever's rename came last.
        a.wait_for("both replicas on the file's primary", || async {
            let text = rollout_text(&a);
            let primary = text
                .lines()
                .find_map(|l| l.strip_prefix("primary = "))
                .unwrap_or("?")
                .to_string();
            answering(&a).await == primary && answering(&b).await == primary
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_rollout_file_that_cannot_be_written_is_reported() {
    let s = TestServer::start(repo_with(&["digits"]), None).await;
    // A folder where the file would go: it can be neither read nor replaced.
    std::fs::create_dir_all(s.repo.path().join("digits/rollout.toml/x")).unwrap();
    let (status, v) = s
        .post("/v2/models/digits/promote", &json!({ "version": 1 }))
        .await;
    assert_eq!(status, 200, "{v}");
    let error = v["rollout_file"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot write") && error.contains("until it restarts"),
        "{v}"
    );
    // The change itself holds in this server.
    assert_eq!(answering(&s).await, "1");
    s.stop().await;
}
