//! The one API both protocol adapters call: resolve the model version,
//! check the request against its signature, run it on the version's
//! inference thread, and record what happened.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::monitor::Transport;
use crate::repository::{ModelVersion, Repository};
use crate::shadow::{Target, Ticket};
use crate::tensor::{element_count, DataType, Elements, InputTensor, Tensor, TensorError};
use crate::worker::WorkerError;

/// A decoded inference request, whatever protocol it came in on.
#[derive(Debug, Clone)]
pub struct InferRequest {
    pub transport: Transport,
    pub model: String,
    /// `None` or empty: the newest ready version.
    pub version: Option<String>,
    pub id: Option<String>,
    pub inputs: Vec<InputTensor>,
    /// Outputs to return, by name; empty: all of them.
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model: String,
    pub version: u64,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

/// Builds an input tensor from what the wire carried: parses the datatype,
/// checks the shape, decodes the data with `decode(datatype, elements)` and
/// checks the element count. Shared by both adapters so that both say the
/// same thing about the same mistake.
pub fn decode_input(
    name: &str,
    datatype: &str,
    shape: Vec<i64>,
    decode: impl FnOnce(DataType, usize) -> Result<Elements, TensorError>,
) -> Result<InputTensor, Error> {
    let invalid = |source| Error::InvalidTensor {
        name: name.to_string(),
        source,
    };
    let dt = DataType::parse(datatype)
        .ok_or_else(|| invalid(TensorError::UnknownDatatype(datatype.to_string())))?;
    let expected = element_count(&shape).map_err(invalid)?;
    let data = decode(dt, expected).map_err(invalid)?;
    if data.len() != expected {
        return Err(invalid(TensorError::ElementCount {
            shape,
            expected,
            got: data.len(),
        }));
    }
    Ok(InputTensor {
        name: name.to_string(),
        shape,
        data,
    })
}

pub struct Core {
    pub repository: Arc<Repository>,
}

impl Core {
    pub fn new(repository: Arc<Repository>) -> Core {
        Core { repository }
    }

    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<ModelVersion>, Error> {
        self.repository.registry.resolve(model, version)
    }

    /// Ready versions of a model, ascending, as the protocol spells them.
    pub fn ready_versions(&self, model: &str) -> Vec<String> {
        let table = self.repository.registry.snapshot();
        table
            .models
            .get(model)
            .map(|e| e.ready_versions().map(|v| v.version.to_string()).collect())
            .unwrap_or_default()
    }

