//! Webhook deliveries that failed for good, kept as one JSON file each so they survive
//! restarts and can be listed, replayed or discarded. Files are written to a temporary name,
//! synced, then renamed: a crash leaves either the whole letter or none of it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One delivery that failed for good, or is still being attempted (`status: delivering`: it
/// is written before the first attempt, so a delivery cut short by a crash or a time limit
/// is never lost). Headers and secrets are not kept: a replay uses the sender's current
/// configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    pub id: String,
    /// `failed`, or `delivering` while attempts are under way (a `delivering` letter left
    /// after a restart was interrupted).
    #[serde(default = "failed")]
    pub status: String,
    /// Where it was being sent, for people; a replay goes to the current `url`.
    pub url: String,
    pub method: String,
    /// The body as text, or base64 when `body_base64`.
    pub body: String,
    #[serde(default)]
    pub body_base64: bool,
    /// The topic the payload came from, when it came from a broker.
    pub topic: Option<String>,
    pub error: String,
    pub attempts: u32,
    pub first_attempt_at: String,
    pub failed_at: String,
}

fn failed() -> String {
    "failed".to_string()
}

impl DeadLetter {
    pub fn body_bytes(&self) -> Vec<u8> {
        if self.body_base64 {
            base64::engine::general_purpose::STANDARD
                .decode(&self.body)
                .unwrap_or_default()
        } else {
            self.body.clone().into_bytes()
        }
    }

    pub fn encode_body(body: &[u8]) -> (String, bool) {
        match std::str::from_utf8(body) {
            Ok(text) => (text.to_string(), false),
            Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
        }
    }
}

/// The directory of one sender's dead letters.
#[derive(Clone, Debug)]
pub struct DeadLetterStore {
    dir: PathBuf,
}

impl DeadLetterStore {
    pub fn new(dir: PathBuf) -> Self {
        DeadLetterStore { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        // Ids are ours (UUIDs); anything else could walk out of the directory.
        let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        valid.then(|| self.dir.join(format!("{id}.json")))
    }

    pub fn save(&self, letter: &DeadLetter) -> anyhow::Result<()> {
        use std::io::Write as _;
        let path = self
            .path(&letter.id)
            .ok_or_else(|| anyhow::anyhow!("invalid dead-letter id `{}`", letter.id))?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", self.dir.display()))?;
        let temp = self
            .dir
            .join(format!(".{}.{}.tmp", letter.id, uuid::Uuid::new_v4()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&serde_json::to_vec_pretty(letter).unwrap_or_default())?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            anyhow::anyhow!("writing dead letter {}: {e}", path.display())
        })
    }

    /// Every letter, oldest failure first. Unreadable files are skipped with a warning.
    pub fn list(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => anyhow::bail!("reading {}: {e}", self.dir.display()),
        };
        let mut letters = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<DeadLetter>(&b)?))
            {
                Ok(letter) => letters.push(letter),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable dead letter")
                }
            }
        }
        letters.sort_by(|a, b| a.failed_at.cmp(&b.failed_at).then(a.id.cmp(&b.id)));
        Ok(letters)
    }

    pub fn get(&self, id: &str) -> anyhow::Result<Option<DeadLetter>> {
        let Some(path) = self.path(id) else {
            return Ok(None);
        };
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        }
    }

    /// True when the letter existed.
    pub fn remove(&self, id: &str) -> anyhow::Result<bool> {
        let Some(path) = self.path(id) else {
            return Ok(false);
        };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => anyhow::bail!("removing {}: {e}", path.display()),
        }
    }
}
