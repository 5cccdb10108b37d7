//! [`FakeKinesis`]: an in-memory Kinesis for tests (feature `test-util`), behind the same
//! traits as the AWS SDK's [`SdkKinesis`](crate::SdkKinesis) (all five: [`ListShards`],
//! [`PutRecords`], [`ReadShard`], [`StreamConsumers`], [`SubscribeToShard`]), for the
//! libraries' tests and users' tests alike. Time is tokio's, so tests run with paused time.
//!
//! [`ListShards`]: crate::ListShards
//! [`PutRecords`]: crate::PutRecords
//! [`ReadShard`]: crate::ReadShard
//! [`StreamConsumers`]: crate::StreamConsumers
//! [`SubscribeToShard`]: crate::SubscribeToShard
//!
//! **Streams.** Shards with hash-key ranges and lineage ([`create_stream`](FakeKinesis::create_stream),
//! [`split`](FakeKinesis::split), [`merge`](FakeKinesis::merge), a lineage written by hand with
//! [`add_shard`](FakeKinesis::add_shard) and [`close_shard`](FakeKinesis::close_shard)); shards
//! trimmed away ([`remove_shard`](FakeKinesis::remove_shard)) and streams deleted answer
//! `ResourceNotFoundException`. A stream is found by its name or its ARN
//! ([`stream_arn_of`](FakeKinesis::stream_arn_of)).
//!
//! **Writing.** PutRecords routes every entry by its explicit hash key (or the MD5 of its
//! partition key) to the open shard that owns it, with an increasing sequence number. Tests of
//! readers write into a named shard directly: [`append`](FakeKinesis::append) (records as given,
//! sequence numbers and arrival times included), [`append_data`](FakeKinesis::append_data),
//! [`append_user_records`](FakeKinesis::append_user_records) (a KPL aggregate). Arrival times
//! come from an [`ArrivalClock`]; sequence numbers are written as
//! [`set_sequence_format`](FakeKinesis::set_sequence_format) says.
//!
//! **Reading.** Iterators at every start, pages up to a limit, `MillisBehindLatest`
//! ([`MillisBehind`]), a closed shard's end with its children (or without:
//! [`set_child_shards_in_answers`](FakeKinesis::set_child_shards_in_answers)), expired iterators
//! ([`expire_iterators`](FakeKinesis::expire_iterators)). Enhanced fan-out: consumers whose
//! states follow a script (CREATING, then ACTIVE, by default), subscriptions whose events carry
//! the records with continuation sequence numbers and end as a [`SubscriptionPlan`] says
//! (refused, dropped, stalled, ended after N events, or at the shard's end with its children).
//!
//! **Faults.** Every operation: fail N times with an [`ErrorClass`](crate::ErrorClass)
//! ([`fail`](FakeKinesis::fail)), any [`Fault`] ([`inject`](FakeKinesis::inject)), hang, wait,
//! panic ([`set_hang`](FakeKinesis::set_hang), [`set_delay`](FakeKinesis::set_delay),
//! [`set_panic`](FakeKinesis::set_panic)). PutRecords and ListShards have their own faults too,
//! scripted ([`FakeKinesis::script`], [`FakeKinesis::script_list_shards_faults`]) or at random
//! rates from a seed ([`FakeKinesis::set_random_faults`]): throttling and internal errors of single
//! entries, whole calls failing (throttled, 500, an expired security token), calls that never
//! answer (with or without storing), calls answered late, answers lost after storing, calls that
//! panic; and a link speed ([`FakeKinesis::set_link`]) makes PutRecords calls take time in
//! proportion to their size, one after the other, like a slow endpoint. Every call is logged with
//! its tokio time ([`calls`](FakeKinesis::calls)).
//!
//! Producing:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use kinesis_common::testing::FakeKinesis;
//! use kinesis_common::{PutEntry, PutRecords, PutResult, StreamId};
//!
//! let kinesis = FakeKinesis::new();
//! kinesis.create_stream("orders", 4);
//! let entry = PutEntry::new("customer-1".into(), None, Bytes::from_static(b"hello"));
//! let results = kinesis.put_records(&StreamId::from("orders"), &[entry]).await?;
//! assert!(matches!(results[..], [PutResult::Stored { .. }]));
//! assert_eq!(kinesis.user_records("orders").len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! Consuming, by polling and by enhanced fan-out, with a fault:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_common::testing::{FakeKinesis, Operation};
//! use kinesis_common::{
//!     ErrorClass, ReadShard, ShardIteratorStart, StreamId, SubscribeStart, SubscribeToShard,
//! };
//!
//! let kinesis = FakeKinesis::new();
//! kinesis.create_stream("orders", 1);
//! let shard = "shardId-000000000000";
//! kinesis.append_data("orders", shard, "customer-1", ["a", "b", "c"]);
//! let (left, right) = kinesis.split_in_half("orders", shard);
//!
//! let stream = StreamId::from("orders");
//! kinesis.fail(Operation::GetRecords, ErrorClass::Throttled, 1);
//! let iterator = kinesis
//!     .get_shard_iterator(&stream, shard, &ShardIteratorStart::TrimHorizon)
//!     .await?;
//! assert!(kinesis.get_records(&stream, &iterator, 100).await.is_err());
//! let page = kinesis.get_records(&stream, &iterator, 100).await?;
//! assert_eq!(page.records.len(), 3);
//! assert_eq!(page.next_iterator, None, "the shard was split: its end");
//! assert_eq!(page.child_shards.len(), 2);
//!
//! let consumer = kinesis.add_consumer("orders", "app");
//! let mut events = kinesis
//!     .subscribe(&consumer, shard, &SubscribeStart::TrimHorizon)
//!     .await?;
//! let event = events.next_event().await?.expect("an event");
//! assert_eq!(event.records.len(), 3);
//! assert_eq!(event.child_shards[0].shard_id, left);
//! assert_eq!(event.child_shards[1].shard_id, right);
//! assert!(events.next_event().await?.is_none(), "ended at the shard's end");
//! # Ok(())
//! # }
//! ```
//!
//! (Moved from `kpl::testing`, which re-exports it; for kpl unchanged but for ListShards
//! honouring its filter and finding a stream by name or ARN alike.)

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use crate::{ConsumerStatus, StreamId};

