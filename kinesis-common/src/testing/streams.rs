//! Streams, their shards and lineage, and what each shard stored.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aggregation_proto::{
    HashRange, ReceivedRecord, deaggregate, parse_explicit_hash_key, partition_key_hash,
};
use bytestring::ByteString;

use super::consumers::FakeConsumer;
use super::{FakeKinesis, State};
use crate::{ChildShard, ErrorClass, KinesisError, Shard, StreamId};

/// A record as the fake stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredRecord {
    /// Its sequence number (increasing across the whole fake).
    pub sequence_number: u64,
    /// The partition key.
    pub partition_key: String,
    /// The explicit hash key it was sent with.
    pub explicit_hash_key: Option<String>,
    /// The data (an aggregate or a single user record).
    pub data: bytes::Bytes,
    /// Its sequence number as PutRecords answered it and readers read it: `sequence_number`
    /// written as [`FakeKinesis::set_sequence_format`] says (20 digits by default), or the one
    /// a test gave to [`FakeKinesis::append`].
    pub sequence_number_text: ByteString,
    /// When it arrived ([`FakeKinesis::set_arrival_clock`]): what `AT_TIMESTAMP` reads from.
    pub arrival: SystemTime,
}

impl StoredRecord {
    /// The record as GetRecords and subscriptions return it.
    pub fn received(&self) -> ReceivedRecord {
        ReceivedRecord::new(self.partition_key.as_str(), self.data.clone())
            .with_sequence_number(self.sequence_number_text.clone())
            .with_arrival_time(self.arrival)
    }
}

#[derive(Debug)]
pub(super) struct FakeShard {
    pub(super) shard: Shard,
    /// In sequence order: what a reader of the shard reads.
    pub(super) records: Vec<StoredRecord>,
    /// Gone from the stream (trimmed past retention): reads of it are `NotFound`, listings
    /// leave it out.
    pub(super) gone: bool,
    /// When it was made and closed, by the arrival clock: what an `AT_TIMESTAMP` listing
    /// selects by.
    pub(super) created: SystemTime,
    pub(super) closed: Option<SystemTime>,
}

impl FakeShard {
    fn new(shard: Shard, now: SystemTime) -> Self {
        Self {
            shard,
            records: Vec::new(),
            gone: false,
            created: now,
            closed: None,
        }
    }

    /// Takes no more records from `now` on.
    pub(super) fn close(&mut self, now: SystemTime) {
        if self.shard.open {
            self.shard.open = false;
            self.closed = Some(now);
        }
    }

    /// Whether it was open at `at`: made by then (or a shard the stream began with), not
    /// closed by then.
    pub(super) fn open_at(&self, at: SystemTime) -> bool {
        let made = self.created <= at || self.shard.parent_shard_id.is_none();
        made && self.closed.is_none_or(|closed| closed > at)
    }
}

#[derive(Debug, Default)]
pub(super) struct FakeStream {
    pub(super) shards: Vec<FakeShard>,
    next_shard: usize,
    /// Deleted: calls answer `ResourceNotFoundException`; what it stored stays readable.
    pub(super) deleted: bool,
    /// Its stream consumers (enhanced fan-out), by name.
    pub(super) consumers: BTreeMap<String, FakeConsumer>,
}

impl FakeStream {
    fn add_shard(&mut self, range: HashRange, parents: &[&str], now: SystemTime) -> String {
        let id = format!("shardId-{:012}", self.next_shard);
        self.next_shard += 1;
        let mut shard = Shard::new(id.clone(), range);
        shard.parent_shard_id = parents.first().map(|p| (*p).to_owned());
        shard.adjacent_parent_shard_id = parents.get(1).map(|p| (*p).to_owned());
        self.shards.push(FakeShard::new(shard, now));
        id
    }

    pub(super) fn open_owner(&mut self, hash_key: u128) -> Option<&mut FakeShard> {
        self.shards
            .iter_mut()
            .find(|s| s.shard.open && s.shard.hash_range.contains(hash_key))
    }

