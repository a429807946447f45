//! Inference: resolve the model version, check the request against its
//! signature, run it on the version's inference threads, record what
//! happened, and mirror a sample to the shadow after the answer.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::validate::validate;
use super::Service;
use crate::error::Error;
use crate::feedback::{Feedback, Judge, Said};
use crate::model::ModelVersion;
use crate::monitor::Transport;
use crate::predlog::{PredictionLog, Record, ShadowPart};
use crate::repository::Repository;
use crate::rollout::shadow::{Target, Ticket};
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
    /// The V2 `timeout` parameter (µs on the wire): the request's
    /// deadline in place of the model's or the server's default.
    pub timeout: Option<Duration>,
    /// How long the client itself waits (gRPC's `grpc-timeout`): a bound
    /// whatever else says.
    pub client_timeout: Option<Duration>,
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
    let data = match decode(dt, expected) {
        Ok(data) => data,
        // A decoder that counted without storing (JSON beyond the shape's
        // count) reports the mismatch; the shape is named here.
        Err(TensorError::ElementCount { expected, got, .. }) => {
            return Err(invalid(TensorError::ElementCount {
                shape,
                expected,
                got,
            }))
        }
        Err(e) => return Err(invalid(e)),
    };
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

/// A request id the server makes: a UUIDv7, unique and sortable by time.
pub fn new_request_id() -> String {
    // Encoded straight into a buffer: `to_string` goes through the
    // formatting machinery, a cost on every request without an id.
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut text)
        .to_string()
}

impl Service {
    pub async fn infer(&self, mut request: InferRequest) -> Result<InferResponse, Error> {
        // One snapshot per request: the version stays alive (and keeps its
        // inference thread) until this request is answered, even if it is
        // swapped out meanwhile.
        let route = self
            .repository
            .registry
            .route(&request.model, request.version.as_deref())
            .map_err(|e| self.not_found_yet(e))?;
        let model = route.version;
        // Every answer carries an id, so that its label can be sent later.
        if request.id.as_deref().is_none_or(str::is_empty) {
            request.id = Some(new_request_id());
        }
        // Logged only when sampled (by the id): then the inputs are cloned
        // for the log, as the shadow's are for the shadow — a reference
        // count for raw binary tensors, a copy for JSON's typed ones.
        let logged = route
            .log
            .filter(|l| l.sampled(request.id.as_deref().unwrap_or_default()))
            .map(|log| Logged {
                inputs: if log.config.inputs {
                    request.inputs.clone()
                } else {
                    Vec::new()
                },
                id: request.id.clone().unwrap_or_default(),
                protocol: request.transport.as_str(),
                log,
            });
        let mirrored = route
            .shadow
            .and_then(|s| s.ticket())
            .map(|ticket| (ticket, request.inputs.clone()));
        let judge = model
            .judge
            .as_ref()
            .filter(|_| route.feedback.is_some() || logged.is_some());
        let (result, took, said) =
            serve(&model, request, judge, self.options.request_timeout).await;
        let answer = match &result {
            Ok(answer) => answer,
            Err(e) => {
                if let Some(l) = logged.filter(|l| l.log.config.refused) {
                    let (log, record) = l.into_record(&model, took, Err(e), Vec::new(), None);
                    log.submit(record);
                }
                return result;
            }
        };
        let id = answer.id.as_deref().unwrap_or_default();
        let predicted = match (&logged, &said) {
            (Some(_), Some(Said::Classes(c))) => Some(c.clone()),
            _ => None,
        };
        if let (Some(feedback), Some(judge), Some(said)) = (&route.feedback, judge, said) {
            feedback.record(id, model.version, judge, said, SystemTime::now());
        }
        let log = logged.map(|l| {
            let outputs = if l.log.config.outputs {
                answer.outputs.clone()
            } else {
                Vec::new()
            };
            l.into_record(&model, took, Ok(()), outputs, predicted)
        });
        match mirrored {
            // The record waits for the shadow's answer, in the mirror's task.
            Some((ticket, inputs)) => {
                tokio::spawn(mirror(
                    ticket,
                    self.repository.clone(),
                    model.clone(),
                    inputs,
                    (answer.outputs.clone(), took),
                    After {
                        feedback: route.feedback.map(|f| (f, id.to_string())),
                        log,
                    },
                ));
            }
            None => {
                if let Some((log, record)) = log {
                    log.submit(record);
                }
            }
        }
        result
    }
}

