//! Reading the repository's folders: model names, version folders, a
//! model's config.toml, and the fingerprint that says whether a version
//! changed on disk since it was last tried.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::config::{self, ConfigError, ModelConfig};
use crate::error::Error;

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

/// A model's folder; a symlink may not lead outside the repository.
pub(super) fn model_dir(root: &Path, name: &str) -> Result<PathBuf, Error> {
    let dir = root.join(name);
    if let (Ok(real), Ok(root)) = (dir.canonicalize(), root.canonicalize()) {
        if !real.starts_with(&root) {
            return Err(Error::InvalidModelName(name.to_string()));
        }
    }
    Ok(dir)
}

pub(super) fn list_models(root: &Path) -> std::io::Result<Vec<String>> {
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
pub(super) fn list_versions(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut versions: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| {
            crate::model::parse_version(&n)
                .ok()
                .filter(|v| v.to_string() == n)
        })
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// A model's config.toml (the defaults when there is none) and the digest
/// of its text, which is part of every version's fingerprint.
pub(super) fn read_config(model_dir: &Path) -> Result<(ModelConfig, String), ConfigError> {
    match std::fs::read_to_string(model_dir.join(config::FILE_NAME)) {
        Ok(text) => {
            let config = ModelConfig::parse(&text)?;
            Ok((config, format!("{:x}", Sha256::digest(text.as_bytes()))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((ModelConfig::default(), String::new()))
        }
        Err(e) => Err(ConfigError::new(e)),
    }
}

/// What was tried for a version: its model file's size and modification
/// time, and its model's config. A load is worth another try only when it
/// changes (a file replaced or still being written, a config edited).
pub(super) fn fingerprint(version_dir: &Path, config_stamp: &str) -> String {
    let file = crate::backend::model_file(version_dir);
    format!("{}|{config_stamp}", file_stamp(file.as_deref()))
}

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

    #[test]
    fn a_fingerprint_changes_with_the_file_and_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let missing = fingerprint(dir.path(), "c1");
        assert_eq!(missing, "missing|c1");
        std::fs::write(dir.path().join("model.onnx"), b"12345").unwrap();
        let written = fingerprint(dir.path(), "c1");
        assert!(written.starts_with("5:"), "{written}");
        assert_ne!(written, fingerprint(dir.path(), "c2"));
        std::fs::write(dir.path().join("model.onnx"), b"123456").unwrap();
        assert_ne!(written, fingerprint(dir.path(), "c1"));
    }
}
