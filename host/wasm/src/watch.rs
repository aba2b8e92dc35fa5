//! Hot swap from a directory: file events are debounced, deduplicated by content hash, and
//! each changed component goes through the registry's validate-then-swap.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::registry::{ComponentRegistry, Expect, ExtraGrant, Origin};

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

/// Reads a component file of a watched folder, once, off the async runtime: a regular file of
/// at most `max_bytes`, and a link only when it leads to one inside the folder. A FIFO or a
/// link to `/dev/zero` named `x.wasm` is refused without blocking or reading.
pub async fn read_component_file(
    dir: &Path,
    path: &Path,
    max_bytes: u64,
) -> Result<Vec<u8>, wf_config::files::ReadError> {
    let is_link = tokio::fs::symlink_metadata(path)
        .await?
        .file_type()
        .is_symlink();
    if is_link && !wf_config::files::resolves_inside(path, dir) {
        return Err(wf_config::files::ReadError::Io(std::io::Error::other(
            "it is a link that leads out of the folder",
        )));
    }
    crate::component::read_file(path, max_bytes).await
}

/// Installs a file's bytes; failures are logged and recorded on the component as rejected.
async fn install_file(registry: &Arc<ComponentRegistry>, path: &Path, bytes: Arc<Vec<u8>>) {
    let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
        return;
    };
    let expect = Expect::FileStem(stem);
    let spec = match registry.spec(&expect, bytes, ExtraGrant::None) {
        Ok(spec) => spec,
        Err(e) => {
            tracing::warn!(path = %path.display(), "component not loaded: {e}");
            return;
        }
    };
    let origin = Origin::File {
        path: path.display().to_string(),
    };
    if let Err(e) = registry.install(&expect, spec, origin).await {
        tracing::warn!(
            path = %path.display(),
            "component rejected; the previous version (if any) stays live: {e}"
        );
    }
}

/// Loads one file of the folder `dir`; returns the digest of what was read, if it could be.
pub async fn load_file(
    registry: &Arc<ComponentRegistry>,
    dir: &Path,
    path: &Path,
    max_bytes: u64,
) -> Option<String> {
    let bytes = match read_component_file(dir, path, max_bytes).await {
        Ok(bytes) => Arc::new(bytes),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read component: {e}");
            return None;
        }
    };
    let digest = crate::cache::sha256_hex(&bytes);
    install_file(registry, path, bytes).await;
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
    /// Watches `dir`, whose files were loaded already (see [`load_file`]): each later change
    /// is read once and installed unless its bytes are what was last loaded from that file.
    pub fn start(
        registry: Arc<ComponentRegistry>,
        dir: PathBuf,
        max_bytes: u64,
        loaded: HashMap<PathBuf, String>,
    ) -> anyhow::Result<DirWatcher> {
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
            let mut loaded = loaded;
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
                    let bytes = match read_component_file(&dir, &path, max_bytes).await {
                        Ok(bytes) => Arc::new(bytes),
                        Err(e) if e.is_not_found() => {
                            // Removed or renamed away: the live version stays (delete it
                            // through the API); a file written back later loads again.
                            loaded.remove(&path);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(path = %path.display(), "cannot read component: {e}");
                            loaded.remove(&path);
                            continue;
                        }
                    };
                    let digest = crate::cache::sha256_hex(&bytes);
                    if loaded.get(&path) == Some(&digest) {
                        continue;
                    }
                    install_file(&registry, &path, bytes).await;
                    loaded.insert(path, digest);
                }
            }
        });
        Ok(DirWatcher {
            _watcher: watcher,
            task,
        })
    }
}
