//! The key-value store behind the `state` import: buckets of JSON values with revisions for
//! compare-and-swap. In memory, shared by every component of an app; it moves onto the app's
//! storage when storage lands.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct StateStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(String, String), (String, u64)>,
    revision: u64,
}

impl StateStore {
    pub fn get(&self, bucket: &str, key: &str) -> Option<(String, u64)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .get(&(bucket.to_string(), key.to_string()))
            .cloned()
    }

    pub fn set(&self, bucket: &str, key: &str, value: String) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.revision += 1;
        let revision = inner.revision;
        inner
            .entries
            .insert((bucket.to_string(), key.to_string()), (value, revision));
        revision
    }

    /// Writes when the key's revision is `expected` (`None`: absent); the new revision, or
    /// `None` when the condition failed.
    pub fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<u64>,
        value: String,
    ) -> Option<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = (bucket.to_string(), key.to_string());
        if inner.entries.get(&id).map(|(_, r)| *r) != expected {
            return None;
        }
        inner.revision += 1;
        let revision = inner.revision;
        inner.entries.insert(id, (value, revision));
        Some(revision)
    }

    pub fn delete(&self, bucket: &str, key: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .remove(&(bucket.to_string(), key.to_string()))
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_writes_only_on_the_expected_revision() {
        let store = StateStore::default();
        let first = store.compare_and_swap("b", "k", None, "1".into());
        assert!(first.is_some());
        assert_eq!(store.compare_and_swap("b", "k", None, "2".into()), None);
        let second = store.compare_and_swap("b", "k", first, "2".into());
        assert!(second > first);
        assert_eq!(store.get("b", "k").map(|(v, _)| v), Some("2".to_string()));
        assert!(store.delete("b", "k"));
        assert!(!store.delete("b", "k"));
    }
}
