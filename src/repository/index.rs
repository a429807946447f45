//! The repository index: every model and version the server knows, with
//! its state and, when it does not serve, why.

use super::Repository;
use crate::model::VersionState;

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
    pub fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let table = self.registry.snapshot();
        let mut rows = Vec::new();
        for (name, entry) in &table.models {
            for (version, slot) in &entry.versions {
                let state = match &slot.state {
                    VersionState::Ready(_) => "READY",
                    VersionState::Unavailable(_) => "UNAVAILABLE",
                    VersionState::Failed(_) => "FAILED",
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
                    reason: slot.problem().unwrap_or_default().to_string(),
                });
            }
        }
        rows
    }
}
