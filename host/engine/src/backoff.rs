//! Exponential backoff with jitter, shared by step retries, broker redelivery and webhooks.

use std::time::Duration;

/// `base · 2^(attempt-1)`, capped at `max`, plus up to 50% jitter (still capped) so retries of
/// many runs spread out instead of arriving together. `attempt` counts from 1.
pub fn exponential_with_jitter(base: Duration, max: Duration, attempt: u32) -> Duration {
    let delay = base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(max);
    let jitter = delay.mul_f64(random_fraction() * 0.5);
    (delay + jitter).min(max)
}

/// How often, and how patiently, [`retry`] tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait before the first retry; it doubles per retry, with jitter.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub const ONCE: RetryPolicy = RetryPolicy {
        attempts: 1,
        base: Duration::ZERO,
        max: Duration::ZERO,
    };
}

/// Runs `attempt` (given its number, from 1) until it succeeds, fails with an error that
/// `retryable` refuses, or the attempts are spent, waiting [`exponential_with_jitter`] between.
/// `before_wait` sees each error about to be retried with the coming wait, to log it, and may
/// give up instead (a deadline the wait would pass) by returning `false`. The last error comes
/// back with the number of attempts made. The one retry loop of steps, integration calls and
/// HTTP clients.
pub async fn retry<T, E, Fut>(
    policy: RetryPolicy,
    retryable: impl Fn(&E) -> bool,
    mut before_wait: impl FnMut(&E, u32, Duration) -> bool,
    mut attempt: impl FnMut(u32) -> Fut,
) -> Result<T, (E, u32)>
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut number = 1;
    loop {
        match attempt(number).await {
            Ok(value) => return Ok(value),
            Err(e) if number < policy.attempts && retryable(&e) => {
                let wait = exponential_with_jitter(policy.base, policy.max, number);
                if !before_wait(&e, number, wait) {
                    return Err((e, number));
                }
                tokio::time::sleep(wait).await;
                number += 1;
            }
            Err(e) => return Err((e, number)),
        }
    }
}

/// A number in [0, 1) from a fresh random UUID: enough for jitter, no extra dependency.
fn random_fraction() -> f64 {
    // The low bits of a v4 UUID are random; the top bits of `as_u128` hold version and variant.
    let bits = (uuid::Uuid::new_v4().as_u128() & ((1u128 << 53) - 1)) as u64;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retry_stops_at_success_refusal_spent_attempts_or_a_veto() {
        let policy = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let ok: Result<u32, (&str, u32)> = retry(
            policy,
            |_: &&str| true,
            |_, _, _| true,
            |n| async move { if n < 3 { Err("busy") } else { Ok(n) } },
        )
        .await;
        assert_eq!(ok, Ok(3));
        let spent: Result<u32, _> = retry(
            policy,
            |_: &&str| true,
            |_, _, _| true,
            |_| async { Err("busy") },
        )
        .await;
        assert_eq!(spent, Err(("busy", 3)));
        let refused: Result<u32, _> = retry(
            policy,
            |_: &&str| false,
            |_, _, _| true,
            |_| async { Err("bad") },
        )
        .await;
        assert_eq!(refused, Err(("bad", 1)));
        let vetoed: Result<u32, _> = retry(
            policy,
            |_: &&str| true,
            |_, _, _| false,
            |_| async { Err("late") },
        )
        .await;
        assert_eq!(vetoed, Err(("late", 1)));
    }

    #[test]
    fn doubles_from_the_base_and_stays_under_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 1..=10 {
            let d = exponential_with_jitter(base, max, attempt);
            let floor = base
                .saturating_mul(2u32.saturating_pow(attempt - 1))
                .min(max);
            assert!(d >= floor && d <= max, "attempt {attempt}: {d:?}");
        }
    }
}
