//! The model repository: `<root>/<model>/<version>/model.onnx`, an optional
//! `<root>/<model>/config.toml`, integer version folders. The control plane:
//! it turns the disk into the model table that serves (`crate::model`).
//!
//! The repository is reconciled with the disk on a timer (`poll`) and on
//! demand (`load_model`, `unload_model`). Reconciling never takes a serving
//! version away before its replacement is loaded and warmed up, and a
//! version that fails to load is recorded as `UNAVAILABLE` with its reason
//! while whatever served keeps serving.
//!
//! Its rooms: `scan` reads the disk (names, versions, config, fingerprints),
//! `select` decides which versions a policy wants, `reconcile` computes a
//! model's new entry, `load` loads, checks and warms up one version,
//! `control` carries out promote, rollback and shadow changes,
//! `rollout_file` keeps them in `<model>/rollout.toml` (so that a restart
//! and every replica on the same repository serve alike), `index` lists
//! what the server knows, `windows` publishes closed windows, `checks`
//! runs the model checks.

mod checks;
pub mod config;
mod control;
mod index;
mod load;
mod reconcile;
pub mod rollout_file;
mod scan;
mod select;
mod windows;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

use crate::error::Error;
use crate::model::{ModelEntry, ModelTable, Registry, VersionSlot, VersionState};
pub use checks::Trigger;
pub use index::IndexEntry;
pub use load::LoadError;
pub use scan::check_name;

/// Server-wide defaults a model's `config.toml` may override.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub queue_capacity: usize,
    /// `None`: no bound on the queue's work but its capacity.
    pub max_queue_wait: Option<std::time::Duration>,
    pub intra_op_threads: usize,
    /// Window statistics; a zero length turns them off.
    pub window: crate::window::WindowConfig,
    /// Where models run unless their config.toml says otherwise.
    pub device: crate::backend::Device,
    /// Where prediction logs go unless a model's `[log] dir` says.
    pub prediction_log_dir: PathBuf,
}

pub struct Repository {
    root: PathBuf,
    defaults: Defaults,
    pub(crate) registry: Registry,
    /// Serialises every change to the table (poll, load, unload, promote,
    /// rollback, shadow): changes read the current table, load, then
    /// publish, and two of them interleaving would lose one's work.
    /// Requests never take it.
    control: Mutex<Control>,
}

#[derive(Default)]
struct Control {
    /// Models unloaded through the API: the poller leaves them alone until
    /// they are loaded again.
    unloaded: HashSet<String>,
    /// Each model's `rollout.toml` as this server last read (and applied)
    /// or wrote it: a file that differs is applied; a state that differs
    /// is written.
    rollout_seen: HashMap<String, rollout_file::OnDisk>,
    /// The last problem with a model's `rollout.toml`, by model and by what
    /// went wrong (reading and applying it, or writing it), logged once
    /// until it changes or goes away.
    rollout_problem: HashMap<(String, FileUse), String>,
}

/// What a server does with a rollout file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FileUse {
    Apply,
    Write,
}

impl Control {
    /// Logs a problem with a model's rollout file once, not at every poll;
    /// `None`: that use of it works (again).
    fn rollout_problem(&mut self, name: &str, using: FileUse, problem: Option<String>) {
        let key = (name.to_string(), using);
        match problem {
            Some(p) if self.rollout_problem.get(&key) != Some(&p) => {
                tracing::warn!(model = %name, problem = %p, "rollout.toml");
                self.rollout_problem.insert(key, p);
            }
            Some(_) => {}
            None => {
                self.rollout_problem.remove(&key);
            }
        }
    }
}

