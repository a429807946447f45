//! The V2 HTTP/REST adapter on hyper: routes, wire format <-> core types,
//! and the one mapping from core errors to HTTP statuses. No logic of its own.
//!
//! Unknown model or version: **404**; a request that does not fit the model
//! (shape, datatype, names, bad JSON): **400**; a version not ready, a full
//! queue or a server shutting down: **503**. Every error body is
//! `{"error": "<message>"}`.

pub mod codec;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{Error, ErrorKind};
use crate::monitor::InflightGuard;
use crate::repository::ModelVersion;
use crate::AppState;

type Body = Full<Bytes>;

/// Accepts connections until `shutdown` flips, then lets open requests
/// finish (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move {
                        let _in_flight = InflightGuard::enter(&state.http_in_flight);
                        Ok::<_, Infallible>(handle(&state, req).await)
                    }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
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

fn error_response(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({ "error": message.into() }))
}

fn from_error(error: &Error) -> Response<Body> {
    error_response(status_of(error), error.to_string())
}

/// Live/ready answers: 200 with an empty body, as the spec has it.
fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

async fn handle(state: &AppState, req: Request<Incoming>) -> Response<Body> {
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
        ["v2"] => match method {
            Method::GET => json_response(StatusCode::OK, &server_metadata()),
            _ => not_allowed(),
        },
        ["v2", "health", "live"] => match method {
            Method::GET => empty(StatusCode::OK),
            _ => not_allowed(),
        },
        ["v2", "health", "ready"] => match method {
            Method::GET if state.ready.load(Ordering::Acquire) => empty(StatusCode::OK),
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
                let index = state.core.repository.index(ready_only);
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
            let repository = &state.core.repository;
            let result = if *action == "load" {
                repository.load_model(model).await
            } else {
                repository.unload_model(model).await
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
            match (rest, &method) {
                ([], &Method::GET) => match model_metadata(state, &model, version.as_deref()) {
                    Ok(v) => json_response(StatusCode::OK, &v),
                    Err(e) => from_error(&e),
                },
                (["ready"], &Method::GET) => match state.core.resolve(&model, version.as_deref()) {
                    Ok(_) => empty(StatusCode::OK),
                    Err(e) => from_error(&e),
                },
                (["stats"], &Method::GET) => {
                    match model_statistics(state, Some(&model), version.as_deref()) {
                        Ok(v) => json_response(StatusCode::OK, &v),
                        Err(e) => from_error(&e),
                    }
                }
                (["health"], &Method::GET) => match state.core.health(&model, version.as_deref()) {
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
                    match control(state, req, &model, promote).await {
                        Ok(v) => json_response(StatusCode::OK, &v),
                        Err(e) => from_error(&e),
                    }
                }
                (["shadow"], &(Method::GET | Method::POST | Method::DELETE))
                    if version.is_none() =>
                {
                    match shadow(state, req, &model).await {
                        Ok(v) => json_response(StatusCode::OK, &v),
                        Err(e) => from_error(&e),
                    }
                }
                (["compare"], &Method::POST) if version.is_none() => {
                    match compare(state, req, &model).await {
                        Ok(v) => json_response(StatusCode::OK, &v),
                        Err(e) => from_error(&e),
                    }
                }
                (["infer"], &Method::POST) => infer(state, req, &model, version.as_deref()).await,
                ([] | ["ready"] | ["stats"] | ["health"] | ["infer"], _) => not_allowed(),
                (["promote" | "rollback" | "shadow" | "compare"], _) if version.is_none() => {
                    not_allowed()
                }
                _ => error_response(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
            }
        }
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
    state: &AppState,
    req: Request<Incoming>,
    model: &str,
    promote: bool,
) -> Result<Value, Error> {
    let repository = &state.core.repository;
    if !promote {
        let (from, to) = repository.rollback(model).await?;
        return Ok(
            json!({ "model": model, "primary": to.to_string(), "previous": from.to_string() }),
        );
    }
    let body = read_body(state, req)
        .await
        .map_err(|Refusal(_, message)| Error::BadRequest(message))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!("promote needs a JSON body {{\"version\": V}}: {e}"))
    })?;
    let version = version_field(&v)?;
    let (now, before) = repository.promote(model, version).await?;
    Ok(json!({ "model": model, "primary": now.to_string(), "previous": before.to_string() }))
}

