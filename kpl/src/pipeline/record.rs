//! A user record while the pipeline owns it, and the Kinesis record it travels in.

use std::sync::Arc;
use std::time::Duration;

use aggregation_proto::{KinesisRecord, UserRecord};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::receipt::{Attempt, MAX_KEPT_ATTEMPTS, RecordResult};

/// The reply channel of a record sent with a receipt.
pub(crate) type Reply = oneshot::Sender<RecordResult>;

/// A record as a handle sends it: checked and charged, not yet stamped by the pipeline.
pub(crate) struct Incoming {
    pub(crate) record: UserRecord,
    pub(crate) hash_key: u128,
    /// `None` when sent detached: nobody will read the outcome.
    pub(crate) reply: Option<Reply>,
    /// What it took from the budget, in bytes (and one record).
    pub(crate) charge: u32,
    /// Which stream (an index into the producer's stream registry).
    pub(crate) stream: usize,
}

/// A user record the pipeline owns until the [`Ledger`](super::ledger::Ledger) answers it.
pub(crate) struct PendingRecord {
    pub(crate) record: UserRecord,
    pub(crate) hash_key: u128,
    pub(crate) reply: Option<Reply>,
    pub(crate) charge: u32,
    /// The flush generation it was accepted in.
    pub(crate) generation: u64,
    /// Arrival order in the pipeline: re-routing after a shard-map change goes by it, so records
    /// of one key keep their order.
    pub(crate) sequence: u64,
    /// When the pipeline took it: its TTL counts from here. Stamped once per burst of commands.
    pub(crate) arrived: Instant,
    /// When it last became ready to send (arrival, or the end of its last attempt).
    pub(crate) ready_since: Instant,
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) attempt_count: u32,
    /// An earlier attempt may have stored it (no answer came, or it landed misrouted).
    pub(crate) possibly_duplicated: bool,
}

impl std::fmt::Debug for PendingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRecord")
            .field("partition_key", &self.record.partition_key)
            .field("sequence", &self.sequence)
            .field("generation", &self.generation)
            .field("attempt_count", &self.attempt_count)
            .finish_non_exhaustive()
    }
}

impl PendingRecord {
    pub(crate) fn new(incoming: Incoming, generation: u64, sequence: u64, now: Instant) -> Self {
        Self {
            record: incoming.record,
            hash_key: incoming.hash_key,
            reply: incoming.reply,
            charge: incoming.charge,
            generation,
            sequence,
            arrived: now,
            ready_since: now,
            attempts: Vec::new(),
            attempt_count: 0,
            possibly_duplicated: false,
        }
    }

    /// Data plus partition key.
    pub(crate) fn size(&self) -> usize {
        self.record.partition_key.len() + self.record.data.len()
    }

    /// Whether its TTL has run out by `now`.
    pub(crate) fn expired(&self, ttl: Option<Duration>, now: Instant) -> bool {
        ttl.is_some_and(|ttl| now.saturating_duration_since(self.arrived) >= ttl)
    }

    /// When its TTL runs out (`None`: never).
    pub(crate) fn deadline(&self, ttl: Option<Duration>) -> Option<Instant> {
        ttl.and_then(|ttl| self.arrived.checked_add(ttl))
    }

    /// Records an attempt that started at `started`, keeping the latest
    /// [`MAX_KEPT_ATTEMPTS`].
    pub(crate) fn record_attempt(
        &mut self,
        started: Instant,
        duration: Duration,
        error: Option<&AttemptError>,
    ) {
        if self.attempts.len() == MAX_KEPT_ATTEMPTS {
            self.attempts.remove(0);
        }
        self.attempts.push(Attempt {
            delay: started.saturating_duration_since(self.ready_since),
            duration,
            error_code: error.map(|e| e.code.clone()),
            error_message: error.map(|e| e.message.clone()),
        });
        self.attempt_count = self.attempt_count.saturating_add(1);
        self.ready_since = started + duration;
    }

    /// Whether a receipt still waits for the outcome.
    pub(crate) fn answer_wanted(&self) -> bool {
        self.reply.as_ref().is_some_and(|reply| !reply.is_closed())
    }
}

/// An attempt's error, shared by every record it touched.
#[derive(Debug, Clone)]
pub(crate) struct AttemptError {
    pub(crate) code: Arc<str>,
    pub(crate) message: Arc<str>,
}

impl AttemptError {
    pub(crate) fn new(code: impl Into<Arc<str>>, message: impl Into<Arc<str>>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Where an outgoing Kinesis record was built to go.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The predicted shard.
    pub(crate) shard_id: Arc<str>,
    /// Its index in the stream's map of `map_epoch`.
    pub(crate) shard: usize,
    pub(crate) lane: usize,
    /// The shard map it was routed with.
    pub(crate) map_epoch: u64,
}

/// A Kinesis record on its way: an aggregate, or a single user record.
pub(crate) struct Outgoing {
    pub(crate) record: KinesisRecord,
    pub(crate) members: Vec<PendingRecord>,
    pub(crate) target: Target,
    /// When it should be sent at the latest (its first member's arrival plus the linger).
    pub(crate) due: Instant,
    /// Whether `record` is an aggregate (its members have sub-sequence numbers).
    pub(crate) aggregated: bool,
}

impl Outgoing {
    pub(crate) fn size(&self) -> usize {
        self.record.size()
    }

    #[cfg(test)]
    /// The earliest arrival among the members.
    pub(crate) fn first_sequence(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.sequence)
            .min()
            .unwrap_or(u64::MAX)
    }
}
