//! What components make the host hold and pass on — state bytes, published bytes, log
//! messages dropped, quota refusals — counted per component and exported through the app's
//! `metrics.collector` when it has one (bound at start).

use std::sync::OnceLock;

use prometheus::{IntCounterVec, IntGaugeVec};

use crate::limits::LimitKind;
use crate::state_store::BucketUsage;

#[derive(Debug, Default)]
pub struct ComponentUsage {
    metrics: OnceLock<UsageMetrics>,
}

#[derive(Debug)]
struct UsageMetrics {
    state_bytes: IntGaugeVec,
    state_keys: IntGaugeVec,
    published_bytes: IntCounterVec,
    logs_dropped: IntCounterVec,
    refusals: IntCounterVec,
}

impl ComponentUsage {
    /// Exports the counts through `metrics` from now on.
    pub fn bind(&self, metrics: &wf_http::metrics::Metrics) -> anyhow::Result<()> {
        if self.metrics.get().is_some() {
            return Ok(());
        }
        let bound = UsageMetrics {
            state_bytes: metrics.gauge_vec(
                "component_state_bytes",
                "Bytes (keys and values) the state store holds, by bucket.",
                &["bucket"],
            )?,
            state_keys: metrics.gauge_vec(
                "component_state_keys",
                "Keys the state store holds, by bucket.",
                &["bucket"],
            )?,
            published_bytes: metrics.counter_vec(
                "component_published_bytes_total",
                "Bytes of event payloads components published, by component.",
                &["component"],
            )?,
            logs_dropped: metrics.counter_vec(
                "component_log_messages_dropped_total",
                "Log messages dropped over a component's per-call log quota, by component.",
                &["component"],
            )?,
            refusals: metrics.counter_vec(
                "component_quota_refusals_total",
                "Host calls refused for a quota, by component and quota.",
                &["component", "quota"],
            )?,
        };
        let _ = self.metrics.set(bound);
        Ok(())
    }

    pub fn state(&self, bucket: &str, usage: BucketUsage) {
        if let Some(m) = self.metrics.get() {
            m.state_bytes
                .with_label_values(&[bucket])
                .set(usage.bytes as i64);
            m.state_keys
                .with_label_values(&[bucket])
                .set(usage.keys as i64);
        }
    }

    pub fn published(&self, component: &str, bytes: usize) {
        if let Some(m) = self.metrics.get() {
            m.published_bytes
                .with_label_values(&[component])
                .inc_by(bytes as u64);
        }
    }

    pub fn logs_dropped(&self, component: &str, count: u64) {
        if let Some(m) = self.metrics.get() {
            m.logs_dropped.with_label_values(&[component]).inc_by(count);
        }
    }

    pub fn refused(&self, component: &str, kind: LimitKind) {
        if let Some(m) = self.metrics.get() {
            m.refusals
                .with_label_values(&[component, kind.quota_name()])
                .inc();
        }
    }
}
