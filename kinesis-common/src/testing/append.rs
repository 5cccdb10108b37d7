//! Writing into a named shard directly, bypassing PutRecords' routing: records with chosen
//! partition keys, data, sequence numbers and arrival times, and aggregates of user records;
//! the clock arrival times come from and how sequence numbers are written.

use std::time::{Duration, SystemTime};

use aggregation_proto::{
    Aggregator, AggregatorConfig, ReceivedRecord, UserRecord, compare_sequence_numbers,
};
use bytes::Bytes;
use bytestring::ByteString;
use tokio::time::Instant;

use super::streams::StoredRecord;
use super::{FakeKinesis, State};
use crate::StreamId;

/// Where the arrival times of stored records come from (what `AT_TIMESTAMP` reads against).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ArrivalClock {
    /// `SystemTime::now()` (the default).
    #[default]
    System,
    /// This time, until changed or advanced ([`FakeKinesis::advance_arrival_clock`]).
    Fixed(SystemTime),
    /// This time plus the tokio time elapsed since the clock was set: arrival times follow
    /// paused tokio time.
    Tokio(SystemTime),
}

/// The clock and when it was set (for [`ArrivalClock::Tokio`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    kind: ArrivalClock,
    set_at: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            kind: ArrivalClock::System,
            set_at: Instant::now(),
        }
    }
}

impl State {
    /// The sequence number written for counter value `n`.
    pub(super) fn sequence_text(&self, n: u64) -> String {
        format!(
            "{:0width$}",
            self.sequence_floor.saturating_add(n),
            width = self.sequence_width
        )
    }

    /// The arrival time of a record stored now.
    pub(super) fn arrival_now(&self) -> SystemTime {
        match self.arrival.kind {
            ArrivalClock::System => SystemTime::now(),
            ArrivalClock::Fixed(at) => at,
            ArrivalClock::Tokio(at) => at + self.arrival.set_at.elapsed(),
        }
    }

    /// Stores `record` at the end of `shard_id` of `stream`; returns its sequence number.
    fn append_one(&mut self, stream: &StreamId, shard_id: &str, record: ReceivedRecord) -> String {
        let n = self.next_sequence;
        self.next_sequence += 1;
        let next = self.sequence_text(n);
        let arrival = record
            .approximate_arrival_timestamp
            .unwrap_or_else(|| self.arrival_now());
        let fake = self.stream_mut(stream);
        let shard = fake.shard_mut(shard_id).expect("shard exists");
        assert!(shard.shard.open, "append into closed shard {shard_id}");
        let text = match record.sequence_number {
            Some(given) => given,
            // After a hand-made number above the counter's, the next number up.
            None => match shard.records.last() {
                Some(last)
                    if compare_sequence_numbers(&last.sequence_number_text, &next).is_ge() =>
                {
                    ByteString::from(increment(&last.sequence_number_text))
                }
                _ => ByteString::from(next),
            },
        };
        if let Some(last) = shard.records.last() {
            assert!(
                compare_sequence_numbers(&last.sequence_number_text, &text).is_lt(),
                "sequence numbers increase within a shard: {text} after {}",
                last.sequence_number_text
            );
        }
        shard.records.push(StoredRecord {
            sequence_number: n,
            partition_key: record.partition_key.to_string(),
            explicit_hash_key: None,
            data: record.data,
            sequence_number_text: text.clone(),
            arrival,
        });
        text.to_string()
    }
}

