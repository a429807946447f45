//! The model repository: `<root>/<model>/<version>/model.onnx`, an optional
//! `<root>/<model>/config.toml`, integer version folders.
//!
//! The repository is reconciled with the disk on a timer (`poll`) and on
//! demand (`load_model`, `unload_model`). Reconciling never takes a serving
//! version away before its replacement is loaded and warmed up, and a
//! version that fails to load is recorded as `UNAVAILABLE` with its reason
//! while whatever served keeps serving.

pub mod config;
pub mod gate;
pub mod registry;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::backend::{self, LoadOptions};
use crate::error::Error;
use crate::monitor::stats::VersionStats;
use crate::worker::Worker;
use config::{ModelConfig, VersionPolicy};
pub use registry::{ModelEntry, ModelTable, ModelVersion, Registry, VersionSlot, VersionState};

impl crate::window::WindowSource for Repository {
    fn windows(&self) -> Vec<Arc<crate::window::Windows>> {
        let table = self.registry.snapshot();
        table
            .models
            .values()
            .flat_map(|e| e.ready_versions())
            .filter_map(|v| v.windows.clone())
            .collect()
    }

    fn closed(&self, windows: &crate::window::Windows, report: &crate::window::WindowReport) {
        let (model, version) = windows.model();
        crate::monitor::publish_window(model, version, report);
        if let Some(d) = report.drift.as_ref().filter(|d| d.drifted) {
            let mut worst: Vec<_> = d.features.iter().collect();
            worst.sort_by(|a, b| b.psi.total_cmp(&a.psi));
            let top: Vec<String> = worst
                .iter()
                .take(3)
                .map(|f| format!("{}[{}] psi={:.3} ks={:.3}", f.input, f.feature, f.psi, f.ks))
                .collect();
            tracing::warn!(
                model, version, rows = d.rows, psi_max = ?d.psi_max, ks_max = ?d.ks_max,
                psi_threshold = d.psi_threshold, ks_threshold = d.ks_threshold,
                worst = %top.join(", "),
                "input drift against the training baseline"
            );
        }
    }
}

/// Server-wide defaults a model's `config.toml` may override.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub queue_capacity: usize,
    pub intra_op_threads: usize,
    /// Window statistics; a zero length turns them off.
    pub window: crate::window::WindowConfig,
    /// Where models run unless their config.toml says otherwise.
    pub device: crate::backend::Device,
}

pub struct Repository {
    root: PathBuf,
    defaults: Defaults,
    pub registry: Registry,
    /// Serialises every change to the table (poll, load, unload): changes
    /// read the current table, load, then publish, and two of them
    /// interleaving would lose one's work. Requests never take it.
    control: Mutex<Control>,
}

#[derive(Default)]
struct Control {
    /// Models unloaded through the API: the poller leaves them alone until
    /// they are loaded again.
    unloaded: HashSet<String>,
}

