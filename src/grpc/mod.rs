//! The V2 gRPC adapter on tonic: protobuf <-> core types, and the one
//! mapping from core errors to gRPC codes. No logic of its own.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::error::{Error, ErrorKind};
use crate::service::Service;
use crate::tensor::DataType;
use convert::{decode_request, to_contents};

mod convert;

/// Generated from `proto/inference.proto`.
pub mod pb {
    tonic::include_proto!("inference");
}

/// Generated from `proto/feedback.proto`: infergate's own services.
pub mod v1 {
    tonic::include_proto!("infergate.v1");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// What the server makes of a `ModelInferRequest` before the core sees it
/// (for fuzzing: the same decode `ModelInfer` runs).
pub fn decode_infer_request(
    req: pb::ModelInferRequest,
) -> Result<crate::service::InferRequest, Error> {
    decode_request(req, None)
}

/// The one place core errors become gRPC statuses.
pub fn status_of(error: &Error) -> Status {
    let message = error.to_string();
    let mut status = match error.kind() {
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::InvalidArgument => Status::invalid_argument(message),
        ErrorKind::Unavailable => Status::unavailable(message),
        ErrorKind::Internal => Status::internal(message),
        ErrorKind::Conflict => Status::failed_precondition(message),
        ErrorKind::Unauthenticated => Status::unauthenticated(message),
        ErrorKind::DeadlineExceeded => Status::deadline_exceeded(message),
    };
    if let Some(seconds) = error.retry_after() {
        // gRPC's retry pushback (A6), the Retry-After of HTTP's 503.
        if let Ok(v) = (seconds * 1000).to_string().parse() {
            status.metadata_mut().insert("grpc-retry-pushback-ms", v);
        }
    }
    status
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<Service>,
    limits: crate::listen::Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let limit = state.max_request_bytes();
    // Compressed messages are accepted as Triton accepts them; answers are
    // compressed only for clients that say they take it.
    let state_for_feedback = state.clone();
    let service = GrpcInferenceServiceServer::new(Adapter { state })
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate)
        .send_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Deflate)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    let feedback = v1::feedback_server::FeedbackServer::new(Adapter {
        state: state_for_feedback,
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(limit);
    // Bounded accepts (connections, first bytes); TCP_NODELAY is set on
    // every accepted stream: without it, Nagle plus the client's delayed
    // ACK holds answers back by up to 40 ms.
    let incoming = crate::listen::Acceptor::new(listener, "grpc", &limits).into_stream(tls);
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.http2_max_streams))
        .add_service(service)
        .add_service(feedback)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.changed().await;
        })
        .await
}

/// The tonic service: the V2 gRPC methods over the one [`Service`].
struct Adapter {
    state: Arc<Service>,
}

impl Adapter {
    /// The control token, from the `authorization: Bearer …` metadata.
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.state.authorize(header).map_err(|e| status_of(&e))
    }
}

