//! The ledger of outstanding records: the one place a record is answered.
//!
//! Every record the pipeline accepts is admitted here and resolved here exactly once: its
//! receipt (if anyone holds it) gets the outcome, its flush generation stops waiting for it,
//! its budget charge is queued for release, and its outcome is counted. Flushes wait for
//! generations: a flush closes the current generation and is answered, with a report of what
//! became of the records it waited for, once no record of that or an older generation is left.

use std::collections::VecDeque;
use std::sync::Arc;

use aggregation_proto::UserRecord;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::record::{Incoming, PendingRecord};
use crate::budget::{Budget, Released};
use crate::error::{FailureReason, FlushReport, RecordFailure};
use crate::receipt::RecordSuccess;

/// How a record ended.
#[derive(Debug)]
pub(crate) enum Resolution {
    Stored {
        shard_id: Arc<str>,
        sequence_number: Arc<str>,
        sub_sequence_number: Option<u64>,
    },
    Failed(FailureReason),
}

/// Outcomes of the records of one or more generations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    stored: u64,
    failed: u64,
    expired: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.stored += other.stored;
        self.failed += other.failed;
        self.expired += other.expired;
    }

    fn report(self) -> FlushReport {
        FlushReport {
            stored: self.stored,
            failed: self.failed,
            expired: self.expired,
        }
    }
}

#[derive(Debug)]
struct Generation {
    id: u64,
    outstanding: usize,
}

struct FlushWaiter {
    /// Waits for every record of this generation and older.
    generation: u64,
    /// What became of those records since the flush came.
    tally: Tally,
    reply: oneshot::Sender<FlushReport>,
}

/// Detached records that failed in one pass: logged once at the end of it (they have no
/// receipt to carry the failure).
#[derive(Debug, Default)]
pub(crate) struct DetachedFailures {
    pub(crate) records: usize,
    pub(crate) first: Option<String>,
}

pub(crate) struct Ledger {
    current: u64,
    next_sequence: u64,
    /// Generations with outstanding records, oldest first (as many as flushes are waiting, so
    /// a scan beats a tree).
    open: VecDeque<Generation>,
    flushes: Vec<FlushWaiter>,
    outstanding: usize,
    released: Released,
    detached: DetachedFailures,
}

impl Ledger {
    pub(crate) fn new() -> Self {
        Self {
            current: 0,
            next_sequence: 0,
            open: VecDeque::new(),
            flushes: Vec::new(),
            outstanding: 0,
            released: Released::default(),
            detached: DetachedFailures::default(),
        }
    }

    /// Takes a record in: it is outstanding until [`resolve`](Self::resolve)d.
    pub(crate) fn admit(&mut self, incoming: Incoming, now: Instant) -> PendingRecord {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        match self.open.back_mut() {
            Some(generation) if generation.id == self.current => generation.outstanding += 1,
            _ => self.open.push_back(Generation {
                id: self.current,
                outstanding: 1,
            }),
        }
        self.outstanding += 1;
        PendingRecord::new(incoming, self.current, sequence, now)
    }

    /// Answers a record: the only place that does. Its charge is released at the end of the
    /// pass ([`release_to`](Self::release_to)).
    pub(crate) fn resolve(&mut self, mut member: PendingRecord, resolution: Resolution) {
        let mut tally = Tally::default();
        let result = match resolution {
            Resolution::Stored {
                shard_id,
                sequence_number,
                sub_sequence_number,
            } => {
                tally.stored = 1;
                member.answer_wanted().then(|| {
                    Ok(RecordSuccess {
                        shard_id,
                        sequence_number,
                        sub_sequence_number,
                        attempts: std::mem::take(&mut member.attempts),
                        attempt_count: member.attempt_count,
                        possibly_duplicated: member.possibly_duplicated,
                        without_shard_map: false,
                    })
                })
            }
            Resolution::Failed(reason) => {
                tally.failed = 1;
                if reason == FailureReason::Expired {
                    tally.expired = 1;
                }
                let record: UserRecord = std::mem::replace(
                    &mut member.record,
                    UserRecord::new(String::new(), bytes::Bytes::new()),
                );
                let failure = RecordFailure::new(
                    reason,
                    Some(record),
                    std::mem::take(&mut member.attempts),
                    member.attempt_count,
                    member.possibly_duplicated,
                );
                if member.reply.is_none() {
                    self.detached.records += 1;
                    if self.detached.first.is_none() {
                        self.detached.first = Some(failure.to_string());
                    }
                }
                Some(Err(failure))
            }
        };
        self.retire(member.generation, tally);
        self.released.add(member.charge);
        if let (Some(reply), Some(result)) = (member.reply.take(), result) {
            // The receipt may be gone (fire and forget); the charge goes back either way.
            let _ = reply.send(result);
        }
    }