/// What a sampled request keeps for its log record while it runs.
struct Logged {
    log: Arc<PredictionLog>,
    id: String,
    protocol: &'static str,
    inputs: Vec<InputTensor>,
}

impl Logged {
    fn into_record(
        self,
        model: &ModelVersion,
        took: Duration,
        outcome: Result<(), &Error>,
        outputs: Vec<Tensor>,
        predicted: Option<Vec<Option<i64>>>,
    ) -> (Arc<PredictionLog>, Record) {
        let record = Record {
            time: SystemTime::now(),
            id: self.id,
            model: model.log_names.0.clone(),
            version: model.version,
            sha256: model.log_names.1.clone(),
            protocol: self.protocol,
            latency: took,
            status: match outcome {
                Ok(()) => "ok",
                Err(e) => e.kind().as_str(),
            },
            error: outcome.err().map(|e| e.to_string()),
            inputs: self.inputs,
            outputs,
            predicted,
            shadow: None,
            layout: model.log_layout.clone(),
        };
        (self.log, record)
    }
}

/// What a mirrored request still owes once the shadow has answered: the
/// shadow's prediction to the feedback index, its record to the log.
struct After {
    feedback: Option<(Arc<Feedback>, String)>,
    log: Option<(Arc<PredictionLog>, Record)>,
}

/// Runs a request on a resolved version and records how it went; with a
/// judge, also what its answer says in the terms of labels. The deadline:
/// the request's `timeout`, else the model's default, else the server's
/// (`default`), and never later than the client's own; a request still
/// unanswered at its deadline is answered DEADLINE_EXCEEDED, and if it
/// had not run yet it never runs.
async fn serve(
    model: &Arc<ModelVersion>,
    request: InferRequest,
    judge: Option<&Judge>,
    default: Option<Duration>,
) -> (Result<InferResponse, Error>, Duration, Option<Said>) {
    let transport = request.transport;
    let _inflight = model.record.start();
    // Counts the request as cancelled if its future is dropped (the
    // client went away) before it is answered.
    let mut pending = Pending {
        model,
        transport,
        answered: false,
    };
    let started = Instant::now();
    let wanted = request.timeout.or(model.default_timeout).or(default);
    let timeout = match (wanted, request.client_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let result = match timeout {
        None => run(model, request, judge, None).await,
        Some(t) => {
            let (deadline, us) = (started + t, t.as_micros() as u64);
            let running = run(model, request, judge, Some((deadline, us)));
            match tokio::time::timeout_at(deadline.into(), running).await {
                Ok(r) => r,
                Err(_) => Err(Error::DeadlineExceeded {
                    model: model.model.clone(),
                    version: model.version,
                    timeout_us: us,
                }),
            }
        }
    };
    pending.answered = true;
    let took = started.elapsed();
    let failure = result.as_ref().err().map(|e| e.kind());
    model.record.answered(transport, took, failure);
    match result {
        Ok((answer, said)) => (Ok(answer), took, said),
        Err(e) => (Err(e), took, None),
    }
}

struct Pending<'a> {
    model: &'a ModelVersion,
    transport: Transport,
    answered: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.model.record.cancelled(self.transport);
        }
    }
}

