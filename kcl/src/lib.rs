//! The Kinesis consumer library (work in progress).
//!
//! This crate will hold the in-process replacement for Amazon's Java KCL: leases and checkpoints
//! in a DynamoDB table compatible with the Java KCL 2.x, lease taking and stealing across a worker
//! fleet, shard sync with parent-before-child ordering, polling and enhanced fan-out retrieval,
//! and deaggregation with sub-sequence checkpoints (built on [`aggregation_proto`]).
//!
//! Available so far:
//!
//! - [`lease`]: the lease table (rows, conditional writes, error classification).
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod lease;
