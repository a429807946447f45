//! A gRPC `ModelInferRequest` from bytes, through the same decode the
//! server runs on `ModelInfer`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = infergate::grpc::pb::ModelInferRequest::decode(data) {
        let _ = infergate::grpc::decode_infer_request(req);
    }
});