async fn run(
    model: &Arc<ModelVersion>,
    request: InferRequest,
    judge: Option<&Judge>,
    deadline: Option<(Instant, u64)>,
) -> Result<(InferResponse, Option<Said>), Error> {
    let batch = validate(model, &request)?;
    let ran = model
        .worker
        .run(request.inputs, deadline.map(|(d, _)| d))
        .await
        .map_err(|e| match e {
            WorkerError::Overloaded(why) => Error::Overloaded {
                model: model.model.clone(),
                version: model.version,
                reason: why.to_string(),
            },
            WorkerError::Stopped => Error::ShuttingDown,
            WorkerError::DeadlineExceeded => Error::DeadlineExceeded {
                model: model.model.clone(),
                version: model.version,
                timeout_us: deadline.map_or(0, |(_, us)| us),
            },
            WorkerError::Backend(crate::backend::BackendError::InvalidInput(reason)) => {
                Error::BadRequest(reason)
            }
            WorkerError::Backend(e) => Error::Inference {
                model: model.model.clone(),
                version: model.version,
                reason: e.to_string(),
            },
        })?;
    model.record.ran(batch, ran.queue, ran.compute);
    // Before the outputs are narrowed to those asked for: the judged one
    // may not be among them.
    let said = judge.and_then(|j| j.said(&ran.outputs));

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
    Ok((
        InferResponse {
            model: model.model.clone(),
            version: model.version,
            id: request.id,
            outputs,
        },
        said,
    ))
}

/// Mirrors one answered request to the shadow target, and promotes a
/// `shadow-first` candidate once its comparisons meet the criteria. Runs
/// in its own task, after the primary has answered.
async fn mirror(
    ticket: Ticket,
    repository: Arc<Repository>,
    primary: Arc<ModelVersion>,
    inputs: Vec<InputTensor>,
    (primary_outputs, primary_took): (Vec<Tensor>, Duration),
    after: After,
) {
    let After { feedback, log } = after;
    let shadow = ticket.shadow().clone();
    let (model, version) = match &shadow.spec.target {
        Target::Version(v) => (primary.model.clone(), Some(v.to_string())),
        Target::Model(m) => {
            // Name the version, so that the other model's own shadow (if
            // any) is not triggered by this request.
            let serving = repository
                .registry
                .resolve(m, None)
                .map(|v| v.version.to_string());
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
        timeout: None,
        client_timeout: None,
    };
    let started = Instant::now();
    // Never mirrored again: the target is resolved and served directly.
    let result = match repository
        .registry
        .resolve(&request.model, request.version.as_deref())
    {
        Ok(target) => {
            // Judged as the primary is (the same output), on all of its
            // outputs, not only those the client asked for.
            let judge = primary
                .judge
                .as_ref()
                .filter(|_| feedback.is_some() || log.is_some());
            let (result, _, said) = serve(&target, request, judge, None).await;
            Ok((result, said))
        }
        Err(e) => Err(e),
    };
    let (result, said) = match result {
        Ok((result, said)) => (result, said),
        Err(e) => (Err(e), None),
    };
    let took = started.elapsed();
    if let Some((log, mut record)) = log {
        record.shadow = Some(ShadowPart {
            target: shadow.spec.target.key(),
            outputs: match &result {
                Ok(a) if log.config.outputs => a.outputs.clone(),
                _ => Vec::new(),
            },
            error: result.as_ref().err().map(|e| e.to_string()),
            predicted: match &said {
                Some(Said::Classes(c)) => Some(c.clone()),
                _ => None,
            },
        });
        log.submit(record);
    }
    // The shadow's answer joins the primary's prediction: labels then say
    // how both did on the same requests.
    if let (Some((feedback, id)), Some(said)) = (&feedback, said) {
        feedback.attach_shadow(id, &shadow.spec.target.key(), said);
    }
    let outcome = result.map(|a| a.outputs).map_err(|e| e.to_string());
    // Live accuracy of both, only for a candidate that is judged by it.
    let judged = shadow
        .promotion
        .as_ref()
        .is_some_and(|p| p.min_accuracy_gain.is_some());
    let live = feedback
        .as_ref()
        .filter(|_| judged)
        .and_then(|(f, _)| f.pair(primary.version, &shadow.spec.target.key()));
    let promote = shadow.settle(
        ticket,
        &primary.signature,
        (&primary_outputs, primary_took),
        (outcome, took),
        live.as_ref(),
    );
    if let Some(v) = promote {
        let m = &shadow.model;
        match repository.promote(m, Some(v)).await {
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