/// `digits` (decimal) plus one.
fn increment(digits: &str) -> String {
    let mut out: Vec<u8> = digits.bytes().collect();
    for digit in out.iter_mut().rev() {
        if *digit == b'9' {
            *digit = b'0';
        } else {
            *digit += 1;
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
    format!("1{}", String::from_utf8_lossy(&out))
}

impl FakeKinesis {
    /// Appends `records` to open shard `shard_id` of `stream` as given, bypassing routing;
    /// returns their sequence numbers. A record without a sequence number gets the fake's next
    /// one ([`set_sequence_format`](Self::set_sequence_format)) or, after a hand-made number
    /// above that, the hand-made number plus one; one without an arrival time
    /// gets the [arrival clock](Self::set_arrival_clock)'s time.
    ///
    /// # Panics
    /// When the stream or shard does not exist, the shard is closed, or a given sequence
    /// number is not above the shard's last one (test bugs).
    pub fn append(
        &self,
        stream: impl Into<StreamId>,
        shard_id: &str,
        records: impl IntoIterator<Item = ReceivedRecord>,
    ) -> Vec<String> {
        let stream = stream.into();
        let mut state = self.state();
        records
            .into_iter()
            .map(|record| state.append_one(&stream, shard_id, record))
            .collect()
    }

    /// Appends one record per item of `data`, all with `partition_key`, to `shard_id`; returns
    /// their sequence numbers. ([`append`](Self::append) for its panics.)
    pub fn append_data<D: Into<Bytes>>(
        &self,
        stream: impl Into<StreamId>,
        shard_id: &str,
        partition_key: &str,
        data: impl IntoIterator<Item = D>,
    ) -> Vec<String> {
        let key = ByteString::from(partition_key);
        self.append(
            stream,
            shard_id,
            data.into_iter()
                .map(|data| ReceivedRecord::new(key.clone(), data.into())),
        )
    }

    /// Aggregates `users` as the KPL does (as many Kinesis records as the default aggregate
    /// size needs; one user record alone is sent plain) and appends them to `shard_id`,
    /// whatever their hash keys; returns the Kinesis records' sequence numbers.
    /// ([`append`](Self::append) for its panics; also panics on a user record the aggregator
    /// refuses.)
    pub fn append_user_records(
        &self,
        stream: impl Into<StreamId>,
        shard_id: &str,
        users: impl IntoIterator<Item = UserRecord>,
    ) -> Vec<String> {
        let mut aggregator = Aggregator::new(AggregatorConfig::default());
        let mut records = Vec::new();
        for user in users {
            if aggregator.try_add(&user).is_err() {
                records.extend(aggregator.finish());
                aggregator.try_add(&user).expect("a user record fits alone");
            }
        }
        records.extend(aggregator.finish());
        self.append(
            stream,
            shard_id,
            records
                .into_iter()
                .map(|r| ReceivedRecord::new(r.partition_key, r.data)),
        )
    }

    /// Sequence numbers from now on are `floor + n` (n the fake's counter, from 1), written
    /// with at least `width` digits (zero-padded). The default, `(0, 20)`, is what PutRecords
    /// has always answered; `(100_000, 0)` writes `100001`, `100002`...
    pub fn set_sequence_format(&self, floor: u64, width: usize) {
        let mut state = self.state();
        state.sequence_floor = floor;
        state.sequence_width = width;
    }

    /// Where the arrival times of records stored from now on come from (PutRecords and
    /// [`append`](Self::append) alike).
    pub fn set_arrival_clock(&self, clock: ArrivalClock) {
        self.state().arrival = Clock {
            kind: clock,
            set_at: Instant::now(),
        };
    }

    /// Moves an [`ArrivalClock::Fixed`] clock on by `by` (other clocks move by themselves).
    pub fn advance_arrival_clock(&self, by: Duration) {
        if let ArrivalClock::Fixed(at) = &mut self.state().arrival.kind {
            *at += by;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARD: &str = "shardId-000000000000";

    #[tokio::test(start_paused = true)]
    async fn appended_records_keep_what_was_given_and_get_the_rest() {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 2);
        let epoch = SystemTime::UNIX_EPOCH;
        fake.set_arrival_clock(ArrivalClock::Fixed(epoch));
        let given = ReceivedRecord::new("pk", "given")
            .with_sequence_number("500")
            .with_arrival_time(epoch + Duration::from_secs(7));
        let sequences = fake.append("s", SHARD, [ReceivedRecord::new("pk", "auto"), given]);
        assert_eq!(sequences, ["00000000000000000001", "500"]);
        let (_, stored) = &fake.stored("s")[0];
        assert_eq!(stored[0].arrival, epoch);
        assert_eq!(stored[1].arrival, epoch + Duration::from_secs(7));
        assert_eq!(stored[1].received().sequence_number.as_deref(), Some("500"));
        assert_eq!(stored[1].partition_key, "pk");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sequence_format_and_the_clocks() {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 1);
        fake.set_sequence_format(100_000, 0);
        let epoch = SystemTime::UNIX_EPOCH;
        fake.set_arrival_clock(ArrivalClock::Tokio(epoch));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let first = fake.append_data("s", SHARD, "key", ["a", "b"]);
        assert_eq!(first, ["100001", "100002"]);
        fake.set_arrival_clock(ArrivalClock::Fixed(epoch));
        fake.advance_arrival_clock(Duration::from_secs(60));
        fake.append_data("s", SHARD, "key", [Bytes::from_static(b"c")]);
        let (_, stored) = &fake.stored("s")[0];
        let arrivals: Vec<Duration> = stored
            .iter()
            .map(|r| r.arrival.duration_since(epoch).unwrap())
            .collect();
        assert_eq!(arrivals, [5, 5, 60].map(Duration::from_secs));
        let before = SystemTime::now();
        fake.set_arrival_clock(ArrivalClock::System);
        fake.append_data("s", SHARD, "key", ["d"]);
        assert!(fake.stored("s")[0].1[3].arrival >= before);
    }

    #[tokio::test(start_paused = true)]
    async fn user_records_are_appended_as_one_aggregate() {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 1);
        let users = ["a", "b", "c"].map(|k| UserRecord::new(k, format!("data-{k}")));
        let sequences = fake.append_user_records("s", SHARD, users);
        assert_eq!(sequences.len(), 1);
        let users: Vec<String> = fake
            .user_records("s")
            .into_iter()
            .map(|(_, _, key, _)| key)
            .collect();
        assert_eq!(users, ["a", "b", "c"]);
    }

    #[test]
    fn after_a_hand_made_number_the_next_one_up() {
        assert_eq!(increment("4999"), "5000");
        assert_eq!(increment("999"), "1000");
        let fake = FakeKinesis::new();
        fake.create_stream("s", 1);
        let record = ReceivedRecord::new("pk", "x").with_sequence_number("49590000000000000000099");
        fake.append("s", SHARD, [record]);
        let next = fake.append_data("s", SHARD, "pk", ["y"]);
        assert_eq!(next, ["49590000000000000000100"]);
    }

    #[test]
    #[should_panic(expected = "sequence numbers increase")]
    fn a_given_sequence_number_must_increase() {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 1);
        let record = |n: &str| ReceivedRecord::new("pk", "x").with_sequence_number(n.to_owned());
        fake.append("s", SHARD, [record("9"), record("10"), record("8")]);
    }

    #[test]
    #[should_panic(expected = "closed shard")]
    fn a_closed_shard_takes_no_record() {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 1);
        fake.close_shard("s", SHARD);
        fake.append_data("s", SHARD, "k", ["x"]);
    }
}
