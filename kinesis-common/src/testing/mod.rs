//! [`FakeKinesis`]: an in-memory Kinesis for tests (feature `test-util`), behind the same
//! traits ([`ListShards`](crate::ListShards), [`PutRecords`](crate::PutRecords)) as the AWS
//! SDK's [`SdkKinesis`](crate::SdkKinesis), for the libraries' tests and users' tests alike.
//!
//! It keeps streams of shards with hash-key ranges and lineage, splits and merges them, routes
//! every PutRecords entry by its explicit hash key (or the MD5 of its partition key) to the open
//! shard that owns it, and stores it in that shard with an increasing sequence number. ListShards
//! answers what its [`ShardListing`](crate::ShardListing) selects. Faults are injected per
//! call, scripted ([`FakeKinesis::script`], [`FakeKinesis::script_list_shards_faults`]) or at
//! random rates from a seed ([`FakeKinesis::set_random_faults`]): throttling and internal errors
//! of single entries, whole calls failing (throttled, 500, an expired security token), calls that
//! never answer (with or without storing), calls answered late, answers lost after storing, calls
//! that panic, and ListShards calls that are throttled, fail or never answer. A link speed
//! ([`FakeKinesis::set_link`]) makes calls take time in proportion to their size, one after the
//! other, like a slow endpoint. Time is tokio's, so tests run with paused time.
//!
//! The read side (GetShardIterator and GetRecords, enhanced fan-out) is not faked yet: what a
//! shard stored is kept per shard, in sequence order, for it to read.
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
//! (Moved from `kpl::testing`, which re-exports it, unchanged but for ListShards honouring
//! its filter.)

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use crate::StreamId;

mod faults;
mod list;
mod put;
mod streams;

pub use faults::{CallFault, ListShardsFault, RandomFaults};
use streams::FakeStream;
pub use streams::StoredRecord;

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
}
