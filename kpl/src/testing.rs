//! [`FakeKinesis`]: an in-memory Kinesis for tests (feature `test-util`), behind the same
//! [`KinesisApi`](crate::KinesisApi) seam the producer uses for the real service. It lives in
//! `kinesis_common::testing` (the consumer's tests use the same one); this module re-exports
//! it, so `kpl::testing::FakeKinesis` keeps working.
//!
//! It keeps streams of shards with hash-key ranges and lineage, splits and merges them, routes
//! every PutRecords entry by its explicit hash key (or the MD5 of its partition key) to the open
//! shard that owns it, and stores it with an increasing sequence number. Faults are injected per
//! call, scripted ([`FakeKinesis::script`], [`FakeKinesis::script_list_shards_faults`]) or at
//! random rates from a seed ([`FakeKinesis::set_random_faults`]). Time is tokio's, so tests run
//! with paused time.
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

pub use kinesis_common::testing::{
    CallFault, FakeKinesis, ListShardsFault, RandomFaults, StoredRecord,
};
