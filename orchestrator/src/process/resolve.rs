//! Finding a task's program: a path is taken relative to the DAG's directory; a bare name is looked
//! up in the running orchestrator's directory (where cargo puts the workspace's binaries), then PATH.

use std::path::{Path, PathBuf};

use super::ProcessError;

/// Resolves `program` as ARCHITECTURE.md says: a name containing `/` is a path (relative ones
/// against `base_dir`); a bare name is searched in the current executable's directory (and its
/// parent when that is cargo's `deps/`, for tests), then in `PATH`.
pub fn resolve_program(program: &str, base_dir: &Path) -> Result<PathBuf, ProcessError> {
    if program.contains('/') {
        let path = Path::new(program);
        return Ok(if path.is_absolute() {
            path.to_path_buf()
        } else {
            base_dir.join(path)
        });
    }
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        if exe_dir.file_name().is_some_and(|n| n == "deps")
            && let Some(up) = exe_dir.parent()
        {
            dirs.push(up.to_path_buf());
        }
        dirs.insert(0, exe_dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for dir in &dirs {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(ProcessError::NotFound {
        program: program.to_owned(),
        searched: "the orchestrator's directory and PATH".into(),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_come_from_path_and_paths_from_the_dag_dir() {
        let sh = resolve_program("sh", Path::new("/nowhere")).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"));
        assert_eq!(
            resolve_program("./x.sh", Path::new("/dags")).unwrap(),
            Path::new("/dags/./x.sh")
        );
        assert_eq!(
            resolve_program("/bin/true", Path::new("/dags")).unwrap(),
            Path::new("/bin/true")
        );
        let err = resolve_program("no-such-program-velostream", Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