fn version_arg(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

#[tonic::async_trait]
impl GrpcInferenceService for Adapter {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let req = req.into_inner();
        // Unknown model: NOT_FOUND; known but not ready: ready = false.
        match self.state.resolve(&req.name, version_arg(&req.version)) {
            Ok(_) => Ok(Response::new(pb::ModelReadyResponse { ready: true })),
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                Ok(Response::new(pb::ModelReadyResponse { ready: false }))
            }
            Err(e) => Err(status_of(&e)),
        }
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let m = &crate::service::SERVER_METADATA;
        Ok(Response::new(pb::ServerMetadataResponse {
            name: m.name.into(),
            version: m.version.into(),
            extensions: m.extensions.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let req = req.into_inner();
        let m = self
            .state
            .resolve(&req.name, version_arg(&req.version))
            .map_err(|e| status_of(&e))?;
        let tensors = |specs: &[crate::backend::TensorSpec]| {
            specs
                .iter()
                .map(|s| pb::model_metadata_response::TensorMetadata {
                    name: s.name.clone(),
                    datatype: s.datatype.as_str().into(),
                    shape: s.shape.clone(),
                })
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.model.clone(),
            versions: self.state.ready_versions(&req.name),
            platform: m.platform.into(),
            inputs: tensors(&m.signature.inputs),
            outputs: tensors(&m.signature.outputs),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let deadline = convert::grpc_deadline(
            req.metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok()),
        );
        let req = req.into_inner();
        let raw = !req.raw_input_contents.is_empty();
        let request = decode_request(req, deadline).map_err(|e| status_of(&e))?;
        let response = self.state.infer(request).await.map_err(|e| status_of(&e))?;
        // Answer in the encoding asked in; FP16 has no typed field, so any
        // FP16 output makes the whole answer raw.
        let raw = raw
            || response
                .outputs
                .iter()
                .any(|t| t.data.datatype() == DataType::Fp16);
        let mut outputs = Vec::with_capacity(response.outputs.len());
        let mut raw_output_contents = Vec::new();
        for t in response.outputs {
            let datatype = t.data.datatype().as_str().to_string();
            let contents = if raw {
                raw_output_contents.push(bytes::Bytes::from(t.data.to_raw()));
                None
            } else {
                Some(to_contents(t.data))
            };
            outputs.push(pb::model_infer_response::InferOutputTensor {
                name: t.name,
                datatype,
                shape: t.shape,
                parameters: Default::default(),
                contents,
            });
        }
        Ok(Response::new(pb::ModelInferResponse {
            model_name: response.model,
            model_version: response.version.to_string(),
            id: response.id.unwrap_or_default(),
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let req = req.into_inner();
        let versions = self
            .state
            .statistics_scope(Some(&req.name), Some(&req.version))
            .map_err(|e| status_of(&e))?;
        let d = |s: &crate::monitor::stats::DurationStat| {
            let (count, ns) = s.get();
            Some(pb::StatisticDuration { count, ns })
        };
        let model_stats = versions
            .iter()
            .map(|m| {
                let s = &m.record.stats;
                pb::ModelStatistics {
                    name: m.model.clone(),
                    version: m.version.to_string(),
                    last_inference: s.last_inference_ms.load(Ordering::Relaxed),
                    inference_count: s.inference_count.load(Ordering::Relaxed),
                    execution_count: s.execution_count.load(Ordering::Relaxed),
                    inference_stats: Some(pb::InferStatistics {
                        success: d(&s.success),
                        fail: d(&s.fail),
                        queue: d(&s.queue),
                        compute_input: Some(Default::default()),
                        compute_infer: d(&s.compute_infer),
                        compute_output: Some(Default::default()),
                    }),
                    batch_stats: vec![],
                    distribution_json: m
                        .record
                        .windows
                        .as_ref()
                        .map(|w| {
                            serde_json::to_string(&w.distribution())
                                .expect("distribution serialises")
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let req = req.into_inner();
        let models = self
            .state
            .index(req.ready)
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.into(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        self.state
            .load_model(&req.model_name)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        self.state
            .unload_model(&req.model_name)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

#[tonic::async_trait]
impl v1::feedback_server::Feedback for Adapter {
    async fn send_labels(
        &self,
        req: Request<v1::SendLabelsRequest>,
    ) -> Result<Response<v1::SendLabelsResponse>, Status> {
        let req = req.into_inner();
        let labels = req
            .labels
            .into_iter()
            .map(|l| crate::feedback::LabelIn {
                id: l.id,
                values: if l.values.is_empty() {
                    Err("a label needs at least one value".to_string())
                } else {
                    Ok(l.values)
                },
            })
            .collect();
        let outcome = self
            .state
            .feedback(&req.model, labels)
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(v1::SendLabelsResponse {
            applied: outcome.applied,
            replaced: outcome.replaced,
            unknown: outcome.unknown,
        }))
    }
}
