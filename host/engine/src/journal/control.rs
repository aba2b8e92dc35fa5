//! Cancelling a run in flight.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Held by a journaled run while it goes: cancelling it stops the step it is at.
#[derive(Debug, Default)]
pub struct RunControl {
    cancelled: AtomicBool,
    notify: Notify,
}

impl RunControl {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Resolves once the run is cancelled.
    pub async fn cancelled(&self) {
        loop {
            // Made before the check, so a cancel between the two still wakes it.
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_cancel_wakes_a_waiter_and_later_waiters_return_at_once() {
        let control = Arc::new(RunControl::default());
        let waiter = tokio::spawn({
            let control = control.clone();
            async move { control.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!control.is_cancelled());
        control.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), control.cancelled())
            .await
            .expect("a later waiter returns at once");
    }
}
