//! Changing what serves by hand (or by a shadow's verdict): promote,
//! rollback, and starting or stopping a shadow. Each takes the control
//! lock, changes one model's entry and publishes it.

use std::sync::Arc;

use super::{check_name, observe, scan, Repository};
use crate::error::Error;
use crate::model::{ModelEntry, ModelVersion, VersionSlot, VersionState};
use crate::rollout::shadow::{Shadow, ShadowReport, Spec, Target};

/// The outcome of a rollout change, and whether it reached the model's
/// `rollout.toml`: the generation written (`None`: nothing new to write),
/// or why it could not be (the change holds in this server until it
/// restarts).
pub struct Changed<T> {
    pub value: T,
    pub persisted: Result<Option<u64>, String>,
}

impl Repository {
    /// Makes a ready version the primary: requests without a version go to
    /// it from the moment this returns; the one it replaces is remembered
    /// for `rollback`. Versions only become ready by passing the gate.
    /// Returns the version that serves now and the one that served before.
    pub(crate) async fn promote(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<Changed<(u64, u64)>, Error> {
        check_name(name)?;
        let mut control = self.control.lock().await;
        let current = self.registry.snapshot();
        let entry = current.entry(name)?;
        // No version named: the shadow's.
        let version =
            match (version, entry.shadow.as_ref().map(|s| &s.spec.target)) {
                (Some(v), _) => v,
                (None, Some(Target::Version(v))) => *v,
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
        if matches!(entry.shadow.as_ref().map(|s| &s.spec.target), Some(Target::Version(v)) if *v == version)
        {
            entry.shadow = None;
        }
        entry.pinned.remove(&version);
        let persisted = self.persist_rollout(name, &entry, &mut control, true);
        observe(name, &entry, &control);
        self.registry.publish_entry(&current, name, entry);
        tracing::info!(model = %name, version, previous = ?before, "promoted");
        Ok(Changed {
            value: (version, before.unwrap_or(version)),
            persisted,
        })
    }

    /// Returns to the previous primary (skipping any that is no longer
    /// ready). Returns (from, to).
    pub(crate) async fn rollback(&self, name: &str) -> Result<Changed<(u64, u64)>, Error> {
        check_name(name)?;
        let mut control = self.control.lock().await;
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
        let persisted = self.persist_rollout(name, &entry, &mut control, true);
        observe(name, &entry, &control);
        self.registry.publish_entry(&current, name, entry);
        tracing::info!(model = %name, from, to, "rolled back");
        Ok(Changed {
            value: (from, to),
            persisted,
        })
    }

    /// Starts mirroring a sample of the model's primary traffic to `spec`'s
    /// target. A target version the policy did not load is loaded (through
    /// the gate) and pinned; the version serving now is fixed as primary so
    /// that a newer shadow never takes the traffic by itself.
    pub(crate) async fn set_shadow(
        &self,
        name: &str,
        spec: Spec,
    ) -> Result<Changed<Arc<Shadow>>, Error> {
        check_name(name)?;
        spec.check().map_err(Error::BadRequest)?;
        let mut control = self.control.lock().await;
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
                if !same_inputs(&o.signature, &serving.signature) {
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
                self.load_shadow_target(name, *v, &serving, &mut entry)
                    .await?;
            }
            Target::Version(_) => {}
        }
        entry.primary = Some(serving.version);
        let window = serving
            .record
            .windows
            .as_ref()
            .map_or(self.defaults.window.length, |w| w.config().length);
        let shadow = Arc::new(Shadow::new(name, spec, window));
        entry.shadow = Some(shadow.clone());
        let persisted = self.persist_rollout(name, &entry, &mut control, true);
        observe(name, &entry, &control);
        self.registry.publish_entry(&current, name, entry);
        tracing::info!(model = %name, target = ?shadow.spec.target, rate = shadow.spec.sample_rate, "shadow on");
        Ok(Changed {
            value: shadow,
            persisted,
        })
    }

    /// Loads a version the policy did not (through the gate, against the
    /// one serving) and pins it into `entry`.
    async fn load_shadow_target(
        &self,
        name: &str,
        version: u64,
        serving: &ModelVersion,
        entry: &mut ModelEntry,
    ) -> Result<(), Error> {
        let dir = self.model_dir(name)?;
        let vdir = dir.join(version.to_string());
        if !vdir.is_dir() {
            return Err(Error::VersionNotFound {
                model: name.to_string(),
                version: version.to_string(),
            });
        }
        let (config, config_stamp) = scan::read_config(&dir).map_err(|e| Error::LoadFailed {
            model: name.to_string(),
            reason: e.to_string(),
        })?;
        let accuracy = serving.gate.as_ref().map(|g| g.accuracy);
        let loaded = self
            .load_version(name, version, &vdir, &config, accuracy)
            .await
            .map_err(|e| Error::LoadFailed {
                model: name.to_string(),
                reason: format!("shadow version {version}: {e}"),
            })?;
        entry.versions.insert(
            version,
            VersionSlot {
                state: VersionState::Ready(Arc::new(loaded)),
                fingerprint: Some(scan::fingerprint(&vdir, &config_stamp)),
                last_error: None,
            },
        );
        entry.pinned.insert(version);
        tracing::info!(model = %name, version, "loaded as a shadow target");
        Ok(())
    }

    /// Stops mirroring. Returns the final report.
    pub(crate) async fn clear_shadow(&self, name: &str) -> Result<Changed<ShadowReport>, Error> {
        check_name(name)?;
        let mut control = self.control.lock().await;
        let current = self.registry.snapshot();
        let mut entry = current.entry(name)?.clone();
        let shadow = entry
            .shadow
            .take()
            .ok_or_else(|| Error::Conflict(format!("model '{name}' has no shadow")))?;
        let live = entry
            .feedback
            .as_ref()
            .zip(entry.serving())
            .and_then(|(f, v)| f.pair(v.version, &shadow.spec.target.key()));
        let persisted = self.persist_rollout(name, &entry, &mut control, true);
        observe(name, &entry, &control);
        self.registry.publish_entry(&current, name, entry);
        tracing::info!(model = %name, "shadow off");
        Ok(Changed {
            value: shadow.report(live),
            persisted,
        })
    }
}

/// Whether two models take inputs of the same names and datatypes (in any
/// order): what a model must offer to shadow another.
fn same_inputs(a: &crate::backend::Signature, b: &crate::backend::Signature) -> bool {
    let names = |s: &crate::backend::Signature| {
        let mut n: Vec<_> = s
            .inputs
            .iter()
            .map(|t| (t.name.clone(), t.datatype))
            .collect();
        n.sort_by(|a, b| a.0.cmp(&b.0));
        n
    };
    names(a) == names(b)
}
