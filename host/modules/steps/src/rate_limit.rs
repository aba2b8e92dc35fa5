//! `step.rate_limit`: a token bucket per key (`key_from`, a template); an exhausted bucket fails
//! the step as `rate-limited` (an HTTP caller gets 429, unless `on_error` says otherwise).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::{
    BuildContext, Category, Described, ErrorKind, PipelineContext, Step, StepError, StepOutput,
    StepType, async_trait,
};
use wf_template::Template;

/// Configuration of `step.rate_limit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate: tokens added per minute.
    #[serde(default = "default_rpm")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: u32,
    /// Bucket size: how many requests may come at once.
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1))]
    pub burst_size: u32,
    /// Which bucket a run uses, e.g. `{{ .steps.auth.user_id }}`; `global` shares one bucket.
    #[serde(default = "default_key")]
    pub key_from: String,
    /// Steps with the same `shared` name use one set of buckets (every call to one service
    /// counts against one limit); they must agree on the rate.
    #[serde(default)]
    pub shared: Option<String>,
}

fn default_rpm() -> u32 {
    60
}
fn default_burst() -> u32 {
    10
}
fn default_key() -> String {
    "global".to_string()
}

/// Buckets kept at most; the least recently used is dropped beyond it, so many keys cannot
/// exhaust memory.
const MAX_BUCKETS: usize = 100_000;

pub struct RateLimitType;

impl Described for RateLimitType {
    const NAME: &'static str = "step.rate_limit";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Token-bucket rate limit per key; an exhausted bucket fails the step as `rate-limited` (HTTP 429).";
    type Config = RateLimitConfig;
}

impl StepType for RateLimitType {
    fn build(config: RateLimitConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        let fresh = Arc::new(Buckets {
            per_second: f64::from(config.requests_per_minute) / 60.0,
            burst: f64::from(config.burst_size),
            map: Mutex::default(),
        });
        let buckets = match &config.shared {
            None => fresh,
            Some(name) => {
                let alias = format!("rate-limit:{name}");
                match ctx.service::<Buckets>(&alias) {
                    Ok(existing) => {
                        if existing.per_second != fresh.per_second || existing.burst != fresh.burst
                        {
                            anyhow::bail!(
                                "the rate limits sharing `{name}` disagree on `requests_per_minute` or `burst_size`"
                            );
                        }
                        existing
                    }
                    Err(_) => {
                        ctx.provide_as(&alias, fresh.clone());
                        fresh
                    }
                }
            }
        };
        Ok(Arc::new(RateLimit {
            key: crate::compile_str("key_from", &config.key_from)?,
            buckets,
        }))
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by key, at one rate; shared between steps by `shared`.
pub struct Buckets {
    per_second: f64,
    burst: f64,
    map: Mutex<HashMap<String, Bucket>>,
}

impl wf_engine::ServiceKind for Buckets {
    const LABEL: &'static str = "a shared rate limit";
}

struct RateLimit {
    key: Template,
    buckets: Arc<Buckets>,
}

impl Buckets {
    fn take(&self, key: &str, now: Instant) -> bool {
        let Ok(mut buckets) = self.map.lock() else {
            return false;
        };
        if buckets.len() >= MAX_BUCKETS
            && !buckets.contains_key(key)
            && let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| k.clone())
        {
            buckets.remove(&oldest);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[async_trait]
impl Step for RateLimit {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let key = self
            .key
            .render_string(&ctx.scope())
            .map_err(StepError::from)?;
        // Keys come from requests: long ones are hashed so buckets stay small.
        let key = if key.len() > 256 {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut hasher);
            format!("#{:016x}", hasher.finish())
        } else {
            key
        };
        if self.buckets.take(&key, Instant::now()) {
            Ok(StepOutput::values(crate::output([(
                "rate_limit",
                json!({"allowed": true, "key": key}),
            )])))
        } else {
            Err(StepError::new(
                ErrorKind::RateLimited,
                format!("rate limit exceeded for key \"{key}\""),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_per_key() {
        let limit = Buckets {
            per_second: 1.0,
            burst: 2.0,
            map: Mutex::default(),
        };
        let t0 = Instant::now();
        assert!(limit.take("a", t0));
        assert!(limit.take("a", t0));
        assert!(!limit.take("a", t0), "burst exhausted");
        assert!(limit.take("b", t0), "another key has its own bucket");
        assert!(
            limit.take("a", t0 + Duration::from_millis(1100)),
            "refilled after a second"
        );
        assert!(!limit.take("a", t0 + Duration::from_millis(1200)));
    }
}
