//! What serves: the loaded versions, the table of models, and the registry
//! that publishes it through `arc-swap`.
//!
//! Readers (every request) take one lock-free snapshot with `load` and clone
//! the `Arc` of the version they need; the version then lives until their
//! request ends, whatever the table says meanwhile. Writers (the repository
//! poller and the load/unload API, serialised by `Repository::control`)
//! build a new table and `store` it: a swap is atomic, and a half-loaded
//! version is never visible.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::backend::Signature;
use crate::error::Error;
use crate::worker::Worker;

/// One loaded, warmed-up model version.
pub struct ModelVersion {
    pub model: String,
    pub version: u64,
    pub platform: &'static str,
    /// Where it runs (after any fallback), and where it was asked to run.
    pub device: crate::backend::Device,
    pub requested_device: crate::backend::Device,
    pub signature: Signature,
    pub max_batch_size: Option<u64>,
    pub properties: BTreeMap<String, String>,
    /// Of the model file, so a deployment can be checked against a build.
    pub sha256: String,
    /// What the deployment gate measured, when the model configures one.
    pub gate: Option<crate::rollout::gate::GateReport>,
    pub worker: Worker,
    /// Where everything measured about it goes: statistics, metrics, windows.
    pub record: crate::monitor::Recorder,
    /// Input rules checked on every request, when the model has any.
    pub schema: Option<crate::schema::Schema>,
    /// Whether requests are merged into batches, and how.
    pub batching: Option<crate::batcher::Policy>,
    pub health: crate::monitor::HealthConfig,
    /// `[queue] default_timeout_us`: the deadline of requests that bring
    /// none tighter.
    pub default_timeout: Option<std::time::Duration>,
    pub loaded_at: SystemTime,
    /// Which output labels are judged against, when one can be.
    pub judge: Option<crate::feedback::Judge>,
    /// The columns of this version's prediction log records, and the
    /// names its records share.
    pub log_layout: Arc<crate::predlog::Layout>,
    pub log_names: (Arc<str>, Arc<str>),
}

/// What the repository index says of a version.
#[derive(Clone)]
pub enum VersionState {
    Ready(Arc<ModelVersion>),
    /// Could not be loaded (missing, corrupt, bad configuration, unloaded).
    Unavailable(String),
    /// Loaded, but refused by the deployment gate: the failed checks.
    Failed(String),
}

#[derive(Clone)]
pub struct VersionSlot {
    pub state: VersionState,
    /// What was last tried for this version (file size and mtime, config),
    /// so a broken file is not retried on every poll, only when it changes.
    pub fingerprint: Option<String>,
    /// The last load that failed while an older load of this version kept
    /// serving (a bad in-place update); shown as the index's reason.
    pub last_error: Option<String>,
}

impl VersionSlot {
    /// What is wrong with the version, if anything: why it does not serve,
    /// or why its last reload failed while it kept serving.
    pub fn problem(&self) -> Option<&str> {
        match &self.state {
            VersionState::Ready(_) => self.last_error.as_deref(),
            VersionState::Unavailable(r) | VersionState::Failed(r) => Some(r),
        }
    }
}

#[derive(Clone, Default)]
pub struct ModelEntry {
    pub versions: BTreeMap<u64, VersionSlot>,
    /// The version requests without a version go to, once one was chosen
    /// (promoted, or newly loaded and put in service); `None`: the newest
    /// ready version.
    pub primary: Option<u64>,
    /// Earlier primaries, most recent last: where a rollback goes.
    pub history: Vec<u64>,
    /// Where a sample of the primary's traffic is mirrored, if anywhere.
    pub shadow: Option<Arc<crate::rollout::shadow::Shadow>>,
    /// Versions kept loaded whatever the version policy says (a shadow
    /// target loaded for the purpose).
    pub pinned: std::collections::BTreeSet<u64>,
    /// The `[shadow]` of config.toml last applied: applied again only when
    /// it changes, so that the API's changes stand until then.
    pub config_shadow: Option<crate::rollout::shadow::Spec>,
    /// Recent predictions by request id, joined with labels: one per
    /// model, so that it outlives version swaps.
    pub feedback: Option<Arc<crate::feedback::Feedback>>,
    /// Where the model's requests are logged, when its config.toml asks.
    pub log: Option<Arc<crate::predlog::PredictionLog>>,
    /// The model's checks (scheduled when config.toml has `[checks]`).
    pub checks: Option<Arc<crate::checks::Checks>>,
}

impl ModelEntry {
    /// The version that serves requests without a version: the primary when
    /// it is ready, else the newest ready version.
    pub fn serving(&self) -> Option<&Arc<ModelVersion>> {
        self.primary
            .and_then(|p| match self.versions.get(&p).map(|s| &s.state) {
                Some(VersionState::Ready(v)) => Some(v),
                _ => None,
            })
            .or_else(|| self.newest_ready())
    }

