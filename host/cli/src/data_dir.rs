//! The data directory: where a running app keeps what must survive a restart when it declares
//! no database — the run journal (`runs.db`), state machine instances and other module state
//! (`data/<module>.db`), uploaded components (`wasm/`). One `wf-host run` uses it at a time.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The folder's name beside the first application file when neither `--data-dir` nor
/// `WF_DATA_DIR` says otherwise.
const DEFAULT_NAME: &str = ".wf";

/// `explicit`, else `.wf` in the folder of the first of `files`: each app gets its own, so two
/// apps run from one folder never share a journal.
pub fn resolve(explicit: Option<&Path>, files: &[PathBuf]) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    let folder = files
        .first()
        .and_then(|f| f.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    folder.join(DEFAULT_NAME)
}

/// The data directory held by this process until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    pub dir: PathBuf,
}

/// Creates `dir` if needed and takes its lock, so no second `wf-host run` uses it (it would
/// take the first one's unfinished runs for its own). The error says who holds it.
pub fn lock(dir: &Path) -> Result<DataDirLock, String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot create the data directory {}: {e} (choose another with --data-dir)",
            dir.display()
        )
    })?;
    let path = dir.join("lock");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another wf-host".to_string()
            } else {
                format!("another wf-host (pid {holder})")
            };
            return Err(format!(
                "the data directory {} is in use by {who}; stop it, or give this one its own with --data-dir",
                dir.display()
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", path.display()));
        }
    }
    // Who holds it, for the next one's error.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    let _ = file.flush();
    Ok(DataDirLock {
        _file: file,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_beside_the_first_file() {
        assert_eq!(
            resolve(None, &[PathBuf::from("example/hello/app.yaml")]),
            PathBuf::from("example/hello/.wf")
        );
        assert_eq!(
            resolve(None, &[PathBuf::from("app.yaml")]),
            PathBuf::from("./.wf")
        );
        assert_eq!(
            resolve(Some(Path::new("/srv/data")), &[PathBuf::from("app.yaml")]),
            PathBuf::from("/srv/data")
        );
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("wf-data-dir-lock-{}", std::process::id()));
        let first = lock(&dir).expect("the first lock");
        let error = lock(&dir).expect_err("a second lock");
        assert!(error.contains("in use by another wf-host"), "{error}");
        assert!(error.contains(&std::process::id().to_string()), "{error}");
        drop(first);
        let again = lock(&dir).expect("free again once dropped");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
