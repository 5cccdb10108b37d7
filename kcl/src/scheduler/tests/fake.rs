//! A fake Kinesis stream for worker tests: shards with records, splits and merges, shards
//! that disappear, injected failures. Implements kinesis-common's consumer traits, as the SDK
//! implementation does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use aggregation_proto::{HashRange, ReceivedRecord};
use bytes::Bytes;
use bytestring::ByteString;

use kinesis_common::{
    BoxFuture, ConsumerInfo, ConsumerStatus, EventStream, KinesisError, ListShards, ReadShard,
    RecordsPage, Shard as ShardSummary, ShardEvent, ShardIteratorStart as IteratorStart,
    ShardListing, StreamConsumers, StreamSummary, SubscribeStart, SubscribeToShard,
};

use crate::retrieval::{ChildShard, Class, Operation, StreamId};

#[derive(Debug)]
struct Shard {
    records: Vec<ReceivedRecord>,
    parents: Vec<String>,
    range: HashRange,
    closed: bool,
    /// Gone from the stream (trimmed): every call about it is `ResourceNotFoundException`.
    gone: bool,
}

#[derive(Debug, Default)]
struct Stream {
    shards: BTreeMap<String, Shard>,
    next_sequence: u64,
    next_shard: u32,
    /// Failures to inject, in order: the first one whose operation matches is used.
    failures: VecDeque<(Operation, Class)>,
    /// Iterators handed out before this generation are expired.
    generation: u64,
    calls: Vec<Operation>,
}

/// A stream shared by every worker of a test.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeStream(Arc<Mutex<Stream>>);

pub(crate) fn shard_id(n: u32) -> String {
    format!("shardId-{n:012}")
}

impl FakeStream {
    /// A stream with `shards` open shards splitting the hash key space evenly.
    pub(crate) fn with_shards(shards: u32) -> Self {
        let stream = Self::default();
        {
            let mut state = stream.state();
            let step = u128::MAX / u128::from(shards);
            for i in 0..shards {
                let start = step * u128::from(i);
                let end = if i + 1 == shards {
                    u128::MAX
                } else {
                    start + step - 1
                };
                let id = shard_id(state.next_shard);
                state.next_shard += 1;
                state.shards.insert(
                    id,
                    Shard {
                        records: Vec::new(),
                        parents: Vec::new(),
                        range: HashRange::new(start, end).unwrap(),
                        closed: false,
                        gone: false,
                    },
                );
            }
        }
        stream
    }