/// One row of the repository index.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Repository {
    pub fn new(root: PathBuf, defaults: Defaults) -> Repository {
        Repository {
            root,
            defaults,
            registry: Registry::default(),
            control: Mutex::new(Control::default()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reconciles every model with the disk: new versions are loaded,
    /// changed ones reloaded, removed ones (and removed models) dropped.
    pub async fn poll(&self) {
        let control = self.control.lock().await;
        let names = match list_models(&self.root) {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(root = %self.root.display(), error = %e, "cannot read the model repository");
                return;
            }
        };
        let current = self.registry.snapshot();
        let mut table = ModelTable::default();
        for name in names {
            let previous = current.models.get(&name).cloned().unwrap_or_default();
            let entry = if control.unloaded.contains(&name) {
                previous
            } else {
                self.reconcile(&name, &previous).await
            };
            table.models.insert(name, entry);
        }
        for entry in table.models.values() {
            entry.ready_versions().for_each(|v| v.metrics.refresh_age());
        }
        for (name, entry) in &current.models {
            if !table.models.contains_key(name) {
                tracing::info!(model = %name, versions = entry.versions.len(), "model removed from the repository; unloading");
            }
        }
        self.registry.publish(table);
    }

    /// Loads (or reloads) a model now, including one that was unloaded.
    pub async fn load_model(&self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        let mut control = self.control.lock().await;
        let dir = self.model_dir(name)?;
        if !dir.is_dir() {
            return Err(Error::ModelNotFound(name.to_string()));
        }
        control.unloaded.remove(name);
        let current = self.registry.snapshot();
        let previous = current.models.get(name).cloned().unwrap_or_default();
        let entry = self.reconcile(name, &previous).await;
        let ready = entry.serving().is_some();
        let reasons: Vec<String> = entry
            .versions
            .iter()
            .filter_map(|(v, s)| match &s.state {
                VersionState::Unavailable(r) | VersionState::Failed(r) => {
                    Some(format!("version {v}: {r}"))
                }
                VersionState::Ready(_) => {
                    s.last_error.as_ref().map(|e| format!("version {v}: {e}"))
                }
            })
            .collect();
        self.registry.publish_entry(&current, name, entry);
        if ready {
            Ok(())
        } else {
            Err(Error::LoadFailed {
                model: name.to_string(),
                reason: if reasons.is_empty() {
                    "no version folder (<model>/<integer>/model.onnx) found".into()
                } else {
                    reasons.join("; ")
                },
            })
        }
    }

    /// Unloads every version of a model; it stays listed as UNAVAILABLE and
    /// is not reloaded by polling until `load_model` is called.
    pub async fn unload_model(&self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        let mut control = self.control.lock().await;
        let current = self.registry.snapshot();
        let Some(entry) = current.models.get(name) else {
            return Err(Error::ModelNotFound(name.to_string()));
        };
        let mut unloaded = ModelEntry::default();
        for v in entry.versions.keys() {
            unloaded.versions.insert(
                *v,
                VersionSlot {
                    state: VersionState::Unavailable("unloaded".into()),
                    fingerprint: None,
                    last_error: None,
                },
            );
        }
        control.unloaded.insert(name.to_string());
        self.registry.publish_entry(&current, name, unloaded);
        tracing::info!(model = %name, "model unloaded");
        Ok(())
    }

    /// Makes a ready version the primary: requests without a version go to
    /// it from the moment this returns; the one it replaces is remembered
    /// for `rollback`. Versions only become ready by passing the gate.
    /// Returns the version that served before.
    pub async fn promote(&self, name: &str, version: Option<u64>) -> Result<(u64, u64), Error> {
        check_name(name)?;
        let _control = self.control.lock().await;
        let current = self.registry.snapshot();
        let entry = current.entry(name)?;
        // No version named: the shadow's.
        let version =
            match (version, entry.shadow.as_ref().map(|s| &s.spec.target)) {
                (Some(v), _) => v,
                (None, Some(crate::shadow::Target::Version(v))) => *v,
                (None, _) => return Err(Error::BadRequest(
                    "promote needs {\"version\": V}: the model has no shadow version to promote"
                        .into(),
                )),
            };
        match entry.versions.get(&version).map(|s| &s.state) {
            None => {
                return Err(Error::VersionNotFound {
                    model: name.to_string(),
                    version: version.to_string(),
                })
            }
            Some(VersionState::Unavailable(reason) | VersionState::Failed(reason)) => {
                return Err(Error::VersionUnavailable {
                    model: name.to_string(),
                    version,
                    reason: reason.clone(),
                })
            }
            Some(VersionState::Ready(_)) => {}
        }
        let before = entry.serving().map(|v| v.version);
        let mut entry = entry.clone();
        if before != Some(version) {
            entry.history.extend(before);
        }
        entry.primary = Some(version);
        // A promoted shadow is the primary now: nothing left to mirror to.
        if matches!(entry.shadow.as_ref().map(|s| &s.spec.target), Some(crate::shadow::Target::Version(v)) if *v == version)
        {
            entry.shadow = None;
        }
        entry.pinned.remove(&version);
        self.registry.publish_entry(&current, name, entry);
        tracing::info!(model = %name, version, previous = ?before, "promoted");
        Ok((version, before.unwrap_or(version)))
    }

    /// Starts mirroring a sample of the model's primary traffic to `spec`'s
    /// target. A target version the policy did not load is loaded (through
    /// the gate) and pinned; the version serving now is fixed as primary so
    /// that a newer shadow never takes the traffic by itself.
    pub async fn set_shadow(
        &self,
        name: &str,
        spec: crate::shadow::Spec,
    ) -> Result<Arc<crate::shadow::Shadow>, Error> {
        use crate::shadow::Target;
        check_name(name)?;
        spec.check().map_err(Error::BadRequest)?;
        let _control = self.control.lock().await;
        let current = self.registry.snapshot();
        let mut entry = current.entry(name)?.clone();
        let serving = entry
            .serving()
            .cloned()
            .ok_or_else(|| Error::ModelUnavailable(name.to_string()))?;
        match &spec.target {
            Target::Model(other) => {
                let o = current.entry(other)?;
                let o = o
                    .serving()
                    .ok_or_else(|| Error::ModelUnavailable(other.clone()))?;
                let names = |s: &crate::backend::Signature| {
                    let mut n: Vec<_> = s
                        .inputs
                        .iter()
                        .map(|t| (t.name.clone(), t.datatype))
                        .collect();
                    n.sort_by(|a, b| a.0.cmp(&b.0));
                    n
                };
                if names(&o.signature) != names(&serving.signature) {
                    return Err(Error::BadRequest(format!(
                        "model '{other}' does not take the same inputs as '{name}'"
                    )));
                }
            }
            Target::Version(v) if *v == serving.version => {
                return Err(Error::BadRequest(format!(
                    "version {v} is the primary itself"
                )))
            }
            Target::Version(v) if entry.ready(*v).is_none() => {
                let dir = self.model_dir(name)?;
                let vdir = dir.join(v.to_string());
                if !vdir.is_dir() {
                    return Err(Error::VersionNotFound {
                        model: name.to_string(),
                        version: v.to_string(),
                    });
                }
                let (config, _) = read_config(&dir.join(config::FILE_NAME)).map_err(|reason| {
                    Error::LoadFailed {
                        model: name.to_string(),
                        reason,
                    }
                })?;
                let accuracy = serving.gate.as_ref().map(|g| g.accuracy);
                let loaded = self
                    .load_version(name, *v, &vdir, &config, accuracy)
                    .await
                    .map_err(|e| Error::LoadFailed {
                        model: name.to_string(),
                        reason: format!("shadow version {v}: {}", e.reason),
                    })?;
                let fingerprint = format!(
                    "{}|{}",
                    file_stamp(backend::model_file(&vdir).as_deref()),
                    read_config(&dir.join(config::FILE_NAME))
                        .map(|(_, stamp)| stamp)
                        .unwrap_or_default()
                );
                entry.versions.insert(
                    *v,
                    VersionSlot {
                        state: VersionState::Ready(Arc::new(loaded)),
                        fingerprint: Some(fingerprint),
                        last_error: None,
                    },
                );
                entry.pinned.insert(*v);
                tracing::info!(model = %name, version = v, "loaded as a shadow target");
            }
            Target::Version(_) => {}
        }
        entry.primary = Some(serving.version);
        let window = serving
            .windows
            .as_ref()
            .map_or(self.defaults.window.length, |w| w.config().length);
        let shadow = Arc::new(crate::shadow::Shadow::new(name, spec, window));
        entry.shadow = Some(shadow.clone());
        self.registry.publish_entry(&current, name, entry);
        tracing::info!(model = %name, target = ?shadow.spec.target, rate = shadow.spec.sample_rate, "shadow on");
        Ok(shadow)
    }

    /// Stops mirroring. Returns the final report.
    pub async fn clear_shadow(&self, name: &str) -> Result<crate::shadow::ShadowReport, Error> {
        check_name(name)?;
        let _control = self.control.lock().await;
        let current = self.registry.snapshot();
        let mut entry = current.entry(name)?.clone();
        let shadow = entry
            .shadow
            .take()
            .ok_or_else(|| Error::Conflict(format!("model '{name}' has no shadow")))?;
        self.registry.publish_entry(&current, name, entry);
        tracing::info!(model = %name, "shadow off");
        Ok(shadow.report())
    }

    /// Returns to the previous primary (skipping any that is no longer
    /// ready). Returns (from, to).
    pub async fn rollback(&self, name: &str) -> Result<(u64, u64), Error> {
        check_name(name)?;
        let _control = self.control.lock().await;
        let current = self.registry.snapshot();
        let entry = current.entry(name)?;
        let from = entry
            .serving()
            .map(|v| v.version)
            .ok_or_else(|| Error::ModelUnavailable(name.to_string()))?;
        let mut entry = entry.clone();
        let to = loop {
            match entry.history.pop() {
                Some(v) if v != from && entry.ready(v).is_some() => break v,
                Some(_) => continue,
                None => {
                    return Err(Error::Conflict(format!(
                        "model '{name}' has no earlier primary version that is ready to roll back to (serving: {from})"
                    )))
                }
            }
        };
        entry.primary = Some(to);
        self.registry.publish_entry(&current, name, entry);
        tracing::info!(model = %name, from, to, "rolled back");
        Ok((from, to))
    }

    /// The repository index: every model and version the server knows.
    pub fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let table = self.registry.snapshot();
        let mut rows = Vec::new();
        for (name, entry) in &table.models {
            for (version, slot) in &entry.versions {
                let (state, reason) = match &slot.state {
                    VersionState::Ready(_) => {
                        ("READY", slot.last_error.clone().unwrap_or_default())
                    }
                    VersionState::Unavailable(r) => ("UNAVAILABLE", r.clone()),
                    VersionState::Failed(r) => ("FAILED", r.clone()),
                };
                if ready_only && state != "READY" {
                    continue;
                }
                rows.push(IndexEntry {
                    name: name.clone(),
                    // Version 0 stands for the model as a whole (a broken config).
                    version: if *version == 0 {
                        String::new()
                    } else {
                        version.to_string()
                    },
                    state,
                    reason,
                });
            }
        }
        rows
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.root.join(name);
        // A symlink may not lead outside the repository.
        if let (Ok(real), Ok(root)) = (dir.canonicalize(), self.root.canonicalize()) {
            if !real.starts_with(&root) {
                return Err(Error::InvalidModelName(name.to_string()));
            }
        }
        Ok(dir)
    }

    /// Computes a model's new entry from the disk and the previous entry.
    /// Only loads; publishing is the caller's.
    async fn reconcile(&self, name: &str, previous: &ModelEntry) -> ModelEntry {
        let dir = match self.model_dir(name) {
            Ok(dir) => dir,
            Err(e) => return failed_entry(previous, &e.to_string()),
        };
        let config_path = dir.join(config::FILE_NAME);
        let (config, config_stamp) = match read_config(&config_path) {
            Ok(c) => c,
            Err(reason) => {
                tracing::warn!(model = %name, %reason, "bad config.toml; keeping what serves");
                return failed_entry(previous, &reason);
            }
        };
        let on_disk = match list_versions(&dir) {
            Ok(v) => v,
            Err(e) => return failed_entry(previous, &format!("cannot list versions: {e}")),
        };
        let mut candidates: Vec<u64> = match &config.version_policy {
            VersionPolicy::All | VersionPolicy::Latest(_) => {
                on_disk.iter().rev().copied().collect()
            }
            VersionPolicy::Specific(wanted) => on_disk
                .iter()
                .rev()
                .filter(|v| wanted.contains(v))
                .copied()
                .collect(),
        };
        // Pinned versions (shadow targets) load whatever the policy says,
        // after the policy's own.
        let config_pin = config.shadow.as_ref().and_then(|s| s.version);
        let pinned: std::collections::BTreeSet<u64> = previous
            .pinned
            .iter()
            .chain(config_pin.as_ref())
            .filter(|v| on_disk.contains(v))
            .copied()
            .collect();
        // The version serving and the one a rollback would return to stay
        // loaded while on disk, whatever the policy would pick now.
        let keep: std::collections::BTreeSet<u64> = previous
            .serving()
            .map(|v| v.version)
            .into_iter()
            .chain(previous.history.last().copied())
            .filter(|v| on_disk.contains(v))
            .collect();
        let limit = match config.version_policy {
            VersionPolicy::Latest(n) => n,
            _ => usize::MAX,
        };

        let mut entry = ModelEntry {
            primary: previous.primary,
            history: previous.history.clone(),
            shadow: previous.shadow.clone(),
            pinned: previous.pinned.clone(),
            config_shadow: previous.config_shadow.clone(),
            ..ModelEntry::default()
        };
        let wanted_shadow = match config.shadow.as_ref().map(|s| s.spec()).transpose() {
            Ok(spec) => spec,
            Err(reason) => return failed_entry(previous, &format!("config.toml: {reason}")),
        };
        let apply_shadow = wanted_shadow != entry.config_shadow;
        if let (
            true,
            Some(crate::shadow::Spec {
                target: crate::shadow::Target::Version(v),
                ..
            }),
        ) = (apply_shadow, &wanted_shadow)
        {
            entry.pinned.insert(*v);
        }
        let serving_before = previous.serving().cloned();
        // The gate compares a new version with the one serving now.
        let serving_accuracy = serving_before
            .as_ref()
            .and_then(|v| v.gate.as_ref())
            .map(|g| g.accuracy);
        let mut ready = 0usize;
        let extra: std::collections::BTreeSet<u64> = pinned
            .iter()
            .chain(&keep)
            .filter(|v| !candidates.contains(v))
            .copied()
            .collect();
        candidates.extend(extra);
        for version in candidates {
            if ready >= limit && !pinned.contains(&version) && !keep.contains(&version) {
                continue;
            }
            let vdir = dir.join(version.to_string());
            let fingerprint = format!(
                "{}|{}",
                file_stamp(backend::model_file(&vdir).as_deref()),
                config_stamp
            );
            let old = previous.versions.get(&version);
            let slot = match old {
                Some(slot) if slot.fingerprint.as_deref() == Some(fingerprint.as_str()) => {
                    slot.clone()
                }
                _ => {
                    let loaded = self
                        .load_version(name, version, &vdir, &config, serving_accuracy)
                        .await;
                    match (loaded, old) {
                        (Ok(v), _) => {
                            tracing::info!(model = %name, version, "version loaded and published");
                            VersionSlot {
                                state: VersionState::Ready(Arc::new(v)),
                                fingerprint: Some(fingerprint),
                                last_error: None,
                            }
                        }
                        // A failed reload never replaces the copy that serves.
                        (
                            Err(LoadError { reason, .. }),
                            Some(VersionSlot {
                                state: VersionState::Ready(v),
                                ..
                            }),
                        ) => {
                            tracing::warn!(model = %name, version, %reason, "reload failed; the loaded copy keeps serving");
                            VersionSlot {
                                state: VersionState::Ready(v.clone()),
                                fingerprint: Some(fingerprint),
                                last_error: Some(reason),
                            }
                        }
                        (Err(LoadError { reason, gate: true }), _) => {
                            tracing::warn!(model = %name, version, %reason, "version refused by the deployment gate");
                            VersionSlot {
                                state: VersionState::Failed(reason),
                                fingerprint: Some(fingerprint),
                                last_error: None,
                            }
                        }
                        (Err(LoadError { reason, .. }), _) => {
                            tracing::warn!(model = %name, version, %reason, "version failed to load");
                            VersionSlot {
                                state: VersionState::Unavailable(reason),
                                fingerprint: Some(fingerprint),
                                last_error: None,
                            }
                        }
                    }
                }
            };
            // Pinned versions are extra: they do not use up the policy's count.
            if matches!(slot.state, VersionState::Ready(_)) && !pinned.contains(&version) {
                ready += 1;
            }
            entry.versions.insert(version, slot);
        }
        for version in previous.versions.keys() {
            if !entry.versions.contains_key(version) {
                tracing::info!(model = %name, version, "version retired; it unloads after its last request");
            }
        }
        if apply_shadow {
            entry.config_shadow = wanted_shadow.clone();
            entry.shadow = wanted_shadow.map(|spec| {
                // The primary stays put while a shadow of this model's own
                // versions runs (a newer shadow must not take the traffic).
                if entry.primary.is_none() {
                    entry.primary = entry
                        .versions
                        .iter()
                        .rev()
                        .find(|(v, s)| {
                            matches!(s.state, VersionState::Ready(_)) && !entry.pinned.contains(v)
                        })
                        .map(|(v, _)| *v);
                }
                let window = self.defaults.window.length;
                tracing::info!(model = %name, target = ?spec.target, "shadow from config.toml");
                Arc::new(crate::shadow::Shadow::new(name, spec, window))
            });
        }
        // Rollout "immediate": a version newer than the one serving that
        // passed the gate serves at once, and the one it replaces is where
        // a rollback returns.
        if let Some(before) = serving_before {
            let newest = entry.newest_ready().map(|v| v.version);
            if let Some(newest) = newest.filter(|&n| {
                n > before.version && previous.ready(n).is_none() && !entry.pinned.contains(&n)
            }) {
                if config.rollout == config::Rollout::ShadowFirst
                    && entry.ready(before.version).is_some()
                {
                    // Rollout "shadow-first": the primary stays; the new
                    // version sees its traffic as the shadow until it has
                    // proved itself (or is promoted by hand).
                    entry.primary = Some(before.version);
                    let window = before
                        .windows
                        .as_ref()
                        .map_or(self.defaults.window.length, |w| w.config().length);
                    entry.shadow = Some(Arc::new(crate::shadow::Shadow::candidate(
                        name,
                        newest,
                        config.promotion.clone(),
                        window,
                    )));
                    tracing::info!(model = %name, version = newest, primary = before.version, "new version is the shadow (rollout shadow-first)");
                } else {
                    if entry.ready(before.version).is_some() {
                        entry.history.push(before.version);
                    }
                    entry.primary = Some(newest);
                    tracing::info!(model = %name, version = newest, replaces = before.version, "new version in service");
                }
            }
        }
        entry
    }

    /// Loads, checks and warms up one version on a blocking thread.
    async fn load_version(
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
        .map_err(|e| LoadError::from(format!("loader panicked: {e}")))?
    }
}

