//! The optional per-model `config.toml` next to the version folders.
//!
//! ```toml
//! version_policy = "all"            # or { latest = 2 } or { specific = [1, 3] }
//! max_batch_size = 64               # 0: the model has no batch dimension
//! queue_capacity = 256              # requests waiting per version
//! intra_op_threads = 1
//! dynamic_batching = true           # default: on when the model has a batch dimension
//! preferred_batch_sizes = [8, 16]
//! max_queue_delay_us = 0            # how long a request may wait for company
//! instances = 1                     # sessions (and threads) per version
//!
//! [stats]                           # per-window distribution statistics
//! window = "10s"                    # default: --stats-window; "0s" turns them off
//! keep = 10                         # closed windows kept (default --stats-windows-kept)
//! max_features = 64                 # per-feature summaries of [batch, features] tensors
//! hourly = 48                       # hourly summaries kept, merged from the windows
//! daily = 31                        # daily summaries kept
//!
//! [drift]                           # against <version>/baseline.json, when there is one
//! psi_threshold = 0.25
//! ks_threshold = 0.2
//! min_rows = 100                    # fewer rows in a window: reported, never flagged
//!
//! [health]
//! max_age_days = 90                 # older than this (since trained_at): stale
//! min_labels = 100                  # live accuracy judged from this many labelled rows
//! max_accuracy_drop = 0.05          # below training accuracy by more: the model is wrong
//!
//! [log]                             # the prediction log (see predlog.rs)
//! sample_rate = 1.0                 # by a hash of the request id
//! dir = "digits"                    # default <--prediction-log-dir>/<model>
//! format = "parquet"                # or "jsonl"
//! max_rows = 100000                 # records per file; also max_bytes, max_age = "1h"
//! inputs = true                     # also outputs = true, refused = false
//!
//! [queue]
//! default_timeout_us = 100000       # a request's deadline unless it brings a tighter one
//! timeout_action = "reject"         # the only action: 504 / DEADLINE_EXCEEDED, never run
//! max_wait_us = 20000               # queued work (in time to drain) past which requests are
//!                                   # refused (503); default --max-queue-wait (off); 0: off
//!
//! [checks]                         # present: run on schedule (POST .../checks runs one any time)
//! every = "24h"                     # the period checked, aligned to UTC (hours, days)
//! quality_warn = 0.01               # refusal / NaN-Inf / missing rates: warn above,
//! quality_fail = 0.05               # fail above
//!
//! [feedback]                        # present: predictions kept for labels (POST .../feedback)
//! keep = "7d"
//! max_predictions = 100000          # 0: no index, no feedback
//! output = "label"                  # default: the gate's output, else the first class output
//!
//! [[inputs]]                        # override or narrow what the model file says
//! name = "input"
//! datatype = "FP32"
//! dims = [-1, 64]
//! ```
//! Unknown keys are refused so that a typo does not silently do nothing.

use std::time::Duration;

use serde::Deserialize;

use crate::backend::{Signature, TensorSpec};
use crate::batcher::Policy;
use crate::monitor::HealthConfig;
use crate::tensor::DataType;

pub const FILE_NAME: &str = "config.toml";

/// What is wrong with a model's config.toml, or with how it fits the model;
/// the message names the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// A problem with the file: said as "config.toml: ...".
    pub fn new(message: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{FILE_NAME}: {message}"))
    }

    /// A message that names the file itself.
    fn named(message: String) -> ConfigError {
        ConfigError(message)
    }

    pub fn contains(&self, text: &str) -> bool {
        self.0.contains(text)
    }
}

/// Rows per batch when batching is on and `max_batch_size` is not set.
pub const DEFAULT_MAX_BATCH_ROWS: u64 = 64;

/// `[shadow]`: `version = N` (of this model) or `model = "other"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    pub version: Option<u64>,
    pub model: Option<String>,
    #[serde(default = "default_sample_rate")]
    pub sample_rate: f64,
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
}

fn default_sample_rate() -> f64 {
    crate::rollout::shadow::DEFAULT_SAMPLE_RATE
}

fn default_max_inflight() -> usize {
    crate::rollout::shadow::DEFAULT_MAX_INFLIGHT
}

impl ShadowConfig {
    pub fn spec(&self) -> Result<crate::rollout::shadow::Spec, ConfigError> {
        let target = match (self.version, &self.model) {
            (Some(v), None) => crate::rollout::shadow::Target::Version(v),
            (None, Some(m)) => crate::rollout::shadow::Target::Model(m.clone()),
            _ => return Err(ConfigError::new("[shadow] needs either version or model")),
        };
        let spec = crate::rollout::shadow::Spec {
            target,
            sample_rate: self.sample_rate,
            max_inflight: self.max_inflight,
        };
        spec.check()
            .map_err(|e| ConfigError::new(format!("[shadow] {e}")))?;
        Ok(spec)
    }
}

