//! The one API both protocol adapters call. An adapter decodes what came
//! over the wire, makes one call here and encodes the answer, so HTTP and
//! gRPC say the same thing about the same request and gain every feature
//! together.
//!
//! A request walks down once: [`Service::infer`] takes one snapshot of the
//! model table (`crate::model`), checks the request against the version's
//! signature and schema (`validate`), runs it on the version's inference
//! threads (`crate::worker` -> `crate::batcher` -> `crate::backend`) and
//! records how it went through the version's recorder
//! (`crate::monitor::Recorder`); a sampled request is then mirrored to the
//! shadow from here. Rollout operations (promote, rollback, shadow,
//! compare), health, statistics, the index and authorization are here too;
//! the control plane that carries them out is `crate::repository`.

mod control;
pub mod health;
pub mod infer;
mod validate;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::Error;
use crate::model::ModelVersion;
use crate::repository::{IndexEntry, Repository};
pub use control::{CompareTarget, Comparison, Primary};
pub use infer::{decode_input, InferRequest, InferResponse};

pub const SERVER_NAME: &str = "infergate";
/// V2 protocol extensions served.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_repository", "statistics"];

/// What the server says of itself (V2 server metadata).
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: &'static [&'static str],
}

pub const SERVER_METADATA: ServerMetadata = ServerMetadata {
    name: SERVER_NAME,
    version: env!("CARGO_PKG_VERSION"),
    extensions: EXTENSIONS,
};

/// How the service treats requests, from the server's configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest request body accepted (before and after decompression).
    pub max_request_bytes: usize,
    /// Bearer token the control operations (repository load/unload,
    /// promote, rollback, shadow) require; `None`: they are open.
    pub control_token: Option<String>,
    /// `--request-timeout`: the deadline of requests that bring none
    /// tighter and whose model sets none; `None`: no deadline.
    pub request_timeout: Option<std::time::Duration>,
    /// How long an HTTP request body may take to arrive.
    pub body_timeout: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_request_bytes: 64 << 20,
            control_token: None,
            request_timeout: None,
            body_timeout: std::time::Duration::from_secs(60),
        }
    }
}

pub struct Service {
    repository: Arc<Repository>,
    /// False until the first repository scan has finished, and again once
    /// shutdown begins, so load balancers stop sending work.
    ready: AtomicBool,
    /// Set once the first repository scan has finished, never unset.
    started: AtomicBool,
    options: Options,
    /// `infergate_http_requests_in_flight`, resolved once: the HTTP adapter
    /// moves it twice a request.
    pub http_in_flight: metrics::Gauge,
}

impl Service {
    pub fn new(repository: Arc<Repository>, options: Options) -> Service {
        Service {
            repository,
            ready: AtomicBool::new(false),
            started: AtomicBool::new(false),
            options,
            http_in_flight: metrics::gauge!(crate::monitor::HTTP_INFLIGHT),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        if ready {
            self.started.store(true, Ordering::Release);
        }
        self.ready.store(ready, Ordering::Release);
    }

    pub fn max_request_bytes(&self) -> usize {
        self.options.max_request_bytes
    }

    pub fn body_timeout(&self) -> std::time::Duration {
        self.options.body_timeout
    }

    /// Checks a control request's `Authorization` value.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), Error> {
        let Some(token) = &self.options.control_token else {
            return Ok(());
        };
        let given = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if token_matches(given, token) {
            Ok(())
        } else {
            Err(Error::Unauthorized)
        }
    }

