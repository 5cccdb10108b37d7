//! The shard-map refresh of one stream, as an explicit state with demand levels.
//!
//! Anything that shows the map is stale (a put landed on an unexpected shard, a hash key no
//! shard owns) raises the *demand*. A refresh remembers the demand it started at and, when it
//! ends, satisfies only that level: a refresh that started before a reshard and ended after the
//! misroute that revealed it answers the older question, so another one starts at once, and the
//! hold that the misroute put on dispatch stays until a refresh that started after it ends.
//! Failures back off from 1 s by 1.5x up to 30 s; a refresh is bounded by the ListShards timeout.

use std::time::Duration;

use tokio::time::Instant;

use super::lanes::later;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Misses of the map close together share one refresh.
const COALESCE: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Refresh {
    interval: Duration,
    /// Raised by every sign that the map is stale.
    demand: u64,
    /// The demand level the installed map answers.
    satisfied: u64,
    /// The demand level the running refresh started at.
    running: Option<u64>,
    next_due: Instant,
    backoff: Duration,
    failures: u32,
    /// Parked: due only on demand.
    parked: bool,
}

/// What a finished refresh means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// The map it brought answers every demand so far.
    Current,
    /// It started before the latest demand: install it, but another refresh is due at once.
    Outdated,
    /// It failed; the next try is due after the backoff.
    Failed,
}

impl Refresh {
    /// A refresh every `interval`; the first one is due at `first`.
    pub(crate) fn new(interval: Duration, first: Instant) -> Self {
        Self {
            interval,
            demand: 0,
            satisfied: 0,
            running: None,
            next_due: first,
            backoff: FIRST_BACKOFF,
            failures: 0,
            parked: false,
        }
    }

    /// The map is known stale: raises the demand and brings the next refresh forward.
    /// Returns the demand level that a refresh must reach.
    pub(crate) fn demand(&mut self, now: Instant, at_once: bool) -> u64 {
        self.demand += 1;
        let due = if at_once { now } else { later(now, COALESCE) };
        if self.running.is_none() && (self.failures == 0 || self.parked) {
            self.next_due = self.next_due.min(due);
        }
        self.parked = false;
        self.demand
    }

    /// The stream does not exist: no periodic refresh until something asks for one (a record
    /// for it with no map to route it). A deleted stream is not listed every half minute for
    /// the producer's lifetime.
    pub(crate) fn park(&mut self, now: Instant) {
        self.parked = true;
        self.next_due = later(now, Duration::MAX);
    }

    /// Whether a refresh should start now.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.running.is_none() && now >= self.next_due
    }

    /// When the next refresh is due (`None` while one runs).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.running.is_none().then_some(self.next_due)
    }

    /// A refresh starts; returns the level it answers.
    pub(crate) fn start(&mut self) -> u64 {
        self.running = Some(self.demand);
        self.demand
    }

    /// The refresh that started at `level` ended.
    pub(crate) fn finish(&mut self, level: u64, succeeded: bool, now: Instant) -> Finished {
        if self.running == Some(level) {
            self.running = None;
        }
        if !succeeded {
            self.failures += 1;
            self.next_due = later(now, self.backoff);
            self.backoff = self.backoff.mul_f64(1.5).min(MAX_BACKOFF);
            return Finished::Failed;
        }
        self.failures = 0;
        self.backoff = FIRST_BACKOFF;
        self.satisfied = self.satisfied.max(level);
        if self.demand > level {
            self.next_due = now;
            Finished::Outdated
        } else {
            self.next_due = later(now, self.interval);
            Finished::Current
        }
    }

    /// Whether the installed map answers demand level `level`.
    pub(crate) fn satisfies(&self, level: u64) -> bool {
        self.satisfied >= level
    }

    /// Whether it waits for demand (see [`park`](Self::park)).
    pub(crate) fn is_parked(&self) -> bool {
        self.parked
    }

    /// Failed refreshes in a row.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_parked_refresh_waits_for_demand() {
        let start = Instant::now();
        let mut refresh = Refresh::new(Duration::from_secs(60), start);
        let level = refresh.start();
        refresh.finish(level, false, start);
        refresh.park(start);
        tokio::time::advance(Duration::from_secs(3_600)).await;
        assert!(
            !refresh.due(Instant::now()),
            "no periodic refresh of a missing stream"
        );
        refresh.demand(Instant::now(), true);
        assert!(refresh.due(Instant::now()), "a record for it asks again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_that_started_before_the_misroute_is_not_current() {
        let start = Instant::now();
        let mut refresh = Refresh::new(Duration::from_secs(60), start + Duration::from_secs(60));
        assert!(!refresh.due(start));
        // A periodic refresh starts...
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        assert!(refresh.due(now));
        let periodic = refresh.start();
        // ... a reshard happens, a put lands elsewhere while it runs ...
        let needed = refresh.demand(now, true);
        assert!(!refresh.due(now), "one at a time");
        // ... and it ends with the old map: not taken as current.
        assert_eq!(refresh.finish(periodic, true, now), Finished::Outdated);
        assert!(!refresh.satisfies(needed));
        assert!(refresh.due(now), "another one at once");
        let next = refresh.start();
        assert_eq!(refresh.finish(next, true, now), Finished::Current);
        assert!(refresh.satisfies(needed));
        assert_eq!(refresh.next_due(), Some(now + Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_a_success_resets() {
        let now = Instant::now();
        let mut refresh = Refresh::new(Duration::MAX, now);
        let mut waits = Vec::new();
        for _ in 0..12 {
            let level = refresh.start();
            assert_eq!(refresh.finish(level, false, now), Finished::Failed);
            waits.push(refresh.next_due().unwrap() - now);
        }
        assert_eq!(waits[0], Duration::from_secs(1));
        assert_eq!(waits[1], Duration::from_millis(1500));
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);
        // A demand during the backoff does not skip it.
        refresh.demand(now, true);
        assert!(!refresh.due(now));
        let level = refresh.start();
        assert_eq!(refresh.finish(level, true, now), Finished::Current);
        assert_eq!(refresh.failures(), 0);
        // Duration::MAX: no periodic refresh, never an overflow.
        assert!(refresh.next_due().unwrap() > now + Duration::from_secs(86_400 * 365));
    }

    #[tokio::test(start_paused = true)]
    async fn misses_close_together_share_one_refresh() {
        let now = Instant::now();
        let mut refresh = Refresh::new(Duration::from_secs(60), now + Duration::from_secs(60));
        refresh.demand(now, false);
        refresh.demand(now, false);
        assert_eq!(refresh.next_due(), Some(now + COALESCE));
    }
}
