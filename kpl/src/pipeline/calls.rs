//! The PutRecords calls in flight. Each runs in a task of its own, bounded by its timeout; the
//! batch stays here, so a task that panics or is aborted loses no record: its batch comes back
//! as a call whose fate is unknown, and is retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::congestion::Ticket;
use super::record::Outgoing;
use super::settle::{Answer, CallOutcome};
use crate::client::{KinesisApi, PutEntry, PutRecords, StreamId};

/// One call in flight.
pub(crate) struct InFlight {
    pub(crate) stream: usize,
    /// The stream's shard-map epoch when the call started.
    pub(crate) epoch: u64,
    pub(crate) batch: Vec<Outgoing>,
    pub(crate) ticket: Ticket,
    pub(crate) started: Instant,
    pub(crate) bytes: usize,
}

type Done = (u64, Answer, Duration);

/// Which stream a call is for.
pub(crate) struct CallStream {
    pub(crate) id: Arc<StreamId>,
    pub(crate) index: usize,
    /// The stream's shard-map epoch now.
    pub(crate) epoch: u64,
}

#[derive(Default)]
pub(crate) struct Calls {
    tasks: JoinSet<Done>,
    by_task: HashMap<Id, u64>,
    calls: HashMap<u64, InFlight>,
    next_id: u64,
}

impl Calls {
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Starts a call of `batch` to `stream`.
    pub(crate) fn spawn(
        &mut self,
        api: &Arc<dyn KinesisApi>,
        stream: CallStream,
        batch: Vec<Outgoing>,
        ticket: Ticket,
        now: Instant,
    ) {
        let entries: Vec<PutEntry> = batch
            .iter()
            .map(|o| {
                PutEntry::new(
                    o.record.partition_key.clone(),
                    o.record.explicit_hash_key.clone(),
                    o.record.data.clone(),
                )
            })
            .collect();
        let bytes = entries.iter().map(PutEntry::size).sum();
        let id = self.next_id;
        self.next_id += 1;
        let api = api.clone();
        let CallStream {
            id: stream_id,
            index: stream,
            epoch,
        } = stream;
        let timeout = ticket.timeout;
        let span = tracing::debug_span!(
            "put_records",
            stream = %stream_id,
            records = entries.len(),
            bytes,
            ?timeout
        );
        let handle =
            self.tasks.spawn(
                async move {
                    let started = Instant::now();
                    let answer =
                        match tokio::time::timeout(timeout, api.put_records(&stream_id, &entries))
                            .await
                        {
                            Err(_) => Answer::TimedOut(timeout),
                            Ok(Err(error)) => Answer::Failed(error),
                            Ok(Ok(results)) => Answer::Entries(results),
                        };
                    if let Answer::Failed(error) = &answer {
                        tracing::debug!(%error, "PutRecords failed");
                    }
                    (id, answer, started.elapsed())
                }
                .instrument(span),
            );
        self.by_task.insert(handle.id(), id);
        self.calls.insert(
            id,
            InFlight {
                stream,
                epoch,
                batch,
                ticket,
                started: now,
                bytes,
            },
        );
    }

    /// The next call to end, with its outcome. A task that panicked or was aborted ends as
    /// [`Answer::TaskFailed`]. Cancel-safe; pending forever while nothing is in flight.
    pub(crate) async fn next(&mut self) -> (InFlight, CallOutcome) {
        loop {
            let Some(joined) = self.tasks.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (task, id, answer, duration) = match joined {
                Ok((task, (id, answer, duration))) => (task, id, answer, duration),
                Err(error) => {
                    let task = error.id();
                    let Some(&id) = self.by_task.get(&task) else {
                        continue;
                    };
                    let why = if error.is_panic() {
                        format!(
                            "the PutRecords task panicked: {}",
                            crate::health::panic_text(&*error.into_panic())
                        )
                    } else {
                        "the PutRecords task was cancelled".to_owned()
                    };
                    let started = self.calls.get(&id).map(|c| c.started);
                    let duration = started.map_or(Duration::ZERO, |s| s.elapsed());
                    (task, id, Answer::TaskFailed(why), duration)
                }
            };
            self.by_task.remove(&task);
            if let Some(call) = self.calls.remove(&id) {
                let outcome = CallOutcome {
                    started: call.started,
                    duration,
                    answer,
                };
                return (call, outcome);
            }
        }
    }

    /// Aborts every task and hands their batches back (the pipeline is failing).
    pub(crate) fn abandon(&mut self) -> Vec<InFlight> {
        self.tasks.abort_all();
        self.by_task.clear();
        self.calls.drain().map(|(_, call)| call).collect()
    }
}
