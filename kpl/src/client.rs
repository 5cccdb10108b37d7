//! The seam between the producer and Kinesis, as the crate uses it internally: the Kinesis
//! client layer of `kinesis-common` ([`ProducerApi`](kinesis_common::ProducerApi) = [`ListShards`] + [`PutRecords`], and
//! [`SdkKinesis`]). The crate root re-exports it (`ProducerApi` as `kpl::KinesisApi`).
//!
//! The pipeline bounds every call with its own timeout and decides every retry itself, so an
//! implementation makes exactly one attempt per call (`SdkKinesis` is used without
//! [`Bounded`](kinesis_common::Bounded): the pipeline's adaptive PutRecords timeout and
//! `list_shards_timeout` are the only bounds).

pub(crate) use kinesis_common::{
    ErrorClass, KinesisError, ListShards, ProducerApi as KinesisApi, PutEntry, PutRecords,
    PutResult, SdkKinesis, ShardListing, StreamId,
};