/// Which of the versions on disk are served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicy {
    /// Every version on disk.
    All,
    /// The N highest versions that load; a newer version that fails to load
    /// does not push out an older one that serves.
    Latest(usize),
    /// Exactly these versions, where they exist.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Where the model runs: "cpu" or "cuda:N" (default: --device).
    pub device: Option<crate::backend::Device>,
    /// A GPU that cannot be used fails the load instead of falling back
    /// to the CPU with a warning.
    #[serde(default)]
    pub require_gpu: bool,
    /// What happens to a new version that passes the gate.
    #[serde(default)]
    pub rollout: crate::rollout::Rollout,
    /// When a `shadow-first` candidate is promoted by itself.
    #[serde(default)]
    pub promotion: crate::rollout::shadow::Promotion,
    /// A shadow from the start (the API can change or stop it).
    pub shadow: Option<ShadowConfig>,
    /// Largest batch (first dimension) a request may carry; 0 or absent: no
    /// limit beyond the model's own shape.
    pub max_batch_size: Option<u64>,
    /// Requests that may wait per version before new ones are refused.
    pub queue_capacity: Option<usize>,
    pub intra_op_threads: Option<usize>,
    /// Merge concurrent requests into one run. Default: on when every input
    /// and output has a variable first (batch) dimension, off otherwise.
    pub dynamic_batching: Option<bool>,
    /// Batch sizes (rows) worth waiting up to `max_queue_delay_us` for.
    #[serde(default)]
    pub preferred_batch_sizes: Vec<usize>,
    /// How long the oldest queued request may wait for others to join its
    /// batch. Default 0: batch only what is already queued, adding no latency.
    pub max_queue_delay_us: Option<u64>,
    /// Model instances (each its own session and thread). Default 1.
    pub instances: Option<usize>,
    /// Input schema rules, by input name (see `schema.rs`).
    #[serde(default)]
    pub schema: std::collections::BTreeMap<String, crate::schema::InputRules>,
    #[serde(default)]
    pub inputs: Vec<TensorOverride>,
    #[serde(default)]
    pub outputs: Vec<TensorOverride>,
    #[serde(default)]
    pub stats: StatsConfig,
    #[serde(default)]
    pub drift: DriftSettings,
    #[serde(default)]
    pub health: HealthConfig,
    /// The deployment gate's checks (see `gate.rs`).
    #[serde(default)]
    pub gate: crate::rollout::gate::GateConfig,
    /// The index of recent predictions that labels are joined with;
    /// absent: no index (it costs memory and a little per request, so a
    /// model that will get labels says so).
    pub feedback: Option<crate::feedback::FeedbackConfig>,
    /// The prediction log; absent: requests are not logged.
    pub log: Option<crate::predlog::LogConfig>,
    /// The scheduled checks; absent: they run only when asked for.
    pub checks: Option<crate::checks::ChecksConfig>,
    /// Deadlines of requests that bring none tighter.
    #[serde(default)]
    pub queue: QueueConfig,
}

/// `[queue]`: the part of Triton's `default_queue_policy` infergate acts on.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// A request's deadline unless it brings a tighter one; 0: none
    /// (then `--request-timeout`, if set).
    pub default_timeout_us: Option<u64>,
    /// What happens at the deadline: the request is refused (504 /
    /// DEADLINE_EXCEEDED) and, if it has not run, never runs. The only
    /// action: Triton's `DELAY` would run work its client gave up on.
    #[serde(default)]
    pub timeout_action: TimeoutAction,
    /// The most work the queue holds, as the time it would take to drain;
    /// beyond it a request is refused at once. 0: no bound but
    /// `queue_capacity`; absent: `--max-queue-wait`.
    pub max_wait_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutAction {
    #[default]
    Reject,
}

impl QueueConfig {
    /// The queue's bound in time: this config's, else the server's.
    pub fn max_wait(&self, server: Option<Duration>) -> Option<Duration> {
        match self.max_wait_us {
            Some(0) => None,
            Some(us) => Some(Duration::from_micros(us)),
            None => server,
        }
    }

    pub fn default_timeout(&self) -> Option<Duration> {
        self.default_timeout_us
            .filter(|&us| us > 0)
            .map(Duration::from_micros)
    }
}

impl ModelConfig {
    /// The roll-ups this model's windows keep.
    pub fn rollups(&self) -> Vec<crate::window::RollupSpec> {
        crate::window::RollupSpec::standard(
            self.stats.hourly.unwrap_or(DEFAULT_HOURLY),
            self.stats.daily.unwrap_or(DEFAULT_DAILY),
            Some(self.checks_config().every),
        )
    }

