//! `http.middleware.ratelimit`: a token bucket per client. Each client may make `burstSize`
//! requests at once, refilled continuously at `requestsPerMinute`; beyond that the answer is
//! 429 `{"error": "rate limit exceeded"}` with `Retry-After` (seconds until the next token).
//!
//! The client is its socket address's IP (IPv6: its /64). `X-Forwarded-For` is believed only
//! with `trustForwardedFor: true` — behind a proxy that appends to it — and then only its last
//! address, or any caller could pick a new identity per request (the original always believed
//! the first). At most `maxClients` buckets are
//! kept: full ones are dropped first, so memory stays bounded under a flood of addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderValue, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::{ClientAddr, HttpMiddleware, Request, RouteService, json_response, route_fn};

/// Configuration of `http.middleware.ratelimit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate allowed per client.
    #[serde(default = "default_rpm", rename = "requestsPerMinute")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: u32,
    /// Requests a client may make at once before the rate applies.
    #[serde(default = "default_burst", rename = "burstSize")]
    #[schemars(range(min = 1))]
    pub burst_size: u32,
    /// Take the client from the last `X-Forwarded-For` address (the one the proxy appended). Only behind a proxy that sets
    /// that header: otherwise callers choose their own identity.
    #[serde(default, rename = "trustForwardedFor")]
    pub trust_forwarded_for: bool,
    /// Most clients tracked at once.
    #[serde(default = "default_max_clients", rename = "maxClients")]
    #[schemars(range(min = 1))]
    pub max_clients: usize,
}

fn default_rpm() -> u32 {
    60
}
fn default_burst() -> u32 {
    10
}
fn default_max_clients() -> usize {
    100_000
}

pub struct RateLimitType;

impl Described for RateLimitType {
    const NAME: &'static str = "http.middleware.ratelimit";
    const CATEGORY: Category = Category::Middleware;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Limits each client to a burst and a sustained rate (token bucket); beyond it, 429 with Retry-After.";
    type Config = RateLimitConfig;
}

impl ModuleType for RateLimitType {
    fn check(config: &RateLimitConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if config.requests_per_minute == 0 {
            issues.push(ConfigIssue::new("/requestsPerMinute", "must be at least 1"));
        }
        if config.burst_size == 0 {
            issues.push(ConfigIssue::new("/burstSize", "must be at least 1"));
        }
        issues
    }

    fn build(
        config: RateLimitConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let limiter = Arc::new(RateLimiter {
            capacity: f64::from(config.burst_size.max(1)),
            per_second: f64::from(config.requests_per_minute.max(1)) / 60.0,
            trust_forwarded_for: config.trust_forwarded_for,
            max_clients: config.max_clients.max(1),
            buckets: Mutex::default(),
        });
        ctx.provide::<dyn HttpMiddleware>(limiter.clone());
        Ok(limiter)
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    trust_forwarded_for: bool,
    max_clients: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Module for RateLimiter {}

impl RateLimiter {
    fn client(&self, req: &Request) -> Option<IpAddr> {
        // The last address is the one the trusted proxy saw; earlier ones are whatever the
        // caller wrote (proxies append to the header they receive).
        let forwarded = self.trust_forwarded_for.then(|| {
            req.headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|last| last.trim().parse::<IpAddr>().ok())
        });
        forwarded
            .flatten()
            .or_else(|| req.extensions().get::<ClientAddr>().map(|a| a.0.ip()))
            .map(client_key)
    }

    /// `Ok` when the client may go on, else how long until it may.
    fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= self.max_clients && !buckets.contains_key(&client) {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    /// Makes room for a tenth of `maxClients` at once, so the scan runs once per that many
    /// new clients, not per request: drops buckets that have refilled (they hold no state
    /// worth keeping), then, if clients are still too many, arbitrary ones.
    fn evict(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let refill = Duration::from_secs_f64(self.capacity / self.per_second);
        buckets.retain(|_, b| now.saturating_duration_since(b.updated) < refill);
        let target = self.max_clients - self.max_clients / 10 - 1;
        if buckets.len() > target {
            let excess: Vec<IpAddr> = buckets
                .keys()
                .take(buckets.len() - target)
                .copied()
                .collect();
            for ip in excess {
                buckets.remove(&ip);
            }
        }
    }
}

/// The bucket key of an address: IPv6 clients by their /64, since one host holds a whole /64
/// and could otherwise take a new address per request.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl HttpMiddleware for RateLimiter {
    fn layer(self: Arc<Self>, inner: RouteService) -> RouteService {
        route_fn(move |req: Request| {
            let verdict = match self.client(&req) {
                Some(client) => self.take(client, Instant::now()),
                None => Ok(()),
            };
            let inner = inner.clone();
            async move {
                match verdict {
                    Ok(()) => crate::call(inner, req).await,
                    Err(wait) => {
                        let mut response = json_response(
                            StatusCode::TOO_MANY_REQUESTS,
                            &json!({"error": "rate limit exceeded"}),
                        );
                        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                        response
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rpm: u32, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter {
            capacity: f64::from(burst),
            per_second: f64::from(rpm) / 60.0,
            trust_forwarded_for: false,
            max_clients,
            buckets: Mutex::default(),
        }
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = limiter(60, 3, 10);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take(ip, t0), Ok(()));
        }
        let wait = l.take(ip, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        // One token per second comes back; other clients are unaffected.
        assert_eq!(l.take(ip, t0 + Duration::from_millis(1000)), Ok(()));
        assert!(l.take(ip, t0 + Duration::from_millis(1100)).is_err());
        assert_eq!(l.take("10.0.0.2".parse().unwrap(), t0), Ok(()));
    }

    #[test]
    fn memory_stays_bounded() {
        let l = limiter(60, 1, 100);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            let _ = l.take(ip, t0);
        }
        assert!(l.buckets.lock().unwrap().len() <= 100);
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
