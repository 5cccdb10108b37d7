//! The polling state machine of one shard: iterators, GetRecords, deaggregation, skipping,
//! retries, pacing and the shard's end. [`Fetcher::fetch`] is one step; the
//! [`PollingSource`](super::PollingSource) runs it inline or in its prefetch task.
//!
//! # Position
//!
//! Two things say where the shard was left:
//!
//! - `resume_at`: the sequence number of the last Kinesis record received (every sub-record
//!   of a Kinesis record goes into the same batch, so that record was dealt with entirely);
//! - `floor`: the (sequence, sub-sequence) of the last user record delivered, or the
//!   checkpoint of [`StartingPosition::AfterSequence`] before anything was delivered. Every
//!   user record at or below it is skipped.
//!
//! A new iterator (the first one, or after `ExpiredIteratorException` or a fatal error) is
//! taken `AT_SEQUENCE_NUMBER` of `resume_at` (else of the floor), so the last Kinesis record is
//! read again and the skip drops what was already delivered: nothing is delivered twice and
//! nothing is lost, even inside an aggregate. Before the first record, the starting position
//! is used again, except `LATEST`, which becomes `AT_TIMESTAMP` of the moment the first `LATEST`
//! iterator was asked for, minus [`LATEST_CLOCK_SKEW_MARGIN`]: a new `LATEST` would skip what
//! arrived in between.
//!
//! # Cancel safety
//!
//! State changes only synchronously after an await point has completed, so dropping a
//! [`Fetcher::fetch`] future at any await loses nothing: the next call repeats the
//! interrupted request from the same iterator.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aggregation_proto::HashRange;
use kinesis_common::{
    KinesisError, ListShards, ReadShard, RecordsPage, Shard, ShardIteratorStart, ShardListing,
    later,
};
use tokio::time::Instant;
use tracing::{debug, info};

use super::budget::{Charge, Charged, Reader};
use super::config::PollingConfig;
use super::cursor::Cursor;
use super::error::{Class, RetrievalError};
use super::retry::Retry;
use super::sequence::{Position, is_sequence_number};
use super::stats::{Counters, add};
use super::types::{ChildShard, ShardBatch, StartingPosition, StreamId};

/// How far before the first `LATEST` iterator a replacement iterator starts (`AT_TIMESTAMP`),
/// for clock skew between this host and the service. Records in that margin may be delivered
/// although `LATEST` would not have returned them; none can be lost.
pub(crate) const LATEST_CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(5);

/// One shard's polling state (see the module docs).
pub(crate) struct Fetcher<A> {
    api: A,
    stream: StreamId,
    shard_id: String,
    position: ReadPosition,
    config: PollingConfig,
    counters: Arc<Counters>,
    iterator: Option<String>,
    ended: Option<Vec<ChildShard>>,
    next_call_at: Option<Instant>,
    retry: Retry,
    expired_in_a_row: u32,
    /// The worker's memory budget for decoded batches, if any.
    budget: Option<Reader>,
}

impl<A: ListShards + ReadShard> Fetcher<A> {
    pub(crate) fn new(
        api: A,
        stream: StreamId,
        shard_id: String,
        hash_range: Option<HashRange>,
        start: StartingPosition,
        config: PollingConfig,
        counters: Arc<Counters>,
    ) -> Self {
        let retry = Retry::new(config.retry_policy());
        Self {
            api,
            stream,
            shard_id,
            position: ReadPosition::new(hash_range, start),
            config,
            counters,
            iterator: None,
            ended: None,
            next_call_at: None,
            retry,
            expired_in_a_row: 0,
            budget: None,
        }
    }

    /// Charges every batch to `reader`'s budget (reserving before each call while behind).
    pub(crate) fn set_budget(&mut self, reader: Reader) {
        self.budget = Some(reader);
    }

