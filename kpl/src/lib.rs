//! The Kinesis producer library (work in progress).
//!
//! This crate will hold the in-process replacement for Amazon's KPL: a shard map built from
//! ListShards, one aggregator per predicted shard (built on [`aggregation_proto`]), collection into
//! PutRecords calls, per-shard rate limiting, jittered retries bounded by a record TTL,
//! backpressure on `send`, and a per-record receipt. Nothing is public yet.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