    /// The version a request addresses: the one named, or the one serving.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<ModelVersion>, Error> {
        self.repository
            .registry
            .resolve(model, version)
            .map_err(|e| self.not_found_yet(e))
    }

    /// Before the repository was first read, "no such model" is not known
    /// yet: 503 (retry), not 404.
    fn not_found_yet(&self, e: Error) -> Error {
        match e {
            Error::ModelNotFound(m) | Error::VersionNotFound { model: m, .. }
                if !self.started.load(Ordering::Acquire) =>
            {
                Error::Starting(m)
            }
            e => e,
        }
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
    ) -> Result<health::HealthReport, Error> {
        let v = self.resolve(model, version)?;
        let table = self.repository.registry.snapshot();
        Ok(health::report(&v, table.entry(model)?))
    }

    /// The repository index: every model and version the server knows.
    pub fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        self.repository.index(ready_only)
    }

    /// Applies labels to the model's recent predictions (see
    /// `crate::feedback`). Unknown ids are reported in the outcome; labels
    /// that do not fit their prediction are refused with
    /// [`Error::InvalidLabels`], the rest applied.
    pub fn feedback(
        &self,
        model: &str,
        labels: Vec<crate::feedback::LabelIn>,
    ) -> Result<crate::feedback::FeedbackOutcome, Error> {
        let (feedback, log) = self.feedback_of(model)?;
        let now = std::time::SystemTime::now();
        let outcome = feedback.label(&labels, now);
        // Into the log as well, known ids or not (not those refused):
        // `infergate export` joins them with the records, which outlive
        // the in-memory index.
        if let Some(log) = log {
            let refused: std::collections::HashSet<usize> =
                outcome.invalid.iter().map(|i| i.index).collect();
            log.labels(
                labels
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !refused.contains(i))
                    .filter_map(|(_, l)| {
                        l.values.ok().map(|label| crate::predlog::LabelLine {
                            time: now,
                            id: l.id,
                            label,
                        })
                    })
                    .collect(),
            );
        }
        if outcome.invalid.is_empty() {
            Ok(outcome)
        } else {
            Err(Error::InvalidLabels {
                applied: outcome.applied,
                replaced: outcome.replaced,
                unknown: outcome.unknown,
                invalid: outcome.invalid,
            })
        }
    }

    /// Live accuracy of a model's versions and of its shadows.
    pub fn accuracy(&self, model: &str) -> Result<crate::feedback::ModelAccuracy, Error> {
        Ok(self.feedback_of(model)?.0.report())
    }

    /// Runs the model's checks on its current period now (see
    /// `crate::checks`).
    pub fn run_checks(&self, model: &str) -> Result<Arc<crate::checks::CheckReport>, Error> {
        self.repository.run_checks(model)
    }

    /// The model's last checks.
    pub fn checks(&self, model: &str) -> Result<crate::checks::ChecksView, Error> {
        self.repository.checks(model)
    }

    /// The model's feedback index (and its log, if any), or why labels
    /// cannot be taken for it.
    #[allow(clippy::type_complexity)]
    fn feedback_of(
        &self,
        model: &str,
    ) -> Result<
        (
            Arc<crate::feedback::Feedback>,
            Option<Arc<crate::predlog::PredictionLog>>,
        ),
        Error,
    > {
        let table = self.repository.registry.snapshot();
        let entry = table.entry(model)?;
        let judged = entry.ready_versions().any(|v| v.judge.is_some());
        match &entry.feedback {
            Some(f) if f.enabled() && judged => Ok((f.clone(), entry.log.clone())),
            Some(f) if !f.enabled() => Err(Error::BadRequest(format!(
                "model '{model}' keeps no predictions for labels ([feedback] max_predictions = 0)"
            ))),
            None => Err(Error::BadRequest(format!(
                "model '{model}' keeps no predictions for labels: add a [feedback] section to its config.toml"
            ))),
            _ => Err(Error::BadRequest(format!(
                "model '{model}' has no output that labels can be judged against (a class per row, or one value per row); name one with [feedback] output"
            ))),
        }
    }

    /// Loads (or reloads) a model now.
    pub async fn load_model(&self, model: &str) -> Result<(), Error> {
        self.repository.load_model(model).await
    }

    /// Unloads every version of a model until it is loaded again.
    pub async fn unload_model(&self, model: &str) -> Result<(), Error> {
        self.repository.unload_model(model).await
    }
}

/// Whether `given` is the control token, compared in constant time with its
/// length included: the digests of both are the same length whatever was
/// sent, and `subtle` compares them without an early exit.
fn token_matches(given: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(token.as_bytes()))
        .into()
}

#[cfg(test)]
mod token_tests {
    use super::token_matches;

    #[test]
    fn only_the_token_itself_matches() {
        let token = "s3cret-token";
        assert!(token_matches("s3cret-token", token));
        for other in [
            "",
            "s3cret-tokeN",
            "s3cret-toke",
            "s3cret-token ",
            "S3CRET-TOKEN",
            "x",
        ] {
            assert!(!token_matches(other, token), "{other:?}");
        }
    }
}

#[cfg(test)]
mod starting {
    use super::*;
    use crate::repository::Defaults;

    #[test]
    fn an_unknown_model_is_503_until_the_repository_was_first_read_then_404() {
        let dir = std::env::temp_dir();
        let repository = Arc::new(Repository::new(
            dir,
            Defaults {
                queue_capacity: 8,
                max_queue_wait: None,
                intra_op_threads: 1,
                window: Default::default(),
                device: Default::default(),
                prediction_log_dir: "predictions".into(),
            },
        ));
        let service = Service::new(repository, Options::default());
        let err = service.resolve("digits", None).err().unwrap();
        assert!(
            matches!(err, Error::Starting(ref m) if m == "digits"),
            "{err}"
        );
        assert_eq!(err.kind(), crate::error::ErrorKind::Unavailable);
        assert_eq!(err.retry_after(), Some(crate::error::RETRY_AFTER_SECONDS));
        service.set_ready(true);
        let err = service.resolve("digits", None).err().unwrap();
        assert!(matches!(err, Error::ModelNotFound(_)), "{err}");
        // Shutting down is not starting: unknown stays unknown.
        service.set_ready(false);
        let err = service.resolve("digits", Some("1")).err().unwrap();
        assert_eq!(err.kind(), crate::error::ErrorKind::NotFound, "{err}");
    }
}
