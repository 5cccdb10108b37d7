//! [`RecordSource`]: the interface between retrieval and the shard consumer.

use std::future::Future;

use super::error::RetrievalError;
use super::types::ShardBatch;

/// One shard's stream of batches: what the shard consumer reads, whatever the retrieval
/// ([`PollingSource`](super::PollingSource) or [`FanOutSource`](super::FanOutSource)).
///
/// A source starts at the position it was created with and hands out every user record of the
/// shard from there exactly once, in order. Retryable failures are retried inside it.
pub trait RecordSource: Send {
    /// The next batch of the shard.
    ///
    /// Empty batches are normal (nothing new yet) and come back promptly; the source paces its
    /// own calls, so calling this in a loop does not hammer the service. Once a batch carried
    /// [`shard_end`](ShardBatch::shard_end), every later call returns an empty batch with the
    /// same children, at once: the caller should stop reading then.
    ///
    /// # Errors
    ///
    /// A [`RetrievalError`]; see [`RetrievalError::is_fatal`]. The source stays usable: a
    /// later call tries again from the same position.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: dropping the future before it completes loses no
    /// record and delivers none twice (so it can sit in a `tokio::select!`).
    fn next_batch(&mut self) -> impl Future<Output = Result<ShardBatch, RetrievalError>> + Send;
}

/// The accessors every source has alike, for a struct with a `driver` (whose `counters` are
/// the source's [`Counters`](super::stats::Counters)), a `stream` and a `shard_id`. A macro
/// rather than a trait so that they stay inherent methods, callable without an import.
macro_rules! source_accessors {
    ($source:ty) => {
        impl $source {
            /// A snapshot of the source's counters.
            pub fn stats(&self) -> $crate::retrieval::RetrievalStats {
                self.driver.counters.snapshot()
            }

            /// The shard this source reads.
            pub fn shard_id(&self) -> &str {
                &self.shard_id
            }

            /// The stream this source reads.
            pub fn stream(&self) -> &$crate::retrieval::types::StreamId {
                &self.stream
            }
        }
    };
}
pub(crate) use source_accessors;
