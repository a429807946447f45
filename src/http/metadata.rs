//! The JSON documents of the metadata and statistics endpoints.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::error::Error;
use crate::model::ModelVersion;
use crate::service::Service;

pub fn server_metadata() -> Value {
    let m = &crate::service::SERVER_METADATA;
    json!({
        "name": m.name,
        "version": m.version,
        "extensions": m.extensions,
    })
}

pub(super) fn model_metadata(
    state: &Service,
    model: &str,
    version: Option<&str>,
) -> Result<Value, Error> {
    let m = state.resolve(model, version)?;
    let versions = state.ready_versions(model);
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

pub(super) fn model_statistics(
    state: &Service,
    model: Option<&str>,
    version: Option<&str>,
) -> Result<Value, Error> {
    let versions = state.statistics_scope(model, version)?;
    let stats: Vec<Value> = versions.iter().map(|m| version_statistics(m)).collect();
    Ok(json!({ "model_stats": stats }))
}

fn version_statistics(m: &ModelVersion) -> Value {
    let s = &m.record.stats;
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
        "distribution": m.record.windows.as_ref().map(|w| w.distribution()),
    })
}