/// The model's versions by state, its primary and its rollout file's
/// generation, as gauges: what lets alerts see a version that did not load
/// and replicas that disagree.
fn observe(name: &str, entry: &ModelEntry, control: &Control) {
    // Versions unloaded through the API are UNLOADED here: a choice, not a
    // failure to alert on.
    let unloaded = control.unloaded.contains(name);
    let mut by_state = [
        ("READY", 0),
        ("UNAVAILABLE", 0),
        ("FAILED", 0),
        ("UNLOADED", 0),
    ];
    for slot in entry.versions.values() {
        let k = match slot.state {
            _ if unloaded => 3,
            VersionState::Ready(_) => 0,
            VersionState::Unavailable(_) => 1,
            VersionState::Failed(_) => 2,
        };
        by_state[k].1 += 1;
    }
    let generation = control.rollout_seen.get(name).map_or(0, |f| f.generation);
    crate::monitor::rollout_state(
        name,
        by_state,
        entry.serving().map(|v| v.version),
        generation,
    );
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

    /// Closes every model's prediction log (shutdown): queued records are
    /// written and open files renamed into place. Blocks.
    pub fn close_logs(&self) {
        let table = self.registry.snapshot();
        for log in table.models.values().filter_map(|e| e.log.as_ref()) {
            log.close();
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reconciles every model with the disk: new versions are loaded,
    /// changed ones reloaded, removed ones (and removed models) dropped.
    pub async fn poll(&self) {
        let mut control = self.control.lock().await;
        let names = match scan::list_models(&self.root) {
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
                self.reconcile(&name, &previous, &mut control).await
            };
            table.models.insert(name, entry);
        }
        for entry in table.models.values() {
            entry
                .ready_versions()
                .for_each(|v| v.record.metrics.refresh_age());
        }
        for (name, entry) in &current.models {
            if !table.models.contains_key(name) {
                tracing::info!(model = %name, versions = entry.versions.len(), "model removed from the repository; unloading");
            }
        }
        self.registry.publish(table);
        // What this server decided by itself (a new version put in
        // service, a shadow-first candidate) goes to the rollout files.
        let published = self.registry.snapshot();
        for (name, entry) in &published.models {
            if !control.unloaded.contains(name) {
                let _ = self.persist_rollout(name, entry, &mut control, false);
            }
            observe(name, entry, &control);
        }
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
        let entry = self.reconcile(name, &previous, &mut control).await;
        let ready = entry.serving().is_some();
        let reasons: Vec<String> = entry
            .versions
            .iter()
            .filter_map(|(v, s)| s.problem().map(|p| format!("version {v}: {p}")))
            .collect();
        let _ = self.persist_rollout(name, &entry, &mut control, false);
        observe(name, &entry, &control);
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
        // The file stays as it is; loaded again, the model applies it anew.
        control.rollout_seen.remove(name);
        observe(name, &unloaded, &control);
        self.registry.publish_entry(&current, name, unloaded);
        tracing::info!(model = %name, "model unloaded");
        Ok(())
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf, Error> {
        scan::model_dir(&self.root, name)
    }

    /// Writes the model's rollout state to its `rollout.toml` when it
    /// differs from what this server last read or wrote there. Returns the
    /// generation written (`None`: nothing to write), or why it could not
    /// be written: the change holds in this server until it restarts.
    ///
    /// `asked`: a person (or a client) asked for the change; it is written
    /// whatever the file says (the last writer wins). Otherwise the change
    /// is this server's own decision, and a file that says something this
    /// server has not applied yet (a replica's write, a hand edit whose
    /// version is still loading here) is left alone.
    fn persist_rollout(
        &self,
        name: &str,
        entry: &ModelEntry,
        control: &mut Control,
        asked: bool,
    ) -> Result<Option<u64>, String> {
        let now = rollout_file::RolloutState::of(entry);
        let seen = control.rollout_seen.get(name);
        if seen.map(|s| &s.state) == Some(&now)
            || (seen.is_none() && now == rollout_file::RolloutState::default())
        {
            return Ok(None);
        }
        let dir = self.model_dir(name).map_err(|e| e.to_string())?;
        let on_disk = rollout_file::read(&dir).ok().flatten();
        let unapplied = on_disk
            .as_ref()
            .is_some_and(|f| seen.map(|s| &s.digest) != Some(&f.digest));
        if unapplied && !asked {
            return Ok(None);
        }
        // One past the highest generation seen, on disk or here.
        let generation = on_disk
            .map_or(0, |f| f.generation)
            .max(seen.map_or(0, |s| s.generation))
            + 1;
        match rollout_file::write(&dir, &now, generation) {
            Ok(written) => {
                tracing::info!(model = %name, generation, primary = ?now.primary, shadow = ?now.shadow.as_ref().map(|s| s.spec.target.key()), "rollout.toml written");
                control.rollout_seen.insert(name.to_string(), written);
                control.rollout_problem(name, FileUse::Write, None);
                Ok(Some(generation))
            }
            Err(e) => {
                let problem = format!(
                    "cannot write {}: {e}; the change holds in this server until it restarts",
                    dir.join(rollout_file::FILE_NAME).display()
                );
                control.rollout_problem(name, FileUse::Write, Some(problem.clone()));
                Err(problem)
            }
        }
    }
}
