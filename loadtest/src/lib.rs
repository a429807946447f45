//! A load generator for any KServe V2 / Open Inference Protocol server.
//!
//! - `payload`: what to send (from the model's metadata with random data, or
//!   from a request file) in each wire encoding, and what a good answer is;
//! - `client`: one request over gRPC, HTTP JSON or HTTP binary, checked;
//! - `run`: closed loop (N clients back to back) or open loop (a target
//!   rate, latency measured from the intended send time, so that a stalled
//!   server cannot hide its queueing: no coordinated omission);
//! - `report`: HdrHistogram percentiles, errors by kind, a table and JSON;
//! - `plot`: latency over time and its distribution, as SVG.

pub mod client;
pub mod payload;
pub mod plot;
pub mod report;
pub mod run;

/// Generated from the server's `proto/inference.proto`.
pub mod pb {
    tonic::include_proto!("inference");
}

pub use run::{run, Config, Load, Protocol, Stop};