/// `"version": 3` or `"version": "3"`, if present.
fn version_field(v: &Value) -> Result<Option<u64>, Error> {
    match &v["version"] {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| Error::InvalidVersion(n.to_string())),
        Value::String(s) => crate::repository::registry::parse_version(s).map(Some),
        other => Err(Error::InvalidVersion(other.to_string())),
    }
}

/// `GET` (the report), `POST` (start: `{"version": V}` or `{"model": M}`,
/// `"sample_rate"`, `"max_inflight"`), `DELETE` (stop) on `…/shadow`.
async fn shadow(state: &AppState, req: Request<Incoming>, model: &str) -> Result<Value, Error> {
    let repository = &state.core.repository;
    let as_json =
        |r: crate::shadow::ShadowReport| serde_json::to_value(r).expect("report serialises");
    match *req.method() {
        Method::GET => {
            let table = repository.registry.snapshot();
            let entry = table.entry(model)?;
            let shadow = entry
                .shadow
                .as_ref()
                .ok_or_else(|| Error::Conflict(format!("model '{model}' has no shadow")))?;
            Ok(as_json(shadow.report()))
        }
        Method::DELETE => {
            state.authorize(authorization(&req))?;
            Ok(as_json(repository.clear_shadow(model).await?))
        }
        _ => {
            state.authorize(authorization(&req))?;
            let body = read_body(state, req)
                .await
                .map_err(|Refusal(_, message)| Error::BadRequest(message))?;
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| Error::BadRequest(format!("shadow needs a JSON body: {e}")))?;
            let target = match (version_field(&v)?, v["model"].as_str()) {
                (Some(version), None) => crate::shadow::Target::Version(version),
                (None, Some(m)) => crate::shadow::Target::Model(m.to_string()),
                _ => return Err(Error::BadRequest(
                    "shadow needs either \"version\" (of this model) or \"model\" (another one)"
                        .into(),
                )),
            };
            let spec = crate::shadow::Spec {
                target,
                sample_rate: v["sample_rate"]
                    .as_f64()
                    .unwrap_or(crate::shadow::DEFAULT_SAMPLE_RATE),
                max_inflight: v["max_inflight"]
                    .as_u64()
                    .map_or(crate::shadow::DEFAULT_MAX_INFLIGHT, |n| n as usize),
            };
            Ok(as_json(repository.set_shadow(model, spec).await?.report()))
        }
    }
}

/// `POST …/compare`: a V2 infer request run on the primary and on the
/// candidate (`?version=V`, else the shadow's target), both answers and
/// their differences.
async fn compare(state: &AppState, req: Request<Incoming>, model: &str) -> Result<Value, Error> {
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
    let table = state.core.repository.registry.snapshot();
    let entry = table.entry(model)?;
    let (candidate_model, candidate_version) = match (
        candidate,
        entry.shadow.as_ref().map(|s| s.spec.target.clone()),
    ) {
        (Some(v), _) => (model.to_string(), Some(v)),
        (None, Some(crate::shadow::Target::Version(v))) => (model.to_string(), Some(v.to_string())),
        (None, Some(crate::shadow::Target::Model(m))) => (m, None),
        (None, None) => {
            return Err(Error::BadRequest(
                "compare needs ?version=V, or a shadow to compare with".into(),
            ))
        }
    };
    let primary = entry
        .serving()
        .cloned()
        .ok_or_else(|| Error::ModelUnavailable(model.to_string()))?;
    drop(table);
    let body = read_body(state, req)
        .await
        .map_err(|Refusal(_, message)| Error::BadRequest(message))?;
    let decoded = codec::decode_request(
        model,
        Some(&primary.version.to_string()),
        &body,
        header_length,
    )?;
    let mut other = decoded.request.clone();
    other.model = candidate_model;
    other.version = candidate_version;
    let (a, b) = (
        state.core.infer(decoded.request).await?,
        state.core.infer(other).await?,
    );
    let differences: serde_json::Map<String, Value> =
        crate::shadow::compare(&primary.signature, &a.outputs, &b.outputs)
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    serde_json::to_value(crate::shadow::OutputReport::of(t)).expect("serialises"),
                )
            })
            .collect();
    let as_json = |r: &crate::infer::InferResponse| -> Value {
        let encoded = codec::encode_response(r, &[], &[], false);
        serde_json::from_slice(&encoded.body).unwrap_or(Value::Null)
    };
    Ok(json!({ "primary": as_json(&a), "candidate": as_json(&b), "differences": differences }))
}

