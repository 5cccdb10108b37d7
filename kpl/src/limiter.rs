//! Per-shard token buckets for records/s and bytes/s, adaptive on throttling.
//!
//! The KPL's limiter ignores throttling; this one halves a shard's rate when Kinesis throttles
//! it and climbs back by 10 % of the configured rate per second without throttling.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{SHARD_BYTES_PER_SEC, SHARD_RECORDS_PER_SEC};

/// Both buckets of one shard.
#[derive(Debug, Clone)]
pub(crate) struct ShardLimiter {
    records: Bucket,
    bytes: Bucket,
    /// Fraction of the configured rate currently allowed, in (0, 1].
    factor: f64,
    last_throttle: Option<Instant>,
    /// When the rate was last halved.
    last_cut: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant, factor: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        // At most one second of burst, as a shard allows.
        self.tokens = (self.tokens + elapsed * self.rate * factor).min(self.rate * factor);
        self.updated = now;
    }

    /// Time until `amount` tokens are there.
    fn wait_for(&self, amount: f64, factor: f64) -> Duration {
        let missing = amount.min(self.rate * factor) - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / (self.rate * factor))
        }
    }
}

impl ShardLimiter {
    /// Buckets at `percent` % of a shard's write limits.
    pub(crate) fn new(percent: u32, now: Instant) -> Self {
        let share = f64::from(percent) / 100.0;
        Self {
            records: Bucket::new(SHARD_RECORDS_PER_SEC * share, now),
            bytes: Bucket::new(SHARD_BYTES_PER_SEC * share, now),
            factor: 1.0,
            last_throttle: None,
            last_cut: None,
        }
    }

    /// Takes one record of `bytes` if both buckets allow it now; otherwise says how long to wait.
    /// A record bigger than a bucket holds passes once the bucket is full, so it is never stuck.
    pub(crate) fn try_take(&mut self, bytes: usize, now: Instant) -> Result<(), Duration> {
        self.recover(now);
        self.records.refill(now, self.factor);
        self.bytes.refill(now, self.factor);
        let wait = self
            .records
            .wait_for(1.0, self.factor)
            .max(self.bytes.wait_for(bytes as f64, self.factor));
        if wait > Duration::ZERO {
            return Err(wait);
        }
        self.records.tokens -= 1.0;
        self.bytes.tokens -= bytes as f64;
        Ok(())
    }

    /// Kinesis throttled this shard in the answer to a call sent at `sent`: halve its rate
    /// (down to 5 % of the configured one), once per round of answers. Calls sent before the
    /// last halving were sent at the rate it already answered: with 24 calls in flight, 24
    /// throttled answers are one overload, not 24 (which would floor the rate at once).
    pub(crate) fn throttled(&mut self, sent: Instant, now: Instant) {
        self.recover(now);
        if self.last_cut.is_some_and(|cut| sent <= cut) {
            return;
        }
        self.factor = (self.factor / 2.0).max(0.05);
        self.records.tokens = self.records.tokens.min(0.0);
        self.bytes.tokens = self.bytes.tokens.min(0.0);
        self.last_throttle = Some(now);
        self.last_cut = Some(now);
    }

    fn recover(&mut self, now: Instant) {
        if let Some(since) = self.last_throttle {
            let quiet = now.saturating_duration_since(since).as_secs_f64();
            self.factor = (self.factor + 0.1 * quiet).min(1.0);
            self.last_throttle = (self.factor < 1.0).then_some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of 2,000 takes of `bytes` each succeed at `at`.
    fn takes(limiter: &mut ShardLimiter, bytes: usize, at: Instant) -> usize {
        (0..2_000)
            .filter(|_| limiter.try_take(bytes, at).is_ok())
            .count()
    }

    #[test]
    fn allows_the_configured_rate_then_waits() {
        let start = Instant::now();
        let mut limiter = ShardLimiter::new(100, start);
        let taken = takes(&mut limiter, 10, start);
        assert_eq!(taken, 1_000, "one second of burst at 1,000 records/s");
        let wait = limiter.try_take(10, start).expect_err("empty");
        assert!(wait <= Duration::from_millis(2), "{wait:?}");
        assert!(
            limiter
                .try_take(10, start + Duration::from_millis(2))
                .is_ok()
        );
    }

    #[test]
    fn bytes_limit_applies_and_big_records_still_pass() {
        let start = Instant::now();
        let mut limiter = ShardLimiter::new(100, start);
        assert!(limiter.try_take(1024 * 1024, start).is_ok());
        let wait = limiter
            .try_take(512 * 1024, start)
            .expect_err("bytes used up");
        assert!(wait >= Duration::from_millis(490), "{wait:?}");
        // Bigger than the bucket: passes once the bucket is full again.
        assert!(
            limiter
                .try_take(3 * 1024 * 1024, start + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn throttling_halves_the_rate_and_recovers() {
        let start = Instant::now();
        let mut limiter = ShardLimiter::new(100, start);
        limiter.throttled(start, start);
        // A call sent after that halving is a new round.
        let next = start + Duration::from_nanos(1);
        limiter.throttled(next, next);
        let one_second = start + Duration::from_secs(1);
        let taken = takes(&mut limiter, 1, one_second);
        assert!(
            (300..=400).contains(&taken),
            "about 35 % of 1,000 after recovering 1 s: {taken}"
        );
        let later = start + Duration::from_secs(30);
        let taken = takes(&mut limiter, 1, later);
        assert_eq!(taken, 1_000, "fully recovered");
    }

    /// Many calls in flight answered throttled: one halving for the round, not one per answer.
    #[test]
    fn a_round_of_throttled_answers_halves_the_rate_once() {
        let start = Instant::now();
        let mut limiter = ShardLimiter::new(100, start);
        let answered = start + Duration::from_millis(100);
        for call in 0..24 {
            // All sent before the first answer came.
            limiter.throttled(start, answered + Duration::from_millis(call));
        }
        let one_second = answered + Duration::from_secs(1);
        let taken = takes(&mut limiter, 1, one_second);
        assert!(
            (550..=650).contains(&taken),
            "one halving (50 %), recovering 10 % a second: {taken}"
        );
    }
}
