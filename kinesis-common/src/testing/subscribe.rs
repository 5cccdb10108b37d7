//! SubscribeToShard: subscriptions whose events carry a shard's records, with continuation
//! sequence numbers, ending after a number of events or at a closed shard's end with its
//! children; refusals, drops and stalls scripted per subscription.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::read::Start;
use super::streams::{StoredRecord, not_found};
use super::{FakeKinesis, Operation};
use crate::api::impl_calls;
use crate::api::operation::SUBSCRIBE_TO_SHARD;
use crate::{
    BoxFuture, ErrorClass, EventStream, KinesisError, ShardEvent, StreamId, SubscribeStart,
    SubscribeToShard,
};

/// How a subscription ends once its events are spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionEnd {
    /// The service ends it without an error (`Ok(None)`), as it does every 5 minutes.
    Ended,
    /// The connection drops: the next event is a `Transient` error.
    Dropped,
    /// No event ever comes again: only the caller's read timeout ends it.
    Stalled,
}

/// How one subscription goes ([`FakeKinesis::plan_subscriptions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionPlan {
    /// `Some((class, code))`: SubscribeToShard itself fails so.
    pub refuse: Option<(ErrorClass, String)>,
    /// Events delivered before it ends (`None`: as many as
    /// [`set_events_per_subscription`](FakeKinesis::set_events_per_subscription) says, by
    /// default until the shard's end).
    pub events: Option<usize>,
    /// How it ends after those events.
    pub end: SubscriptionEnd,
    /// It starts this many records before the requested position (a service that sends some
    /// again).
    pub overlap: usize,
}

impl SubscriptionPlan {
    /// Accepted; events until the fake-wide limit or the shard's end; then ended.
    pub fn healthy() -> Self {
        Self {
            refuse: None,
            events: None,
            end: SubscriptionEnd::Ended,
            overlap: 0,
        }
    }

    /// Refused: SubscribeToShard fails with `class` and `code`.
    pub fn refused(class: ErrorClass, code: impl Into<String>) -> Self {
        Self {
            refuse: Some((class, code.into())),
            ..Self::healthy()
        }
    }

    /// Accepted, `events` events, then `end`.
    pub fn ending(events: usize, end: SubscriptionEnd) -> Self {
        Self {
            events: Some(events),
            end,
            ..Self::healthy()
        }
    }

    /// The same, starting `records` records before the requested position.
    pub fn overlapping(mut self, records: usize) -> Self {
        self.overlap = records;
        self
    }
}

/// One SubscribeToShard call, as [`FakeKinesis::subscriptions`] logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionRequest {
    /// When it came (tokio time).
    pub at: Instant,
    /// The consumer's ARN.
    pub consumer_arn: String,
    /// The shard.
    pub shard_id: String,
    /// Where it was asked to start.
    pub start: SubscribeStart,
}

impl FakeKinesis {
    /// The next subscriptions (of any shard without a plan of its own) go so, one plan each,
    /// in order; healthy once the plans are spent.
    pub fn plan_subscriptions(&self, plans: impl IntoIterator<Item = SubscriptionPlan>) {
        self.state().plans.extend(plans);
    }

    /// The next subscriptions to `shard_id` go so, before the plans of
    /// [`plan_subscriptions`](Self::plan_subscriptions).
    pub fn plan_subscriptions_of(
        &self,
        shard_id: &str,
        plans: impl IntoIterator<Item = SubscriptionPlan>,
    ) {
        self.state()
            .shard_plans
            .entry(shard_id.to_owned())
            .or_default()
            .extend(plans);
    }

    /// Records per event, at most (default 10).
    pub fn set_records_per_event(&self, records: usize) {
        self.state().records_per_event = records.max(1);
    }

    /// Events of a healthy subscription before the service ends it (`None`, the default: until
    /// the shard's end).
    pub fn set_events_per_subscription(&self, events: Option<usize>) {
        self.state().events_per_subscription = events;
    }

