//! Slow and greedy clients over real sockets: a client that trickles its
//! headers or its body, or sends nothing, is cut off within the timeout
//! while others are served; connections beyond `--max-connections` are
//! refused at accept, and service resumes for a client that arrives once
//! they close.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn tiny_body() -> serde_json::Value {
    json!({ "inputs": [{ "name": "input", "shape": [1, 16], "datatype": "FP32", "data": vec![0.5f32; 16] }] })
}

async fn limited(max_connections: usize, header_timeout: Duration) -> TestServer {
    TestServer::start_with(repo_with(&["tiny"]), move |c| {
        c.limits.header_timeout = header_timeout;
        c.limits.body_timeout = Duration::from_secs(1);
        c.limits.max_connections = max_connections;
    })
    .await
}

/// Sends `head` then one byte of `trickle` every `every` until the server
/// closes the connection; returns how long that took and what it answered.
fn trickle(
    addr: std::net::SocketAddr,
    head: &[u8],
    trickle: &[u8],
    every: Duration,
) -> (Duration, String) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s.write_all(head).unwrap();
    let mut answer = Vec::new();
    for &b in trickle.iter().cycle() {
        if started.elapsed() > Duration::from_secs(20) {
            panic!("still open after 20 s");
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break, // reset
        }
        std::thread::sleep(every);
        if s.write_all(&[b]).is_err() {
            break;
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

/// Connects and sends nothing; returns how long until the server closed.
fn silent(addr: std::net::SocketAddr) -> (Duration, String) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // An HTTP/2 server speaks first (its SETTINGS): read until it closes.
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&got).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_others_are_served() {
    let server = limited(64, Duration::from_secs(1)).await;
    let http = server.http;
    // Headers a byte every 200 ms: closed after the 1 s header timeout.
    let headers = tokio::task::spawn_blocking(move || {
        trickle(
            http,
            b"POST /v2/models/tiny/infer HTTP/1.1\r\n",
            b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            Duration::from_millis(200),
        )
    });
    // A body of 1000 bytes, a byte every 200 ms: 408 after the 1 s body timeout.
    let body = tokio::task::spawn_blocking(move || {
        trickle(
            http,
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",
            b" ",
            Duration::from_millis(200),
        )
    });
    // Nothing at all, on both ports.
    let grpc = server.grpc;
    let silent = |addr| tokio::task::spawn_blocking(move || silent(addr));
    let (idle_http, idle_grpc) = (silent(http), silent(grpc));
    // Meanwhile the others are served.
    for _ in 0..20 {
        let (status, v) = server.post("/v2/models/tiny/infer", &tiny_body()).await;
        assert_eq!(status, 200, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (took, _) = headers.await.unwrap();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "header trickle closed after {took:?}"
    );
    let (took, answer) = body.await.unwrap();
    assert!(
        took < Duration::from_secs(5),
        "body trickle closed after {took:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-timeout"), "{answer}");
    for (what, idle) in [("http", idle_http), ("grpc", idle_grpc)] {
        let (took, _) = idle.await.unwrap();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{what}: silent client closed after {took:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_and_service_resumes() {
    // Idle connections are closed after the header timeout: long enough
    // here that the held ones keep their slots while the test looks.
    let server = limited(8, Duration::from_secs(10)).await;
    let before = metric("infergate_connections_refused_total", "protocol=\"http\"").unwrap_or(0.0);
    // Ten times the limit, opened at once and held.
    let held: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(server.http).unwrap())
        .collect();
    server
        .wait_for("the refusals to be counted", || async {
            metric("infergate_connections_refused_total", "protocol=\"http\"").unwrap_or(0.0)
                >= before + 72.0
        })
        .await;
    // The eight accepted ones hold every slot: a new client is refused...
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let refused = client
        .post(server.url("/v2/models/tiny/infer"))
        .json(&tiny_body())
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a ninth connection is refused: {refused:?}"
    );
    // ...until they close; then it is served.
    drop(held);
    let mut served = false;
    for _ in 0..100 {
        if let Ok(r) = client
            .post(server.url("/v2/models/tiny/infer"))
            .json(&tiny_body())
            .send()
            .await
        {
            assert_eq!(r.status(), 200);
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "service resumes once the held connections close");
    server.stop().await;
}