    /// Answers every member of one stored Kinesis record, leaving the list empty for reuse (the
    /// hot path: one call per Kinesis record, the answer built only for a receipt still held).
    pub(crate) fn resolve_stored(
        &mut self,
        members: &mut Vec<PendingRecord>,
        shard_id: &Arc<str>,
        sequence_number: &Arc<str>,
        aggregated: bool,
        without_shard_map: bool,
    ) {
        let stored = Tally {
            stored: 1,
            ..Tally::default()
        };
        for (position, mut member) in members.drain(..).enumerate() {
            self.retire(member.generation, stored);
            self.released.add(member.charge);
            if let Some(reply) = member.reply.take()
                && !reply.is_closed()
            {
                let _ = reply.send(Ok(RecordSuccess {
                    shard_id: shard_id.clone(),
                    sequence_number: sequence_number.clone(),
                    sub_sequence_number: aggregated.then_some(position as u64),
                    attempts: std::mem::take(&mut member.attempts),
                    attempt_count: member.attempt_count,
                    possibly_duplicated: member.possibly_duplicated,
                    without_shard_map,
                }));
            }
        }
    }

    fn retire(&mut self, generation: u64, tally: Tally) {
        self.outstanding = self.outstanding.saturating_sub(1);
        for waiter in &mut self.flushes {
            if generation <= waiter.generation {
                waiter.tally.add(tally);
            }
        }
        if let Some(entry) = self.open.iter_mut().find(|g| g.id == generation) {
            entry.outstanding = entry.outstanding.saturating_sub(1);
            if entry.outstanding == 0 {
                while self.open.front().is_some_and(|g| g.outstanding == 0) {
                    self.open.pop_front();
                }
            }
        }
    }

    /// Closes the current generation: `reply` gets the report once every record accepted so
    /// far is resolved.
    pub(crate) fn flush(&mut self, reply: oneshot::Sender<FlushReport>) {
        let generation = self.current;
        self.current += 1;
        self.flushes.push(FlushWaiter {
            generation,
            tally: Tally::default(),
            reply,
        });
    }

    /// Whether a flush is waiting (what it waits for goes out at once while one is).
    pub(crate) fn flushing(&self) -> bool {
        !self.flushes.is_empty()
    }

    /// The newest generation a flush waits for: records of it and older are sealed at once,
    /// records accepted after every waiting flush still aggregate.
    pub(crate) fn flush_horizon(&self) -> Option<u64> {
        self.flushes.iter().map(|f| f.generation).max()
    }

