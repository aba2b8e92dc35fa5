//! Time for schedulers, injectable so tests move time by hand instead of sleeping.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use wf_engine::async_trait;

#[async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Returns once `now() >= at`.
    async fn sleep_until(&self, at: DateTime<Utc>);
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        // Re-checked after waking: a suspended machine or a clock step can wake us early.
        loop {
            let left = at - Utc::now();
            match left.to_std() {
                Ok(left) if !left.is_zero() => tokio::time::sleep(left).await,
                _ => return,
            }
        }
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    moved: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Mutex::new(start),
            moved: watch::channel(start).0,
        }
    }

    /// Moves time forward, waking every sleeper whose time has come.
    pub fn advance(&self, by: chrono::Duration) {
        let now = match self.now.lock() {
            Ok(mut now) => {
                *now += by;
                *now
            }
            Err(_) => return,
        };
        self.moved.send_replace(now);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now.lock().map(|n| *n).unwrap_or_default()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut moved = self.moved.subscribe();
        // `wait_for` checks the current value first, so no advance is missed.
        let _ = moved.wait_for(|now| *now >= at).await;
    }
}