/// Why a version did not load; `gate`: it loaded but the deployment gate
/// refused it (the index says FAILED rather than UNAVAILABLE).
struct LoadError {
    reason: String,
    gate: bool,
}

impl From<String> for LoadError {
    fn from(reason: String) -> LoadError {
        LoadError {
            reason,
            gate: false,
        }
    }
}

impl From<gate::GateError> for LoadError {
    fn from(e: gate::GateError) -> LoadError {
        match e {
            gate::GateError::Setup(reason) => LoadError {
                reason,
                gate: false,
            },
            gate::GateError::Failed(reason) => LoadError { reason, gate: true },
        }
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
    let mut backend = backend::load(dir, &options).map_err(|e| e.to_string())?;
    let mut signature = backend.signature().clone();
    config.apply(&mut signature)?;
    let batching = config
        .batching(&signature)
        .map_err(|e| format!("config.toml: {e}"))?;
    let schema = crate::schema::Schema::compile(&config.schema, &signature)
        .map_err(|e| format!("config.toml: {e}"))?;
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
        let mut instance = backend::load(dir, &options).map_err(|e| e.to_string())?;
        warm_up(instance.as_mut(), &signature)?;
        backends.push(instance);
    }
    let capacity = config.queue_capacity.unwrap_or(defaults.queue_capacity);
    let stats = Arc::new(VersionStats::default());
    let windows = window_statistics(
        name,
        version,
        dir,
        config,
        defaults,
        &signature,
        backends.len(),
    )?;
    let metrics =
        crate::monitor::VersionMetrics::new(name, version, platform, &sha256, &properties);
    let worker = Worker::spawn(
        &format!("{name}-{version}"),
        backends,
        batching
            .clone()
            .unwrap_or_else(crate::batcher::Policy::unbatched),
        batching.is_some(),
        capacity,
        crate::worker::Recorders {
            stats: stats.clone(),
            metrics: metrics.worker.clone(),
            windows: windows.clone(),
        },
    )
    .map_err(|e| format!("cannot start the inference threads: {e}"))?;
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
        stats,
        batching,
        schema: (!schema.is_empty()).then_some(schema),
        metrics,
        windows,
        health: config.health.clone(),
        loaded_at: std::time::SystemTime::now(),
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
    signature: &crate::backend::Signature,
    shards: usize,
) -> Result<Option<Arc<crate::window::Windows>>, String> {
    let d = &defaults.window;
    let window = crate::window::WindowConfig {
        length: config.stats.window.unwrap_or(d.length),
        keep: config.stats.keep.unwrap_or(d.keep).max(1),
        max_features: config.stats.max_features.unwrap_or(d.max_features),
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
    .map_err(|e| format!("{}: {e}", crate::window::BASELINE_FILE))
}

/// One inference on zeros, one row per open dimension. A model that cannot
/// run is refused here, before anyone is routed to it; the first real
/// request does not pay for the runtime's lazy initialisation either.
fn warm_up(
    backend: &mut dyn backend::Backend,
    signature: &crate::backend::Signature,
) -> Result<(), LoadError> {
    let inputs = signature.zero_inputs(1);
    let outputs = backend
        .run(inputs)
        .map_err(|e| format!("warm-up inference failed: {e}"))?;
    // Outputs of the declared shapes, no NaN/Inf: the gate's first check.
    gate::check_outputs(&outputs, signature)?;
    Ok(())
}

/// A model whose config or folder is broken: what served keeps serving,
/// nothing new is loaded, and the reason is shown on every version.
fn failed_entry(previous: &ModelEntry, reason: &str) -> ModelEntry {
    let mut entry = previous.clone();
    if entry.versions.is_empty() {
        entry.versions.insert(
            0,
            VersionSlot {
                state: VersionState::Unavailable(reason.to_string()),
                fingerprint: None,
                last_error: None,
            },
        );
    }
    for slot in entry.versions.values_mut() {
        match slot.state {
            VersionState::Ready(_) => slot.last_error = Some(reason.to_string()),
            VersionState::Unavailable(_) | VersionState::Failed(_) => {
                slot.state = VersionState::Unavailable(reason.to_string())
            }
        }
    }
    entry
}

/// A model name is one plain path component.
pub fn check_name(name: &str) -> Result<(), Error> {
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || Path::new(name).is_absolute();
    if bad {
        Err(Error::InvalidModelName(name.to_string()))
    } else {
        Ok(())
    }
}

fn list_models(root: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if check_name(&name).is_ok() && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Integer-named folders, ascending; anything else (data/, README) is not a version.
fn list_versions(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut versions: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| {
            registry::parse_version(&n)
                .ok()
                .filter(|v| v.to_string() == n)
        })
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

fn read_config(path: &Path) -> Result<(ModelConfig, String), String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let config = ModelConfig::parse(&text).map_err(|e| format!("config.toml: {e}"))?;
            Ok((config, format!("{:x}", Sha256::digest(text.as_bytes()))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((ModelConfig::default(), String::new()))
        }
        Err(e) => Err(format!("config.toml: {e}")),
    }
}

/// Size and modification time: changes when a file is replaced or still
/// being written, which is when a load is worth another try.
fn file_stamp(path: Option<&Path>) -> String {
    let Some(meta) = path.and_then(|p| std::fs::metadata(p).ok()) else {
        return "missing".into();
    };
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}:{}", meta.len(), mtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_component() {
        for bad in ["", "..", ".hidden", "a/b", "../x", "/etc", "a\\b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["digits", "tiny-2", "a.b"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn only_integer_folders_are_versions() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["1", "10", "2", "data", "0", "03", "x1"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("5"), b"a file, not a folder").unwrap();
        assert_eq!(list_versions(dir.path()).unwrap(), vec![1, 2, 10]);
    }
}