    /// Answers the flushes whose generations are done.
    pub(crate) fn notify_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let oldest_open = self.open.front().map(|g| g.id);
        let mut index = 0;
        while index < self.flushes.len() {
            let generation = self.flushes[index].generation;
            if oldest_open.is_none_or(|oldest| oldest > generation) {
                let waiter = self.flushes.swap_remove(index);
                let _ = waiter.reply.send(waiter.tally.report());
            } else {
                index += 1;
            }
        }
    }

    /// Records accepted and not yet answered.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Gives back the charges of everything resolved since the last call.
    pub(crate) fn release_to(&mut self, budget: &Budget) {
        self.released.release_to(budget);
    }

    /// The detached records that failed since the last call.
    pub(crate) fn take_detached_failures(&mut self) -> DetachedFailures {
        std::mem::take(&mut self.detached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{Receipt, RecordResult};

    fn incoming(reply: Option<oneshot::Sender<RecordResult>>) -> Incoming {
        Incoming {
            record: UserRecord::new("k", "v"),
            hash_key: 1,
            reply,
            charge: 10,
            stream: 0,
        }
    }

    fn stored() -> Resolution {
        Resolution::Stored {
            shard_id: "s".into(),
            sequence_number: "1".into(),
            sub_sequence_number: None,
        }
    }

    #[tokio::test]
    async fn every_record_is_answered_once_and_its_charge_released() {
        let health = Arc::new(crate::health::Health::default());
        let budget = Budget::new(10, 100);
        budget.try_charge(10).unwrap();
        budget.try_charge(10).unwrap();
        let mut ledger = Ledger::new();
        let now = Instant::now();
        let (tx, receipt) = Receipt::channel(&health);
        let first = ledger.admit(incoming(Some(tx)), now);
        let second = ledger.admit(incoming(None), now);
        assert_eq!((first.sequence, second.sequence), (0, 1));
        assert_eq!(ledger.outstanding(), 2);
        ledger.resolve(first, stored());
        ledger.resolve(second, Resolution::Failed(FailureReason::Expired));
        assert_eq!(ledger.outstanding(), 0);
        ledger.release_to(&budget);
        assert_eq!(budget.outstanding_records(), 0);
        assert!(receipt.await.is_ok());
        let detached = ledger.take_detached_failures();
        assert_eq!(detached.records, 1, "the detached failure is reported");
    }

    #[tokio::test]
    async fn a_failed_record_comes_back_in_its_error() {
        let health = Arc::new(crate::health::Health::default());
        let mut ledger = Ledger::new();
        let (tx, receipt) = Receipt::channel(&health);
        let member = ledger.admit(incoming(Some(tx)), Instant::now());
        ledger.resolve(
            member,
            Resolution::Failed(FailureReason::Rejected {
                code: "ValidationException".into(),
                message: "too big".into(),
            }),
        );
        let failure = receipt.await.expect_err("failed");
        assert_eq!(
            failure.record().map(|r| r.partition_key.as_str()),
            Some("k")
        );
        assert_eq!(
            failure.to_string(),
            "rejected by Kinesis: ValidationException: too big"
        );
    }

    #[tokio::test]
    async fn flushes_wait_for_their_generations_and_report_them() {
        let mut ledger = Ledger::new();
        let now = Instant::now();
        let early = ledger.admit(incoming(None), now);
        let (first_tx, mut first) = oneshot::channel();
        ledger.flush(first_tx);
        let late = ledger.admit(incoming(None), now);
        let (second_tx, mut second) = oneshot::channel();
        ledger.flush(second_tx);
        assert!(ledger.flushing());

        // The later record resolving does not answer the first flush.
        ledger.resolve(late, stored());
        ledger.notify_flushes();
        assert!(first.try_recv().is_err());
        assert!(second.try_recv().is_err());

        ledger.resolve(early, Resolution::Failed(FailureReason::Expired));
        ledger.notify_flushes();
        assert_eq!(
            first.try_recv().unwrap(),
            FlushReport {
                stored: 0,
                failed: 1,
                expired: 1
            }
        );
        assert_eq!(
            second.try_recv().unwrap(),
            FlushReport {
                stored: 1,
                failed: 1,
                expired: 1
            }
        );
        assert!(!ledger.flushing());
    }

    #[tokio::test]
    async fn a_flush_with_nothing_outstanding_reports_nothing() {
        let mut ledger = Ledger::new();
        let done = ledger.admit(incoming(None), Instant::now());
        ledger.resolve(done, stored());
        let (tx, mut rx) = oneshot::channel();
        ledger.flush(tx);
        ledger.notify_flushes();
        assert_eq!(rx.try_recv().unwrap(), FlushReport::default());
    }
}
