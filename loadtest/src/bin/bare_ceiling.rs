//! The "bare ceiling" of the benchmarks: the same protocol stack as
//! infergate (tokio, hyper for HTTP/1.1 with the binary tensor extension,
//! tonic for gRPC) answering `tiny` (`output = input * 2 + 1`, FP32 [-1,-1]:
//! any width, so that it can also carry payloads the size of another model's)
//! with plain Rust arithmetic: no runtime, no repository, no queue, no
//! batching. What it sustains on a core is the most any server on this stack
//! could; infergate's overhead is measured against it.
//!
//! `bare-ceiling --http-port 8100 --grpc-port 8101` (loopback only).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadtest::pb;
use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use serde_json::{json, Value};
use tonic::transport::server::TcpIncoming;
use tonic::Status;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 8100)]
    http_port: u16,
    #[arg(long, default_value_t = 8101)]
    grpc_port: u16,
}

fn tiny(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for c in raw.chunks_exact(4) {
        let x = f32::from_le_bytes(c.try_into().expect("4 bytes"));
        out.extend_from_slice(&(x * 2.0 + 1.0).to_le_bytes());
    }
    out
}

fn metadata() -> Value {
    json!({
        "name": "tiny", "versions": ["1"], "platform": "bare",
        "inputs": [{ "name": "input", "datatype": "FP32", "shape": [-1, -1] }],
        "outputs": [{ "name": "output", "datatype": "FP32", "shape": [-1, -1] }]
    })
}

struct Grpc;

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn model_metadata(
        &self,
        _: tonic::Request<pb::ModelMetadataRequest>,
    ) -> Result<tonic::Response<pb::ModelMetadataResponse>, Status> {
        let t = |name: &str| pb::model_metadata_response::TensorMetadata {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![-1, -1],
        };
        Ok(tonic::Response::new(pb::ModelMetadataResponse {
            name: "tiny".into(),
            versions: vec!["1".into()],
            platform: "bare".into(),
            inputs: vec![t("input")],
            outputs: vec![t("output")],
        }))
    }

    async fn model_infer(
        &self,
        req: tonic::Request<pb::ModelInferRequest>,
    ) -> Result<tonic::Response<pb::ModelInferResponse>, Status> {
        let req = req.into_inner();
        let (Some(input), Some(raw)) = (req.inputs.first(), req.raw_input_contents.first()) else {
            return Err(Status::invalid_argument("one raw FP32 input expected"));
        };
        Ok(tonic::Response::new(pb::ModelInferResponse {
            model_name: "tiny".into(),
            model_version: "1".into(),
            id: req.id,
            parameters: Default::default(),
            outputs: vec![pb::model_infer_response::InferOutputTensor {
                name: "output".into(),
                datatype: "FP32".into(),
                shape: input.shape.clone(),
                parameters: Default::default(),
                contents: None,
            }],
            raw_output_contents: vec![Bytes::from(tiny(raw))],
        }))
    }
}

fn reply(status: StatusCode, body: Vec<u8>, header: Option<usize>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Some(n) = header {
        r.headers_mut()
            .insert("inference-header-content-length", n.into());
    }
    r
}

async fn http(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == hyper::Method::GET {
        return Ok(reply(
            StatusCode::OK,
            metadata().to_string().into_bytes(),
            None,
        ));
    }
    let header: Option<usize> = req
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(reply(StatusCode::BAD_REQUEST, b"{}".to_vec(), None));
    };
    let split = header.unwrap_or(body.len()).min(body.len());
    let Ok(head) = serde_json::from_slice::<Value>(&body[..split]) else {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            b"{\"error\":\"bad json\"}".to_vec(),
            None,
        ));
    };
    let input = &head["inputs"][0];
    let shape = input["shape"].clone();
    if header.is_some() {
        let out = tiny(&body[split..]);
        let mut resp = serde_json::to_vec(&json!({
            "model_name": "tiny", "model_version": "1",
            "outputs": [{ "name": "output", "datatype": "FP32", "shape": shape,
                          "parameters": { "binary_data_size": out.len() } }]
        }))
        .expect("JSON");
        let n = resp.len();
        resp.extend_from_slice(&out);
        Ok(reply(StatusCode::OK, resp, Some(n)))
    } else {
        let data: Vec<f64> = input["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|x| x * 2.0 + 1.0)
                    .collect()
            })
            .unwrap_or_default();
        let resp = json!({
            "model_name": "tiny", "model_version": "1",
            "outputs": [{ "name": "output", "datatype": "FP32", "shape": shape, "data": data }]
        });
        Ok(reply(StatusCode::OK, resp.to_string().into_bytes(), None))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http_addr = SocketAddr::from(([127, 0, 0, 1], args.http_port));
    let grpc_addr = SocketAddr::from(([127, 0, 0, 1], args.grpc_port));
    let listener = tokio::net::TcpListener::bind(http_addr).await?;
    let grpc = tokio::net::TcpListener::bind(grpc_addr).await?;
    eprintln!("bare-ceiling: HTTP on {http_addr}, gRPC on {grpc_addr}");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(http))
                    .await;
            });
        }
    });
    tonic::transport::Server::builder()
        .add_service(GrpcInferenceServiceServer::new(Grpc).max_decoding_message_size(64 << 20))
        // `.tcp_nodelay` does not reach streams passed in; Nagle would hold
        // answers of 1 KiB and more back for the peer's delayed ACK (~40 ms).
        .serve_with_incoming(TcpIncoming::from(grpc).with_nodelay(Some(true)))
        .await?;
    Ok(())
}
