//! GetShardIterator and GetRecords: iterators into a shard's records, pages of them, the end
//! of a closed shard with its children, expired iterators.

use std::time::{Duration, SystemTime};

use aggregation_proto::compare_sequence_numbers;
use tokio::time::Instant;

use super::streams::{StoredRecord, not_found};
use super::{FakeKinesis, Operation, State};
use crate::api::impl_calls;
use crate::api::operation::{GET_RECORDS, GET_SHARD_ITERATOR};
use crate::{
    ErrorClass, KinesisError, ReadShard, RecordsPage, ShardIteratorStart, StreamId, SubscribeStart,
};

/// How far behind the shard's tip an answer says it is (`MillisBehindLatest`); an answer that
/// reached the last record always says 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MillisBehind {
    /// This much whenever records are left (the default: 1,000).
    Fixed(i64),
    /// This much per record left after the answer.
    PerRecord(i64),
}

impl MillisBehind {
    pub(super) fn after(self, records_left: usize) -> i64 {
        if records_left == 0 {
            return 0;
        }
        match self {
            Self::Fixed(millis) => millis,
            Self::PerRecord(millis) => {
                millis.saturating_mul(i64::try_from(records_left).unwrap_or(i64::MAX))
            }
        }
    }
}

/// One GetShardIterator call, as [`FakeKinesis::iterator_requests`] logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IteratorRequest {
    /// When it came (tokio time).
    pub at: Instant,
    /// The stream, as the caller named it.
    pub stream: StreamId,
    /// The shard.
    pub shard_id: String,
    /// Where the iterator was asked to point.
    pub start: ShardIteratorStart,
}

/// A position in a shard, for iterators and subscriptions alike.
pub(super) enum Start<'a> {
    TrimHorizon,
    Latest,
    AtTimestamp(SystemTime),
    AtSequence(&'a str),
    AfterSequence(&'a str),
}

impl<'a> From<&'a ShardIteratorStart> for Start<'a> {
    fn from(start: &'a ShardIteratorStart) -> Self {
        match start {
            ShardIteratorStart::TrimHorizon => Self::TrimHorizon,
            ShardIteratorStart::Latest => Self::Latest,
            ShardIteratorStart::AtTimestamp(at) => Self::AtTimestamp(*at),
            ShardIteratorStart::AtSequence(s) => Self::AtSequence(s),
        }
    }
}

impl<'a> From<&'a SubscribeStart> for Start<'a> {
    fn from(start: &'a SubscribeStart) -> Self {
        match start {
            SubscribeStart::TrimHorizon => Self::TrimHorizon,
            SubscribeStart::Latest => Self::Latest,
            SubscribeStart::AtTimestamp(at) => Self::AtTimestamp(*at),
            SubscribeStart::AtSequence(s) => Self::AtSequence(s),
            SubscribeStart::AfterSequence(s) => Self::AfterSequence(s),
        }
    }
}

impl Start<'_> {
    /// The index of the first record read from here.
    pub(super) fn index(&self, records: &[StoredRecord]) -> usize {
        let first = |keep: &dyn Fn(&StoredRecord) -> bool| {
            records.iter().position(keep).unwrap_or(records.len())
        };
        match self {
            Self::TrimHorizon => 0,
            Self::Latest => records.len(),
            Self::AtTimestamp(at) => first(&|r| r.arrival >= *at),
            Self::AtSequence(s) => {
                first(&|r| compare_sequence_numbers(&r.sequence_number_text, s).is_ge())
            }
            Self::AfterSequence(s) => {
                first(&|r| compare_sequence_numbers(&r.sequence_number_text, s).is_gt())
            }
        }
    }
}

/// What an iterator says: `{generation}|{issued}|{index}|{shard}|{stream}`, `issued` in
/// milliseconds of tokio time since the fake was made (the stream last: an ARN has no `|`).
struct ParsedIterator<'a> {
    generation: u64,
    issued_millis: u128,
    index: usize,
    shard_id: &'a str,
    stream: StreamId,
}

impl State {
    /// A new iterator at `index`.
    fn iterator(&self, index: usize, shard_id: &str, stream: &StreamId) -> String {
        let issued = self.epoch.elapsed().as_millis();
        let generation = self.generation;
        format!(
            "{generation}|{issued}|{index}|{shard_id}|{}",
            stream.as_str()
        )
    }

    /// Whether `iterator` expired: older than the lifetime, or of an older generation.
    fn expired(&self, iterator: &ParsedIterator<'_>) -> bool {
        let age = self
            .epoch
            .elapsed()
            .as_millis()
            .saturating_sub(iterator.issued_millis);
        iterator.generation < self.generation
            || self
                .iterator_lifetime
                .is_some_and(|lifetime| age > lifetime.as_millis())
    }
}