    fn state(&self) -> MutexGuard<'_, Stream> {
        self.0.lock().unwrap()
    }

    /// Appends `payloads` to `shard` as plain records; returns their sequence numbers.
    pub(crate) fn put(
        &self,
        shard: &str,
        payloads: impl IntoIterator<Item = String>,
    ) -> Vec<String> {
        let mut state = self.state();
        let mut sequences = Vec::new();
        for payload in payloads {
            state.next_sequence += 1;
            let sequence = format!("{}", 100_000 + state.next_sequence);
            let record = ReceivedRecord::new(ByteString::from("key"), Bytes::from(payload))
                .with_sequence_number(ByteString::from(sequence.clone()))
                .with_arrival_time(SystemTime::now());
            let shard = state.shards.get_mut(shard).expect("shard exists");
            assert!(!shard.closed, "put into a closed shard");
            shard.records.push(record);
            sequences.push(sequence);
        }
        sequences
    }

    /// Appends `count` records sharing `data` (no copy) to `shard`; returns their sequence
    /// numbers.
    pub(crate) fn put_shared(&self, shard: &str, data: &Bytes, count: usize) -> Vec<String> {
        let mut state = self.state();
        let mut sequences = Vec::new();
        for _ in 0..count {
            state.next_sequence += 1;
            let sequence = format!("{}", 100_000 + state.next_sequence);
            let record = ReceivedRecord::new(ByteString::from("key"), data.clone())
                .with_sequence_number(ByteString::from(sequence.clone()))
                .with_arrival_time(SystemTime::now());
            let shard = state.shards.get_mut(shard).expect("shard exists");
            shard.records.push(record);
            sequences.push(sequence);
        }
        sequences
    }

    /// Puts `count` records named `{prefix}-{i}` into `shard`.
    pub(crate) fn put_n(&self, shard: &str, prefix: &str, count: usize) -> Vec<String> {
        self.put(shard, (0..count).map(|i| format!("{prefix}-{i}")))
    }

    /// Splits `shard` in two; returns the children.
    pub(crate) fn split(&self, shard: &str) -> (String, String) {
        let mut state = self.state();
        let range = {
            let parent = state.shards.get_mut(shard).expect("shard exists");
            parent.closed = true;
            parent.range
        };
        let middle = range.start() + (range.end() - range.start()) / 2;
        let mut children = Vec::new();
        for (start, end) in [(range.start(), middle), (middle + 1, range.end())] {
            let id = shard_id(state.next_shard);
            state.next_shard += 1;
            state.shards.insert(
                id.clone(),
                Shard {
                    records: Vec::new(),
                    parents: vec![shard.to_owned()],
                    range: HashRange::new(start, end).unwrap(),
                    closed: false,
                    gone: false,
                },
            );
            children.push(id);
        }
        (children[0].clone(), children[1].clone())
    }

    /// Merges two adjacent shards; returns the child.
    pub(crate) fn merge(&self, a: &str, b: &str) -> String {
        let mut state = self.state();
        let mut ranges = Vec::new();
        for id in [a, b] {
            let shard = state.shards.get_mut(id).expect("shard exists");
            shard.closed = true;
            ranges.push(shard.range);
        }
        let start = ranges.iter().map(|r| r.start()).min().unwrap();
        let end = ranges.iter().map(|r| r.end()).max().unwrap();
        let id = shard_id(state.next_shard);
        state.next_shard += 1;
        state.shards.insert(
            id.clone(),
            Shard {
                records: Vec::new(),
                parents: vec![a.to_owned(), b.to_owned()],
                range: HashRange::new(start, end).unwrap(),
                closed: false,
                gone: false,
            },
        );
        id
    }

    /// Makes `shard` disappear (trimmed past retention).
    pub(crate) fn remove(&self, shard: &str) {
        if let Some(shard) = self.state().shards.get_mut(shard) {
            shard.gone = true;
        }
    }

    /// The next `times` calls of `operation` fail with `class`.
    pub(crate) fn fail(&self, operation: Operation, class: Class, times: usize) {
        let mut state = self.state();
        for _ in 0..times {
            state.failures.push_back((operation, class));
        }
    }

    /// Expires every iterator handed out so far.
    pub(crate) fn expire_iterators(&self) {
        self.state().generation += 1;
    }

    pub(crate) fn calls(&self, operation: Operation) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|op| **op == operation)
            .count()
    }

    fn enter(&self, operation: Operation) -> Result<(), KinesisError> {
        let mut state = self.state();
        state.calls.push(operation);
        let injected = state
            .failures
            .iter()
            .position(|(op, _)| *op == operation)
            .and_then(|index| state.failures.remove(index));
        match injected {
            Some((_, class)) => Err(operation.error(class, format!("{class:?}"), "injected")),
            None => Ok(()),
        }
    }
}

fn not_found(operation: Operation) -> KinesisError {
    operation.error(
        Class::NotFound,
        "ResourceNotFoundException",
        "no such shard",
    )
}

fn summary(id: &str, shard: &Shard) -> ShardSummary {
    ShardSummary {
        shard_id: id.to_owned(),
        parent_shard_id: shard.parents.first().cloned(),
        adjacent_parent_shard_id: shard.parents.get(1).cloned(),
        hash_range: shard.range,
        open: !shard.closed,
    }
}

