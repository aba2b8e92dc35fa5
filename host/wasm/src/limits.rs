//! Per-component resource limits and instance policy, as YAML sets them.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wf_config::duration::{DURATION_PATTERN, parse_duration};

/// How instances are created for calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// A new instance per call: nothing survives between calls (the default; ~40 µs a call).
    #[default]
    Fresh,
    /// Warm instances reused for up to `max_invocations` calls each (~6 µs a call). Globals
    /// and memory persist between calls on one instance; an instance that trapped is retired.
    Reuse,
}

/// Limits for one component; unset fields take the runtime's defaults.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// CPU budget per call in fuel units (about one per wasm instruction). Default 1,000,000,000.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Wall-clock limit per call, host calls included, e.g. `500ms`. Default `5s`.
    #[serde(default)]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Linear memory limit per instance in MiB. Default 64.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Largest output a call may return, in KiB. Default 1024.
    #[serde(default)]
    pub max_output_kib: Option<u32>,
    /// `fresh` or `reuse`. Default `fresh`.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// With `reuse`: calls served by one instance before it is replaced. Default 10,000.
    #[serde(default)]
    pub max_invocations: Option<u32>,
}

/// Limits with every default applied.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Limits {
    pub fuel: u64,
    #[serde(rename = "timeout_ms", serialize_with = "millis")]
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub max_output_bytes: usize,
    pub policy: Policy,
    pub max_invocations: u32,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 1_000_000_000,
            timeout: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            max_output_bytes: 1 << 20,
            policy: Policy::Fresh,
            max_invocations: 10_000,
        }
    }
}

/// The largest memory limit a component may ask for; the pooling allocator reserves slots of
/// this size.
pub const MAX_MEMORY_MIB: u32 = 1024;

impl Limits {
    /// `base` with the fields `config` sets replaced.
    pub fn merged(base: &Limits, config: &LimitsConfig) -> Result<Limits, String> {
        let timeout = match &config.timeout {
            Some(text) => parse_duration(text).map_err(|e| format!("limits.timeout: {e}"))?,
            None => base.timeout,
        };
        if timeout.is_zero() {
            return Err("limits.timeout must be more than 0".into());
        }
        Ok(Limits {
            fuel: config.fuel.unwrap_or(base.fuel),
            timeout,
            memory_bytes: config
                .memory_mib
                .map(|m| (m.min(MAX_MEMORY_MIB) as usize) << 20)
                .unwrap_or(base.memory_bytes),
            max_output_bytes: config
                .max_output_kib
                .map(|k| (k as usize) << 10)
                .unwrap_or(base.max_output_bytes),
            policy: config.policy.unwrap_or(base.policy),
            max_invocations: config
                .max_invocations
                .unwrap_or(base.max_invocations)
                .max(1),
        })
    }
}

impl Limits {
    /// The limits of `asked` that are looser than these, as `limits.KEY`: what a grant sent
    /// with an upload may not raise beyond the YAML's.
    pub fn loosened_by(&self, asked: &Limits) -> Vec<String> {
        let mut looser = Vec::new();
        let mut flag = |raised: bool, key: &str| {
            if raised {
                looser.push(format!("limits.{key}"));
            }
        };
        flag(asked.fuel > self.fuel, "fuel");
        flag(asked.timeout > self.timeout, "timeout");
        flag(asked.memory_bytes > self.memory_bytes, "memory_mib");
        flag(
            asked.max_output_bytes > self.max_output_bytes,
            "max_output_kib",
        );
        flag(
            asked.policy == Policy::Reuse && self.policy == Policy::Fresh,
            "policy",
        );
        flag(
            asked.max_invocations > self.max_invocations,
            "max_invocations",
        );
        looser
    }
}

/// Which limit a call broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Cpu,
    Time,
    Memory,
    Output,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Cpu => "cpu",
            LimitKind::Time => "time",
            LimitKind::Memory => "memory",
            LimitKind::Output => "output",
        }
    }

    /// The YAML key that raises this limit.
    pub fn setting(self) -> &'static str {
        match self {
            LimitKind::Cpu => "limits.fuel",
            LimitKind::Time => "limits.timeout",
            LimitKind::Memory => "limits.memory_mib",
            LimitKind::Output => "limits.max_output_kib",
        }
    }
}
