//! The fan-out state machine of one shard: subscriptions, their events, resubscription,
//! backoff and the shard's end. [`Subscriber::next`] is one step (one event, as a batch); the
//! [`FanOutSource`](super::FanOutSource) runs it in its own task.
//!
//! # Position
//!
//! Every event carries a `ContinuationSequenceNumber`; the next subscription starts
//! `AFTER_SEQUENCE_NUMBER` of the last one received, so a subscription that ends (every 5
//! minutes), fails or times out is resumed exactly where the last event left off. Before the
//! first event, it starts where the [`Cursor`] says (`AT_SEQUENCE_NUMBER` of a checkpoint),
//! else at the starting position (`LATEST` becomes `AT_TIMESTAMP` of the first `LATEST`
//! subscription, as in polling). Whatever the service sends again, the cursor skips every user
//! record at or below the last one delivered: nothing twice, nothing lost.

use std::sync::Arc;
use std::time::SystemTime;

use kinesis_common::{
    ConsumerApi, EventStream, KinesisError, ShardEvent, ShardListing, SubscribeStart, later,
};
use tokio::time::Instant;
use tracing::{debug, info};

use super::config::FanOutConfig;
use crate::retrieval::error::{Class, RetrievalError};
use crate::retrieval::fetcher::{ReadPosition, ResumeAt, children_of};
use crate::retrieval::retry::Retry;
use crate::retrieval::stats::{Counters, add};
use crate::retrieval::types::{ChildShard, ShardBatch, StartingPosition, StreamId};

/// The operation a subscription's own failures (its read timeout, an early end) are named
/// after.
const SUBSCRIBE_TO_SHARD: &str = "SubscribeToShard";

/// An open subscription.
struct Live {
    events: Box<dyn EventStream>,
    /// Opened after ListShards said the shard is closed: a caught-up event ends the shard.
    after_close: bool,
    /// Events received on it.
    received: u64,
    /// When it must be renewed ([`FanOutConfig::max_subscription_time`]).
    renew_at: Option<Instant>,
}

/// One shard's fan-out state (see the module docs).
pub(crate) struct Subscriber {
    api: Arc<dyn ConsumerApi>,
    stream: StreamId,
    consumer_arn: String,
    shard_id: String,
    position: ReadPosition,
    config: FanOutConfig,
    counters: Arc<Counters>,
    continuation: Option<String>,
    live: Option<Live>,
    ended: Option<Vec<ChildShard>>,
    retry: Retry,
    /// Since when the subscription has been caught up (for the closed-shard check).
    idle_since: Option<Instant>,
    /// The children ListShards reported: the shard is closed.
    closed: Option<Vec<ChildShard>>,
}

/// How waiting for the next event ended.
enum Next {
    Event(ShardEvent),
    /// The service ended the subscription, or it reached its maximum time.
    Ended,
    Failed(KinesisError),
}

