//! `step.circuit_breaker`: guards the steps it names. After `failure_threshold` failures of
//! those steps in a row it opens, and runs reaching it fail at once as `unavailable` (so the
//! guarded steps are not attempted) until `timeout` has passed; then runs are let through again
//! (half-open): `success_threshold` successes close it, one failure opens it again. The original's breaker
//! was never told of failures and never opened.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, ErrorKind, PipelineContext, Step,
    StepError, StepOutput, StepType, async_trait,
};

/// Configuration of `step.circuit_breaker`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// The steps whose failures count (they should come after this one).
    pub guards: Vec<String>,
    /// Failures in a row that open the circuit.
    #[serde(default = "default_failures")]
    #[schemars(range(min = 1))]
    pub failure_threshold: u32,
    /// Successes in the half-open state that close it again.
    #[serde(default = "default_successes")]
    #[schemars(range(min = 1))]
    pub success_threshold: u32,
    /// How long the circuit stays open before a trial run.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
    /// Name in outputs and errors; the step's name by default.
    #[serde(default)]
    pub service_name: Option<String>,
}

fn default_failures() -> u32 {
    5
}
fn default_successes() -> u32 {
    3
}
fn default_timeout() -> String {
    "30s".to_string()
}

pub struct CircuitBreakerType;

impl Described for CircuitBreakerType {
    const NAME: &'static str = "step.circuit_breaker";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Stops calling the steps it guards after repeated failures, and tries again after a timeout.";
    type Config = CircuitBreakerConfig;
}

impl StepType for CircuitBreakerType {
    fn check(config: &CircuitBreakerConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        if config.guards.is_empty() {
            return vec![
                ConfigIssue::new("/guards", "`guards` is empty")
                    .help("name the steps this breaker protects"),
            ];
        }
        Vec::new()
    }

    fn build(
        config: CircuitBreakerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Step>> {
        let step_name = ctx.name.rsplit('.').next().unwrap_or(ctx.name).to_string();
        Ok(Arc::new(CircuitBreaker {
            service: config.service_name.unwrap_or(step_name),
            guards: config.guards,
            failure_threshold: config.failure_threshold,
            success_threshold: config.success_threshold,
            open_for: parse_duration(&config.timeout).map_err(anyhow::Error::msg)?,
            state: Mutex::new(State::Closed { failures: 0 }),
        }))
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { successes: u32 },
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half-open",
        }
    }
}

struct CircuitBreaker {
    service: String,
    guards: Vec<String>,
    failure_threshold: u32,
    success_threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

#[async_trait]
impl Step for CircuitBreaker {
    async fn run(&self, _: &PipelineContext) -> Result<StepOutput, StepError> {
        let now = Instant::now();
        let (state, transitioned) = {
            let Ok(mut state) = self.state.lock() else {
                return Err(StepError::internal("circuit breaker state is poisoned"));
            };
            match *state {
                State::Open { until } if now < until => {
                    let wait = until.saturating_duration_since(now);
                    return Err(StepError::unavailable(format!(
                        "circuit `{}` is open; the guarded steps are not called for another {:.1}s",
                        self.service,
                        wait.as_secs_f64()
                    )));
                }
                State::Open { .. } => {
                    *state = State::HalfOpen { successes: 0 };
                    (*state, true)
                }
                other => (other, false),
            }
        };
        let mut info = json!({"state": state.name(), "service": self.service, "allowed": true});
        if transitioned {
            info["transitioned"] = json!(true);
        }
        Ok(StepOutput::values(crate::output([(
            "circuit_breaker",
            info,
        )])))
    }

    fn observes(&self) -> Vec<String> {
        self.guards.clone()
    }

    fn observe(&self, _step: &str, outcome: Result<(), ErrorKind>) {
        // Only failures of the dependency count: a caller's bad input must not open the circuit.
        let succeeded = match outcome {
            Ok(()) => true,
            Err(ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Internal) => false,
            Err(_) => return,
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let open = State::Open {
            until: Instant::now() + self.open_for,
        };
        *state = match (*state, succeeded) {
            (State::Closed { .. }, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 >= self.failure_threshold => {
                tracing::warn!(service = %self.service, "circuit opened after {} failures", failures + 1);
                open
            }
            (State::Closed { failures }, false) => State::Closed {
                failures: failures + 1,
            },
            (State::HalfOpen { successes }, true) if successes + 1 >= self.success_threshold => {
                tracing::info!(service = %self.service, "circuit closed");
                State::Closed { failures: 0 }
            }
            (State::HalfOpen { successes }, true) => State::HalfOpen {
                successes: successes + 1,
            },
            (State::HalfOpen { .. }, false) => open,
            (open_state @ State::Open { .. }, _) => open_state,
        };
    }
}