    /// A ready version by number.
    pub fn ready(&self, version: u64) -> Option<&Arc<ModelVersion>> {
        match self.versions.get(&version).map(|s| &s.state) {
            Some(VersionState::Ready(v)) => Some(v),
            _ => None,
        }
    }

    /// The newest version that is ready: where a request without a version goes.
    pub fn newest_ready(&self) -> Option<&Arc<ModelVersion>> {
        self.versions.values().rev().find_map(|s| match &s.state {
            VersionState::Ready(v) => Some(v),
            VersionState::Unavailable(_) | VersionState::Failed(_) => None,
        })
    }

    /// The versions that do not serve, with why: the one list of failed
    /// versions and their reasons (load errors, the health report).
    pub fn not_ready(&self) -> impl Iterator<Item = (u64, &str)> {
        self.versions.iter().filter_map(|(v, s)| match &s.state {
            VersionState::Unavailable(r) | VersionState::Failed(r) => Some((*v, r.as_str())),
            VersionState::Ready(_) => None,
        })
    }

    pub fn ready_versions(&self) -> impl Iterator<Item = &Arc<ModelVersion>> {
        self.versions.values().filter_map(|s| match &s.state {
            VersionState::Ready(v) => Some(v),
            VersionState::Unavailable(_) | VersionState::Failed(_) => None,
        })
    }
}

#[derive(Clone, Default)]
pub struct ModelTable {
    pub models: BTreeMap<String, ModelEntry>,
}

impl ModelTable {
    pub fn entry(&self, name: &str) -> Result<&ModelEntry, Error> {
        self.models
            .get(name)
            .ok_or_else(|| Error::ModelNotFound(name.to_string()))
    }
}

/// Where a request goes (see [`Registry::route`]).
pub struct Route {
    pub version: Arc<ModelVersion>,
    pub shadow: Option<Arc<crate::rollout::shadow::Shadow>>,
    pub feedback: Option<Arc<crate::feedback::Feedback>>,
    pub log: Option<Arc<crate::predlog::PredictionLog>>,
}

#[derive(Default)]
pub struct Registry {
    table: ArcSwap<ModelTable>,
}

impl Registry {
    pub fn snapshot(&self) -> Arc<ModelTable> {
        self.table.load_full()
    }

    pub(crate) fn publish(&self, table: ModelTable) {
        self.table.store(Arc::new(table));
    }

    /// Publishes `current` with one model's entry replaced.
    pub(crate) fn publish_entry(&self, current: &ModelTable, name: &str, entry: ModelEntry) {
        let mut table = current.clone();
        table.models.insert(name.to_string(), entry);
        self.publish(table);
    }

    /// `resolve`, plus what else a request of the model touches: the
    /// shadow when the request goes to the primary (names no version), and
    /// the feedback index when the version's answers can be judged.
    pub fn route(&self, model: &str, version: Option<&str>) -> Result<Route, Error> {
        // One snapshot for all: the version, the shadow and the index agree.
        let table = self.table.load();
        let v = resolve_in(&table, model, version)?;
        let entry = table.models.get(model);
        let shadow = match version.filter(|v| !v.is_empty()) {
            None => entry.and_then(|e| e.shadow.clone()),
            Some(_) => None,
        };
        let feedback = match v.judge {
            Some(_) => entry.and_then(|e| e.feedback.clone()),
            None => None,
        };
        Ok(Route {
            version: v,
            shadow,
            feedback,
            log: entry.and_then(|e| e.log.clone()),
        })
    }

    /// The version a request addresses: the one named, or the one serving.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<ModelVersion>, Error> {
        resolve_in(&self.table.load(), model, version)
    }
}

fn resolve_in(
    table: &ModelTable,
    model: &str,
    version: Option<&str>,
) -> Result<Arc<ModelVersion>, Error> {
    let entry = table
        .models
        .get(model)
        .ok_or_else(|| Error::ModelNotFound(model.to_string()))?;
    match version.filter(|v| !v.is_empty()) {
        None => entry
            .serving()
            .cloned()
            .ok_or_else(|| Error::ModelUnavailable(model.to_string())),
        Some(text) => {
            let number = parse_version(text)?;
            let slot = entry
                .versions
                .get(&number)
                .ok_or_else(|| Error::VersionNotFound {
                    model: model.to_string(),
                    version: text.to_string(),
                })?;
            match &slot.state {
                VersionState::Ready(v) => Ok(v.clone()),
                VersionState::Unavailable(reason) | VersionState::Failed(reason) => {
                    Err(Error::VersionUnavailable {
                        model: model.to_string(),
                        version: number,
                        reason: reason.clone(),
                    })
                }
            }
        }
    }
}

pub fn parse_version(text: &str) -> Result<u64, Error> {
    match text.parse::<u64>() {
        Ok(v) if v > 0 && !text.starts_with('+') => Ok(v),
        _ => Err(Error::InvalidVersion(text.to_string())),
    }
}
