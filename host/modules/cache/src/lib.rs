//! Caching: `cache.modular`, a named cache kept in memory (entries expire after their TTL, and
//! the least recently used go when it is full) or in Redis, and the steps that use it:
//! `step.cache_get`, `step.cache_set` and `step.cache_delete`.

use std::time::Duration;

use serde_json::Value;
use wf_engine::{Registry, RegistryError, ServiceKind, async_trait};

pub mod cache_delete;
pub mod cache_get;
pub mod cache_module;
pub mod cache_set;
pub mod memory;
pub mod redis_cache;

/// The original's plugin group for `cache.modular`.
pub const PLUGIN: &str = "modular-compat";

/// Module types that provide a [`Cache`].
pub const CACHE_TYPES: &[&str] = &["cache.modular"];

/// A cache of JSON values by key.
#[async_trait]
pub trait Cache: Send + Sync {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Value>>;
    /// Stores `value` for `ttl` (`None`: the cache's default, which may be forever).
    async fn set(&self, key: &str, value: &Value, ttl: Option<Duration>) -> anyhow::Result<()>;
    /// Whether the key was there.
    async fn delete(&self, key: &str) -> anyhow::Result<bool>;
}

impl ServiceKind for dyn Cache {
    const LABEL: &'static str = "a cache";
}

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<cache_module::CacheModuleType>()?
        .register_step::<cache_get::CacheGetType>()?
        .register_step::<cache_set::CacheSetType>()?
        .register_step::<cache_delete::CacheDeleteType>()?;
    Ok(())
}

/// The cache a step uses: the named one, else the application's only one.
pub(crate) fn choose_cache(
    configured: Option<&str>,
    ctx: &wf_engine::CheckContext<'_>,
) -> Result<String, wf_engine::ConfigIssue> {
    ctx.choose(configured, "cache", "cache", CACHE_TYPES)
}
