//! The V2 HTTP/REST adapter on hyper: routes, wire format <-> core types,
//! and the one mapping from core errors to HTTP statuses. No logic of its own.
//!
//! Unknown model or version: **404**; a request that does not fit the model
//! (shape, datatype, names, bad JSON): **400**; a version not ready, a full
//! queue or a server shutting down: **503**. Every error body is
//! `{"error": "<message>"}`.

mod body;
pub mod codec;
mod metadata;
mod ui;

pub use body::decompress_for_fuzz;
use body::{read_body, Refusal};
pub use metadata::server_metadata;
use metadata::{model_metadata, model_statistics};

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{Error, ErrorKind};
use crate::monitor::InflightGuard;
use crate::service::Service;

pub(crate) type Body = Full<Bytes>;

/// Accepts connections until `shutdown` flips, then lets open requests
/// finish (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    state: Arc<Service>,
    limits: crate::listen::Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move {
            let _in_flight = InflightGuard::enter(&state.http_in_flight);
            Ok::<_, Infallible>(handle(&state, req).await)
        }
    });
    let acceptor = crate::listen::Acceptor::new(listener, "http", &limits);
    serve_connections(acceptor, builder(&limits), tls, shutdown, service).await;
}

/// The metrics port: `GET /metrics` (any path, in fact) in Prometheus'
/// text format, within the same connection limits as the HTTP port and,
/// with `--tls-metrics`, behind the same certificate.
pub async fn serve_metrics(
    listener: TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    limits: crate::listen::Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |_req| {
        let body = crate::monitor::scrape(&handle).into_bytes();
        async move { Ok::<_, Infallible>(respond(StatusCode::OK, "text/plain; version=0.0.4", body)) }
    });
    let acceptor = crate::listen::Acceptor::new(listener, "metrics", &limits);
    serve_connections(acceptor, builder(&limits), tls, shutdown, service).await;
}

fn builder(limits: &crate::listen::Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header timeout also closes HTTP/1 keep-alive connections idle
    // for as long: hyper's header timer runs while it waits for the next
    // request's head.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // Dead peers are found by TCP keep-alive (set at accept), not HTTP/2
    // pings: hyper's ping bookkeeping takes a lock on every frame.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams);
    builder
}

/// The connection loop of both HTTP ports: each accepted connection (after
/// its TLS handshake, when there is TLS) is served on its own task; on
/// `shutdown`, accepting stops and open connections finish their requests.
async fn serve_connections<S>(
    mut acceptor: crate::listen::Acceptor,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    service: S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            stream = acceptor.accept() => {
                let service = service.clone();
                match &tls {
                    None => {
                        let stream = crate::listen::Stream::Plain(stream);
                        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                    // The handshake in the connection's own task: a slow
                    // one holds up no other client. Such a connection
                    // closes gracefully on shutdown by itself.
                    Some(tls) => {
                        let (tls, builder, mut stop) = (tls.clone(), builder.clone(), shutdown.clone());
                        let within = acceptor.handshake_timeout();
                        tokio::spawn(async move {
                            let Some(stream) = crate::listen::handshake(&tls, stream, within).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                            tokio::pin!(conn);
                            tokio::select! {
                                _ = conn.as_mut() => {}
                                _ = stop.changed() => {
                                    conn.as_mut().graceful_shutdown();
                                    let _ = conn.await;
                                }
                            }
                        });
                    }
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(acceptor);
    graceful.shutdown().await;
}

/// The one place core errors become HTTP statuses.
pub fn status_of(error: &Error) -> StatusCode {
    match error.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(value).expect("JSON values serialise"),
    )
}

pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({ "error": message.into() }))
}

