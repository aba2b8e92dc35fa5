//! The in-memory backend: entries expire after their TTL (checked when read, and swept when
//! the cache is full), and when it holds `max_entries` the least recently used sixteenth goes,
//! so a full cache does not pay a scan on every insert.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use wf_engine::async_trait;

use crate::Cache;

struct Entry {
    value: Value,
    expires: Option<Instant>,
    /// A logical clock of the last use, for least-recently-used eviction.
    used: u64,
}

pub struct MemoryCache {
    max_entries: usize,
    default_ttl: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    clock: u64,
}

impl MemoryCache {
    pub fn new(max_entries: usize, default_ttl: Option<Duration>) -> Self {
        MemoryCache {
            max_entries: max_entries.max(1),
            default_ttl,
            state: Mutex::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| anyhow::anyhow!("cache lock poisoned"))
    }
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Makes room for one more entry.
    fn evict(&mut self, max: usize, now: Instant) {
        if self.entries.len() < max {
            return;
        }
        self.entries
            .retain(|_, e| e.expires.is_none_or(|at| at > now));
        if self.entries.len() < max {
            return;
        }
        let mut ages: Vec<u64> = self.entries.values().map(|e| e.used).collect();
        let drop = (max / 16).max(1).min(ages.len());
        let (_, cutoff, _) = ages.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        self.entries.retain(|_, e| e.used > cutoff);
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Value>> {
        let mut state = self.lock()?;
        let now = Instant::now();
        let tick = state.tick();
        match state.entries.get_mut(key) {
            Some(entry) if entry.expires.is_none_or(|at| at > now) => {
                entry.used = tick;
                Ok(Some(entry.value.clone()))
            }
            Some(_) => {
                state.entries.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: &Value, ttl: Option<Duration>) -> anyhow::Result<()> {
        let mut state = self.lock()?;
        let now = Instant::now();
        if !state.entries.contains_key(key) {
            state.evict(self.max_entries, now);
        }
        let used = state.tick();
        let expires = ttl.or(self.default_ttl).map(|t| now + t);
        state.entries.insert(
            key.to_string(),
            Entry {
                value: value.clone(),
                expires,
                used,
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> anyhow::Result<bool> {
        Ok(self.lock()?.entries.remove(key).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn entries_expire_and_the_least_recently_used_go_first() {
        let cache = MemoryCache::new(32, None);
        for i in 0..32 {
            cache.set(&format!("k{i}"), &json!(i), None).await.unwrap();
        }
        // Touch the first two: they are now the most recently used.
        assert_eq!(cache.get("k0").await.unwrap(), Some(json!(0)));
        assert_eq!(cache.get("k1").await.unwrap(), Some(json!(1)));
        cache.set("new", &json!("n"), None).await.unwrap();
        assert!(cache.len() <= 32);
        assert_eq!(cache.get("k0").await.unwrap(), Some(json!(0)));
        assert_eq!(
            cache.get("k2").await.unwrap(),
            None,
            "the oldest unused went"
        );
        assert_eq!(cache.get("new").await.unwrap(), Some(json!("n")));

        cache
            .set("brief", &json!(1), Some(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(cache.get("brief").await.unwrap(), None);
        assert!(cache.delete("new").await.unwrap());
        assert!(!cache.delete("new").await.unwrap());
    }
}
