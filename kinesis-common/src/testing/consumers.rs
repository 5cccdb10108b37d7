//! DescribeStreamSummary, RegisterStreamConsumer and DescribeStreamConsumer: stream consumers
//! whose states follow a script (CREATING, then ACTIVE by default).

use std::collections::VecDeque;
use std::time::Duration;

use super::faults::service_error;
use super::streams::{not_found, stream_arn};
use super::{FakeKinesis, Operation, State};
use crate::api::impl_calls;
use crate::api::operation::{
    DESCRIBE_STREAM_CONSUMER, DESCRIBE_STREAM_SUMMARY, REGISTER_STREAM_CONSUMER,
};
use crate::{ConsumerInfo, ConsumerStatus, StreamConsumers, StreamId, StreamSummary};

/// A consumer of a stream: its ARN and the states DescribeStreamConsumer reports, one per
/// call, the last one staying (`None`: not registered).
#[derive(Debug)]
pub(super) struct FakeConsumer {
    pub(super) arn: String,
    pub(super) states: VecDeque<Option<ConsumerStatus>>,
}

impl FakeConsumer {
    /// Its state now (what the next DescribeStreamConsumer reports).
    pub(super) fn current(&self) -> Option<ConsumerStatus> {
        self.states.front().copied().flatten()
    }

    /// Its state for one DescribeStreamConsumer call: the script moves on, the last state stays.
    fn describe(&mut self) -> Option<ConsumerStatus> {
        if self.states.len() > 1 {
            self.states.pop_front().flatten()
        } else {
            self.current()
        }
    }
}

/// The ARN of consumer `name` of the stream whose ARN is `stream_arn`.
fn consumer_arn(stream_arn: &str, name: &str) -> String {
    format!("{stream_arn}/consumer/{name}:1")
}

impl State {
    /// The consumer entry `name` of `stream`, made (unregistered) if missing.
    fn consumer_entry(&mut self, stream: &StreamId, name: &str) -> &mut FakeConsumer {
        let key = self.stream_key(stream).expect("stream exists");
        let arn = consumer_arn(&stream_arn(&key), name);
        let fake = self.streams.get_mut(&key).expect("stream exists");
        fake.consumers
            .entry(name.to_owned())
            .or_insert_with(|| FakeConsumer {
                arn,
                states: VecDeque::from([None]),
            })
    }

    /// The stream and consumer name a consumer ARN the fake gave names.
    pub(super) fn consumer_by_arn(&self, arn: &str) -> Option<(StreamId, &FakeConsumer)> {
        let (stream_arn, _) = arn.split_once("/consumer/")?;
        let (key, fake) = self.live_stream(&StreamId::from(stream_arn))?;
        let consumer = fake.consumers.values().find(|c| c.arn == arn)?;
        Some((key, consumer))
    }
}

impl FakeKinesis {
    /// DescribeStreamConsumer calls for consumer `name` of `stream` report these states, one
    /// per call, the last one staying (`None`: not registered, `ResourceNotFoundException`).
    /// RegisterStreamConsumer refuses a consumer whose current state is `Some`.
    ///
    /// # Panics
    /// When the stream does not exist (a test bug).
    pub fn set_consumer_states(
        &self,
        stream: impl Into<StreamId>,
        name: &str,
        states: impl IntoIterator<Item = Option<ConsumerStatus>>,
    ) {
        let mut states: VecDeque<_> = states.into_iter().collect();
        if states.is_empty() {
            states.push_back(None);
        }
        self.state().consumer_entry(&stream.into(), name).states = states;
    }

    /// The states a consumer goes through once registered: RegisterStreamConsumer answers the
    /// first, DescribeStreamConsumer calls the next ones, the last staying. By default
    /// `[Creating, Active]`; `[Active]` for a consumer usable at once.
    pub fn set_registration_states(&self, states: impl IntoIterator<Item = ConsumerStatus>) {
        let states: Vec<_> = states.into_iter().collect();
        self.state().registration_states = if states.is_empty() {
            vec![ConsumerStatus::Active]
        } else {
            states
        };
    }

    /// Registers consumer `name` of `stream` directly, ACTIVE; returns its ARN (what
    /// SubscribeToShard takes).
    ///
    /// # Panics
    /// When the stream does not exist (a test bug).
    pub fn add_consumer(&self, stream: impl Into<StreamId>, name: &str) -> String {
        let mut state = self.state();
        let consumer = state.consumer_entry(&stream.into(), name);
        consumer.states = VecDeque::from([Some(ConsumerStatus::Active)]);
        consumer.arn.clone()
    }

    /// The ARN consumer `name` of `stream` has (or would have once registered).
    pub fn consumer_arn(&self, stream: impl Into<StreamId>, name: &str) -> String {
        consumer_arn(&self.stream_arn_of(stream), name)
    }
}

