//! Rollout operations as the API offers them: promote, rollback, the
//! shadow (report, start, stop) and compare. Request bodies are the API's
//! JSON, parsed here so that every adapter says the same of the same
//! mistake; the repository carries the changes out.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::infer::{InferRequest, InferResponse};
use super::Service;
use crate::error::Error;
use crate::model::ModelVersion;
use crate::rollout::compare::OutputReport;
use crate::rollout::shadow::{
    ShadowReport, Spec, Target, DEFAULT_MAX_INFLIGHT, DEFAULT_SAMPLE_RATE,
};

/// Which version serves now, and which served before.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Primary {
    pub model: String,
    pub primary: String,
    pub previous: String,
    /// Whether the change reached the model's `rollout.toml`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_file: Option<RolloutFile>,
}

/// What a rollout change did to the model's `rollout.toml`, where every
/// replica (and this server after a restart) reads it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutFile {
    /// Written, with this generation.
    Generation(u64),
    /// Not written: the change holds in this server until it restarts.
    Error(String),
}

impl RolloutFile {
    /// `None`: the file already said so.
    fn of(persisted: Result<Option<u64>, String>) -> Option<RolloutFile> {
        match persisted {
            Ok(generation) => generation.map(RolloutFile::Generation),
            Err(why) => Some(RolloutFile::Error(why)),
        }
    }
}

/// A shadow's report, and what starting or stopping it did to the
/// model's `rollout.toml`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShadowChange {
    #[serde(flatten)]
    pub report: ShadowReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_file: Option<RolloutFile>,
}

/// What a compare request runs on: the primary, and the candidate.
pub struct CompareTarget {
    pub primary: Arc<ModelVersion>,
    candidate_model: String,
    candidate_version: Option<String>,
}

/// Both answers to one request and their differences, output by output.
pub struct Comparison {
    pub primary: InferResponse,
    pub candidate: InferResponse,
    pub differences: BTreeMap<String, OutputReport>,
}

impl Service {
    /// `{"version": V}` (a number or its string) becomes the primary; no
    /// version (`{}`, or no body at all): the shadow's.
    pub async fn promote(&self, model: &str, body: &[u8]) -> Result<Primary, Error> {
        let v: Value = if body.trim_ascii().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(body).map_err(|e| {
                Error::BadRequest(format!("promote needs a JSON body {{\"version\": V}}: {e}"))
            })?
        };
        let version = version_field(&v)?;
        let changed = self.repository.promote(model, version).await?;
        let (now, before) = changed.value;
        Ok(Primary {
            model: model.to_string(),
            primary: now.to_string(),
            previous: before.to_string(),
            rollout_file: RolloutFile::of(changed.persisted),
        })
    }

    /// Back to the previous primary.
    pub async fn rollback(&self, model: &str) -> Result<Primary, Error> {
        let changed = self.repository.rollback(model).await?;
        let (from, to) = changed.value;
        Ok(Primary {
            model: model.to_string(),
            primary: to.to_string(),
            previous: from.to_string(),
            rollout_file: RolloutFile::of(changed.persisted),
        })
    }

    /// The model's shadow and its comparisons so far.
    pub fn shadow_report(&self, model: &str) -> Result<ShadowChange, Error> {
        let table = self.repository.registry.snapshot();
        let entry = table.entry(model)?;
        let shadow = entry
            .shadow
            .as_ref()
            .ok_or_else(|| Error::Conflict(format!("model '{model}' has no shadow")))?;
        let live = entry
            .feedback
            .as_ref()
            .zip(entry.serving())
            .and_then(|(f, v)| f.pair(v.version, &shadow.spec.target.key()));
        Ok(ShadowChange {
            report: shadow.report(live),
            rollout_file: None,
        })
    }

    /// Starts a shadow: `{"version": V}` or `{"model": M}`, with
    /// `"sample_rate"` and `"max_inflight"` optional.
    pub async fn start_shadow(&self, model: &str, body: &[u8]) -> Result<ShadowChange, Error> {
        let spec = shadow_spec(body)?;
        let changed = self.repository.set_shadow(model, spec).await?;
        Ok(ShadowChange {
            report: changed.value.report(None),
            rollout_file: RolloutFile::of(changed.persisted),
        })
    }

    /// Stops the shadow; its final report.
    pub async fn stop_shadow(&self, model: &str) -> Result<ShadowChange, Error> {
        let changed = self.repository.clear_shadow(model).await?;
        Ok(ShadowChange {
            report: changed.value,
            rollout_file: RolloutFile::of(changed.persisted),
        })
    }

    /// What `compare` would run on: the primary, and `candidate` (a version
    /// of the model) or else the shadow's target. Checked before the
    /// request is read, so that a model without either is told so first.
    pub fn compare_target(
        &self,
        model: &str,
        candidate: Option<String>,
    ) -> Result<CompareTarget, Error> {
        let table = self.repository.registry.snapshot();
        let entry = table.entry(model)?;
        let (candidate_model, candidate_version) = match (
            candidate,
            entry.shadow.as_ref().map(|s| s.spec.target.clone()),
        ) {
            (Some(v), _) => (model.to_string(), Some(v)),
            (None, Some(Target::Version(v))) => (model.to_string(), Some(v.to_string())),
            (None, Some(Target::Model(m))) => (m, None),
            (None, None) => {
                return Err(Error::BadRequest(
                    "compare needs ?version=V, or a shadow to compare with".into(),
                ))
            }
        };
        let primary = entry
            .serving()
            .cloned()
            .ok_or_else(|| Error::ModelUnavailable(model.to_string()))?;
        Ok(CompareTarget {
            primary,
            candidate_model,
            candidate_version,
        })
    }

    /// Runs `request` (addressed to the target's primary) on the primary
    /// and on the candidate.
    pub async fn compare(
        &self,
        target: CompareTarget,
        request: InferRequest,
    ) -> Result<Comparison, Error> {
        let mut other = request.clone();
        other.model = target.candidate_model;
        other.version = target.candidate_version;
        let primary = self.infer(request).await?;
        let candidate = self.infer(other).await?;
        let differences = crate::rollout::compare::compare(
            &target.primary.signature,
            &primary.outputs,
            &candidate.outputs,
        )
        .iter()
        .map(|(k, t)| (k.clone(), t.report()))
        .collect();
        Ok(Comparison {
            primary,
            candidate,
            differences,
        })
    }
}

