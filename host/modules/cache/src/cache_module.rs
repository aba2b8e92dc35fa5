//! `cache.modular`: a named cache, in memory (the default) or in Redis.
//!
//! ```yaml
//! - name: cache
//!   type: cache.modular
//!   config: {backend: redis, redisURL: "redis://127.0.0.1:6379", defaultTTL: 5m, keyPrefix: "shop:"}
//! ```
//!
//! The original's `cache.modular` ignored its YAML config (it read a `cache` section of the
//! modular framework's own config instead).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};

use crate::Cache;
use crate::memory::MemoryCache;
use crate::redis_cache::RedisCache;

/// Configuration of `cache.modular`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `memory` (this process only; the default) or `redis` (shared by every host).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Most entries kept in memory; when full, the least recently used go.
    #[serde(default = "default_max_size", rename = "maxSize")]
    #[schemars(range(min = 1))]
    pub max_size: usize,
    /// How long entries live when a step does not say, e.g. `5m`; forever when unset.
    #[serde(default, rename = "defaultTTL")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub default_ttl: Option<String>,
    /// The Redis server (`backend: redis`), e.g. `redis://127.0.0.1:6379/0`; use
    /// `${REDIS_URL}` when it holds a password.
    #[serde(default = "default_redis_url", rename = "redisURL")]
    pub redis_url: String,
    /// Put before every key in Redis, so apps can share a server (default `<module name>:`).
    #[serde(default, rename = "keyPrefix")]
    pub key_prefix: Option<String>,
    /// How long to wait for Redis at start before failing it, and for each command after
    /// (reconnecting included): while Redis is away, cache steps fail within it.
    #[serde(default = "default_connect_timeout", rename = "connectTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub connect_timeout: String,
}

fn default_backend() -> String {
    "memory".into()
}
fn default_max_size() -> usize {
    10_000
}
fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}
fn default_connect_timeout() -> String {
    "5s".into()
}

pub struct CacheModuleType;

impl Described for CacheModuleType {
    const NAME: &'static str = "cache.modular";
    const CATEGORY: Category = Category::Storage;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "A named cache of JSON values: in memory (TTL, size bound, LRU) or in Redis.";
    type Config = CacheConfig;
}

impl ModuleType for CacheModuleType {
    fn check(config: &CacheConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match config.backend.as_str() {
            "memory" => {}
            "redis" => {
                if redis::Client::open(config.redis_url.as_str()).is_err() {
                    issues.push(ConfigIssue::new(
                        "/redisURL",
                        "not a Redis URL (`redis://host:port/db`)",
                    ));
                }
            }
            other => issues.push(ConfigIssue::new(
                "/backend",
                format!("`{other}` is not a cache backend (memory, redis)"),
            )),
        }
        for (key, value) in [
            ("/defaultTTL", config.default_ttl.as_deref()),
            ("/connectTimeout", Some(config.connect_timeout.as_str())),
        ] {
            if let Some(Err(e)) = value.map(parse_duration) {
                issues.push(ConfigIssue::new(key, e));
            }
        }
        issues
    }

    fn build(config: CacheConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let default_ttl = config
            .default_ttl
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let module = Arc::new(CacheModule {
            name: ctx.name.to_string(),
            backend: OnceLock::new(),
            redis: (config.backend == "redis").then(|| RedisSettings {
                url: config.redis_url.clone(),
                prefix: config
                    .key_prefix
                    .clone()
                    .unwrap_or_else(|| format!("{}:", ctx.name)),
                connect_timeout: parse_duration(&config.connect_timeout)
                    .unwrap_or(Duration::from_secs(5)),
            }),
            default_ttl,
        });
        if module.redis.is_none() {
            let _ = module
                .backend
                .set(Arc::new(MemoryCache::new(config.max_size, default_ttl)));
        }
        ctx.provide::<dyn Cache>(module.clone());
        Ok(module)
    }
}

struct RedisSettings {
    url: String,
    prefix: String,
    connect_timeout: Duration,
}

pub struct CacheModule {
    name: String,
    /// Set at build (memory) or once connected at start (Redis).
    backend: OnceLock<Arc<dyn Cache>>,
    redis: Option<RedisSettings>,
    default_ttl: Option<Duration>,
}

impl CacheModule {
    fn backend(&self) -> anyhow::Result<&Arc<dyn Cache>> {
        self.backend
            .get()
            .ok_or_else(|| anyhow::anyhow!("cache `{}` is not started", self.name))
    }
}

#[async_trait]
impl Module for CacheModule {
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        if let Some(redis) = &self.redis
            && self.backend.get().is_none()
        {
            let cache = RedisCache::connect(
                &redis.url,
                redis.prefix.clone(),
                self.default_ttl,
                redis.connect_timeout,
            )
            .await?;
            let _ = self.backend.set(Arc::new(cache));
            tracing::info!(cache = %self.name, server = %crate::redis_cache::redact(&redis.url), "cache connected to Redis");
        }
        Ok(())
    }
}

#[async_trait]
impl Cache for CacheModule {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Value>> {
        self.backend()?.get(key).await
    }

    async fn set(&self, key: &str, value: &Value, ttl: Option<Duration>) -> anyhow::Result<()> {
        self.backend()?.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> anyhow::Result<bool> {
        self.backend()?.delete(key).await
    }
}