fn from_error(error: &Error) -> Response<Body> {
    let mut r = error_response(status_of(error), error.to_string());
    if let Some(seconds) = error.retry_after() {
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    r
}

/// Live/ready answers: 200 with an empty body, as the spec has it.
fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

async fn handle(state: &Service, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let not_allowed = || {
        error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        )
    };

    match segments.as_slice() {
        // The page for people (see `ui`).
        [""] => match method {
            Method::GET | Method::HEAD => ui::redirect(),
            _ => not_allowed(),
        },
        ["ui", file @ ..] if file.len() <= 1 => match method {
            Method::GET | Method::HEAD => ui::asset(file.first().copied().unwrap_or(""))
                .unwrap_or_else(|| {
                    error_response(StatusCode::NOT_FOUND, format!("no such file: {path}"))
                }),
            _ => not_allowed(),
        },
        ["v2"] => match method {
            Method::GET => json_response(StatusCode::OK, &server_metadata()),
            _ => not_allowed(),
        },
        ["v2", "health", "live"] => match method {
            Method::GET => empty(StatusCode::OK),
            _ => not_allowed(),
        },
        ["v2", "health", "ready"] => match method {
            Method::GET if state.is_ready() => empty(StatusCode::OK),
            Method::GET => empty(StatusCode::SERVICE_UNAVAILABLE),
            _ => not_allowed(),
        },
        ["v2", "repository", "index"] => match method {
            Method::POST => {
                let body = match read_body(state, req).await {
                    Ok(b) => b,
                    Err(r) => return r.into_response(),
                };
                let ready_only = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("ready").and_then(Value::as_bool))
                    .unwrap_or(false);
                let index = state.index(ready_only);
                json_response(
                    StatusCode::OK,
                    &serde_json::to_value(index).expect("index serialises"),
                )
            }
            _ => not_allowed(),
        },
        ["v2", "repository", "models", model, action @ ("load" | "unload")] => {
            if method != Method::POST {
                return not_allowed();
            }
            if let Err(e) = state.authorize(authorization(&req)) {
                return from_error(&e);
            }
            let result = if *action == "load" {
                state.load_model(model).await
            } else {
                state.unload_model(model).await
            };
            match result {
                Ok(()) => json_response(StatusCode::OK, &json!({})),
                Err(e) => from_error(&e),
            }
        }
        // Triton's all-models statistics; a model called "stats" is shadowed here.
        ["v2", "models", "stats"] => match method {
            Method::GET => match model_statistics(state, None, None) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => from_error(&e),
            },
            _ => not_allowed(),
        },
        ["v2", "models", model, rest @ ..] => {
            let (version, rest) = match rest {
                ["versions", v, rest @ ..] => (Some(*v), rest),
                other => (None, other),
            };
            let (model, version) = (model.to_string(), version.map(str::to_string));
            model_route(state, req, &path, &model, version.as_deref(), rest).await
        }
        _ => error_response(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// The routes under `/v2/models/{model}[/versions/{version}]/…`.
async fn model_route(
    state: &Service,
    req: Request<Incoming>,
    path: &str,
    model: &str,
    version: Option<&str>,
    rest: &[&str],
) -> Response<Body> {
    let method = req.method().clone();
    let not_allowed = || {
        error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        )
    };
    match (rest, &method) {
        ([], &Method::GET) => match model_metadata(state, model, version) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => from_error(&e),
        },
        (["ready"], &Method::GET) => match state.resolve(model, version) {
            Ok(_) => empty(StatusCode::OK),
            Err(e) => from_error(&e),
        },
        (["stats"], &Method::GET) => match model_statistics(state, Some(model), version) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => from_error(&e),
        },
        (["health"], &Method::GET) => match state.health(model, version) {
            Ok(report) => json_response(
                StatusCode::OK,
                &serde_json::to_value(report).expect("report serialises"),
            ),
            Err(e) => from_error(&e),
        },
        (["promote" | "rollback"], &Method::POST) if version.is_none() => {
            if let Err(e) = state.authorize(authorization(&req)) {
                return from_error(&e);
            }
            let promote = rest == ["promote"];
            match control(state, req, model, promote).await {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => from_error(&e),
            }
        }
        (["shadow"], &(Method::GET | Method::POST | Method::DELETE)) if version.is_none() => {
            match shadow(state, req, model).await {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => from_error(&e),
            }
        }
        (["compare"], &Method::POST) if version.is_none() => {
            match compare(state, req, model).await {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => from_error(&e),
            }
        }
        (["feedback"], &Method::POST) if version.is_none() => {
            let body = match read_body(state, req).await {
                Ok(b) => b,
                Err(r) => return r.into_response(),
            };
            let labels = match codec::decode_labels(&body) {
                Ok(l) => l,
                Err(e) => return from_error(&e),
            };
            match state.feedback(model, labels) {
                Ok(outcome) => json_response(
                    StatusCode::OK,
                    &serde_json::to_value(outcome).expect("serialises"),
                ),
                // The valid labels were applied: say which were not, and
                // what the rest did.
                Err(e) => match &e {
                    Error::InvalidLabels {
                        applied,
                        replaced,
                        unknown,
                        invalid,
                    } => json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({
                            "error": e.to_string(),
                            "applied": applied,
                            "replaced": replaced,
                            "unknown": unknown,
                            "invalid": invalid,
                        }),
                    ),
                    _ => from_error(&e),
                },
            }
        }
        (["accuracy"], &Method::GET) if version.is_none() => match state.accuracy(model) {
            Ok(report) => json_response(
                StatusCode::OK,
                &serde_json::to_value(report).expect("report serialises"),
            ),
            Err(e) => from_error(&e),
        },
        (["checks"], &Method::POST) if version.is_none() => match state.run_checks(model) {
            Ok(report) => json_response(
                StatusCode::OK,
                &serde_json::to_value(&*report).expect("report serialises"),
            ),
            Err(e) => from_error(&e),
        },
        (["checks"], &Method::GET) if version.is_none() => match state.checks(model) {
            Ok(view) => json_response(
                StatusCode::OK,
                &serde_json::to_value(view).expect("report serialises"),
            ),
            Err(e) => from_error(&e),
        },
        (["infer"], &Method::POST) => infer(state, req, model, version).await,
        ([] | ["ready"] | ["stats"] | ["health"] | ["infer"], _) => not_allowed(),
        (
            ["promote" | "rollback" | "shadow" | "compare" | "feedback" | "accuracy" | "checks"],
            _,
        ) if version.is_none() => not_allowed(),
        _ => error_response(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

fn authorization(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// `POST …/promote` with `{"version": V}` (a number or its string), and
/// `POST …/rollback` (any body): which version serves now, and before.
async fn control(
    state: &Service,
    req: Request<Incoming>,
    model: &str,
    promote: bool,
) -> Result<Value, Error> {
    let primary = if promote {
        let body = read_body(state, req)
            .await
            .map_err(|Refusal(_, message)| Error::BadRequest(message))?;
        state.promote(model, &body).await?
    } else {
        state.rollback(model).await?
    };
    Ok(serde_json::to_value(primary).expect("serialises"))
}

/// `GET` (the report), `POST` (start: `{"version": V}` or `{"model": M}`,
/// `"sample_rate"`, `"max_inflight"`), `DELETE` (stop) on `…/shadow`.
async fn shadow(state: &Service, req: Request<Incoming>, model: &str) -> Result<Value, Error> {
    let report = match *req.method() {
        Method::GET => state.shadow_report(model)?,
        Method::DELETE => {
            state.authorize(authorization(&req))?;
            state.stop_shadow(model).await?
        }
        _ => {
            state.authorize(authorization(&req))?;
            let body = read_body(state, req)
                .await
                .map_err(|Refusal(_, message)| Error::BadRequest(message))?;
            state.start_shadow(model, &body).await?
        }
    };
    Ok(serde_json::to_value(report).expect("report serialises"))
}

/// `POST …/compare`: a V2 infer request run on the primary and on the
/// candidate (`?version=V`, else the shadow's target), both answers and
/// their differences.
async fn compare(state: &Service, req: Request<Incoming>, model: &str) -> Result<Value, Error> {
    let candidate = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("version=")))
        .map(str::to_string);
    let header_length = req
        .headers()
        .get(codec::HEADER_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<usize>().ok());
    let target = state.compare_target(model, candidate)?;
    let body = read_body(state, req)
        .await
        .map_err(|Refusal(_, message)| Error::BadRequest(message))?;
    let decoded = codec::decode_request(
        model,
        Some(&target.primary.version.to_string()),
        &body,
        header_length,
    )?;
    let c = state.compare(target, decoded.request).await?;
    let as_json = |r: &crate::service::InferResponse| -> Value {
        let encoded = codec::encode_response(r, &[], &[], false);
        serde_json::from_slice(&encoded.body).unwrap_or(Value::Null)
    };
    Ok(json!({
        "primary": as_json(&c.primary),
        "candidate": as_json(&c.candidate),
        "differences": serde_json::to_value(&c.differences).expect("serialises"),
    }))
}

async fn infer(
    state: &Service,
    req: Request<Incoming>,
    model: &str,
    version: Option<&str>,
) -> Response<Body> {
    let header_length = match req.headers().get(codec::HEADER_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "Inference-Header-Content-Length must be a non-negative integer",
                )
            }
        },
    };
    let body = match read_body(state, req).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let decoded = match codec::decode_request(model, version, &body, header_length) {
        Ok(d) => d,
        Err(e) => return from_error(&e),
    };
    drop(body);
    let requested = decoded.request.outputs.clone();
    match state.infer(decoded.request).await {
        Ok(response) => {
            let encoded = codec::encode_response(
                &response,
                &requested,
                &decoded.binary_outputs,
                decoded.binary_default,
            );
            match encoded.header_length {
                None => respond(StatusCode::OK, "application/json", encoded.body),
                Some(n) => {
                    let mut r = respond(StatusCode::OK, "application/octet-stream", encoded.body);
                    r.headers_mut()
                        .insert(codec::HEADER_LENGTH, HeaderValue::from(n as u64));
                    r
                }
            }
        }
        Err(e) => from_error(&e),
    }
}