impl ReadShard for FakeStream {
    fn get_shard_iterator<'a>(
        &'a self,
        _stream: &'a StreamId,
        shard_id: &'a str,
        start: &'a IteratorStart,
    ) -> BoxFuture<'a, Result<String, KinesisError>> {
        Box::pin(async move {
            self.enter(Operation::GetShardIterator)?;
            let state = self.state();
            let shard = state
                .shards
                .get(shard_id)
                .filter(|shard| !shard.gone)
                .ok_or_else(|| not_found(Operation::GetShardIterator))?;
            let index = match start {
                IteratorStart::TrimHorizon => 0,
                IteratorStart::Latest => shard.records.len(),
                IteratorStart::AtTimestamp(at) => shard
                    .records
                    .iter()
                    .position(|r| r.approximate_arrival_timestamp.is_some_and(|t| t >= *at))
                    .unwrap_or(shard.records.len()),
                IteratorStart::AtSequence(sequence) => shard
                    .records
                    .iter()
                    .position(|r| {
                        crate::retrieval::compare_sequence_numbers(
                            r.sequence_number.as_deref().unwrap_or("0"),
                            sequence,
                        )
                        .is_ge()
                    })
                    .unwrap_or(shard.records.len()),
            };
            Ok(format!("{shard_id}|{}|{index}", state.generation))
        })
    }

    fn get_records<'a>(
        &'a self,
        _stream: &'a StreamId,
        iterator: &'a str,
        limit: i32,
    ) -> BoxFuture<'a, Result<RecordsPage, KinesisError>> {
        Box::pin(async move {
            self.enter(Operation::GetRecords)?;
            let state = self.state();
            let mut parts = iterator.split('|');
            let (Some(shard_id), Some(generation), Some(index)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(Operation::GetRecords.error(
                    Class::InvalidRequest,
                    "InvalidArgumentException",
                    "bad iterator",
                ));
            };
            let generation: u64 = generation.parse().unwrap();
            let index: usize = index.parse().unwrap();
            if generation < state.generation {
                return Err(Operation::GetRecords.error(
                    Class::ExpiredIterator,
                    "ExpiredIteratorException",
                    "expired",
                ));
            }
            let shard = state
                .shards
                .get(shard_id)
                .filter(|shard| !shard.gone)
                .ok_or_else(|| not_found(Operation::GetRecords))?;
            let end = (index + usize::try_from(limit).unwrap()).min(shard.records.len());
            let at_end = end == shard.records.len();
            let ended = shard.closed && at_end;
            let child_shards = if ended {
                state
                    .shards
                    .iter()
                    .filter(|(_, child)| child.parents.iter().any(|p| p == shard_id))
                    .map(|(id, child)| ChildShard {
                        shard_id: id.clone(),
                        parent_shard_ids: child.parents.clone(),
                        hash_range: child.range,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Ok(RecordsPage {
                records: shard.records[index..end].to_vec(),
                next_iterator: (!ended).then(|| format!("{shard_id}|{generation}|{end}")),
                millis_behind_latest: Some(if at_end { 0 } else { 1_000 }),
                child_shards,
            })
        })
    }
}

impl ListShards for FakeStream {
    fn list_shards<'a>(
        &'a self,
        _stream: &'a StreamId,
        listing: &'a ShardListing,
    ) -> BoxFuture<'a, Result<Vec<ShardSummary>, KinesisError>> {
        Box::pin(async move {
            self.enter(Operation::ListShards)?;
            let state = self.state();
            Ok(state
                .shards
                .iter()
                .filter(|(_, shard)| !shard.gone)
                .filter(|(id, shard)| match listing {
                    ShardListing::All => true,
                    ShardListing::After(after) => id.as_str() > after.as_str(),
                    ShardListing::AtTimestamp(_) | ShardListing::Open => !shard.closed,
                })
                .map(|(id, shard)| summary(id, shard))
                .collect())
        })
    }
}

/// Enhanced fan-out over the same shards: every subscription reads like GetRecords does, ten
/// records an event, and ends (as the service's do every 5 minutes) after 20 events.
impl StreamConsumers for FakeStream {
    fn describe_stream_summary<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<StreamSummary, KinesisError>> {
        Box::pin(async move {
            Ok(StreamSummary::new(
                stream.as_str(),
                format!("arn:stream/{}", stream.as_str()),
            ))
        })
    }

