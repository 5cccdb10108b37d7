//! [`FakeKinesis`]: an in-memory Kinesis for tests (feature `test-util`), behind the same
//! [`KinesisApi`] seam the producer uses for the real service.
//!
//! It keeps streams of shards with hash-key ranges and lineage, splits and merges them, routes
//! every PutRecords entry by its explicit hash key (or the MD5 of its partition key) to the open
//! shard that owns it, and stores it with an increasing sequence number. Faults are injected per
//! call, scripted ([`FakeKinesis::script`], [`FakeKinesis::script_list_shards_faults`]) or at
//! random rates from a seed ([`FakeKinesis::set_random_faults`]): throttling and internal errors
//! of single entries, whole calls failing (throttled, 500, an expired security token), calls that
//! never answer (with or without storing), calls answered late, answers lost after storing, calls
//! that panic, and ListShards calls that are throttled, fail or never answer. A link speed
//! ([`FakeKinesis::set_link`]) makes calls take time in proportion to their size, one after the
//! other, like a slow endpoint. Time is tokio's, so tests run with paused time.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kpl::testing::FakeKinesis;
//! use kpl::{Producer, UserRecord};
//!
//! let kinesis = FakeKinesis::new();
//! kinesis.create_stream("orders", 4);
//! let producer = Producer::builder("orders").kinesis_api(kinesis.clone()).build().await?;
//! let stored = producer.send(UserRecord::new("customer-1", "hello")).await?.await?;
//! producer.shutdown().await;
//! assert_eq!(kinesis.user_records("orders").len(), 1);
//! # let _ = stored;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aggregation_proto::{
    HashRange, ReceivedRecord, deaggregate, parse_explicit_hash_key, partition_key_hash,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::client::{
    BoxFuture, ErrorClass, KinesisApi, KinesisError, PutEntry, PutResult, Shard, StreamId,
};

/// What one PutRecords call does, when scripted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallFault {
    /// Stores every entry and answers.
    None,
    /// The entries at these positions fail with `code` (not stored); the rest are stored.
    FailEntries {
        /// Positions in the call.
        positions: Vec<usize>,
        /// The error code, e.g. `ProvisionedThroughputExceededException`.
        code: String,
    },
    /// Nothing is stored; the call fails with this class and code.
    Error {
        /// What the failure means.
        class: ErrorClass,
        /// Its code.
        code: String,
    },
    /// Nothing is stored; the call fails with the service error `code` and `message`,
    /// classified by `kinesis-common`'s table as the SDK client classifies it (so a test follows
    /// that table, e.g. `ExpiredTokenException`).
    ServiceError {
        /// The error code, e.g. `ExpiredTokenException`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// Stores every entry and answers, after `delay` (an answer that comes late, possibly
    /// after the caller's timeout: the entries are stored all the same).
    Delay(Duration),
    /// Everything is stored, then the answer is lost: the call fails as a dropped connection.
    LoseAnswer,
    /// Nothing is stored and no answer ever comes.
    Hang,
    /// Everything is stored and no answer ever comes.
    StoreThenHang,
    /// The call panics (inside the producer's task).
    Panic,
}

/// What one ListShards call does, when scripted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListShardsFault {
    /// Answers normally.
    None,
    /// Fails with this class and code.
    Error {
        /// What the failure means.
        class: ErrorClass,
        /// Its code.
        code: String,
    },
    /// Fails with the service error `code` and `message`, classified as in
    /// [`CallFault::ServiceError`] (e.g. `LimitExceededException`: throttled).
    ServiceError {
        /// The error code.
        code: String,
        /// The service's message.
        message: String,
    },
    /// Never answers.
    Hang,
    /// Answers normally after this long (the shards as they are when it answers).
    Delay(Duration),
}