    /// How long a subscription caught up with an open shard waits before its next (possibly
    /// empty) event (default 1 s).
    pub fn set_idle_event_interval(&self, interval: Duration) {
        self.state().idle_event_interval = interval;
    }

    /// While set, subscriptions never reach a closed shard's end: caught up, they send empty
    /// events as for an open shard (as some emulators do). GetRecords is not affected.
    pub fn set_silent_shard_end(&self, silent: bool) {
        self.state().silent_end = silent;
    }

    /// Every SubscribeToShard call so far, in order (refused ones too).
    pub fn subscriptions(&self) -> Vec<SubscriptionRequest> {
        self.state().subscriptions.clone()
    }

    /// Subscriptions open now (accepted and not yet dropped by the caller).
    pub fn open_subscriptions(&self) -> usize {
        self.state().open_subscriptions
    }

    /// Events handed out so far, across subscriptions.
    pub fn events_sent(&self) -> u64 {
        self.state().events_sent
    }
}

impl_calls! {
    impl[] SubscribeToShard for FakeKinesis {
        async fn subscribe(
            &self,
            consumer_arn: &'a str,
            shard_id: &'a str,
            start: &'a SubscribeStart,
        ) -> Box<dyn EventStream> {
            self.enter(Operation::SubscribeToShard).await?;
            let mut state = self.state();
            state.subscriptions.push(SubscriptionRequest {
                at: Instant::now(),
                consumer_arn: consumer_arn.to_owned(),
                shard_id: shard_id.to_owned(),
                start: start.clone(),
            });
            let plan = state
                .shard_plans
                .get_mut(shard_id)
                .and_then(VecDeque::pop_front)
                .or_else(|| state.plans.pop_front())
                .unwrap_or_else(SubscriptionPlan::healthy);
            if let Some((class, code)) = plan.refuse {
                return Err(KinesisError::new(
                    SUBSCRIBE_TO_SHARD,
                    class,
                    code,
                    "injected by the fake",
                ));
            }
            let (stream, consumer) = state.consumer_by_arn(consumer_arn).ok_or_else(|| {
                not_found(SUBSCRIBE_TO_SHARD, format_args!("Consumer {consumer_arn}"))
            })?;
            if consumer.current() != Some(crate::ConsumerStatus::Active) {
                return Err(super::faults::service_error(
                    SUBSCRIBE_TO_SHARD,
                    "ResourceInUseException",
                    &format!("Consumer {consumer_arn} is not ACTIVE"),
                ));
            }
            let fake = state
                .streams
                .get(&stream)
                .ok_or_else(|| not_found(SUBSCRIBE_TO_SHARD, format_args!("Stream {stream}")))?;
            let shard = fake
                .readable(shard_id)
                .ok_or_else(|| not_found(SUBSCRIBE_TO_SHARD, format_args!("Shard {shard_id}")))?;
            let at = Start::from(start)
                .index(&shard.records)
                .saturating_sub(plan.overlap);
            let continuation = match at {
                0 => "0".to_owned(),
                n => shard.records[n - 1].sequence_number_text.to_string(),
            };
            let left = plan.events.or(state.events_per_subscription);
            state.open_subscriptions += 1;
            Ok(Box::new(FakeEvents {
                fake: self.clone(),
                stream,
                shard_id: shard_id.to_owned(),
                at,
                left,
                end: plan.end,
                continuation,
                finished: false,
            }) as Box<dyn EventStream>)
        }
    }
}

/// The events of one subscription: read from the shard as it is when each is pulled.
#[derive(Debug)]
struct FakeEvents {
    fake: FakeKinesis,
    stream: StreamId,
    shard_id: String,
    /// The next record to send.
    at: usize,
    /// Events left before the plan's end (`None`: no limit).
    left: Option<usize>,
    end: SubscriptionEnd,
    continuation: String,
    /// The shard's end was sent: the subscription is over.
    finished: bool,
}

