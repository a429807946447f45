//! The model's rollout state on disk, `<model>/rollout.toml`: which version
//! is the primary, the earlier primaries a rollback returns to, and the
//! shadow. Promote, rollback and shadow changes (through the API, or the
//! server's own `shadow-first` decisions) write it; every server polling
//! the repository applies it when it changes, so replicas on one
//! repository serve alike, and a restart comes back as it was. A person
//! may edit it too: it is read the same way.
//!
//! Written atomically (a temporary file in the same folder, flushed to
//! disk, renamed over the old one), so a reader sees the old file or the
//! new one, never half of one. Two servers writing at once: the last
//! rename wins, and each server applies whatever the file says once it
//! differs from what that server last read or wrote (by content, not by
//! time); `generation` counts the writes, one more than the highest the
//! writer had seen, so a person can tell which write is newer.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::ModelEntry;
use crate::rollout::shadow::{Spec, Target, DEFAULT_MAX_INFLIGHT, DEFAULT_SAMPLE_RATE};

pub const FILE_NAME: &str = "rollout.toml";

/// What the file says, and what a model's entry holds of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RolloutState {
    /// `None`: the newest ready version serves.
    pub primary: Option<u64>,
    /// Earlier primaries, most recent last.
    pub history: Vec<u64>,
    pub shadow: Option<ShadowState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShadowState {
    pub spec: Spec,
    /// A `shadow-first` candidate, promoted by itself once it meets the
    /// model's `[promotion]` criteria.
    pub candidate: bool,
}

impl RolloutState {
    pub fn of(entry: &ModelEntry) -> RolloutState {
        RolloutState {
            primary: entry.primary,
            history: entry.history.clone(),
            shadow: entry.shadow.as_ref().map(|s| ShadowState {
                spec: s.spec.clone(),
                candidate: s.promotion.is_some(),
            }),
        }
    }
}

/// The file as read: its state, its generation and a digest of its text.
#[derive(Debug, Clone)]
pub struct OnDisk {
    pub state: RolloutState,
    pub generation: u64,
    pub digest: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary: Option<u64>,
    #[serde(default)]
    history: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<ShadowForm>,
    /// For people: when and by whom the file was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    written_by: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShadowForm {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default = "default_rate")]
    sample_rate: f64,
    #[serde(default = "default_inflight")]
    max_inflight: usize,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    candidate: bool,
}

fn default_rate() -> f64 {
    DEFAULT_SAMPLE_RATE
}

fn default_inflight() -> usize {
    DEFAULT_MAX_INFLIGHT
}

const HEADER: &str = "\
# The rollout state of this model, written by infergate on promote, rollback
# and shadow changes, and read by every server polling this repository.
# Edit it by hand if you like: servers apply it at their next poll.
";

/// Parses the file's text. `None` in the result's place: no such file.
pub fn parse(text: &str) -> Result<OnDisk, String> {
    let form: FileForm = toml::from_str(text).map_err(|e| e.to_string())?;
    let shadow = match form.shadow {
        None => None,
        Some(s) => {
            let target = match (s.version, s.model) {
                (Some(v), None) => Target::Version(v),
                (None, Some(m)) => Target::Model(m),
                _ => return Err("[shadow] needs exactly one of version or model".into()),
            };
            let spec = Spec {
                target,
                sample_rate: s.sample_rate,
                max_inflight: s.max_inflight,
            };
            spec.check()?;
            Some(ShadowState {
                spec,
                candidate: s.candidate,
            })
        }
    };
    if let (Some(ShadowState { spec, .. }), Some(p)) = (&shadow, form.primary) {
        if spec.target == Target::Version(p) {
            return Err(format!(
                "version {p} cannot be both the primary and the shadow"
            ));
        }
    }
    Ok(OnDisk {
        state: RolloutState {
            primary: form.primary,
            history: form.history,
            shadow,
        },
        generation: form.generation,
        digest: digest(text),
    })
}

/// Reads `<model_dir>/rollout.toml`; `Ok(None)` when there is none.
pub fn read(model_dir: &Path) -> Result<Option<OnDisk>, String> {
    match std::fs::read_to_string(model_dir.join(FILE_NAME)) {
        Ok(text) => parse(&text)
            .map(Some)
            .map_err(|e| format!("{FILE_NAME}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{FILE_NAME}: {e}")),
    }
}

