//! The pipeline's inbox: records handed over in batches, its depth kept short.
//!
//! The budget bounds memory; the inbox only keeps the records the pipeline reads recent (in
//! cache): with the whole budget queued ahead of a busy pipeline, throughput fell by a quarter.
//! Senders push onto a `Vec` under a mutex that only they and, once per batch, the pipeline
//! touch; the pipeline swaps the whole `Vec` out with one lock (and hands its emptied one back,
//! so nothing is allocated). A channel would instead share counters that both sides write for
//! every record. A sender takes a place with one compare-and-swap on a counter the pipeline
//! gives back per batch, and waits (on a [`Notify`]) only while the inbox is full.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aggregation_proto::UserRecord;
use tokio::sync::Notify;

use crate::budget::Refused;
use crate::pipeline::{Command, Incoming};

#[derive(Debug)]
struct Shared {
    /// Records queued and not yet taken, plus places taken and not yet used.
    queued: AtomicUsize,
    limit: usize,
    room: Notify,
    /// The receiver closed the inbox (a fast look; the queue's own flag decides).
    closed: AtomicBool,
    queue: Mutex<Queue>,
    /// Something was queued while the queue was empty.
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    commands: Vec<Command>,
    /// The sender is gone: once empty, the queue stays empty.
    senders_gone: bool,
    /// The receiver took what was left and reads no more: pushes are refused. Set and checked
    /// under the lock, so no command can slip in after the last take and be lost.
    closed: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("commands", &self.commands.len())
            .field("senders_gone", &self.senders_gone)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Shared {
    fn try_take(&self) -> bool {
        let mut queued = self.queued.load(Ordering::Relaxed);
        while queued < self.limit {
            match self.queued.compare_exchange_weak(
                queued,
                queued + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => queued = now,
            }
        }
        false
    }

    fn give_back(&self, places: usize) {
        let before = self.queued.fetch_sub(places, Ordering::AcqRel);
        if before >= self.limit {
            // Someone may be waiting for room.
            self.room.notify_waiters();
        }
    }

    /// The queue, even if a thread panicked holding it: a `Vec` push or swap cannot leave it
    /// half-changed.
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` as a command; gives it back if the receiver closed the inbox.
    fn push<T>(&self, item: T, command: impl FnOnce(T) -> Command) -> Result<(), T> {
        let was_empty = {
            let mut queue = self.queue();
            if queue.closed {
                return Err(item);
            }
            queue.commands.push(command(item));
            queue.commands.len() == 1
        };
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }
}

/// A queue of at most `limit` records (flushes and shutdowns are never held back).
pub(crate) fn inbox(limit: usize) -> (InboxSender, InboxReceiver) {
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        limit,
        room: Notify::new(),
        closed: AtomicBool::new(false),
        queue: Mutex::new(Queue::default()),
        ready: Notify::new(),
    });
    (
        InboxSender {
            shared: shared.clone(),
        },
        InboxReceiver { shared },
    )
}

/// The one sending side (the producer handles share it).
#[derive(Debug)]
pub(crate) struct InboxSender {
    shared: Arc<Shared>,
}

impl InboxSender {
    /// Waits for room for one record. Cancel-safe: a dropped wait takes nothing.
    pub(crate) async fn place(&self) -> Result<Place<'_>, Refused> {
        loop {
            match self.try_place() {
                Err(Refused::Full) => {}
                taken => return taken,
            }
            let room = self.shared.room.notified();
            tokio::pin!(room);
            // Registered before the second look, so a give-back in between is not missed.
            room.as_mut().enable();
            match self.try_place() {
                Err(Refused::Full) => room.await,
                taken => return taken,
            }
        }
    }

    /// Room for one record now, or [`Refused::Full`].
    pub(crate) fn try_place(&self) -> Result<Place<'_>, Refused> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        if self.shared.try_take() {
            Ok(Place {
                sender: self,
                used: false,
            })
        } else {
            Err(Refused::Full)
        }
    }

    /// Sends a command that is not a record (flush, shutdown): never held back. False if the
    /// pipeline is gone.
    pub(crate) fn send_control(&self, command: Command) -> bool {
        self.shared.push(command, |command| command).is_ok()
    }
}

impl Drop for InboxSender {
    /// The pipeline must learn that no more records will come.
    fn drop(&mut self) {
        self.shared.queue().senders_gone = true;
        self.shared.ready.notify_one();
    }
}

/// Room for one record in the inbox; given back if dropped unused.
#[derive(Debug)]
pub(crate) struct Place<'a> {
    sender: &'a InboxSender,
    used: bool,
}

impl Place<'_> {
    /// Sends the record into the place taken. Gives the place and the record back if the
    /// pipeline is gone.
    pub(crate) fn send(mut self, incoming: Incoming) -> Result<(), UserRecord> {
        self.used = true;
        self.sender
            .shared
            .push(incoming, Command::Record)
            .map_err(|incoming| {
                self.sender.shared.give_back(1);
                incoming.record
            })
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.sender.shared.give_back(1);
        }
    }
}

/// The pipeline's side.
#[derive(Debug)]
pub(crate) struct InboxReceiver {
    shared: Arc<Shared>,
}

impl InboxReceiver {
    /// Waits for commands and moves all queued ones into `into` (which should be empty; its
    /// capacity is handed to the senders). False once the senders are gone and nothing is left.
    /// Cancel-safe.
    pub(crate) async fn recv_batch(&mut self, into: &mut Vec<Command>) -> bool {
        loop {
            match self.try_recv_batch(into) {
                Taken::Some => return true,
                Taken::Finished => return false,
                Taken::Nothing => {}
            }
            // A push into the empty queue stores a permit if nobody waits yet: none is lost.
            self.shared.ready.notified().await;
        }
    }

    /// Moves all queued commands into `into`, without waiting.
    pub(crate) fn try_recv_batch(&mut self, into: &mut Vec<Command>) -> Taken {
        let senders_gone = {
            let mut queue = self.shared.queue();
            if !queue.commands.is_empty() {
                std::mem::swap(&mut queue.commands, into);
                None
            } else {
                Some(queue.senders_gone)
            }
        };
        match senders_gone {
            None => {
                let records = into
                    .iter()
                    .filter(|c| matches!(c, Command::Record(_)))
                    .count();
                if records > 0 {
                    self.shared.give_back(records);
                }
                Taken::Some
            }
            Some(true) => Taken::Finished,
            Some(false) => Taken::Nothing,
        }
    }
}

impl InboxReceiver {
    /// Refuses every later push and moves what is still queued into `into`, so the pipeline
    /// can answer it instead of dropping it.
    pub(crate) fn close(&mut self, into: &mut Vec<Command>) {
        {
            let mut queue = self.shared.queue();
            queue.closed = true;
            into.append(&mut queue.commands);
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.room.notify_waiters();
    }
}

/// What [`InboxReceiver::try_recv_batch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    Some,
    Nothing,
    /// The senders are gone and everything was taken.
    Finished,
}

impl Drop for InboxReceiver {
    /// Senders waiting for room must learn that none will come (if the pipeline did not close
    /// the inbox itself, its runtime is going away: what is queued is dropped, and its
    /// receipts resolve to `ShuttingDown`).
    fn drop(&mut self) {
        self.close(&mut Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drops the last sender (the test's `Arc`).
    fn waiting_sender_free(tx: Arc<InboxSender>) -> Option<InboxSender> {
        Arc::into_inner(tx)
    }

    fn flush() -> Command {
        Command::Flush(tokio::sync::oneshot::channel().0)
    }

    #[tokio::test]
    async fn senders_wait_for_room_and_wake_when_the_pipeline_takes() {
        let (tx, mut rx) = inbox(2);
        let tx = Arc::new(tx);
        let first = tx.try_place().unwrap();
        let second = tx.try_place().unwrap();
        assert_eq!(tx.try_place().err(), Some(Refused::Full));
        // An unused place goes back.
        drop(second);
        let second = tx.try_place().unwrap();
        first.send(a_record()).unwrap();
        second.send(a_record()).unwrap();

        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.place().await.map(|place| place.send(a_record()).is_ok()) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the inbox is full");
        let mut batch = Vec::new();
        assert_eq!(rx.try_recv_batch(&mut batch), Taken::Some);
        assert_eq!(batch.len(), 2);
        batch.clear();
        assert_eq!(waiting.await.unwrap(), Ok(true));
        // Control commands are never held back, and do not count as records.
        assert!(tx.send_control(flush()));
        assert!(rx.recv_batch(&mut batch).await);
        assert_eq!(batch.len(), 2);
        batch.clear();
        assert!(tx.try_place().is_ok());
        assert_eq!(rx.try_recv_batch(&mut batch), Taken::Nothing);
        // The senders gone and everything taken: finished.
        drop(waiting_sender_free(tx));
        assert!(!rx.recv_batch(&mut batch).await);
    }

    #[tokio::test]
    async fn waiting_senders_learn_that_the_pipeline_is_gone() {
        let (tx, rx) = inbox(1);
        let tx = Arc::new(tx);
        let held = tx.try_place().unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.place().await.err() }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(waiting.await.unwrap(), Some(Refused::Closed));
        assert!(held.send(a_record()).is_err());
    }

    #[tokio::test]
    async fn closing_hands_back_what_is_queued_and_refuses_the_rest() {
        let (tx, mut rx) = inbox(4);
        tx.try_place().unwrap().send(a_record()).unwrap();
        assert!(tx.send_control(flush()));
        // Taken before the close, used after it: as a `send` racing `shutdown`.
        let late = tx.try_place().unwrap();
        let mut left = Vec::new();
        rx.close(&mut left);
        assert_eq!(
            left.len(),
            2,
            "the queued record and flush come back to be answered"
        );
        let refused = late
            .send(a_record())
            .expect_err("refused, not queued and lost");
        assert_eq!(refused.partition_key, "k");
        assert!(!tx.send_control(flush()));
        assert_eq!(tx.try_place().err(), Some(Refused::Closed));
    }

    /// A record command without a producer around it.
    fn a_record() -> Incoming {
        Incoming {
            record: aggregation_proto::UserRecord::new("k", "v"),
            hash_key: 0,
            reply: None,
            charge: 1,
            stream: 0,
        }
    }
}
