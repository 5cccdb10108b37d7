//! [`Backoff`]: the one wait between attempts of a retried step, for the producer and the
//! consumer alike: backon's exponential envelope (from `min`, doubling, capped at `max`) and a
//! [`Jitter`] that draws the wait from it.
//!
//! The three jitters are kept apart rather than made one because each caller's timing is part of
//! its behaviour: the producer's full jitter spreads retries of a throttled shard widest, the
//! readers' equal jitter keeps a floor under a fleet's retries of one shard, and the consumer's
//! worker never waits less than the envelope before restarting a step.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How a [`Backoff`] draws a wait from the envelope `e` of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, e]` ("full jitter"): the producer's retries of records and of the first
    /// shard listing.
    Full,
    /// Uniform in `[e/2, e]` ("equal jitter"): the readers' retries of GetRecords and
    /// SubscribeToShard.
    Equal,
    /// Uniform in `[e, 2e)`, capped at `max`: the consumer's retried steps (startup, shard ends,
    /// processor restarts).
    Stretch,
}

/// Jittered exponential waits: the envelope of attempt `n` is `min * 2^(n-1)` capped at `max`
/// (backon's [`ExponentialBuilder`], factor 2, no limit on attempts), and the wait is drawn
/// from it by the [`Jitter`].
///
/// Two ways to use it: [`delay`](Self::delay) for a caller that counts attempts itself (one
/// backoff for many records, each with its own count), [`next_delay`](Self::next_delay) (or the
/// [`Iterator`], which makes it a backon backoff) for one retried step, with
/// [`reset`](Self::reset) after a success.
///
/// ```
/// use std::time::Duration;
/// use kinesis_common::{Backoff, Jitter};
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), Jitter::Equal)
///     .with_seed(Some(7));
/// let first = backoff.next_delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// assert_eq!(backoff.attempts(), 1);
/// assert!(backoff.delay(40) <= Duration::from_secs(1));
/// ```
#[derive(Debug)]
pub struct Backoff {
    envelope: ExponentialBuilder,
    max: Duration,
    jitter: Jitter,
    rng: StdRng,
    attempts: u32,
}

impl Backoff {
    /// Waits from `min` doubling up to `max`, drawn by `jitter` from a random seed.
    pub fn new(min: Duration, max: Duration, jitter: Jitter) -> Self {
        Self {
            envelope: ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max)
                .with_factor(2.0)
                .without_max_times(),
            max,
            jitter,
            rng: StdRng::from_rng(&mut rand::rng()),
            attempts: 0,
        }
    }

    /// The same backoff drawing from `seed`, so a run can be repeated exactly (`None` keeps a
    /// random seed).
    pub fn with_seed(mut self, seed: Option<u64>) -> Self {
        if let Some(seed) = seed {
            self.rng = StdRng::seed_from_u64(seed);
        }
        self
    }

    /// The envelope of the `attempt`-th attempt (counted from 1; 0 counts as 1): `min` doubled
    /// `attempt - 1` times, capped at `max`.
    pub fn envelope(&self, attempt: u32) -> Duration {
        let mut steps = self.envelope.build();
        let Some(mut envelope) = steps.next() else {
            return self.max;
        };
        for _ in 1..attempt {
            let Some(next) = steps.next() else {
                return self.max;
            };
            // The next step depends on the last one only: once it repeats (capped at `max`,
            // or zero) it stays, so a large attempt count costs no more than reaching the cap.
            if next == envelope {
                break;
            }
            envelope = next;
        }
        envelope
    }

    /// The wait after the `attempt`-th failed attempt (counted by the caller): one draw from
    /// the envelope of that attempt. [`attempts`](Self::attempts) does not change.
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let envelope = self.envelope(attempt);
        let share = self.rng.random::<f64>();
        match self.jitter {
            Jitter::Full => part(envelope, share),
            Jitter::Equal => {
                let half = envelope / 2;
                half.saturating_add(part(half, share))
            }
            Jitter::Stretch => envelope.saturating_add(part(envelope, share)).min(self.max),
        }
    }

    /// The wait after one more failed attempt of the step this backoff counts.
    pub fn next_delay(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        self.delay(self.attempts)
    }

    /// Forgets the attempts (after a success): the next wait is drawn from `min` again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// How many waits [`next_delay`](Self::next_delay) handed out since the start or the last
    /// [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// Endless: each item is [`Backoff::next_delay`].
impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