    pub(super) fn shard_mut(&mut self, shard_id: &str) -> Option<&mut FakeShard> {
        self.shards
            .iter_mut()
            .find(|s| s.shard.shard_id == shard_id)
    }

    /// The shard `shard_id` as a reader sees it: `None` when unknown or gone.
    pub(super) fn readable(&self, shard_id: &str) -> Option<&FakeShard> {
        self.shards
            .iter()
            .find(|s| s.shard.shard_id == shard_id && !s.gone)
    }

    /// The children of `shard_id` (shards naming it as a parent), as a closed shard's last
    /// answer lists them.
    pub(super) fn children_of(&self, shard_id: &str) -> Vec<ChildShard> {
        self.shards
            .iter()
            .filter(|s| s.shard.parents().any(|p| p == shard_id))
            .map(|s| ChildShard {
                shard_id: s.shard.shard_id.clone(),
                parent_shard_ids: s.shard.parents().map(str::to_owned).collect(),
                hash_range: s.shard.hash_range,
            })
            .collect()
    }
}

/// The name in a stream's (or a consumer's) ARN, or the name given.
fn stream_name(stream: &StreamId) -> &str {
    match stream {
        StreamId::Name(name) => name,
        StreamId::Arn(arn) => {
            let after = arn.split_once(":stream/").map_or(arn.as_str(), |(_, n)| n);
            after.split('/').next().unwrap_or(after)
        }
    }
}

/// A stream's ARN: the one it was created with, or one made up from its name.
pub(super) fn stream_arn(stream: &StreamId) -> String {
    match stream {
        StreamId::Arn(arn) => arn.clone(),
        StreamId::Name(name) => format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}"),
    }
}

/// `ResourceNotFoundException` for `operation`.
pub(super) fn not_found(operation: &'static str, what: impl std::fmt::Display) -> KinesisError {
    KinesisError::new(
        operation,
        ErrorClass::NotFound,
        "ResourceNotFoundException",
        format!("{what} not found"),
    )
}

impl State {
    /// The key of the stream `stream` names: the same id, or the same stream by ARN for a
    /// name (and by name for an ARN), as the service accepts either.
    pub(super) fn stream_key(&self, stream: &StreamId) -> Option<StreamId> {
        if self.streams.contains_key(stream) {
            return Some(stream.clone());
        }
        let name = stream_name(stream);
        self.streams
            .keys()
            .find(|key| stream_name(key) == name)
            .cloned()
    }

    /// The stream `stream` names (by name or ARN, deleted or not), to change.
    ///
    /// # Panics
    /// When there is none (a test bug: the helpers that change a stream take one that exists).
    pub(super) fn stream_mut(&mut self, stream: &StreamId) -> &mut FakeStream {
        let key = self.stream_key(stream).expect("stream exists");
        self.streams.get_mut(&key).expect("stream exists")
    }

    /// The live (not deleted) stream `stream` names, with its key.
    pub(super) fn live_stream(&self, stream: &StreamId) -> Option<(StreamId, &FakeStream)> {
        let key = self.stream_key(stream)?;
        let fake = self.streams.get(&key).filter(|s| !s.deleted)?;
        Some((key, fake))
    }

    /// The same, to change.
    pub(super) fn live_stream_mut(
        &mut self,
        stream: &StreamId,
    ) -> Option<(StreamId, &mut FakeStream)> {
        let key = self.stream_key(stream)?;
        let fake = self.streams.get_mut(&key).filter(|s| !s.deleted)?;
        Some((key, fake))
    }
}

impl FakeKinesis {
    /// Creates `stream` with `shards` open shards splitting the hash-key space evenly.
    ///
    /// # Panics
    /// When `shards` is 0.
    pub fn create_stream(&self, stream: impl Into<StreamId>, shards: usize) {
        assert!(shards > 0, "a stream has at least one shard");
        let now = self.state().arrival_now();
        let mut fake = FakeStream::default();
        let width = u128::MAX / shards as u128;
        for i in 0..shards {
            let start = width * i as u128;
            let end = if i + 1 == shards {
                u128::MAX
            } else {
                width * (i as u128 + 1) - 1
            };
            let range = HashRange::new(start, end).expect("even ranges are ordered");
            fake.add_shard(range, &[], now);
        }
        self.state().streams.insert(stream.into(), fake);
    }

