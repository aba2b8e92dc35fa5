//! `storage.local`: objects as files under `rootDir`. Keys are relative paths; a key can never
//! name a file outside the root (see [`crate::key`]), and a symbolic link inside the root that
//! leads out of it is refused. Writes go to a temporary file that is renamed into place, so a
//! reader never sees half an object.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};

use crate::{ObjectInfo, ObjectStore, Refused};

/// Configuration of `storage.local`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalStorageConfig {
    /// The directory objects are kept in, relative to this config file; created at start.
    #[serde(default = "default_root", rename = "rootDir")]
    pub root_dir: String,
}

fn default_root() -> String {
    "./data/storage".into()
}

pub struct LocalStorageType;

impl Described for LocalStorageType {
    const NAME: &'static str = "storage.local";
    const CATEGORY: Category = Category::Storage;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "An object store in a local directory, confined to it; atomic writes.";
    type Config = LocalStorageConfig;
}

impl ModuleType for LocalStorageType {
    fn check(config: &LocalStorageConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        if config.root_dir.trim().is_empty() {
            return vec![ConfigIssue::new(
                "/rootDir",
                "`rootDir` must name a directory",
            )];
        }
        Vec::new()
    }

    fn build(
        config: LocalStorageConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let store = Arc::new(LocalStore {
            name: ctx.name.to_string(),
            configured: ctx.base_dir.join(&config.root_dir),
            root: OnceLock::new(),
        });
        ctx.provide::<dyn ObjectStore>(store.clone());
        Ok(store)
    }
}

pub struct LocalStore {
    name: String,
    configured: PathBuf,
    /// The root's real path, once created at start.
    root: OnceLock<PathBuf>,
}

#[async_trait]
impl Module for LocalStore {
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        tokio::fs::create_dir_all(&self.configured)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create `{}`: {e}", self.configured.display()))?;
        let real = tokio::fs::canonicalize(&self.configured).await?;
        let _ = self.root.set(real);
        Ok(())
    }
}

/// An I/O error caused by the key itself, as the caller's mistake; anything else stays an
/// error of the store (`unavailable`, retried).
fn key_error(key: &str, error: std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind;
    let why = match error.kind() {
        ErrorKind::IsADirectory | ErrorKind::DirectoryNotEmpty => {
            "names a directory, not an object"
        }
        ErrorKind::NotADirectory | ErrorKind::AlreadyExists => {
            "runs through an existing object as if it were a directory"
        }
        ErrorKind::InvalidFilename => "has a segment longer than the file system allows",
        _ => return error.into(),
    };
    Refused::Unusable {
        key: key.to_string(),
        why,
    }
    .into()
}

/// A listed object, ordered by key (the heap of [`LocalStore::list`] keeps the smallest).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Listed(String, u64);

/// A temporary file's name: hidden and marked, so listings skip it.
fn temp_name(name: &str) -> String {
    format!(".{name}.{}.wf-tmp", uuid::Uuid::new_v4().simple())
}

fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".wf-tmp")
}

impl LocalStore {
    fn root(&self) -> anyhow::Result<&Path> {
        self.root
            .get()
            .map(PathBuf::as_path)
            .ok_or_else(|| anyhow::anyhow!("object store `{}` is not started", self.name))
    }

    /// The file of `key` (already checked), after making sure that what exists of its path
    /// resolves inside the root.
    async fn path(&self, key: &str) -> anyhow::Result<PathBuf> {
        let root = self.root()?;
        let path = root.join(key);
        // The deepest existing ancestor must really be under the root (no link leads out).
        let mut existing = path.as_path();
        while tokio::fs::symlink_metadata(existing).await.is_err() {
            existing = existing.parent().unwrap_or(root);
        }
        let real = tokio::fs::canonicalize(existing).await?;
        if !real.starts_with(root) {
            return Err(Refused::OutsideStore(key.to_string()).into());
        }
        Ok(path)
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> anyhow::Result<()> {
        let path = self.path(key).await?;
        if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
            return Err(key_error(key, std::io::ErrorKind::IsADirectory.into()));
        }
        let parent = path.parent().unwrap_or(self.root()?);
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| key_error(key, e))?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        // The temporary name is longer than the object's: an over-long name fails here first.
        let temp = parent.join(temp_name(file_name));
        tokio::fs::write(&temp, &body)
            .await
            .map_err(|e| key_error(key, e))?;
        if let Err(e) = tokio::fs::rename(&temp, &path).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(key_error(key, e));
        }
        Ok(())
    }

    async fn get(&self, key: &str, max_bytes: u64) -> anyhow::Result<Option<Bytes>> {
        let path = self.path(key).await?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() && meta.len() > max_bytes => Err(Refused::TooLarge {
                key: key.to_string(),
                max_bytes,
            }
            .into()),
            Ok(meta) if meta.is_file() => Ok(Some(Bytes::from(tokio::fs::read(&path).await?))),
            Ok(_) => Ok(None),
            // No such object, also when a part of the key is an object.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(key_error(key, e)),
        }
    }

    async fn list(&self, prefix: &str, limit: usize) -> anyhow::Result<Vec<ObjectInfo>> {
        let root = self.root()?.to_path_buf();
        let prefix = prefix.to_string();
        // Start at the deepest directory the prefix names.
        let start = match prefix.rfind('/') {
            Some(i) => root.join(&prefix[..i]),
            None => root.clone(),
        };
        tokio::task::spawn_blocking(move || {
            let mut found: std::collections::BinaryHeap<Listed> =
                std::collections::BinaryHeap::new();
            // The prefix's directory may be a link: list it only if it resolves inside the
            // root, as `get` would (below it, links are never followed).
            if !std::fs::canonicalize(&start).is_ok_and(|real| real.starts_with(&root)) {
                return Vec::new();
            }
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    // Links are not followed: they may lead out of the root.
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    let path = entry.path();
                    let Ok(relative) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = relative
                        .components()
                        .filter_map(|c| c.as_os_str().to_str())
                        .collect::<Vec<_>>()
                        .join("/");
                    if kind.is_dir() {
                        if prefix.starts_with(&format!("{key}/")) || key.starts_with(&prefix) {
                            stack.push(path);
                        }
                    } else if kind.is_file() && !is_temp(name) && key.starts_with(&prefix) {
                        // Only the first `limit` keys are kept while walking (a max-heap of
                        // them), so a huge store costs a walk, not a list of everything.
                        if found.len() < limit
                            || found.peek().is_some_and(|top: &Listed| key < top.0)
                        {
                            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                            found.push(Listed(key, size));
                            if found.len() > limit {
                                found.pop();
                            }
                        }
                    }
                }
            }
            let mut found: Vec<ObjectInfo> = found
                .into_iter()
                .map(|Listed(key, size)| ObjectInfo { key, size })
                .collect();
            found.sort_by(|a, b| a.key.cmp(&b.key));
            found
        })
        .await
        .map_err(|e| anyhow::anyhow!("listing failed: {e}"))
    }

    async fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let path = self.path(key).await?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(key_error(key, e)),
        }
    }
}
