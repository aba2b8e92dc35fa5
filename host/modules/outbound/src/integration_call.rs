//! One call of an `integration` workflow, around the `step.http_call` that does the HTTP part:
//! the step's `transform` is evaluated first, transient failures are retried, and the outcome is
//! published to the step's `onSuccess` / `onError` topic.
//!
//! Retries live here, not in the engine's step retry, so that a notification goes out once per
//! call and not once per attempt.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use wf_engine::backoff::{RetryPolicy, retry};
use wf_engine::{ErrorKind, PipelineContext, Step, StepError, StepOutput, async_trait};
use wf_messaging::MessageBroker;

use crate::transform_expr::Expr;

/// Longest wait between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Where a call's outcome is announced.
pub struct Notify {
    pub broker: Arc<dyn MessageBroker>,
    pub on_success: Option<String>,
    pub on_error: Option<String>,
}

pub struct IntegrationCall {
    pub integration: String,
    pub step: String,
    /// The `step.http_call` built from the step's connector and action.
    pub call: Arc<dyn Step>,
    /// Its result is placed where the call's templates read it: `steps.<this step>.body`.
    pub transform: Option<Expr>,
    /// Timeouts, 429s, 5xx and transport errors are retried.
    pub retry: RetryPolicy,
    pub notify: Option<Notify>,
}

#[async_trait]
impl Step for IntegrationCall {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let transformed;
        let call_ctx = match &self.transform {
            Some(expr) => {
                let value = expr.eval(&ctx.trigger, &|step| {
                    ctx.steps.get(step).and_then(|s| s.get("body")).cloned()
                });
                let mut copy = ctx.clone();
                copy.steps
                    .insert(self.step.clone(), json!({ "body": value }));
                transformed = copy;
                &transformed
            }
            None => ctx,
        };
        let notify = self.notify.as_ref();
        match self.call_with_retries(call_ctx).await {
            Ok(output) => {
                if let Some(topic) = notify.and_then(|n| n.on_success.as_deref()) {
                    let message = json!({
                        "status": "succeeded",
                        "status_code": output.values.get("status_code").cloned().unwrap_or(Value::Null),
                        "result": output.values.get("body").cloned().unwrap_or(Value::Null),
                    });
                    self.publish(ctx, topic, message).await?;
                }
                Ok(output)
            }
            // With `onError` the failure is announced and the run goes on, the error as this
            // step's output (as in the original, where `<step>_error` held it).
            Err(e) => match notify.and_then(|n| n.on_error.as_deref()) {
                Some(topic) => {
                    let message =
                        json!({"status": "failed", "error": e.message, "error_kind": e.kind});
                    self.publish(ctx, topic, message).await?;
                    let mut values = serde_json::Map::new();
                    values.insert("error".into(), json!(e.message));
                    values.insert("error_kind".into(), json!(e.kind));
                    values.insert("notified".into(), json!(topic));
                    Ok(StepOutput::values(values))
                }
                None => Err(e),
            },
        }
    }
}

impl IntegrationCall {
    async fn call_with_retries(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        retry(
            self.retry,
            |e: &StepError| matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout),
            |e, attempt, wait| {
                tracing::warn!(integration = %self.integration, step = %self.step, attempt, error = %e.message, ?wait, "integration call failed; retrying");
                true
            },
            |_| self.call.run(ctx),
        )
        .await
        .map_err(|(e, attempts)| e.after_attempts(attempts))
    }

    /// Publishes an outcome. One that cannot be published fails the run: an error nobody hears
    /// of would be lost.
    async fn publish(
        &self,
        ctx: &PipelineContext,
        topic: &str,
        mut message: Value,
    ) -> Result<(), StepError> {
        let Some(notify) = &self.notify else {
            return Ok(());
        };
        message["integration"] = json!(self.integration);
        message["step"] = json!(self.step);
        message["run_id"] = ctx.meta.get("run_id").cloned().unwrap_or(Value::Null);
        let bytes = serde_json::to_vec(&message).map_err(|e| StepError::internal(e.to_string()))?;
        notify
            .broker
            .publish(topic, Bytes::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| {
                StepError::unavailable(format!(
                    "the outcome of `{}` could not be published to `{topic}`: {e:#}",
                    self.step
                ))
            })
    }
}