fn parse_iterator(iterator: &str) -> Option<ParsedIterator<'_>> {
    let mut parts = iterator.splitn(5, '|');
    Some(ParsedIterator {
        generation: parts.next()?.parse().ok()?,
        issued_millis: parts.next()?.parse().ok()?,
        index: parts.next()?.parse().ok()?,
        shard_id: parts.next()?,
        stream: StreamId::from(parts.next()?),
    })
}

impl FakeKinesis {
    /// Expires every iterator handed out so far: GetRecords with one answers
    /// `ExpiredIteratorException`.
    pub fn expire_iterators(&self) {
        self.state().generation += 1;
    }

    /// Iterators expire this long after they were handed out (GetShardIterator's, and each
    /// next iterator GetRecords answers), as the service's do after 5 minutes; `None`, the
    /// default: only [`expire_iterators`](Self::expire_iterators) expires them.
    pub fn set_iterator_lifetime(&self, lifetime: Option<Duration>) {
        self.state().iterator_lifetime = lifetime;
    }

    /// What GetRecords answers (and subscription events say) as `MillisBehindLatest`.
    pub fn set_millis_behind(&self, behind: MillisBehind) {
        self.state().millis_behind = behind;
    }

    /// Whether the last answer of a closed shard (GetRecords, a subscription's last event)
    /// lists its children (the default), or none: callers must then find them with ListShards,
    /// as some emulators make them.
    pub fn set_child_shards_in_answers(&self, listed: bool) {
        self.state().child_shards_in_answers = listed;
    }

    /// Every GetShardIterator call so far, in order.
    pub fn iterator_requests(&self) -> Vec<IteratorRequest> {
        self.state().iterator_requests.clone()
    }
}

