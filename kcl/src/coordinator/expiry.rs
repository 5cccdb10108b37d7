//! [`ExpiryTracker`]: which leases have expired, judged from this worker's own scans.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::lease::Lease;

/// Remembers, per lease key, the `leaseCounter` last seen and the instant it was first seen at
/// that value, across this worker's scans of the lease table.
///
/// A lease is *expired* when its counter has not changed for more than the failover time: its
/// owner stopped renewing it. Only this worker's monotonic clock is involved, never a wall
/// clock, so clock skew between workers cannot expire a lease early. A lease first seen by this
/// worker counts from that scan: a new worker waits a full failover time before judging any
/// lease expired.
#[derive(Debug, Clone)]
pub(crate) struct ExpiryTracker {
    failover_time: Duration,
    seen: HashMap<String, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    counter: u64,
    since: Instant,
}

impl ExpiryTracker {
    /// A tracker that has seen nothing, judging expiry after `failover_time`.
    pub(crate) fn new(failover_time: Duration) -> Self {
        Self {
            failover_time,
            seen: HashMap::new(),
        }
    }

    /// Forgets every counter seen: the next scan counts from scratch. Called after a failed
    /// scan: while this worker could not read the table it could not see the owners renew
    /// either (during a DynamoDB outage nobody can), so standing still across the gap proves
    /// nothing, and the owners get a full failover time to renew once the table is back
    /// instead of losing their leases to whoever scans first.
    pub(crate) fn reset(&mut self) {
        self.seen.clear();
    }

    /// Records one scan made at `now`: a lease whose counter differs from the one remembered
    /// (or that was never seen) starts counting from `now`; leases missing from the scan are
    /// forgotten.
    pub(crate) fn observe(&mut self, leases: &[Lease], now: Instant) {
        let mut seen = HashMap::with_capacity(leases.len());
        for lease in leases {
            let since = match self.seen.get(&lease.lease_key) {
                Some(old) if old.counter == lease.lease_counter => old.since,
                _ => now,
            };
            seen.insert(
                lease.lease_key.clone(),
                Seen {
                    counter: lease.lease_counter,
                    since,
                },
            );
        }
        self.seen = seen;
    }

    /// How long the counter of `lease_key` has stood still as of `now`, or `None` for a lease
    /// the last scan did not include.
    pub(crate) fn idle(&self, lease_key: &str, now: Instant) -> Option<Duration> {
        self.seen
            .get(lease_key)
            .map(|seen| now.saturating_duration_since(seen.since))
    }