/// `"version": 3` or `"version": "3"`, if present.
fn version_field(v: &Value) -> Result<Option<u64>, Error> {
    match &v["version"] {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| Error::InvalidVersion(n.to_string())),
        Value::String(s) => crate::model::parse_version(s).map(Some),
        other => Err(Error::InvalidVersion(other.to_string())),
    }
}

/// A shadow's settings from the API's JSON; the defaults are the shadow's.
fn shadow_spec(body: &[u8]) -> Result<Spec, Error> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("shadow needs a JSON body: {e}")))?;
    let target = match (version_field(&v)?, v["model"].as_str()) {
        (Some(version), None) => Target::Version(version),
        (None, Some(m)) => Target::Model(m.to_string()),
        _ => {
            return Err(Error::BadRequest(
                "shadow needs either \"version\" (of this model) or \"model\" (another one)".into(),
            ))
        }
    };
    Ok(Spec {
        target,
        sample_rate: v["sample_rate"].as_f64().unwrap_or(DEFAULT_SAMPLE_RATE),
        max_inflight: v["max_inflight"]
            .as_u64()
            .map_or(DEFAULT_MAX_INFLIGHT, |n| n as usize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_a_positive_number_or_its_string() {
        let field = |text: &str| version_field(&serde_json::from_str(text).unwrap());
        assert_eq!(field(r#"{"version": 3}"#).unwrap(), Some(3));
        assert_eq!(field(r#"{"version": "3"}"#).unwrap(), Some(3));
        assert_eq!(field("{}").unwrap(), None);
        for bad in [
            r#"{"version": -1}"#,
            r#"{"version": "x"}"#,
            r#"{"version": [3]}"#,
        ] {
            assert!(matches!(field(bad), Err(Error::InvalidVersion(_))), "{bad}");
        }
    }

    #[test]
    fn a_shadow_needs_one_target_and_takes_the_defaults() {
        let spec = shadow_spec(br#"{"version": 2}"#).unwrap();
        assert_eq!(spec.target, Target::Version(2));
        assert_eq!(
            (spec.sample_rate, spec.max_inflight),
            (DEFAULT_SAMPLE_RATE, DEFAULT_MAX_INFLIGHT)
        );
        let spec =
            shadow_spec(br#"{"model": "b", "sample_rate": 0.5, "max_inflight": 3}"#).unwrap();
        assert_eq!(spec.target, Target::Model("b".into()));
        assert_eq!((spec.sample_rate, spec.max_inflight), (0.5, 3));
        for bad in [&br#"{"version": 2, "model": "b"}"#[..], b"{}", b"not json"] {
            assert!(matches!(shadow_spec(bad), Err(Error::BadRequest(_))));
        }
    }
}
