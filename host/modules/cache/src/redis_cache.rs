//! The Redis backend: values are stored as JSON text under `<keyPrefix><key>`, with `PX` for
//! their TTL, over one auto-reconnecting connection.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use wf_engine::async_trait;

use crate::Cache;

pub struct RedisCache {
    connection: ConnectionManager,
    prefix: String,
    default_ttl: Option<Duration>,
    /// Longest wait for one command, reconnecting included.
    timeout: Duration,
}

impl RedisCache {
    /// Connects, or fails within `connect_timeout`, which also bounds every command.
    pub async fn connect(
        url: &str,
        prefix: String,
        default_ttl: Option<Duration>,
        connect_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("`{}` is not a Redis URL: {e}", redact(url)))?;
        // Every command and reconnect attempt is bounded by the connect timeout, and
        // reconnects back off to at most 2 s: while Redis is away a cache step fails within
        // that time instead of waiting out the library's long defaults.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(connect_timeout))
            .set_max_delay(Duration::from_secs(2));
        let connection = tokio::time::timeout(
            connect_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "Redis at {} did not answer within {connect_timeout:?}",
                redact(url)
            )
        })?
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {}: {e}", redact(url)))?;
        Ok(RedisCache {
            connection,
            prefix,
            default_ttl,
            timeout: connect_timeout,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `command` within [`RedisCache::timeout`]: while Redis is away the connection
    /// manager retries its reconnect for several seconds, and a caller must not wait that long.
    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> anyhow::Result<T> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.timeout, command.query_async(&mut connection)).await {
            Ok(result) => Ok(result?),
            Err(_) => anyhow::bail!("Redis did not answer within {:?}", self.timeout),
        }
    }
}

/// A Redis URL for messages: without its password.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Value>> {
        let text: Option<String> = self.query(redis::cmd("GET").arg(self.key(key))).await?;
        match text {
            Some(text) => Ok(Some(serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("cached value of `{key}` is not JSON: {e}")
            })?)),
            None => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: &Value, ttl: Option<Duration>) -> anyhow::Result<()> {
        let mut command = redis::cmd("SET");
        command
            .arg(self.key(key))
            .arg(serde_json::to_string(value)?);
        if let Some(ttl) = ttl.or(self.default_ttl) {
            // Redis refuses `PX 0`; a zero TTL keeps the value for the shortest time it can.
            command.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let _: () = self.query(&command).await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let removed: u64 = self.query(redis::cmd("DEL").arg(self.key(key))).await?;
        Ok(removed > 0)
    }
}
