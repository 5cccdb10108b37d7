//! The worker-wide memory budget for decoded batches: [`RecordsBudget`].
//!
//! Each shard may hold two decoded batches (the one its processor works on and the one read
//! ahead), and one GetRecords answer may decode to more than 10 MiB, so a worker catching up
//! on many shards would otherwise need shards x 2 x 10 MiB (20 GiB for 1,000 shards). The
//! budget bounds the bytes of every batch of the worker that is read, waiting or being
//! processed, at once:
//!
//! - a reader that is behind (its last answer was not caught up, or it has not read yet)
//!   reserves the most an answer may decode to ([`Reader::before_read`]) before it calls, and
//!   waits while the budget has no room for it (first come, first served, so a large
//!   reservation is not starved by small ones);
//! - once the answer is decoded, the charge becomes what the batch actually holds
//!   ([`estimate`]) and the rest goes back at once ([`Reader::after_read`]);
//! - the charge stays until the processor is done with the batch (its `process_records`
//!   returned), and goes back when the [`Charge`] is dropped;
//! - a reader at the tip (its last answer was caught up) does not reserve, so it is never
//!   held back: at the tip an answer holds at most what the shard received since the last
//!   call (a shard takes 1 MiB/s of writes). Its batch is charged all the same, which holds
//!   back the readers that are behind;
//! - a reservation larger than the whole budget is cut to the budget: it waits until nothing
//!   else is charged, then goes alone. What a batch decodes to beyond its reservation (an
//!   answer larger than the budget, an estimate exceeded) is charged too, as a debt that the
//!   next charges given back pay first, so no reader is let in until the worker is back under
//!   the budget. No shard can be stuck: the budget always lets one batch through.

use std::mem::size_of;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use aggregation_proto::DeaggregatedRecord;
use tokio::sync::Semaphore;

use super::types::ShardBatch;

/// The default worker-wide budget: 256 MiB, about twenty full GetRecords answers at once.
pub const DEFAULT_BATCH_MEMORY_BUDGET: NonZeroUsize = match NonZeroUsize::new(256 << 20) {
    Some(bytes) => bytes,
    None => NonZeroUsize::MIN,
};

/// The most data one GetRecords answer carries (the service's limit).
pub(crate) const MAX_ANSWER_BYTES: usize = 10 << 20;

/// What one subscription event carries at most in practice: what a shard sends in about a
/// second at the 2 MiB/s fan-out rate. An event beyond it is charged as a debt.
pub(crate) const MAX_EVENT_BYTES: usize = 2 << 20;

/// What a Kinesis record costs besides its data: its shared source (partition key, sequence
/// number, arrival time, the reference count) and its share of the batch's vectors.
const KINESIS_RECORD_OVERHEAD: usize = 320;

/// The bytes a decoded batch holds: its Kinesis records' data (sub-records share it), plus
/// what each Kinesis record and each user record costs besides.
pub(crate) fn estimate(data_bytes: usize, kinesis_records: usize, user_records: usize) -> usize {
    data_bytes
        .saturating_add(kinesis_records.saturating_mul(KINESIS_RECORD_OVERHEAD))
        .saturating_add(user_records.saturating_mul(size_of::<DeaggregatedRecord>()))
}

/// The bytes `batch` holds (see [`estimate`]).
pub(crate) fn batch_bytes(batch: &ShardBatch) -> usize {
    estimate(batch.bytes, batch.kinesis_records, batch.records.len())
}

/// The worker-wide budget (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct RecordsBudget {
    limit: usize,
    /// One permit per byte free; the first waiter is served first.
    free: Semaphore,
    /// Bytes charged without permits (beyond a reservation, with none free): paid back first.
    debt: Mutex<usize>,
    charged: AtomicUsize,
    gauge: Option<metrics::Gauge>,
}

impl RecordsBudget {
    /// A budget of `limit` bytes, published on `gauge` (bytes charged now) if given.
    pub(crate) fn new(limit: NonZeroUsize, gauge: Option<metrics::Gauge>) -> Arc<Self> {
        let limit = limit.get().min(Semaphore::MAX_PERMITS);
        Arc::new(Self {
            limit,
            free: Semaphore::new(limit),
            debt: Mutex::new(0),
            charged: AtomicUsize::new(0),
            gauge,
        })
    }

    /// Waits until `bytes` (at most the whole budget) are free, and charges them.
    ///
    /// # Cancel safety
    /// Cancel safe: a reservation dropped while waiting charges nothing.
    pub(crate) async fn reserve(self: &Arc<Self>, bytes: usize) -> Charge {
        let bytes = bytes
            .min(self.limit)
            .min(usize::try_from(u32::MAX).unwrap_or(usize::MAX));
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        match self.free.acquire_many(permits).await {
            Ok(permit) => permit.forget(),
            // Never closed: the semaphore lives as long as the budget.
            Err(_) => return Charge::none(),
        }
        self.add_charged(bytes);
        Charge {
            budget: Some(Arc::clone(self)),
            bytes,
        }
    }

    /// A charge of nothing yet on this budget, to settle once the batch is known.
    pub(crate) fn unreserved(self: &Arc<Self>) -> Charge {
        Charge {
            budget: Some(Arc::clone(self)),
            bytes: 0,
        }
    }

    /// Bytes charged now (reservations and batches).
    #[cfg(test)]
    pub(crate) fn charged(&self) -> usize {
        self.charged.load(Ordering::Relaxed)
    }

    fn add_charged(&self, bytes: usize) {
        let now = self.charged.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.publish(now);
    }

    fn publish(&self, now: usize) {
        if let Some(gauge) = &self.gauge {
            gauge.set(now as f64);
        }
    }

