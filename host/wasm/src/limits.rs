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
    /// Largest value the component may write to a state bucket, in KiB. Default 256.
    #[serde(default)]
    pub state_value_kib: Option<u32>,
    /// Most keys a state bucket may hold when this component adds one. Default 10,000.
    #[serde(default)]
    pub state_keys: Option<u32>,
    /// Most bytes (keys and values) a state bucket may hold when this component writes to
    /// it, in MiB. Default 16.
    #[serde(default)]
    pub state_bucket_mib: Option<u32>,
    /// Largest event payload the component may publish, in KiB. Default 256.
    #[serde(default)]
    pub event_payload_kib: Option<u32>,
    /// Events the component may publish in one call. Default 100.
    #[serde(default)]
    pub events_per_call: Option<u32>,
    /// Longest log message, in KiB; longer ones are cut. Default 4.
    #[serde(default)]
    pub log_message_kib: Option<u32>,
    /// Log messages kept per call; the rest are dropped and counted. Default 100.
    #[serde(default)]
    pub logs_per_call: Option<u32>,
    /// Bytes of log messages kept per call, in KiB; the rest are dropped and counted.
    /// Default 64.
    #[serde(default)]
    pub log_kib_per_call: Option<u32>,
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
    /// What the host keeps or passes on for the component, outside its own memory.
    #[serde(flatten)]
    pub quotas: Quotas,
}

/// Quotas on what the host holds or forwards on a component's behalf: state, events and logs
/// live outside the component's memory limit, so each has its own.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Quotas {
    pub state_value_bytes: usize,
    pub state_keys: usize,
    pub state_bucket_bytes: usize,
    pub event_payload_bytes: usize,
    pub events_per_call: u32,
    pub log_message_bytes: usize,
    pub logs_per_call: u32,
    pub log_bytes_per_call: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            state_value_bytes: 256 << 10,
            state_keys: 10_000,
            state_bucket_bytes: 16 << 20,
            event_payload_bytes: 256 << 10,
            events_per_call: 100,
            log_message_bytes: 4 << 10,
            logs_per_call: 100,
            log_bytes_per_call: 64 << 10,
        }
    }
}

impl Quotas {
    fn merged(base: &Quotas, config: &LimitsConfig) -> Quotas {
        let kib = |v: Option<u32>, base: usize| v.map_or(base, |k| (k as usize) << 10);
        let mib = |v: Option<u32>, base: usize| v.map_or(base, |m| (m as usize) << 20);
        Quotas {
            state_value_bytes: kib(config.state_value_kib, base.state_value_bytes),
            state_keys: config.state_keys.map_or(base.state_keys, |k| k as usize),
            state_bucket_bytes: mib(config.state_bucket_mib, base.state_bucket_bytes),
            event_payload_bytes: kib(config.event_payload_kib, base.event_payload_bytes),
            events_per_call: config.events_per_call.unwrap_or(base.events_per_call),
            log_message_bytes: kib(config.log_message_kib, base.log_message_bytes),
            logs_per_call: config.logs_per_call.unwrap_or(base.logs_per_call),
            log_bytes_per_call: kib(config.log_kib_per_call, base.log_bytes_per_call),
        }
    }
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
            quotas: Quotas::default(),
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
            quotas: Quotas::merged(&base.quotas, config),
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
        let (mine, theirs) = (&self.quotas, &asked.quotas);
        flag(
            theirs.state_value_bytes > mine.state_value_bytes,
            "state_value_kib",
        );
        flag(theirs.state_keys > mine.state_keys, "state_keys");
        flag(
            theirs.state_bucket_bytes > mine.state_bucket_bytes,
            "state_bucket_mib",
        );
        flag(
            theirs.event_payload_bytes > mine.event_payload_bytes,
            "event_payload_kib",
        );
        flag(
            theirs.events_per_call > mine.events_per_call,
            "events_per_call",
        );
        flag(
            theirs.log_message_bytes > mine.log_message_bytes,
            "log_message_kib",
        );
        flag(theirs.logs_per_call > mine.logs_per_call, "logs_per_call");
        flag(
            theirs.log_bytes_per_call > mine.log_bytes_per_call,
            "log_kib_per_call",
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
    /// A state value larger than `state_value_kib`.
    StateValue,
    /// A new key in a bucket holding `state_keys` keys.
    StateKeys,
    /// A write that would take a bucket past `state_bucket_mib`.
    StateBucket,
    /// An event payload larger than `event_payload_kib`.
    EventPayload,
    /// More than `events_per_call` publishes in one call.
    EventsPerCall,
    /// The run's deadline, shared by all of its steps.
    RunTime,
    /// The run's fuel, shared by all of its WebAssembly steps.
    RunCpu,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Cpu => "cpu",
            LimitKind::Time => "time",
            LimitKind::Memory => "memory",
            LimitKind::Output => "output",
            LimitKind::StateValue | LimitKind::StateKeys | LimitKind::StateBucket => "state",
            LimitKind::EventPayload | LimitKind::EventsPerCall => "events",
            LimitKind::RunTime => "run-time",
            LimitKind::RunCpu => "run-cpu",
        }
    }

    /// The YAML key that raises this limit, in backticks.
    pub fn setting(self) -> &'static str {
        match self {
            LimitKind::Cpu => "`limits.fuel`",
            LimitKind::Time => "`limits.timeout`",
            LimitKind::Memory => "`limits.memory_mib`",
            LimitKind::Output => "`limits.max_output_kib`",
            LimitKind::StateValue => "`limits.state_value_kib`",
            LimitKind::StateKeys => "`limits.state_keys`",
            LimitKind::StateBucket => "`limits.state_bucket_mib`",
            LimitKind::EventPayload => "`limits.event_payload_kib`",
            LimitKind::EventsPerCall => "`limits.events_per_call`",
            LimitKind::RunTime => "the pipeline's `timeout` or its trigger's deadline",
            LimitKind::RunCpu => "the pipeline's `max_fuel`",
        }
    }

    /// The quota's name in metrics: its YAML key without `limits.`.
    pub fn quota_name(self) -> &'static str {
        self.setting()
            .trim_matches('`')
            .strip_prefix("limits.")
            .unwrap_or(self.as_str())
    }

    /// What a refused call says: the limit, what happened, and what to raise.
    pub fn refusal(self, detail: &str) -> String {
        let scope = match self {
            LimitKind::RunTime | LimitKind::RunCpu => "for this pipeline",
            _ => "for this component",
        };
        format!(
            "limit-exceeded: {}: {detail}; raise {} {scope} if the work is legitimate",
            self.as_str(),
            self.setting()
        )
    }
}
