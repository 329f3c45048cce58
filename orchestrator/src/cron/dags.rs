//! The DAG files `serve` schedules: every `*.toml` under a folder (or one file), loaded and
//! validated, reloaded when a file is added, changed or removed. Files that do not load are kept
//! as errors for the UI to show, as Airflow shows import errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::dag::{self, Dag};

/// The `--dags` path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DagFolderError {
    /// It does not exist or cannot be read.
    #[error(
        "cannot read the DAG folder {path}: {source}; pass --dags with a folder of *.toml DAG files"
    )]
    Unreadable {
        /// The path.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A DAG file that does not load.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DagFileError {
    /// The file.
    pub path: PathBuf,
    /// Every problem, one per line, with line and column.
    pub message: String,
}

/// One load of the folder.
#[derive(Debug, Default)]
pub struct LoadedDags {
    /// Valid DAGs by id.
    pub dags: BTreeMap<String, Arc<Dag>>,
    /// Files that do not load, in path order.
    pub errors: Vec<DagFileError>,
    /// What the load saw: each file's path, modification time and length.
    stamp: Vec<(PathBuf, Option<SystemTime>, u64)>,
}

/// The DAG files under one path.
#[derive(Debug)]
pub struct DagFolder {
    root: PathBuf,
    loaded: RwLock<Arc<LoadedDags>>,
}

impl DagFolder {
    /// Loads every `*.toml` under `root` (recursively; `root` may also be one file).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DagFolderError> {
        let root = root.into();
        let stamp = scan(&root)?;
        let loaded = load_all(stamp);
        Ok(Self {
            root,
            loaded: RwLock::new(Arc::new(loaded)),
        })
    }

    /// The DAG files `open` would load from `root`, in path order: every `*.toml` under it
    /// (recursively, skipping hidden entries), or `root` itself when it is a file.
    pub fn files(root: &Path) -> Result<Vec<PathBuf>, DagFolderError> {
        Ok(scan(root)?.into_iter().map(|(p, _, _)| p).collect())
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The DAGs as last loaded.
    pub fn snapshot(&self) -> Arc<LoadedDags> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One DAG by id.
    pub fn get(&self, dag_id: &str) -> Option<Arc<Dag>> {
        self.snapshot().dags.get(dag_id).cloned()
    }

    /// Reloads when a file was added, changed or removed; returns whether it did.
    pub fn reload_if_changed(&self) -> Result<bool, DagFolderError> {
        let stamp = scan(&self.root)?;
        if stamp == self.snapshot().stamp {
            return Ok(false);
        }
        let loaded = load_all(stamp);
        tracing::info!(
            dags = loaded.dags.len(),
            errors = loaded.errors.len(),
            root = %self.root.display(),
            "Reloaded the DAG files"
        );
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(true)
    }
}

fn scan(root: &Path) -> Result<Vec<(PathBuf, Option<SystemTime>, u64)>, DagFolderError> {
    let unreadable = |source| DagFolderError::Unreadable {
        path: root.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(root).map_err(unreadable)?;
    let mut files = Vec::new();
    if meta.is_file() {
        files.push(root.to_path_buf());
    } else {
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if dir == root => return Err(unreadable(e)),
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "Cannot read a folder of DAG files");
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                match entry.file_type() {
                    Ok(t) if t.is_dir() && !hidden => dirs.push(path),
                    Ok(_) if !hidden && path.extension().is_some_and(|e| e == "toml") => {
                        files.push(path)
                    }
                    _ => {}
                }
            }
        }
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (p, modified, len)
        })
        .collect())
}

fn load_all(stamp: Vec<(PathBuf, Option<SystemTime>, u64)>) -> LoadedDags {
    let mut loaded = LoadedDags::default();
    let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (path, _, _) in &stamp {
        match dag::load(path) {
            Ok(d) => {
                if let Some(first) = origin.get(&d.id) {
                    loaded.errors.push(DagFileError {
                        path: path.clone(),
                        message: format!(
                            "DAG id {:?} is already defined in {}; DAG ids must be unique",
                            d.id,
                            first.display()
                        ),
                    });
                    continue;
                }
                origin.insert(d.id.clone(), path.clone());
                loaded.dags.insert(d.id.clone(), Arc::new(d));
            }
            Err(e) => loaded.errors.push(DagFileError {
                path: path.clone(),
                message: e.to_string(),
            }),
        }
    }
    loaded.stamp = stamp;
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAG: &str = "[dag]\nid = \"ID\"\n\n[[task]]\nid = \"t\"\nkind = \"noop\"\n";

    #[test]
    fn loads_nested_files_keeps_errors_and_reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.toml"), DAG.replace("ID", "a")).unwrap();
        std::fs::write(dir.path().join("sub/b.toml"), DAG.replace("ID", "b")).unwrap();
        std::fs::write(dir.path().join("sub/dup.toml"), DAG.replace("ID", "a")).unwrap();
        std::fs::write(dir.path().join("bad.toml"), "[dag]\nid = 3\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a DAG").unwrap();
        let folder = DagFolder::open(dir.path()).unwrap();
        let snap = folder.snapshot();
        assert_eq!(snap.dags.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(snap.errors.len(), 2, "{:?}", snap.errors);
        assert!(
            snap.errors
                .iter()
                .any(|e| e.message.contains("already defined"))
        );
        assert!(!folder.reload_if_changed().unwrap());
        std::fs::remove_file(dir.path().join("bad.toml")).unwrap();
        assert!(folder.reload_if_changed().unwrap());
        assert_eq!(folder.snapshot().errors.len(), 1);
        assert!(folder.get("b").is_some());
        assert!(DagFolder::open(dir.path().join("missing")).is_err());
    }
}