    /// The next batch: waits for the pacing (idle time, minimum time between calls, backoff),
    /// makes GetShardIterator/GetRecords calls until one succeeds or fails for good, and
    /// turns the answer into a [`ShardBatch`]. After the shard's end, returns an empty batch
    /// with the same children at once, without calling Kinesis.
    ///
    /// With a budget, each GetRecords call waits for its reservation first (while behind),
    /// and the batch comes with its charge.
    pub(crate) async fn fetch(&mut self) -> Result<Charged, RetrievalError> {
        self.position.check_start()?;
        loop {
            if let Some(children) = &self.ended {
                return Ok(Charged::free(ShardBatch {
                    shard_end: Some(children.clone()),
                    ..ShardBatch::default()
                }));
            }
            self.pause(self.next_call_at).await;
            let iterator = match &self.iterator {
                Some(iterator) => iterator.clone(),
                None => match self.new_iterator().await {
                    Ok(iterator) => iterator,
                    Err(error) => {
                        self.failed(error)?;
                        continue;
                    }
                },
            };
            // Dropped (given back) on an error: only an answer keeps a charge.
            let mut charge = match &self.budget {
                Some(reader) => reader.before_read().await,
                None => Charge::none(),
            };
            let started = Instant::now();
            add(&self.counters.get_records_calls, 1);
            let result = self
                .api
                .get_records(&self.stream, &iterator, self.config.max_records)
                .await;
            match result {
                Ok(mut page) => {
                    self.succeeded();
                    self.counters.read_succeeded();
                    let children = match page.next_iterator {
                        Some(_) => None,
                        None if !page.child_shards.is_empty() => {
                            Some(std::mem::take(&mut page.child_shards))
                        }
                        // Dropped on an error (or a cancel): the next call reads the same
                        // page again with the same iterator.
                        None => Some(self.find_children().await?),
                    };
                    let (batch, caught_up) = self.accept(page, children, started);
                    if let Some(reader) = &mut self.budget {
                        reader.after_read(&mut charge, &batch, caught_up);
                    }
                    return Ok(Charged { batch, charge });
                }
                Err(error) if error.class() == Class::ExpiredIterator => {
                    add(&self.counters.expired_iterators, 1);
                    self.iterator = None;
                    self.expired_in_a_row += 1;
                    info!(
                        resume_at = self.position.cursor.resume_at.as_deref(),
                        "shard iterator expired; getting a new one at the last position"
                    );
                    // A fresh iterator that expires at once: back off instead of looping.
                    if self.expired_in_a_row > 1 {
                        self.failed(error)?;
                    }
                }
                Err(error) => {
                    if !error.is_retryable() {
                        // Start over from the last position with a fresh iterator.
                        self.iterator = None;
                    }
                    self.failed(error)?;
                }
            }
        }
    }

    /// Where a new iterator starts (see the module docs).
    fn iterator_start(&self) -> ShardIteratorStart {
        match self.position.resume_at() {
            ResumeAt::Sequence(sequence_number) => ShardIteratorStart::AtSequence(sequence_number),
            ResumeAt::TrimHorizon => ShardIteratorStart::TrimHorizon,
            ResumeAt::Latest => ShardIteratorStart::Latest,
            ResumeAt::Timestamp(at) => ShardIteratorStart::AtTimestamp(at),
        }
    }

    async fn new_iterator(&mut self) -> Result<String, KinesisError> {
        let start = self.iterator_start();
        let requested_at = SystemTime::now();
        add(&self.counters.get_shard_iterator_calls, 1);
        let iterator = self
            .api
            .get_shard_iterator(&self.stream, &self.shard_id, &start)
            .await?;
        if start == ShardIteratorStart::Latest {
            self.position.latest_requested(requested_at);
        }
        debug!(?start, "new shard iterator");
        self.iterator = Some(iterator.clone());
        Ok(iterator)
    }

    /// The children of this (closed) shard from ListShards, retried like any other call.
    async fn find_children(&mut self) -> Result<Vec<ChildShard>, RetrievalError> {
        loop {
            self.pause(None).await;
            add(&self.counters.list_shards_calls, 1);
            match self
                .api
                .list_shards(&self.stream, &ShardListing::After(self.shard_id.clone()))
                .await
            {
                Ok(shards) => return Ok(children_of(&self.shard_id, shards)),
                Err(error) => self.failed(error)?,
            }
        }
    }

