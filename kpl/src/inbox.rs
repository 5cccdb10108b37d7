//! The pipeline's inbox: an unbounded channel whose depth a counter keeps short.
//!
//! The budget bounds memory; the inbox only keeps the records the pipeline reads recent (in
//! cache): with the whole budget queued ahead of a busy pipeline, throughput fell by a quarter.
//! A bounded tokio channel does this with a semaphore, whose release takes a lock for every
//! record received; here a sender takes a place with one atomic add, and the pipeline gives back
//! every place it emptied in one subtraction per burst. Senders wait (on a [`Notify`]) only
//! while the inbox is full.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};

use aggregation_proto::UserRecord;

use crate::pipeline::{Command, Incoming};

/// Places given back at least this often while the pipeline drains a burst.
const RELEASE_EVERY: usize = 256;

/// Why no place could be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoPlace {
    /// The inbox is full (only from [`InboxSender::try_place`]).
    Full,
    /// The pipeline is gone.
    Closed,
}

#[derive(Debug)]
struct Gate {
    /// Records sent and not yet received, plus places taken and not yet used.
    queued: AtomicUsize,
    limit: usize,
    room: Notify,
    closed: AtomicBool,
}

impl Gate {
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
}

/// A channel of at most `limit` records (flushes and shutdowns are never held back).
pub(crate) fn inbox(limit: usize) -> (InboxSender, InboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate {
        queued: AtomicUsize::new(0),
        limit,
        room: Notify::new(),
        closed: AtomicBool::new(false),
    });
    (
        InboxSender {
            tx,
            gate: gate.clone(),
        },
        InboxReceiver { rx, gate, taken: 0 },
    )
}

#[derive(Debug)]
pub(crate) struct InboxSender {
    tx: mpsc::UnboundedSender<Command>,
    gate: Arc<Gate>,
}

impl InboxSender {
    /// Waits for room for one record. Cancel-safe: a dropped wait takes nothing.
    pub(crate) async fn place(&self) -> Result<Place<'_>, NoPlace> {
        loop {
            match self.try_place() {
                Err(NoPlace::Full) => {}
                taken => return taken,
            }
            let room = self.gate.room.notified();
            tokio::pin!(room);
            // Registered before the second look, so a give-back in between is not missed.
            room.as_mut().enable();
            match self.try_place() {
                Err(NoPlace::Full) => room.await,
                taken => return taken,
            }
        }
    }

    /// Room for one record now, or [`NoPlace::Full`].
    pub(crate) fn try_place(&self) -> Result<Place<'_>, NoPlace> {
        // The receiver sets `closed` when it goes (cheaper to read than the channel's state,
        // which the receiver writes for every record).
        if self.gate.closed.load(Ordering::Acquire) {
            return Err(NoPlace::Closed);
        }
        if self.gate.try_take() {
            Ok(Place {
                sender: self,
                used: false,
            })
        } else {
            Err(NoPlace::Full)
        }
    }

    /// Sends a command that is not a record (flush, shutdown): never held back. False if the
    /// pipeline is gone.
    pub(crate) fn send_control(&self, command: Command) -> bool {
        self.tx.send(command).is_ok()
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
        match self.sender.tx.send(Command::Record(incoming)) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.sender.gate.give_back(1);
                match error.0 {
                    Command::Record(incoming) => Err(incoming.record),
                    // Only records go through places.
                    _ => Err(UserRecord::new("-", bytes::Bytes::new())),
                }
            }
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.sender.gate.give_back(1);
        }
    }
}

#[derive(Debug)]
pub(crate) struct InboxReceiver {
    rx: mpsc::UnboundedReceiver<Command>,
    gate: Arc<Gate>,
    /// Records received whose places are not yet given back.
    taken: usize,
}

impl InboxReceiver {
    pub(crate) async fn recv(&mut self) -> Option<Command> {
        let command = self.rx.recv().await;
        self.count(command.as_ref());
        command
    }

    pub(crate) fn try_recv(&mut self) -> Option<Command> {
        let command = self.rx.try_recv().ok();
        self.count(command.as_ref());
        command
    }

    fn count(&mut self, command: Option<&Command>) {
        if matches!(command, Some(Command::Record(_))) {
            self.taken += 1;
            // Often enough that a busy sender rarely finds the inbox full and parks.
            if self.taken == RELEASE_EVERY {
                self.release();
            }
        }
    }

    /// Gives back the places of the records received since the last call.
    pub(crate) fn release(&mut self) {
        if self.taken > 0 {
            self.gate.give_back(std::mem::take(&mut self.taken));
        }
    }
}

impl Drop for InboxReceiver {
    /// Senders waiting for room must learn that none will come.
    fn drop(&mut self) {
        self.gate.closed.store(true, Ordering::Release);
        self.gate.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flush() -> Command {
        Command::Flush(tokio::sync::oneshot::channel().0)
    }

    #[tokio::test]
    async fn senders_wait_for_room_and_wake_when_the_pipeline_takes() {
        let (tx, mut rx) = inbox(2);
        let tx = Arc::new(tx);
        let first = tx.try_place().unwrap();
        let second = tx.try_place().unwrap();
        assert_eq!(tx.try_place().err(), Some(NoPlace::Full));
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
        assert!(rx.try_recv().is_some());
        assert!(rx.try_recv().is_some());
        rx.release();
        assert_eq!(waiting.await.unwrap(), Ok(true));
        // Control commands are never held back, and do not count as records.
        assert!(tx.send_control(flush()));
        assert!(rx.try_recv().is_some());
        assert!(rx.try_recv().is_some());
        rx.release();
        assert!(tx.try_place().is_ok());
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
        assert_eq!(waiting.await.unwrap(), Some(NoPlace::Closed));
        assert!(held.send(a_record()).is_err());
    }

    /// A record command without a producer around it.
    fn a_record() -> Incoming {
        Incoming {
            record: aggregation_proto::UserRecord::new("k", "v"),
            hash_key: 0,
            reply: None,
            charge: 1,
        }
    }
}