impl_calls! {
    impl[] StreamConsumers for FakeKinesis {
        async fn describe_stream_summary(&self, stream: &'a StreamId) -> StreamSummary {
            self.enter(Operation::DescribeStreamSummary).await?;
            let state = self.state();
            let (key, fake) = state.live_stream(stream).ok_or_else(|| {
                not_found(DESCRIBE_STREAM_SUMMARY, format_args!("Stream {stream}"))
            })?;
            let arn = stream_arn(&key);
            let name = arn.rsplit_once("stream/").map_or(arn.as_str(), |(_, n)| n);
            let mut summary = StreamSummary::new(name, arn.clone());
            let open = fake
                .shards
                .iter()
                .filter(|s| s.shard.open && !s.gone)
                .count();
            summary.open_shard_count = u32::try_from(open).ok();
            summary.retention = Some(Duration::from_secs(24 * 3600));
            Ok(summary)
        }

        async fn register_consumer(
            &self,
            stream_arn: &'a str,
            consumer_name: &'a str,
        ) -> ConsumerInfo {
            self.enter(Operation::RegisterStreamConsumer).await?;
            let mut state = self.state();
            let stream = StreamId::from(stream_arn);
            if state.live_stream(&stream).is_none() {
                return Err(not_found(
                    REGISTER_STREAM_CONSUMER,
                    format_args!("Stream {stream_arn}"),
                ));
            }
            let states = state.registration_states.clone();
            let consumer = state.consumer_entry(&stream, consumer_name);
            if consumer.current().is_some() {
                return Err(service_error(
                    REGISTER_STREAM_CONSUMER,
                    "ResourceInUseException",
                    &format!("Consumer {consumer_name} exists"),
                ));
            }
            consumer.states = states.into_iter().map(Some).collect();
            Ok(ConsumerInfo {
                consumer_arn: consumer.arn.clone(),
                status: consumer.current().unwrap_or(ConsumerStatus::Active),
            })
        }

        async fn describe_consumer(
            &self,
            stream_arn: &'a str,
            consumer_name: &'a str,
        ) -> ConsumerInfo {
            self.enter(Operation::DescribeStreamConsumer).await?;
            let mut state = self.state();
            let stream = StreamId::from(stream_arn);
            let missing = || {
                not_found(
                    DESCRIBE_STREAM_CONSUMER,
                    format_args!("Consumer {consumer_name}"),
                )
            };
            let Some((key, _)) = state.live_stream(&stream) else {
                return Err(missing());
            };
            let consumer = state
                .streams
                .get_mut(&key)
                .and_then(|s| s.consumers.get_mut(consumer_name))
                .ok_or_else(missing)?;
            let status = consumer.describe().ok_or_else(missing)?;
            Ok(ConsumerInfo {
                consumer_arn: consumer.arn.clone(),
                status,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorClass;
    use crate::testing::Fault;

    fn fake() -> (FakeKinesis, String) {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 3);
        let arn = fake.stream_arn_of("s");
        (fake, arn)
    }

    #[tokio::test(start_paused = true)]
    async fn the_summary_names_the_stream_and_its_arn() {
        let (fake, arn) = fake();
        let summary = fake
            .describe_stream_summary(&StreamId::from("s"))
            .await
            .unwrap();
        assert_eq!(summary.stream_name, "s");
        assert_eq!(summary.stream_arn, arn);
        assert_eq!(summary.open_shard_count, Some(3));
        assert_eq!(fake.stream_arn(&StreamId::from("s")).await.unwrap(), arn);
        let missing = fake
            .describe_stream_summary(&StreamId::from("other"))
            .await
            .unwrap_err();
        assert_eq!(missing.class(), ErrorClass::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn a_registration_goes_from_creating_to_active() {
        let (fake, arn) = fake();
        let missing = fake.describe_consumer(&arn, "app").await.unwrap_err();
        assert_eq!(missing.class(), ErrorClass::NotFound);
        let registered = fake.register_consumer(&arn, "app").await.unwrap();
        assert_eq!(registered.status, ConsumerStatus::Creating);
        assert_eq!(registered.consumer_arn, fake.consumer_arn("s", "app"));
        let states: Vec<ConsumerStatus> = {
            let mut states = Vec::new();
            for _ in 0..3 {
                states.push(fake.describe_consumer(&arn, "app").await.unwrap().status);
            }
            states
        };
        use ConsumerStatus::{Active, Creating};
        assert_eq!(states, [Creating, Active, Active]);
        let again = fake.register_consumer(&arn, "app").await.unwrap_err();
        assert_eq!(again.code(), "ResourceInUseException");
        assert_eq!(again.class(), ErrorClass::Transient);
        assert_eq!(fake.call_count(Operation::RegisterStreamConsumer), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_states_and_registration_errors() {
        let (fake, arn) = fake();
        use ConsumerStatus::{Active, Deleting};
        fake.set_consumer_states("s", "app", [Some(Deleting), None]);
        let first = fake.describe_consumer(&arn, "app").await.unwrap();
        assert_eq!(first.status, Deleting);
        assert!(fake.describe_consumer(&arn, "app").await.is_err());
        fake.fail(
            Operation::RegisterStreamConsumer,
            ErrorClass::AccessDenied,
            1,
        );
        let refused = fake.register_consumer(&arn, "app").await.unwrap_err();
        assert_eq!(refused.class(), ErrorClass::AccessDenied);
        fake.inject(
            Operation::RegisterStreamConsumer,
            [Fault::ServiceError {
                code: "LimitExceededException".into(),
                message: "too many".into(),
            }],
        );
        let throttled = fake.register_consumer(&arn, "app").await.unwrap_err();
        assert_eq!(throttled.class(), ErrorClass::Throttled);
        fake.set_registration_states([Active]);
        let registered = fake.register_consumer(&arn, "app").await.unwrap();
        assert_eq!(registered.status, Active);
        let direct = fake.add_consumer("s", "other");
        let described = fake.describe_consumer(&arn, "other").await.unwrap();
        assert_eq!((described.consumer_arn, described.status), (direct, Active));
    }
}
