//! The core's error enum. Adapters map it to an HTTP status and a gRPC code
//! in one place each (`http::status_of`, `grpc::status_of`); the core never
//! speaks a protocol.

use crate::tensor::{DataType, TensorError};

/// Everything a client can be told went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown model '{0}'")]
    ModelNotFound(String),

    #[error("model '{model}' has no version {version}")]
    VersionNotFound { model: String, version: String },

    #[error("model '{model}' version {version} is not ready: {reason}")]
    VersionUnavailable {
        model: String,
        version: u64,
        reason: String,
    },

    #[error("model '{0}' has no ready version")]
    ModelUnavailable(String),

    /// The request's deadline (the client's timeout, or the model's or the
    /// server's default) passed before it was answered; if it had not run
    /// yet, it never will.
    #[error("model '{model}' version {version}: the request's deadline of {timeout_us} µs passed before it was answered")]
    DeadlineExceeded {
        model: String,
        version: u64,
        timeout_us: u64,
    },

    #[error("invalid model version '{0}': versions are positive integers")]
    InvalidVersion(String),

    #[error("invalid model name '{0}': names are one path component, without '..', '/' or '\\'")]
    InvalidModelName(String),

    #[error("input '{name}': {source}")]
    InvalidTensor { name: String, source: TensorError },

    #[error(
        "input '{name}': datatype mismatch, model expects {expected} but the request has {got}"
    )]
    DatatypeMismatch {
        name: String,
        expected: DataType,
        got: String,
    },

    #[error("input '{name}': shape mismatch, model expects {expected:?} (-1 = any) but the request has {got:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<i64>,
        got: Vec<i64>,
    },

    #[error("input '{name}' is required by model '{model}' but missing from the request")]
    MissingInput { model: String, name: String },

    #[error("input '{name}' is not an input of model '{model}' (inputs: {known})")]
    UnknownInput {
        model: String,
        name: String,
        known: String,
    },

    #[error("output '{name}' is not an output of model '{model}' (outputs: {known})")]
    UnknownOutput {
        model: String,
        name: String,
        known: String,
    },

    #[error("input '{input}': feature {feature} of row {row} is {value}, which breaks the schema rule {rule} ({bound})")]
    SchemaViolation {
        input: String,
        feature: usize,
        row: usize,
        rule: &'static str,
        value: f64,
        bound: String,
    },

    #[error("bad request: {0}")]
    BadRequest(String),

    #[error("model '{model}' failed to load: {reason}")]
    LoadFailed { model: String, reason: String },

    /// Refused at admission; `reason` says which bound it hit.
    #[error("model '{model}' version {version} is overloaded: {reason}")]
    Overloaded {
        model: String,
        version: u64,
        reason: String,
    },

    #[error("inference failed in model '{model}' version {version}: {reason}")]
    Inference {
        model: String,
        version: u64,
        reason: String,
    },

    #[error("the server is shutting down")]
    ShuttingDown,

    /// Asked for a model before the repository was first read: it may be
    /// on its way (a balancer may send a request to a replica that
    /// listens but has not loaded yet).
    #[error("the server is starting: model '{0}' is not loaded yet")]
    Starting(String),

    /// A control request that cannot be done in the current state.
    #[error("{0}")]
    Conflict(String),

    #[error("this endpoint needs the control token: send `Authorization: Bearer <token>`")]
    Unauthorized,

    /// Some labels of a feedback call were refused; the others were applied.
    #[error("{} of the labels sent were refused ({}), {applied} applied", invalid.len(), invalid_labels(invalid))]
    InvalidLabels {
        applied: u64,
        replaced: u64,
        unknown: Vec<String>,
        invalid: Vec<InvalidLabel>,
    },
}

/// A label refused by a feedback call: where it was in the list, its id,
/// and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InvalidLabel {
    pub index: usize,
    pub id: String,
    pub error: String,
}

fn invalid_labels(invalid: &[InvalidLabel]) -> String {
    let mut said: Vec<String> = invalid
        .iter()
        .take(5)
        .map(|i| format!("labels[{}] id '{}': {}", i.index, i.id, i.error))
        .collect();
    if invalid.len() > 5 {
        said.push(format!("and {} more", invalid.len() - 5));
    }
    said.join("; ")
}

/// How an error is classed: one per status an adapter can return. Also the
/// `reason` label of failure metrics, so these strings are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client asked for something that does not exist.
    NotFound,
    /// The request is malformed or does not fit the model.
    InvalidArgument,
    /// Exists, but cannot serve now (loading, failed, overloaded, stopping).
    Unavailable,
    /// The runtime failed on a request it had accepted.
    Internal,
    /// A control request that does not fit the current state (nothing to
    /// roll back to, say).
    Conflict,
    /// A control request without the configured token.
    Unauthenticated,
    /// The request's deadline passed before it was answered.
    DeadlineExceeded,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// How long a client refused for overload should wait before it retries
/// (HTTP `Retry-After`, gRPC `grpc-retry-pushback-ms`): a queue full now
/// drains within milliseconds, but HTTP counts whole seconds.
pub const RETRY_AFTER_SECONDS: u32 = 1;

impl Error {
    /// Seconds a client should wait before retrying, for refusals that a
    /// retry later can cure (overload); `None` for the others.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(self, Error::Overloaded { .. } | Error::Starting(_)).then_some(RETRY_AFTER_SECONDS)
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ModelNotFound(_) | Error::VersionNotFound { .. } => ErrorKind::NotFound,
            Error::InvalidVersion(_)
            | Error::InvalidModelName(_)
            | Error::InvalidTensor { .. }
            | Error::DatatypeMismatch { .. }
            | Error::ShapeMismatch { .. }
            | Error::MissingInput { .. }
            | Error::UnknownInput { .. }
            | Error::UnknownOutput { .. }
            | Error::SchemaViolation { .. }
            | Error::BadRequest(_)
            | Error::InvalidLabels { .. }
            | Error::LoadFailed { .. } => ErrorKind::InvalidArgument,
            Error::VersionUnavailable { .. }
            | Error::ModelUnavailable(_)
            | Error::Overloaded { .. }
            | Error::ShuttingDown
            | Error::Starting(_) => ErrorKind::Unavailable,
            Error::Inference { .. } => ErrorKind::Internal,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unauthorized => ErrorKind::Unauthenticated,
            Error::DeadlineExceeded { .. } => ErrorKind::DeadlineExceeded,
        }
    }
}