    /// Sleeps until `not_before`, and for the backoff if the last call failed.
    async fn pause(&mut self, not_before: Option<Instant>) {
        let wake = match (not_before, self.retry.not_before()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = wake {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Counts a failure: `Ok` to retry it, `Err` to hand it to the caller.
    fn failed(&mut self, error: KinesisError) -> Result<(), RetrievalError> {
        self.retry.failed(error, &self.counters)
    }

    fn succeeded(&mut self) {
        self.retry.succeeded();
        self.expired_in_a_row = 0;
    }

    /// Turns a successful answer into a batch and moves the position past it; also says
    /// whether the answer was caught up.
    fn accept(
        &mut self,
        page: RecordsPage,
        children: Option<Vec<ChildShard>>,
        started: Instant,
    ) -> (ShardBatch, bool) {
        let RecordsPage {
            records,
            next_iterator,
            millis_behind_latest,
            ..
        } = page;
        let kinesis_records = records.len();
        let bytes: usize = records.iter().map(|record| record.data.len()).sum();
        let taken = self.position.cursor.take(records);
        let (out, skipped, filtered) = (taken.records, taken.skipped, taken.filtered);
        let caught_up = caught_up(
            kinesis_records,
            millis_behind_latest,
            self.config.caught_up_threshold,
        );
        let mut next_call_at = later(started, self.config.min_time_between_calls);
        if caught_up {
            next_call_at = next_call_at.max(later(started, self.config.idle_time_between_reads));
        }
        self.next_call_at = Some(next_call_at);
        self.iterator = next_iterator;
        if let Some(children) = &children {
            info!(
                children = ?children.iter().map(|child| &child.shard_id).collect::<Vec<_>>(),
                "shard end reached"
            );
            self.ended = Some(children.clone());
        }

        add(&self.counters.batches, 1);
        add(&self.counters.kinesis_records, kinesis_records);
        add(&self.counters.bytes, bytes);
        add(&self.counters.records_delivered, out.len());
        add(&self.counters.records_skipped, skipped);
        add(&self.counters.records_filtered, filtered);
        debug!(
            kinesis_records,
            records = out.len(),
            skipped,
            filtered,
            millis_behind_latest,
            "batch"
        );
        let batch = ShardBatch {
            records: out,
            millis_behind_latest,
            shard_end: children,
            kinesis_records,
            bytes,
        };
        (batch, caught_up)
    }
}

/// Whether an answer shows the shard caught up, so the next call waits the idle time (see
/// [`PollingConfig::caught_up_threshold`]). An answer with records counts too when it is close
/// enough to the tip: at the tip every answer carries the few records that arrived since the
/// last call, and calling again at once would spend the shard's shared 5 calls/s on them.
pub(crate) fn caught_up(
    kinesis_records: usize,
    millis_behind_latest: Option<i64>,
    threshold: Duration,
) -> bool {
    let threshold_ms = i64::try_from(threshold.as_millis()).unwrap_or(i64::MAX);
    match millis_behind_latest {
        Some(ms) if ms < threshold_ms => true,
        behind => kinesis_records == 0 && behind.is_none_or(|ms| ms <= 0),
    }
}

/// The shards in `shards` that name `parent` as a parent, as [`ChildShard`]s.
pub(crate) fn children_of(parent: &str, shards: Vec<Shard>) -> Vec<ChildShard> {
    shards
        .into_iter()
        .filter(|shard| {
            shard.parent_shard_id.as_deref() == Some(parent)
                || shard.adjacent_parent_shard_id.as_deref() == Some(parent)
        })
        .map(|shard| ChildShard {
            shard_id: shard.shard_id,
            parent_shard_ids: shard
                .parent_shard_id
                .into_iter()
                .chain(shard.adjacent_parent_shard_id)
                .collect(),
            hash_range: shard.hash_range,
        })
        .collect()
}

/// Where a reader (polling or fan-out) started and where it has got to.
pub(crate) struct ReadPosition {
    pub(crate) cursor: Cursor,
    start: StartingPosition,
    /// Why `start` cannot be used, if it cannot.
    invalid_start: Option<String>,
    /// When the first `LATEST` position was asked for.
    latest_requested_at: Option<SystemTime>,
}

/// Where the next read (a new iterator or subscription) starts.
pub(crate) enum ResumeAt {
    Sequence(String),
    TrimHorizon,
    Latest,
    Timestamp(SystemTime),
}

impl ReadPosition {
    pub(crate) fn new(hash_range: Option<HashRange>, start: StartingPosition) -> Self {
        let (floor, invalid_start) = starting_floor(&start);
        Self {
            cursor: Cursor::new(hash_range, floor),
            start,
            invalid_start,
            latest_requested_at: None,
        }
    }

    /// Fails when the starting position cannot be used at all.
    pub(crate) fn check_start(&self) -> Result<(), RetrievalError> {
        match &self.invalid_start {
            Some(reason) => Err(RetrievalError::InvalidStartingPosition {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Where the next read starts (see the module docs): after what was delivered, else the
    /// starting position, with `LATEST` pinned to the time it was first asked for so that a
    /// retry does not skip what arrived in between.
    pub(crate) fn resume_at(&self) -> ResumeAt {
        if let Some(sequence_number) = self.cursor.restart_at() {
            return ResumeAt::Sequence(sequence_number.to_owned());
        }
        match &self.start {
            StartingPosition::TrimHorizon => ResumeAt::TrimHorizon,
            StartingPosition::Latest => match self.latest_requested_at {
                None => ResumeAt::Latest,
                Some(at) => ResumeAt::Timestamp(
                    at.checked_sub(LATEST_CLOCK_SKEW_MARGIN)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                ),
            },
            StartingPosition::AtTimestamp(at) => ResumeAt::Timestamp(*at),
            StartingPosition::AfterSequence {
                sequence_number, ..
            } => ResumeAt::Sequence(sequence_number.clone()),
        }
    }

    /// Notes when the read at `LATEST` was asked for: later reads resume at that time.
    pub(crate) fn latest_requested(&mut self, at: SystemTime) {
        self.latest_requested_at = Some(at);
    }
}

/// The floor a starting position implies, or why it cannot be used.
pub(crate) fn starting_floor(start: &StartingPosition) -> (Option<Position>, Option<String>) {
    match start {
        StartingPosition::AfterSequence {
            sequence_number,
            sub_sequence_number,
        } => {
            if is_sequence_number(sequence_number) {
                let floor = Position {
                    sequence_number: sequence_number.clone(),
                    sub_sequence_number: *sub_sequence_number,
                };
                (Some(floor), None)
            } else {
                let shown: String = sequence_number.chars().take(140).collect();
                let reason = format!(
                    "AfterSequence needs a sequence number of 1 to 128 decimal digits, got {shown:?}"
                );
                (None, Some(reason))
            }
        }
        _ => (None, None),
    }
}