/// A request the HTTP layer itself refuses (body too large, unreadable,
/// badly encoded), before the core sees it.
struct Refusal(StatusCode, String);

impl Refusal {
    fn into_response(self) -> Response<Body> {
        error_response(self.0, self.1)
    }
}

/// Reads the whole body, at most `--max-request-bytes`, decompressing a
/// `Content-Encoding: gzip` or `deflate` body (tritonclient's
/// `request_compression_algorithm`) within the same limit.
async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<Bytes, Refusal> {
    let limit = state.max_request_bytes;
    let encoding = match req
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .map(|v| v.to_str())
    {
        None => None,
        Some(Ok(e)) if e.eq_ignore_ascii_case("identity") => None,
        Some(Ok(e)) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("deflate") => {
            Some(e.to_ascii_lowercase())
        }
        Some(other) => {
            return Err(Refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding {:?} is not supported (gzip, deflate and identity are)",
                    other.unwrap_or("<not text>")
                ),
            ))
        }
    };
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {limit} bytes (--max-request-bytes)"),
            ))
        }
        Err(e) => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ))
        }
    };
    match encoding {
        None => Ok(body),
        Some(encoding) => decompress(&encoding, &body, limit).map(Bytes::from),
    }
}

fn decompress(encoding: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, Refusal> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = if encoding == "gzip" {
        Box::new(flate2::read::GzDecoder::new(body))
    } else {
        // HTTP's "deflate" is the zlib format (RFC 9110), which is what
        // tritonclient sends.
        Box::new(flate2::read::ZlibDecoder::new(body))
    };
    let mut out = Vec::new();
    // One byte past the limit tells "too large" from "exactly at the limit".
    match reader.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Err(Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed request body exceeds the limit of {limit} bytes (--max-request-bytes)"),
        )),
        Ok(_) => Ok(out),
        Err(e) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("cannot decompress the {encoding} request body: {e}"),
        )),
    }
}

async fn infer(
    state: &AppState,
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
    match state.core.infer(decoded.request).await {
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

pub fn server_metadata() -> Value {
    json!({
        "name": crate::SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": crate::EXTENSIONS,
    })
}

fn model_metadata(state: &AppState, model: &str, version: Option<&str>) -> Result<Value, Error> {
    let m = state.core.resolve(model, version)?;
    let versions = state.core.ready_versions(model);
    let tensors = |specs: &[crate::backend::TensorSpec]| {
        specs
            .iter()
            .map(|s| json!({ "name": s.name, "datatype": s.datatype.as_str(), "shape": s.shape }))
            .collect::<Vec<_>>()
    };
    Ok(json!({
        "name": m.model,
        "versions": versions,
        "platform": m.platform,
        "inputs": tensors(&m.signature.inputs),
        "outputs": tensors(&m.signature.outputs),
        "parameters": {
            "sha256": m.sha256,
            "properties": m.properties,
            "device": m.device.to_string(),
            "requested_device": m.requested_device.to_string(),
        },
    }))
}

fn model_statistics(
    state: &AppState,
    model: Option<&str>,
    version: Option<&str>,
) -> Result<Value, Error> {
    let versions = state.core.statistics_scope(model, version)?;
    let stats: Vec<Value> = versions.iter().map(|m| version_statistics(m)).collect();
    Ok(json!({ "model_stats": stats }))
}

fn version_statistics(m: &ModelVersion) -> Value {
    let s = &m.stats;
    let d = |stat: &crate::monitor::stats::DurationStat| {
        let (count, ns) = stat.get();
        json!({ "count": count, "ns": ns })
    };
    json!({
        "name": m.model,
        "version": m.version.to_string(),
        "last_inference": s.last_inference_ms.load(Ordering::Relaxed),
        "inference_count": s.inference_count.load(Ordering::Relaxed),
        "execution_count": s.execution_count.load(Ordering::Relaxed),
        "inference_stats": {
            "success": d(&s.success),
            "fail": d(&s.fail),
            "queue": d(&s.queue),
            "compute_input": { "count": 0, "ns": 0 },
            "compute_infer": d(&s.compute_infer),
            "compute_output": { "count": 0, "ns": 0 },
        },
        "batch_stats": [],
        "distribution": m.windows.as_ref().map(|w| w.distribution()),
    })
}
