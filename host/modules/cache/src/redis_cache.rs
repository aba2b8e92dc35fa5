//! The Redis backend: values are stored as JSON text under `<keyPrefix><key>`, with `PX` for
//! their TTL, over one auto-reconnecting connection.

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde_json::Value;
use wf_engine::async_trait;

use crate::Cache;

pub struct RedisCache {
    connection: ConnectionManager,
    prefix: String,
    default_ttl: Option<Duration>,
}

impl RedisCache {
    /// Connects, or fails within `connect_timeout`.
    pub async fn connect(
        url: &str,
        prefix: String,
        default_ttl: Option<Duration>,
        connect_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("`{}` is not a Redis URL: {e}", redact(url)))?;
        let connection = tokio::time::timeout(connect_timeout, ConnectionManager::new(client))
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
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
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
        let mut connection = self.connection.clone();
        let text: Option<String> = redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut connection)
            .await?;
        match text {
            Some(text) => Ok(Some(serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("cached value of `{key}` is not JSON: {e}")
            })?)),
            None => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: &Value, ttl: Option<Duration>) -> anyhow::Result<()> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("SET");
        command
            .arg(self.key(key))
            .arg(serde_json::to_string(value)?);
        if let Some(ttl) = ttl.or(self.default_ttl) {
            // Redis refuses `PX 0`; a zero TTL keeps the value for the shortest time it can.
            command.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let _: () = command.query_async(&mut connection).await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let mut connection = self.connection.clone();
        let removed: u64 = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut connection)
            .await?;
        Ok(removed > 0)
    }
}
