//! The Kinesis client layer both libraries stand on: one narrow trait per group of calls, one
//! error type ([`KinesisError`]), and the request and answer types (`types.rs`).
//!
//! | trait | Kinesis operations | used by |
//! |---|---|---|
//! | [`ListShards`] | ListShards (all pages, a [`ShardListing`] filter) | producer and consumer |
//! | [`PutRecords`] | PutRecords | producer |
//! | [`ReadShard`] | GetShardIterator, GetRecords | consumer (polling) |
//! | [`StreamConsumers`] | DescribeStreamSummary, RegisterStreamConsumer, DescribeStreamConsumer | consumer (enhanced fan-out) |
//! | [`SubscribeToShard`] | SubscribeToShard, and its [`EventStream`] | consumer (enhanced fan-out) |
//!
//! [`ProducerApi`] and [`ConsumerApi`] bundle what each library needs; every type implementing
//! the parts implements the bundle. [`SdkKinesis`](crate::SdkKinesis) implements them all over
//! the AWS SDK, [`Bounded`](crate::Bounded) bounds any implementation in time, and
//! `FakeKinesis` (feature `test-util`) keeps streams in memory.
//!
//! Every method makes **one attempt**: the SDK's own retries are off, and retrying, with its
//! backoff and its bounds, is the caller's business. The traits are object safe (methods return
//! a [`BoxFuture`]), so a library holds one `Arc<dyn ProducerApi>` or `Arc<dyn ConsumerApi>`
//! whatever is behind it. (A `dyn ConsumerApi` is not upcast to a `dyn ListShards`: that needs
//! Rust 1.86; keep code generic over `A: ListShards + ?Sized` or pass the bundle whole.)

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::KinesisError;
use crate::stream::StreamId;

/// Implements methods of the trait family with their signatures written short:
/// `fn name(&self, arg: Type, ...) -> T { body }` becomes
/// `fn name<'a>(&'a self, arg: Type, ...) -> BoxFuture<'a, Result<T, KinesisError>> { body }`
/// (borrowed argument types name `'a` themselves), and `async fn` the same with the body
/// boxed as `Box::pin(async move { body })`. Every implementation of the family (the SDK's,
/// the fake's, `Arc<T>`'s, [`Bounded`]'s) states each method's arguments and answer once,
/// not the whole boxed-future signature again.
macro_rules! impl_calls {
    ($(impl[$($generics:tt)*] $Trait:ident for $Type:ty { $($methods:tt)* })*) => {
        $(impl<$($generics)*> $Trait for $Type {
            $crate::api::impl_calls!(@methods $($methods)*);
        })*
    };
    (@methods) => {};
    (@methods async fn $name:ident(&$this:ident $(, $arg:ident: $arg_type:ty)* $(,)?)
        -> $answer:ty $body:block $($rest:tt)*) => {
        $crate::api::impl_calls!(@method $name(&$this $(, $arg: $arg_type)*) -> $answer {
            Box::pin(async move $body)
        });
        $crate::api::impl_calls!(@methods $($rest)*);
    };
    (@methods fn $name:ident(&$this:ident $(, $arg:ident: $arg_type:ty)* $(,)?)
        -> $answer:ty $body:block $($rest:tt)*) => {
        $crate::api::impl_calls!(@method $name(&$this $(, $arg: $arg_type)*) -> $answer $body);
        $crate::api::impl_calls!(@methods $($rest)*);
    };
    (@method $name:ident(&$this:ident $(, $arg:ident: $arg_type:ty)*)
        -> $answer:ty $body:block) => {
        fn $name<'a>(
            &'a $this
            $(, $arg: $arg_type)*
        ) -> $crate::BoxFuture<'a, Result<$answer, $crate::KinesisError>> $body
    };
}
pub(crate) use impl_calls;

mod bounded;
mod convert;
mod sdk;
mod types;

