//! One request, over the protocol the run uses, checked against the payload's
//! expectations. Errors come back as a short kind (`http_503`,
//! `grpc_Unavailable`, `transport`, `bad_response`) for the report.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tonic::transport::Channel;

use crate::payload::{Metadata, Payload};
use crate::pb;
use crate::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::Protocol;

/// Why a request did not succeed, grouped for the report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Failure {
    pub kind: String,
    pub detail: String,
}

impl Failure {
    fn new(kind: impl Into<String>, detail: impl Into<String>) -> Failure {
        Failure {
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}

// One Client per run, shared by every worker: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Client {
    Http {
        client: HttpClient<HttpConnector, Full<Bytes>>,
        uri: hyper::Uri,
        body: Bytes,
        /// `Some`: the binary extension, with this JSON header length.
        header: Option<usize>,
    },
    Grpc {
        /// Round-robin over `--connections` channels (HTTP/2 multiplexes
        /// many requests on each).
        channels: Vec<GrpcInferenceServiceClient<Channel>>,
        request: pb::ModelInferRequest,
    },
}

fn base(target: &str) -> String {
    if target.starts_with("http://") {
        target.trim_end_matches('/').to_string()
    } else {
        format!("http://{}", target.trim_end_matches('/'))
    }
}

fn model_path(model: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("/v2/models/{model}/versions/{v}"),
        None => format!("/v2/models/{model}"),
    }
}

pub fn http_client(connections: usize) -> HttpClient<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections.max(1))
        .build(connector)
}

pub async fn grpc_channels(
    target: &str,
    connections: usize,
) -> anyhow::Result<Vec<GrpcInferenceServiceClient<Channel>>> {
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        let channel = Channel::from_shared(base(target))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        channels
            .push(GrpcInferenceServiceClient::new(channel).max_decoding_message_size(usize::MAX));
    }
    Ok(channels)
}

/// The model's metadata, over the protocol of the run.
pub async fn metadata(
    target: &str,
    protocol: Protocol,
    model: &str,
    version: Option<&str>,
) -> anyhow::Result<Metadata> {
    match protocol {
        Protocol::Grpc => {
            let mut client = grpc_channels(target, 1).await?.remove(0);
            let m = client
                .model_metadata(pb::ModelMetadataRequest {
                    name: model.to_string(),
                    version: version.unwrap_or_default().to_string(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("model metadata: {:?}: {}", s.code(), s.message()))?;
            Ok(Metadata::from_grpc(m.into_inner()))
        }
        Protocol::HttpJson | Protocol::HttpBinary => {
            let uri: hyper::Uri =
                format!("{}{}", base(target), model_path(model, version)).parse()?;
            let response = http_client(1).get(uri).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::ensure!(
                status.is_success(),
                "model metadata: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
            Metadata::from_json(&serde_json::from_slice(&body)?)
        }
    }
}

impl Client {
    pub async fn new(
        target: &str,
        protocol: Protocol,
        model: &str,
        version: Option<&str>,
        payload: &Payload,
        connections: usize,
    ) -> anyhow::Result<Client> {
        Ok(match protocol {
            Protocol::Grpc => Client::Grpc {
                channels: grpc_channels(target, connections).await?,
                request: payload.grpc(model, version),
            },
            Protocol::HttpJson | Protocol::HttpBinary => {
                let uri =
                    format!("{}{}/infer", base(target), model_path(model, version)).parse()?;
                let (body, header) = if protocol == Protocol::HttpBinary {
                    let (b, h) = payload.http_binary();
                    (b, Some(h))
                } else {
                    (payload.http_json(), None)
                };
                Client::Http {
                    client: http_client(connections),
                    uri,
                    body,
                    header,
                }
            }
        })
    }

    /// Sends one request; `worker` picks the gRPC channel.
    pub async fn send(&self, worker: usize, payload: &Payload) -> Result<(), Failure> {
        match self {
            Client::Grpc { channels, request } => {
                let mut client = channels[worker % channels.len()].clone();
                let response = client
                    .model_infer(request.clone())
                    .await
                    .map_err(|s| Failure::new(format!("grpc_{:?}", s.code()), s.message()))?
                    .into_inner();
                payload
                    .check(
                        response
                            .outputs
                            .iter()
                            .map(|o| (o.name.as_str(), o.shape.as_slice())),
                    )
                    .map_err(|e| Failure::new("bad_response", e))
            }
            Client::Http {
                client,
                uri,
                body,
                header,
            } => {
                let mut request =
                    Request::post(uri.clone()).header("content-type", "application/json");
                if let Some(h) = header {
                    request = request
                        .header("inference-header-content-length", h.to_string())
                        .header("content-type", "application/octet-stream");
                }
                let request = request
                    .body(Full::new(body.clone()))
                    .expect("valid request");
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| Failure::new("transport", e.to_string()))?;
                let status = response.status();
                let json_len = response
                    .headers()
                    .get("inference-header-content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok());
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| Failure::new("transport", e.to_string()))?
                    .to_bytes();
                if !status.is_success() {
                    return Err(Failure::new(
                        format!("http_{}", status.as_u16()),
                        String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                    ));
                }
                let head = &body[..json_len.unwrap_or(body.len()).min(body.len())];
                let v: Value = serde_json::from_slice(head)
                    .map_err(|e| Failure::new("bad_response", format!("not JSON: {e}")))?;
                let outputs = v["outputs"]
                    .as_array()
                    .ok_or_else(|| Failure::new("bad_response", "no outputs"))?;
                let shapes: Vec<(String, Vec<i64>)> = outputs
                    .iter()
                    .map(|o| {
                        let shape = o["shape"]
                            .as_array()
                            .map(|s| s.iter().filter_map(Value::as_i64).collect())
                            .unwrap_or_default();
                        (o["name"].as_str().unwrap_or_default().to_string(), shape)
                    })
                    .collect();
                payload
                    .check(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())))
                    .map_err(|e| Failure::new("bad_response", e))
            }
        }
    }
}