    /// The leases of `leases` (the last scan) that `worker_id` may take as expired, each with
    /// how long its counter has stood still:
    ///
    /// - held by another worker and idle for more than the failover time;
    /// - held by `worker_id` itself but not in `held` (a previous run of this worker, a lease
    ///   this worker stopped counting as held, or another process wrongly started with the
    ///   same id) and idle for more than the failover time, as any other worker's: taking
    ///   them earlier would take a lease the other process still delivers from.
    ///
    /// "Held by" is [`Lease::holder`]: during a handoff the old holder (`checkpointOwner`),
    /// who still renews the lease. Never listed: unowned leases (takeable anyway) and leases
    /// `worker_id` holds (`held`); a worker never treats its own held leases as expired.
    pub(crate) fn expired(
        &self,
        leases: &[Lease],
        worker_id: &str,
        held: &BTreeSet<String>,
        now: Instant,
    ) -> BTreeMap<String, Duration> {
        let mut expired = BTreeMap::new();
        for lease in leases {
            let Some(owner) = lease.holder() else {
                continue;
            };
            let Some(idle) = self.idle(&lease.lease_key, now) else {
                continue;
            };
            if owner == worker_id && held.contains(&lease.lease_key) {
                continue;
            }
            if idle > self.failover_time {
                expired.insert(lease.lease_key.clone(), idle);
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::clock::{Clock, ManualClock};
    use crate::lease::Checkpoint;

    const FAILOVER: Duration = Duration::from_secs(10);

    fn lease(key: &str, owner: Option<&str>, counter: u64) -> Lease {
        let mut lease = Lease::new(key, Checkpoint::TrimHorizon);
        lease.lease_owner = owner.map(str::to_owned);
        lease.lease_counter = counter;
        lease
    }

    /// A tracker of [`FAILOVER`] on a manual clock, judging for worker "w1".
    struct Judge {
        clock: ManualClock,
        tracker: ExpiryTracker,
    }

    impl Judge {
        fn new() -> Self {
            Self {
                clock: ManualClock::new(),
                tracker: ExpiryTracker::new(FAILOVER),
            }
        }

        /// A scan that found `leases`.
        fn observe(&mut self, leases: &[Lease]) {
            self.tracker.observe(leases, self.clock.now());
        }

        fn idle(&self, key: &str) -> Option<Duration> {
            self.tracker.idle(key, self.clock.now())
        }

        /// Asserts lease "a" of `leases` is not expired now, and is once the failover time and
        /// a millisecond passed without a change.
        fn assert_expires_after_failover(&mut self, leases: &[Lease]) {
            assert!(self.expired(leases, &[]).is_empty());
            self.clock.advance(FAILOVER + Duration::from_millis(1));
            self.observe(leases);
            assert_eq!(self.expired(leases, &[]), ["a"]);
        }

        /// The keys of `leases` w1, holding `held`, counts as expired now, in order.
        fn expired(&self, leases: &[Lease], held: &[&str]) -> Vec<String> {
            let held: BTreeSet<String> = held.iter().map(|key| (*key).to_owned()).collect();
            let expired = self.tracker.expired(leases, "w1", &held, self.clock.now());
            expired.into_keys().collect()
        }
    }

    /// Was the doc example of `ExpiryTracker` while it was public.
    #[test]
    fn another_worker_s_lease_idle_for_eleven_seconds_of_ten_is_expired() {
        let clock = ManualClock::new();
        let mut tracker = ExpiryTracker::new(Duration::from_secs(10));
        let mut lease = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
        lease.lease_owner = Some("worker-2".into());

        tracker.observe(std::slice::from_ref(&lease), clock.now());
        clock.advance(Duration::from_secs(11));
        tracker.observe(std::slice::from_ref(&lease), clock.now());
        let expired = tracker.expired(&[lease], "worker-1", &BTreeSet::new(), clock.now());
        assert_eq!(expired["shardId-000000000000"], Duration::from_secs(11));
    }

    #[test]
    fn a_counter_standing_still_longer_than_failover_expires() {
        let mut judge = Judge::new();
        let leases = [lease("a", Some("w2"), 5)];

        judge.observe(&leases);
        judge.clock.advance(FAILOVER);
        judge.observe(&leases);
        // Exactly the failover time is not "more than".
        assert!(judge.expired(&leases, &[]).is_empty());

        judge.clock.advance(Duration::from_millis(1));
        judge.observe(&leases);
        let expired = judge
            .tracker
            .expired(&leases, "w1", &BTreeSet::new(), judge.clock.now());
        assert_eq!(expired["a"], FAILOVER + Duration::from_millis(1));
    }

    #[test]
    fn a_moving_counter_never_expires() {
        let mut judge = Judge::new();
        for counter in 0..100 {
            let leases = [lease("a", Some("w2"), counter)];
            judge.observe(&leases);
            assert!(judge.expired(&leases, &[]).is_empty());
            // Renewed every 9 s: slower than the renew interval, still under the failover time.
            judge.clock.advance(Duration::from_secs(9));
        }
    }

    #[test]
    fn expiry_counts_from_the_first_scan_that_saw_the_counter() {
        let mut judge = Judge::new();
        // The lease last moved long ago, but this worker sees it for the first time now: it
        // does not trust anyone's clock, so it waits a full failover time.
        let leases = [lease("a", Some("w2"), 7)];
        judge.observe(&leases);
        assert_eq!(judge.idle("a"), Some(Duration::ZERO));
        judge.clock.advance(Duration::from_secs(6));
        judge.observe(&leases);
        assert!(judge.expired(&leases, &[]).is_empty());
        // A change resets the count.
        let moved = [lease("a", Some("w2"), 8)];
        judge.clock.advance(Duration::from_secs(6));
        judge.observe(&moved);
        assert_eq!(judge.idle("a"), Some(Duration::ZERO));
        judge.clock.advance(Duration::from_secs(11));
        assert_eq!(judge.expired(&moved, &[]), ["a"]);
    }

    #[test]
    fn missing_leases_are_forgotten_and_recreated_ones_start_over() {
        let mut judge = Judge::new();
        judge.observe(&[lease("a", Some("w2"), 0)]);
        judge.clock.advance(Duration::from_secs(20));
        judge.observe(&[]);
        assert_eq!(judge.idle("a"), None);
        // Deleted and created again with the same counter: a new lease to this worker.
        judge.observe(&[lease("a", Some("w2"), 0)]);
        assert_eq!(judge.idle("a"), Some(Duration::ZERO));
    }

    #[test]
    fn own_held_leases_never_expire_and_own_unheld_ones_expire_as_any_others() {
        let mut judge = Judge::new();
        let leases = [
            lease("held", Some("w1"), 3),
            lease("stale", Some("w1"), 4),
            lease("free", None, 9),
            lease("other", Some("w2"), 1),
        ];
        judge.observe(&leases);
        assert!(judge.expired(&leases, &["held"]).is_empty());
        judge.clock.advance(Duration::from_secs(60));
        judge.observe(&leases);
        // Unowned leases are not "expired" (they are takeable anyway); the held one never is.
        assert_eq!(judge.expired(&leases, &["held"]), ["other", "stale"]);
    }

    #[test]
    fn a_reset_gives_every_owner_a_full_failover_time_again() {
        let mut judge = Judge::new();
        let leases = [lease("a", Some("w2"), 5)];
        judge.observe(&leases);
        // The table was unreachable for a while (failed scans): the counter did not move, but
        // nobody could have moved it.
        judge.clock.advance(FAILOVER * 3);
        judge.tracker.reset();
        judge.observe(&leases);
        judge.assert_expires_after_failover(&leases);
    }

    #[test]
    fn during_a_handoff_the_old_holder_is_judged() {
        let mut judge = Judge::new();
        // w1 asked w2 for the lease: w1 is its owner, w2 still holds it.
        let mut asked = lease("a", Some("w1"), 5);
        asked.checkpoint_owner = Some("w2".into());
        let leases = [asked];
        judge.observe(&leases);
        // Not "w1's own lease that nobody renews" now; once the holder stopped renewing for
        // the failover time, expired like any other worker's lease.
        judge.assert_expires_after_failover(&leases);
    }

    #[test]
    fn leases_missing_from_the_last_scan_are_not_judged() {
        let judge = Judge::new();
        let leases = [lease("a", Some("w2"), 0)];
        judge.clock.advance(Duration::from_secs(60));
        assert!(judge.expired(&leases, &[]).is_empty());
    }
}