    /// Splits open shard `shard_id` of `stream` at `at` (the first hash key of the second
    /// child); returns the two children's ids.
    ///
    /// # Panics
    /// When the shard is not open or `at` is not inside it (a test bug).
    pub fn split(&self, stream: impl Into<StreamId>, shard_id: &str, at: u128) -> (String, String) {
        let mut state = self.state();
        let now = state.arrival_now();
        let stream = state.stream_mut(&stream.into());
        let parent = stream.shard_mut(shard_id).expect("shard exists");
        assert!(parent.shard.open, "only open shards split");
        let range = parent.shard.hash_range;
        assert!(
            range.start() < at && at <= range.end(),
            "split point inside"
        );
        parent.close(now);
        let low = HashRange::new(range.start(), at - 1).expect("ordered");
        let high = HashRange::new(at, range.end()).expect("ordered");
        let a = stream.add_shard(low, &[shard_id], now);
        let b = stream.add_shard(high, &[shard_id], now);
        (a, b)
    }

    /// Splits open shard `shard_id` in the middle of its range.
    pub fn split_in_half(&self, stream: impl Into<StreamId>, shard_id: &str) -> (String, String) {
        let stream = stream.into();
        let range = self
            .shards(stream.clone())
            .into_iter()
            .find(|s| s.shard_id == shard_id)
            .expect("shard exists")
            .hash_range;
        let middle = range.start() + (range.end() - range.start()) / 2 + 1;
        self.split(stream, shard_id, middle)
    }

    /// Merges two open shards of `stream` with adjacent ranges; returns the child's id.
    ///
    /// # Panics
    /// When they are not open and adjacent (a test bug).
    pub fn merge(&self, stream: impl Into<StreamId>, first: &str, second: &str) -> String {
        let mut state = self.state();
        let now = state.arrival_now();
        let stream = state.stream_mut(&stream.into());
        let a = stream.shard_mut(first).expect("shard exists").shard.clone();
        let b = stream
            .shard_mut(second)
            .expect("shard exists")
            .shard
            .clone();
        assert!(a.open && b.open, "only open shards merge");
        let (low, high) = if a.hash_range.start() < b.hash_range.start() {
            (a.hash_range, b.hash_range)
        } else {
            (b.hash_range, a.hash_range)
        };
        assert_eq!(
            low.end().checked_add(1),
            Some(high.start()),
            "adjacent ranges"
        );
        for id in [first, second] {
            stream.shard_mut(id).expect("shard exists").close(now);
        }
        let range = HashRange::new(low.start(), high.end()).expect("ordered");
        stream.add_shard(range, &[first, second], now)
    }

    /// Deletes `stream`: from now on PutRecords and ListShards calls for it answer
    /// `ResourceNotFoundException` (calls still crossing the link too), and its shards are
    /// closed. What it stored stays readable through [`stored`](Self::stored) and
    /// [`user_records`](Self::user_records), as consumers read it before the deletion.
    pub fn delete_stream(&self, stream: impl Into<StreamId>) {
        let mut state = self.state();
        let now = state.arrival_now();
        if let Some(fake) = state.streams.get_mut(&stream.into()) {
            fake.deleted = true;
            for shard in &mut fake.shards {
                shard.close(now);
            }
        }
    }

    /// Closes open shard `shard_id` of `stream` without children: its readers reach its end
    /// (no next iterator; a subscription's last event) with no child in the answer, as a
    /// stream whose children are listed elsewhere ([`add_shard`](Self::add_shard)) or not at
    /// all.
    ///
    /// # Panics
    /// When the stream or the shard does not exist (a test bug).
    pub fn close_shard(&self, stream: impl Into<StreamId>, shard_id: &str) {
        let mut state = self.state();
        let now = state.arrival_now();
        let fake = state.stream_mut(&stream.into());
        fake.shard_mut(shard_id).expect("shard exists").close(now);
    }