impl Drop for FakeEvents {
    fn drop(&mut self) {
        let mut state = self.fake.state();
        state.open_subscriptions = state.open_subscriptions.saturating_sub(1);
    }
}

impl FakeEvents {
    /// Whether the subscription is caught up and has no end to report: the service waits.
    fn idle(&self) -> Result<bool, KinesisError> {
        let state = self.fake.state();
        let shard = state
            .live_stream(&self.stream)
            .and_then(|(_, fake)| fake.readable(&self.shard_id))
            .ok_or_else(|| {
                not_found(SUBSCRIBE_TO_SHARD, format_args!("Shard {}", self.shard_id))
            })?;
        Ok(self.at >= shard.records.len() && (shard.shard.open || state.silent_end))
    }

    fn event(&mut self) -> Result<ShardEvent, KinesisError> {
        let mut state = self.fake.state();
        state.events_sent += 1;
        let (per_event, silent, behind, with_children) = (
            state.records_per_event,
            state.silent_end,
            state.millis_behind,
            state.child_shards_in_answers,
        );
        let fake = state
            .live_stream(&self.stream)
            .map(|(_, fake)| fake)
            .filter(|fake| fake.readable(&self.shard_id).is_some())
            .ok_or_else(|| {
                not_found(SUBSCRIBE_TO_SHARD, format_args!("Shard {}", self.shard_id))
            })?;
        let shard = fake.readable(&self.shard_id).ok_or_else(|| {
            not_found(SUBSCRIBE_TO_SHARD, format_args!("Shard {}", self.shard_id))
        })?;
        let len = shard.records.len();
        let start = self.at.min(len);
        let end = start.saturating_add(per_event).min(len);
        let records: Vec<_> = shard.records[start..end]
            .iter()
            .map(StoredRecord::received)
            .collect();
        self.at = end;
        if let Some(last) = shard.records[start..end].last() {
            self.continuation = last.sequence_number_text.to_string();
        }
        let at_end = !shard.shard.open && !silent && end >= len;
        if at_end {
            self.finished = true;
            self.end = SubscriptionEnd::Ended;
        }
        Ok(ShardEvent {
            records,
            continuation_sequence_number: (!at_end).then(|| self.continuation.clone()),
            millis_behind_latest: Some(behind.after(len - end)),
            child_shards: if at_end && with_children {
                fake.children_of(&self.shard_id)
            } else {
                Vec::new()
            },
        })
    }
}