    /// What a statistics request covers: one version, every ready version
    /// of a model, or (no model) of every model.
    pub fn statistics_scope(
        &self,
        model: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<Arc<ModelVersion>>, Error> {
        let table = self.repository.registry.snapshot();
        match (
            model.filter(|m| !m.is_empty()),
            version.filter(|v| !v.is_empty()),
        ) {
            (None, _) => Ok(table
                .models
                .values()
                .flat_map(|e| e.ready_versions().cloned())
                .collect()),
            (Some(m), Some(v)) => Ok(vec![self.resolve(m, Some(v))?]),
            (Some(m), None) => Ok(table.entry(m)?.ready_versions().cloned().collect()),
        }
    }

    /// The four-question health report of a version (the newest ready one
    /// when none is named).
    pub fn health(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<crate::health::HealthReport, Error> {
        let v = self.resolve(model, version)?;
        let table = self.repository.registry.snapshot();
        Ok(crate::health::report(&v, table.entry(model)?))
    }

    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse, Error> {
        // One snapshot per request: the version stays alive (and keeps its
        // inference thread) until this request is answered, even if it is
        // swapped out meanwhile.
        let (model, shadow) = self
            .repository
            .registry
            .resolve_with_shadow(&request.model, request.version.as_deref())?;
        // Mirrored only when sampled: then the inputs are cloned for the
        // shadow, the one copy it needs.
        let mirrored = shadow
            .and_then(|s| s.ticket())
            .map(|ticket| (ticket, request.inputs.clone()));
        let (result, took) = self.serve(&model, request).await;
        if let (Some((ticket, inputs)), Ok(answer)) = (mirrored, &result) {
            tokio::spawn(mirror(
                ticket,
                Core::new(self.repository.clone()),
                model.clone(),
                inputs,
                answer.outputs.clone(),
                took,
            ));
        }
        result
    }

    /// `infer` for a mirrored request: never mirrored again (and, being a
    /// future that spawns nothing, `Send` without a recursive type).
    pub async fn infer_mirrored(&self, request: InferRequest) -> Result<InferResponse, Error> {
        let model = self.resolve(&request.model, request.version.as_deref())?;
        self.serve(&model, request).await.0
    }

    /// Runs a request on a resolved version and records how it went.
    async fn serve(
        &self,
        model: &Arc<ModelVersion>,
        request: InferRequest,
    ) -> (Result<InferResponse, Error>, std::time::Duration) {
        let transport = request.transport;
        let _inflight = model.metrics.start();
        let started = Instant::now();
        let result = self.run(model, request).await;
        let took = started.elapsed();
        let stats = &model.stats;
        stats.touch();
        match &result {
            Ok(_) => stats.success.record(took),
            Err(_) => stats.fail.record(took),
        }
        let failure = result.as_ref().err().map(|e| e.kind());
        model
            .metrics
            .record(transport, took, failure.map(|k| k.as_str()));
        if let Some(w) = &model.windows {
            w.record_request(took, failure);
        }
        (result, took)
    }

    async fn run(
        &self,
        model: &Arc<ModelVersion>,
        request: InferRequest,
    ) -> Result<InferResponse, Error> {
        let batch = validate(model, &request)?;
        let ran = model
            .worker
            .run(request.inputs)
            .await
            .map_err(|e| match e {
                WorkerError::QueueFull => Error::Overloaded {
                    model: model.model.clone(),
                    version: model.version,
                    capacity: model.worker.capacity(),
                },
                WorkerError::Stopped => Error::ShuttingDown,
                WorkerError::Backend(crate::backend::BackendError::InvalidInput(reason)) => {
                    Error::BadRequest(reason)
                }
                WorkerError::Backend(e) => Error::Inference {
                    model: model.model.clone(),
                    version: model.version,
                    reason: e.to_string(),
                },
            })?;
        let stats = &model.stats;
        stats.queue.record(ran.queue);
        stats.compute_infer.record(ran.compute);
        stats.inference_count.fetch_add(batch, Ordering::Relaxed);
        model.metrics.ran(batch, ran.queue, ran.compute);

        let outputs = if request.outputs.is_empty() {
            ran.outputs
        } else {
            let mut all = ran.outputs;
            request
                .outputs
                .iter()
                .filter_map(|name| {
                    all.iter()
                        .position(|t| &t.name == name)
                        .map(|i| all.swap_remove(i))
                })
                .collect()
        };
        Ok(InferResponse {
            model: model.model.clone(),
            version: model.version,
            id: request.id,
            outputs,
        })
    }
}

/// Checks inputs and requested outputs against the model's signature.
/// Returns the batch size (first dimension, 1 for scalars) for statistics.
fn validate(model: &ModelVersion, request: &InferRequest) -> Result<u64, Error> {
    let sig = &model.signature;
    let names = |specs: &[crate::backend::TensorSpec]| {
        specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, tensor) in request.inputs.iter().enumerate() {
        let spec = sig.input(&tensor.name).ok_or_else(|| Error::UnknownInput {
            model: model.model.clone(),
            name: tensor.name.clone(),
            known: names(&sig.inputs),
        })?;
        if request.inputs[..i].iter().any(|t| t.name == tensor.name) {
            return Err(Error::BadRequest(format!(
                "input '{}' is given twice",
                tensor.name
            )));
        }
        let got = tensor.data.datatype();
        if got != spec.datatype {
            return Err(Error::DatatypeMismatch {
                name: tensor.name.clone(),
                expected: spec.datatype,
                got: got.as_str().to_string(),
            });
        }
        let fits = tensor.shape.len() == spec.shape.len()
            && tensor
                .shape
                .iter()
                .zip(&spec.shape)
                .all(|(&g, &e)| e < 0 || g == e);
        if !fits {
            return Err(Error::ShapeMismatch {
                name: tensor.name.clone(),
                expected: spec.shape.clone(),
                got: tensor.shape.clone(),
            });
        }
        if let (Some(max), Some(&rows)) = (model.max_batch_size, tensor.shape.first()) {
            if rows as u64 > max {
                return Err(Error::BadRequest(format!(
                    "input '{}': batch of {rows} exceeds the model's max_batch_size {max}",
                    tensor.name
                )));
            }
        }
    }
    if let Some(schema) = &model.schema {
        schema.check(&request.inputs).map_err(|v| {
            metrics::counter!(crate::monitor::VALIDATION_FAILURES,
                "model" => model.model.clone(), "input" => v.input.clone(), "rule" => v.rule)
            .increment(1);
            if let Some(w) = &model.windows {
                w.record_validation(v.rule);
            }
            Error::SchemaViolation {
                input: v.input,
                feature: v.feature,
                row: v.row,
                rule: v.rule,
                value: v.value,
                bound: v.bound,
            }
        })?;
    }
    for spec in &sig.inputs {
        if !request.inputs.iter().any(|t| t.name == spec.name) {
            if let Some(w) = &model.windows {
                w.record_missing(&spec.name);
            }
            return Err(Error::MissingInput {
                model: model.model.clone(),
                name: spec.name.clone(),
            });
        }
    }
    for (i, name) in request.outputs.iter().enumerate() {
        if sig.output(name).is_none() {
            return Err(Error::UnknownOutput {
                model: model.model.clone(),
                name: name.clone(),
                known: names(&sig.outputs),
            });
        }
        if request.outputs[..i].contains(name) {
            return Err(Error::BadRequest(format!(
                "output '{name}' is requested twice"
            )));
        }
    }
    Ok(request
        .inputs
        .first()
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(1)
        .max(0) as u64)
}

/// Mirrors one answered request to the shadow target, and promotes a
/// `shadow-first` candidate once its comparisons meet the criteria. Runs
/// in its own task, after the primary has answered.
async fn mirror(
    ticket: Ticket,
    core: Core,
    primary: Arc<ModelVersion>,
    inputs: Vec<InputTensor>,
    primary_outputs: Vec<Tensor>,
    primary_took: Duration,
) {
    let shadow = ticket.shadow().clone();
    let (model, version) = match &shadow.spec.target {
        Target::Version(v) => (primary.model.clone(), Some(v.to_string())),
        Target::Model(m) => {
            // Name the version, so that the other model's own shadow (if
            // any) is not triggered by this request.
            let serving = core.resolve(m, None).map(|v| v.version.to_string());
            (m.clone(), serving.ok())
        }
    };
    let request = InferRequest {
        transport: Transport::Shadow,
        model,
        version,
        id: None,
        inputs,
        outputs: primary_outputs.iter().map(|t| t.name.clone()).collect(),
    };
    let started = Instant::now();
    let result = core.infer_mirrored(request).await;
    let took = started.elapsed();
    let outcome = result.map(|a| a.outputs).map_err(|e| e.to_string());
    let promote = shadow.settle(
        ticket,
        &primary.signature,
        &primary_outputs,
        primary_took,
        outcome,
        took,
    );
    if let Some(v) = promote {
        let m = &shadow.model;
        match core.repository.promote(m, Some(v)).await {
            Ok(_) => {
                tracing::info!(model = %m, version = v, "shadow-first candidate met its criteria: promoted")
            }
            Err(e) => {
                tracing::warn!(model = %m, version = v, error = %e, "automatic promotion failed");
                shadow.promotion_failed();
            }
        }
    }
}