pub use bounded::{Bounded, Timeouts};
pub use sdk::SdkKinesis;
pub use types::{
    ChildShard, ConsumerInfo, ConsumerStatus, PutEntry, PutResult, RecordsPage, Shard, ShardEvent,
    ShardIteratorStart, ShardListing, StreamSummary, SubscribeStart,
};

/// A boxed, sendable future, as the methods of the trait family return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The operation names errors carry ([`KinesisError::operation`]), as the service spells them.
pub(crate) mod operation {
    pub(crate) const LIST_SHARDS: &str = "ListShards";
    pub(crate) const PUT_RECORDS: &str = "PutRecords";
    pub(crate) const GET_SHARD_ITERATOR: &str = "GetShardIterator";
    pub(crate) const GET_RECORDS: &str = "GetRecords";
    pub(crate) const DESCRIBE_STREAM_SUMMARY: &str = "DescribeStreamSummary";
    pub(crate) const REGISTER_STREAM_CONSUMER: &str = "RegisterStreamConsumer";
    pub(crate) const DESCRIBE_STREAM_CONSUMER: &str = "DescribeStreamConsumer";
    pub(crate) const SUBSCRIBE_TO_SHARD: &str = "SubscribeToShard";
}

/// ListShards: the shards of a stream, every page.
pub trait ListShards: Send + Sync + fmt::Debug + 'static {
    /// The shards of `stream` that `listing` selects, following every page, as one answer.
    /// An implementation may include shards the filter would leave out (callers look at
    /// [`Shard::open`] and the lineage themselves), never leave one out.
    fn list_shards<'a>(
        &'a self,
        stream: &'a StreamId,
        listing: &'a ShardListing,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>>;
}

/// PutRecords: one call with up to 500 entries.
pub trait PutRecords: Send + Sync + fmt::Debug + 'static {
    /// One PutRecords call with `entries` (at most 500, at most 5 MiB unless the stream's
    /// MaxRecordSize was raised). The answer has one result per entry, in order; a shorter
    /// answer leaves the missing entries' fate unknown.
    fn put_records<'a>(
        &'a self,
        stream: &'a StreamId,
        entries: &'a [PutEntry],
    ) -> BoxFuture<'a, Result<Vec<PutResult>, KinesisError>>;
}

/// GetShardIterator and GetRecords: reading one shard by polling.
pub trait ReadShard: Send + Sync + fmt::Debug + 'static {
    /// A new iterator into `shard_id` of `stream`, at `start`.
    fn get_shard_iterator<'a>(
        &'a self,
        stream: &'a StreamId,
        shard_id: &'a str,
        start: &'a ShardIteratorStart,
    ) -> BoxFuture<'a, Result<String, KinesisError>>;

    /// Up to `limit` records (1..=10000) at `iterator`. `stream` names the stream the iterator
    /// belongs to: an ARN is sent with the call (for IAM policies written against ARNs), a name
    /// is not needed.
    fn get_records<'a>(
        &'a self,
        stream: &'a StreamId,
        iterator: &'a str,
        limit: i32,
    ) -> BoxFuture<'a, Result<RecordsPage, KinesisError>>;
}

/// DescribeStreamSummary, RegisterStreamConsumer and DescribeStreamConsumer: what enhanced
/// fan-out needs before it subscribes.
pub trait StreamConsumers: Send + Sync + fmt::Debug + 'static {
    /// DescribeStreamSummary.
    fn describe_stream_summary<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<StreamSummary, KinesisError>>;

    /// RegisterStreamConsumer: registers `consumer_name` on the stream (the service refuses a
    /// name already registered with `ResourceInUseException`).
    fn register_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>>;

    /// DescribeStreamConsumer.
    fn describe_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>>;

    /// The stream's ARN: the one given, or DescribeStreamSummary's for a name.
    fn stream_arn<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<String, KinesisError>> {
        Box::pin(async move {
            match stream {
                StreamId::Arn(arn) => Ok(arn.clone()),
                StreamId::Name(_) => Ok(self.describe_stream_summary(stream).await?.stream_arn),
            }
        })
    }
}

