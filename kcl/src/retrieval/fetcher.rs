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

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aggregation_proto::{Deaggregator, HashRange, Outcome};
use aws_sdk_kinesis::error::DisplayErrorContext;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::api::{IteratorStart, KinesisApi, RecordsPage, ShardListing, ShardSummary};
use super::config::PollingConfig;
use super::error::{CallError, Class, RetrievalError};
use super::sequence::{Position, compare_sequence_numbers, is_sequence_number};
use super::stats::{Counters, add};
use super::types::{ChildShard, ShardBatch, StartingPosition, StreamId};

/// How far before the first `LATEST` iterator a replacement iterator starts (`AT_TIMESTAMP`),
/// for clock skew between this host and the service. Records in that margin may be delivered
/// although `LATEST` would not have returned them; none can be lost.
pub(crate) const LATEST_CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(5);

/// Consecutive failures and the backoff they have earned.
#[derive(Default)]
struct RetryState {
    failures: u32,
    since: Option<Instant>,
    backoff: Option<ExponentialBackoff>,
}

/// One shard's polling state (see the module docs).
pub(crate) struct Fetcher<A> {
    api: A,
    stream: StreamId,
    shard_id: String,
    deaggregator: Deaggregator,
    config: PollingConfig,
    counters: Arc<Counters>,
    start: StartingPosition,
    /// Why `start` cannot be used, if it cannot.
    invalid_start: Option<String>,
    /// When the first `LATEST` iterator was asked for.
    latest_requested_at: Option<SystemTime>,
    iterator: Option<String>,
    resume_at: Option<String>,
    floor: Option<Position>,
    ended: Option<Vec<ChildShard>>,
    next_call_at: Option<Instant>,
    retry: RetryState,
    expired_in_a_row: u32,
}

impl<A: KinesisApi> Fetcher<A> {
    pub(crate) fn new(
        api: A,
        stream: StreamId,
        shard_id: String,
        hash_range: Option<HashRange>,
        start: StartingPosition,
        config: PollingConfig,
        counters: Arc<Counters>,
    ) -> Self {
        let mut deaggregator = Deaggregator::new();
        if let Some(range) = hash_range {
            deaggregator = deaggregator.hash_range(range);
        }
        let (floor, invalid_start) = match &start {
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
        };
        Self {
            api,
            stream,
            shard_id,
            deaggregator,
            config,
            counters,
            start,
            invalid_start,
            latest_requested_at: None,
            iterator: None,
            resume_at: None,
            floor,
            ended: None,
            next_call_at: None,
            retry: RetryState::default(),
            expired_in_a_row: 0,
        }
    }