    fn stream_arn<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<String, KinesisError>> {
        Box::pin(async move { Ok(format!("arn:stream/{}", stream.as_str())) })
    }

    fn register_consumer<'a>(
        &'a self,
        _stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
        Box::pin(async move {
            Ok(ConsumerInfo {
                consumer_arn: format!("arn:consumer/{consumer_name}"),
                status: ConsumerStatus::Active,
            })
        })
    }

    fn describe_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
        self.register_consumer(stream_arn, consumer_name)
    }
}

impl SubscribeToShard for FakeStream {
    fn subscribe<'a>(
        &'a self,
        _consumer_arn: &'a str,
        shard_id: &'a str,
        start: &'a SubscribeStart,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, KinesisError>> {
        Box::pin(async move {
            self.enter(Operation::SubscribeToShard)?;
            let state = self.state();
            let shard = state
                .shards
                .get(shard_id)
                .filter(|shard| !shard.gone)
                .ok_or_else(|| not_found(Operation::SubscribeToShard))?;
            let position = |keep: &dyn Fn(std::cmp::Ordering) -> bool, sequence: &str| {
                shard
                    .records
                    .iter()
                    .position(|r| {
                        keep(crate::retrieval::compare_sequence_numbers(
                            r.sequence_number.as_deref().unwrap_or("0"),
                            sequence,
                        ))
                    })
                    .unwrap_or(shard.records.len())
            };
            let index = match start {
                SubscribeStart::TrimHorizon => 0,
                SubscribeStart::Latest => shard.records.len(),
                SubscribeStart::AtTimestamp(at) => shard
                    .records
                    .iter()
                    .position(|r| r.approximate_arrival_timestamp.is_some_and(|t| t >= *at))
                    .unwrap_or(shard.records.len()),
                SubscribeStart::AtSequence(s) => position(&|o| o.is_ge(), s),
                SubscribeStart::AfterSequence(s) => position(&|o| o.is_gt(), s),
            };
            let continuation = match index {
                0 => "0".to_owned(),
                n => shard.records[n - 1]
                    .sequence_number
                    .as_deref()
                    .unwrap_or("0")
                    .to_owned(),
            };
            let events: Box<dyn EventStream> = Box::new(FakeEvents {
                stream: self.clone(),
                shard_id: shard_id.to_owned(),
                index,
                continuation,
                left: 20,
            });
            Ok(events)
        })
    }
}

struct FakeEvents {
    stream: FakeStream,
    shard_id: String,
    index: usize,
    continuation: String,
    left: usize,
}

impl EventStream for FakeEvents {
    fn next_event(&mut self) -> BoxFuture<'_, Result<Option<ShardEvent>, KinesisError>> {
        Box::pin(async move {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            let idle = {
                let state = self.stream.state();
                let shard = state.shards.get(&self.shard_id);
                shard.is_some_and(|s| !s.closed && self.index >= s.records.len())
            };
            if idle {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let state = self.stream.state();
            let shard = state
                .shards
                .get(&self.shard_id)
                .filter(|shard| !shard.gone)
                .ok_or_else(|| not_found(Operation::SubscribeToShard))?;
            let end = (self.index + 10).min(shard.records.len());
            let records = shard.records[self.index..end].to_vec();
            self.index = end;
            if let Some(last) = records.last() {
                self.continuation = last.sequence_number.as_deref().unwrap_or("0").to_owned();
            }
            let ended = shard.closed && end == shard.records.len();
            let child_shards = if ended {
                state
                    .shards
                    .iter()
                    .filter(|(_, child)| child.parents.contains(&self.shard_id))
                    .map(|(id, child)| ChildShard {
                        shard_id: id.clone(),
                        parent_shard_ids: child.parents.clone(),
                        hash_range: child.range,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let behind = if end == shard.records.len() { 0 } else { 1_000 };
            Ok(Some(ShardEvent {
                records,
                continuation_sequence_number: (!ended).then(|| self.continuation.clone()),
                millis_behind_latest: Some(behind),
                child_shards,
            }))
        })
    }
}
