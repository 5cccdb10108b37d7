//! [`Backoff`]: the jittered exponential waits between attempts of the worker's retried steps
//! (startup, shard ends, processor restarts), from backon's envelope.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Waits growing from `min`, doubling, each stretched by a random share of itself (backon's
/// jitter), capped at `max`, forever.
#[derive(Debug)]
pub(crate) struct Backoff {
    inner: ExponentialBackoff,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let inner = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max.max(min))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        Self {
            inner,
            max,
            attempts: 0,
        }
    }

    /// The next wait.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        self.inner.next().unwrap_or(self.max).min(self.max)
    }

    /// How many waits were handed out.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_within_the_envelope() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            let wait = backoff.next_delay();
            assert!(wait <= Duration::from_secs(1), "{wait:?}");
        }
        assert_eq!(backoff.attempts(), 50);
    }
}