/// The file's text for `state` at `generation`.
pub fn render(state: &RolloutState, generation: u64, now: std::time::SystemTime) -> String {
    let form = FileForm {
        generation,
        primary: state.primary,
        history: state.history.clone(),
        shadow: state.shadow.as_ref().map(|s| {
            let (version, model) = match &s.spec.target {
                Target::Version(v) => (Some(*v), None),
                Target::Model(m) => (None, Some(m.clone())),
            };
            ShadowForm {
                version,
                model,
                sample_rate: s.spec.sample_rate,
                max_inflight: s.spec.max_inflight,
                candidate: s.candidate,
            }
        }),
        updated_at: Some(humantime::format_rfc3339_seconds(now).to_string()),
        written_by: Some(writer()),
    };
    format!(
        "{HEADER}{}",
        toml::to_string(&form).expect("the rollout state serialises")
    )
}

/// Writes `state` atomically: a temporary file beside it, flushed, renamed
/// over `rollout.toml`, the folder flushed.
pub fn write(model_dir: &Path, state: &RolloutState, generation: u64) -> std::io::Result<OnDisk> {
    use std::io::Write;
    let text = render(state, generation, std::time::SystemTime::now());
    let path = model_dir.join(FILE_NAME);
    // Hidden, and named per process: two servers writing at once each
    // write their own, and the renames decide.
    let tmp = model_dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename itself survives a crash once the folder is flushed;
        // not every filesystem allows opening a folder for that.
        if let Ok(dir) = std::fs::File::open(model_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| OnDisk {
        state: state.clone(),
        generation,
        digest: digest(&text),
    })
}

fn digest(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// Which server wrote the file: host name and process id.
fn writer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> RolloutState {
        RolloutState {
            primary: Some(2),
            history: vec![1, 3],
            shadow: Some(ShadowState {
                spec: Spec {
                    target: Target::Version(4),
                    sample_rate: 0.25,
                    max_inflight: 8,
                },
                candidate: true,
            }),
        }
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let written = write(dir.path(), &state(), 7).unwrap();
        let read_back = read(dir.path()).unwrap().unwrap();
        assert_eq!(read_back.state, state());
        assert_eq!(read_back.generation, 7);
        assert_eq!(read_back.digest, written.digest);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()]);
        // Another model as the shadow; no primary.
        let other = RolloutState {
            primary: None,
            history: vec![],
            shadow: Some(ShadowState {
                spec: Spec {
                    target: Target::Model("b".into()),
                    sample_rate: 1.0,
                    max_inflight: 64,
                },
                candidate: false,
            }),
        };
        write(dir.path(), &other, 8).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap().state, other);
    }

    #[test]
    fn a_hand_written_file_takes_the_defaults_and_mistakes_are_named() {
        let on_disk = parse("generation = 0\nprimary = 1\n[shadow]\nversion = 2\n").unwrap();
        assert_eq!(on_disk.state.primary, Some(1));
        assert!(on_disk.state.history.is_empty());
        let shadow = on_disk.state.shadow.unwrap();
        assert_eq!(shadow.spec.sample_rate, DEFAULT_SAMPLE_RATE);
        assert_eq!(shadow.spec.max_inflight, DEFAULT_MAX_INFLIGHT);
        assert!(!shadow.candidate);
        for (text, needle) in [
            ("generation = 1\nprimry = 2\n", "unknown field `primry`"),
            ("primary = 2\n", "missing field `generation`"),
            (
                "generation = 1\n[shadow]\nsample_rate = 1.0\n",
                "exactly one of version or model",
            ),
            (
                "generation = 1\n[shadow]\nversion = 2\nmodel = \"m\"\n",
                "exactly one",
            ),
            (
                "generation = 1\n[shadow]\nversion = 2\nsample_rate = 2.0\n",
                "sample_rate",
            ),
            (
                "generation = 1\nprimary = 2\n[shadow]\nversion = 2\n",
                "both the primary and the shadow",
            ),
            ("generation = -1\n", "generation"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
