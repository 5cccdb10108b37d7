//! The pipeline task: the one owner of every buffered record.
//!
//! ```text
//! inbox -> Ledger::admit -> StreamState (one per stream)
//!   Router: shard map -> shard -> lane -> open aggregate -> lane queue
//!     -> rate limiter (and, with order kept, one Kinesis record in flight per lane)
//!   -> ReadyQueue -> PutRecords batch (500 records / 5 MiB, linger; Congestion bounds the
//!      calls in flight and sets each call's timeout) -> Calls (a task per call)
//!   -> settle (pure): stored | landed elsewhere | retry after backoff | failed
//!   -> Ledger::resolve: the receipt, the flush generation, the budget charge
//! ```
//!
//! Parts with their own state, one job each: [`ledger`] (exactly one answer per record,
//! flushes, charges), [`stream`] (everything kept for one stream, and what installing a map,
//! settling a misrouted aggregate, placing a retry or the TTL does to it), [`router`] (which
//! shard and lane a record goes to under one map, or without one), [`lanes`] (a lane's open
//! aggregate and queue of sealed records), [`ready`] (batches), [`calls`] (PutRecords tasks in
//! flight), [`listings`] (ListShards tasks in flight), [`refresh`] (when a stream's map is
//! listed again: demand levels, backoff), [`congestion`] (calls in flight and their timeouts),
//! and [`settle`] (pure: what an outcome means). Values they share: [`record`] (a record
//! pending, a Kinesis record going out), [`shard_map`] (a stream's shards and hash ranges),
//! [`pack`] (members packed into Kinesis records, in order).
//!
//! [`Pipeline`] ([`task`]) is the task that owns them all: its state, construction, loop and
//! record bookkeeping. Its handlers keep only the glue that needs several parts at once, split
//! by the event they answer: [`dispatch`] (the tick: retries, sealing, the expiry sweep,
//! sending batches), [`apply`] (a call's answer) and [`maps`] (a listing's answer). The
//! handles talk to it through a short [`inbox`](crate::inbox); backpressure is the
//! [`Budget`](crate::budget::Budget) they charge before queueing.
//!
//! Tests, through the public API and the in-memory fake with paused time: `tests` (failure
//! paths, and the property test of order and completeness under random faults and reshards),
//! `hardening_tests` (failure paths a read against the C++ KPL found) and `metrics_tests`
//! (the metric names).
//!
//! Every step runs under `catch_unwind`: should one ever panic, the pipeline answers every
//! record it holds with the cause, and `send`, `flush` and receipts report it.

mod apply;
mod calls;
mod congestion;
mod dispatch;
#[cfg(test)]
mod hardening_tests;
mod lanes;
mod ledger;
mod listings;
mod maps;
#[cfg(test)]
mod metrics_tests;
mod pack;
mod ready;
mod record;
mod refresh;
mod router;
mod settle;
mod shard_map;
mod stream;
mod task;
#[cfg(test)]
mod tests;

pub(crate) use self::record::Incoming;
pub(crate) use self::shard_map::ShardMap;
pub(crate) use self::task::{Command, Parts, Pipeline};