/// SubscribeToShard: enhanced fan-out's push of one shard's records.
pub trait SubscribeToShard: Send + Sync + fmt::Debug + 'static {
    /// Opens a subscription of `consumer_arn` to `shard_id` at `start`; resolves once the
    /// service accepted it.
    fn subscribe<'a>(
        &'a self,
        consumer_arn: &'a str,
        shard_id: &'a str,
        start: &'a SubscribeStart,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, KinesisError>>;
}

/// The events of one open subscription.
pub trait EventStream: Send {
    /// The next event; `Ok(None)` when the service ended the subscription without an error (it
    /// does every 5 minutes). Not bounded in time, not even by [`Bounded`](crate::Bounded): an
    /// idle shard's subscription may be silent for seconds, so the caller applies its own read
    /// timeout.
    fn next_event(&mut self) -> BoxFuture<'_, Result<Option<ShardEvent>, KinesisError>>;
}

/// What the producer calls: [`ListShards`] and [`PutRecords`]. Implemented by every type that
/// implements both (implement those two, not this).
pub trait ProducerApi: ListShards + PutRecords {}

impl<T: ListShards + PutRecords + ?Sized> ProducerApi for T {}

/// What the consumer calls: [`ListShards`], [`ReadShard`], [`StreamConsumers`] and
/// [`SubscribeToShard`]. Implemented by every type that implements the four (implement those,
/// not this).
pub trait ConsumerApi: ListShards + ReadShard + StreamConsumers + SubscribeToShard {}

impl<T: ListShards + ReadShard + StreamConsumers + SubscribeToShard + ?Sized> ConsumerApi for T {}

impl_calls! {
    impl[T: ListShards + ?Sized] ListShards for Arc<T> {
        fn list_shards(&self, stream: &'a StreamId, listing: &'a ShardListing) -> Vec<Shard> {
            (**self).list_shards(stream, listing)
        }
    }

    impl[T: PutRecords + ?Sized] PutRecords for Arc<T> {
        fn put_records(&self, stream: &'a StreamId, entries: &'a [PutEntry]) -> Vec<PutResult> {
            (**self).put_records(stream, entries)
        }
    }

    impl[T: ReadShard + ?Sized] ReadShard for Arc<T> {
        fn get_shard_iterator(
            &self,
            stream: &'a StreamId,
            shard_id: &'a str,
            start: &'a ShardIteratorStart,
        ) -> String {
            (**self).get_shard_iterator(stream, shard_id, start)
        }
        fn get_records(&self, stream: &'a StreamId, iterator: &'a str, limit: i32) -> RecordsPage {
            (**self).get_records(stream, iterator, limit)
        }
    }

    impl[T: StreamConsumers + ?Sized] StreamConsumers for Arc<T> {
        fn describe_stream_summary(&self, stream: &'a StreamId) -> StreamSummary {
            (**self).describe_stream_summary(stream)
        }
        fn register_consumer(&self, stream_arn: &'a str, consumer_name: &'a str) -> ConsumerInfo {
            (**self).register_consumer(stream_arn, consumer_name)
        }
        fn describe_consumer(&self, stream_arn: &'a str, consumer_name: &'a str) -> ConsumerInfo {
            (**self).describe_consumer(stream_arn, consumer_name)
        }
        fn stream_arn(&self, stream: &'a StreamId) -> String {
            (**self).stream_arn(stream)
        }
    }

    impl[T: SubscribeToShard + ?Sized] SubscribeToShard for Arc<T> {
        fn subscribe(
            &self,
            consumer_arn: &'a str,
            shard_id: &'a str,
            start: &'a SubscribeStart,
        ) -> Box<dyn EventStream> {
            (**self).subscribe(consumer_arn, shard_id, start)
        }
    }
}
