//! The outstanding-records and -bytes budget that `send` waits on and the pipeline refills.
//!
//! A record's charge travels with it as plain numbers, not as semaphore permits: the pipeline
//! adds back everything it resolved in one pass with two atomic operations, instead of two
//! `Arc` clones and two locked releases per record.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, TryAcquireError};

/// Why a charge (or a place in the inbox) could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// At the limit (only from the `try_` forms, which do not wait).
    Full,
    /// The pipeline is gone: nothing will ever be released again.
    Closed,
}

#[derive(Debug)]
pub(crate) struct Budget {
    records: Semaphore,
    bytes: Semaphore,
    max_records: usize,
    max_bytes: usize,
    /// Senders waiting for room now: the surest sign the pipeline must send what lingers.
    waiting: AtomicUsize,
}

/// Counts a waiting sender while it waits (dropped: the wait ended or was cancelled).
#[derive(Debug)]
pub(crate) struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Counts one more waiter on `count`; true when it is the first (worth a nudge).
    pub(crate) fn start(count: &'a AtomicUsize) -> (Self, bool) {
        let before = count.fetch_add(1, Ordering::Relaxed);
        (Self(count), before == 0)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Budget {
    pub(crate) fn new(max_records: usize, max_bytes: usize) -> Self {
        Self {
            records: Semaphore::new(max_records),
            bytes: Semaphore::new(max_bytes),
            max_records,
            max_bytes,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Takes one record and `bytes`, waiting for room; `waits` is called once when it has to
    /// wait (to tell the pipeline). Cancel-safe: a dropped wait takes nothing.
    pub(crate) async fn charge(&self, bytes: u32, waits: impl FnOnce()) -> Result<(), Refused> {
        match self.try_charge(bytes) {
            Ok(()) => return Ok(()),
            Err(Refused::Closed) => return Err(Refused::Closed),
            Err(Refused::Full) => {}
        }
        let (_waiting, first) = Waiting::start(&self.waiting);
        if first {
            waits();
        }
        self.charge_waiting(bytes).await
    }

    async fn charge_waiting(&self, bytes: u32) -> Result<(), Refused> {
        let record = self.records.acquire().await.map_err(|_| Refused::Closed)?;
        let bytes = self
            .bytes
            .acquire_many(bytes)
            .await
            .map_err(|_| Refused::Closed)?;
        record.forget();
        bytes.forget();
        Ok(())
    }

    /// Takes one record and `bytes` if there is room now.
    pub(crate) fn try_charge(&self, bytes: u32) -> Result<(), Refused> {
        let refused = |error| match error {
            TryAcquireError::NoPermits => Refused::Full,
            TryAcquireError::Closed => Refused::Closed,
        };
        let record = self.records.try_acquire().map_err(refused)?;
        let bytes = self.bytes.try_acquire_many(bytes).map_err(refused)?;
        record.forget();
        bytes.forget();
        Ok(())
    }

    /// Gives back what resolved records were charged.
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        if records > 0 {
            self.records.add_permits(records);
        }
        if bytes > 0 {
            self.bytes.add_permits(bytes);
        }
    }

    /// Whether the pipeline is gone ([`close`](Self::close)d).
    pub(crate) fn is_closed(&self) -> bool {
        self.records.is_closed()
    }

    /// Wakes every waiting and later `charge` with [`Refused::Closed`].
    pub(crate) fn close(&self) {
        self.records.close();
        self.bytes.close();
    }

    /// Whether over three quarters of the records or bytes are taken: senders are (or soon
    /// will be) waiting, so holding records back to fill batches only stalls them.
    pub(crate) fn pressed(&self) -> bool {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            return true;
        }
        // Rounded up: a budget of 1-3 records is pressed when full (`max / 4` is 0 there, and
        // a full budget never counted, so a lingering record was never sent).
        self.records.available_permits() < self.max_records.div_ceil(4)
            || self.bytes.available_permits() < self.max_bytes.div_ceil(4)
    }

    /// Records charged and not yet released.
    pub(crate) fn outstanding_records(&self) -> usize {
        self.max_records
            .saturating_sub(self.records.available_permits())
    }
}

/// Charges resolved in one pipeline pass, released together at its end.
#[derive(Debug, Default)]
pub(crate) struct Released {
    pub(crate) records: usize,
    pub(crate) bytes: usize,
}

impl Released {
    pub(crate) fn add(&mut self, bytes: u32) {
        self.records += 1;
        self.bytes += bytes as usize;
    }

    pub(crate) fn release_to(&mut self, budget: &Budget) {
        budget.release(self.records, self.bytes);
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_wait_for_releases_and_fail_once_closed() {
        let budget = std::sync::Arc::new(Budget::new(2, 100));
        budget.charge(60, || {}).await.unwrap();
        assert_eq!(budget.try_charge(60), Err(Refused::Full));
        assert_eq!(budget.outstanding_records(), 1);

        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.charge(60, || {}).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut released = Released::default();
        released.add(60);
        released.release_to(&budget);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(budget.outstanding_records(), 1);

        budget.close();
        assert_eq!(budget.charge(1, || {}).await, Err(Refused::Closed));
        assert_eq!(budget.try_charge(1), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn a_cancelled_wait_takes_nothing() {
        let budget = Budget::new(1, 10);
        budget.charge(10, || {}).await.unwrap();
        // Waits on bytes while holding the record permit; cancelling must give that back.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(10), async {
            budget.records.add_permits(1);
            budget.charge(5, || {}).await
        })
        .await;
        assert!(waiting.is_err());
        assert_eq!(budget.records.available_permits(), 1);
    }
}