impl EventStream for FakeEvents {
    fn next_event(&mut self) -> BoxFuture<'_, Result<Option<ShardEvent>, KinesisError>> {
        Box::pin(async move {
            if self.finished || self.left == Some(0) {
                return match self.end {
                    SubscriptionEnd::Ended => Ok(None),
                    SubscriptionEnd::Dropped => Err(KinesisError::new(
                        SUBSCRIBE_TO_SHARD,
                        ErrorClass::Transient,
                        "StreamInterrupted",
                        "the connection dropped (injected by the fake)",
                    )),
                    SubscriptionEnd::Stalled => std::future::pending().await,
                };
            }
            if let Some(left) = &mut self.left {
                *left -= 1;
            }
            if self.idle()? {
                let interval = self.fake.state().idle_event_interval;
                tokio::time::sleep(interval).await;
            }
            self.event().map(Some)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MillisBehind;

    const S0: &str = "shardId-000000000000";

    /// A stream of one shard holding `a`..`e`, and an ACTIVE consumer.
    fn fake() -> (FakeKinesis, String) {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 1);
        fake.append_data("s", S0, "key", ["a", "b", "c", "d", "e"]);
        fake.set_records_per_event(2);
        let consumer = fake.add_consumer("s", "app");
        (fake, consumer)
    }

    fn data(event: &ShardEvent) -> Vec<String> {
        event
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect()
    }

    fn sequences(fake: &FakeKinesis) -> Vec<String> {
        fake.stored("s")[0]
            .1
            .iter()
            .map(|r| r.sequence_number_text.to_string())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn events_carry_records_and_continuations_to_the_shard_end() {
        let (fake, consumer) = fake();
        let (low, high) = fake.split_in_half("s", S0);
        fake.set_millis_behind(MillisBehind::PerRecord(1_000));
        let mut events = fake
            .subscribe(&consumer, S0, &SubscribeStart::TrimHorizon)
            .await
            .unwrap();
        assert_eq!(fake.open_subscriptions(), 1);
        let sequences = sequences(&fake);
        let mut seen = Vec::new();
        while let Some(event) = events.next_event().await.unwrap() {
            seen.push((
                data(&event),
                event.continuation_sequence_number.clone(),
                event.millis_behind_latest,
                event.child_shards.len(),
            ));
        }
        assert_eq!(
            seen,
            [
                (
                    vec!["a".into(), "b".into()],
                    Some(sequences[1].clone()),
                    Some(3_000),
                    0
                ),
                (
                    vec!["c".into(), "d".into()],
                    Some(sequences[3].clone()),
                    Some(1_000),
                    0
                ),
                (vec!["e".into()], None, Some(0), 2),
            ]
        );
        assert_eq!(fake.events_sent(), 3);
        let _ = (low, high);
        drop(events);
        assert_eq!(fake.open_subscriptions(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn each_start_and_an_overlap() {
        let (fake, consumer) = fake();
        let sequences = sequences(&fake);
        let first = |start: SubscribeStart| {
            let fake = fake.clone();
            let consumer = consumer.clone();
            async move {
                let mut events = fake.subscribe(&consumer, S0, &start).await.unwrap();
                let event = events.next_event().await.unwrap().unwrap();
                data(&event)
            }
        };
        assert_eq!(
            first(SubscribeStart::AtSequence(sequences[1].clone())).await,
            ["b", "c"]
        );
        assert_eq!(
            first(SubscribeStart::AfterSequence(sequences[1].clone())).await,
            ["c", "d"]
        );
        fake.plan_subscriptions([SubscriptionPlan::healthy().overlapping(1)]);
        assert_eq!(
            first(SubscribeStart::AfterSequence(sequences[1].clone())).await,
            ["b", "c"]
        );
        let started = Instant::now();
        assert!(first(SubscribeStart::Latest).await.is_empty());
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(1),
            "an idle shard waits"
        );
        let starts: Vec<SubscribeStart> =
            fake.subscriptions().into_iter().map(|s| s.start).collect();
        assert_eq!(starts.len(), 4);
        assert_eq!(starts[3], SubscribeStart::Latest);
    }

    #[tokio::test(start_paused = true)]
    async fn plans_refuse_drop_stall_and_end_subscriptions() {
        let (fake, consumer) = fake();
        fake.plan_subscriptions([
            SubscriptionPlan::refused(ErrorClass::Transient, "ResourceInUseException"),
            SubscriptionPlan::ending(1, SubscriptionEnd::Dropped),
            SubscriptionPlan::ending(1, SubscriptionEnd::Stalled),
            SubscriptionPlan::ending(0, SubscriptionEnd::Ended),
        ]);
        let start = SubscribeStart::TrimHorizon;
        let refused = fake.subscribe(&consumer, S0, &start).await.err().unwrap();
        assert_eq!(refused.code(), "ResourceInUseException");
        assert_eq!(fake.open_subscriptions(), 0);

        let mut dropped = fake.subscribe(&consumer, S0, &start).await.unwrap();
        assert!(dropped.next_event().await.unwrap().is_some());
        let error = dropped.next_event().await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Transient);

        let mut stalled = fake.subscribe(&consumer, S0, &start).await.unwrap();
        assert!(stalled.next_event().await.unwrap().is_some());
        let wait = tokio::time::timeout(Duration::from_secs(600), stalled.next_event()).await;
        assert!(wait.is_err(), "no event comes");

        let mut ended = fake.subscribe(&consumer, S0, &start).await.unwrap();
        assert!(ended.next_event().await.unwrap().is_none());
        assert_eq!(fake.open_subscriptions(), 3);
        drop((dropped, stalled, ended));
        assert_eq!(fake.open_subscriptions(), 0);

        // A fake-wide limit, and a plan for one shard.
        fake.set_events_per_subscription(Some(2));
        fake.plan_subscriptions_of(S0, [SubscriptionPlan::ending(1, SubscriptionEnd::Ended)]);
        let mut events = fake.subscribe(&consumer, S0, &start).await.unwrap();
        assert!(events.next_event().await.unwrap().is_some());
        assert!(events.next_event().await.unwrap().is_none());
        let mut events = fake.subscribe(&consumer, S0, &start).await.unwrap();
        assert!(events.next_event().await.unwrap().is_some());
        assert!(events.next_event().await.unwrap().is_some());
        assert!(events.next_event().await.unwrap().is_none());
        assert_eq!(fake.call_count(Operation::SubscribeToShard), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_end_and_an_end_without_children() {
        let (fake, consumer) = fake();
        fake.close_shard("s", S0);
        fake.set_records_per_event(10);
        fake.set_silent_shard_end(true);
        let mut events = fake
            .subscribe(&consumer, S0, &SubscribeStart::TrimHorizon)
            .await
            .unwrap();
        let first = events.next_event().await.unwrap().unwrap();
        assert_eq!(first.records.len(), 5);
        assert!(first.continuation_sequence_number.is_some(), "no end said");
        let idle = events.next_event().await.unwrap().unwrap();
        assert!(idle.records.is_empty() && idle.continuation_sequence_number.is_some());
        fake.set_silent_shard_end(false);
        let end = events.next_event().await.unwrap().unwrap();
        assert_eq!(end.continuation_sequence_number, None);
        assert!(end.child_shards.is_empty());
        assert!(events.next_event().await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn records_appended_later_come_in_the_next_events() {
        let (fake, consumer) = fake();
        let mut events = fake
            .subscribe(&consumer, S0, &SubscribeStart::Latest)
            .await
            .unwrap();
        let writer = {
            let fake = fake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                fake.append_data("s", S0, "key", ["f"]);
            })
        };
        let event = events.next_event().await.unwrap().unwrap();
        assert_eq!(
            data(&event),
            ["f"],
            "the idle wait sees what arrived meanwhile"
        );
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_consumers_inactive_consumers_and_missing_shards() {
        let (fake, consumer) = fake();
        let start = SubscribeStart::TrimHorizon;
        let unknown = fake
            .subscribe("arn:consumer/x", S0, &start)
            .await
            .err()
            .unwrap();
        assert_eq!(unknown.class(), ErrorClass::NotFound);
        fake.set_consumer_states("s", "late", [Some(crate::ConsumerStatus::Creating)]);
        let creating = fake.consumer_arn("s", "late");
        let refused = fake.subscribe(&creating, S0, &start).await.err().unwrap();
        assert_eq!(refused.code(), "ResourceInUseException");
        let mut events = fake.subscribe(&consumer, S0, &start).await.unwrap();
        fake.remove_shard("s", S0);
        let gone = events.next_event().await.unwrap_err();
        assert_eq!(gone.class(), ErrorClass::NotFound);
        let gone = fake.subscribe(&consumer, S0, &start).await.err().unwrap();
        assert_eq!(gone.class(), ErrorClass::NotFound);
        fake.fail(Operation::SubscribeToShard, ErrorClass::Throttled, 1);
        let failed = fake.subscribe(&consumer, S0, &start).await.err().unwrap();
        assert_eq!(failed.class(), ErrorClass::Throttled);
        assert_eq!(fake.open_subscriptions(), 1);
    }
}
