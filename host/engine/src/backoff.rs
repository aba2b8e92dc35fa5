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

/// A number in [0, 1) from a fresh random UUID: enough for jitter, no extra dependency.
fn random_fraction() -> f64 {
    // The low bits of a v4 UUID are random; the top bits of `as_u128` hold version and variant.
    let bits = (uuid::Uuid::new_v4().as_u128() & ((1u128 << 53) - 1)) as u64;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

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
