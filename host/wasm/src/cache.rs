//! Compiled machine code on disk, keyed by the component's sha256 and the engine's
//! compatibility hash (wasmtime version, target, settings), so a cached load takes a fraction
//! of a millisecond instead of a compile's hundred. Only code this host compiled itself is ever
//! loaded: precompiled bytes from a client would be arbitrary native code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct CodeCache {
    dir: PathBuf,
    engine_hash: String,
}

/// Feeds `Hash` input into sha256, for a hash that is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

impl CodeCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> anyhow::Result<CodeCache> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create the wasm code cache `{}`: {e}", dir.display())
        })?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CodeCache {
            dir,
            engine_hash: hex(&hasher.0.finalize()[..16]),
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// The cached code for `digest`, if present and loadable; a bad entry is removed.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        match load_own_artifact(engine, &path) {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding unusable cached wasm code: {e}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    pub fn remove(&self, digest: &str) {
        match std::fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(digest, "cannot delete cached wasm code: {e}")
            }
            _ => {}
        }
    }

    /// Writes the compiled code next to its final name, then renames, so a reader never sees
    /// half a file. Failures only cost a recompile later, so they are logged, not returned.
    pub fn store(&self, digest: &str, component: &Component) {
        let path = self.path(digest);
        let result = component
            .serialize()
            .map_err(anyhow::Error::from)
            .and_then(|bytes| {
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &path)?;
                Ok(())
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), "cannot cache compiled wasm code: {e}");
        }
    }
}

#[allow(unsafe_code)]
fn load_own_artifact(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: the file was written by `CodeCache::store` from code this process compiled; its
    // name carries the sha256 of the source component and the engine's compatibility hash, and
    // wasmtime checks the artifact's header against the engine. No client ever supplies it.
    Ok(unsafe { Component::deserialize_file(engine, path) }?)
}
