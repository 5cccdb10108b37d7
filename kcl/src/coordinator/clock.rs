//! Injected time: [`Clock`], [`SystemClock`] and the hand-driven [`ManualClock`].
//!
//! Lease expiry is judged from a monotonic clock read through this trait, never from wall
//! clocks, so tests can move time without sleeping.

use std::fmt;
#[cfg(test)]
use std::sync::{Arc, Mutex, PoisonError};
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

/// A monotonic clock.
///
/// The coordinator reads it to judge lease expiry and how long ago a lease was last renewed;
/// its loops still sleep on tokio's timer.
pub(crate) trait Clock: Send + Sync + fmt::Debug {
    /// The current instant. Must never go backwards.
    fn now(&self) -> Instant;
}

/// The process's monotonic clock.
///
/// Read through [`tokio::time::Instant::now`], which is [`Instant::now`] except in a tokio
/// runtime whose time is paused (tokio's `test-util`), where it follows the paused clock: tests
/// that pause tokio time move this clock and the coordinator's sleeps together.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A clock that moves only when told to, for tests. Clones share the same time.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

#[cfg(test)]
impl ManualClock {
    /// A clock standing at the current instant.
    pub(crate) fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock standing at `start`.
    pub(crate) fn starting_at(start: Instant) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by` (left unchanged when that would overflow [`Instant`]).
    pub(crate) fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }
}

#[cfg(test)]
impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Was the doc example of `ManualClock` while it was public.
    #[test]
    fn a_manual_clock_advanced_by_ten_seconds_reads_ten_seconds_later() {
        let clock = ManualClock::new();
        let start = clock.now();
        clock.advance(Duration::from_secs(10));
        assert_eq!(clock.now() - start, Duration::from_secs(10));
    }

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = ManualClock::new();
        let other = clock.clone();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - start, Duration::from_millis(1500));
        clock.advance(Duration::MAX);
        assert!(clock.now() >= start + Duration::from_millis(1500));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock;
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }

    #[tokio::test(start_paused = true)]
    async fn system_clock_follows_paused_tokio_time() {
        let clock = SystemClock;
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(clock.now() - start >= Duration::from_secs(30));
    }
}
