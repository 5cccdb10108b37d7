//! The producer's one retry backoff, for records and for the listing at `build()`: full
//! jitter over an exponential envelope from `min_backoff` doubling up to `max_backoff`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub(crate) struct RetryBackoff {
    envelope: ExponentialBuilder,
    max: Duration,
    rng: StdRng,
}

impl RetryBackoff {
    /// Jitter from `seed` (a repeatable run), or a random seed.
    pub(crate) fn new(min: Duration, max: Duration, seed: Option<u64>) -> Self {
        Self {
            envelope: ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max)
                .with_factor(2.0)
                .without_max_times(),
            max,
            rng: match seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_rng(&mut rand::rng()),
            },
        }
    }

    /// The wait after the `attempts`-th failed attempt: uniform in [0, envelope].
    pub(crate) fn delay(&mut self, attempts: u32) -> Duration {
        let envelope = self
            .envelope
            .build()
            .nth((attempts as usize).saturating_sub(1))
            .unwrap_or(self.max);
        envelope.mul_f64(self.rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_envelope_capped_at_max() {
        let mut backoff =
            RetryBackoff::new(Duration::from_millis(100), Duration::from_secs(1), Some(7));
        for attempts in 1..=20u32 {
            let envelope = (Duration::from_millis(100) * 2u32.pow((attempts - 1).min(10)))
                .min(Duration::from_secs(1));
            assert!(backoff.delay(attempts) <= envelope, "attempt {attempts}");
        }
        let mut same =
            RetryBackoff::new(Duration::from_millis(100), Duration::from_secs(1), Some(7));
        let mut again =
            RetryBackoff::new(Duration::from_millis(100), Duration::from_secs(1), Some(7));
        assert_eq!(same.delay(3), again.delay(3), "a seed repeats");
    }
}
