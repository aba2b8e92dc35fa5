//! Hot swap from a directory: file events are debounced, deduplicated by content hash, and
//! each changed component goes through the registry's validate-then-swap.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::registry::{ComponentRegistry, Expect, Origin};

/// Quiet time after the last event before a file is read: editors and `cargo build` write a
/// file in several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Component files: `*.wasm`, not hidden, not an editor's or a copier's temporary file.
pub fn is_component_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && !name.starts_with('#') && name.ends_with(".wasm")
}

/// Loads one file; failures are logged and recorded on the component as rejected.
pub async fn load_file(registry: &Arc<ComponentRegistry>, path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?.to_string();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => Arc::new(bytes),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read component: {e}");
            return None;
        }
    };
    let digest = crate::cache::sha256_hex(&bytes);
    let expect = Expect::FileStem(&stem);
    let spec = match registry.spec(&expect, bytes, None) {
        Ok(spec) => spec,
        Err(e) => {
            tracing::warn!(path = %path.display(), "component not loaded: {e}");
            return None;
        }
    };
    let origin = Origin::File {
        path: path.display().to_string(),
    };
    match registry.install(&expect, spec, origin).await {
        Ok(_) => {}
        Err(e) => tracing::warn!(
            path = %path.display(),
            "component rejected; the previous version (if any) stays live: {e}"
        ),
    }
    Some(digest)
}

/// Watches a directory while it lives.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DirWatcher {
    pub fn start(registry: Arc<ComponentRegistry>, dir: PathBuf) -> anyhow::Result<DirWatcher> {
        let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    for path in event.paths {
                        if is_component_file(&path) {
                            let _ = tx.send(path);
                        }
                    }
                }
            })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| anyhow::anyhow!("cannot watch `{}`: {e}", dir.display()))?;
        let task = tokio::spawn(async move {
            // The content hash each file had when last loaded: a touch or a rewrite with the
            // same bytes does not reload.
            let mut loaded: HashMap<PathBuf, String> = HashMap::new();
            for path in registry_files(&dir) {
                if let Ok(bytes) = std::fs::read(&path) {
                    loaded.insert(path, crate::cache::sha256_hex(&bytes));
                }
            }
            while let Some(first) = rx.recv().await {
                let mut pending = BTreeSet::from([first]);
                loop {
                    match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                        Ok(Some(path)) => {
                            pending.insert(path);
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                for path in pending {
                    let Ok(bytes) = std::fs::read(&path) else {
                        // Removed or renamed away: the live version stays (delete it through
                        // the API); a file written back later loads again.
                        loaded.remove(&path);
                        continue;
                    };
                    let digest = crate::cache::sha256_hex(&bytes);
                    if loaded.get(&path) == Some(&digest) {
                        continue;
                    }
                    if let Some(digest) = load_file(&registry, &path).await {
                        loaded.insert(path, digest);
                    }
                }
            }
        });
        Ok(DirWatcher {
            _watcher: watcher,
            task,
        })
    }
}

fn registry_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_component_file(p))
                .collect()
        })
        .unwrap_or_default()
}