    /// The next batch: waits for the pacing (idle time, minimum time between calls, backoff),
    /// makes GetShardIterator/GetRecords calls until one succeeds or fails for good, and
    /// turns the answer into a [`ShardBatch`]. After the shard's end, returns an empty batch
    /// with the same children at once, without calling Kinesis.
    pub(crate) async fn fetch(&mut self) -> Result<ShardBatch, RetrievalError> {
        if let Some(reason) = &self.invalid_start {
            return Err(RetrievalError::InvalidStartingPosition {
                reason: reason.clone(),
            });
        }
        loop {
            if let Some(children) = &self.ended {
                return Ok(ShardBatch {
                    shard_end: Some(children.clone()),
                    ..ShardBatch::default()
                });
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
            let started = Instant::now();
            add(&self.counters.get_records_calls, 1);
            let result = self
                .api
                .get_records(&self.stream, &iterator, self.config.max_records)
                .await;
            match result {
                Ok(mut page) => {
                    self.succeeded();
                    let children = match page.next_iterator {
                        Some(_) => None,
                        None if !page.child_shards.is_empty() => {
                            Some(std::mem::take(&mut page.child_shards))
                        }
                        // Dropped on an error (or a cancel): the next call reads the same
                        // page again with the same iterator.
                        None => Some(self.find_children().await?),
                    };
                    return Ok(self.accept(page, children, started));
                }
                Err(error) if error.class == Class::ExpiredIterator => {
                    add(&self.counters.expired_iterators, 1);
                    self.iterator = None;
                    self.expired_in_a_row += 1;
                    info!(
                        resume_at = self.resume_at.as_deref(),
                        "shard iterator expired; getting a new one at the last position"
                    );
                    // A fresh iterator that expires at once: back off instead of looping.
                    if self.expired_in_a_row > 1 {
                        self.failed(error)?;
                    }
                }
                Err(error) => {
                    if !error.class.is_retryable() {
                        // Start over from the last position with a fresh iterator.
                        self.iterator = None;
                    }
                    self.failed(error)?;
                }
            }
        }
    }

    /// Where a new iterator starts (see the module docs).
    fn iterator_start(&self) -> IteratorStart {
        let known = self
            .resume_at
            .as_ref()
            .or(self.floor.as_ref().map(|floor| &floor.sequence_number));
        if let Some(sequence_number) = known {
            return IteratorStart::AtSequence(sequence_number.clone());
        }
        match &self.start {
            StartingPosition::TrimHorizon => IteratorStart::TrimHorizon,
            StartingPosition::Latest => match self.latest_requested_at {
                None => IteratorStart::Latest,
                Some(at) => IteratorStart::AtTimestamp(
                    at.checked_sub(LATEST_CLOCK_SKEW_MARGIN)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                ),
            },
            StartingPosition::AtTimestamp(at) => IteratorStart::AtTimestamp(*at),
            StartingPosition::AfterSequence {
                sequence_number, ..
            } => IteratorStart::AtSequence(sequence_number.clone()),
        }
    }

    async fn new_iterator(&mut self) -> Result<String, CallError> {
        let start = self.iterator_start();
        let requested_at = SystemTime::now();
        add(&self.counters.get_shard_iterator_calls, 1);
        let iterator = self
            .api
            .get_shard_iterator(&self.stream, &self.shard_id, &start)
            .await?;
        if start == IteratorStart::Latest {
            self.latest_requested_at = Some(requested_at);
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
        let mut wake = not_before;
        if self.retry.failures > 0 {
            let backoff_until = after(Instant::now(), self.retry_delay());
            wake = Some(wake.map_or(backoff_until, |at| at.max(backoff_until)));
        }
        if let Some(at) = wake {
            tokio::time::sleep_until(at).await;
        }
    }

    /// The next backoff: backon's exponential envelope, with the wait drawn uniformly from its
    /// upper half.
    fn retry_delay(&mut self) -> Duration {
        let (min, max) = (self.config.min_backoff, self.config.max_backoff);
        let envelope = self
            .retry
            .backoff
            .get_or_insert_with(|| {
                ExponentialBuilder::default()
                    .with_min_delay(min)
                    .with_max_delay(max)
                    .with_factor(2.0)
                    .without_max_times()
                    .build()
            })
            .next()
            .unwrap_or(max);
        let half = envelope / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Counts a failure: `Ok` to retry it, `Err` to hand it to the caller.
    fn failed(&mut self, error: CallError) -> Result<(), RetrievalError> {
        let now = Instant::now();
        self.retry.failures = self.retry.failures.saturating_add(1);
        let since = *self.retry.since.get_or_insert(now);
        let operation = error.operation.name();
        match error.class {
            Class::Throttled => {
                add(&self.counters.throttled, 1);
                debug!(
                    operation,
                    code = %error.code,
                    failures = self.retry.failures,
                    "throttled; backing off"
                );
            }
            Class::Transient => {
                add(&self.counters.transient_errors, 1);
                warn!(
                    operation,
                    code = %error.code,
                    failures = self.retry.failures,
                    error = %DisplayErrorContext(&*error.source),
                    "call failed; retrying"
                );
            }
            Class::ExpiredIterator => {}
            Class::NotFound
            | Class::AccessDenied
            | Class::Kms
            | Class::InvalidRequest
            | Class::Malformed
            | Class::Unexpected => {
                warn!(
                    operation,
                    code = %error.code,
                    error = %DisplayErrorContext(&*error.source),
                    "call failed; not retrying"
                );
                return Err(error.into_retrieval_error());
            }
        }
        let elapsed = now.saturating_duration_since(since);
        if self
            .config
            .give_up_after
            .is_some_and(|limit| elapsed >= limit)
        {
            return Err(RetrievalError::RetriesExhausted {
                operation,
                attempts: self.retry.failures,
                elapsed,
                source: error.source,
            });
        }
        Ok(())
    }

    fn succeeded(&mut self) {
        self.retry = RetryState::default();
        self.expired_in_a_row = 0;
    }

    /// Turns a successful answer into a batch and moves the position past it.
    fn accept(
        &mut self,
        page: RecordsPage,
        children: Option<Vec<ChildShard>>,
        started: Instant,
    ) -> ShardBatch {
        let RecordsPage {
            records,
            next_iterator,
            millis_behind_latest,
            ..
        } = page;
        let kinesis_records = records.len();
        let bytes: usize = records.iter().map(|record| record.data.len()).sum();
        let mut out = Vec::with_capacity(kinesis_records);
        let (mut skipped, mut filtered) = (0, 0);
        let last_sequence_number = records
            .last()
            .and_then(|record| record.sequence_number.as_deref())
            .map(str::to_owned);
        for record in records {
            let first = out.len();
            let order = match (&self.floor, record.sequence_number.as_deref()) {
                (Some(floor), Some(sequence_number)) => Some(compare_sequence_numbers(
                    sequence_number,
                    &floor.sequence_number,
                )),
                _ => None,
            };
            // The record moves into its user records: no copy, no extra reference counts.
            match self.deaggregator.deaggregate_owned_into(record, &mut out) {
                Ok(Outcome::Aggregated { filtered: n, .. }) => filtered += n,
                Ok(_) => {}
                // This deaggregator is lenient (the KCL's rules): corrupt input comes back whole.
                Err(error) => tracing::error!(%error, "a lenient deaggregator failed"),
            }
            let (Some(floor), Some(order)) = (&self.floor, order) else {
                continue;
            };
            let keep_from = match order {
                Ordering::Less => out.len(),
                Ordering::Greater => first,
                Ordering::Equal => out
                    .iter()
                    .skip(first)
                    .position(|user| {
                        user.sub_sequence_number().unwrap_or(0) > floor.sub_sequence_number
                    })
                    .map_or(out.len(), |offset| first + offset),
            };
            skipped += keep_from - first;
            out.drain(first..keep_from);
        }

        if let Some(sequence_number) = last_sequence_number {
            self.resume_at = Some(sequence_number);
        }
        if let Some(last) = out.last()
            && let Some(sequence_number) = last.sequence_number()
        {
            self.floor = Some(Position {
                sequence_number: sequence_number.to_owned(),
                sub_sequence_number: last.sub_sequence_number().unwrap_or(0),
            });
        }
        let caught_up = kinesis_records == 0 && millis_behind_latest.is_none_or(|ms| ms <= 0);
        let mut next_call_at = after(started, self.config.min_time_between_calls);
        if caught_up {
            next_call_at = next_call_at.max(after(started, self.config.idle_time_between_reads));
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
        ShardBatch {
            records: out,
            millis_behind_latest,
            shard_end: children,
            kinesis_records,
            bytes,
        }
    }
}

/// `start + by`, or a year later when that overflows (a setting of `Duration::MAX`).
fn after(start: Instant, by: Duration) -> Instant {
    start
        .checked_add(by)
        .or_else(|| start.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(start)
}

/// The shards in `shards` that name `parent` as a parent, as [`ChildShard`]s.
pub(crate) fn children_of(parent: &str, shards: Vec<ShardSummary>) -> Vec<ChildShard> {
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