/// Random faults: each rate is a probability per call (or per entry for the entry faults).
/// Fields are public; outside this crate start from [`RandomFaults::none`] and set them.
///
/// ```
/// let mut faults = kpl::testing::RandomFaults::none();
/// faults.throttle_entry = 0.1;
/// faults.list_shards_throttle = 0.5;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RandomFaults {
    /// Per entry: fails with `ProvisionedThroughputExceededException`.
    pub throttle_entry: f64,
    /// Per entry: fails with `InternalFailure`.
    pub internal_entry: f64,
    /// Per call: fails whole with `ProvisionedThroughputExceededException` (nothing stored).
    pub throttle_call: f64,
    /// Per call: fails whole with a 500 `InternalFailure` (nothing stored).
    pub internal_call: f64,
    /// Per call: stored, answer lost.
    pub lose_answer: f64,
    /// Per call: never answers, nothing stored.
    pub hang: f64,
    /// Per call: never answers, everything stored.
    pub store_then_hang: f64,
    /// Per call: fails whole with `ExpiredTokenException` (nothing stored), classified as in
    /// [`CallFault::ServiceError`]: what a fleet meets at every credential rotation.
    pub expired_token_call: f64,
    /// Per call: stored and answered after a random delay of up to [`max_delay`](Self::max_delay)
    /// ([`CallFault::Delay`]).
    pub delay_call: f64,
    /// The longest delay of [`delay_call`](Self::delay_call).
    pub max_delay: Duration,
    /// Per call: the call panics inside the producer's task ([`CallFault::Panic`]).
    pub panic_call: f64,
    /// Per ListShards call: fails with `LimitExceededException` (throttled).
    pub list_shards_throttle: f64,
    /// Per ListShards call: fails with a 500 `InternalFailure`.
    pub list_shards_internal: f64,
    /// Per ListShards call: never answers.
    pub list_shards_hang: f64,
}

impl RandomFaults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }
}

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
}

#[derive(Debug)]
struct FakeShard {
    shard: Shard,
    records: Vec<StoredRecord>,
}

#[derive(Debug, Default)]
struct FakeStream {
    shards: Vec<FakeShard>,
    next_shard: usize,
    /// Deleted: calls answer `ResourceNotFoundException`; what it stored stays readable.
    deleted: bool,
}

impl FakeStream {
    fn add_shard(&mut self, range: HashRange, parents: &[&str]) -> String {
        let id = format!("shardId-{:012}", self.next_shard);
        self.next_shard += 1;
        let mut shard = Shard::new(id.clone(), range);
        shard.parent_shard_id = parents.first().map(|p| (*p).to_owned());
        shard.adjacent_parent_shard_id = parents.get(1).map(|p| (*p).to_owned());
        self.shards.push(FakeShard {
            shard,
            records: Vec::new(),
        });
        id
    }

    fn open_owner(&mut self, hash_key: u128) -> Option<&mut FakeShard> {
        self.shards
            .iter_mut()
            .find(|s| s.shard.open && s.shard.hash_range.contains(hash_key))
    }

    fn shard_mut(&mut self, shard_id: &str) -> Option<&mut FakeShard> {
        self.shards
            .iter_mut()
            .find(|s| s.shard.shard_id == shard_id)
    }
}

#[derive(Debug)]
struct State {
    streams: BTreeMap<StreamId, FakeStream>,
    next_sequence: u64,
    script: VecDeque<CallFault>,
    list_script: VecDeque<ListShardsFault>,
    list_hangs: bool,
    random: RandomFaults,
    /// Streams whose calls draw from these rates instead of `random`.
    stream_random: BTreeMap<StreamId, RandomFaults>,
    rng: StdRng,
    link_bytes_per_sec: Option<f64>,
    link_busy_until: Option<Instant>,
    latency: Duration,
    calls: u64,
    list_calls: u64,
    entries_sent: u64,
}

impl State {
    /// The random rates calls for `stream` draw from.
    fn rates(&self, stream: &StreamId) -> RandomFaults {
        self.stream_random
            .get(stream)
            .unwrap_or(&self.random)
            .clone()
    }
}

/// An in-memory Kinesis (see the [module docs](self)). Cheap to clone; clones share the data.
#[derive(Debug, Clone)]
pub struct FakeKinesis {
    state: Arc<Mutex<State>>,
}

impl Default for FakeKinesis {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeKinesis {
    /// An empty fake without faults, answering at once.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                streams: BTreeMap::new(),
                next_sequence: 1,
                script: VecDeque::new(),
                list_script: VecDeque::new(),
                list_hangs: false,
                random: RandomFaults::none(),
                stream_random: BTreeMap::new(),
                rng: StdRng::seed_from_u64(0),
                link_bytes_per_sec: None,
                link_busy_until: None,
                latency: Duration::ZERO,
                calls: 0,
                list_calls: 0,
                entries_sent: 0,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates `stream` with `shards` open shards splitting the hash-key space evenly.
    ///
    /// # Panics
    /// When `shards` is 0.
    pub fn create_stream(&self, stream: impl Into<StreamId>, shards: usize) {
        assert!(shards > 0, "a stream has at least one shard");
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
            fake.add_shard(range, &[]);
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
        let stream = state
            .streams
            .get_mut(&stream.into())
            .expect("stream exists");
        let parent = stream.shard_mut(shard_id).expect("shard exists");
        assert!(parent.shard.open, "only open shards split");
        let range = parent.shard.hash_range;
        assert!(
            range.start() < at && at <= range.end(),
            "split point inside"
        );
        parent.shard.open = false;
        let low = HashRange::new(range.start(), at - 1).expect("ordered");
        let high = HashRange::new(at, range.end()).expect("ordered");
        let a = stream.add_shard(low, &[shard_id]);
        let b = stream.add_shard(high, &[shard_id]);
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
        let stream = state
            .streams
            .get_mut(&stream.into())
            .expect("stream exists");
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
            stream.shard_mut(id).expect("shard exists").shard.open = false;
        }
        let range = HashRange::new(low.start(), high.end()).expect("ordered");
        stream.add_shard(range, &[first, second])
    }

