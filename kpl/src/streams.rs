//! The streams a producer writes to: the handles name them, the pipeline keeps one state per
//! stream. Each gets a small index, handed with every record instead of the name, and a
//! [`StreamShare`]: what it holds of the budget, so that with several streams one stuck stream
//! (throttled for long, deleted) cannot take the whole budget from the others.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::client::StreamId;

#[derive(Debug, Default)]
pub(crate) struct StreamRegistry {
    streams: Mutex<Vec<(Arc<StreamId>, Arc<StreamShare>)>>,
    /// How many streams are registered (read without the lock on every send).
    count: AtomicUsize,
}

impl StreamRegistry {
    /// The index of `stream` and its share, registering it on first use.
    pub(crate) fn index_of(&self, stream: &StreamId) -> (usize, Arc<StreamShare>) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        match streams.iter().position(|(s, _)| **s == *stream) {
            Some(index) => (index, streams[index].1.clone()),
            None => {
                let share = Arc::new(StreamShare::default());
                streams.push((Arc::new(stream.clone()), share.clone()));
                self.count.store(streams.len(), Relaxed);
                (streams.len() - 1, share)
            }
        }
    }

    /// The stream of `index`.
    pub(crate) fn get(&self, index: usize) -> Option<Arc<StreamId>> {
        self.entry(index).map(|(id, _)| id)
    }

    /// The stream of `index` and its share.
    pub(crate) fn entry(&self, index: usize) -> Option<(Arc<StreamId>, Arc<StreamShare>)> {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .cloned()
    }

    /// How many streams the producer has written to (or has handles for).
    pub(crate) fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// Wakes every sender waiting for its stream's share (the pipeline stopped).
    pub(crate) fn wake_all(&self) {
        for (_, share) in self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            share.released.notify_waiters();
        }
    }
}

/// The most one stream may hold of the budget while the producer has several streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShareLimit {
    pub(crate) records: usize,
    pub(crate) bytes: usize,
}

/// What one stream holds of the producer's budget: charged by its handles when a record is
/// queued, released by the pipeline when it is answered.
#[derive(Debug, Default)]
pub(crate) struct StreamShare {
    records: AtomicUsize,
    bytes: AtomicUsize,
    released: Notify,
    /// Senders of this stream waiting for room in its share.
    waiting: AtomicUsize,
}

impl StreamShare {
    /// A record of `bytes` (its budget charge) is queued for this stream.
    pub(crate) fn charge(&self, bytes: usize) {
        self.records.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    /// Records answered (or never queued): their charges go back, waiting senders look again.
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        if records == 0 && bytes == 0 {
            return;
        }
        // Never below zero, whatever the order of the updates.
        let _ = self
            .records
            .fetch_update(Relaxed, Relaxed, |held| Some(held.saturating_sub(records)));
        let _ = self
            .bytes
            .fetch_update(Relaxed, Relaxed, |held| Some(held.saturating_sub(bytes)));
        self.released.notify_waiters();
    }

    /// Whether one more record of `bytes` would take the stream over `limit` (a stream that
    /// holds nothing may always take one, however large).
    pub(crate) fn over(&self, limit: ShareLimit, bytes: usize) -> bool {
        let records = self.records.load(Relaxed);
        records > 0
            && (records + 1 > limit.records || self.bytes.load(Relaxed) + bytes > limit.bytes)
    }

    /// Whether the stream holds three quarters of `limit` or more: its senders wait (or soon
    /// will), so lingering records of it must go.
    pub(crate) fn pressed(&self, limit: ShareLimit) -> bool {
        self.waiting.load(Relaxed) > 0
            || self.records.load(Relaxed) * 4 >= limit.records * 3
            || self.bytes.load(Relaxed) * 4 >= limit.bytes * 3
    }

    /// Waits until a record of `bytes` fits under `limit`, or `gone()` says the pipeline
    /// stopped (then `false`); `waits` is called once when it has to wait (to tell the
    /// pipeline). Cancel-safe.
    pub(crate) async fn wait_for_room(
        &self,
        limit: ShareLimit,
        bytes: usize,
        mut shared_with_others: impl FnMut() -> bool,
        mut gone: impl FnMut() -> bool,
        waits: impl FnOnce(),
    ) -> bool {
        // The common path, without a wake-up registration: one stream, or room in the share.
        if !shared_with_others() || !self.over(limit, bytes) {
            return true;
        }
        let mut waits = Some(waits);
        let mut _waiting = None;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !shared_with_others() || !self.over(limit, bytes) {
                return true;
            }
            if gone() {
                return false;
            }
            if _waiting.is_none() {
                let (counted, first) = crate::budget::Waiting::start(&self.waiting);
                _waiting = Some(counted);
                if let Some(waits) = waits.take().filter(|_| first) {
                    waits();
                }
            }
            released.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_keep_their_index() {
        let registry = StreamRegistry::default();
        assert_eq!(registry.index_of(&"a".into()).0, 0);
        assert_eq!(registry.index_of(&"b".into()).0, 1);
        assert_eq!(registry.index_of(&"a".into()).0, 0);
        assert_eq!(registry.get(1).as_deref(), Some(&StreamId::from("b")));
        assert!(registry.get(2).is_none());
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn a_share_counts_what_its_stream_holds() {
        let share = StreamShare::default();
        let limit = ShareLimit {
            records: 4,
            bytes: 1_000,
        };
        assert!(
            !share.over(limit, 5_000),
            "an empty stream takes one, however large"
        );
        for _ in 0..3 {
            share.charge(100);
        }
        assert!(share.pressed(limit));
        assert!(!share.over(limit, 100));
        share.charge(100);
        assert!(share.over(limit, 100));
        share.release(2, 200);
        assert!(!share.over(limit, 100));
        share.release(10, 10_000);
        assert!(!share.pressed(limit), "never below zero");
    }
}
