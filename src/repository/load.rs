//! Loading one version: the runtime's session(s), the signature with the
//! config's overrides, batching and schema, a warm-up run, the deployment
//! gate, the statistics windows, and the inference threads. Runs on a
//! blocking thread; nothing is published here.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::config::{ConfigError, ModelConfig};
use super::{Defaults, Repository};
use crate::backend::{self, BackendError, LoadOptions, Signature};
use crate::model::ModelVersion;
use crate::monitor::Recorder;
use crate::rollout::gate::{self, GateError};
use crate::window::drift::BaselineError;
use crate::worker::Worker;

/// Why a version did not load. Its message is the reason the index shows.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The runtime could not load the model file.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// config.toml is broken, or does not fit the model.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model loaded but cannot run.
    #[error("warm-up inference failed: {0}")]
    WarmUp(BackendError),
    /// The deployment gate could not run, or refused the version.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// `baseline.json` does not read or check out.
    #[error(transparent)]
    BaselineFile(#[from] BaselineError),
    /// `baseline.json` does not fit the model.
    #[error("{file}: {0}", file = crate::window::BASELINE_FILE)]
    Baseline(BaselineError),
    #[error("cannot start the inference threads: {0}")]
    Threads(std::io::Error),
    #[error("loader panicked: {0}")]
    Panicked(String),
}

impl LoadError {
    /// The version loaded but the deployment gate refused it: the index
    /// says FAILED rather than UNAVAILABLE.
    pub fn refused_by_gate(&self) -> bool {
        matches!(self, LoadError::Gate(GateError::Failed(_)))
    }
}

impl Repository {
    /// Loads, checks and warms up one version on a blocking thread.
    pub(super) async fn load_version(
        &self,
        name: &str,
        version: u64,
        dir: &Path,
        config: &ModelConfig,
        serving_accuracy: Option<f64>,
    ) -> Result<ModelVersion, LoadError> {
        let (name, dir, config, defaults) = (
            name.to_string(),
            dir.to_path_buf(),
            config.clone(),
            self.defaults.clone(),
        );
        tokio::task::spawn_blocking(move || {
            load_version_blocking(&name, version, &dir, &config, &defaults, serving_accuracy)
        })
        .await
        .map_err(|e| LoadError::Panicked(e.to_string()))?
    }
}

fn load_version_blocking(
    name: &str,
    version: u64,
    dir: &Path,
    config: &ModelConfig,
    defaults: &Defaults,
    serving_accuracy: Option<f64>,
) -> Result<ModelVersion, LoadError> {
    let options = LoadOptions {
        intra_op_threads: config.intra_op_threads.unwrap_or(defaults.intra_op_threads),
        device: config.device.unwrap_or(defaults.device),
        require_gpu: config.require_gpu,
        declared: config.declared(),
    };
    let mut backend = backend::load(dir, &options)?;
    let mut signature = backend.signature().clone();
    config.apply(&mut signature)?;
    let batching = config.batching(&signature)?;
    let schema =
        crate::schema::Schema::compile(&config.schema, &signature).map_err(ConfigError::new)?;
    let judge = crate::feedback::Judge::of(
        &signature,
        config
            .feedback
            .as_ref()
            .and_then(|f| f.output.as_deref())
            .or(config.gate.output.as_deref()),
    )
    .map_err(ConfigError::new)?;
    let sha256 = backend::model_file(dir)
        .and_then(|p| std::fs::read(p).ok())
        .map(|bytes| format!("{:x}", Sha256::digest(&bytes)))
        .unwrap_or_default();

    warm_up(backend.as_mut(), &signature)?;
    let model_dir = dir.parent().unwrap_or(dir);
    let gate = gate::run(
        backend.as_mut(),
        &signature,
        &config.gate,
        model_dir,
        serving_accuracy,
    )?;
    if let Some(g) = &gate {
        tracing::info!(model = %name, version, accuracy = g.accuracy, p99_ms = g.p99_ms, rows = g.rows, "deployment gate passed");
    }

    let platform = backend.platform();
    let device = backend.device();
    let properties = backend.properties().clone();
    // Further instances: their own sessions of the same file, one thread each.
    let mut backends = vec![backend];
    for _ in 1..config.instances.unwrap_or(1).max(1) {
        let mut instance = backend::load(dir, &options)?;
        warm_up(instance.as_mut(), &signature)?;
        backends.push(instance);
    }
    let windows = window_statistics(
        name,
        version,
        dir,
        config,
        defaults,
        &signature,
        backends.len(),
    )?;
    let record = Recorder::new(name, version, platform, &sha256, &properties, windows);
    let worker = Worker::spawn(
        &format!("{name}-{version}"),
        backends,
        batching
            .clone()
            .unwrap_or_else(crate::batcher::Policy::unbatched),
        batching.is_some(),
        crate::worker::Admission {
            capacity: config.queue_capacity.unwrap_or(defaults.queue_capacity),
            max_wait: config.queue.max_wait(defaults.max_queue_wait),
        },
        record.for_runs(),
    )
    .map_err(LoadError::Threads)?;
    let log_layout = Arc::new(crate::predlog::Layout::of(
        &signature,
        judge.as_ref().is_some_and(|j| j.classifier()),
    ));
    let log_names = (Arc::from(name), Arc::from(sha256.as_str()));
    Ok(ModelVersion {
        model: name.to_string(),
        version,
        platform,
        signature,
        max_batch_size: config.max_batch_size.filter(|&b| b > 0),
        properties,
        sha256,
        gate,
        device,
        requested_device: options.device,
        worker,
        record,
        batching,
        schema: (!schema.is_empty()).then_some(schema),
        health: config.health.clone(),
        default_timeout: config.queue.default_timeout(),
        loaded_at: std::time::SystemTime::now(),
        log_layout,
        log_names,
        judge,
    })
}

/// The version's window statistics (`None` when turned off), with its drift
/// baseline when `baseline.json` lies next to the model file. A baseline
/// that does not parse or fit the model fails the load, as a bad config does.
fn window_statistics(
    name: &str,
    version: u64,
    dir: &Path,
    config: &ModelConfig,
    defaults: &Defaults,
    signature: &Signature,
    shards: usize,
) -> Result<Option<Arc<crate::window::Windows>>, LoadError> {
    let d = &defaults.window;
    let window = crate::window::WindowConfig {
        length: config.stats.window.unwrap_or(d.length),
        keep: config.stats.keep.unwrap_or(d.keep).max(1),
        max_features: config.stats.max_features.unwrap_or(d.max_features),
        rollups: config.rollups(),
    };
    if window.length.is_zero() {
        return Ok(None);
    }
    let path = dir.join(crate::window::BASELINE_FILE);
    let baseline = if path.exists() {
        Some(crate::window::drift::BaselineFile::read(&path)?)
    } else {
        None
    };
    crate::window::Windows::new(
        name,
        version,
        signature,
        window,
        config.drift.resolve(),
        baseline,
        shards,
    )
    .map(|w| Some(Arc::new(w)))
    .map_err(LoadError::Baseline)
}

/// One inference on zeros, one row per open dimension. A model that cannot
/// run is refused here, before anyone is routed to it; the first real
/// request does not pay for the runtime's lazy initialisation either.
fn warm_up(backend: &mut dyn backend::Backend, signature: &Signature) -> Result<(), LoadError> {
    let inputs = signature.zero_inputs(1);
    let outputs = backend.run(inputs).map_err(LoadError::WarmUp)?;
    // Outputs of the declared shapes, no NaN/Inf: the gate's first check.
    gate::check_outputs(&outputs, signature)?;
    Ok(())
}