    /// `[checks]`, or what an on-demand check uses without one.
    pub fn checks_config(&self) -> crate::checks::ChecksConfig {
        self.checks.clone().unwrap_or_default()
    }
}

/// Hourly summaries kept: two days.
pub const DEFAULT_HOURLY: usize = 48;
/// Daily summaries kept: a month.
pub const DEFAULT_DAILY: usize = 31;

/// `[stats]`: overrides of the server-wide window settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    #[serde(default, with = "crate::serde_duration::option")]
    pub window: Option<Duration>,
    pub keep: Option<usize>,
    pub max_features: Option<usize>,
    /// Hourly and daily roll-ups kept (0: none).
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
}

/// `[drift]`: when a window's drift is flagged.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    pub psi_threshold: Option<f64>,
    pub ks_threshold: Option<f64>,
    pub min_rows: Option<u64>,
}

impl DriftSettings {
    pub fn resolve(&self) -> crate::window::DriftConfig {
        let d = crate::window::DriftConfig::default();
        crate::window::DriftConfig {
            psi_threshold: self.psi_threshold.unwrap_or(d.psi_threshold),
            ks_threshold: self.ks_threshold.unwrap_or(d.ks_threshold),
            min_rows: self.min_rows.unwrap_or(d.min_rows),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorOverride {
    pub name: String,
    pub datatype: Option<String>,
    pub dims: Option<Vec<i64>>,
}

impl ModelConfig {
    pub fn parse(text: &str) -> Result<ModelConfig, ConfigError> {
        let config: ModelConfig = toml::from_str(text).map_err(ConfigError::new)?;
        if let VersionPolicy::Latest(0) = config.version_policy {
            return Err(ConfigError::new("version_policy latest must be at least 1"));
        }
        if let Some(log) = &config.log {
            log.check().map_err(ConfigError::new)?;
        }
        if let Some(checks) = &config.checks {
            checks.check().map_err(ConfigError::new)?;
        }
        Ok(config)
    }

    /// The batching policy for a model with this signature, or `None` when
    /// requests run one by one. Refuses batching asked for a model that has
    /// no batch dimension.
    pub fn batching(&self, signature: &Signature) -> Result<Option<Policy>, ConfigError> {
        let batchable = signature
            .inputs
            .iter()
            .chain(&signature.outputs)
            .all(|t| t.shape.first() == Some(&-1));
        match self.dynamic_batching {
            Some(true) if !batchable => {
                return Err(ConfigError::new("dynamic_batching needs every input and output to have a variable first dimension (-1)"))
            }
            Some(false) => return Ok(None),
            _ if !batchable => return Ok(None),
            _ => {}
        }
        let max_rows = self
            .max_batch_size
            .filter(|&b| b > 0)
            .unwrap_or(DEFAULT_MAX_BATCH_ROWS) as usize;
        let mut preferred = self.preferred_batch_sizes.clone();
        preferred.sort_unstable();
        if let Some(p) = preferred.iter().find(|&&p| p == 0 || p > max_rows) {
            return Err(ConfigError::new(format!(
                "preferred batch size {p} is not within 1..={max_rows} (max_batch_size)"
            )));
        }
        Ok(Some(Policy {
            max_rows,
            preferred,
            max_delay: Duration::from_micros(self.max_queue_delay_us.unwrap_or(0)),
        }))
    }

    /// The signature config.toml declares in full (every `[[inputs]]` and
    /// `[[outputs]]` with a datatype and dims), if it does.
    pub fn declared(&self) -> Option<Signature> {
        let spec = |o: &TensorOverride| -> Option<TensorSpec> {
            Some(TensorSpec {
                name: o.name.clone(),
                datatype: DataType::parse(o.datatype.as_deref()?)?,
                shape: o.dims.clone()?,
            })
        };
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return None;
        }
        Some(Signature {
            inputs: self.inputs.iter().map(spec).collect::<Option<_>>()?,
            outputs: self.outputs.iter().map(spec).collect::<Option<_>>()?,
        })
    }

    /// Applies the `inputs`/`outputs` overrides to what the model file
    /// declares. An override may name only tensors the model has, keep its
    /// datatype, keep its rank, and fix only dimensions the file leaves open.
    pub fn apply(&self, signature: &mut Signature) -> Result<(), ConfigError> {
        fn one(
            kind: &str,
            specs: &mut [TensorSpec],
            o: &TensorOverride,
        ) -> Result<(), ConfigError> {
            let spec = specs.iter_mut().find(|s| s.name == o.name).ok_or_else(|| {
                ConfigError::named(format!(
                    "config.toml names {kind} '{}', which the model does not have",
                    o.name
                ))
            })?;
            if let Some(dt) = &o.datatype {
                let dt = DataType::parse(dt).ok_or_else(|| {
                    ConfigError::new(format!("{kind} '{}': unknown datatype '{dt}'", o.name))
                })?;
                if dt != spec.datatype {
                    return Err(ConfigError::new(format!(
                        "{kind} '{}' is {dt} but the model file says {}",
                        o.name, spec.datatype
                    )));
                }
            }
            if let Some(dims) = &o.dims {
                if !spec.fits(dims) || dims.iter().any(|&d| d < -1) {
                    return Err(ConfigError::new(format!(
                        "{kind} '{}' dims {dims:?} do not fit the model's {:?}",
                        o.name, spec.shape
                    )));
                }
                spec.shape = dims.clone();
            }
            Ok(())
        }
        for o in &self.inputs {
            one("input", &mut signature.inputs, o)?;
        }
        for o in &self.outputs {
            one("output", &mut signature.outputs, o)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        assert_eq!(
            ModelConfig::parse("").unwrap().version_policy,
            VersionPolicy::Latest(1)
        );
        assert_eq!(
            ModelConfig::parse("version_policy = \"all\"")
                .unwrap()
                .version_policy,
            VersionPolicy::All
        );
        assert_eq!(
            ModelConfig::parse("version_policy = { latest = 3 }")
                .unwrap()
                .version_policy,
            VersionPolicy::Latest(3)
        );
        assert_eq!(
            ModelConfig::parse("version_policy = { specific = [1, 4] }")
                .unwrap()
                .version_policy,
            VersionPolicy::Specific(vec![1, 4])
        );
        assert!(ModelConfig::parse("version_policy = { latest = 0 }").is_err());
        assert!(ModelConfig::parse("version_polcy = \"all\"")
            .unwrap_err()
            .contains("version_polcy"));
    }

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, -1],
            }],
            outputs: vec![],
        }
    }

    #[test]
    fn the_queue_bound_in_time_is_the_models_else_the_servers() {
        let server = Some(Duration::from_millis(50));
        let of = |text: &str| ModelConfig::parse(text).unwrap().queue.max_wait(server);
        assert_eq!(of(""), server);
        assert_eq!(
            of("[queue]\nmax_wait_us = 5000\n"),
            Some(Duration::from_millis(5))
        );
        assert_eq!(of("[queue]\nmax_wait_us = 0\n"), None, "0: no bound");
        assert!(ModelConfig::parse("[queue]\nmax_wait = 5\n").is_err());
    }

    #[test]
    fn batching_defaults_follow_the_batch_dimension() {
        let batched = sig();
        let policy = ModelConfig::default().batching(&batched).unwrap().unwrap();
        assert_eq!(policy.max_rows, DEFAULT_MAX_BATCH_ROWS as usize);
        assert_eq!(policy.max_delay, Duration::ZERO);
        let off = ModelConfig::parse("dynamic_batching = false").unwrap();
        assert_eq!(off.batching(&batched).unwrap(), None);

        let mut fixed = sig();
        fixed.inputs[0].shape = vec![4, -1];
        assert_eq!(ModelConfig::default().batching(&fixed).unwrap(), None);
        let forced = ModelConfig::parse("dynamic_batching = true").unwrap();
        assert!(forced
            .batching(&fixed)
            .unwrap_err()
            .contains("first dimension"));

        let c = ModelConfig::parse(
            "max_batch_size = 8\npreferred_batch_sizes = [4, 2]\nmax_queue_delay_us = 250",
        )
        .unwrap();
        let p = c.batching(&batched).unwrap().unwrap();
        assert_eq!(
            (p.max_rows, p.preferred.clone(), p.max_delay),
            (8, vec![2, 4], Duration::from_micros(250))
        );
        let bad = ModelConfig::parse("max_batch_size = 8\npreferred_batch_sizes = [16]").unwrap();
        assert!(bad.batching(&batched).is_err());
    }

    #[test]
    fn overrides_narrow_open_dims_only() {
        let c = ModelConfig::parse("[[inputs]]\nname = \"x\"\ndims = [-1, 8]").unwrap();
        let mut s = sig();
        c.apply(&mut s).unwrap();
        assert_eq!(s.inputs[0].shape, vec![-1, 8]);
        // Now fixed at 8: changing it again must fail.
        let c2 = ModelConfig::parse("[[inputs]]\nname = \"x\"\ndims = [-1, 9]").unwrap();
        assert!(c2.apply(&mut s).is_err());
        let c3 = ModelConfig::parse("[[inputs]]\nname = \"y\"").unwrap();
        assert!(c3.apply(&mut sig()).unwrap_err().contains("'y'"));
        let c4 = ModelConfig::parse("[[inputs]]\nname = \"x\"\ndatatype = \"INT8\"").unwrap();
        assert!(c4.apply(&mut sig()).unwrap_err().contains("INT8"));
    }
}
