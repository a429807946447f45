//! A model's new entry, computed from the disk and its previous entry:
//! which versions to load (`select`), loading the ones that changed, the
//! shadow `config.toml` asks for, and the rollout decision
//! (`crate::rollout::decide`). Only loads; publishing is the caller's.

use std::sync::Arc;

use super::config::ModelConfig;
use super::load::LoadError;
use super::rollout_file::{self, OnDisk, RolloutState};
use super::select::Selection;
use super::{scan, Control, FileUse, Repository};
use crate::model::{ModelEntry, VersionSlot, VersionState};
use crate::rollout::shadow::{Shadow, Spec, Target};
use crate::rollout::{Decision, Found};

impl Repository {
    pub(super) async fn reconcile(
        &self,
        name: &str,
        previous: &ModelEntry,
        control: &mut Control,
    ) -> ModelEntry {
        let dir = match self.model_dir(name) {
            Ok(dir) => dir,
            Err(e) => return failed_entry(previous, &e.to_string()),
        };
        let (config, config_stamp) = match scan::read_config(&dir) {
            Ok(c) => c,
            Err(reason) => {
                tracing::warn!(model = %name, %reason, "bad config.toml; keeping what serves");
                return failed_entry(previous, &reason.to_string());
            }
        };
        let on_disk = match scan::list_versions(&dir) {
            Ok(v) => v,
            Err(e) => return failed_entry(previous, &format!("cannot list versions: {e}")),
        };
        let wanted_shadow = match config.shadow.as_ref().map(|s| s.spec()).transpose() {
            Ok(spec) => spec,
            Err(reason) => return failed_entry(previous, &reason.to_string()),
        };
        // The shadow of config.toml is applied again only when it changes,
        // so that the API's changes stand until then.
        let apply_shadow = wanted_shadow != previous.config_shadow;
        // rollout.toml, when it says something this server has not applied
        // (at start-up, after another replica's write, after a hand edit).
        let rollout = match rollout_file::read(&dir) {
            Ok(file) => {
                let changed = file.filter(|f| {
                    control.rollout_seen.get(name).map(|s| &s.digest) != Some(&f.digest)
                });
                if changed.is_none() {
                    control.rollout_problem(name, FileUse::Apply, None);
                }
                changed
            }
            Err(problem) => {
                control.rollout_problem(
                    name,
                    FileUse::Apply,
                    Some(format!("{problem}; keeping what serves")),
                );
                None
            }
        };
        let mut entry = ModelEntry {
            primary: previous.primary,
            history: previous.history.clone(),
            shadow: previous.shadow.clone(),
            pinned: previous.pinned.clone(),
            config_shadow: previous.config_shadow.clone(),
            feedback: self.feedback_of(name, &config, previous),
            log: self.log_of(name, &config, previous),
            checks: Some(checks_of(name, &config, previous)),
            ..ModelEntry::default()
        };
        if let (
            true,
            Some(Spec {
                target: Target::Version(v),
                ..
            }),
        ) = (apply_shadow, &wanted_shadow)
        {
            entry.pinned.insert(*v);
        }
        // The file's shadow version loads whatever the policy says, as an
        // API shadow does; its primary and rollback target stay loaded.
        let file_keeps: Vec<u64> = rollout
            .as_ref()
            .map(|f| {
                f.state
                    .primary
                    .into_iter()
                    .chain(f.state.history.last().copied())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(Target::Version(v)) = rollout
            .as_ref()
            .and_then(|f| f.state.shadow.as_ref())
            .map(|s| &s.spec.target)
        {
            entry.pinned.insert(*v);
        }
        // Pinned versions (shadow targets) load whatever the policy says,
        // after the policy's own; the version serving and the one a
        // rollback would return to stay loaded while on disk.
        let config_pin = config.shadow.as_ref().and_then(|s| s.version);
        let selection = Selection::new(
            &config.version_policy,
            &on_disk,
            entry.pinned.iter().copied().chain(config_pin),
            previous
                .serving()
                .map(|v| v.version)
                .into_iter()
                .chain(previous.history.last().copied())
                .chain(file_keeps),
        );
        let serving_before = previous.serving().cloned();
        // The gate compares a new version with the one serving now.
        let serving_accuracy = serving_before
            .as_ref()
            .and_then(|v| v.gate.as_ref())
            .map(|g| g.accuracy);
        let mut ready = 0usize;
        for &version in &selection.order {
            if !selection.wants(version, ready) {
                continue;
            }
            let vdir = dir.join(version.to_string());
            let fingerprint = scan::fingerprint(&vdir, &config_stamp);
            let slot = match previous.versions.get(&version) {
                Some(slot) if slot.fingerprint.as_deref() == Some(fingerprint.as_str()) => {
                    slot.clone()
                }
                old => {
                    let loaded = self
                        .load_version(name, version, &vdir, &config, serving_accuracy)
                        .await;
                    slot_after(name, version, loaded, old, fingerprint)
                }
            };
            if matches!(slot.state, VersionState::Ready(_)) && selection.counts(version) {
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
            self.apply_config_shadow(name, &mut entry, wanted_shadow);
        }
        self.roll_out(name, &config, previous, &mut entry);
        // Last, so that what the file says wins over this server's own
        // decision of this poll (every replica decides the same from the
        // same disk; the file carries what one of them, or a person, chose).
        if let Some(file) = rollout {
            match self.apply_rollout(name, &config, &file, &mut entry) {
                Ok(()) => {
                    control.rollout_seen.insert(name.to_string(), file);
                    control.rollout_problem(name, FileUse::Apply, None);
                }
                // Logged once, not at every poll until the version is ready.
                Err(why) => control.rollout_problem(name, FileUse::Apply, Some(why)),
            }
        }
        entry
    }

    /// Makes `entry` say what `file` says. Leaves it as it was, and says
    /// why, when a version the file names is not ready here (still
    /// loading, refused, not on disk): the file is tried again at the next
    /// poll.
    fn apply_rollout(
        &self,
        name: &str,
        config: &ModelConfig,
        file: &OnDisk,
        entry: &mut ModelEntry,
    ) -> Result<(), String> {
        let state = &file.state;
        let not_ready = |what: &str, v: u64| {
            Err(format!(
                "generation {} names version {v} as the {what}, which is not ready here; \
                 trying again at each poll, keeping what serves",
                file.generation
            ))
        };
        if let Some(p) = state.primary {
            if entry.ready(p).is_none() {
                return not_ready("primary", p);
            }
        }
        let wanted_shadow = state.shadow.as_ref();
        if let Some(Target::Version(v)) = wanted_shadow.map(|s| &s.spec.target) {
            if entry.ready(*v).is_none() {
                return not_ready("shadow", *v);
            }
        }
        entry.primary = state.primary;
        entry.history = state.history.clone();
        // A shadow already running as the file says keeps its tallies.
        if RolloutState::of(entry).shadow.as_ref() != wanted_shadow {
            let window = entry
                .serving()
                .and_then(|v| v.record.windows.as_ref())
                .map_or(self.defaults.window.length, |w| w.config().length);
            entry.shadow = wanted_shadow.map(|s| {
                let promotion = s.candidate.then(|| config.promotion.clone());
                Arc::new(Shadow::with_promotion(
                    name,
                    s.spec.clone(),
                    promotion,
                    window,
                ))
            });
        }
        tracing::info!(model = %name, generation = file.generation, primary = ?state.primary,
            shadow = ?wanted_shadow.map(|s| s.spec.target.key()), "rollout.toml applied");
        Ok(())
    }

    /// The model's feedback index: the one it had, with the bounds of
    /// `config`, or a new one.
    fn feedback_of(
        &self,
        name: &str,
        config: &ModelConfig,
        previous: &ModelEntry,
    ) -> Option<Arc<crate::feedback::Feedback>> {
        let wanted = config.feedback.clone()?;
        let d = &self.defaults.window;
        let window = config.stats.window.unwrap_or(d.length);
        let kept = config.stats.keep.unwrap_or(d.keep);
        let rollups = config.rollups();
        Some(match &previous.feedback {
            Some(f) => {
                f.configure(wanted, window, kept, rollups);
                f.clone()
            }
            None => Arc::new(crate::feedback::Feedback::new(
                name, wanted, window, kept, rollups,
            )),
        })
    }

    /// The model's prediction log: the one it had while `[log]` stays the
    /// same, else a new one (the old one's writer closes its file once the
    /// last request holding it is done).
    fn log_of(
        &self,
        name: &str,
        config: &ModelConfig,
        previous: &ModelEntry,
    ) -> Option<Arc<crate::predlog::PredictionLog>> {
        let wanted = config.log.as_ref()?;
        let base = &self.defaults.prediction_log_dir;
        let dir = match &wanted.dir {
            Some(d) => base.join(d),
            None => base.join(name),
        };
        if let Some(log) = previous
            .log
            .as_ref()
            .filter(|l| l.config == *wanted && l.dir() == dir)
        {
            return Some(log.clone());
        }
        match crate::predlog::PredictionLog::start(name, wanted.clone(), dir.clone()) {
            Ok(log) => {
                tracing::info!(model = %name, dir = %dir.display(), format = ?wanted.format, sample_rate = wanted.sample_rate, "prediction log on");
                Some(Arc::new(log))
            }
            Err(e) => {
                tracing::error!(model = %name, error = %e, "cannot start the prediction log writer; requests are not logged");
                None
            }
        }
    }

    /// Sets the shadow `config.toml` asks for (or none).
    fn apply_config_shadow(&self, name: &str, entry: &mut ModelEntry, wanted: Option<Spec>) {
        entry.config_shadow = wanted.clone();
        entry.shadow = wanted.map(|spec| {
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
            tracing::info!(model = %name, target = ?spec.target, "shadow from config.toml");
            Arc::new(Shadow::new(name, spec, self.defaults.window.length))
        });
    }

    /// Applies the rollout decision to a new ready version.
    fn roll_out(
        &self,
        name: &str,
        config: &ModelConfig,
        previous: &ModelEntry,
        entry: &mut ModelEntry,
    ) {
        let Some(before) = previous.serving() else {
            return;
        };
        let newest = entry.newest_ready().map(|v| v.version);
        let found = Found {
            serving_before: Some(before.version),
            serving_still_ready: entry.ready(before.version).is_some(),
            newest,
            newest_was_ready: newest.is_some_and(|n| previous.ready(n).is_some()),
            newest_pinned: newest.is_some_and(|n| entry.pinned.contains(&n)),
        };
        match crate::rollout::decide(config.rollout, found) {
            Decision::Keep => {}
            Decision::Serve { version, replaced } => {
                entry.history.extend(replaced);
                entry.primary = Some(version);
                tracing::info!(model = %name, version, replaces = before.version, "new version in service");
            }
            Decision::Shadow { version, primary } => {
                entry.primary = Some(primary);
                let window = before
                    .record
                    .windows
                    .as_ref()
                    .map_or(self.defaults.window.length, |w| w.config().length);
                entry.shadow = Some(Arc::new(Shadow::candidate(
                    name,
                    version,
                    config.promotion.clone(),
                    window,
                )));
                tracing::info!(model = %name, version, primary, "new version is the shadow (rollout shadow-first)");
            }
        }
    }
}

/// A version's slot after a load was tried. A failed reload never
/// replaces the copy that serves; a version the gate refused is FAILED,
/// one that did not load UNAVAILABLE.
fn slot_after(
    name: &str,
    version: u64,
    loaded: Result<crate::model::ModelVersion, LoadError>,
    old: Option<&VersionSlot>,
    fingerprint: String,
) -> VersionSlot {
    let slot = |state, last_error| VersionSlot {
        state,
        fingerprint: Some(fingerprint),
        last_error,
    };
    match (loaded, old) {
        (Ok(v), _) => {
            tracing::info!(model = %name, version, "version loaded and published");
            slot(VersionState::Ready(Arc::new(v)), None)
        }
        (
            Err(e),
            Some(VersionSlot {
                state: VersionState::Ready(v),
                ..
            }),
        ) => {
            let reason = e.to_string();
            crate::monitor::load_failed(name, e.refused_by_gate());
            tracing::warn!(model = %name, version, %reason, "reload failed; the loaded copy keeps serving");
            slot(VersionState::Ready(v.clone()), Some(reason))
        }
        (Err(e), _) if e.refused_by_gate() => {
            let reason = e.to_string();
            crate::monitor::load_failed(name, true);
            tracing::warn!(model = %name, version, %reason, "version refused by the deployment gate");
            slot(VersionState::Failed(reason), None)
        }
        (Err(e), _) => {
            let reason = e.to_string();
            crate::monitor::load_failed(name, false);
            tracing::warn!(model = %name, version, %reason, "version failed to load");
            slot(VersionState::Unavailable(reason), None)
        }
    }
}

/// The model's checks: the ones it had (their reports stay), with the
/// `[checks]` of `config`.
fn checks_of(
    name: &str,
    config: &ModelConfig,
    previous: &ModelEntry,
) -> Arc<crate::checks::Checks> {
    match &previous.checks {
        Some(c) => {
            c.configure(config.checks.clone());
            c.clone()
        }
        None => Arc::new(crate::checks::Checks::new(name, config.checks.clone())),
    }
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