impl Subscriber {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        api: Arc<dyn ConsumerApi>,
        stream: StreamId,
        consumer_arn: String,
        shard_id: String,
        hash_range: Option<aggregation_proto::HashRange>,
        start: StartingPosition,
        config: FanOutConfig,
        counters: Arc<Counters>,
    ) -> Self {
        let retry = Retry::new(config.retry_policy());
        Self {
            api,
            stream,
            consumer_arn,
            shard_id,
            position: ReadPosition::new(hash_range, start),
            config,
            counters,
            continuation: None,
            live: None,
            ended: None,
            retry,
            idle_since: None,
            closed: None,
        }
    }

    /// The next batch: one event of the open subscription, subscribing (again) first when
    /// there is none. Failures are retried after a backoff; a normal end is renewed at once.
    pub(crate) async fn next(&mut self) -> Result<ShardBatch, RetrievalError> {
        self.position.check_start()?;
        loop {
            if let Some(children) = &self.ended {
                return Ok(ShardBatch {
                    shard_end: Some(children.clone()),
                    ..ShardBatch::default()
                });
            }
            if self.live.is_none()
                && let Err(error) = self.subscribe().await
            {
                self.retry.failed(error, &self.counters)?;
                continue;
            }
            match self.next_event().await {
                Next::Event(event) => {
                    self.retry.succeeded();
                    return self.accept(event).await;
                }
                Next::Ended => {
                    self.live = None;
                    add(&self.counters.subscriptions_ended, 1);
                    debug!(
                        continuation = self.continuation.as_deref(),
                        "subscription ended; subscribing again from the continuation"
                    );
                }
                Next::Failed(error) => {
                    self.live = None;
                    self.retry.failed(error, &self.counters)?;
                }
            }
        }
    }

    /// Where the next subscription starts (see the module docs).
    fn subscribe_start(&self) -> SubscribeStart {
        if let Some(continuation) = &self.continuation {
            return SubscribeStart::AfterSequence(continuation.clone());
        }
        match self.position.resume_at() {
            ResumeAt::Sequence(sequence_number) => SubscribeStart::AtSequence(sequence_number),
            ResumeAt::TrimHorizon => SubscribeStart::TrimHorizon,
            ResumeAt::Latest => SubscribeStart::Latest,
            ResumeAt::Timestamp(at) => SubscribeStart::AtTimestamp(at),
        }
    }

    /// Waits out the backoff, then opens a subscription (bounded by the read timeout).
    async fn subscribe(&mut self) -> Result<(), KinesisError> {
        if let Some(at) = self.retry.not_before() {
            tokio::time::sleep_until(at).await;
        }
        let start = self.subscribe_start();
        let requested_at = SystemTime::now();
        add(&self.counters.subscribe_calls, 1);
        let limit = self.config.read_timeout;
        let call = self
            .api
            .subscribe(&self.consumer_arn, &self.shard_id, &start);
        let events = match tokio::time::timeout(limit, call).await {
            Ok(result) => result?,
            Err(_) => return Err(KinesisError::timeout(SUBSCRIBE_TO_SHARD, limit)),
        };
        if start == SubscribeStart::Latest {
            self.position.latest_requested(requested_at);
        }
        debug!(?start, "subscribed");
        let renew_at = self
            .config
            .max_subscription_time
            .map(|limit| later(Instant::now(), limit));
        self.live = Some(Live {
            events,
            after_close: self.closed.is_some(),
            received: 0,
            renew_at,
        });
        Ok(())
    }

    /// The next event of the open subscription, bounded by the read timeout and the
    /// subscription's maximum time.
    async fn next_event(&mut self) -> Next {
        let Some(live) = self.live.as_mut() else {
            return Next::Ended;
        };
        let limit = self.config.read_timeout;
        let renew = async {
            match live.renew_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::time::timeout(limit, live.events.next_event());
        tokio::select! {
            biased;
            result = event => match result {
                Ok(Ok(Some(event))) => {
                    live.received += 1;
                    Next::Event(event)
                }
                // Ended before a single event: not the 5-minute end, a refusal in disguise; back
                // off rather than subscribe again in a tight loop.
                Ok(Ok(None)) if live.received == 0 => Next::Failed(KinesisError::new(
                    SUBSCRIBE_TO_SHARD,
                    Class::Transient,
                    "SubscriptionEndedEarly",
                    "the subscription ended before its first event",
                )),
                Ok(Ok(None)) => Next::Ended,
                Ok(Err(error)) => Next::Failed(error),
                Err(_) => Next::Failed(KinesisError::timeout(SUBSCRIBE_TO_SHARD, limit)),
            },
            () = renew => Next::Ended,
        }
    }

    /// Turns an event into a batch and moves the position past it; an event without a
    /// continuation ends the shard.
    async fn accept(&mut self, event: ShardEvent) -> Result<ShardBatch, RetrievalError> {
        let ShardEvent {
            records,
            continuation_sequence_number,
            millis_behind_latest,
            child_shards,
        } = event;
        add(&self.counters.subscription_events, 1);
        self.counters.read_succeeded();
        let continuation = continuation_sequence_number.filter(|c| !c.is_empty());
        // The children first: if finding them fails, the event is dropped before the position
        // moved, and the next subscription (from the previous continuation) reads it again.
        let children = match continuation {
            Some(_) => None,
            None => {
                self.live = None;
                Some(if child_shards.is_empty() {
                    self.find_children().await?
                } else {
                    child_shards
                })
            }
        };
        let kinesis_records = records.len();
        let bytes: usize = records.iter().map(|record| record.data.len()).sum();
        let taken = self.position.cursor.take(records);
        if continuation.is_some() {
            self.continuation = continuation;
        }
        if let Some(children) = &children {
            info!(
                children = ?children.iter().map(|child| &child.shard_id).collect::<Vec<_>>(),
                "shard end reached"
            );
            self.ended = Some(children.clone());
        }
        let caught_up = kinesis_records == 0 && millis_behind_latest.is_none_or(|ms| ms <= 0);
        let shard_end = match children {
            Some(children) => Some(children),
            None if caught_up => self.check_closed().await,
            None => {
                self.idle_since = None;
                None
            }
        };
        add(&self.counters.batches, 1);
        add(&self.counters.kinesis_records, kinesis_records);
        add(&self.counters.bytes, bytes);
        add(&self.counters.records_delivered, taken.records.len());
        add(&self.counters.records_skipped, taken.skipped);
        add(&self.counters.records_filtered, taken.filtered);
        debug!(
            kinesis_records,
            records = taken.records.len(),
            skipped = taken.skipped,
            filtered = taken.filtered,
            millis_behind_latest,
            "event"
        );
        Ok(ShardBatch {
            records: taken.records,
            millis_behind_latest,
            shard_end,
            kinesis_records,
            bytes,
        })
    }

    /// The closed-shard safety net ([`FanOutConfig::closed_shard_check`]), on a caught-up
    /// event: `Some(children)` when this ends the shard.
    async fn check_closed(&mut self) -> Option<Vec<ChildShard>> {
        let interval = self.config.closed_shard_check?;
        if let Some(live) = &self.live
            && live.after_close
            && let Some(children) = self.closed.clone()
        {
            info!(
                children = ?children.iter().map(|child| &child.shard_id).collect::<Vec<_>>(),
                "shard end reached (closed per ListShards, and caught up)"
            );
            self.live = None;
            self.ended = Some(children.clone());
            return Some(children);
        }
        let now = Instant::now();
        let since = *self.idle_since.get_or_insert(now);
        if self.closed.is_some() || now.saturating_duration_since(since) < interval {
            return None;
        }
        self.idle_since = Some(now);
        add(&self.counters.list_shards_calls, 1);
        let listing = ShardListing::After(self.shard_id.clone());
        match self.api.list_shards(&self.stream, &listing).await {
            Ok(shards) => {
                let children = children_of(&self.shard_id, shards);
                if !children.is_empty() {
                    info!(
                        "the shard is closed but its subscription did not say so: subscribing again to reach its end"
                    );
                    self.closed = Some(children);
                    // The next subscription opens after the close: its caught-up event is final.
                    self.live = None;
                }
            }
            Err(error) => {
                debug!(
                    code = error.code(),
                    "closed-shard check failed; trying again later"
                )
            }
        }
        None
    }

    /// The children of this (closed) shard from ListShards, retried like any other call.
    async fn find_children(&mut self) -> Result<Vec<ChildShard>, RetrievalError> {
        loop {
            if let Some(at) = self.retry.not_before() {
                tokio::time::sleep_until(at).await;
            }
            add(&self.counters.list_shards_calls, 1);
            let listing = ShardListing::After(self.shard_id.clone());
            match self.api.list_shards(&self.stream, &listing).await {
                Ok(shards) => {
                    self.retry.succeeded();
                    return Ok(children_of(&self.shard_id, shards));
                }
                Err(error) if error.class() == Class::NotFound => return Ok(Vec::new()),
                Err(error) => self.retry.failed(error, &self.counters)?,
            }
        }
    }
}