    /// Deletes `stream`: from now on PutRecords and ListShards calls for it answer
    /// `ResourceNotFoundException` (calls still crossing the link too), and its shards are
    /// closed. What it stored stays readable through [`stored`](Self::stored) and
    /// [`user_records`](Self::user_records), as consumers read it before the deletion.
    pub fn delete_stream(&self, stream: impl Into<StreamId>) {
        if let Some(fake) = self.state().streams.get_mut(&stream.into()) {
            fake.deleted = true;
            for shard in &mut fake.shards {
                shard.shard.open = false;
            }
        }
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

    /// The next PutRecords calls do these, in order (then the random faults apply again).
    pub fn script(&self, faults: impl IntoIterator<Item = CallFault>) {
        self.state().script.extend(faults);
    }

    /// The next ListShards calls fail with these classes (`None`: answers normally), with the
    /// code `Injected`.
    pub fn script_list_shards(&self, outcomes: impl IntoIterator<Item = Option<ErrorClass>>) {
        self.script_list_shards_faults(outcomes.into_iter().map(|outcome| match outcome {
            Some(class) => ListShardsFault::Error {
                class,
                code: "Injected".into(),
            },
            None => ListShardsFault::None,
        }));
    }

    /// The next ListShards calls do these, in order (then the random faults apply again).
    pub fn script_list_shards_faults(&self, faults: impl IntoIterator<Item = ListShardsFault>) {
        self.state().list_script.extend(faults);
    }

    /// While set, every ListShards call never answers.
    pub fn set_list_shards_hang(&self, hang: bool) {
        self.state().list_hangs = hang;
    }

    /// Random faults from now on, drawn from a generator seeded with `seed`.
    pub fn set_random_faults(&self, faults: RandomFaults, seed: u64) {
        let mut state = self.state();
        state.random = faults;
        state.rng = StdRng::seed_from_u64(seed);
    }

    /// Calls for `stream` draw from `faults` instead of the rates of
    /// [`set_random_faults`](Self::set_random_faults) (one generator for all), until
    /// [`clear_stream_faults`](Self::clear_stream_faults): a stream throttled for long next to
    /// healthy ones, say.
    pub fn set_stream_faults(&self, stream: impl Into<StreamId>, faults: RandomFaults) {
        self.state().stream_random.insert(stream.into(), faults);
    }

    /// Calls for `stream` draw from the rates of [`set_random_faults`](Self::set_random_faults)
    /// again.
    pub fn clear_stream_faults(&self, stream: impl Into<StreamId>) {
        self.state().stream_random.remove(&stream.into());
    }

    /// PutRecords calls take time: they cross one link of `bytes_per_sec`, one after another,
    /// and are answered `latency` after they crossed it (None: answered after `latency` only).
    /// ListShards answers at once.
    pub fn set_link(&self, bytes_per_sec: Option<f64>, latency: Duration) {
        let mut state = self.state();
        state.link_bytes_per_sec = bytes_per_sec;
        state.latency = latency;
    }

    /// PutRecords calls received so far.
    pub fn put_records_calls(&self) -> u64 {
        self.state().calls
    }

    /// PutRecords entries received so far (stored or not).
    pub fn entries_received(&self) -> u64 {
        self.state().entries_sent
    }

    /// ListShards calls received so far.
    pub fn list_shards_calls(&self) -> u64 {
        self.state().list_calls
    }

    fn next_fault(
        &self,
        stream: &StreamId,
        entries: usize,
    ) -> (CallFault, Vec<Option<&'static str>>) {
        let mut state = self.state();
        if let Some(fault) = state.script.pop_front() {
            return (fault, vec![None; entries]);
        }
        let random = state.rates(stream);
        let rng = &mut state.rng;
        let fault = if chance(rng, random.hang) {
            CallFault::Hang
        } else if chance(rng, random.store_then_hang) {
            CallFault::StoreThenHang
        } else if chance(rng, random.panic_call) {
            CallFault::Panic
        } else if chance(rng, random.expired_token_call) {
            CallFault::ServiceError {
                code: "ExpiredTokenException".into(),
                message: "The security token included in the request is expired".into(),
            }
        } else if chance(rng, random.throttle_call) {
            CallFault::Error {
                class: ErrorClass::Throttled,
                code: "ProvisionedThroughputExceededException".into(),
            }
        } else if chance(rng, random.internal_call) {
            CallFault::Error {
                class: ErrorClass::Transient,
                code: "InternalFailure".into(),
            }
        } else if chance(rng, random.lose_answer) {
            CallFault::LoseAnswer
        } else if chance(rng, random.delay_call) {
            CallFault::Delay(random.max_delay.mul_f64(rng.random::<f64>()))
        } else {
            CallFault::None
        };
        let per_entry = (0..entries)
            .map(|_| {
                if chance(rng, random.throttle_entry) {
                    Some("ProvisionedThroughputExceededException")
                } else if chance(rng, random.internal_entry) {
                    Some("InternalFailure")
                } else {
                    None
                }
            })
            .collect();
        (fault, per_entry)
    }

    /// What the next ListShards call does: the script first, then the random rates.
    fn next_list_fault(&self, stream: &StreamId) -> ListShardsFault {
        let mut state = self.state();
        state.list_calls += 1;
        if state.list_hangs {
            return ListShardsFault::Hang;
        }
        if let Some(fault) = state.list_script.pop_front() {
            return fault;
        }
        let random = state.rates(stream);
        let rng = &mut state.rng;
        if chance(rng, random.list_shards_hang) {
            ListShardsFault::Hang
        } else if chance(rng, random.list_shards_throttle) {
            ListShardsFault::ServiceError {
                code: "LimitExceededException".into(),
                message: "Rate exceeded for stream (injected)".into(),
            }
        } else if chance(rng, random.list_shards_internal) {
            ListShardsFault::ServiceError {
                code: "InternalFailure".into(),
                message: "injected by the fake".into(),
            }
        } else {
            ListShardsFault::None
        }
    }

    /// Waits for the link to carry `bytes`, then for the latency.
    async fn cross_link(&self, bytes: usize) {
        let done = {
            let mut state = self.state();
            let now = Instant::now();
            let crossed = match state.link_bytes_per_sec {
                Some(rate) => {
                    let start = state.link_busy_until.map_or(now, |busy| busy.max(now));
                    let end = start + Duration::from_secs_f64(bytes as f64 / rate);
                    state.link_busy_until = Some(end);
                    end
                }
                None => now,
            };
            crossed + state.latency
        };
        tokio::time::sleep_until(done).await;
    }

    /// Stores `entries` (those not failed by `per_entry`), returning one result each.
    fn store(
        &self,
        stream: &StreamId,
        entries: &[PutEntry],
        per_entry: &[Option<&str>],
    ) -> Result<Vec<PutResult>, KinesisError> {
        let mut state = self.state();
        let mut sequence = state.next_sequence;
        let Some(fake) = state.streams.get_mut(stream).filter(|s| !s.deleted) else {
            return Err(KinesisError::new(
                "PutRecords",
                ErrorClass::NotFound,
                "ResourceNotFoundException",
                format!("Stream {stream} not found"),
            ));
        };
        let mut results = Vec::with_capacity(entries.len());
        for (entry, failure) in entries.iter().zip(per_entry) {
            if let Some(code) = failure {
                results.push(PutResult::Failed {
                    code: (*code).to_owned(),
                    message: "injected by the fake".into(),
                });
                continue;
            }
            let hash_key = match &entry.explicit_hash_key {
                Some(key) => match parse_explicit_hash_key(key) {
                    Ok(key) => key,
                    Err(error) => {
                        results.push(PutResult::Failed {
                            code: "InvalidArgumentException".into(),
                            message: error.to_string(),
                        });
                        continue;
                    }
                },
                None => partition_key_hash(&entry.partition_key),
            };
            let Some(shard) = fake.open_owner(hash_key) else {
                results.push(PutResult::Failed {
                    code: "InternalFailure".into(),
                    message: "no open shard owns the hash key".into(),
                });
                continue;
            };
            shard.records.push(StoredRecord {
                sequence_number: sequence,
                partition_key: entry.partition_key.clone(),
                explicit_hash_key: entry.explicit_hash_key.clone(),
                data: entry.data.clone(),
            });
            results.push(PutResult::Stored {
                shard_id: shard.shard.shard_id.clone(),
                sequence_number: format!("{sequence:020}"),
            });
            sequence += 1;
        }
        state.next_sequence = sequence;
        Ok(results)
    }
}

/// Draws `true` with probability `p`, drawing nothing when `p` is zero (so a rate left at zero
/// does not change the sequence the others draw from).
fn chance(rng: &mut StdRng, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

/// A service error as the SDK client reports it: classified by `kinesis-common`'s table (by
/// operation, code and message); a code the table does not know is `Unexpected`.
fn service_error(operation: &'static str, code: &str, message: &str) -> KinesisError {
    let class =
        kinesis_common::classify_error(operation, code, message).unwrap_or(ErrorClass::Unexpected);
    KinesisError::new(operation, class, code, message)
}

impl FakeKinesis {
    async fn carry_out(
        &self,
        fault: CallFault,
        stream: &StreamId,
        entries: &[PutEntry],
        per_entry: &[Option<&'static str>],
    ) -> Result<Vec<PutResult>, KinesisError> {
        match fault {
            CallFault::None => self.store(stream, entries, per_entry),
            CallFault::FailEntries { positions, code } => {
                let per_entry: Vec<Option<&str>> = (0..entries.len())
                    .map(|i| positions.contains(&i).then_some(code.as_str()))
                    .collect();
                self.store(stream, entries, &per_entry)
            }
            CallFault::Error { class, code } => Err(KinesisError::new(
                "PutRecords",
                class,
                code,
                "injected by the fake",
            )),
            CallFault::ServiceError { code, message } => {
                Err(service_error("PutRecords", &code, &message))
            }
            CallFault::Delay(delay) => {
                tokio::time::sleep(delay).await;
                self.store(stream, entries, per_entry)
            }
            CallFault::LoseAnswer => {
                self.store(stream, entries, &vec![None; entries.len()])?;
                Err(KinesisError::new(
                    "PutRecords",
                    ErrorClass::Transient,
                    "ResponseError",
                    "connection closed before the answer (injected)",
                ))
            }
            CallFault::StoreThenHang => {
                self.store(stream, entries, &vec![None; entries.len()])?;
                std::future::pending().await
            }
            CallFault::Hang | CallFault::Panic => std::future::pending().await,
        }
    }
}

impl KinesisApi for FakeKinesis {
    fn list_shards<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        Box::pin(async move {
            match self.next_list_fault(stream) {
                ListShardsFault::None => {}
                ListShardsFault::Hang => std::future::pending::<()>().await,
                ListShardsFault::Error { class, code } => {
                    return Err(KinesisError::new(
                        "ListShards",
                        class,
                        code,
                        "injected by the fake",
                    ));
                }
                ListShardsFault::ServiceError { code, message } => {
                    return Err(service_error("ListShards", &code, &message));
                }
                ListShardsFault::Delay(delay) => tokio::time::sleep(delay).await,
            }
            let shards = self
                .state()
                .streams
                .get(stream)
                .filter(|s| !s.deleted)
                .map(|s| s.shards.iter().map(|f| f.shard.clone()).collect::<Vec<_>>());
            shards.ok_or_else(|| {
                KinesisError::new(
                    "ListShards",
                    ErrorClass::NotFound,
                    "ResourceNotFoundException",
                    format!("Stream {stream} not found"),
                )
            })
        })
    }

    fn put_records<'a>(
        &'a self,
        stream: &'a StreamId,
        entries: &'a [PutEntry],
    ) -> BoxFuture<'a, Result<Vec<PutResult>, KinesisError>> {
        Box::pin(async move {
            {
                let mut state = self.state();
                state.calls += 1;
                state.entries_sent += entries.len() as u64;
            }
            let (fault, per_entry) = self.next_fault(stream, entries.len());
            let bytes = entries.iter().map(PutEntry::size).sum();
            match fault {
                CallFault::Hang => return std::future::pending().await,
                CallFault::Panic => panic!("injected panic in PutRecords"),
                _ => {}
            }
            // The service carries a call out whether or not the caller still waits for the
            // answer (a caller's timeout does not stop it): the work runs on its own task.
            let this = self.clone();
            let stream = stream.clone();
            let entries = entries.to_vec();
            let work = tokio::spawn(async move {
                this.cross_link(bytes).await;
                this.carry_out(fault, &stream, &entries, &per_entry).await
            });
            match work.await {
                Ok(result) => result,
                Err(_) => std::future::pending().await,
            }
        })
    }
}