impl_calls! {
    impl[] ReadShard for FakeKinesis {
        async fn get_shard_iterator(
            &self,
            stream: &'a StreamId,
            shard_id: &'a str,
            start: &'a ShardIteratorStart,
        ) -> String {
            self.enter(Operation::GetShardIterator).await?;
            let mut state = self.state();
            state.iterator_requests.push(IteratorRequest {
                at: Instant::now(),
                stream: stream.clone(),
                shard_id: shard_id.to_owned(),
                start: start.clone(),
            });
            let (key, fake) = state
                .live_stream(stream)
                .ok_or_else(|| not_found(GET_SHARD_ITERATOR, format_args!("Stream {stream}")))?;
            let shard = fake
                .readable(shard_id)
                .ok_or_else(|| not_found(GET_SHARD_ITERATOR, format_args!("Shard {shard_id}")))?;
            let index = Start::from(start).index(&shard.records);
            Ok(state.iterator(index, shard_id, &key))
        }

        async fn get_records(
            &self,
            _stream: &'a StreamId,
            iterator_text: &'a str,
            limit: i32,
        ) -> RecordsPage {
            self.enter(Operation::GetRecords).await?;
            let invalid = |message: &str| {
                KinesisError::new(
                    GET_RECORDS,
                    ErrorClass::InvalidRequest,
                    "InvalidArgumentException",
                    message,
                )
            };
            let Some(iterator) = parse_iterator(iterator_text) else {
                return Err(invalid("not an iterator of this fake"));
            };
            let (index, shard_id, stream) = (iterator.index, iterator.shard_id, &iterator.stream);
            let limit = usize::try_from(limit)
                .ok()
                .filter(|l| (1..=10_000).contains(l))
                .ok_or_else(|| invalid("Limit must be between 1 and 10000"))?;
            let state = self.state();
            if state.expired(&iterator) {
                return Err(KinesisError::new(
                    GET_RECORDS,
                    ErrorClass::ExpiredIterator,
                    "ExpiredIteratorException",
                    "Iterator expired",
                ));
            }
            let (_, fake) = state
                .live_stream(stream)
                .ok_or_else(|| not_found(GET_RECORDS, format_args!("Stream {stream}")))?;
            let shard = fake
                .readable(shard_id)
                .ok_or_else(|| not_found(GET_RECORDS, format_args!("Shard {shard_id}")))?;
            let len = shard.records.len();
            let index = index.min(len);
            let end = index.saturating_add(limit).min(len);
            let ended = !shard.shard.open && end == len;
            Ok(RecordsPage {
                records: shard.records[index..end]
                    .iter()
                    .map(StoredRecord::received)
                    .collect(),
                next_iterator: (!ended).then(|| state.iterator(end, shard_id, stream)),
                millis_behind_latest: Some(state.millis_behind.after(len - end)),
                child_shards: if ended && state.child_shards_in_answers {
                    fake.children_of(shard_id)
                } else {
                    Vec::new()
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChildShard;

    const S0: &str = "shardId-000000000000";

    fn stream() -> StreamId {
        StreamId::from("s")
    }

    /// A stream of one shard holding `a`..`e`, arriving one second apart from the epoch.
    fn fake() -> FakeKinesis {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 1);
        fake.set_arrival_clock(super::super::ArrivalClock::Fixed(SystemTime::UNIX_EPOCH));
        for data in ["a", "b", "c", "d", "e"] {
            fake.append_data("s", S0, "key", [data]);
            fake.advance_arrival_clock(Duration::from_secs(1));
        }
        fake
    }

    fn data(page: &RecordsPage) -> Vec<String> {
        page.records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect()
    }

    async fn read_from(fake: &FakeKinesis, start: ShardIteratorStart) -> Vec<String> {
        let iterator = fake
            .get_shard_iterator(&stream(), S0, &start)
            .await
            .unwrap();
        let page = fake.get_records(&stream(), &iterator, 100).await.unwrap();
        data(&page)
    }

    #[tokio::test(start_paused = true)]
    async fn each_start_reads_from_its_record() {
        let fake = fake();
        let sequences: Vec<String> = fake.stored("s")[0]
            .1
            .iter()
            .map(|r| r.sequence_number_text.to_string())
            .collect();
        use ShardIteratorStart as S;
        assert_eq!(
            read_from(&fake, S::TrimHorizon).await,
            ["a", "b", "c", "d", "e"]
        );
        assert!(read_from(&fake, S::Latest).await.is_empty());
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(2_500);
        assert_eq!(read_from(&fake, S::AtTimestamp(at)).await, ["d", "e"]);
        let at_c = S::AtSequence(sequences[2].clone());
        assert_eq!(read_from(&fake, at_c.clone()).await, ["c", "d", "e"]);
        let starts: Vec<ShardIteratorStart> = fake
            .iterator_requests()
            .into_iter()
            .map(|r| r.start)
            .collect();
        assert_eq!(starts[3], at_c);
        assert_eq!(fake.call_count(Operation::GetShardIterator), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn pages_follow_the_limit_and_say_how_far_behind_they_are() {
        let fake = fake();
        let mut iterator = fake
            .get_shard_iterator(&stream(), S0, &ShardIteratorStart::TrimHorizon)
            .await
            .unwrap();
        let mut pages = Vec::new();
        for _ in 0..3 {
            let page = fake.get_records(&stream(), &iterator, 2).await.unwrap();
            iterator = page.next_iterator.clone().expect("an open shard goes on");
            pages.push((data(&page), page.millis_behind_latest));
        }
        assert_eq!(
            pages,
            [
                (vec!["a".into(), "b".into()], Some(1_000)),
                (vec!["c".into(), "d".into()], Some(1_000)),
                (vec!["e".into()], Some(0)),
            ]
        );
        // At the tip of an open shard: empty pages, and what comes next is read.
        let page = fake.get_records(&stream(), &iterator, 2).await.unwrap();
        assert!(page.records.is_empty());
        fake.append_data("s", S0, "key", ["f"]);
        let next = page.next_iterator.unwrap();
        let page = fake.get_records(&stream(), &next, 2).await.unwrap();
        assert_eq!(data(&page), ["f"]);
        fake.set_millis_behind(MillisBehind::PerRecord(300));
        let iterator = fake
            .get_shard_iterator(&stream(), S0, &ShardIteratorStart::TrimHorizon)
            .await
            .unwrap();
        let page = fake.get_records(&stream(), &iterator, 2).await.unwrap();
        assert_eq!(page.millis_behind_latest, Some(1_200), "4 records left");
        let error = fake.get_records(&stream(), &iterator, 0).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_shard_ends_with_its_children() {
        let fake = fake();
        let (low, high) = fake.split_in_half("s", S0);
        let iterator = fake
            .get_shard_iterator(&stream(), S0, &ShardIteratorStart::TrimHorizon)
            .await
            .unwrap();
        let first = fake.get_records(&stream(), &iterator, 3).await.unwrap();
        assert!(first.child_shards.is_empty());
        let next = first.next_iterator.unwrap();
        let last = fake.get_records(&stream(), &next, 3).await.unwrap();
        assert_eq!(data(&last), ["d", "e"]);
        assert_eq!(last.next_iterator, None);
        let children: Vec<&str> = last
            .child_shards
            .iter()
            .map(|c| c.shard_id.as_str())
            .collect();
        assert_eq!(children, [low.as_str(), high.as_str()]);
        assert_eq!(last.child_shards[0].parent_shard_ids, [S0]);

        // Without children in the answers, and a closed shard without any.
        fake.set_child_shards_in_answers(false);
        let last = fake.get_records(&stream(), &next, 3).await.unwrap();
        assert_eq!((last.next_iterator, last.child_shards), (None, vec![]));
        fake.set_child_shards_in_answers(true);
        fake.close_shard("s", &low);
        let iterator = fake
            .get_shard_iterator(&stream(), &low, &ShardIteratorStart::TrimHorizon)
            .await
            .unwrap();
        let end = fake.get_records(&stream(), &iterator, 3).await.unwrap();
        assert_eq!(
            (end.next_iterator, end.child_shards),
            (None, Vec::<ChildShard>::new())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_merge_lists_both_parents() {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 2);
        let child = fake.merge("s", S0, "shardId-000000000001");
        let iterator = fake
            .get_shard_iterator(&stream(), S0, &ShardIteratorStart::TrimHorizon)
            .await
            .unwrap();
        let end = fake.get_records(&stream(), &iterator, 10).await.unwrap();
        assert_eq!(end.child_shards.len(), 1);
        assert_eq!(end.child_shards[0].shard_id, child);
        assert_eq!(
            end.child_shards[0].parent_shard_ids,
            [S0, "shardId-000000000001"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_iterators_and_missing_shards() {
        let fake = fake();
        let iterator = fake
            .get_shard_iterator(&stream(), S0, &ShardIteratorStart::TrimHorizon)
            .await
            .unwrap();
        fake.expire_iterators();
        let error = fake.get_records(&stream(), &iterator, 1).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::ExpiredIterator);
        assert_eq!(error.code(), "ExpiredIteratorException");
        let error = fake
            .get_records(&stream(), "nonsense", 1)
            .await
            .unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);

        let iterator = fake
            .get_shard_iterator(&stream(), S0, &ShardIteratorStart::TrimHorizon)
            .await
            .unwrap();
        fake.remove_shard("s", S0);
        for error in [
            fake.get_records(&stream(), &iterator, 1).await.unwrap_err(),
            fake.get_shard_iterator(&stream(), S0, &ShardIteratorStart::Latest)
                .await
                .unwrap_err(),
        ] {
            assert_eq!(error.class(), ErrorClass::NotFound);
        }
        let unknown = fake
            .get_shard_iterator(
                &stream(),
                "shardId-000000000009",
                &ShardIteratorStart::Latest,
            )
            .await
            .unwrap_err();
        assert_eq!(unknown.class(), ErrorClass::NotFound);

        let other = FakeKinesis::new();
        other.create_stream("s", 1);
        let iterator = other
            .get_shard_iterator(&stream(), S0, &ShardIteratorStart::Latest)
            .await
            .unwrap();
        other.delete_stream("s");
        let error = other
            .get_records(&stream(), &iterator, 1)
            .await
            .unwrap_err();
        assert_eq!(error.class(), ErrorClass::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn iterators_expire_by_age_when_a_lifetime_is_set() {
        let fake = fake();
        fake.set_iterator_lifetime(Some(Duration::from_secs(300)));
        let iterator = fake
            .get_shard_iterator(&stream(), S0, &ShardIteratorStart::TrimHorizon)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(299)).await;
        let page = fake.get_records(&stream(), &iterator, 1).await.unwrap();
        let next = page.next_iterator.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let error = fake.get_records(&stream(), &iterator, 1).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::ExpiredIterator, "5 min 1 s old");
        let page = fake.get_records(&stream(), &next, 1).await.unwrap();
        assert_eq!(data(&page), ["b"], "the next iterator is new");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_found_by_its_arn_too() {
        let fake = fake();
        let arn = StreamId::from(fake.stream_arn_of("s"));
        let iterator = fake
            .get_shard_iterator(&arn, S0, &ShardIteratorStart::TrimHorizon)
            .await
            .unwrap();
        let page = fake.get_records(&arn, &iterator, 1).await.unwrap();
        assert_eq!(data(&page), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn read_faults_and_the_call_log() {
        let fake = fake();
        fake.fail(Operation::GetRecords, ErrorClass::Throttled, 1);
        fake.set_delay(Operation::GetRecords, Duration::from_millis(500));
        let started = Instant::now();
        let iterator = fake
            .get_shard_iterator(&stream(), S0, &ShardIteratorStart::TrimHorizon)
            .await
            .unwrap();
        let error = fake.get_records(&stream(), &iterator, 1).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Throttled);
        let page = fake.get_records(&stream(), &iterator, 1).await.unwrap();
        assert_eq!(data(&page), ["a"]);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert_eq!(fake.calls(Operation::GetRecords), [started, started]);
    }
}
