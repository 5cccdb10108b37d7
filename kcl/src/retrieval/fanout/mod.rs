//! Enhanced fan-out: reading shards through a registered stream consumer with
//! SubscribeToShard, behind the same [`RecordSource`](super::RecordSource) as polling.
//!
//! ```text
//!  register (once per application): DescribeStreamConsumer / RegisterStreamConsumer ─► ACTIVE
//!  per shard:  SubscribeToShard(position) ─► events ─► deaggregate ─► filter ─► skip ─► batch
//!                 ▲  ended (5 min), max time: at once   │ ResourceInUse / throttled / dropped /
//!                 └── AFTER_SEQUENCE_NUMBER(continuation) ◄ read timeout: jittered backoff
//!                                                    reading task ─► channel(1) ─► next_batch()
//! ```
//!
//! - `registration.rs`: [`register_stream_consumer`] (idempotent, waits for ACTIVE);
//! - `subscriber.rs`: one shard's state machine (position, resubscription, backoff, shard end);
//! - `source.rs`: [`FanOutSource`] and the reading task (flow control);
//! - `config.rs`: [`FanOutConfig`].
//!
//! The calls go through kinesis-common's client layer (an `Arc<dyn ConsumerApi>`: the AWS SDK
//! in production, a fake in the unit tests).

mod config;
mod registration;
mod source;
mod subscriber;
#[cfg(test)]
mod tests;

pub use config::FanOutConfig;
pub use registration::{RegisteredConsumer, RegistrationError, register_stream_consumer};
pub use source::FanOutSource;

pub(crate) use registration::register;
pub(crate) use source::FanOutReader;