mod append;
mod calls;
mod consumers;
mod faults;
mod list;
mod put;
mod read;
#[cfg(test)]
mod scenarios;
mod streams;
mod subscribe;

pub use append::ArrivalClock;
pub use calls::{Fault, Operation};
pub use faults::{CallFault, ListShardsFault, RandomFaults};
pub use read::{IteratorRequest, MillisBehind};
use streams::FakeStream;
pub use streams::StoredRecord;
pub use subscribe::{SubscriptionEnd, SubscriptionPlan, SubscriptionRequest};

#[derive(Debug)]
struct State {
    streams: BTreeMap<StreamId, FakeStream>,
    next_sequence: u64,
    script: VecDeque<CallFault>,
    list_script: VecDeque<ListShardsFault>,
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
    /// Every call of every operation, in order, with its (tokio) time.
    call_log: Vec<(Operation, Instant)>,
    /// One-shot faults: each call takes the first one of its operation.
    faults: VecDeque<(Operation, Fault)>,
    /// Operations whose every call hangs, panics, or waits first.
    hangs: BTreeSet<Operation>,
    panics: BTreeSet<Operation>,
    delays: BTreeMap<Operation, Duration>,
    /// How sequence numbers are written: `floor + counter`, zero-padded to `width` digits.
    sequence_floor: u64,
    sequence_width: usize,
    arrival: append::Clock,
    /// Iterators handed out before this generation are expired.
    generation: u64,
    /// Iterators older than this are expired (`None`: never, by age).
    iterator_lifetime: Option<Duration>,
    /// What iterators count their age from.
    epoch: Instant,
    millis_behind: MillisBehind,
    child_shards_in_answers: bool,
    silent_end: bool,
    records_per_event: usize,
    events_per_subscription: Option<usize>,
    idle_event_interval: Duration,
    registration_states: Vec<ConsumerStatus>,
    plans: VecDeque<SubscriptionPlan>,
    shard_plans: BTreeMap<String, VecDeque<SubscriptionPlan>>,
    iterator_requests: Vec<IteratorRequest>,
    subscriptions: Vec<SubscriptionRequest>,
    open_subscriptions: usize,
    events_sent: u64,
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
                random: RandomFaults::none(),
                stream_random: BTreeMap::new(),
                rng: StdRng::seed_from_u64(0),
                link_bytes_per_sec: None,
                link_busy_until: None,
                latency: Duration::ZERO,
                calls: 0,
                list_calls: 0,
                entries_sent: 0,
                call_log: Vec::new(),
                faults: VecDeque::new(),
                hangs: BTreeSet::new(),
                panics: BTreeSet::new(),
                delays: BTreeMap::new(),
                sequence_floor: 0,
                sequence_width: 20,
                arrival: append::Clock::default(),
                generation: 0,
                iterator_lifetime: None,
                epoch: Instant::now(),
                millis_behind: MillisBehind::Fixed(1_000),
                child_shards_in_answers: true,
                silent_end: false,
                records_per_event: 10,
                events_per_subscription: None,
                idle_event_interval: Duration::from_secs(1),
                registration_states: vec![ConsumerStatus::Creating, ConsumerStatus::Active],
                plans: VecDeque::new(),
                shard_plans: BTreeMap::new(),
                iterator_requests: Vec::new(),
                subscriptions: Vec::new(),
                open_subscriptions: 0,
                events_sent: 0,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// How many handles to this fake exist, this one included (clones share one state): for
    /// tests that a component let go of the clones it held, e.g. a task stopped when its owner
    /// was dropped.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.state)
    }
}

#[cfg(test)]
mod handle_tests {
    use super::FakeKinesis;

    #[test]
    fn handles_count_the_live_clones() {
        let fake = FakeKinesis::new();
        assert_eq!(fake.handles(), 1);
        let held = fake.clone();
        assert_eq!(fake.handles(), 2);
        drop(held);
        assert_eq!(fake.handles(), 1);
    }
}