    /// Charges `extra` more: free permits first, a debt for the rest.
    fn grow(&self, mut extra: usize) {
        let total = extra;
        let mut debt = self.debt.lock().unwrap_or_else(PoisonError::into_inner);
        // Permits may be taken by a reservation between the look and the take: look again.
        for _ in 0..4 {
            let take = self.free.available_permits().min(extra);
            let Ok(permits) = u32::try_from(take) else {
                break;
            };
            if take == 0 {
                break;
            }
            if let Ok(permit) = self.free.try_acquire_many(permits) {
                permit.forget();
                extra -= take;
            }
        }
        *debt += extra;
        drop(debt);
        self.add_charged(total);
    }

    /// Gives `bytes` back: the debt first, then permits for the waiting readers.
    fn give_back(&self, bytes: usize) {
        let mut debt = self.debt.lock().unwrap_or_else(PoisonError::into_inner);
        let paid = bytes.min(*debt);
        *debt -= paid;
        drop(debt);
        self.free.add_permits(bytes - paid);
        let now = self.charged.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        self.publish(now);
    }
}

/// Bytes charged to a [`RecordsBudget`], given back when dropped.
#[derive(Debug, Default)]
pub(crate) struct Charge {
    budget: Option<Arc<RecordsBudget>>,
    bytes: usize,
}

impl Charge {
    /// No budget: nothing charged.
    pub(crate) fn none() -> Self {
        Self::default()
    }

    /// The bytes charged.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes the charge `bytes`: the rest of a reservation goes back at once, more is
    /// charged (as a debt if the budget has no room left).
    pub(crate) fn settle(&mut self, bytes: usize) {
        let Some(budget) = &self.budget else {
            return;
        };
        if bytes < self.bytes {
            budget.give_back(self.bytes - bytes);
        } else if bytes > self.bytes {
            budget.grow(bytes - self.bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget
            && self.bytes > 0
        {
            budget.give_back(self.bytes);
        }
    }
}

/// A batch with its charge: the charge goes back when the processor is done with the batch.
#[derive(Debug, Default)]
pub(crate) struct Charged {
    pub(crate) batch: ShardBatch,
    pub(crate) charge: Charge,
}

impl Charged {
    /// A batch charged nothing (no budget, or nothing read).
    pub(crate) fn free(batch: ShardBatch) -> Self {
        Self {
            batch,
            charge: Charge::none(),
        }
    }
}

/// One shard reader's use of the budget: reserves before a read while behind, charges what
/// each read decoded to.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    budget: Arc<RecordsBudget>,
    /// What to reserve while behind: the most one read may decode to.
    ceiling: usize,
    /// Whether the last read was caught up (nothing is reserved then).
    at_tip: bool,
}

impl Reader {
    /// A reader of `budget` whose reads decode to at most about `ceiling` bytes.
    pub(crate) fn new(budget: Arc<RecordsBudget>, ceiling: usize) -> Self {
        Self {
            budget,
            ceiling,
            at_tip: false,
        }
    }

    /// The charge to read with: the ceiling reserved while behind (waits for room), nothing
    /// yet at the tip.
    ///
    /// # Cancel safety
    /// Cancel safe (see [`RecordsBudget::reserve`]).
    pub(crate) async fn before_read(&self) -> Charge {
        if self.at_tip {
            self.budget.unreserved()
        } else {
            self.budget.reserve(self.ceiling).await
        }
    }

    /// Settles `charge` to what `batch` holds; `caught_up` says whether the next read
    /// reserves.
    pub(crate) fn after_read(&mut self, charge: &mut Charge, batch: &ShardBatch, caught_up: bool) {
        charge.settle(batch_bytes(batch));
        self.at_tip = caught_up;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> Arc<RecordsBudget> {
        RecordsBudget::new(NonZeroUsize::new(limit).unwrap(), None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_waits_for_room_and_the_rest_goes_back_at_once() {
        let budget = budget(100);
        let mut first = budget.reserve(80).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(50).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // The answer was small: the rest of the reservation goes back and lets the next in.
        first.settle(30);
        let second = waiting.await.unwrap();
        assert_eq!(budget.charged(), 80);
        drop((first, second));
        assert_eq!(budget.charged(), 0);
        assert_eq!(budget.free.available_permits(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_larger_than_the_budget_goes_alone_and_its_debt_is_paid_first() {
        let budget = budget(100);
        // Cut to the whole budget, then charged what it decoded to.
        let mut big = budget.reserve(1_000).await;
        assert_eq!(big.bytes(), 100);
        big.settle(250);
        assert_eq!(budget.charged(), 250);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(10).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // A charge at the tip grows the debt instead of taking room that is not there.
        let mut tip = budget.unreserved();
        tip.settle(5);
        drop(big);
        let small = waiting.await.unwrap();
        assert_eq!(budget.charged(), 15);
        drop((small, tip));
        assert_eq!(budget.charged(), 0);
        assert_eq!(budget.free.available_permits(), 100);
        assert_eq!(*budget.debt.lock().unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_reserves_only_while_behind() {
        let budget = budget(100);
        let mut reader = Reader::new(budget.clone(), 60);
        let mut charge = reader.before_read().await;
        assert_eq!(budget.charged(), 60);
        let batch = ShardBatch {
            bytes: 10,
            ..ShardBatch::default()
        };
        reader.after_read(&mut charge, &batch, true);
        assert_eq!(budget.charged(), 10);
        // At the tip: nothing reserved, even with no room left.
        let _hog = budget.reserve(90).await;
        let tip = reader.before_read().await;
        assert_eq!(tip.bytes(), 0);
    }
}