/// `share` (in `[0, 1)`) of `duration`, as [`Duration::mul_f64`] computes it, but never
/// panicking: `Duration::MAX` as seconds rounds up past what a `Duration` holds.
fn part(duration: Duration, share: f64) -> Duration {
    Duration::try_from_secs_f64(share * duration.as_secs_f64()).unwrap_or(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// The envelope as the formula says, within the rounding of backon's f32 doubling.
    fn expected_envelope(attempt: u32) -> Duration {
        MIN.saturating_mul(2u32.saturating_pow(attempt.max(1) - 1))
            .min(MAX)
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) <= Duration::from_micros(1)
    }

    #[test]
    fn the_envelope_doubles_from_min_and_stops_at_max() {
        let backoff = Backoff::new(MIN, MAX, Jitter::Full);
        assert_eq!(backoff.envelope(0), MIN);
        assert_eq!(backoff.envelope(1), MIN);
        for attempt in 1..=40 {
            let envelope = backoff.envelope(attempt);
            assert!(
                close(envelope, expected_envelope(attempt)),
                "attempt {attempt}: {envelope:?}"
            );
        }
        assert_eq!(backoff.envelope(7), MAX, "100 ms * 64 > 5 s");
        // `min` above `max`: backon's first step is `min`, every later one `max`.
        let upside_down = Backoff::new(MAX, MIN, Jitter::Full);
        assert_eq!(upside_down.envelope(1), MAX);
        assert_eq!(upside_down.envelope(2), MIN);
        // Zero stays zero.
        assert_eq!(
            Backoff::new(Duration::ZERO, MAX, Jitter::Full).envelope(u32::MAX),
            Duration::ZERO
        );
    }

    /// Every jitter's waits, over many draws, stay in their range and spread over it.
    #[test]
    fn each_jitter_draws_within_its_bounds() {
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Stretch] {
            let mut backoff = Backoff::new(MIN, MAX, jitter).with_seed(Some(1));
            for attempt in 1..=8 {
                let envelope = backoff.envelope(attempt);
                let (low, high) = match jitter {
                    Jitter::Full => (Duration::ZERO, envelope),
                    Jitter::Equal => (envelope / 2, envelope),
                    Jitter::Stretch => (envelope, (envelope * 2).min(MAX)),
                };
                let draws: Vec<Duration> = (0..2_000).map(|_| backoff.delay(attempt)).collect();
                let (least, most) = (
                    *draws.iter().min().expect("draws"),
                    *draws.iter().max().expect("draws"),
                );
                assert!(
                    least >= low && most <= high,
                    "{jitter:?} attempt {attempt}: {least:?}..{most:?} outside {low:?}..{high:?}"
                );
                if high > low {
                    // 2,000 uniform draws cover the range but for a few per cent at each end.
                    let tenth = (high - low) / 10;
                    assert!(
                        least <= low + tenth,
                        "{jitter:?} attempt {attempt}: {least:?}"
                    );
                    assert!(
                        most >= high - tenth,
                        "{jitter:?} attempt {attempt}: {most:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn stretch_waits_the_cap_once_the_envelope_reaches_it() {
        let mut backoff = Backoff::new(MIN, MAX, Jitter::Stretch);
        for _ in 0..6 {
            backoff.next_delay();
        }
        for _ in 0..20 {
            assert_eq!(backoff.next_delay(), MAX);
        }
    }

    #[test]
    fn a_seed_repeats_the_waits_and_another_seed_does_not() {
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Stretch] {
            let draw = |seed| {
                let mut backoff = Backoff::new(MIN, MAX, jitter).with_seed(Some(seed));
                let mut waits: Vec<Duration> = (1..=10).map(|n| backoff.delay(n)).collect();
                waits.extend((0..10).map(|_| backoff.next_delay()));
                waits
            };
            assert_eq!(draw(7), draw(7), "{jitter:?}");
            assert_ne!(draw(7), draw(8), "{jitter:?}");
        }
    }

    /// The producer's `jitter_seed` runs draw as they did before this type: backon's envelope,
    /// `nth(attempt - 1)` of it, and one `f64` from a `StdRng` seeded with the seed per wait.
    #[test]
    fn full_jitter_draws_as_the_producers_backoff_did() {
        let envelope = ExponentialBuilder::default()
            .with_min_delay(MIN)
            .with_max_delay(MAX)
            .with_factor(2.0)
            .without_max_times();
        let mut rng = StdRng::seed_from_u64(42);
        let mut backoff = Backoff::new(MIN, MAX, Jitter::Full).with_seed(Some(42));
        for attempt in [1, 2, 3, 1, 9, 30, 4, 4, 2, 100] {
            let before = envelope
                .build()
                .nth((attempt as usize).saturating_sub(1))
                .unwrap_or(MAX)
                .mul_f64(rng.random::<f64>());
            assert_eq!(backoff.delay(attempt), before, "attempt {attempt}");
        }
    }

    #[test]
    fn large_attempt_counts_saturate_at_max() {
        let mut backoff = Backoff::new(MIN, MAX, Jitter::Equal);
        assert_eq!(backoff.envelope(u32::MAX), MAX);
        let wait = backoff.delay(u32::MAX);
        assert!(wait >= MAX / 2 && wait <= MAX, "{wait:?}");
        // A "never give up" setting: the envelope saturates at `Duration::MAX` without
        // overflowing, and so do the draws.
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Stretch] {
            let mut endless = Backoff::new(Duration::from_secs(1), Duration::MAX, jitter);
            assert_eq!(endless.envelope(u32::MAX), Duration::MAX);
            for _ in 0..100 {
                assert!(endless.delay(u32::MAX) <= Duration::MAX);
            }
        }
    }

    #[test]
    fn next_delay_counts_and_reset_starts_over() {
        let mut backoff = Backoff::new(MIN, MAX, Jitter::Equal).with_seed(Some(3));
        for expected in 1..=10 {
            backoff.next_delay();
            assert_eq!(backoff.attempts(), expected);
        }
        let _ = backoff.delay(3);
        assert_eq!(backoff.attempts(), 10, "delay(n) leaves the count alone");
        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
        let first = backoff.next_delay();
        assert!(first >= MIN / 2 && first <= MIN, "{first:?}");
        // The iterator is the same sequence, so backon's `retry` can take it.
        fn backon_builder(_: &impl BackoffBuilder) {}
        backon_builder(&backoff);
        let waits: Vec<Duration> = backoff.by_ref().take(3).collect();
        assert_eq!(waits.len(), 3);
        assert_eq!(backoff.attempts(), 4);
    }
}