    /// Adds `shard` to `stream` as given (id, parents, range, open or not): a lineage a test
    /// writes by hand, which the parents' ends and ListShards report. Later shards the fake
    /// makes get higher ids.
    ///
    /// # Panics
    /// When the stream does not exist or already has a shard with that id (a test bug).
    pub fn add_shard(&self, stream: impl Into<StreamId>, shard: Shard) {
        let mut state = self.state();
        let now = state.arrival_now();
        let fake = state.stream_mut(&stream.into());
        assert!(
            fake.shard_mut(&shard.shard_id).is_none(),
            "shard {} exists",
            shard.shard_id
        );
        if let Some(n) = shard
            .shard_id
            .strip_prefix("shardId-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            fake.next_shard = fake.next_shard.max(n + 1);
        }
        let closed = (!shard.open).then_some(now);
        let mut added = FakeShard::new(shard, now);
        added.closed = closed;
        fake.shards.push(added);
    }

    /// Makes shard `shard_id` of `stream` disappear, as one trimmed past the stream's
    /// retention: GetShardIterator, GetRecords, SubscribeToShard and the events of open
    /// subscriptions answer `ResourceNotFoundException`, ListShards leaves it out. (It stays in
    /// [`shards`](Self::shards) and [`stored`](Self::stored).)
    pub fn remove_shard(&self, stream: impl Into<StreamId>, shard_id: &str) {
        let mut state = self.state();
        let shard = state
            .stream_key(&stream.into())
            .and_then(|key| state.streams.get_mut(&key))
            .and_then(|s| s.shard_mut(shard_id));
        if let Some(shard) = shard {
            shard.gone = true;
        }
    }

    /// The ARN of `stream` (made up from its name when it was created by name), as
    /// DescribeStreamSummary answers it.
    pub fn stream_arn_of(&self, stream: impl Into<StreamId>) -> String {
        let stream = stream.into();
        let key = self.state().stream_key(&stream).unwrap_or(stream);
        stream_arn(&key)
    }

    /// Every shard of `stream`, in creation order.
    pub fn shards(&self, stream: impl Into<StreamId>) -> Vec<Shard> {
        self.state()
            .streams
            .get(&stream.into())
            .map(|s| s.shards.iter().map(|f| f.shard.clone()).collect())
            .unwrap_or_default()
    }

    /// The open shards of `stream`.
    pub fn open_shards(&self, stream: impl Into<StreamId>) -> Vec<Shard> {
        self.shards(stream).into_iter().filter(|s| s.open).collect()
    }

    /// What each shard of `stream` stored, shards in creation order (parents before children),
    /// records in sequence order: the order a consumer reads them in.
    pub fn stored(&self, stream: impl Into<StreamId>) -> Vec<(Shard, Vec<StoredRecord>)> {
        self.state()
            .streams
            .get(&stream.into())
            .map(|s| {
                s.shards
                    .iter()
                    .map(|f| (f.shard.clone(), f.records.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The user records of `stream` as a consumer that filters each sub-record by its shard's
    /// hash range would read them: `(shard id, sequence number, partition key, data)`.
    pub fn user_records(
        &self,
        stream: impl Into<StreamId>,
    ) -> Vec<(String, u64, String, bytes::Bytes)> {
        let mut out = Vec::new();
        for (shard, records) in self.stored(stream) {
            for record in records {
                let received =
                    ReceivedRecord::new(record.partition_key.clone(), record.data.clone());
                for user in deaggregate(&received) {
                    let hash_key = match user.explicit_hash_key() {
                        Some(key) => parse_explicit_hash_key(key).ok(),
                        None => Some(partition_key_hash(user.partition_key())),
                    };
                    // A plain record is where Kinesis put it; a sub-record outside the shard's
                    // range is dropped, as a consumer's per-record filter does.
                    if user.is_aggregated()
                        && hash_key.is_some_and(|k| !shard.hash_range.contains(k))
                    {
                        continue;
                    }
                    out.push((
                        shard.shard_id.clone(),
                        record.sequence_number,
                        user.partition_key().to_owned(),
                        user.data_bytes(),
                    ));
                }
            }
        }
        out
    }
}
